"""The ``sb3`` planner and loopdrive's pickle-free SB3 policy format (safetensors + JSON): training,
saving, loading with the same actions, refusal of zips without the command-line opt-in, and
tampered or mismatched files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sim import engine
from sim.errors import BundleError, ScenarioError
from sim.rollout import run_planner_episode
from sim.spec import EgoSpec, ScenarioSpec
from sim.world import crossroads_scene

ROUTE = ("E_in_1", "E_1_straight", "E_out_1")


@pytest.fixture(scope="module")
def free_road() -> tuple[ScenarioSpec, Any]:
    spec = ScenarioSpec(name="t", ego=EgoSpec(route=ROUTE), horizon_s=5.0)
    return spec, engine.compile_scenario(spec, crossroads_scene(actors=(), duration_s=14.0))


@pytest.fixture(scope="module")
def env(free_road: tuple[ScenarioSpec, Any]) -> Any:
    from sim.env import ClosedLoopEnv

    spec, c = free_road
    e = ClosedLoopEnv(scenario=spec, observation=["state"], scene=c.scene, action_mode="control")
    yield e
    e.close()


@pytest.fixture(scope="module")
def trained(env: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, Path]:
    """A PPO trained for 256 steps (in memory), saved in both formats: (model, .safetensors, .zip)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    from agents.sb3_format import save_policy

    model = PPO("MlpPolicy", env, seed=0, device="cpu", n_steps=128, batch_size=64, n_epochs=2, verbose=0)
    model.set_logger(Logger(folder=None, output_formats=[]))
    model.learn(total_timesteps=256)
    d = tmp_path_factory.mktemp("ppo")
    weights, _ = save_policy(model.policy, d / "ppo.safetensors", algo="PPO", observation=["state"])
    model.save(d / "ppo.zip")
    return model, weights, d / "ppo.zip"


def _observations(env: Any, n: int = 8) -> list[np.ndarray]:
    obs, _ = env.reset(seed=0)
    out = [obs]
    for i in range(3):
        obs, *_ = env.step(np.array([0.5, 0.1 * i], np.float32))
        out.append(obs)
    rng = np.random.default_rng(0)
    out += [rng.normal(0.0, 5.0, size=out[0].shape).astype(np.float32) for _ in range(n - len(out))]
    return out


def test_saved_policy_loads_through_the_planner_with_the_same_deterministic_actions(trained: tuple[Any, Path, Path], env: Any) -> None:
    from agents.sb3_planner import SB3Planner
    from sim.planning import PlannerInit

    model, weights, _ = trained
    pl = SB3Planner(path=str(weights))
    assert pl.observation_spec().kinds == ("state",) and pl.units == "normalized"
    pl.reset(PlannerInit(lane_map=None, route=ROUTE, dt_s=0.1, horizon_s=5.0))
    assert type(pl.model).__name__ == "ActorCriticPolicy" and not pl.model.training
    actions = []
    for obs in _observations(env):
        want, _ = model.predict(obs, deterministic=True)
        got, _ = pl.model.predict(obs, deterministic=True)
        assert np.array_equal(got, want)
        actions.append(want)
        c = pl.plan({"state": obs})  # the planner maps the same normalised action to SI
        a = np.clip(np.asarray(want, np.float64), -1, 1)
        assert c.steer == pytest.approx(a[1] * pl.limits.steer_max)
    assert len({tuple(np.round(a, 6)) for a in actions}) > 1  # the observations are not all alike
    # the in-process object still works (notebooks) and agrees
    same = SB3Planner(model=model)
    same.reset(PlannerInit(lane_map=None, route=ROUTE, dt_s=0.1, horizon_s=5.0))
    o = _observations(env)[1]
    assert same.plan({"state": o}) == pl.plan({"state": o})


def test_planner_episode_with_a_saved_policy_is_deterministic(trained: tuple[Any, Path, Path], free_road: tuple[ScenarioSpec, Any]) -> None:
    from agents.sb3_planner import SB3Planner

    spec, c = free_road
    _, weights, _ = trained
    res = run_planner_episode(spec, "sb3", 0, params={"path": str(weights)}, compiled=c, max_steps=10)
    assert res.status == "ok", res.error
    assert res.steps == 10 and np.all(np.isfinite(res.actions))
    again = run_planner_episode(spec, SB3Planner(path=weights.with_suffix(".json")), 0, compiled=c, max_steps=10)
    assert np.array_equal(res.actions, again.actions)


def test_planner_needs_a_path_and_reads_nothing_from_the_working_directory(tmp_path: Path, monkeypatch: Any) -> None:
    from agents.sb3_planner import SB3Planner

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "ppo.zip").write_bytes(b"PK\x03\x04 not a policy")
    with pytest.raises(ScenarioError, match=r"planner\.params\.path: expected the policy file"):
        SB3Planner()
    with pytest.raises(BundleError, match="does not exist"):
        SB3Planner(path="missing.safetensors")
    with pytest.raises(ScenarioError, match=r"planner\.params\.model"):
        SB3Planner(model="a string from a file")


def test_zip_is_refused_without_the_command_line_opt_in(trained: tuple[Any, Path, Path], env: Any) -> None:
    from agents.sb3_planner import TRUST_PICKLE, SB3Planner
    from sim.planning import PlannerInit, with_opt_ins

    model, _, zip_path = trained
    with pytest.raises(BundleError) as ei:
        SB3Planner(path=str(zip_path))
    msg = str(ei.value)
    assert "\n" not in msg and "pickle-based" in msg and "--trust-pickle" in msg and str(zip_path) in msg
    for forged in (True, "yes", "--trust-pickle", None):  # what a YAML/JSON file could hold
        with pytest.raises(ScenarioError, match=r"planner\.params\.trust_pickle: cannot be set in a file"):
            SB3Planner(path=str(zip_path), trust_pickle=forged)
    with pytest.raises(BundleError, match="pickle-based"):
        with_opt_ins("sb3", {"path": str(zip_path)}, trust_pickle=False)
    prm = with_opt_ins("sb3", {"path": str(zip_path)}, trust_pickle=True)
    assert prm["trust_pickle"] is TRUST_PICKLE
    assert with_opt_ins("idm", {"v0": 3.0}, trust_pickle=True) == {"v0": 3.0}  # other planners untouched
    pl = SB3Planner(**prm)
    pl.reset(PlannerInit(lane_map=None, route=ROUTE, dt_s=0.1, horizon_s=5.0))
    obs = _observations(env, 4)
    for o in obs:
        assert np.array_equal(pl.model.predict(o, deterministic=True)[0], model.predict(o, deterministic=True)[0])


def test_opt_in_survives_worker_pickling_but_not_json() -> None:
    import pickle

    from agents.sb3_planner import TRUST_PICKLE, PickleOptIn

    back = pickle.loads(pickle.dumps({"trust_pickle": TRUST_PICKLE}))["trust_pickle"]
    assert isinstance(back, PickleOptIn)
    assert not isinstance(json.loads(json.dumps({"t": TRUST_PICKLE}))["t"], PickleOptIn)


def test_convert_sb3_zip_writes_the_safe_format_with_the_same_actions(trained: tuple[Any, Path, Path], env: Any, tmp_path: Path) -> None:
    from agents.sb3_format import load_policy
    from agents.sb3_planner import convert_sb3_zip

    model, _, zip_path = trained
    with pytest.raises(BundleError, match="pickle-based"):
        convert_sb3_zip(zip_path, tmp_path / "c.safetensors", trust_pickle=False)
    assert not (tmp_path / "c.safetensors").exists()
    with pytest.raises(ScenarioError, match=r"out: expected a \.safetensors path"):
        convert_sb3_zip(zip_path, tmp_path / "c.zip", trust_pickle=True)
    out = convert_sb3_zip(zip_path, tmp_path / "c.safetensors", trust_pickle=True)
    lp = load_policy(out)
    assert lp.description.provenance["created_by"] == "loopdrive convert-sb3"
    for o in _observations(env, 4):
        assert np.array_equal(lp.policy.predict(o, deterministic=True)[0], model.predict(o, deterministic=True)[0])


def _copy_pair(weights: Path, dst: Path) -> tuple[Path, Path]:
    w = dst / "p.safetensors"
    w.write_bytes(weights.read_bytes())
    j = dst / "p.json"
    j.write_text(weights.with_suffix(".json").read_text())
    return w, j


def test_tampered_or_mismatched_files_are_one_line_bundle_errors(trained: tuple[Any, Path, Path], tmp_path: Path) -> None:
    from safetensors.torch import save

    from agents.sb3_format import load_policy

    _, weights, _ = trained
    w, j = _copy_pair(weights, tmp_path)
    doc = json.loads(j.read_text())

    def fails(match: str) -> str:
        with pytest.raises(BundleError, match=match) as ei:
            load_policy(w)
        assert "\n" not in str(ei.value)
        return str(ei.value)

    w.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    assert str(w) in fails("modified")
    # consistent sha but a tensor of another shape: named
    from safetensors.torch import load

    sd = load(weights.read_bytes())
    sd["mlp_extractor.policy_net.0.weight"] = sd["mlp_extractor.policy_net.0.weight"].reshape(102, 64).contiguous()
    blob = save(sd)
    w.write_bytes(blob)
    import hashlib

    j.write_text(json.dumps({**doc, "weights": {**doc["weights"], "sha256": hashlib.sha256(blob).hexdigest()}}))
    assert "mlp_extractor.policy_net.0.weight" in fails(r"expected shape \(64, 102\)")
    # a description asking for another architecture than the weights hold
    w.write_bytes(weights.read_bytes())
    j.write_text(json.dumps({**doc, "net_arch": {"pi": [32, 32], "vf": [64, 64]}}))
    assert "mlp_extractor.policy_net.0.weight" in fails("expected shape")
    j.write_text(json.dumps({**doc, "net_arch": {"pi": [8192] * 16, "vf": [8192] * 16}}))
    fails("expected at least")  # refused before anything that size is built
    j.write_text(json.dumps({**doc, "activation": "os.system"}))
    assert "activation" in fails("Input should be")
    j.write_text(json.dumps({**doc, "py/object": "os.system"}))
    assert "py/object" in fails("Extra inputs")
    j.write_text(json.dumps({**doc, "format": "something-else"}))
    fails("expected format 'loopdrive-sb3-policy'")
    j.write_text(json.dumps(doc).replace('"low": -1.0', '"low": NaN', 1))
    fails("expected valid JSON")
    j.unlink()
    fails("does not exist")


def test_train_ppo_saves_a_policy_the_sb3_planner_runs_and_leaves_no_temp_folder(tmp_path: Path, monkeypatch: Any) -> None:
    import tempfile

    from agents.sb3_planner import train_ppo

    temp = tmp_path / "systemp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where SB3's default logger would make a folder
    seen: list[tuple[int, int]] = []
    spec = ScenarioSpec(horizon_s=5.0)
    with pytest.raises(ScenarioError, match=r"out: expected a \.safetensors path"):
        train_ppo(spec, 128, tmp_path / "models" / "ppo.zip")
    out = train_ppo(spec, 128, tmp_path / "models" / "ppo.safetensors", n_steps=64, progress=lambda d, n: seen.append((d, n)))
    assert out == tmp_path / "models" / "ppo.safetensors" and out.stat().st_size > 0
    # the weights and their description, nothing pickled, no temp file left beside them
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["ppo.json", "ppo.safetensors"]
    desc = json.loads(out.with_suffix(".json").read_text())
    assert desc["algo"] == "PPO" and desc["observation"] == ["state"] and desc["provenance"]["steps"] == 128
    assert list(temp.iterdir()) == []
    assert seen and seen[-1] == (128, 128) and all(d <= n for d, n in seen)
    res = run_planner_episode(spec, "sb3", 0, params={"path": str(out)}, max_steps=5)
    assert res.status == "ok", res.error
    assert res.steps == 5 and np.all(np.isfinite(res.actions))


def test_multi_input_policy_with_an_image_kind_round_trips(free_road: tuple[ScenarioSpec, Any], tmp_path: Path) -> None:
    """Dict observations (CombinedExtractor: a CNN on the BEV raster, shared by actor and critic)."""
    from stable_baselines3 import PPO

    from agents.sb3_format import load_policy, save_policy
    from sim.env import ClosedLoopEnv

    spec, c = free_road
    env = ClosedLoopEnv(scenario=spec, observation=["state", "bev"], scene=c.scene, action_mode="control")
    model = PPO("MultiInputPolicy", env, seed=0, device="cpu", n_steps=64, batch_size=32)
    weights, _ = save_policy(model.policy, tmp_path / "mi.safetensors", algo="PPO", observation=["state", "bev"])
    lp = load_policy(weights)
    assert lp.description.policy_class == "MultiInputActorCriticPolicy" and lp.description.features_extractor == "CombinedExtractor"
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        want = model.predict(obs, deterministic=True)[0]
        assert np.array_equal(lp.policy.predict(obs, deterministic=True)[0], want)
        obs, *_ = env.step(want)
    env.close()
