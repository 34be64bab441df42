"""Clear errors and no secrets (issue 4): a bad driver, a non-numeric port or a SQLite file that is not a
database give one `error:` line (they used to print tracebacks), and a URL SQLAlchemy cannot parse is shown with
everything between the user name and the last '@' hidden (a password containing '@' used to leak its tail).
"""

import pytest

from tests.processes import flexbill

PASSWORD = "pa@ss-TOPSECRET"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+nodriver://billing:pw@127.0.0.1/db",
        "postgresql://billing:pw@127.0.0.1:port/db",
        "NOT-A-DATABASE",  # replaced by the path of a file of random bytes
    ],
)
def test_a_bad_database_url_or_file_gives_one_line(url, tmp_path):
    if url == "NOT-A-DATABASE":
        path = tmp_path / "garbage.sqlite"
        path.write_bytes(bytes(range(256)) * 32)
        url = f"sqlite:///{path}"
    res = flexbill("run", "--date", "2024-03-01", "--db", url, cwd=tmp_path)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr, res.stderr[-400:]
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-400:]


def test_a_malformed_url_never_shows_any_part_of_the_password(tmp_path):
    res = flexbill("run", "--date", "2024-03-01", "--db", f"postgresql//billing:{PASSWORD}@127.0.0.1/db", cwd=tmp_path)
    assert res.returncode == 1
    assert "TOPSECRET" not in res.stdout + res.stderr, res.stderr
