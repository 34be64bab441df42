"""Errors a user can act on: each message says what is wrong and what to do next."""


class FlexbillError(Exception):
    """An error with a message meant for a billing operator (no traceback needed)."""


class InputError(FlexbillError):
    """A command's arguments are wrong (bad date, bad range, unknown customer...)."""


class DatabaseError(FlexbillError):
    """The billing database cannot be reached or is not initialised."""


class EventRefused(FlexbillError):
    """A manual suspend/lift was refused; nothing was written."""


class OutputRejected(FlexbillError):
    """The output failed validation; nothing was published."""


class LifecycleViolation(FlexbillError):
    """A write would break the invoice lifecycle (what the database's lifecycle triggers refuse); the run's
    transaction is rolled back, nothing is published."""
