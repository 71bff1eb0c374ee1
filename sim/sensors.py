"""Sensor rig description: cameras and a spinning LiDAR mounted on the ego vehicle.

Mount poses are ``vehicle_from_sensor`` 4x4 transforms in the vehicle frame (x forward, y left,
z up, origin at the box bottom centre). Camera mounts use OpenGL camera axes (x right, y up,
z backward), the same convention as ``transform_matrix`` in a drive log.

A camera is a full pinhole model: ``fx``, ``fy``, ``cx``, ``cy`` in pixels (pixel centres at
+0.5, as everywhere in loopdrive) and a full mount rotation (yaw, pitch, roll). The historic
short form -- a horizontal field of view with square pixels and a centred principal point -- is
still the default, and a rig written with it reads back to the same values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sim.geometry import OPENCV_FROM_OPENGL, VEHICLE_FROM_OPENCV, intrinsics_matrix, se3_matrix

__all__ = ["LIDAR_FIRING", "CameraSpec", "LidarSpec", "SensorRig", "default_rig", "euler_zyx", "rotation_zyx"]

_CAMERA_YAWS = {"front": 0.0, "left": np.pi / 2, "rear": np.pi, "right": -np.pi / 2}

#: LiDAR firing models: ``instant`` (every ray at the sweep's time stamp, from one pose) or a
#: spinning head turning clockwise / counter-clockwise seen from above (``spin_cw``, ``spin_ccw``)
LIDAR_FIRING = ("instant", "spin_cw", "spin_ccw")


def rotation_zyx(yaw: float, pitch: float, roll: float) -> NDArray[np.float64]:
    """3x3 ``Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (radians, right-handed about the parent's axes)."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return rz @ ry @ rx


def euler_zyx(r: NDArray[np.floating]) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in radians of a 3x3 rotation ``Rz(yaw) @ Ry(pitch) @ Rx(roll)``."""
    r = np.asarray(r, dtype=np.float64)
    yaw = float(np.arctan2(r[1, 0], r[0, 0]))
    pitch = float(-np.arcsin(np.clip(r[2, 0], -1.0, 1.0)))
    roll = float(np.arctan2(r[2, 1], r[2, 2]))
    return yaw, pitch, roll


@dataclass(frozen=True)
class CameraSpec:
    """A pinhole camera.

    Attributes:
        name: camera name (``front``, ``left``, ``right``, ``rear``, ``CAM_FRONT`` or any other).
        width, height: pixels.
        hfov_deg: horizontal field of view, degrees; defines ``fx = fy`` with the principal point
            at the image centre unless ``intrinsics`` is given.
        mount_xyz: position in the vehicle frame, metres.
        mount_yaw: rotation about vehicle z, radians (0 looks forward, +pi/2 left).
        pitch: downward tilt, radians (positive looks down).
        roll: rotation about the optical axis, radians (positive tips the image's right side down,
            i.e. right-handed about the viewing direction).
        intrinsics: ``(fx, fy, cx, cy)`` in pixels (full intrinsics: focal lengths may differ and
            the principal point may be off-centre); None = derived from ``hfov_deg``.

    The mount rotation is ``Rz(mount_yaw) @ Ry(pitch) @ Rx(roll)`` applied to a camera looking
    along vehicle +x (see :attr:`vehicle_from_camera`).
    """

    name: str = "front"
    width: int = 320
    height: int = 192
    hfov_deg: float = 90.0
    mount_xyz: tuple[float, float, float] = (1.5, 0.0, 1.6)
    mount_yaw: float = 0.0
    pitch: float = 0.05
    roll: float = 0.0
    intrinsics: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.intrinsics is not None:
            k = tuple(float(v) for v in self.intrinsics)
            if len(k) != 4 or not all(math.isfinite(v) for v in k) or k[0] <= 0 or k[1] <= 0:
                raise ValueError(f"camera {self.name!r}: intrinsics must be 4 finite numbers (fx, fy > 0, cx, cy), got {self.intrinsics!r}")
            object.__setattr__(self, "intrinsics", k)

    @property
    def fx(self) -> float:
        """Horizontal focal length, pixels."""
        if self.intrinsics is not None:
            return self.intrinsics[0]
        return 0.5 * self.width / float(np.tan(np.radians(self.hfov_deg) / 2.0))

    @property
    def fy(self) -> float:
        """Vertical focal length, pixels."""
        return self.intrinsics[1] if self.intrinsics is not None else self.fx

    @property
    def cx(self) -> float:
        """Principal point column, pixels (image centre unless ``intrinsics`` says otherwise)."""
        return self.intrinsics[2] if self.intrinsics is not None else self.width / 2.0

    @property
    def cy(self) -> float:
        """Principal point row, pixels."""
        return self.intrinsics[3] if self.intrinsics is not None else self.height / 2.0

    @property
    def K(self) -> NDArray[np.float64]:
        """3x3 intrinsics (pixels)."""
        return intrinsics_matrix(self.fx, self.fy, self.cx, self.cy)

    @property
    def vehicle_from_camera(self) -> NDArray[np.float64]:
        """4x4 vehicle-from-camera with OpenGL camera axes."""
        cy, sy = np.cos(self.mount_yaw), np.sin(self.mount_yaw)
        yaw = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
        cp, sp = np.cos(self.pitch), np.sin(self.pitch)
        # pitch down: rotate about the camera's OpenCV x axis (right) so the optical axis tilts down
        pitch_cv = np.array([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]])
        r_cv = yaw @ VEHICLE_FROM_OPENCV @ pitch_cv
        if self.roll != 0.0:
            # roll: right-handed about the optical axis (OpenCV z); same as Rx(roll) in the vehicle frame
            cr, sr = np.cos(self.roll), np.sin(self.roll)
            r_cv = r_cv @ np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
        return se3_matrix(r_cv, self.mount_xyz) @ OPENCV_FROM_OPENGL

    def scaled(self, sx: float, sy: float | None = None) -> CameraSpec:
        """The same camera with its image resampled by ``sx`` (columns) and ``sy`` (rows, default
        ``sx``): size rounded to whole pixels, intrinsics scaled by the exact size ratios, so a
        world point lands on the same relative image position."""
        sy = sx if sy is None else sy
        w, h = max(1, round(self.width * sx)), max(1, round(self.height * sy))
        ax, ay = w / self.width, h / self.height
        return replace(self, width=w, height=h, intrinsics=(self.fx * ax, self.fy * ay, self.cx * ax, self.cy * ay))

    def to_meta(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "width": self.width,
            "height": self.height,
            "fx": float(self.fx),
            "fy": float(self.fy),
            "cx": float(self.cx),
            "cy": float(self.cy),
            "vehicle_from_camera": np.round(self.vehicle_from_camera, 9).tolist(),
        }

    @classmethod
    def from_meta(cls, c: dict[str, Any]) -> CameraSpec:
        """A camera from a drive log's ``meta.json`` ``rig.cameras[i]`` (intrinsics ``fx``, ``fy``,
        ``cx``, ``cy`` and the 4x4 ``vehicle_from_camera``). Square pixels with a centred principal
        point give the short form (``hfov_deg``), anything else keeps the full intrinsics; yaw,
        pitch and roll are recovered exactly from the mount rotation."""
        m = np.asarray(c["vehicle_from_camera"], dtype=np.float64) @ OPENCV_FROM_OPENGL
        yaw, pitch, roll = euler_zyx(m[:3, :3] @ VEHICLE_FROM_OPENCV.T)
        w, h = int(c["width"]), int(c["height"])
        fx, fy, cx, cy = (float(c[k]) for k in ("fx", "fy", "cx", "cy"))
        hfov = float(np.degrees(2 * np.arctan(0.5 * w / fx)))
        intr = None if (fy == fx and cx == w / 2.0 and cy == h / 2.0) else (fx, fy, cx, cy)
        return cls(str(c["name"]), w, h, hfov, (float(m[0, 3]), float(m[1, 3]), float(m[2, 3])), yaw, pitch, roll, intr)

    @classmethod
    def named(cls, name: str, width: int = 320, height: int = 192) -> CameraSpec:
        """A standard camera by name: ``front``, ``left``, ``right`` or ``rear``."""
        yaw = _CAMERA_YAWS[name]
        xyz = {"front": (1.5, 0.0, 1.6), "rear": (-1.5, 0.0, 1.6), "left": (0.5, 0.9, 1.6), "right": (0.5, -0.9, 1.6)}[name]
        return cls(name=name, width=width, height=height, mount_xyz=xyz, mount_yaw=yaw)


@dataclass(frozen=True)
class LidarSpec:
    """A spinning LiDAR: ``beams`` rows evenly spaced in elevation over ``vertical_fov_deg`` and
    ``azimuth_steps`` columns over 360 degrees. Range in metres.

    Attributes:
        mount_xyz: position in the vehicle frame, metres.
        mount_rpy: mount rotation (roll, pitch, yaw) in radians, ``Rz(yaw) @ Ry(pitch) @ Rx(roll)``
            (nuScenes' ``LIDAR_TOP`` is turned by about -pi/2: its x axis points to the right).
        firing: ``instant`` (every ray at the sweep's time stamp, from one pose) or ``spin_cw`` /
            ``spin_ccw`` (a head turning clockwise / counter-clockwise seen from above; a sweep
            lasts ``1 / rate_hz`` and **ends** at its time stamp, as nuScenes stamps ``LIDAR_TOP``).
        rate_hz: sweeps per second (the head's rotation rate when spinning).
        cut_azimuth_deg: sensor-frame azimuth (degrees, counter-clockwise from sensor x) where a
            spinning sweep starts and ends.
    """

    beams: int = 32
    azimuth_steps: int = 1024
    vertical_fov_deg: tuple[float, float] = (-25.0, 10.0)
    max_range_m: float = 80.0
    mount_xyz: tuple[float, float, float] = (0.0, 0.0, 1.9)
    mount_rpy: tuple[float, float, float] = (0.0, 0.0, 0.0)
    firing: str = "instant"
    rate_hz: float = 10.0
    cut_azimuth_deg: float = 180.0

    def __post_init__(self) -> None:
        if self.firing not in LIDAR_FIRING:
            raise ValueError(f"LiDAR firing must be one of {LIDAR_FIRING}, got {self.firing!r}")
        if not (math.isfinite(self.rate_hz) and self.rate_hz > 0):
            raise ValueError(f"LiDAR rate_hz must be a positive number, got {self.rate_hz!r}")

    @property
    def vehicle_from_lidar(self) -> NDArray[np.float64]:
        if self.mount_rpy == (0.0, 0.0, 0.0):
            return se3_matrix(np.eye(3), self.mount_xyz)
        r, p, y = self.mount_rpy
        return se3_matrix(rotation_zyx(y, p, r), self.mount_xyz)

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

    def rings(self) -> NDArray[np.int32]:
        """(beams,) ring index of each row of :meth:`ray_directions`: 0 is the **lowest** beam (the
        Velodyne / nuScenes numbering), so ``ring = beams - 1 - row``."""
        return (self.beams - 1 - np.arange(self.beams)).astype(np.int32)

    @property
    def period_us(self) -> int:
        """Duration of one sweep, microseconds."""
        return round(1e6 / self.rate_hz)

    def column_time_offsets_us(self) -> NDArray[np.int64]:
        """(azimuth_steps,) firing time of each column relative to the sweep's time stamp, in
        microseconds (<= 0): all zero for ``instant``; for a spinning head the column at the cut
        azimuth fires first (``-period_us``) and the sweep ends at the time stamp."""
        n = self.azimuth_steps
        if self.firing == "instant":
            return np.zeros(n, dtype=np.int64)
        az = np.arange(n) * (360.0 / n)
        rel = (self.cut_azimuth_deg - az) if self.firing == "spin_cw" else (az - self.cut_azimuth_deg)
        frac = np.mod(rel, 360.0) / 360.0
        return np.round((frac - 1.0) * self.period_us).astype(np.int64)

    def to_meta(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": "top",
            "beams": self.beams,
            "azimuth_steps": self.azimuth_steps,
            "vertical_fov_deg": list(self.vertical_fov_deg),
            "max_range_m": self.max_range_m,
            "vehicle_from_lidar": np.round(self.vehicle_from_lidar, 9).tolist(),
        }
        if self.firing != "instant":
            d.update(firing=self.firing, rate_hz=self.rate_hz, cut_azimuth_deg=self.cut_azimuth_deg)
        return d

    @classmethod
    def from_meta(cls, li: dict[str, Any]) -> LidarSpec:
        """A LiDAR from a drive log's ``meta.json`` ``rig.lidar`` (the firing keys are optional:
        absent means ``instant``)."""
        m = np.asarray(li["vehicle_from_lidar"], dtype=np.float64)
        y, p, r = euler_zyx(m[:3, :3])
        rpy = (0.0, 0.0, 0.0) if np.allclose(m[:3, :3], np.eye(3), atol=0.0, rtol=0.0) else (r, p, y)
        return cls(int(li["beams"]), int(li["azimuth_steps"]), tuple(float(v) for v in li["vertical_fov_deg"]),  # type: ignore[arg-type]
                   float(li["max_range_m"]), (float(m[0, 3]), float(m[1, 3]), float(m[2, 3])), rpy,
                   str(li.get("firing", "instant")), float(li.get("rate_hz", 10.0)), float(li.get("cut_azimuth_deg", 180.0)))


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
        """Rebuild a rig from a drive log's ``meta.json`` ``rig``: cameras with their full
        intrinsics and mount rotation, the LiDAR with its mount and firing model."""
        cams = tuple(CameraSpec.from_meta(c) for c in rig["cameras"])
        lidar = LidarSpec.from_meta(rig["lidar"]) if rig.get("lidar") else None
        return cls(cams, lidar)


def default_rig(cameras: tuple[str, ...] = ("front",), width: int = 320, height: int = 192, beams: int = 32, azimuth_steps: int = 1024) -> SensorRig:
    """The standard rig: named cameras at ``width`` x ``height`` and a ``beams`` x ``azimuth_steps`` LiDAR."""
    return SensorRig(tuple(CameraSpec.named(n, width, height) for n in cameras), LidarSpec(beams=beams, azimuth_steps=azimuth_steps))
