"""airflow-init's last step: create flexbill's tables in the database of the `flexbill_db` connection.

Reads AIRFLOW_CONN_FLEXBILL_DB (URI or JSON form, as Airflow does), turns it into a SQLAlchemy URL
with flexbill.airflow_steps.database_url and runs `flexbill init-db` on it (idempotent).
"""

import os
import sys

from airflow.models.connection import Connection

from flexbill.airflow_steps import CONN_ID, database_url
from flexbill.cli import main

value = os.environ.get("AIRFLOW_CONN_" + CONN_ID.upper())
if not value:
    sys.exit(f"AIRFLOW_CONN_{CONN_ID.upper()} is not set: give the billing database's connection")
conn = (
    Connection.from_json(value, conn_id=CONN_ID)
    if value.lstrip().startswith("{")
    else Connection(conn_id=CONN_ID, uri=value)
)
sys.argv = ["flexbill", "init-db", "--db", database_url(conn)]
main()
