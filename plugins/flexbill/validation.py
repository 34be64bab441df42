"""Great Expectations gates: source rows in, invoices out.

Inputs: each contract-breaking row kind of the data contract is one expectation
in the suite of its table, with a `meta.reason` template a person can act on.
Rows that fail go to `quarantine` and are never billed; rows that depend on a
quarantined row (a contract on a quarantined plan or customer, a customer of a
quarantined location...) are quarantined too, naming the row they depend on.

Outputs: the staged invoices, lines, skips and report are checked before
anything is written; any failure rejects the whole run (nothing is published).

GX Core is called directly, with an ephemeral context (no files); it and pandas
are imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import os
import string
from collections import defaultdict
from dataclasses import dataclass

from .errors import OutputRejected

SUITE_VERSION = "2"  # 2: amount and step bounds, invoice currency
CURRENCY = r"^[A-Z]{3}$"
ACTIONS = ["suspend", "lift"]
SOURCES = ["manual", "signup", "plan", "crm_stage"]
SKIP_REASONS = ["suspended", "archived"]
NO_ID = -1  # quarantine.row_id of the rows of a table that have no id
MAX_PERIOD_CENTS = 10**12  # price x quantity of one full period: 10,000,000,000.00 at most
MAX_MONTHS, MAX_WEEKS = 1200, 5218  # a plan bills at least once a century

# (expectation class, kwargs, reason template, note for finance); templates name columns of the checked frame.
# The reason goes on each quarantined row; the note explains the check in the data-quality report.
INPUT_RULES: dict[str, list[tuple[str, dict, str, str]]] = {
    "locations": [
        (
            "ExpectColumnValuesToMatchRegex",
            {"column": "currency", "regex": CURRENCY},
            "currency '{currency}' is not an ISO 4217 code: set locations.currency to three capital letters",
            "A location without a valid currency code cannot invoice: its customers are held back until it is fixed.",
        ),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "tax_rate_e4", "min_value": 0, "max_value": 10000},
            "tax_rate {tax_rate} is outside 0..1: set locations.tax_rate (0.2000 means 20 %)",
            "A tax rate outside 0-100 % would put wrong tax on every invoice of the location: the location is held back.",
        ),
    ],
    "plans": [
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "location_found", "value_set": [True]},
            "location {location_id} does not exist: fix plans.location_id or add the location",
            "A plan that belongs to no location has no currency or tax rate: it is not billed.",
        ),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "price_cents", "min_value": 0},
            "price {price} is negative: set plans.price to 0 or more",
            "A negative plan price would credit customers: contracts on it are not billed.",
        ),
        (
            "ExpectColumnPairValuesToBeEqual",
            {"column_A": "currency", "column_B": "location_currency", "ignore_row_if": "either_value_is_missing"},
            "currency {currency} differs from its location's {location_currency}: set plans.currency to {location_currency}",
            "A plan priced in another currency than its location would invoice in the wrong currency: it is not billed.",
        ),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "invoice_every_months", "max_value": MAX_MONTHS},
            "invoice_every_months={invoice_every_months} is absurd: a plan bills at least once every "
            f"{MAX_MONTHS} months; correct plans.invoice_every_months",
            "A billing step of more than a century is a data-entry error: the plan is held back.",
        ),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "invoice_every_weeks", "max_value": MAX_WEEKS},
            "invoice_every_weeks={invoice_every_weeks} is absurd: a plan bills at least once every "
            f"{MAX_WEEKS} weeks; correct plans.invoice_every_weeks",
            "A billing step of more than a century is a data-entry error: the plan is held back.",
        ),
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "positive_steps", "value_set": [1]},
            "invoice_every_months={invoice_every_months} and invoice_every_weeks={invoice_every_weeks}: "
            "exactly one of them must be greater than 0 and neither negative",
            "A plan must bill either monthly or weekly, never both or neither: otherwise its periods are undefined and it is not billed.",
        ),
    ],
    "customers": [
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "location_found", "value_set": [True]},
            "location {location_id} does not exist: fix customers.location_id or add the location",
            "A customer of an unknown location has no currency or tax rate: not billed.",
        ),
    ],
    "contracts": [
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "customer_found", "value_set": [True]},
            "customer {customer_id} does not exist: fix contracts.customer_id or add the customer",
            "A contract of an unknown customer has nobody to invoice: not billed.",
        ),
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "plan_found", "value_set": [True]},
            "plan {plan_id} does not exist: fix contracts.plan_id or add the plan",
            "A contract on an unknown plan has no price or period: not billed.",
        ),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "quantity", "min_value": 1},
            "quantity {quantity} is not positive: set contracts.quantity to 1 or more",
            "A quantity of zero or less would invoice nothing or a credit: the contract is held back.",
        ),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "price_cents", "min_value": 0},
            "price {price} is negative: set contracts.price to 0 or more, or to null for the plan's price",
            "A negative contract price would credit the customer: the contract is held back.",
        ),
        (
            "ExpectColumnPairValuesToBeEqual",
            {"column_A": "plan_currency", "column_B": "customer_currency", "ignore_row_if": "either_value_is_missing"},
            "plan {plan_id} bills in {plan_currency} but the customer's location bills in {customer_currency}: "
            "move the contract to a {customer_currency} plan",
            "The contract's plan bills in another currency than the customer's location: invoicing it would mix currencies.",
        ),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "period_cents", "max_value": MAX_PERIOD_CENTS},
            "price {unit_price} x quantity {quantity} = {period_amount} per period is beyond what flexbill bills "
            f"({MAX_PERIOD_CENTS // 100:,} per period): correct contracts.price or contracts.quantity",
            "An amount this large is a data-entry error and could not be taxed exactly: the contract is held back.",
        ),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "billing_day", "min_value": 1, "max_value": 28},
            "billing_day {billing_day} is outside 1..28: set contracts.billing_day to 1..28 or null for the anniversary",
            "A billing day outside 1-28 does not exist in every month: the contract is held back.",
        ),
        (
            "ExpectColumnValuesToBeNull",
            {"column": "weekly_billing_day"},
            "billing_day {billing_day} is set on weekly plan {plan_id}: set contracts.billing_day to null",
            "A billing day only applies to monthly plans: the weekly contract is held back until it is cleared.",
        ),
        (
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {
                "column_A": "cancellation_date",
                "column_B": "start_date",
                "or_equal": True,
                "ignore_row_if": "either_value_is_missing",
            },
            "cancellation_date {cancellation_date} is before start_date {start_date}: correct one of them",
            "A contract cancelled before it starts has no valid billing period: it is held back.",
        ),
    ],
    "suspension_events": [
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "customer_found", "value_set": [True]},
            "customer {customer_id} does not exist: fix suspension_events.customer_id",
            "A suspension of an unknown customer changes nobody's invoices: it is ignored until fixed.",
        ),
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "action", "value_set": ACTIONS},
            "action '{action}' is unknown: it must be 'suspend' or 'lift'",
            "A suspension event must suspend or lift; anything else is ignored until fixed.",
        ),
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "source", "value_set": SOURCES},
            "source '{source}' is unknown: it must be manual, signup, plan or crm_stage",
            "A suspension must come from an admin or an automatic rule; anything else is ignored until fixed.",
        ),
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "lift_source", "value_set": ["manual"]},
            "a lift with source '{source}': only a manual lift ends a suspension; record lifts with `flexbill lift`",
            "Only an admin can lift a suspension: an automatic lift is ignored, so the customer stays suspended.",
        ),
    ],
    "crm_boards": [
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "location_found", "value_set": [True]},
            "location {location_id} does not exist: fix crm_boards.location_id",
            "A CRM board of an unknown location cannot suspend anyone.",
        ),
    ],
    "crm_stages": [
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "board_found", "value_set": [True]},
            "board {board_id} does not exist: fix crm_stages.board_id",
            "A CRM stage of an unknown board cannot suspend anyone.",
        ),
    ],
    "crm_stage_entries": [
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "customer_found", "value_set": [True]},
            "customer {customer_id} does not exist: fix crm_stage_entries.customer_id",
            "A CRM entry of an unknown customer cannot suspend anyone.",
        ),
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "stage_found", "value_set": [True]},
            "stage {stage_id} does not exist: fix crm_stage_entries.stage_id",
            "A CRM entry in an unknown stage cannot suspend anyone.",
        ),
    ],
}

# An operator database without keys may repeat an id. Unlike the rules above, this one reads other rows,
# so it never goes through the per-row verdict cache: check_inputs runs it on the whole table every time.
UNIQUE_ID_RULES = {
    table: [
        (
            "ExpectColumnValuesToBeUnique",
            {"column": "id"},
            f"id {{id}} appears more than once in {table}: give each row its own id",
            "Two rows with one id cannot be told apart: every row with that id is held back.",
        )
    ]
    for table in INPUT_RULES
}

# (table, column holding the parent id, parent table)
DEPENDENCIES = [
    ("customers", "location_id", "locations"),
    ("plans", "location_id", "locations"),
    ("crm_boards", "location_id", "locations"),
    ("crm_stages", "board_id", "crm_boards"),
    ("contracts", "plan_id", "plans"),
    ("contracts", "customer_id", "customers"),
    ("crm_stage_entries", "stage_id", "crm_stages"),
]

OUTPUT_RULES: dict[str, list[tuple[str, dict, str, str]]] = {
    "invoice_lines": [
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "amount_cents", "min_value": 0},
            "a line amount is negative",
            "No invoice line may be a credit: a negative amount blocks the whole run.",
        ),
        (
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {"column_A": "full_cents", "column_B": "amount_cents", "or_equal": True},
            "a line amount exceeds a full period's price x quantity",
            "A line can never charge more than a full period: a larger amount blocks the run.",
        ),
        (
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {"column_A": "period_end", "column_B": "period_start"},
            "a line's period is empty or reversed",
            "Every line covers at least one day: an empty period blocks the run.",
        ),
        (
            "ExpectCompoundColumnsToBeUnique",
            {"column_list": ["contract_id", "period_start"]},
            "a period is invoiced twice",
            "Each billing period is invoiced once: a duplicate blocks the run.",
        ),
    ],
    "invoices": [
        (
            "ExpectColumnPairValuesToBeEqual",
            {"column_A": "currency", "column_B": "location_currency"},
            "an invoice is not in its location's currency",
            "Every invoice is in its location's currency: one in another currency blocks the run.",
        ),
        (
            "ExpectColumnPairValuesToBeEqual",
            {"column_A": "subtotal_cents", "column_B": "lines_cents"},
            "an invoice subtotal differs from the sum of its lines",
            "An invoice subtotal must equal the sum of its lines.",
        ),
        (
            "ExpectColumnPairValuesToBeEqual",
            {"column_A": "total_cents", "column_B": "subtotal_plus_tax"},
            "an invoice total differs from subtotal + tax",
            "An invoice total must equal subtotal plus tax.",
        ),
    ],
    "skipped_contracts": [
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "reason", "value_set": SKIP_REASONS},
            "a skip reason is unknown",
            "Every skipped contract is skipped because its customer is suspended or archived.",
        ),
    ],
    "active_user_report": [
        (
            "ExpectColumnPairValuesToBeEqual",
            {"column_A": "members", "column_B": "active_plus_suspended"},
            "members differ from active + suspended",
            "Every member is either active or suspended.",
        ),
    ],
}


class _Gx:
    """One ephemeral GX context per process, with a dataframe asset per checked table."""

    _instance: _Gx | None = None

    def __init__(self) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        import great_expectations as gx

        self.gx = gx
        self.context = gx.get_context(mode="ephemeral")
        try:
            from great_expectations.data_context.types.base import ProgressBarsConfig

            self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        except (ImportError, AttributeError):  # pragma: no cover - older GX
            pass
        self.source = self.context.data_sources.add_pandas("flexbill")
        self.batches: dict[str, object] = {}
        self.suites: dict[str, object] = {}

    @classmethod
    def get(cls) -> _Gx:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def suite(self, name: str, rules) -> object:
        if name not in self.suites:
            expectations = []
            for rule, (kind, kwargs, note, finance) in enumerate(rules):  # `rule`: GX may reorder its results
                expectations.append(
                    getattr(self.gx.expectations, kind)(
                        **kwargs, meta={"reason": note, "finance": finance, "rule": rule}
                    )
                )
            self.suites[name] = self.gx.ExpectationSuite(name=name, expectations=expectations)
        return self.suites[name]

    def validate(self, name: str, rules, frame, result_format: str = "COMPLETE"):
        if name not in self.batches:
            asset = self.source.add_dataframe_asset(name)
            self.batches[name] = asset.add_batch_definition_whole_dataframe(name)
        batch = self.batches[name].get_batch(batch_parameters={"dataframe": _between_as_floats(frame, rules)})
        try:
            return batch.validate(
                self.suite(f"flexbill.{name}.v{SUITE_VERSION}", rules),
                result_format={
                    "result_format": result_format,
                    "return_unexpected_index_query": False,
                    "exclude_unexpected_values": True,
                    "partial_unexpected_count": 0,
                },
            )
        finally:
            release_batches(self.source)


def _between_as_floats(frame, rules):
    """`frame` with the integer columns of its range rules as float64, so that GX compares them in one vector.

    GX's pandas ExpectColumnValuesToBeBetween calls a Python function per value unless the column's dtype is numpy
    int or float; flexbill's integer columns are nullable (Int64) or hold Python ints (object: a period amount can
    exceed int64).  The verdict is the same for every integer value: every bound is an integer that float64 holds
    exactly, and rounding an int to float64 keeps order (v >= b gives float(v) >= b; v < b gives v <= b - 1, so
    float(v) <= b - 1).  A column that is not all integers (or one beyond float64's range) stays as it is."""
    import pandas as pd

    converted = {}
    for kind, kwargs, _, _ in rules:
        column = kwargs.get("column")
        if kind != "ExpectColumnValuesToBeBetween" or column not in frame.columns or column in converted:
            continue
        bounds = [kwargs.get("min_value"), kwargs.get("max_value")]
        values = frame[column]
        if not all(b is None or (type(b) is int and abs(b) < 2**53) for b in bounds):
            continue
        if values.dtype.kind in "iuf" and not isinstance(values.dtype, pd.api.extensions.ExtensionDtype):
            continue  # numpy already: GX's vector path
        if pd.api.types.infer_dtype(values, skipna=True) not in ("integer", "empty"):
            continue
        try:
            converted[column] = values.astype("float64")
        except (OverflowError, TypeError, ValueError):
            continue
    return frame.assign(**converted) if converted else frame


def release_batches(datasource) -> None:
    """Let go of the frames GX validated through `datasource`. Its execution engine keeps every batch it loaded, and
    each batch's whole frame, for the life of the process (GX also keeps the last context alive): after a run's
    input checks, the checked frames of every source table (at 1M the contracts' alone are ~85 MiB of columns, plus
    their values) stayed alive through the whole run. A result never refers to its batch's frame (only row
    positions)."""
    manager = datasource.get_execution_engine().batch_manager
    manager.batch_data_cache.clear()
    manager.reset_batch_cache()


@dataclass
class InputVerdict:
    valid: dict  # table -> DataFrame of rows that may be billed
    quarantine: object  # DataFrame: source_table, row_id, reason
    checks: object = None  # DataFrame: the `flexbill_inputs` suite's checks with their failing rows (check_rows)


class _Formatter(string.Formatter):
    """Formats reason templates: missing values read 'null', midnight timestamps read as dates."""

    def get_value(self, key, args, kwargs):
        value = kwargs.get(key)
        if value is None or value != value:
            return "null"
        if hasattr(value, "date") and hasattr(value, "normalize") and value == value.normalize():
            return value.date().isoformat()
        return value


_FORMAT = _Formatter()
ROW_CACHE_MAX = 5_000_000
GX_ROWS = 1_000_000  # rows per GX validation of a source table's row rules (_gx_failures)
_ROW_VERDICTS: dict[str, dict] = {}


def _with_amounts(record: dict) -> dict:
    """A failing row's money as text for its reason (only failing rows: never a Decimal per source row)."""
    for text, cents in (("price", "price_cents"), ("unit_price", "unit_cents"), ("period_amount", "period_cents")):
        if cents in record:
            record[text] = _money_text(record[cents])
    return record


def _money_text(cents) -> object:
    import pandas as pd

    if cents is None or pd.isna(cents):
        return None
    from .money import from_cents

    return from_cents(int(cents))


CHECKED_TABLES = (
    "locations",
    "plans",
    "customers",
    "contracts",
    "suspension_events",
    "crm_boards",
    "crm_stages",
    "crm_stage_entries",
)


def _check_frames(src: dict) -> dict:
    """Per table, the frame its expectations read: the row plus what it is checked against."""
    return {name: _check_frame(src, name) for name in CHECKED_TABLES}


def _check_frame(src: dict, name: str):
    """The frame table `name`'s expectations read: its rows plus what each is checked against (built one table at
    a time: at 10M the contracts' alone hold ~1 GB while GX reads them)."""
    import pandas as pd

    from .frames import lookup

    def ids(table):  # the ids a reference may name: an array, not a set of Python ints (5M customers at 10M)
        return src[table]["id"].dropna().to_numpy("int64")

    if name == "locations":
        frame = src["locations"].assign(
            tax_rate=src["locations"]["tax_rate_e4"].map(lambda v: None if v is None or v != v else int(v) / 10000)
        )
    elif name == "plans":
        plans = src["plans"]
        steps = (plans["invoice_every_months"].fillna(-1) > 0).astype(int) + (
            plans["invoice_every_weeks"].fillna(-1) > 0
        ).astype(int)
        negative = (plans["invoice_every_months"].fillna(0) < 0) | (plans["invoice_every_weeks"].fillna(0) < 0)
        frame = plans.assign(
            location_found=plans["location_id"].isin(ids("locations")),
            location_currency=lookup(plans["location_id"], src["locations"], "currency"),
            positive_steps=steps.where(~negative, -1),
        )
    elif name == "customers":
        customers = src["customers"]
        frame = customers.assign(location_found=customers["location_id"].isin(ids("locations")))
    elif name == "contracts":
        contracts, plans, customers = src["contracts"], src["plans"], src["customers"]
        weekly = lookup(contracts["plan_id"], plans, "invoice_every_weeks").fillna(0) > 0
        customer_location = lookup(contracts["customer_id"], customers, "location_id")
        unit = contracts["price_cents"].where(
            contracts["price_cents"].notna(), lookup(contracts["plan_id"], plans, "price_cents")
        )
        frame = contracts.assign(
            period_cents=_period_cents(unit, contracts["quantity"]),
            unit_cents=unit,
            customer_found=contracts["customer_id"].isin(ids("customers")),
            plan_found=contracts["plan_id"].isin(ids("plans")),
            plan_currency=lookup(contracts["plan_id"], plans, "currency"),
            customer_currency=lookup(customer_location, src["locations"], "currency"),
            weekly_billing_day=contracts["billing_day"].where(weekly),
        )
    elif name == "suspension_events":
        events = src["suspension_events"]
        frame = events.assign(
            customer_found=events["customer_id"].isin(ids("customers")),
            lift_source=events["source"].where(events["action"] == "lift"),
        )
    elif name == "crm_boards":
        frame = src["crm_boards"].assign(location_found=src["crm_boards"]["location_id"].isin(ids("locations")))
    elif name == "crm_stages":
        frame = src["crm_stages"].assign(board_found=src["crm_stages"]["board_id"].isin(ids("crm_boards")))
    else:
        entries = src["crm_stage_entries"]
        frame = entries.assign(
            customer_found=entries["customer_id"].isin(ids("customers")),
            stage_found=entries["stage_id"].isin(ids("crm_stages")),
        )
    return pd.DataFrame(frame).reset_index(drop=True)  # GX wants plain object columns for mixed values


def _period_cents(unit, quantity):
    """A full period's amount per contract (unit x quantity; missing where either is): Int64 where every product
    fits in int64 (no Python int per contract: 10M of them at 10M), else exact Python ints."""
    import pandas as pd

    def reach(values) -> int:  # the largest magnitude, as a Python int (numpy's abs wraps at -2**63)
        values = values.dropna()
        return 0 if values.empty else max(abs(int(values.min())), abs(int(values.max())))

    try:
        u, q = unit.astype("Int64"), quantity.astype("Int64")
        if reach(u) * reach(q) < 2**63:
            return u * q
    except (OverflowError, TypeError, ValueError):  # an amount beyond int64
        pass
    missing = (unit.isna() | quantity.isna()).to_numpy()  # one vectorised test, not pd.isna per value
    period = [None if m else int(a) * int(b) for a, b, m in zip(unit.tolist(), quantity.tolist(), missing)]
    return pd.Series(period, index=unit.index, dtype=object)


REQUIRED_RULE = (
    "ExpectColumnValuesToBeNull",
    {"column": "missing_required"},
    "{missing_required}: set a valid value",
    "A row with a required value missing or unreadable cannot be billed safely: it is held back.",
)


def _missing_required(name: str, frame):
    """Per row, the values that are missing though required, or present but unreadable
    (text in a date column, say: possible in SQLite); None where the row is fine."""
    import pandas as pd

    from .db import schema
    from .db.extract import parsed_name

    notes: list = [None] * len(frame)
    for column in schema.metadata.tables[name].columns:
        if column.primary_key:
            continue
        parsed = parsed_name(column)
        raw = frame.get(f"{column.name}__raw")
        malformed = raw.notna().to_numpy() if raw is not None else None
        missing = frame[parsed].isna().to_numpy() if not column.nullable else None
        if malformed is None and (missing is None or not missing.any()):
            continue
        for position in range(len(frame)):
            if malformed is not None and malformed[position]:
                text = f"{name}.{column.name} '{raw.iat[position]}' is malformed"
            elif missing is not None and missing[position]:
                text = f"{name}.{column.name} is missing"
            else:
                continue
            notes[position] = text if notes[position] is None else f"{notes[position]}; {text}"
    return pd.Series(notes, index=frame.index, dtype=object)


def _gx_failures(name: str, frame) -> dict:
    """{row position: [(rule, reason), ...]} from one GX validation of the table (COMPLETE: failing row positions);
    `rule` is the failed rule's position in INPUT_RULES[name] + [REQUIRED_RULE]."""
    rules = INPUT_RULES[name] + [REQUIRED_RULE]
    # GX reads only the columns the rules name (it copies the rows of its whole frame per expectation: fewer
    # columns, less to copy); the reasons are formatted from the full row, found by position
    checked = frame[_rule_columns(rules)]
    failures: dict[int, list[tuple[int, str]]] = defaultdict(list)
    # every input rule reads its own row only: GX checks the rows in parts, and holds one part's working copies
    # at a time (it copies the checked columns per expectation: ~1 GB for the 10M contracts at once)
    for first in range(0, len(checked), GX_ROWS):
        part = checked.iloc[first : first + GX_ROWS].reset_index(drop=True)
        result = _Gx.get().validate(f"inputs.{name}", rules, part, "COMPLETE")
        del part
        if result.success:
            continue
        for res in result.results:
            if res.success:
                continue
            note, rule = res.expectation_config.meta["reason"], res.expectation_config.meta["rule"]
            positions = [first + int(p) for p in res.result.get("unexpected_index_list") or []]
            for position, record in zip(positions, frame.iloc[positions].to_dict("records")):
                failures[position].append((rule, _FORMAT.format(note, **_with_amounts(record))))
    return failures


def _failures(name: str, frame, remember: bool = False) -> dict:
    """{row position: [(rule, reason), ...]} for one table (`rule`: as in _gx_failures).

    Every rule reads only its own row (plus the values looked up into it), so a
    row's verdict is remembered by the hash of what the checks read: a primed
    backfill sends only new or changed rows through GX.  A single run (nothing
    primed) validates the frame as it is, without hashing.
    """
    import pandas as pd

    if frame.empty:
        return {}
    frame = frame.assign(missing_required=_missing_required(name, frame))
    for _, _, note, _ in INPUT_RULES[name]:  # columns a template names must exist for formatting
        for _, field_name, _, _ in _FORMAT.parse(note):
            if field_name and field_name not in frame.columns:
                frame[field_name] = None
    if not remember and not _ROW_VERDICTS.get(name):
        return _gx_failures(name, frame)
    typed = frame.astype({c: str for c in frame.columns if frame[c].dtype == object})
    hashes = pd.util.hash_pandas_object(typed, index=False).to_numpy()
    cache = _ROW_VERDICTS.setdefault(name, {})
    if len(cache) > ROW_CACHE_MAX:
        cache.clear()
    new = [pos for pos, h in enumerate(hashes) if h not in cache]
    if new:
        subset = frame.iloc[new].reset_index(drop=True)
        found = _gx_failures(name, subset)
        for i, pos in enumerate(new):
            cache[hashes[pos]] = tuple(found.get(i, ()))
    return {pos: list(cache[h]) for pos, h in enumerate(hashes) if cache[h]}


def prime(src: dict) -> None:
    """Validate every row version of `src` once, so later runs over subsets of it hit the cache.

    A backfill primes with the snapshot at its last cutoff: each date's run then
    finds its rows' verdicts already known (a row whose looked-up values differ
    at an earlier cutoff hashes differently and is validated in its own run).
    """
    frames = _check_frames(src)
    for name, frame in frames.items():
        _failures(name, frame, remember=True)


def check_inputs(src: dict, owned: bool = False) -> InputVerdict:
    """Quarantine every contract-breaking source row (and the rows that depend on one).

    `owned`: the caller hands `src` over and keeps no other reference to its frames: each table is taken out of it
    as its valid rows are copied, column by column, so a table and its valid copy are never held whole at once
    (the 10M contracts: ~0.85 GB each)."""
    import pandas as pd

    reasons: dict[tuple[str, int], list[str]] = defaultdict(list)
    src = src if owned else dict(src)
    for name, frame in src.items():  # a row without an id cannot be named, billed or quarantined by id
        no_id = frame["id"].isna()
        if no_id.any():
            reasons[(name, NO_ID)].append(
                f"{int(no_id.sum())} row(s) of {name} have no id: give every row an id (listed here as row {NO_ID})"
            )
            src[name] = frame[~no_id].reset_index(drop=True)
    failing: dict[tuple[str, int], int] = defaultdict(int)  # (table, rule) -> failing rows; rule as in _gx_failures
    checked = 0
    for name in CHECKED_TABLES:  # one table's check frame at a time
        frame = _check_frame(src, name)
        checked += len(frame)
        found = _failures(name, frame)
        unique = len(INPUT_RULES[name]) + 1  # the id rule's key: after the table's rules and REQUIRED_RULE
        if not frame.empty and frame["id"].duplicated().any():  # whole-table check, never cached
            result = _Gx.get().validate(f"inputs.{name}.ids", UNIQUE_ID_RULES[name], frame[["id"]], "COMPLETE")
            for res in result.results:
                for position in res.result.get("unexpected_index_list") or []:
                    found.setdefault(int(position), []).append(
                        (unique, _FORMAT.format(UNIQUE_ID_RULES[name][0][2], id=frame.at[int(position), "id"]))
                    )
        for position, notes in found.items():
            row_id = frame.at[position, "id"]
            for rule in {rule for rule, _ in notes}:
                failing[(name, rule)] += 1
            for _, note in notes:
                if note not in reasons[(name, int(row_id))]:  # a repeated id fails once per copy
                    reasons[(name, int(row_id))].append(note)
        del frame, found  # before the next table's frame is built
    for table, column, parent in DEPENDENCIES:  # in dependency order: parents first
        bad_parents = {rid: "; ".join(n) for (t, rid), n in reasons.items() if t == parent}
        if not bad_parents:
            continue
        frame = src[table]
        hit = frame[frame[column].isin(list(bad_parents))]
        singular = parent.rstrip("s").replace("crm_", "").replace("_entrie", " entry")
        for row_id, parent_id in zip(hit["id"].tolist(), hit[column].tolist()):
            reasons[(table, int(row_id))].append(
                f"depends on quarantined {singular} {int(parent_id)} ({bad_parents[int(parent_id)]})"
            )
    rows = sorted((t, rid, "; ".join(notes)) for (t, rid), notes in reasons.items())
    quarantine = pd.DataFrame(rows, columns=["source_table", "row_id", "reason"])
    valid = {}
    for name in list(src):
        frame = src.pop(name) if owned else src[name]
        bad = {rid for (t, rid) in reasons if t == name}
        if not bad:
            valid[name] = frame
        elif owned:
            valid[name] = _rows_taken(frame, ~frame["id"].isin(list(bad)).to_numpy())
        else:
            valid[name] = frame[~frame["id"].isin(list(bad))].reset_index(drop=True)
        del frame
    return InputVerdict(valid=valid, quarantine=quarantine, checks=input_checks(failing, checked))


def _rows_taken(frame, keep):
    """frame[keep] (index reset), built a column at a time while the frame's own columns are dropped: only one
    column's copy is held beside the frame (the caller owns `frame` and keeps no other reference to it)."""
    import pandas as pd

    columns = {}
    for name in list(frame.columns):
        column = frame[name]
        columns[name] = pd.Series(column.array[keep], dtype=column.dtype, copy=False)  # no dtype inferred anew
        del column, frame[name]
    return pd.DataFrame(columns, copy=False)


def _prefixed(name: str, kwargs: dict) -> dict:
    out = dict(kwargs)
    for key in ("column", "column_A", "column_B"):
        if key in out:
            out[key] = f"{name}__{out[key]}"
    if "column_list" in out:
        out["column_list"] = [f"{name}__{c}" for c in out["column_list"]]
    return out


STACKED_OUTPUT_RULES = [
    (kind, _prefixed(name, kwargs), f"{name}: {note}", finance)
    for name, rules in OUTPUT_RULES.items()
    for kind, kwargs, note, finance in rules
]


def _rule_columns(rules) -> list[str]:
    """The columns a list of rules reads."""
    return sorted(
        {
            c
            for _, kwargs, _, _ in rules
            for k, v in kwargs.items()
            if k in ("column", "column_A", "column_B", "column_list")
            for c in (v if isinstance(v, list) else [v])
        }
    )


def _stack(frames: dict, rules_by_table: dict | None = None):
    """Frames of several tables as one (columns `<table>__<column>`), validated in one GX call."""
    import pandas as pd

    parts = []
    for name, rules in (OUTPUT_RULES if rules_by_table is None else rules_by_table).items():
        frame = frames.get(name)
        if frame is None or frame.empty:
            continue
        columns = _rule_columns(rules)
        part = frame[columns].reset_index(drop=True)
        for c in columns:  # nullable ints: stacking must not turn cents into floats
            if pd.api.types.is_integer_dtype(part[c]) and not pd.api.types.is_extension_array_dtype(part[c]):
                part[c] = part[c].astype("Int64")
        parts.append(part.rename(columns={c: f"{name}__{c}" for c in columns}))
    return pd.concat(parts, ignore_index=True) if parts else None


def _with_all_columns(stacked, rules):
    """A table with no rows today still needs its columns."""
    import pandas as pd

    stacked = pd.DataFrame() if stacked is None else stacked
    for _, kwargs, _, _ in rules:
        for c in [kwargs.get("column"), kwargs.get("column_A"), kwargs.get("column_B"), *kwargs.get("column_list", [])]:
            if c and c not in stacked.columns:
                stacked[c] = pd.Series([None] * len(stacked), dtype=object)
    return stacked


INPUT_RULES_WITH_REQUIRED = {
    name: rules + UNIQUE_ID_RULES[name] + [REQUIRED_RULE] for name, rules in INPUT_RULES.items()
}
STACKED_INPUT_RULES = [
    (kind, _prefixed(name, kwargs), f"{name}: {note}", finance)
    for name, rules in INPUT_RULES_WITH_REQUIRED.items()
    for kind, kwargs, note, finance in rules
]
SUITES = {"flexbill_inputs": STACKED_INPUT_RULES, "flexbill_outputs": STACKED_OUTPUT_RULES}
SUITE_NOTES = {
    "flexbill_inputs": "Checks on the operator's billing database, as of the run's cutoff. A row that fails is "
    "quarantined: never billed, listed in the report with what to fix.",
    "flexbill_outputs": "Checks on the invoices, skips and active-user report a run is about to publish. "
    "Any failure blocks the run: nothing is published.",
}


CHECK_COLUMNS = ["suite", "position", "expectation", "column_name", "success", "unexpected_count", "element_count"]


def _expectation_type(kind: str) -> str:
    """ExpectColumnValuesToBeNull -> expect_column_values_to_be_null (GX's serialized name)."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in kind).lstrip("_")


def _check_column(kwargs: dict) -> str:
    return ", ".join(
        c
        for c in [kwargs.get("column"), kwargs.get("column_A"), kwargs.get("column_B"), *kwargs.get("column_list", [])]
        if c
    )


def check_rows(suite: str, unexpected: list[int], element_count: int):
    """One row per expectation of `suite` (SUITES order): its failing rows and whether it passed.  What a run keeps
    of its validation (the data_quality table), so the finance report shows it without validating again."""
    import pandas as pd

    rules = SUITES[suite]
    if len(unexpected) != len(rules):
        raise ValueError(f"{suite}: {len(unexpected)} counts for {len(rules)} expectations")
    return pd.DataFrame(
        [
            (suite, position, _expectation_type(kind), _check_column(kwargs), n == 0, int(n), int(element_count))
            for position, ((kind, kwargs, _, _), n) in enumerate(zip(rules, unexpected))
        ],
        columns=CHECK_COLUMNS,
    )


def input_checks(failing: dict, element_count: int):
    """check_rows of `flexbill_inputs` from check_inputs' failing rows per (table, rule), the rule numbered as in
    _gx_failures (the table's rules, REQUIRED_RULE, then the id rule), whereas the suite orders a table's rules,
    its id rule, then REQUIRED_RULE."""
    counts = []
    for name, rules in INPUT_RULES.items():
        n = len(rules)
        counts += [failing.get((name, rule), 0) for rule in range(n)]
        counts += [failing.get((name, n + 1), 0), failing.get((name, n), 0)]  # unique id, then required
    return check_rows("flexbill_inputs", counts, element_count)


def stacked_inputs(src: dict):
    """The source snapshot as the one frame the `flexbill_inputs` suite reads."""
    frames = _check_frames(src)
    for name, frame in frames.items():
        frames[name] = frame.assign(missing_required=_missing_required(name, frame))
    return _with_all_columns(_stack(frames, INPUT_RULES_WITH_REQUIRED), STACKED_INPUT_RULES)


def stacked_outputs(frames: dict):
    """Outputs (as staged, or as published) as the one frame the `flexbill_outputs` suite reads."""
    return _with_all_columns(_stack(frames), STACKED_OUTPUT_RULES)


def suite_json(name: str) -> dict:
    """The suite as GX serializes it: what include/gx/expectations/<name>.json holds."""
    gx = _Gx.get().gx
    suite = gx.ExpectationSuite(
        name=name,
        meta={"flexbill_version": SUITE_VERSION, "notes": SUITE_NOTES[name]},
        expectations=[
            getattr(gx.expectations, kind)(**kwargs, meta={"reason": note, "finance": finance})
            for kind, kwargs, note, finance in SUITES[name]
        ],
    )
    out = suite.to_json_dict()
    out.pop("id", None)
    for e in out.get("expectations", []):
        e.pop("id", None)
    out["meta"].pop("great_expectations_version", None)
    return out


def check_outputs(frames: dict):
    """Raise OutputRejected (nothing is published) when a staged output breaks a rule; else the `flexbill_outputs`
    suite's check_rows (every check passed)."""
    passed = [0] * len(STACKED_OUTPUT_RULES)
    if all(f is None or f.empty for f in frames.values()):
        return check_rows("flexbill_outputs", passed, 0)
    stacked = stacked_outputs(frames)
    gx = _Gx.get()
    if gx.validate("outputs", STACKED_OUTPUT_RULES, stacked, "BOOLEAN_ONLY").success:
        return check_rows("flexbill_outputs", passed, len(stacked))
    result = gx.validate("outputs", STACKED_OUTPUT_RULES, stacked, "BASIC")  # only to count the failures
    problems = []
    for res in result.results:
        if not res.success:
            count = res.result.get("unexpected_count")
            problems.append(res.expectation_config.meta["reason"] + (f" ({count} rows)" if count else ""))
    raise OutputRejected(
        "output validation failed, nothing was published: "
        + "; ".join(problems)
        + ". This is a flexbill defect or a tampered staging result: keep the database as it is and report it."
    )
