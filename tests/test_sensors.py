"""The full camera model of :mod:`sim.sensors` (fx != fy, off-centre principal point, roll), its
round trip through ``meta.json``, the backwards-compatible short form, and the LiDAR firing model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sim.geometry import OPENCV_FROM_OPENGL, project_points
from sim.sensors import CameraSpec, LidarSpec, SensorRig, euler_zyx, rotation_zyx

FULL = CameraSpec("odd", 120, 72, mount_xyz=(1.5, 0.1, 1.6), mount_yaw=0.0, pitch=0.45, roll=0.12,
                  intrinsics=(70.0, 88.0, 52.5, 41.0))


def test_full_intrinsics_and_roll_define_K_and_the_mount() -> None:
    np.testing.assert_array_equal(FULL.K, [[70.0, 0.0, 52.5], [0.0, 88.0, 41.0], [0.0, 0.0, 1.0]])
    r_cv = (FULL.vehicle_from_camera @ OPENCV_FROM_OPENGL)[:3, :3]
    # optical axis: forward and pitched down by 0.45 rad; roll tips the image's right side (OpenCV x) down
    np.testing.assert_allclose(r_cv[:, 2], [np.cos(0.45), 0.0, -np.sin(0.45)], atol=1e-12)
    right = r_cv[:, 0]
    assert right[1] < 0 and right[2] == pytest.approx(-np.sin(0.12) * np.cos(0.45), abs=1e-12)  # roll about the pitched axis
    # a point straight down the optical axis projects to the principal point
    c2w = FULL.vehicle_from_camera
    p = c2w[:3, 3] + 10.0 * r_cv[:, 2]
    uv, z = project_points(p[None], c2w, FULL.K)
    np.testing.assert_allclose(uv[0], [52.5, 41.0], atol=1e-9)
    assert z[0] == pytest.approx(10.0)


def test_full_camera_round_trips_through_meta() -> None:
    rig = SensorRig((FULL, CameraSpec.named("left")), LidarSpec(beams=8, azimuth_steps=64, mount_rpy=(0.01, -0.02, -np.pi / 2),
                                                               firing="spin_cw", rate_hz=20.0, cut_azimuth_deg=-90.0))
    meta = json.loads(json.dumps(rig.to_meta()))
    assert meta["cameras"][0]["fx"] == 70.0 and meta["cameras"][0]["fy"] == 88.0
    assert meta["cameras"][0]["cx"] == 52.5 and meta["cameras"][0]["cy"] == 41.0
    back = SensorRig.from_meta(meta)
    a, b = rig.cameras[0], back.cameras[0]
    np.testing.assert_allclose(b.K, a.K)
    np.testing.assert_allclose(b.vehicle_from_camera, a.vehicle_from_camera, atol=2e-9)
    assert (b.mount_yaw, b.pitch, b.roll) == pytest.approx((0.0, 0.45, 0.12), abs=1e-8)
    assert back.lidar is not None and rig.lidar is not None
    np.testing.assert_allclose(back.lidar.vehicle_from_lidar, rig.lidar.vehicle_from_lidar, atol=2e-9)
    assert (back.lidar.firing, back.lidar.rate_hz, back.lidar.cut_azimuth_deg) == ("spin_cw", 20.0, -90.0)
    # and a second round trip is a fixed point of the meta
    assert SensorRig.from_meta(back.to_meta()).to_meta() == back.to_meta()


def test_short_form_metas_load_as_before() -> None:
    """A rig written with hfov / yaw / pitch only (every log before full intrinsics) reads back to
    the short form: no intrinsics, no roll, the same hfov, yaw, pitch, K and mount."""
    rig = SensorRig((CameraSpec(pitch=0.2), CameraSpec.named("left"), CameraSpec.named("rear", 64, 40)), LidarSpec(beams=8, azimuth_steps=64))
    meta = json.loads(json.dumps(rig.to_meta()))
    assert "firing" not in meta["lidar"]  # the LiDAR meta of an instant-firing rig is unchanged
    back = SensorRig.from_meta(meta)
    for a, b in zip(rig.cameras, back.cameras, strict=True):
        assert b.intrinsics is None and b.roll == 0.0
        assert (b.name, b.width, b.height) == (a.name, a.width, a.height)
        assert b.hfov_deg == pytest.approx(a.hfov_deg, abs=1e-12)
        assert (b.mount_yaw, b.pitch) == pytest.approx((a.mount_yaw, a.pitch), abs=1e-9)
        np.testing.assert_array_equal(b.K, a.K) if a.width % 2 == 0 else None
        np.testing.assert_allclose(b.vehicle_from_camera, a.vehicle_from_camera, atol=1e-9)
    assert back.lidar == rig.lidar


def test_scaled_camera_keeps_relative_image_positions() -> None:
    big = CameraSpec("CAM_FRONT", 1600, 900, intrinsics=(1266.4, 1262.0, 816.3, 491.5))
    s = big.scaled(0.2)
    assert (s.width, s.height) == (320, 180)
    np.testing.assert_allclose(s.K, big.K * np.array([[0.2], [0.2], [1.0]]))
    p = np.array([[8.0, 1.0, 1.2]])
    uv_big, _ = project_points(p, big.vehicle_from_camera, big.K)
    uv_s, _ = project_points(p, s.vehicle_from_camera, s.K)
    np.testing.assert_allclose(uv_s, uv_big * 0.2, atol=1e-9)


def test_euler_helpers_invert_each_other() -> None:
    for ypr in [(0.3, -0.2, 0.1), (-2.9, 0.4, -1.2), (np.pi / 2, 0.0, 0.0)]:
        assert euler_zyx(rotation_zyx(*ypr)) == pytest.approx(ypr, abs=1e-12)


def test_bad_intrinsics_are_refused() -> None:
    with pytest.raises(ValueError, match="intrinsics"):
        CameraSpec(intrinsics=(0.0, 10.0, 5.0, 5.0))
    with pytest.raises(ValueError, match="firing"):
        LidarSpec(firing="sideways")


def test_spinning_lidar_column_times_and_rings() -> None:
    li = LidarSpec(beams=4, azimuth_steps=8, firing="spin_cw", rate_hz=20.0, cut_azimuth_deg=180.0)
    dt = li.column_time_offsets_us()
    # clockwise from the back: 180 deg fires first (-50 ms), then 135, 90, 45, 0 (front, half way), 315, ...
    assert dt[4] == -50_000 and dt[0] == -25_000 and dt[2] == -37_500 and dt[6] == -12_500
    assert dt.max() < 0 and dt.min() == -50_000
    assert np.all(LidarSpec(azimuth_steps=8).column_time_offsets_us() == 0)
    ccw = LidarSpec(azimuth_steps=8, firing="spin_ccw", rate_hz=20.0, cut_azimuth_deg=0.0).column_time_offsets_us()
    assert ccw[0] == -50_000 and ccw[2] == -37_500
    assert list(li.rings()) == [3, 2, 1, 0]  # row 0 is the highest beam; ring 0 the lowest


# ------------------------------------------------------------------------ rendering (mesh backend)
def _ground_depth(cam: CameraSpec, c2w: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """z-depth of the ground plane z = 0 seen through pixel position (u, v) of ``cam`` at ``c2w``."""
    K = cam.K
    d = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    m = c2w @ OPENCV_FROM_OPENGL
    return -m[2, 3] / (d @ m[:3, :3].T)[..., 2]


@pytest.fixture(scope="module")
def rendered():
    from sim.render.mesh import MeshRenderer
    from sim.synth import make_scene

    scene = make_scene("tiny", 0, frames=2)
    r = MeshRenderer(scene, supersample=1)
    try:
        yield r.render_camera(scene.world_at(0), FULL)
    finally:
        r.close()


def _pixel_errors(rendered, model: CameraSpec) -> np.ndarray:
    """Row error (px) of the rendered ground under ``model``, at the pixels where known ground points
    (a grid on the road ahead, z = 0) project: (rendered depth - predicted depth) / (d depth / d row)."""
    ego = rendered.c2w @ np.linalg.inv(FULL.vehicle_from_camera)
    c2w = ego @ model.vehicle_from_camera  # where ``model`` believes the camera is
    xs, ys = np.meshgrid(np.linspace(4.0, 12.0, 9), np.linspace(-2.5, 2.5, 11))
    pts = np.stack([ego[0, 3] + xs.ravel(), ego[1, 3] + ys.ravel(), np.zeros(xs.size)], 1)
    uv, z = project_points(pts, c2w, model.K)
    inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < model.width) & (uv[:, 1] >= 0) & (uv[:, 1] < model.height)
    assert inside.sum() >= 30
    j, i = np.floor(uv[inside, 0]).astype(int), np.floor(uv[inside, 1]).astype(int)
    uc, vc = j + 0.5, i + 0.5
    pred = _ground_depth(model, c2w, uc, vc)
    slope = _ground_depth(model, c2w, uc, vc + 0.5) - _ground_depth(model, c2w, uc, vc - 0.5)
    return (rendered.depth[i, j] - pred) / slope


def test_mesh_render_puts_known_ground_points_where_K_and_the_pose_say(rendered) -> None:
    """fx != fy, an off-centre principal point and a roll: ground points on the road ahead appear at
    the pixel the camera model predicts (row error well under a pixel)."""
    err = np.abs(_pixel_errors(rendered, FULL))
    assert np.median(err) < 0.05 and np.percentile(err, 90) < 1.0
    # the check can fail: a model that drops the roll, or centres the principal point, is pixels off
    for wrong in (CameraSpec("odd", 120, 72, mount_xyz=FULL.mount_xyz, pitch=0.45, intrinsics=FULL.intrinsics),
                  CameraSpec("odd", 120, 72, mount_xyz=FULL.mount_xyz, pitch=0.45, roll=0.12, intrinsics=(70.0, 88.0, 60.0, 36.0))):
        assert np.percentile(np.abs(_pixel_errors(rendered, wrong)), 75) > 2.0
