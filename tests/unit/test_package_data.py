"""The SQL statements and the GX suites ship inside the package (issue 11).

They live in plugins/flexbill/sql/ and plugins/flexbill/gx_suites/, are declared as package data in
pyproject.toml and are read through importlib.resources, so a wheel installed anywhere (no repository beside it)
finds them. include/sql and include/gx/expectations stay in the project layout as relative symlinks to those
folders; docker-compose.yaml mounts plugins/ and include/ side by side under /opt/airflow, where they resolve too.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "plugins" / "flexbill"
SQL_FILES = sorted(p.name for p in (PACKAGE / "sql").glob("*.sql"))
SUITE_FILES = sorted(p.name for p in (PACKAGE / "gx_suites").glob("*.json"))
DATA = {"sql": SQL_FILES, "gx_suites": SUITE_FILES}


def test_the_data_folders_hold_the_files_the_code_names():
    from flexbill import quality

    assert {
        "later_lines.sql",
        "rewind_ledger.sql",
        "window_lines.sql",
        "lifecycle.postgresql.sql",
        "lifecycle.sqlite.sql",
    } <= set(SQL_FILES)
    assert SUITE_FILES == sorted(f"{name}.json" for name in quality.SUITE_NAMES)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of the working tree. Built from a copy of pyproject.toml, the other top-level files and plugins/:
    the build leaves no build/ or *.egg-info in the checkout, and no stale build/lib file can stand in for one
    that package-data fails to declare."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for path in ROOT.iterdir():
        if path.is_file() and not path.name.startswith("."):
            shutil.copy2(path, src / path.name)
    shutil.copytree(
        PACKAGE.parent,
        src / "plugins",
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(tmp / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = (tmp / "dist").glob("flexbill-*.whl")
    return built


def test_the_wheel_carries_every_sql_file_and_gx_suite(wheel):
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        for folder, files in DATA.items():
            packaged = {n for n in names if n.startswith(f"flexbill/{folder}/")}
            assert packaged == {f"flexbill/{folder}/{name}" for name in files}, folder
            for name in files:
                assert whl.read(f"flexbill/{folder}/{name}") == (PACKAGE / folder / name).read_bytes(), name
        # finance_report.py reads its template beside itself: a wheel without it cannot write the finance page
        assert "flexbill/templates/finance_report.html.j2" in names


PROBE = r"""
import json, os, sys
target, plugins = sys.argv[1], os.path.realpath(sys.argv[2])
sys.path[:] = [target] + [p for p in sys.path if p and os.path.realpath(p) != plugins]
import flexbill
from importlib.resources import files
from flexbill import quality
from flexbill.db import dialect
out = {"file": flexbill.__file__, "root": str(files("flexbill")), "sql": {}, "statements": {}, "suites": {}}
for name in sys.argv[3].split(","):
    stem = name[:-len(".sql")]
    if stem.endswith((".postgresql", ".sqlite")):
        base, dialect_name = stem.rsplit(".", 1)
        out["statements"][name] = dialect.statements(base, dialect_name)
    else:
        out["sql"][name] = dialect.sql(stem).text
for name in quality.SUITE_NAMES:
    out["suites"][name] = quality.load_suite(name)
print(json.dumps(out))
"""


@pytest.mark.parametrize("layout", ["installed", "zipped"])
def test_dialect_and_quality_find_their_files_in_the_wheel_without_the_repository(wheel, tmp_path, layout):
    """`installed`: the wheel unpacked as pip installs it (pure Python); `zipped`: imported from the .whl itself,
    which only works when the files are read through importlib.resources, never by a path on disk."""
    from flexbill import quality
    from flexbill.db import dialect

    if layout == "installed":
        target = tmp_path / "site-packages"
        with zipfile.ZipFile(wheel) as whl:
            whl.extractall(target)
    else:
        target = wheel
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(target), str(PACKAGE.parent), ",".join(SQL_FILES)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["file"].startswith(str(target)) and not out["file"].startswith(str(ROOT)), out["file"]
    assert out["root"].startswith(str(target)), out["root"]
    for name, text in out["sql"].items():
        assert text == (PACKAGE / "sql" / name).read_text(encoding="utf-8"), name
    for name, statements in out["statements"].items():
        base, dialect_name = re.fullmatch(r"(.+)\.(postgresql|sqlite)\.sql", name).groups()
        assert statements and statements == dialect.statements(base, dialect_name), name
    assert set(out["sql"]) | set(out["statements"]) == set(SQL_FILES)
    for name in quality.SUITE_NAMES:
        assert out["suites"][name] == json.loads((PACKAGE / "gx_suites" / f"{name}.json").read_text()), name


@pytest.mark.parametrize(
    "link, target", [("include/sql", "plugins/flexbill/sql"), ("include/gx/expectations", "plugins/flexbill/gx_suites")]
)
def test_the_include_folders_are_relative_symlinks_into_the_package(link, target):
    path = ROOT / link
    assert path.is_symlink(), f"{link} should be a symlink to {target}"
    pointer = os.readlink(path)
    assert not os.path.isabs(pointer), f"{link} -> {pointer}: absolute, it would not resolve in a container"
    assert path.resolve() == (ROOT / target).resolve()
    # docker-compose.yaml mounts the project's plugins/ and include/ at /opt/airflow/plugins and /opt/airflow/include
    assert os.path.normpath(os.path.join("/opt/airflow", os.path.dirname(link), pointer)) == f"/opt/airflow/{target}"


def test_the_code_reads_the_package_data_not_a_folder_counted_from_the_repository():
    from flexbill import quality
    from flexbill.db import dialect

    assert Path(str(dialect.SQL_DIR)).resolve() == (PACKAGE / "sql").resolve()
    assert Path(str(quality.SUITES_DIR)).resolve() == (PACKAGE / "gx_suites").resolve()
    for module in (dialect, quality):
        source = inspect.getsource(module)
        assert "parents[" not in source and '"include"' not in source, module.__name__


def test_write_suites_writes_where_it_is_told_what_the_package_ships(tmp_path):
    """Regenerating the suites (scripts/write-gx-suites) is a development step: it needs a target folder (no
    default that could be an installed package) and reproduces the packaged files byte for byte."""
    from flexbill import quality

    assert inspect.signature(quality.write_suites).parameters["directory"].default is inspect.Parameter.empty
    before = {name: (PACKAGE / "gx_suites" / name).stat().st_mtime_ns for name in SUITE_FILES}
    written = quality.write_suites(tmp_path / "suites")
    assert sorted(p.name for p in written) == SUITE_FILES
    for path in written:
        assert path.parent == tmp_path / "suites"
        assert path.read_bytes() == (PACKAGE / "gx_suites" / path.name).read_bytes(), path.name
    assert {name: (PACKAGE / "gx_suites" / name).stat().st_mtime_ns for name in SUITE_FILES} == before
