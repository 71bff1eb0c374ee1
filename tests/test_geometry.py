"""Transforms and the camera convention."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.geometry import (
    invert_se3,
    opencv_to_opengl_c2w,
    opengl_to_opencv_c2w,
    project_points,
    se2_apply,
    se2_inverse_apply,
    se3_from_xyz_rpy,
    transform_points,
    vehicle_pose_se3,
    wrap_angle,
)
from sim.sensors import CameraSpec, LidarSpec, SensorRig

finite = st.floats(-100, 100, allow_nan=False)
angle = st.floats(-10, 10, allow_nan=False)


@settings(max_examples=50, deadline=None)
@given(x=finite, y=finite, yaw=angle, px=finite, py=finite)
def test_se2_round_trip(x: float, y: float, yaw: float, px: float, py: float) -> None:
    p = np.array([px, py])
    w = se2_apply([x, y, yaw], p)
    np.testing.assert_allclose(se2_inverse_apply([x, y, yaw], w), p, atol=1e-9)


@settings(max_examples=50, deadline=None)
@given(x=finite, y=finite, z=finite, r=angle, p=angle, yaw=angle)
def test_se3_inverse(x: float, y: float, z: float, r: float, p: float, yaw: float) -> None:
    m = se3_from_xyz_rpy(x, y, z, r, p, yaw)
    np.testing.assert_allclose(m @ invert_se3(m), np.eye(4), atol=1e-9)


def test_wrap_angle_range() -> None:
    a = wrap_angle(np.array([np.pi, -np.pi, 3 * np.pi + 0.1, -0.1]))
    assert np.all(a >= -np.pi) and np.all(a < np.pi)
    np.testing.assert_allclose(a[2], -np.pi + 0.1, atol=1e-12)


def test_camera_conversion_is_an_involution() -> None:
    m = se3_from_xyz_rpy(1, 2, 3, 0.1, 0.2, 0.3)
    np.testing.assert_allclose(opengl_to_opencv_c2w(opencv_to_opengl_c2w(m)), m, atol=1e-12)


def test_front_camera_projects_a_point_ahead_to_the_centre() -> None:
    cam = CameraSpec(width=320, height=192, hfov_deg=90.0, mount_xyz=(1.5, 0.0, 1.6), pitch=0.0)
    ego = vehicle_pose_se3(10.0, 5.0, np.pi / 2)  # facing +y in the world
    c2w = ego @ cam.vehicle_from_camera
    # 20 m ahead of the camera along the ego heading, at camera height
    p = np.array([[10.0, 5.0 + 1.5 + 20.0, 1.6]])
    uv, z = project_points(p, c2w, cam.K)
    np.testing.assert_allclose(uv[0], [160.0, 96.0], atol=1e-9)
    np.testing.assert_allclose(z[0], 20.0, atol=1e-9)
    # a point to the ego's left lands left of centre, one above lands above
    uv2, _ = project_points([[10.0 - 2.0, 26.5, 1.6], [10.0, 26.5, 3.6]], c2w, cam.K)
    assert uv2[0, 0] < 160 - 1 and abs(uv2[0, 1] - 96) < 1e-6
    assert uv2[1, 1] < 96 - 1 and abs(uv2[1, 0] - 160) < 1e-6
    # with 90 degrees horizontal fov, a point at 45 degrees left hits the left border
    uv3, _ = project_points([[10.0 - 20.0, 26.5, 1.6]], c2w, cam.K)
    np.testing.assert_allclose(uv3[0, 0], 0.0, atol=1e-9)


def test_pitched_camera_looks_down_and_rig_meta_round_trip() -> None:
    cam = CameraSpec(pitch=0.2)
    fwd_world = cam.vehicle_from_camera[:3, :3] @ np.array([0.0, 0.0, -1.0])  # OpenGL looks along -z
    assert fwd_world[0] > 0.9 and fwd_world[2] < -0.1
    rig = SensorRig((cam, CameraSpec.named("left")), LidarSpec(beams=8, azimuth_steps=64))
    back = SensorRig.from_meta(rig.to_meta())
    for a, b in zip(rig.cameras, back.cameras, strict=True):
        np.testing.assert_allclose(a.vehicle_from_camera, b.vehicle_from_camera, atol=1e-6)
        np.testing.assert_allclose(a.K, b.K)
    assert back.lidar == rig.lidar


def test_lidar_directions_unit_and_ordered() -> None:
    d = LidarSpec(beams=8, azimuth_steps=16).ray_directions()
    assert d.shape == (8, 16, 3)
    np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1.0)
    assert d[0, 0, 2] > d[-1, 0, 2]  # row 0 highest
    np.testing.assert_allclose(d[4, 4, :2] / np.linalg.norm(d[4, 4, :2]), [0.0, 1.0], atol=1e-12)  # 90 deg = left


def test_transform_points_matches_matrix() -> None:
    m = se3_from_xyz_rpy(1, -2, 0.5, 0.0, 0.0, 0.7)
    p = np.random.default_rng(0).normal(size=(10, 3))
    ph = np.concatenate([p, np.ones((10, 1))], axis=1)
    np.testing.assert_allclose(transform_points(m, p), (ph @ m.T)[:, :3])
