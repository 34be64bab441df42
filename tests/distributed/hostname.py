"""`[core] hostname_callable` of the native Celery stack: each worker reports its own name.

Both test workers run on this machine, so `socket.getfqdn()` would give every task instance
the same `hostname`; the stack sets FLEXBILL_WORKER_HOSTNAME per worker instead (the compose
file needs nothing: each container has its own hostname).
"""

from __future__ import annotations

import os
import socket

ENV = "FLEXBILL_WORKER_HOSTNAME"


def worker_hostname() -> str:
    return os.environ.get(ENV) or socket.getfqdn()
