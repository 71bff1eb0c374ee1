"""Behaviour cloning: expert rollouts -> shards -> training -> a policy that drives a left turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agents.bc import (
    BCConfig,
    BCPolicyPlanner,
    ego_features,
    load_policy,
    load_shards,
    train_bc,
)
from sim import engine
from sim.errors import BundleError
from sim.metrics import compute_metrics
from sim.planning import Control, ObservationSpec, Planner, PlannerInit
from sim.rollout import run_planner_episode
from sim.spec import EgoSpec, ScenarioSpec
from sim.world import crossroads_scene

ROUTE = ("E_in_0", "E_0_left", "N_out_0")


@pytest.fixture(scope="module")
def scene() -> Any:
    return crossroads_scene(actors=(), duration_s=10.0)


def _spec(s: float, v: float) -> ScenarioSpec:
    # E_in_0 runs east along y = -1.75 from x = -80
    return ScenarioSpec(name="turn", ego=EgoSpec(route=ROUTE, start_pose=(-80.0 + s, -1.75, 0.0), start_speed=v), horizon_s=4.0)


def _collect(scene: Any, s: float, v: float, out: Path) -> Path:
    spec = _spec(s, v)
    c = engine.compile_scenario(spec, scene)
    res = run_planner_episode(spec, "pdm_closed", 0, compiled=c, observation=("bev",), extra_kinds=("bev",), record_observations=True)
    assert res.status == "ok" and res.termination != "collision"
    path = out / f"turn_{int(s)}_{int(v)}.npz"
    np.savez(
        path,
        bev=np.stack([o["bev"] for o in res.observations]),
        ego=np.stack([ego_features(o["ego"]) for o in res.observations]),
        action=res.actions.astype(np.float32),
    )
    return path


class _RandomPolicy(Planner):
    name = "test_random"

    def observation_spec(self) -> ObservationSpec:
        return ObservationSpec(kinds=("ego",))

    def reset(self, init: PlannerInit, *, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def plan(self, obs: Any) -> Control:
        return Control(float(self.rng.uniform(-3.0, 3.0)), float(self.rng.uniform(-0.6, 0.6)))


def _drive(scene: Any, planner: Any) -> tuple[float, Any]:
    spec = _spec(60.0, 5.5)
    res = run_planner_episode(spec, planner, 0, compiled=engine.compile_scenario(spec, scene))
    assert res.status == "ok", res.error
    return compute_metrics(res.record)[1], res.record


def test_bc_lowers_validation_loss_and_beats_a_random_policy(scene: Any, tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    for s, v in ((58.0, 5.0), (62.0, 6.0), (66.0, 5.5)):
        _collect(scene, s, v, shards)
    ds = load_shards([shards])
    assert ds.bev_u8.shape[1:] == (64, 64, 4) and len(ds) == 120
    out = tmp_path / "models" / "bc.safetensors"
    res = train_bc(ds, out, BCConfig(epochs=25, batch_size=32, lr=2e-3, seed=0))
    assert min(res.val_loss) < 0.5 * res.initial_val_loss
    assert res.train_loss[-1] < res.train_loss[0]
    assert res.plot is not None and res.plot.stat().st_size > 1000
    assert out.with_suffix(".json").is_file()

    # the loaded policy drives the turn better than a random policy (uniform random controls)
    trained_score, rec = _drive(scene, BCPolicyPlanner(weights=str(out)))
    random_score, _ = _drive(scene, _RandomPolicy())
    assert trained_score > random_score + 0.2
    assert compute_metrics(rec)[0]["offroad"].score == 1.0

    # load never executes code: a tampered weights file is refused with BundleError
    out.write_bytes(out.read_bytes()[:100])
    with pytest.raises(BundleError, match="weights do not match the config"):
        load_policy(out)


def test_load_shards_rejects_a_malformed_shard(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", bev=np.zeros((3, 8, 8, 4), np.uint8), ego=np.zeros((2, 3)), action=np.zeros((3, 2)))
    from sim.errors import ScenarioError

    with pytest.raises(ScenarioError, match="inconsistent shapes"):
        load_shards([tmp_path])


def test_dagger_labels_the_policys_own_states_with_the_expert(scene: Any, tmp_path: Path) -> None:
    from sim.collect import collect_dagger
    from sim.scenario import expand_paths

    shards = tmp_path / "shards"
    shards.mkdir()
    _collect(scene, 60.0, 5.5, shards)
    weights = tmp_path / "bc.safetensors"
    train_bc(load_shards([shards]), weights, BCConfig(epochs=2, seed=0), plot=False)
    base = Path(__file__).resolve().parents[1] / "scenarios" / "slow_truck_follow.yaml"
    written = collect_dagger([base], tmp_path / "dagger", weights, seeds=[3], tag="r1", max_steps=12)
    assert [p.name for p in written] == [f"r1_{expand_paths([base])[0].episode_id}__x3.npz"]
    with np.load(written[0]) as z:
        bev, ego, action = z["bev"], z["ego"], z["action"]
    assert bev.shape[1:] == (64, 64, 4) and bev.dtype == np.uint8
    assert len(bev) == len(ego) == len(action) >= 10

    # the label of the first state (both start there) is the expert's own first control, and the
    # policy's executed controls differ from the labels (it is the learner that drives)
    ep = expand_paths([base])[0]
    exp = run_planner_episode(ep.spec, "pdm_closed", 3, max_steps=2)
    assert np.allclose(action[0], exp.actions[0], atol=1e-5)
    pol = run_planner_episode(ep.spec, BCPolicyPlanner(weights=str(weights)), 3, max_steps=12)
    assert not np.allclose(pol.actions[: len(action)], action, atol=1e-3)

    # resumable: a second call keeps the existing shard
    stamp = written[0].stat().st_mtime_ns
    assert collect_dagger([base], tmp_path / "dagger", weights, seeds=[3], tag="r1", max_steps=12) == written
    assert written[0].stat().st_mtime_ns == stamp


def test_the_shipped_policy_loads_by_default_and_drives_a_library_scenario() -> None:
    import json

    from agents.bc import SHIPPED_WEIGHTS
    from sim.planning import make_planner
    from sim.scenario import expand_paths

    meta = json.loads(SHIPPED_WEIGHTS.with_suffix(".json").read_text(encoding="utf-8"))
    assert len(meta["shards"]) >= 100  # trained on expert roll-outs of the library, other seeds
    assert min(meta["val_loss"]) < 0.1 * meta["initial_val_loss"]
    planner = make_planner("bc_policy")
    assert Path(planner.weights) == SHIPPED_WEIGHTS
    ep = expand_paths([Path(__file__).resolve().parents[1] / "scenarios" / "unprotected_left_turn.yaml"])[0]
    res = run_planner_episode(ep.spec, planner, ep.seed, observation=(*ep.observation, "bev"))
    assert res.status == "ok", res.error
    vals, score = compute_metrics(res.record)
    assert res.termination != "collision" and vals["collision"].score == 1.0 and vals["offroad"].score == 1.0
    assert vals["progress"].score > 0.5 and score > 0.5
