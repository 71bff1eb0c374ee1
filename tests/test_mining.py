"""Mining triggers over a real (tiny) batch run: each trigger fires on the episode built to fire it
and not on the others; the selection is written and reads back."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sim.batch import run_batch
from sim.errors import RegistryError, ResultsError, ScenarioError
from sim.mining import TRIGGERS, mine, parse_trigger, read_mined
from sim.planning import PLANNERS, Control
from tests._adversary import BlindThrottle
from tests._registry import registered

SCEN = """\
version: 1
name: {name}
tags: [{tag}]
scene: {{town: tiny, seed: 0}}
ego:
  start: {{lane: lane_1, s: 4.0, speed: 8.0}}
  route: [lane_1, lane_21, lane_5]
actors:
  - {{op: insert, id: lead, class: {cls}, spawn: {{lane: lane_1, s: {lead_s}, speed: 2.0}}, behavior: {{type: idm, v0: 2.0}}}}
planner: {{name: {planner}}}
horizon_s: 2.0
seeds: [0]
"""


class HardBrake(BlindThrottle):
    name = "test_hard_brake"

    def plan(self, obs: object) -> Control:
        return Control(-5.0, 0.0)


def _test_planners() -> contextlib.AbstractContextManager[None]:
    return registered(PLANNERS, (BlindThrottle.name, BlindThrottle), (HardBrake.name, HardBrake))


@pytest.fixture(autouse=True)
def _planners() -> Iterator[None]:
    """The test planners are registered for each test here (the disagreement trigger runs one)."""
    with _test_planners():
        yield


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mining")
    scen = root / "scenarios"
    scen.mkdir()
    (scen / "crash.yaml").write_text(SCEN.format(name="crash", tag="a", cls="car", lead_s=16.0, planner=BlindThrottle.name), encoding="utf-8")
    (scen / "calm.yaml").write_text(SCEN.format(name="calm", tag="a", cls="car", lead_s=28.0, planner="idm"), encoding="utf-8")
    (scen / "brake.yaml").write_text(SCEN.format(name="brake", tag="b", cls="truck", lead_s=28.0, planner=HardBrake.name), encoding="utf-8")
    with _test_planners():
        run_batch([scen], root / "run")
    return root / "run"


def _fired(sel: list, trigger: str) -> set[str]:
    return {m.scenario for m in sel if trigger in m.triggers}


def test_triggers_fire_where_expected(run_dir: Path, tmp_path: Path) -> None:
    sel = mine(run_dir, tmp_path / "mined", ["collision", "near_miss:ttc_s=1.0", "hard_brake:decel=4", "offroad"])
    assert _fired(sel, "collision") == {"crash"}
    assert _fired(sel, "hard_brake") == {"brake"}
    assert _fired(sel, "offroad") == set()
    assert "calm" not in {m.scenario for m in sel}
    crash = next(m for m in sel if m.scenario == "crash")
    assert crash.triggers["collision"]["termination"] == "collision"
    # written selection: mined.json plus the copied episode folders
    doc = json.loads((tmp_path / "mined" / "mined.json").read_text())
    assert {s["episode_id"] for s in doc["selected"]} == {m.episode_id for m in sel}
    for m in sel:
        assert (tmp_path / "mined" / "episodes" / m.episode_id / "metrics.json").is_file()
    back = read_mined(tmp_path / "mined")
    assert [(m.episode_id, sorted(m.triggers)) for m in back] == [(m.episode_id, sorted(m.triggers)) for m in sel]


def test_trigger_parameters_matter(run_dir: Path) -> None:
    assert _fired(mine(run_dir, None, ["hard_brake:decel=6"]), "hard_brake") == set()
    assert _fired(mine(run_dir, None, {"hard_brake": {"decel": 4.0}}), "hard_brake") == {"brake"}


def test_rarity_weights_rare_episodes(run_dir: Path) -> None:
    sel = mine(run_dir, None, ["rarity:top_fraction=0.34"])
    # "brake" is the only episode with tag b and a truck: the rarest
    assert [m.scenario for m in sel] == ["brake"]
    assert sel[0].weight == pytest.approx(2.0)
    allw = mine(run_dir, None, ["rarity:top_fraction=1.0"])
    assert sorted(m.scenario for m in allw) == ["brake", "calm", "crash"]
    assert all(1.0 <= m.weight <= 2.0 for m in allw)


def test_disagreement_with_expert(run_dir: Path) -> None:
    far = mine(run_dir, None, {"disagreement": {"expert": BlindThrottle.name, "threshold": 0.3, "quantile": 0.5}})
    assert "calm" in _fired(far, "disagreement")
    same = mine(run_dir, None, {"disagreement": {"expert": "idm", "threshold": 0.3, "quantile": 0.5}})
    assert "calm" not in _fired(same, "disagreement")


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="known"):
        parse_trigger("nope")
    with pytest.raises(ScenarioError, match="key=value"):
        parse_trigger("near_miss:1.0")
    with pytest.raises(ResultsError, match=r"results\.parquet"):
        mine(tmp_path, None)
    assert "collision" in TRIGGERS
