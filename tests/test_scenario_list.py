"""A scenario library that changes is noticed: ``loopdrive attack`` writes its cases under its own
``--out`` (never into a library unless asked), and the leaderboard scores every planner on one list
read once, records it (files + sha256) and names what changed while it ran."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.adversary import AttackConfig, attack
from sim.errors import ScenarioError
from sim.fsutil import sha256_file
from sim.leaderboard import list_differences, run_leaderboard, scenario_list
from tests._adversary import BASE, BlindThrottle, blind_throttle_registered


@pytest.fixture()
def _blind() -> Iterator[None]:
    with blind_throttle_registered():
        yield


def _library(root: Path, names: tuple[str, ...] = ("a", "b")) -> Path:
    lib = root / "lib"
    lib.mkdir()
    for n in names:
        (lib / f"{n}.yaml").write_text(BASE.replace("name: tiny_follow", f"name: {n}").replace("horizon_s: 3.0", "horizon_s: 0.5"))
    return lib


def test_attack_writes_cases_under_its_out_by_default(_blind: None, tiny_follow_base: Path, tmp_path: Path) -> None:
    cfg = AttackConfig(planner=BlindThrottle.name, method="random", budget=2, seed=3, template="lead_brake", horizon_s=3.0, oracle="idm")
    res = attack(tiny_follow_base, cfg, out=tmp_path / "attack")
    assert res.files and all(Path(f).parent == tmp_path / "attack" / "generated" for f in res.files)
    assert not (tiny_follow_base.parent / "generated").exists()
    with pytest.raises(ScenarioError, match="generated_dir"):
        attack(tiny_follow_base, cfg)


def test_attack_cli_default_generated_dir(_blind: None, tiny_follow_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sim.cli import app

    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["attack", "--planner", BlindThrottle.name, "--base", str(tiny_follow_base), "--method", "random",
                                 "--budget", "2", "--seed", "3", "--template", "lead_brake", "--oracle", "idm", "--out", "att"])
    assert r.exit_code == 0, r.output
    assert list((tmp_path / "att" / "generated").glob("*.yaml"))
    assert not (tmp_path / "scenarios").exists()


def test_scenario_list_records_files_and_hashes(tmp_path: Path) -> None:
    lib = _library(tmp_path)
    rec = scenario_list([lib])
    assert [r["file"] for r in rec["files"]] == [str(lib / "a.yaml"), str(lib / "b.yaml")]
    assert rec["files"][0]["sha256"] == sha256_file(lib / "a.yaml") and rec["n_files"] == 2
    (lib / "b.yaml").write_text((lib / "b.yaml").read_text() + "\n# edited\n")
    (lib / "sub").mkdir()
    (lib / "sub" / "c.yaml").write_text("x: 1\n")
    new = scenario_list([lib])
    assert new["sha256"] != rec["sha256"]
    diff = list_differences(rec, new)
    assert diff == [f"1 file(s) added: {lib / 'sub' / 'c.yaml'}", f"1 file(s) changed: {lib / 'b.yaml'}"]
    assert list_differences(rec, scenario_list([lib / "a.yaml"])) == [f"1 file(s) removed: {lib / 'b.yaml'}"]


def test_leaderboard_scores_one_recorded_list_and_warns_on_change(tmp_path: Path) -> None:
    lib = _library(tmp_path)
    added: list[Path] = []

    def progress(planner: str, done: int, failed: int, total: int) -> None:
        if not added:  # a concurrent writer adds a case to the library while the first planner runs
            p = lib / "generated" / "new.yaml"
            p.parent.mkdir()
            p.write_text(BASE.replace("name: tiny_follow", "name: new"))
            added.append(p)

    res = run_leaderboard([lib], ["idm", "pdm_closed"], tmp_path / "lb", progress=progress)
    assert added
    assert [r["episodes"] for r in res.rows] == [2, 2]  # both planners on the list read at the start
    rec = json.loads((tmp_path / "lb" / "scenarios.json").read_text())
    assert rec["n_files"] == 2 and rec["n_episodes"] == 2 and rec["sha256"] == res.scenarios["sha256"]
    assert [r["file"] for r in rec["files"]] == [str(lib / "a.yaml"), str(lib / "b.yaml")]
    assert rec["changed_during_run"] == res.warnings == [f"1 file(s) added: {added[0]}"]
    md = res.markdown.read_text()
    assert "Scenario list: 2 files, 2 episodes" in md and "changed while the leaderboard ran" in md
    assert rec["sha256"][:12] in res.html.read_text()
    # the same folder with the changed library: refused before any work, naming the difference
    with pytest.raises(ScenarioError, match=r"another scenario list.*added"):
        run_leaderboard([lib], ["idm"], tmp_path / "lb")
    # the same list again continues (resume) without a complaint
    again = run_leaderboard([lib / "a.yaml", lib / "b.yaml"], ["idm", "pdm_closed"], tmp_path / "lb")
    assert again.warnings == [] and again.scenarios["sha256"] == rec["sha256"]
