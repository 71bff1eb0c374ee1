"""The data loop on ``sensor_policy`` (issue 25): its trainer is found through the registry, one
round on a tiny budget runs end to end with rendered LiDAR, the exported shards carry the rasters
the policy saw (labelled by the expert, weighted), the retrained weights differ from the round-0
ones and load; a planner without a trainer the loop can use is refused in one line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sim.errors import ScenarioError
from sim.loop import LoopConfig, check_config, run_loop
from sim.loop_learner import find_learner
from tests.test_loop import SCEN  # the loop tests' tiny scenario (a lead car ahead on the tiny town)


def _scen(tmp_path: Path) -> Path:
    p = tmp_path / "tiny_lead.yaml"
    p.write_text(SCEN, encoding="utf-8")
    return p


def _cfg(scen: Path) -> LoopConfig:
    from agents.sensor_policy import SHIPPED_WEIGHTS

    # a "hard brake" threshold every episode passes: the nominal episode is mined and exported
    return LoopConfig(
        planner="sensor_policy", sensors="mesh", scenarios=(str(scen),), bases=(str(scen),), rounds=1, budget=1, heldout_budget=1,
        horizon_s=1.0, expert="pdm_closed", oracle="idm", epochs=1, init_weights=str(SHIPPED_WEIGHTS),
        triggers=("hard_brake:decel=-100",), retrain="finetune", finetune_lr=1e-3, failure_weight=3.0,
    )  # fmt: skip


def test_the_learner_of_each_planner_comes_from_its_trainer() -> None:
    bc = find_learner("bc_policy")
    sp = find_learner("sensor_policy", "mesh")
    assert (bc.trainer, bc.spec.weights_name, bc.sensors, bc.spec.export) == ("bc", "bc.safetensors", None, None)
    assert (sp.trainer, sp.spec.weights_name, sp.sensors) == ("sensor-policy", "sensor_policy.safetensors", "mesh")
    assert sp.params("w.safetensors") == {"weights": "w.safetensors"}
    assert find_learner("sensor_policy").sensors == "scenario"  # the trainer's default


@pytest.mark.slow
def test_one_round_on_sensor_policy_exports_what_it_saw_and_retrains(tmp_path: Path) -> None:
    from agents.sensor_policy import SHIPPED_WEIGHTS, SensorPolicyPlanner, load_sensor_policy

    cfg = _cfg(_scen(tmp_path))
    out = tmp_path / "loop"
    seen: list[str] = []
    rep = run_loop(cfg, out, progress=seen.append)
    assert seen == ["heldout", "round_0.eval", "round_0.mine", "round_0.generate", "round_0.export", "round_0.train", "final.eval"]
    assert rep["trainer"] == "sensor-policy" and rep["sensors"] == "mesh"
    # the evaluations ran the policy with its weights on rendered LiDAR
    for r, w in ((0, str(SHIPPED_WEIGHTS)), (1, str(out / "round_0" / "sensor_policy.safetensors"))):
        assert rep["rounds"][r]["policy"] == w
        assert rep["rounds"][r]["nominal"]["episodes"] == 1 and rep["rounds"][r]["nominal"]["errored"] == 0
    # the exported shard: the raster the policy saw (mesh LiDAR: obstacle and ground returns), the
    # expert's waypoints at every visited state, the mined episode's weight
    shards = sorted((out / "round_0" / "shards").glob("*.npz"))
    assert [p.name for p in shards] == ["mined_tiny_lead__s0.npz"]
    with np.load(shards[0], allow_pickle=False) as z:
        raster, wp, weight, meta = z["raster"], z["waypoints"], z["weight"], json.loads(str(z["meta"]))
    assert raster.ndim == 4 and raster.shape[1:] == (64, 64, 5) and raster.dtype == np.uint8
    assert raster[..., 0].any() and raster[..., 3].any() and raster[..., 4].any()  # obstacles, ground, route
    assert wp.shape == (len(raster), 6, 2) and np.isfinite(wp).all()
    assert weight.shape == (len(raster),) and np.all(weight > 0)
    assert meta["planner"] == "sensor_policy" and meta["sensors"] == "mesh" and meta["expert"] == "pdm_closed"
    assert meta["planner_params"] == {"weights": str(SHIPPED_WEIGHTS)}  # driven by the policy under test
    # retrained: fine-tuned from the shipped weights on that shard; different tensors that load
    w1 = out / "round_0" / "sensor_policy.safetensors"
    rec = json.loads(w1.with_suffix(".json").read_text())
    assert rec["init_weights"] == str(SHIPPED_WEIGHTS) and rec["shards"] == ["mined_tiny_lead__s0.npz"]
    assert w1.read_bytes() != SHIPPED_WEIGHTS.read_bytes()
    net1, _ = load_sensor_policy(w1)
    net0, _ = load_sensor_policy(SHIPPED_WEIGHTS)
    assert any(not np.array_equal(a.detach().numpy(), b.detach().numpy()) for a, b in zip(net1.state_dict().values(), net0.state_dict().values(), strict=True))
    SensorPolicyPlanner(weights=str(w1))  # a planner of the retrained weights builds
    md = (out / "report.md").read_text()
    assert "planner `sensor_policy`" in md and "sensors: mesh" in md
    # a finished loop re-run does nothing but rewrite the report
    again: list[str] = []
    assert run_loop(cfg, out, progress=again.append)["rounds"] == rep["rounds"] and again == []


def test_sensor_export_of_expert_and_generated_items_is_weighted_and_resumes(tmp_path: Path) -> None:
    from agents.sensor_policy_train import export_sensor_episodes
    from sim.export import items_from_files
    from sim.rollout import run_planner_episode

    scen = _scen(tmp_path)
    items = items_from_files([scen], planner="pdm_closed", source="expert") + items_from_files([scen], planner="sensor_policy", weight=3.0)
    out = tmp_path / "shards"
    shards = export_sensor_episodes(items, out, run_episode=run_planner_episode, expert="pdm_closed", expert_params={}, sensors="box")
    assert [p.name for p in shards] == ["expert_tiny_lead__s0.npz", "generated_tiny_lead__s0.npz"]
    with np.load(shards[1]) as z:
        assert np.all(z["weight"] == 3.0) and z["raster"][..., 0].any()  # the box LiDAR sees the lead car
        assert json.loads(str(z["meta"]))["planner"] == "sensor_policy"
    with np.load(shards[0]) as z:
        assert np.all(z["weight"] == 1.0) and json.loads(str(z["meta"]))["planner"] == "pdm_closed"
    mtime = shards[0].stat().st_mtime_ns
    assert export_sensor_episodes(items, out, run_episode=run_planner_episode, expert="pdm_closed", expert_params={}, sensors="box") == shards
    assert shards[0].stat().st_mtime_ns == mtime  # kept, not redone
    with pytest.raises(ScenarioError, match="pdm_closed"):
        export_sensor_episodes(items, out, run_episode=run_planner_episode, expert="idm", expert_params={}, sensors="box")


def test_a_planner_without_a_loop_trainer_or_with_bad_sensors_is_refused(tmp_path: Path) -> None:
    scen = _scen(tmp_path)
    with pytest.raises(ScenarioError, match="no registered trainer retrains planner 'idm'") as e:
        check_config(replace(_cfg(scen), planner="idm"))
    assert e.value.one_line().count("\n") == 0 and "planner" in e.value.one_line()
    with pytest.raises(ScenarioError, match="sensors"):
        check_config(replace(_cfg(scen), sensors="bogus"))
    with pytest.raises(ScenarioError, match="expert"):
        check_config(replace(_cfg(scen), expert="idm"))
    with pytest.raises(ScenarioError, match="bc_policy observes no rendered sensor"):
        check_config(replace(_cfg(scen), planner="bc_policy", expert="idm"))  # sensors="mesh" for a privileged policy
    with pytest.raises(ScenarioError, match="no registered trainer"):
        run_loop(replace(_cfg(scen), planner="idm"), tmp_path / "loop")
    assert not (tmp_path / "loop").exists()


@pytest.mark.parametrize("args, needle", [
    (["--planner", "idm"], "no registered trainer retrains planner 'idm'"),
    (["--planner", "sensor_policy", "--sensors", "bogus"], "expected sensors among"),
    (["--planner", "sensor_policy", "--init-weights", "nothere.safetensors"], "no weights file"),
])  # fmt: skip
def test_cli_refuses_in_one_line_before_anything_is_made(tmp_path: Path, args: list[str], needle: str) -> None:
    from typer.testing import CliRunner

    from sim.cli import app

    scen = _scen(tmp_path)
    r = CliRunner().invoke(app, ["loop", "--scenarios", str(scen), *args, "--out", str(tmp_path / "loop")])
    assert r.exit_code == 2 and needle in r.output
    assert not (tmp_path / "loop").exists()


def test_a_state_written_before_the_sensors_field_resumes(tmp_path: Path) -> None:
    """A bc loop folder made before ``sensors`` existed (its state.json lacks the field) is the
    same configuration, not another one."""
    from dataclasses import asdict

    from sim.fsutil import json_safe
    from sim.loop import _State

    scen = _scen(tmp_path)
    cfg = LoopConfig(planner="bc_policy", scenarios=(str(scen),), bases=(str(scen),))
    old = json_safe(asdict(cfg))
    del old["sensors"]
    (tmp_path / "state.json").write_text(json.dumps({"config": old, "done": {"heldout": []}}))
    assert _State(tmp_path, cfg).done("heldout")
    with pytest.raises(ScenarioError, match="another configuration"):
        _State(tmp_path, replace(cfg, sensors="mesh"))
