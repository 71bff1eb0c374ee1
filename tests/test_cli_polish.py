"""The command line reads as plain text: every option of every command has help, ``planners``
shows no docstring markup, ``compare`` ends with an overall row."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from sim.cli import app
from tests._adversary import BASE


def _commands(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    subs = getattr(cmd, "commands", None)
    if subs:
        for name, sub in subs.items():
            yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), cmd


def test_every_option_of_every_command_has_help() -> None:
    cmds = dict(_commands(get_command(app)))
    assert {"run", "bench env", "train bc", "actors add"} <= set(cmds)  # the walk reaches nested groups
    missing = [f"loopdrive {name} {'/'.join(p.opts)}" for name, cmd in cmds.items() for p in cmd.params
               if p.param_type_name == "option" and not (getattr(p, "help", None) or "").strip()]
    assert not missing, f"options without help text: {missing}"


def test_planners_prints_plain_text() -> None:
    from sim.cli.agents_cmds import plain_doc

    r = CliRunner().invoke(app, ["planners"], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    assert "pdm_closed" in r.output and "idm" in r.output
    assert not re.search(r"``|:class:|:mod:|:func:", r.output), r.output
    assert plain_doc("``idm``: lane following with :class:`~sim.planning.PlannerInit` on *perceived* boxes", "idm") == \
        "Lane following with PlannerInit on perceived boxes"
    assert plain_doc(":func:`sim.batch.run_batch` and a*b*c") == "sim.batch.run_batch and a*b*c"


def test_compare_ends_with_an_overall_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sim.batch import run_batch
    from sim.cli._app import console

    # the CLI's console measured its width when it was made (80 without a terminal, as in CI):
    # widen it so that the overall row's label is not wrapped over two lines
    monkeypatch.setattr(console, "width", 200)

    lib = tmp_path / "lib"
    lib.mkdir()
    for n in ("a", "b"):
        (lib / f"{n}.yaml").write_text(BASE.replace("name: tiny_follow", f"name: {n}").replace("horizon_s: 3.0", "horizon_s: 0.5"))
    run_batch([lib], tmp_path / "A", planner="idm")
    run_batch([lib / "a.yaml"], tmp_path / "B", planner="pdm_closed")
    r = CliRunner().invoke(app, ["compare", str(tmp_path / "A"), str(tmp_path / "B")], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    row = next(line for line in r.output.splitlines() if "overall" in line)
    assert "1 of 2 scenarios in both" in row
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    score_a, score_b, diff = float(cells[3]), float(cells[4]), float(cells[5])
    assert abs((score_b - score_a) - diff) < 2e-3


def test_ncap_types_are_checked_before_any_work(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["ncap", str(tmp_path), "--log", str(tmp_path), "--planner", "idm", "--out", str(tmp_path / "o"),
                                 "--types", "stationary,sideways"])
    assert r.exit_code == 2 and "sideways" in r.output
    assert not (tmp_path / "o").exists()


def test_run_with_another_planner_offers_what_it_needs(tmp_path: Path) -> None:
    """``run --planner bc_policy`` on a scenario written for idm (state observation): bc_policy gets its
    bev raster (the README tour's command), instead of every episode erroring."""
    from sim.batch import run_batch

    f = tmp_path / "a.yaml"
    f.write_text(BASE.replace("horizon_s: 3.0", "horizon_s: 0.5"))
    s = run_batch([f], tmp_path / "run", planner="bc_policy")
    assert s.total == 1 and s.failed == 0
    # the README's way: the planner and its parameters replaced on the episodes (run --planner-param)
    from sim.scenario import expand_paths

    eps = [ep.with_planner("bc_policy", {}) for ep in expand_paths([f])]
    s = run_batch(None, tmp_path / "run2", episodes=eps, planner="bc_policy")
    assert s.total == 1 and s.failed == 0
