"""Batch episodes render camera/LiDAR with the scenario's backend (``scene.renderer`` or the
``renderer`` override), and the public episode API (``sim.batch.drive_episode``) is what
``sim.rollout.run_planner_episode`` runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from sim.errors import ScenarioError
from tests.test_render_backends import build_tiny_bundle

LIBRARY = Path(__file__).parents[1] / "scenarios"


def _lidar_scenario(tmp_path: Path, scene: str, name: str = "lidar_follow", horizon: float = 1.0) -> Path:
    f = tmp_path / f"{name}.yaml"
    f.write_text(
        f"version: 1\nname: {name}\nscene: {scene}\n"
        "ego:\n  start: {lane: lane_1, s: 5.0, speed: 10.0}\n  route: [lane_1, lane_26, lane_5]\n"
        "actors:\n  - {op: insert, id: stopped, class: car, spawn: {lane: lane_1, s: 30.0}, behavior: {type: static}}\n"
        f"planner: {{name: lidar_stack}}\nobservation: [state, lidar]\nhorizon_s: {horizon}\n"
    )
    return f


class _SpyMesh:
    """A registered test backend: the mesh ground truth, counting its renders."""

    renders: ClassVar[int] = 0
    closed: ClassVar[int] = 0

    def __init__(self, scene: Any, **_: Any) -> None:
        from sim.render.mesh import MeshRenderer

        self.inner = MeshRenderer(scene)

    def render(self, world: Any, rig: Any) -> Any:
        type(self).renders += 1
        return self.inner.render(world, rig)

    def close(self) -> None:
        type(self).closed += 1
        self.inner.close()


@pytest.fixture()
def spy_backend():
    from sim.render.base import RENDERERS
    from tests._registry import registered

    _SpyMesh.renders = _SpyMesh.closed = 0
    with registered(RENDERERS, ("test_spy_mesh", _SpyMesh)):  # removed again after the test
        yield _SpyMesh


def test_batch_renders_lidar_with_the_renderer_override(tmp_path: Path, spy_backend) -> None:
    from sim.batch import drive_episode, read_episode, run_batch
    from sim.metrics import compute_metrics
    from sim.render.mesh import MeshRenderer
    from sim.scenario import expand

    f = _lidar_scenario(tmp_path, "{town: small, seed: 0}", horizon=0.3)
    s = run_batch([f], tmp_path / "run", renderer="test_spy_mesh")
    assert s.failed == 0, s.errors
    assert spy_backend.renders == 3 and spy_backend.closed == 1  # one LiDAR frame per step, closed after
    row = read_episode(tmp_path / "run", "lidar_follow__s0")["row"]
    # the same episode through the public API with the mesh backend: identical score
    ep = expand(f)[0]
    from sim.batch import episode_scene

    r = MeshRenderer(episode_scene(ep.spec))
    try:
        res = drive_episode(ep.spec, "lidar_stack", 0, renderer=r, observation=ep.observation)
    finally:
        r.close()
    _, score = compute_metrics(res.record)
    assert row["score"] == pytest.approx(float(score), abs=0) and row["steps"] == res.record.n_steps
    # unknown backend names fail up front with the known ones
    with pytest.raises(ScenarioError, match="mesh"):
        run_batch([f], tmp_path / "run2", renderer="nope")


def test_neural_batch_without_bundle_fails_up_front(tmp_path: Path) -> None:
    from sim.batch import run_batch

    f = _lidar_scenario(tmp_path, "{town: small, seed: 0}")
    with pytest.raises(ScenarioError, match=r"scene\.bundle.*needs a scene bundle|needs a scene bundle") as ei:
        run_batch([f], tmp_path / "run", renderer="neural")
    assert ei.value.field == "scene.bundle" and ei.value.file == str(f)
    g = _lidar_scenario(tmp_path, f"{{town: small, seed: 0, bundle: {tmp_path / 'missing'}, renderer: composite}}", name="g")
    with pytest.raises(ScenarioError, match=r"bundle\.json"):
        run_batch([g], tmp_path / "run3")
    assert not (tmp_path / "run" / "episodes").exists() and not (tmp_path / "run3" / "episodes").exists()


def test_batch_uses_the_scenarios_neural_backend(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, tiny_log: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from sim.batch import run_batch
    from sim.render.neural import NeuralRenderer

    bundle = build_tiny_bundle(tmp_path_factory, tiny_log)
    calls: list[int] = []
    orig = NeuralRenderer.render_lidar

    def counted(self: Any, world: Any, spec: Any, *a: Any, **k: Any) -> Any:
        calls.append(spec.beams * spec.azimuth_steps)
        return orig(self, world, spec, *a, **k)

    monkeypatch.setattr(NeuralRenderer, "render_lidar", counted)
    f = tmp_path / "neural.yaml"
    f.write_text(f"version: 1\nname: neural_drive\nscene: {{log: {tiny_log}, bundle: {bundle}, renderer: neural}}\n"
                 "planner: {name: lidar_stack}\nobservation: [state, lidar]\nhorizon_s: 0.2\n")
    s = run_batch([f], tmp_path / "run")
    assert s.failed == 0, s.errors
    assert calls == [32 * 1024, 32 * 1024]  # the default rig's LiDAR, one sweep per step


def test_rollout_api_is_the_public_episode_api(tmp_path: Path) -> None:
    from sim import engine
    from sim.batch import drive_episode, episode_scene
    from sim.render.mesh import MeshRenderer
    from sim.rollout import run_planner_episode
    from sim.scenario import load_scenario

    spec = dataclasses.replace(load_scenario(_lidar_scenario(tmp_path, "{town: small, seed: 0}")), horizon_s=0.2)
    a = run_planner_episode(spec, "lidar_stack", 2, observation=("ego", "lidar"), record_observations=True)
    b = drive_episode(spec, "lidar_stack", 2, observation=("ego", "lidar"), record_observations=True)
    assert a.status == b.status == "ok" and np.array_equal(a.actions, b.actions)
    assert len(a.observations) == a.steps > 0
    assert all(np.array_equal(x["lidar"], y["lidar"]) for x, y in zip(a.observations, b.observations, strict=True))
    # renderer None = analytic box LiDAR (no static scenery); "scenario" / "mesh" = the mesh backend
    c = engine.compile_scenario(spec, episode_scene(spec))
    r = MeshRenderer(c.scene)
    try:
        m = drive_episode(spec, "lidar_stack", 2, observation=("ego", "lidar"), compiled=c, renderer=r, record_observations=True)
    finally:
        r.close()
    by_name = drive_episode(spec, "lidar_stack", 2, observation=("ego", "lidar"), compiled=c, renderer="mesh", record_observations=True)
    by_spec = drive_episode(spec, "lidar_stack", 2, observation=("ego", "lidar"), compiled=c, renderer="scenario")
    assert np.array_equal(m.actions, by_name.actions) and np.array_equal(m.actions, by_spec.actions)
    assert np.array_equal(m.observations[0]["lidar"], by_name.observations[0]["lidar"])
    assert not np.array_equal(m.observations[0]["lidar"], a.observations[0]["lidar"])


def test_planner_gap_bench_scores_mesh_and_neural_on_matching_scenarios(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                                                                         tiny_log: Path) -> None:
    import json

    from sim.bench.closed_loop import run_planner_gap_bench

    bundle = build_tiny_bundle(tmp_path_factory, tiny_log)
    f = tmp_path / "tiny_drive.yaml"
    f.write_text(f"version: 1\nname: tiny_drive\nscene: {{log: {tiny_log}}}\nhorizon_s: 1.0\n")
    out = tmp_path / "gap.json"
    res = run_planner_gap_bench(bundle, tiny_log, out, scenarios=[LIBRARY / "stopped_vehicle.yaml", f], horizon_s=0.1,
                                lidar=(8, 128), threads=1)
    gap = json.loads(out.read_text())["planner_gap"]
    assert gap == json.loads(json.dumps(res["planner_gap"]))
    (row,) = gap["scenarios"]
    assert row["scenario"] == "tiny_drive" and row["steps_mesh"] == row["steps_neural"] == 1
    assert 0.0 <= row["score_neural"] <= 1.0 and row["gap"] == pytest.approx(row["score_mesh"] - row["score_neural"])
    assert gap["skipped"][0]["scenario"].endswith("stopped_vehicle.yaml") and "tiny" in gap["skipped"][0]["reason"]
    assert gap["lidar"] == "8x128" and gap["neural_s_per_step"] > 0
    assert len(row["max_action_diff"]) == 2 and min(row["max_action_diff"]) >= 0.0
