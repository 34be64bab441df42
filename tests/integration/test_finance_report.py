"""The data-quality report finance reads before invoices go out (`flexbill report`).

Figures on the page are checked against the output tables; the page is opened in headless
Chromium (Debian's package, installed by `make test`/.ci/run) and must work offline, escape what
the billing database holds, and never show a password.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from datetime import datetime
from decimal import Decimal
from html.parser import HTMLParser

import pytest
from sqlalchemy import func, select, update

from flexbill import quality, validation
from flexbill.clock import cutoff_of
from flexbill.db import extract
from flexbill.db import schema as s
from flexbill.db.connect import init_db, make_engine
from flexbill.figures import portal_review
from flexbill.finance_report import split_reason, write_report
from flexbill.runner import run_billing_date
from tests.builders import Operator
from tests.integration.test_exactly_once import D0, D, scenario
from tests.processes import ROOT, clean_env, flexbill

ARTIFACTS = ROOT / "test-artifacts"
HOSTILE = "<script>document.title='pwned'</script>Robert'); DROP TABLE invoices;--"
MARKUP = "<img src=x onerror=alert(1)>"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Tables(HTMLParser):
    """Cell texts of every <table id=...> of a page, and every <script> and external reference."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.ids: dict[str, str] = {}
        self.scripts = 0
        self.images = 0
        self.external: list[str] = []
        self._table = self._row = self._cell = None
        self._id_stack: list[tuple[str, str | None]] = []
        self._text: dict[str, list[str]] = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "img":
            self.images += 1
        for key in ("src", "href"):
            if a.get(key) and re.match(r"(?i)(https?:)?//", a[key]):
                self.external.append(a[key])
        if tag == "table":
            self._table = a.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        if a.get("id"):
            self._text[a["id"]] = []
        self._id_stack.append((tag, a.get("id")))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row and not all(c == "" for c in self._row):
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        while self._id_stack:
            open_tag, open_id = self._id_stack.pop()
            if open_id:
                self.ids[open_id] = " ".join("".join(self._text.pop(open_id, [])).split())
            if open_tag == tag:
                break

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        for _, open_id in self._id_stack:
            if open_id:
                self._text[open_id].append(data)


def parse(html: str) -> Tables:
    page = Tables()
    page.feed(html)
    return page


def body(page: Tables, table: str) -> list[list[str]]:
    return page.tables[table][1:]  # without the header row


def money(text: str) -> Decimal:
    return Decimal(text.replace(",", ""))


def billed(url: str) -> object:
    """The exactly-once scenario billed on D0 and D, with hostile text in a suspended member's name and a reason."""
    engine = make_engine(url)
    init_db(engine)
    op = Operator(engine)
    scenario(op)
    op.event(2, datetime(2024, 2, 10), action=MARKUP)  # quarantined: its reason quotes the markup
    with engine.begin() as conn:
        conn.execute(update(s.customers).where(s.customers.c.id == 3).values(full_name=HOSTILE, email="<b>@x.io"))
        conn.execute(update(s.suspension_events).where(s.suspension_events.c.customer_id == 3).values(reason=HOSTILE))
    run_billing_date(engine, D0)
    run_billing_date(engine, D)
    return engine


def test_page_figures_equal_the_output_tables(db_url, tmp_path):
    """Every figure shown for D is what the output tables hold for D."""
    engine = billed(db_url)
    path = write_report(engine, D, tmp_path / "reports", tmp_path / "gx")
    assert path == tmp_path / "reports" / D.isoformat() / "index.html"
    page = parse(path.read_text())
    i, li, k, q, r = s.invoices, s.invoice_lines, s.skipped_contracts, s.quarantine, s.active_user_report
    with engine.connect() as conn:
        by_currency = conn.execute(
            select(i.c.currency, func.count(), func.sum(i.c.subtotal), func.sum(i.c.tax), func.sum(i.c.total))
            .where(i.c.billing_date == D)
            .group_by(i.c.currency)
        ).all()
        skipped = conn.execute(
            select(k.c.reason, func.count(), func.sum(k.c.owed_periods))
            .where(k.c.billing_date == D)
            .group_by(k.c.reason)
        ).all()
        quarantined = conn.execute(select(q.c.source_table, q.c.row_id).where(q.c.billing_date == D)).all()
        report = conn.execute(
            select(
                r.c.location_id,
                r.c.members,
                r.c.active_users,
                r.c.suspended_members,
                r.c.suspended_with_portal_access,
                r.c.contacts,
            )
            .where(r.c.report_date == D)
            .order_by(r.c.location_id)
        ).all()
        back = conn.execute(
            select(func.count(), func.sum(li.c.amount))
            .select_from(li.join(i, i.c.invoice_id == li.c.invoice_id))
            .where(i.c.billing_date == D, li.c.period_start < D)
        ).one()
    assert by_currency and skipped and quarantined and back[0] > 0  # the scenario has every kind of output
    shown = {
        row[0]: (int(row[1]), money(row[2]), money(row[3]), money(row[4])) for row in body(page, "currency-totals")
    }
    assert shown == {c: (n, Decimal(sub), Decimal(tax), Decimal(tot)) for c, n, sub, tax, tot in by_currency}
    shown_skips = {}
    for reason, _, contracts, periods, _ in body(page, "skipped-table"):
        n, p = shown_skips.get(reason, (0, 0))
        shown_skips[reason] = (n + int(contracts), p + int(periods))
    assert shown_skips == {reason: (n, int(p)) for reason, n, p in skipped}
    assert {(row[0].split()[0], int(row[0].split()[1])) for row in body(page, "quarantine-table")} == set(quarantined)
    assert [[int(row[0].split()[0]), *map(int, row[1:])] for row in body(page, "active-users-table")] == [
        list(row) for row in report
    ]
    back_rows = body(page, "back-billed")
    assert sum(int(row[2]) for row in back_rows) == back[0]
    assert sum(money(row[3]) for row in back_rows) == Decimal(back[1])
    assert page.ids["run-status"] == "validated"
    assert page.ids["reconciliation-result"] == "passed"
    # the suspended member with portal access is listed for review, its hostile name as text
    review = body(page, "portal-review")
    assert sorted(int(row[0]) for row in review) == [3, 4, 5]  # manual, plan rule, signup rule (location 2)
    assert len(review) == sum(row[4] for row in report)
    assert {row[0]: row[1] for row in review}["3"] == HOSTILE
    # GX results: the scenario's quarantined contract (quantity 0) fails one input check, outputs pass
    checks = body(page, "checks-table")
    failing = [row for row in checks if row[3] == "failed"]
    assert ["flexbill_inputs", "contracts.quantity"] == failing[0][:2] and int(failing[0][4]) == 1
    assert page.ids["gx-outputs"] == "passed"
    assert all(row[2] for row in checks)  # every check says, for finance, what it protects


def test_the_portal_list_reads_only_its_columns_and_lists_the_same_members(db_url):
    """The report's portal list reads a few columns of customers, events and contracts (reading every column was
    the 10M report's peak memory): it lists exactly the members a list built from D's whole snapshot lists."""
    engine = billed(db_url)
    with engine.connect() as conn:
        narrow = portal_review(conn, D)
        whole = portal_review(conn, D, extract.snapshot(conn, cutoff_of(D)))
    assert narrow == whole
    assert sorted(r["customer_id"] for r in narrow) == [3, 4, 5] and narrow[0]["suspended_since"] is not None


def test_csv_exports_hold_the_dates_rows(tmp_path):
    engine = billed(f"sqlite:///{tmp_path / 'db.sqlite'}")
    folder = write_report(engine, D, tmp_path / "reports", tmp_path / "gx").parent
    with engine.connect() as conn:
        invoices = conn.execute(
            select(s.invoices.c.invoice_id, s.invoices.c.total)
            .where(s.invoices.c.billing_date == D)
            .order_by(s.invoices.c.invoice_id)
        ).all()
        skips = conn.execute(select(func.count()).where(s.skipped_contracts.c.billing_date == D)).scalar_one()
        quarantined = (
            conn.execute(select(s.quarantine.c.reason).where(s.quarantine.c.billing_date == D)).scalars().all()
        )
    rows = list(csv.DictReader((folder / "invoices.csv").open()))
    assert [(r["invoice_id"], Decimal(r["total"])) for r in rows] == [(a, Decimal(t)) for a, t in invoices]
    assert len(list(csv.DictReader((folder / "skipped.csv").open()))) == skips > 0
    assert sorted(r["reason"] for r in csv.DictReader((folder / "quarantine.csv").open())) == sorted(quarantined)


def test_rerunning_a_date_keeps_every_validation_and_rebuilds_data_docs(tmp_path):
    """The GX project is re-created idempotently: a second report of the date does not fail on 'already exists'."""
    engine = billed(f"sqlite:///{tmp_path / 'db.sqlite'}")
    gx_dir = tmp_path / "gx"
    first = write_report(engine, D, tmp_path / "reports", gx_dir)
    assert write_report(engine, D, tmp_path / "reports", gx_dir) == first  # the same run's report again ...
    stored = list((gx_dir / "gx" / "uncommitted" / "validations").rglob("*.json"))
    assert len(stored) == 2  # ... is the same validation of each suite, not a new one
    run_billing_date(engine, D, recompute=True)  # a rerun that validates again, then its report
    second = write_report(engine, D, tmp_path / "reports", gx_dir)
    assert first == second
    stored = list((gx_dir / "gx" / "uncommitted" / "validations").rglob("*.json"))
    assert len([p for p in stored if "flexbill_inputs" in p.parts]) == 2
    assert len([p for p in stored if "flexbill_outputs" in p.parts]) == 2
    link = parse(second.read_text()).ids["data-docs"]
    assert link == "Open the GX Data Docs"
    href = re.search(r'id="data-docs" href="([^"]+)"', second.read_text()).group(1)
    assert not href.startswith(("http:", "https:", "/"))  # relative: moves with the folders
    assert (second.parent / href).resolve().is_file()


def test_a_blocked_run_is_shown_as_blocked_with_its_reason(tmp_path):
    engine = billed(f"sqlite:///{tmp_path / 'db.sqlite'}")

    def negative_line(result, report_frame):
        result.lines.loc[result.lines.index[0], "amount_cents"] = -100

    with pytest.raises(Exception, match="a line amount is negative"):
        run_billing_date(engine, D, tamper=negative_line)
    page = parse(write_report(engine, D, tmp_path / "reports", tmp_path / "gx").read_text())
    assert page.ids["run-status"] == "blocked"
    assert "a line amount is negative" in page.ids["status"]
    assert "last good publish" in page.ids["status"]  # D's earlier publish is still what the tables hold


def test_committed_suites_are_the_ones_the_code_checks():
    """plugins/flexbill/gx_suites is versioned (package data): after a rule changes, run scripts/write-gx-suites."""
    for name in quality.SUITE_NAMES:
        assert quality.load_suite(name) == json.loads(json.dumps(validation.suite_json(name)))
        committed = quality.load_suite(name)
        assert committed["meta"]["flexbill_version"] == validation.SUITE_VERSION
        assert all(e["meta"]["finance"] and e["meta"]["reason"] for e in committed["expectations"])


@pytest.mark.parametrize(
    "reason, problem, fix",
    [
        (
            "quantity 0 is not positive: set contracts.quantity to 1 or more",
            "quantity 0 is not positive",
            "set contracts.quantity to 1 or more",
        ),
        (
            "depends on quarantined plan 3 (price -1.00 is negative: set plans.price to 0 or more)",
            "depends on quarantined plan 3 (price -1.00 is negative: set plans.price to 0 or more)",
            "fix plan 3 (listed here): this row is billed again once its plan passes",
        ),
        ("something odd", "something odd", "correct the row in the billing database, then rerun the date"),
    ],
)
def test_each_quarantine_reason_splits_into_problem_and_fix(reason, problem, fix):
    assert split_reason(reason) == (problem, fix)


def test_flexbill_run_writes_the_report_and_hides_the_password(pg_database, tmp_path):
    """`flexbill run` writes D's report by default; a password in the URL appears nowhere on the page."""
    url = pg_database.replace("postgresql://postgres@", "postgresql://postgres:S3cretPW@")  # trust auth ignores it
    engine = billed(url)
    out = tmp_path / "reports"
    res = flexbill(
        "run",
        "--date",
        str(D),
        "--out",
        str(out),
        "--gx-dir",
        str(tmp_path / "gx"),
        db=url,
        env=clean_env(url, FLEXBILL_REPORT="1"),
    )
    assert res.returncode == 0, res.stderr
    page = out / D.isoformat() / "index.html"
    assert f"data-quality report: {page}" in res.stdout
    html = page.read_text()
    assert "S3cretPW" not in html and "S3cretPW" not in res.stdout + res.stderr
    assert "***" in parse(html).ids.get("database", html)
    engine.dispose()


def test_report_of_a_database_without_tables_says_what_to_do(tmp_path):
    res = flexbill("report", "--date", str(D), "--out", str(tmp_path), db=f"sqlite:///{tmp_path / 'empty.sqlite'}")
    assert res.returncode == 1
    assert res.stderr.startswith("error:") and "init-db" in res.stderr
    assert not (tmp_path / D.isoformat()).exists()


def test_page_in_headless_chromium_offline(tmp_path):
    """The page renders offline in Chromium: figures from the database, no script, nothing fetched."""
    assert CHROMIUM, "Chromium is missing: `make test` installs Debian's chromium (apt-get install chromium)"
    engine = billed(f"sqlite:///{tmp_path / 'db.sqlite'}")
    path = write_report(engine, D, tmp_path / "reports", tmp_path / "gx")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--hide-scrollbars",
        "--window-size=1200,2600",
    ]
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    page = parse(dom)
    assert page.scripts == 0 and page.images == 0 and page.external == []  # markup stayed text; no CDN
    assert any(MARKUP in row[1] for row in body(page, "quarantine-table"))
    assert "<title>flexbill data-quality report" in dom and "pwned" not in re.search(
        r"<title>(.*?)</title>", dom
    ).group(1)
    with engine.connect() as conn:
        totals = dict(
            conn.execute(
                select(s.invoices.c.currency, func.sum(s.invoices.c.total))
                .where(s.invoices.c.billing_date == D)
                .group_by(s.invoices.c.currency)
            ).all()
        )
    assert {row[0]: money(row[4]) for row in body(page, "currency-totals")} == {
        c: Decimal(t) for c, t in totals.items()
    }
    assert page.ids["reconciliation-result"] == "passed"
    assert "<svg" in dom  # the 30-date chart
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "finance-report.png"
    shot.unlink(missing_ok=True)
    subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={shot}", path.as_uri()], capture_output=True, timeout=120, check=True
    )
    assert shot.stat().st_size > 20_000  # a real rendering, kept as the test artifact
