"""A run where every episode errored never exits 0: ``run``, ``leaderboard``, ``attack`` and the
data loop's report exit 1 and say "errored", and partly errored runs count their errored episodes.
(Moved out of ``tests/test_cli_bad_input.py``, which covers bad input: exit 2.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.cli import app
from tests.test_cli_bad_input import SCENARIO

RUNNER = CliRunner()


@pytest.fixture()
def raising_planner(monkeypatch: pytest.MonkeyPatch) -> str:
    """A planner registered for one test (the registry is restored after it) whose every
    ``plan`` call raises."""
    from sim.planning import PLANNERS
    from tests._registry import raising_planner as raiser_class

    Raiser = raiser_class("test_raiser")
    PLANNERS.names()  # load the entry points first, so restoring the dict loses nothing
    monkeypatch.setitem(PLANNERS._items, Raiser.name, Raiser)
    return Raiser.name


def test_run_where_every_episode_errored_exits_1_and_says_errored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raising_planner: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "good.yaml").write_text(SCENARIO.replace("seeds: [0]", "seeds: [0, 1]"), encoding="utf-8")
    res = RUNNER.invoke(app, ["run", "good.yaml", "--out", "r", "--planner", raising_planner])
    assert res.exit_code == 1, res.output
    assert "2 errored" in res.stdout and "every episode errored" in res.stderr
    assert "0 failed" not in res.output and "0.0 %" not in res.output
    rep = RUNNER.invoke(app, ["report", "r"])
    assert rep.exit_code == 0, rep.output
    summary = (tmp_path / "r" / "summary.md").read_text(encoding="utf-8")
    assert "2 errored" in summary and "every episode errored" in summary
    assert "every episode errored" in (tmp_path / "r" / "report.html").read_text(encoding="utf-8")

    mined = RUNNER.invoke(app, ["mine", "r", "--out", "m"])
    assert mined.exit_code == 1, mined.output
    assert "every episode of r errored (2 of 2)" in mined.stderr and "2 errored" in mined.stdout
    assert json.loads((tmp_path / "m" / "mined.json").read_text(encoding="utf-8"))["errored"] == 2

    from sim.loop import _rate_cell, _rates

    rates = _rates(tmp_path / "r")
    assert rates["errored"] == 2 and rates["episodes"] == 2 and rates["failures"] == 0
    assert rates["failure_rate"] != rates["failure_rate"]  # NaN: no failure rate over nothing
    assert _rate_cell(rates) == "every episode errored (2)"


def test_loop_report_never_shows_a_rate_over_errored_episodes(tmp_path: Path) -> None:
    from sim.loop import LoopConfig, _write_report, all_errored

    ev = {"episodes": 4, "errored": 4, "failures": 0, "failure_rate": None, "score": None}
    some = {"episodes": 4, "errored": 1, "failures": 1, "failure_rate": 1 / 3, "score": 0.5}
    from dataclasses import asdict

    report = {"config": asdict(LoopConfig()), "bases": ["b.yaml"], "heldout_cases": 0, "training_sets": {},
              "rounds": [{"round": 0, "nominal": ev, "heldout": ev}]}  # fmt: skip
    _write_report(tmp_path, report)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "every episode errored (4)" in md and "0.0 %" not in md and "produced no result" in md
    assert all_errored(report) == (8, 8)
    report["rounds"] = [{"round": 0, "nominal": some, "heldout": ev}]
    _write_report(tmp_path, report)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "33.3 % (1 errored)" in md and "5 of 8 evaluation episodes errored" in md


def test_leaderboard_and_attack_where_every_episode_errored_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raising_planner: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "good.yaml").write_text(SCENARIO, encoding="utf-8")
    lb = RUNNER.invoke(app, ["leaderboard", "good.yaml", "--planners", raising_planner, "--out", "lb"])
    assert lb.exit_code == 1, lb.output
    assert "every episode errored" in lb.stderr
    assert "every episode errored (1 of 1)" in (tmp_path / "lb" / "leaderboard.md").read_text(encoding="utf-8")
    at = RUNNER.invoke(app, ["attack", "--planner", raising_planner, "--base", "good.yaml", "--budget", "2",
                             "--out", "a", "--generated-dir", "g"])  # fmt: skip
    assert at.exit_code == 1, at.output
    assert "every episode of the search errored (2 of 2)" in at.stderr
    assert json.loads((tmp_path / "a" / "summary.json").read_text(encoding="utf-8"))["errored"] == 2


def test_run_report_and_summary_count_errored_episodes_when_some_errored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "good.yaml").write_text(SCENARIO, encoding="utf-8")
    res = RUNNER.invoke(app, ["run", "good.yaml", "--out", "r"])
    assert res.exit_code == 0, res.output
    assert "0 errored" in res.stdout
    rj = json.loads((tmp_path / "r" / "run.json").read_text(encoding="utf-8"))
    assert rj["episodes"]
