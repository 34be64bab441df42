"""docker-compose.yaml is coherent (no Docker here): services, images, volumes, healthchecks, dependencies,
the CeleryExecutor settings, and the native stack of the Celery tests runs the same configuration."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
import yaml
from sqlalchemy import inspect

from flexbill.db import schema as s
from flexbill.db.connect import make_engine
from tests.distributed.stack import ROOT, Stack
from tests.processes import pg_databases

COMPOSE = ROOT / "docker-compose.yaml"
AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
    "airflow-init",
}
ONE_SHOT = {"airflow-init", "airflow-cli"}  # run once (or on demand): no healthcheck, no restart
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value, env: dict | None = None):
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} with `env` (default: nothing set); $$ is a $."""
    env = env or {}
    if not isinstance(value, str):
        return value

    def sub(m):
        name, op, arg = m["name"], m["op"], m["arg"]
        if env.get(name):
            return env[name]
        if op and op.endswith("?"):
            raise KeyError(f"{name} is required: {arg}")
        return arg if op and op.endswith("-") else ""

    return _VAR.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def common_env(services, name="airflow-scheduler") -> dict:
    return {k: interpolate(v, {"AIRFLOW_JWT_SECRET": "s3cret"}) for k, v in services[name]["environment"].items()}


def test_the_services_of_airflows_official_celery_compose(services):
    assert AIRFLOW_SERVICES | {"postgres", "redis", "flexbill-db"} <= set(services)
    commands = {name: services[name].get("command") for name in AIRFLOW_SERVICES - {"airflow-init"}}
    assert commands == {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-worker": "celery worker",
        "airflow-triggerer": "triggerer",
    }


def test_images_are_pinned_and_the_airflow_image_is_built_from_the_lock(services):
    for name, svc in services.items():
        image = interpolate(svc["image"])
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag ({image})"
    airflow_images = {interpolate(services[n]["image"]) for n in AIRFLOW_SERVICES}
    assert airflow_images == {"flexbill-airflow:3.3.2"}
    for name in AIRFLOW_SERVICES:
        build = services[name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    pins = dict(
        line.split("==", 1)
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    version = re.search(r"^ARG AIRFLOW_VERSION=(\S+)", dockerfile, re.M)[1]
    assert version == pins["apache-airflow"], "the image's Airflow is the pinned one"
    assert re.search(r"^FROM apache/airflow:\$\{AIRFLOW_VERSION\}-python3\.11$", dockerfile, re.M)
    assert "-r /opt/flexbill/requirements.txt" in dockerfile
    for src in re.findall(r"^COPY (\S+) ", dockerfile, re.M):
        assert (ROOT / src).exists(), f"the Dockerfile copies {src}, which is not in the repository"


def test_airflow_services_share_the_configuration_and_mount_dags_plugins_include(services):
    envs = {name: common_env(services, name) for name in AIRFLOW_SERVICES}
    shared = {k: v for k, v in envs["airflow-scheduler"].items()}
    for name, env in envs.items():
        for key in (
            "AIRFLOW__CORE__EXECUTOR",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "AIRFLOW__CELERY__BROKER_URL",
            "AIRFLOW__API_AUTH__JWT_SECRET",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
            "AIRFLOW_CONN_FLEXBILL_DB",
        ):
            assert env[key] == shared[key], f"{name} has another {key}"
        targets = {interpolate(v).split(":")[1] for v in services[name]["volumes"]}
        assert {"/opt/airflow/dags", "/opt/airflow/plugins", "/opt/airflow/include"} <= targets, name
        assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/airflow/dags"
        assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == "/opt/airflow/plugins"


def test_every_bind_mount_exists_in_the_repository_and_every_named_volume_is_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source, target = interpolate(volume).split(":")[:2]
            if source.startswith((".", "/")):
                assert (ROOT / source).is_dir(), f"{name} mounts {source}, which is not in the repository"
            else:
                assert source in declared, f"{name} uses the undeclared volume {source}"
    assert (ROOT / "include" / "sql").is_dir() and (ROOT / "plugins" / "flexbill").is_dir()


def test_healthchecks_and_depends_on_conditions_are_coherent(services):
    for name, svc in services.items():
        if name in ONE_SHOT:
            assert "healthcheck" not in svc and svc.get("restart") is None, name
        else:
            assert svc["healthcheck"]["test"], f"{name} has no healthcheck"
            assert svc.get("restart") == "always", name
        for target, cond in (svc.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on the unknown service {target}"
            condition = cond["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} to be healthy: it has no check"
            else:
                assert condition == "service_completed_successfully" and target in ONE_SHOT, (name, target, cond)
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        deps = services[name]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
        assert {"postgres", "redis", "flexbill-db"} <= set(deps), name
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
    # the scheduler's healthcheck needs its health check server
    assert common_env(services)["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"
    assert "8974/health" in " ".join(services["airflow-scheduler"]["healthcheck"]["test"])


def test_celery_executor_with_redis_broker_and_postgres_metadata(services):
    env = common_env(services)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
    assert broker.scheme == "redis" and broker.hostname == "redis" and broker.port == 6379
    meta = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert meta.scheme.startswith("postgresql") and meta.hostname == "postgres"
    assert services["postgres"]["environment"]["POSTGRES_DB"] == meta.path.lstrip("/")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+" + env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    api = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert api.hostname == "airflow-apiserver" and api.path == "/execution/"
    published = [interpolate(p).split(":")[-1] for p in services["airflow-apiserver"]["ports"]]
    assert str(api.port) in published, "workers reach the api-server on the port it listens on"
    with pytest.raises(KeyError, match="AIRFLOW_JWT_SECRET"):  # no default secret shared by every install
        interpolate(services["airflow-scheduler"]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"])


def test_worker_count_and_the_flexbill_db_connection_are_configurable(services):
    worker = services["airflow-worker"]
    assert interpolate(worker["deploy"]["replicas"]) == "2"
    assert interpolate(worker["deploy"]["replicas"], {"FLEXBILL_WORKERS": "6"}) == "6"
    assert "DUMB_INIT_SETSID" in worker["environment"]
    assert common_env(services)["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "2"

    from airflow.models.connection import Connection

    from flexbill.airflow_steps import database_url

    raw = services["airflow-scheduler"]["environment"]["AIRFLOW_CONN_FLEXBILL_DB"]
    default = Connection(conn_id="flexbill_db", uri=interpolate(raw))
    assert default.conn_type == "postgres" and default.host == "flexbill-db"
    billing = services["flexbill-db"]["environment"]
    assert database_url(default) == (
        f"postgresql://{billing['POSTGRES_USER']}:{billing['POSTGRES_PASSWORD']}"
        f"@flexbill-db:5432/{billing['POSTGRES_DB']}"
    )
    mine = interpolate(raw, {"AIRFLOW_CONN_FLEXBILL_DB": "postgres://bill:pw@db.example:6432/acme"})
    assert database_url(Connection(conn_id="flexbill_db", uri=mine)) == "postgresql://bill:pw@db.example:6432/acme"


def test_the_native_celery_stack_runs_the_compose_configuration(services, tmp_path):
    """tests/distributed/stack.py sets every Airflow setting of the compose file, to the same value where
    the value does not name a container (hosts, paths and ports differ natively)."""
    compose_env = common_env(services)
    native = Stack(
        home=tmp_path,
        metadata_url="postgresql://u@127.0.0.1:5432/meta",
        billing_url="postgresql://u@127.0.0.1:5432/bill",
    ).env()
    urls = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    }
    places = {
        "AIRFLOW__CORE__DAGS_FOLDER",
        "AIRFLOW__CORE__PLUGINS_FOLDER",
        "AIRFLOW_CONN_FLEXBILL_DB",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
        "AIRFLOW__API_AUTH__JWT_SECRET",
    }
    # the native scheduler creates no scheduled run (the tests' backfills are the only runs), so DAGs start
    # unpaused there; in compose they start paused, as in Airflow's official file
    differs = {"AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"}
    for key, value in compose_env.items():
        if not key.startswith("AIRFLOW"):
            continue
        assert key in native, f"the native stack does not set {key}"
        if key in urls:
            assert urlsplit(native[key]).scheme == urlsplit(value).scheme, key
        elif key in places:
            assert native[key], key
        elif key not in differs:
            assert native[key].lower() == value.lower(), f"{key}: native {native[key]!r}, compose {value!r}"
    assert native["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith("/execution/")
    assert native["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] == "False"
    assert native["AIRFLOW__CORE__DAGS_FOLDER"] == str(ROOT / "dags")
    assert native["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(ROOT / "plugins")


@pytest.mark.parametrize("form", ["uri", "json"])
def test_airflow_init_creates_flexbill_tables_in_the_flexbill_db_database(form):
    """docker/init_flexbill_db.py (airflow-init's last step), run natively on a fresh PostgreSQL database."""
    from flexbill.airflow_steps import connection_json

    with pg_databases(1) as (url,):
        u = urlsplit(url)
        conn = f"postgres://{u.username}@{u.hostname}:{u.port}{u.path}" if form == "uri" else connection_json(url)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "FLEXBILL_DB_URL"))}
        env["AIRFLOW_CONN_FLEXBILL_DB"] = conn
        for _ in range(2):  # idempotent
            res = subprocess.run(
                [sys.executable, str(ROOT / "docker" / "init_flexbill_db.py")],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert res.returncode == 0, res.stdout + res.stderr
        engine = make_engine(url)
        try:
            tables = set(inspect(engine).get_table_names())
        finally:
            engine.dispose()
    assert {t.name for t in s.OUTPUT_TABLES} | {"contracts", "suspension_events"} <= tables
