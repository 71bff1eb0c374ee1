"""Rigid transforms and the single camera-convention conversion of the project.

Frames and conventions (see the design doc):

* **world**: metres, right-handed, z up. Vehicle poses are (x, y, yaw) on the ground plane, yaw in
  radians counter-clockwise from +x.
* **vehicle / ego frame**: origin at the box centre projected to the ground, x forward, y left,
  z up.
* **OpenCV camera**: x right, y down, z forward (optical axis). Intrinsics ``K`` map OpenCV camera
  coordinates to pixels (u right, v down, pixel centres at +0.5).
* **OpenGL camera** (nerfstudio ``transform_matrix``, pyrender): x right, y up, z backward.

``transform_matrix`` in a drive log is camera-to-world with OpenGL axes. Everything that converts
between the two camera conventions goes through :data:`OPENCV_FROM_OPENGL`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial.transform import Rotation

__all__ = [
    "OPENCV_FROM_OPENGL",
    "VEHICLE_FROM_OPENCV",
    "fclip",
    "intrinsics_matrix",
    "invert_se3",
    "opencv_to_opengl_c2w",
    "opengl_to_opencv_c2w",
    "project_points",
    "se2_apply",
    "se2_from_matrix",
    "se2_inverse_apply",
    "se2_matrix",
    "se3_from_xyz_rpy",
    "se3_matrix",
    "transform_points",
    "vehicle_pose_se3",
    "wrap_angle",
]

FloatArray = NDArray[np.float64]

#: Right-multiplying a camera-to-world matrix in one camera convention by this 4x4 gives the
#: matrix in the other (the conversion is its own inverse): flips the y and z axes.
OPENCV_FROM_OPENGL: FloatArray = np.diag([1.0, -1.0, -1.0, 1.0])
OPENCV_FROM_OPENGL.setflags(write=False)

#: Rotation taking OpenCV camera axes to vehicle axes for a camera looking along vehicle +x
#: (OpenCV z -> vehicle x, OpenCV x -> vehicle -y, OpenCV y -> vehicle -z).
VEHICLE_FROM_OPENCV: FloatArray = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
VEHICLE_FROM_OPENCV.setflags(write=False)


def wrap_angle(a: ArrayLike) -> NDArray[np.float64]:
    """Wrap angles (radians) to [-pi, pi)."""
    a = np.asarray(a, dtype=np.float64)
    return (a + np.pi) % (2.0 * np.pi) - np.pi


def fclip(a: ArrayLike, lo: ArrayLike, hi: ArrayLike) -> Any:
    """``np.clip`` without its dispatch overhead: ``min(max(a, lo), hi)`` elementwise (the same
    values for finite inputs; a NaN stays NaN)."""
    return np.minimum(np.maximum(a, lo), hi)


# ----------------------------------------------------------------------------------------- SE(2)
def se2_matrix(x: float, y: float, yaw: float) -> FloatArray:
    """3x3 homogeneous matrix of a planar pose (metres, radians)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, x], [s, c, y], [0.0, 0.0, 1.0]])


def se2_from_matrix(m: ArrayLike) -> tuple[float, float, float]:
    """(x, y, yaw) of a 3x3 homogeneous planar pose."""
    m = np.asarray(m, dtype=np.float64)
    return float(m[0, 2]), float(m[1, 2]), float(np.arctan2(m[1, 0], m[0, 0]))


def se2_apply(pose: ArrayLike, points: ArrayLike) -> FloatArray:
    """Map points (..., 2) from the local frame of ``pose`` = (x, y, yaw) to the parent frame.

    ``pose`` may be (3,) or broadcastable (..., 3) against ``points``.
    """
    pose = np.asarray(pose, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    c, s = np.cos(pose[..., 2]), np.sin(pose[..., 2])
    px, py = p[..., 0], p[..., 1]
    return np.stack([pose[..., 0] + c * px - s * py, pose[..., 1] + s * px + c * py], axis=-1)


def se2_inverse_apply(pose: ArrayLike, points: ArrayLike) -> FloatArray:
    """Map points (..., 2) from the parent frame into the local frame of ``pose`` = (x, y, yaw)."""
    pose = np.asarray(pose, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    c, s = np.cos(pose[..., 2]), np.sin(pose[..., 2])
    dx, dy = p[..., 0] - pose[..., 0], p[..., 1] - pose[..., 1]
    return np.stack([c * dx + s * dy, -s * dx + c * dy], axis=-1)


# ----------------------------------------------------------------------------------------- SE(3)
def se3_matrix(rotation: ArrayLike, translation: ArrayLike) -> FloatArray:
    """4x4 homogeneous transform from a 3x3 rotation and a translation (metres)."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(rotation, dtype=np.float64)
    m[:3, 3] = np.asarray(translation, dtype=np.float64)
    return m


def se3_from_xyz_rpy(x: float, y: float, z: float, roll: float = 0.0, pitch: float = 0.0, yaw: float = 0.0) -> FloatArray:
    """4x4 transform from a position (m) and intrinsic z-y-x Euler angles yaw, pitch, roll (rad)."""
    r = Rotation.from_euler("ZYX", [yaw, pitch, roll]).as_matrix()
    return se3_matrix(r, [x, y, z])


def vehicle_pose_se3(x: float, y: float, yaw: float, z: float = 0.0) -> FloatArray:
    """4x4 world-from-vehicle transform of a planar vehicle pose (box centre on the ground)."""
    return se3_from_xyz_rpy(x, y, z, 0.0, 0.0, yaw)


def invert_se3(m: ArrayLike) -> FloatArray:
    """Inverse of a rigid 4x4 transform (or a stack (..., 4, 4))."""
    m = np.asarray(m, dtype=np.float64)
    r = np.swapaxes(m[..., :3, :3], -1, -2)
    t = -np.einsum("...ij,...j->...i", r, m[..., :3, 3])
    out = np.zeros_like(m)
    out[..., :3, :3] = r
    out[..., :3, 3] = t
    out[..., 3, 3] = 1.0
    return out


def transform_points(m: ArrayLike, points: ArrayLike) -> FloatArray:
    """Apply a 4x4 rigid transform to points (N, 3)."""
    m = np.asarray(m, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    return p @ m[:3, :3].T + m[:3, 3]


# ---------------------------------------------------------------------------------------- camera
def opencv_to_opengl_c2w(c2w_opencv: ArrayLike) -> FloatArray:
    """Camera-to-world with OpenCV camera axes -> the same pose with OpenGL camera axes."""
    return np.asarray(c2w_opencv, dtype=np.float64) @ OPENCV_FROM_OPENGL


def opengl_to_opencv_c2w(c2w_opengl: ArrayLike) -> FloatArray:
    """Camera-to-world with OpenGL camera axes -> the same pose with OpenCV camera axes."""
    return np.asarray(c2w_opengl, dtype=np.float64) @ OPENCV_FROM_OPENGL


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> FloatArray:
    """3x3 pinhole intrinsics (pixels)."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def project_points(points_world: ArrayLike, c2w_opengl: ArrayLike, K: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Project world points (N, 3) into a camera.

    Args:
        points_world: (N, 3) world points, metres.
        c2w_opengl: 4x4 camera-to-world, OpenGL camera axes (as in ``transforms.json``).
        K: 3x3 intrinsics.

    Returns:
        ``uv`` (N, 2) pixel coordinates (u right, v down; a pixel's centre is at +0.5) and ``z``
        (N,) depth along the optical axis in metres (negative = behind the camera).
    """
    w2c = invert_se3(opengl_to_opencv_c2w(c2w_opengl))
    pc = transform_points(w2c, points_world)
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (pc @ np.asarray(K, dtype=np.float64).T)[:, :2] / z[:, None]
    return uv, z
