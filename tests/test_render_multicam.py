"""Every camera of a rig rendered by the neural backend in one step: the batched camera pass equals
the per-camera renders, the parallel render equals the serial one, each camera keeps its own size,
intrinsics and pose, the per-origin actor-candidate test equals the single-origin one, and a
scenario's ``scene.rig: log`` renders the log's whole rig at every step (batch episodes and the env).

Bundle: the session's tiny bundle (tests/test_render_backends.py) on the tiny log; the six-camera
rig is nuScenes' at a small scale (96x54 images, each with its own fx, fy, cx, cy and mount)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sim.errors import ScenarioError
from sim.sensors import LidarSpec, SensorRig
from tests.test_render_backends import FRAME, build_tiny_bundle

SCALE = 0.06  # 1600x900 -> 96x54


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_log: Path) -> Path:
    return build_tiny_bundle(tmp_path_factory, tiny_log)


@pytest.fixture(scope="module")
def rig() -> SensorRig:
    from sim.synth.rigs import nuscenes_rig

    return nuscenes_rig(SCALE, beams=8, azimuth_steps=128)


@pytest.fixture(scope="module")
def world(tiny_log: Path):
    from sim.log import read_log
    from sim.render.base import ArrayWorld
    from sim.synth import world_from_tracks

    dl = read_log(tiny_log)
    return ArrayWorld.of(world_from_tracks(dl.ego, dl.tracks, int(dl.ego.t_us[FRAME])))


def _renderer(bundle: Path, mode: str = "surface", **kw):
    from sim.render.neural import NeuralRenderer

    return NeuralRenderer(bundle=bundle, library=False, mode=mode, **kw)


@pytest.mark.parametrize("mode", ["surface", "volume"])
def test_batched_cameras_equal_the_per_camera_renders(tiny_bundle, rig, world, mode):
    r = _renderer(tiny_bundle, mode)
    try:
        assert r.plan(world).rows, "the test world should have actors in the scene"
        batched = r.render_cameras(world, rig.cameras)
        for cam in rig.cameras:
            one = r.render_camera(world, cam)
            got = batched[cam.name]
            assert got.rgb.shape == one.rgb.shape == (cam.height, cam.width, 3)
            assert int(np.abs(got.rgb.astype(np.int16) - one.rgb).max()) <= 1
            fin = np.isfinite(one.depth)
            assert np.array_equal(fin, np.isfinite(got.depth))
            np.testing.assert_allclose(got.depth[fin], one.depth[fin], rtol=1e-4, atol=1e-4)
            assert np.array_equal(got.c2w, one.c2w) and np.array_equal(got.K, one.K)
    finally:
        r.close()


def test_six_camera_step_renders_every_camera_at_its_intrinsics(tiny_bundle, rig, world):
    from sim.render.neural import _ego_pose

    r = _renderer(tiny_bundle)
    try:
        f = r.render(world, rig)
    finally:
        r.close()
    assert list(f.cameras) == [c.name for c in rig.cameras] and len(f.cameras) == 6
    assert len({(c.fx, c.fy, c.cx, c.cy) for c in rig.cameras}) == 6  # six distinct intrinsics
    for cam in rig.cameras:
        img = f.cameras[cam.name]
        assert img.rgb.shape == (cam.height, cam.width, 3) == (54, 96, 3) and img.rgb.dtype == np.uint8
        assert img.depth.shape == (cam.height, cam.width) and img.depth.dtype == np.float32
        assert np.array_equal(img.K, cam.K)
        np.testing.assert_allclose(img.c2w, _ego_pose(world) @ cam.vehicle_from_camera, atol=1e-12)
    # the cameras look in different directions: their images differ
    imgs = [f.cameras[c.name].rgb for c in rig.cameras]
    assert all(not np.array_equal(imgs[0], x) for x in imgs[1:])
    assert f.lidar is not None and len(f.lidar.points) > 100


@pytest.mark.parametrize("opts", [{"workers": 2, "camera_batch": 2}, {"workers": 3, "camera_batch": 1}, {"workers": 2, "camera_batch": 6}])
def test_parallel_render_equals_the_serial_render(tiny_bundle, rig, world, opts):
    serial = _renderer(tiny_bundle, parallel=False, camera_batch=1)
    par = _renderer(tiny_bundle, **opts)
    try:
        a, b = serial.render(world, rig), par.render(world, rig)
        b2 = par.render(world, rig)  # the worker threads are reused
    finally:
        serial.close()
        par.close()
    for cam in rig.cameras:
        assert int(np.abs(a.cameras[cam.name].rgb.astype(np.int16) - b.cameras[cam.name].rgb).max()) <= 1
        assert np.array_equal(b.cameras[cam.name].rgb, b2.cameras[cam.name].rgb)
    assert np.array_equal(a.lidar.points, b.lidar.points) and np.array_equal(a.lidar.ray_index, b.lidar.ray_index)


def test_actor_candidates_of_origin_runs_equal_each_run_alone():
    from sim.recon.actor_boxes import actor_candidates
    from sim.recon.config import ActorState, SceneConfig

    cfg = SceneConfig()
    g = torch.Generator().manual_seed(0)
    A = 7
    pose = torch.cat([torch.rand(1, A, 2, generator=g) * 40 - 20, torch.zeros(1, A, 1), torch.rand(1, A, 1, generator=g) * 6], -1)
    actors = ActorState(torch.arange(A), pose, torch.tensor([[4.5, 1.9, 1.5]]).repeat(A, 1), torch.ones(1, A, dtype=torch.bool))
    origins = [torch.tensor([0.0, 0.0, 1.5]), torch.tensor([1.5, 0.4, 1.6]), torch.tensor([-3.0, 2.0, 1.5])]
    runs = []
    for o in origins:
        d = torch.nn.functional.normalize(torch.randn(500, 3, generator=g), dim=-1)
        runs.append((o.expand(500, 3).contiguous(), d))
    o_all, d_all = torch.cat([r[0] for r in runs]), torch.cat([r[1] for r in runs])
    rows, keep, cand = actor_candidates(cfg, o_all, d_all, torch.zeros(len(o_all), dtype=torch.long), actors)
    assert cand is not None
    full = torch.zeros(len(o_all), A, dtype=torch.bool)
    full[rows[:, None], keep[None]] = cand
    for k, (o, d) in enumerate(runs):
        r1, k1, c1 = actor_candidates(cfg, o, d, torch.zeros(len(o), dtype=torch.long), actors)
        one = torch.zeros(len(o), A, dtype=torch.bool)
        one[r1[:, None], k1[None]] = c1
        assert torch.equal(full[500 * k : 500 * (k + 1)], one)
    assert bool(full.any())


# ----------------------------------------------------------------------------- scene.rig: log
def _multi_camera_log(tiny_log: Path, dst: Path, rig: SensorRig) -> tuple[Path, SensorRig]:
    """A copy of the tiny log whose meta.json declares its own front camera plus the cameras and
    the LiDAR of ``rig`` (the rig plumbing reads only the declaration; the frames stay the front
    camera's), and that rig."""
    out = shutil.copytree(tiny_log, dst)
    meta = json.loads((out / "meta.json").read_text())
    full = SensorRig((*SensorRig.from_meta(meta["rig"]).cameras, *rig.cameras), rig.lidar)
    meta["rig"] = full.to_meta()
    (out / "meta.json").write_text(json.dumps(meta))
    return out, full


class _Recorder:
    """A render backend stub recording the rig of every render."""

    name = "recorder"

    def __init__(self, *a, **k) -> None:
        self.rigs: list[SensorRig] = []

    def render(self, world, rig):
        from sim.render.base import CameraImage, LidarScan, SensorFrame

        self.rigs.append(rig)
        cams = {c.name: CameraImage(np.zeros((c.height, c.width, 3), np.uint8), np.full((c.height, c.width), np.inf, np.float32),
                                    np.eye(4), c.K) for c in rig.cameras}
        lid = None
        if rig.lidar is not None:
            z = np.zeros((0, 3), np.float32)
            lid = LidarScan(z, np.zeros(0, np.float32), np.eye(4), np.zeros(0, np.int32), np.zeros(0, np.int32))
        return SensorFrame(int(world.t_us), cams, lid)

    def close(self) -> None:
        pass


def test_scene_rig_log_renders_the_whole_log_rig_every_step(tiny_log, tmp_path, rig):
    from sim.batch import drive_episode, scenario_rig
    from sim.scenario import load_scenario

    log6, rig = _multi_camera_log(tiny_log, tmp_path / "log6", SensorRig(rig.cameras, LidarSpec(beams=8, azimuth_steps=64)))
    assert len(rig.cameras) == 7
    yml = tmp_path / "six.yaml"
    yml.write_text(f"version: 1\nscene: {{log: {log6}, rig: log}}\nplanner: {{name: lidar_stack}}\nobservation: [ego, lidar]\nhorizon_s: 0.4\n")
    spec = load_scenario(yml)
    assert spec.scene.rig == "log"
    got = scenario_rig(spec)
    assert [c.name for c in got.cameras] == [c.name for c in rig.cameras]
    assert all(np.allclose(a.K, b.K) and (a.width, a.height) == (b.width, b.height) for a, b in zip(got.cameras, rig.cameras, strict=True))
    rec = _Recorder()
    res = drive_episode(spec, "lidar_stack", 0, renderer=rec, raise_errors=True)
    assert res.status == "ok" and res.steps >= 3
    assert len(rec.rigs) == res.steps  # one render per step
    for r in rec.rigs:  # the planner reads only the LiDAR, yet every sensor of the log's rig is rendered
        assert [c.name for c in r.cameras] == [c.name for c in rig.cameras] and r.lidar is not None and r.lidar.beams == 8
    # the default rig renders only what the planner reads
    yml.write_text(yml.read_text().replace(", rig: log", ""))
    spec_default = load_scenario(yml)
    rec2 = _Recorder()
    drive_episode(spec_default, "lidar_stack", 0, renderer=rec2, raise_errors=True)
    assert rec2.rigs and all(not r.cameras and r.lidar is not None and r.lidar.beams == 32 for r in rec2.rigs)


def test_env_on_the_log_rig_observes_its_first_camera(tiny_log, tmp_path, rig):
    from sim.env import ClosedLoopEnv
    from sim.render.base import RENDERERS
    from sim.spec import ScenarioSpec, SceneSpec

    RENDERERS.register("recorder", _Recorder)
    log6, rig = _multi_camera_log(tiny_log, tmp_path / "log6", rig)
    env = ClosedLoopEnv(scenario=ScenarioSpec(scene=SceneSpec(log=log6, renderer="recorder", rig="log"), horizon_s=0.5),
                        observation=["camera", "lidar"])
    try:
        obs, _ = env.reset(seed=0)
        assert obs["camera"].shape == (rig.cameras[0].height, rig.cameras[0].width, 3)
        assert obs["lidar"].shape == (rig.lidar.beams, rig.lidar.azimuth_steps, 2)
        env.step(np.zeros(2, np.float32))
        rec = env.core.renderer()
        assert rec.rigs and all([c.name for c in r.cameras] == [c.name for c in rig.cameras] for r in rec.rigs)
    finally:
        env.close()


def test_scene_rig_log_needs_a_drive_log_with_cameras(tiny_log):
    from sim.batch import scenario_rig
    from sim.spec import ScenarioSpec, SceneSpec

    with pytest.raises(ScenarioError, match=r"scene\.rig"):
        scenario_rig(ScenarioSpec(scene=SceneSpec(town="tiny", rig="log")))
    # a scene whose metadata declares no camera (e.g. a LiDAR-only log)
    no_cams = SimpleNamespace(meta={"rig": {"cameras": [], "lidar": None}})
    with pytest.raises(ScenarioError, match=r"scene\.rig"):
        scenario_rig(ScenarioSpec(scene=SceneSpec(log=tiny_log, rig="log")), no_cams)
    assert len(scenario_rig(ScenarioSpec(scene=SceneSpec(log=tiny_log, rig="log"))).cameras) == 1
