"""How the CLI lays out text for people: explain folds periods invoiced outside flexbill, help joins lines."""

from types import SimpleNamespace as P

from flexbill.cli import _collapse_before_flexbill


def _p(start, state):
    return P(period_start=start, period_end=start, state=state)


def test_consecutive_before_flexbill_periods_become_one_row():
    periods = [_p(f"2026-0{i}-01", "before_flexbill") for i in range(1, 5)] + [_p("2026-05-01", "billed_earlier")]
    rows = _collapse_before_flexbill(periods)
    assert len(rows) == 2
    assert isinstance(rows[0], list) and [p.period_start for p in rows[0]] == [f"2026-0{i}-01" for i in range(1, 5)]
    assert rows[1] is periods[-1]


def test_a_single_before_flexbill_period_and_other_states_stay_single_rows():
    periods = [_p("2026-01-01", "before_flexbill"), _p("2026-02-01", "not_billed"), _p("2026-03-01", "billed")]
    assert _collapse_before_flexbill(periods) == periods


def test_command_list_joins_docstring_lines_into_sentences():
    from typer.testing import CliRunner

    from flexbill.cli import app

    res = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert res.exit_code == 0
    # the docstring of `run` breaks its first paragraph after "is"; the list must not keep that break
    assert "a finalized invoice it would change is credited and replaced by a corrective invoice" in res.output


def test_an_option_name_taken_as_a_value_is_named_in_the_usage_error(monkeypatch, capsys):
    import pytest

    from flexbill import cli

    monkeypatch.setattr("sys.argv", ["flexbill", "suspend", "--customer", "5", "--actor", "--reason", "card declined"])
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --actor was given no value: it took the option name '--reason' as its value")
    assert len(err.strip().splitlines()) == 1
