"""The ``mesh`` render backend: contract, actors, LiDAR engines and materials."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from sim.errors import LogFormatError
from sim.render import RENDERERS
from sim.render.mesh import MeshRenderer
from sim.sensors import CameraSpec, LidarSpec, SensorRig, default_rig
from sim.synth import make_scene


@pytest.fixture(scope="module")
def scene():
    return make_scene("tiny", 0, frames=12)


@pytest.fixture(scope="module")
def renderer(scene):
    r = MeshRenderer(scene)
    yield r
    r.close()


def _with_actor_moved(world, i, dx=0.0, dy=0.0, valid=None):
    x, y, v = world.x.copy(), world.y.copy(), world.valid.copy()
    x[i] += dx
    y[i] += dy
    if valid is not None:
        v[i] = valid
    return dataclasses.replace(world, x=x, y=y, valid=v)


def test_registered_and_contract(scene, renderer):
    assert RENDERERS.get("mesh") is MeshRenderer
    rig = default_rig(("front", "rear"), width=160, height=96, beams=16, azimuth_steps=512)
    w = scene.world_at(int(scene.t_us[3]))
    f = renderer.render(w, rig)
    assert f.t_us == int(scene.t_us[3])
    assert set(f.cameras) == {"front", "rear"}
    for name, img in f.cameras.items():
        assert img.rgb.shape == (96, 160, 3) and img.rgb.dtype == np.uint8
        assert img.depth.shape == (96, 160) and img.depth.dtype == np.float32
        assert np.isinf(img.depth[0]).mean() > 0.5  # sky at the top of the image
        assert np.isfinite(img.depth[-1]).all() and (img.depth[-1] > 0).all()  # ground at the bottom
        expect = MeshRenderer.ego_pose(w) @ rig.camera(name).vehicle_from_camera
        assert np.allclose(img.c2w, expect)
    sky = f.cameras["front"].rgb[0].astype(int)
    assert (sky[:, 2] > sky[:, 0]).mean() > 0.8  # blue-ish sky
    li = f.lidar
    assert li is not None and li.points.dtype == np.float32 and li.points.shape[1] == 3
    assert len(li.points) == len(li.intensity) == len(li.ray_index) == len(li.actor_id)
    assert np.all(np.diff(li.ray_index) > 0) and li.ray_index.max() < 16 * 512
    rng = np.linalg.norm(li.points, axis=1)
    assert rng.max() <= 80.0 and rng.min() > 0.3
    assert (li.intensity >= 0).all() and (li.intensity <= 1).all()


def test_same_world_renders_identically_whatever_came_before(scene, renderer):
    cam = CameraSpec.named("front", 160, 96)
    w0, w1 = scene.world_at(int(scene.t_us[0])), scene.world_at(int(scene.t_us[10]))
    a = renderer.render_camera(w0, cam)
    renderer.render_camera(w1, cam)
    b = renderer.render_camera(w0, cam)
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.depth, b.depth)


def _place_ahead(world, i, dist):
    """``world`` with actor ``i`` placed ``dist`` metres ahead of the ego, same heading."""
    x, y, yaw = world.x.copy(), world.y.copy(), world.yaw.copy()
    x[i] = x[0] + dist * np.cos(yaw[0])
    y[i] = y[0] + dist * np.sin(yaw[0])
    yaw[i] = yaw[0]
    return dataclasses.replace(world, x=x, y=y, yaw=yaw)


def test_actor_moves_with_its_pose_and_invalid_slots_are_skipped(scene, renderer):
    cam = CameraSpec.named("front", 160, 96)
    w0 = scene.world_at(int(scene.t_us[6]))
    i = next(k for k in range(1, len(w0.ids)) if w0.valid[k] and w0.cls[k] == "car")
    w = _place_ahead(w0, i, 12.0)
    img = renderer.render_camera(w, cam)
    gone = renderer.render_camera(_with_actor_moved(w, i, valid=False), cam)
    diff = np.abs(gone.rgb.astype(int) - img.rgb.astype(int)).sum(-1) > 0
    assert diff.sum() > 100
    # the actor's pixels are centred on the image column of its pose (straight ahead)
    cols = np.nonzero(diff)[1]
    assert abs(np.median(cols) - 80) < 4
    # where the actor was, the depth grows (background behind it)
    assert (gone.depth[diff] >= img.depth[diff] - 1e-3).mean() > 0.95
    # LiDAR: the invalid slot has no returns; valid it has some
    spec = LidarSpec(beams=32, azimuth_steps=1024)
    assert (renderer.render_lidar(w, spec).actor_id == i).sum() > 0
    assert (renderer.render_lidar(_with_actor_moved(w, i, valid=False), spec).actor_id == i).sum() == 0
    # moving the actor 3 m sideways moves its LiDAR returns by 3 m
    pts0 = renderer.render_lidar(w, spec)
    moved = _with_actor_moved(w, i, dy=3.0)
    pts1 = renderer.render_lidar(moved, spec)
    c0 = pts0.world_points()[pts0.actor_id == i].mean(axis=0)
    c1 = pts1.world_points()[pts1.actor_id == i].mean(axis=0)
    assert abs((c1 - c0)[1] - 3.0) < 0.6


def test_embree_and_pure_numpy_lidar_agree(scene):
    import trimesh

    if not trimesh.ray.has_embree:  # the project requires embreex; make a missing one loud
        pytest.fail("embreex is not installed (trimesh.ray.has_embree is False)")
    spec = LidarSpec(beams=8, azimuth_steps=96, vertical_fov_deg=(-20.0, 5.0), max_range_m=40.0)
    w = scene.world_at(int(scene.t_us[5]))
    a = MeshRenderer(scene, lidar_engine="embree").render_lidar(w, spec)
    b = MeshRenderer(scene, lidar_engine="triangle").render_lidar(w, spec)
    common, ia, ib = np.intersect1d(a.ray_index, b.ray_index, return_indices=True)
    assert len(common) >= 0.98 * max(len(a.ray_index), len(b.ray_index))
    assert np.allclose(a.points[ia], b.points[ib], atol=2e-3)
    assert np.array_equal(a.actor_id[ia], b.actor_id[ib])


def test_unknown_engine_is_an_error(scene):
    with pytest.raises(ValueError, match="embree"):
        MeshRenderer(scene, lidar_engine="optix")


def test_intensity_by_material(scene, renderer):
    """Lane paint is brighter than asphalt; licence plates brighter than car bodies."""
    spec = LidarSpec(beams=64, azimuth_steps=2048)
    inten: dict[str, list[float]] = {}
    for t in scene.t_us[::5]:
        scan = renderer.render_lidar(scene.world_at(int(t)), spec)
        for m in np.unique(renderer.last_lidar_materials):
            inten.setdefault(str(m), []).extend(scan.intensity[renderer.last_lidar_materials == m].tolist())
    med = {k: float(np.median(v)) for k, v in inten.items() if len(v) > 5}
    assert med["paint_white"] > 2 * med["asphalt"]
    assert med["sidewalk"] > med["asphalt"]
    # a car placed 7 m straight ahead of the ego, facing away: its rear plate is certainly hit
    w = scene.world_at(int(scene.t_us[0]))
    i = next(k for k in range(1, len(w.ids)) if w.cls[k] == "car")
    x, y, yaw = w.x.copy(), w.y.copy(), w.yaw.copy()
    x[i], y[i], yaw[i] = w.x[0] + 7.0 * np.cos(w.yaw[0]), w.y[0] + 7.0 * np.sin(w.yaw[0]), w.yaw[0]
    scan = renderer.render_lidar(dataclasses.replace(w, x=x, y=y, yaw=yaw), spec)
    mats = renderer.last_lidar_materials
    plate = (scan.actor_id == i) & (mats == "plate")
    body = (scan.actor_id == i) & (mats == "body")
    assert plate.sum() >= 20 and body.sum() >= 100
    assert np.median(scan.intensity[plate]) > 2 * np.median(scan.intensity[body])


def test_from_log_regenerates_the_town(tiny_log, tmp_path):
    from sim.log import read_log, write_json_atomic

    dl = read_log(tiny_log)
    r = MeshRenderer.from_log(tiny_log)
    rig = SensorRig.from_meta(dl.meta["rig"])
    fr = dl.frames[4]
    w = make_scene("tiny", 0, frames=20).world_at(fr.t_us)
    img = r.render_camera(w, rig.cameras[0])
    assert np.array_equal(img.rgb, dl.image(4))
    r.close()
    # a log that is not from the synth cannot be re-rendered
    meta = dict(dl.meta)
    meta["source"] = "nuscenes"
    fake = tmp_path / "fake"
    shutil.copytree(tiny_log, fake)
    write_json_atomic(fake / "meta.json", meta)
    with pytest.raises(LogFormatError, match="synth"):
        MeshRenderer.from_log(fake)


def test_closing_one_renderer_leaves_others_working(scene):
    """Deleting a renderer must not terminate the process-wide EGL display of the others."""
    rig = SensorRig((CameraSpec(width=64, height=40),), LidarSpec(beams=4, azimuth_steps=32))
    w = scene.world_at(int(scene.t_us[0]))
    a, b = MeshRenderer(scene), MeshRenderer(scene)
    before = a.render(w, rig).cameras["front"].rgb
    b.render(w, rig)
    b.close()
    np.testing.assert_array_equal(a.render(w, rig).cameras["front"].rgb, before)
    c = MeshRenderer(scene)
    np.testing.assert_array_equal(c.render(w, rig).cameras["front"].rgb, before)
    c.close()
    a.close()
