"""Sensor rig description: cameras and a spinning LiDAR mounted on the ego vehicle.

Mount poses are ``vehicle_from_sensor`` 4x4 transforms in the vehicle frame (x forward, y left,
z up, origin at the box bottom centre). Camera mounts use OpenGL camera axes (x right, y up,
z backward), the same convention as ``transform_matrix`` in a drive log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sim.geometry import OPENCV_FROM_OPENGL, VEHICLE_FROM_OPENCV, intrinsics_matrix, se3_matrix

__all__ = ["CameraSpec", "LidarSpec", "SensorRig", "default_rig"]

_CAMERA_YAWS = {"front": 0.0, "left": np.pi / 2, "rear": np.pi, "right": -np.pi / 2}


@dataclass(frozen=True)
class CameraSpec:
    """A pinhole camera.

    Attributes:
        name: camera name (``front``, ``left``, ``right``, ``rear`` or any other).
        width, height: pixels.
        hfov_deg: horizontal field of view, degrees (square pixels: fy = fx).
        mount_xyz: position in the vehicle frame, metres.
        mount_yaw: rotation about vehicle z, radians (0 looks forward, +pi/2 left).
        pitch: downward tilt, radians (positive looks down).
    """

    name: str = "front"
    width: int = 320
    height: int = 192
    hfov_deg: float = 90.0
    mount_xyz: tuple[float, float, float] = (1.5, 0.0, 1.6)
    mount_yaw: float = 0.0
    pitch: float = 0.05

    @property
    def fx(self) -> float:
        return 0.5 * self.width / float(np.tan(np.radians(self.hfov_deg) / 2.0))

    @property
    def K(self) -> NDArray[np.float64]:
        """3x3 intrinsics (pixels), principal point at the image centre."""
        return intrinsics_matrix(self.fx, self.fx, self.width / 2.0, self.height / 2.0)

    @property
    def vehicle_from_camera(self) -> NDArray[np.float64]:
        """4x4 vehicle-from-camera with OpenGL camera axes."""
        cy, sy = np.cos(self.mount_yaw), np.sin(self.mount_yaw)
        yaw = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
        cp, sp = np.cos(self.pitch), np.sin(self.pitch)
        # pitch down: rotate about the camera's OpenCV x axis (right) so the optical axis tilts down
        pitch_cv = np.array([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]])
        r_cv = yaw @ VEHICLE_FROM_OPENCV @ pitch_cv
        return se3_matrix(r_cv, self.mount_xyz) @ OPENCV_FROM_OPENGL

    def to_meta(self) -> dict[str, Any]:
        K = self.K
        return {
            "name": self.name,
            "width": self.width,
            "height": self.height,
            "fx": float(K[0, 0]),
            "fy": float(K[1, 1]),
            "cx": float(K[0, 2]),
            "cy": float(K[1, 2]),
            "vehicle_from_camera": np.round(self.vehicle_from_camera, 9).tolist(),
        }

    @classmethod
    def named(cls, name: str, width: int = 320, height: int = 192) -> CameraSpec:
        """A standard camera by name: ``front``, ``left``, ``right`` or ``rear``."""
        yaw = _CAMERA_YAWS[name]
        xyz = {"front": (1.5, 0.0, 1.6), "rear": (-1.5, 0.0, 1.6), "left": (0.5, 0.9, 1.6), "right": (0.5, -0.9, 1.6)}[name]
        return cls(name=name, width=width, height=height, mount_xyz=xyz, mount_yaw=yaw)


@dataclass(frozen=True)
class LidarSpec:
    """A spinning LiDAR: ``beams`` rows evenly spaced in elevation over ``vertical_fov_deg`` and
    ``azimuth_steps`` columns over 360 degrees. Range in metres."""

    beams: int = 32
    azimuth_steps: int = 1024
    vertical_fov_deg: tuple[float, float] = (-25.0, 10.0)
    max_range_m: float = 80.0
    mount_xyz: tuple[float, float, float] = (0.0, 0.0, 1.9)

    @property
    def vehicle_from_lidar(self) -> NDArray[np.float64]:
        return se3_matrix(np.eye(3), self.mount_xyz)

    def ray_directions(self) -> NDArray[np.float64]:
        """(beams, azimuth_steps, 3) unit directions in the sensor frame (x forward, z up); row 0 is
        the highest beam, column 0 looks forward and azimuth increases counter-clockwise."""
        el = np.radians(np.linspace(self.vertical_fov_deg[1], self.vertical_fov_deg[0], self.beams))
        az = np.arange(self.azimuth_steps) * (2.0 * np.pi / self.azimuth_steps)
        ce = np.cos(el)[:, None]
        return np.stack(
            [ce * np.cos(az)[None, :], ce * np.sin(az)[None, :], np.broadcast_to(np.sin(el)[:, None], (self.beams, self.azimuth_steps))],
            axis=-1,
        )

    def to_meta(self) -> dict[str, Any]:
        return {
            "name": "top",
            "beams": self.beams,
            "azimuth_steps": self.azimuth_steps,
            "vertical_fov_deg": list(self.vertical_fov_deg),
            "max_range_m": self.max_range_m,
            "vehicle_from_lidar": np.round(self.vehicle_from_lidar, 9).tolist(),
        }


@dataclass(frozen=True)
class SensorRig:
    """Cameras plus an optional LiDAR."""

    cameras: tuple[CameraSpec, ...] = field(default_factory=lambda: (CameraSpec(),))
    lidar: LidarSpec | None = field(default_factory=LidarSpec)

    def camera(self, name: str) -> CameraSpec:
        for c in self.cameras:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_meta(self) -> dict[str, Any]:
        return {"cameras": [c.to_meta() for c in self.cameras], "lidar": self.lidar.to_meta() if self.lidar else None}

    @classmethod
    def from_meta(cls, rig: dict[str, Any]) -> SensorRig:
        """Rebuild a rig from a drive log's ``meta.json`` ``rig`` (cameras recovered from their
        intrinsics and mounts)."""
        cams = []
        for c in rig["cameras"]:
            m = np.asarray(c["vehicle_from_camera"], dtype=np.float64) @ OPENCV_FROM_OPENGL
            r_cv = m[:3, :3]
            fwd = r_cv[:, 2]  # optical axis in the vehicle frame
            yaw = float(np.arctan2(fwd[1], fwd[0]))
            pitch = float(-np.arcsin(np.clip(fwd[2], -1, 1)))
            hfov = float(np.degrees(2 * np.arctan(0.5 * c["width"] / c["fx"])))
            cams.append(CameraSpec(c["name"], int(c["width"]), int(c["height"]), hfov, tuple(float(v) for v in m[:3, 3]), yaw, pitch))
        lidar = None
        if rig.get("lidar"):
            li = rig["lidar"]
            t = np.asarray(li["vehicle_from_lidar"], dtype=np.float64)[:3, 3]
            lidar = LidarSpec(int(li["beams"]), int(li["azimuth_steps"]), tuple(li["vertical_fov_deg"]), float(li["max_range_m"]), tuple(float(v) for v in t))
        return cls(tuple(cams), lidar)


def default_rig(cameras: tuple[str, ...] = ("front",), width: int = 320, height: int = 192, beams: int = 32, azimuth_steps: int = 1024) -> SensorRig:
    """The standard rig: named cameras at ``width`` x ``height`` and a ``beams`` x ``azimuth_steps`` LiDAR."""
    return SensorRig(tuple(CameraSpec.named(n, width, height) for n in cameras), LidarSpec(beams=beams, azimuth_steps=azimuth_steps))
