"""Sensor rigs of the synthetic town and when each sensor fires.

Two rigs:

* ``default``: the named cameras (``front``, ``left``, ``right``, ``rear``) and an instant-firing
  LiDAR, every sensor once per scene frame (all at the frame's time stamp);
* ``nuscenes``: nuScenes' six cameras and ``LIDAR_TOP`` (:func:`nuscenes_rig`,
  :func:`nuscenes_schedule`). Cameras ``CAM_FRONT``, ``CAM_FRONT_LEFT``, ``CAM_FRONT_RIGHT``,
  ``CAM_BACK``, ``CAM_BACK_LEFT``, ``CAM_BACK_RIGHT`` at nuScenes-like calibration (mount yaws 0,
  +-55, 180, +-110 degrees, focal lengths and principal points of nuScenes' 1600x900 cameras with
  distinct ``fx`` / ``fy`` and a small pitch and roll each), images at ``scale`` x 1600x900, 12 Hz
  each. ``LIDAR_TOP``: 32 beams (+10.67 to -30.67 degrees, as an HDL-32E), 20 Hz, turned by -90
  degrees about z like nuScenes' (x to the right, y forward), spinning clockwise seen from above
  with the sweep starting and ending behind the vehicle; each column fires at its own time from
  the sensor pose at that time (:func:`lidar_motion`), and a sweep is stamped at its end. As in
  nuScenes, a camera's exposure is triggered when the LiDAR sweeps across the centre of its field
  of view: in key-frame sweeps (every tenth, 2 Hz) each camera's key frame lies inside the sweep,
  ``CAM_FRONT`` half a sweep (25 ms) before the LiDAR time stamp, ``CAM_BACK`` at the sweep's start.

Mount positions are nuScenes' (metres, in loopdrive's vehicle frame: x forward, y left, z up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sim.sensors import CameraSpec, LidarSpec, SensorRig

__all__ = [
    "NUSCENES_CAMERAS",
    "RIGS",
    "SensorSchedule",
    "camera_trigger_offset_us",
    "frame_schedule",
    "lidar_motion",
    "nuscenes_rig",
    "nuscenes_schedule",
    "track_poses",
]

#: rig names of ``loopdrive synth --rig``
RIGS = ("default", "nuscenes")

#: nuScenes camera calibration at 1600x900: name -> (mount xyz (m), yaw, pitch, roll (deg), fx, fy, cx, cy (px))
NUSCENES_CAMERAS: dict[str, tuple[tuple[float, float, float], float, float, float, float, float, float, float]] = {
    "CAM_FRONT": ((1.70079, 0.01594, 1.51095), 0.0, 0.55, 0.25, 1266.417, 1262.906, 816.267, 491.507),
    "CAM_FRONT_RIGHT": ((1.55084, -0.49340, 1.49574), -55.0, 0.40, -0.35, 1260.847, 1264.518, 807.968, 495.335),
    "CAM_FRONT_LEFT": ((1.52387, 0.49463, 1.50932), 55.0, 0.62, 0.45, 1272.598, 1268.911, 826.616, 479.751),
    "CAM_BACK": ((0.02832, 0.00345, 1.57910), 180.0, 0.35, -0.20, 809.221, 806.874, 829.219, 481.773),
    "CAM_BACK_LEFT": ((1.03569, 0.48480, 1.59097), 110.0, 0.48, 0.30, 1256.748, 1253.075, 792.113, 492.776),
    "CAM_BACK_RIGHT": ((1.04852, -0.48305, 1.56238), -110.0, 0.52, -0.40, 1259.514, 1262.688, 807.252, 501.196),
}
NUSCENES_IMAGE = (1600, 900)
NUSCENES_CAMERA_HZ = 12.0
NUSCENES_LIDAR_HZ = 20.0
NUSCENES_KEYFRAME_HZ = 2.0


def nuscenes_rig(scale: float = 0.2, *, cameras: tuple[str, ...] | None = None, beams: int = 32, azimuth_steps: int = 1024) -> SensorRig:
    """The nuScenes rig with images of ``scale`` x 1600x900 (0.2 -> 320x180; intrinsics scaled by
    the exact size ratios) and a ``beams`` x ``azimuth_steps`` spinning ``LIDAR_TOP`` at 20 Hz.

    Raises:
        ValueError: a non-positive scale or an unknown camera name.
    """
    if not (math.isfinite(scale) and 0 < scale <= 4):
        raise ValueError(f"expected an image scale in (0, 4], got {scale!r}")
    names = tuple(NUSCENES_CAMERAS) if cameras is None else cameras
    cams = []
    for n in names:
        if n not in NUSCENES_CAMERAS:
            raise ValueError(f"unknown nuScenes camera {n!r}; known: {', '.join(NUSCENES_CAMERAS)}")
        xyz, yaw, pitch, roll, fx, fy, cx, cy = NUSCENES_CAMERAS[n]
        full = CameraSpec(n, NUSCENES_IMAGE[0], NUSCENES_IMAGE[1], float(np.degrees(2 * np.arctan(800.0 / fx))), xyz,
                          math.radians(yaw), math.radians(pitch), math.radians(roll), (fx, fy, cx, cy))
        cams.append(full.scaled(scale))
    lidar = LidarSpec(beams=beams, azimuth_steps=azimuth_steps, vertical_fov_deg=(-30.67, 10.67), max_range_m=70.0,
                      mount_xyz=(0.943713, 0.0, 1.84023), mount_rpy=(0.0, 0.0, -math.pi / 2), firing="spin_cw",
                      rate_hz=NUSCENES_LIDAR_HZ, cut_azimuth_deg=-90.0)
    return SensorRig(tuple(cams), lidar)


@dataclass(frozen=True)
class SensorSchedule:
    """When each sensor of a rig fires, microseconds from the log's start.

    Attributes:
        cameras: camera name -> (F,) int64 exposure times (increasing).
        lidar: (S,) int64 sweep time stamps (the end of each sweep for a spinning LiDAR).
        camera_hz, lidar_hz: the nominal rates written to ``meta.json``.
    """

    cameras: dict[str, NDArray[np.int64]]
    lidar: NDArray[np.int64]
    camera_hz: float
    lidar_hz: float

    def events(self) -> list[tuple[int, int, str]]:
        """(t_us, order, sensor) for every capture in time order; ``sensor`` is a camera name or
        ``""`` for the LiDAR (which comes first at equal times)."""
        ev = [(int(t), 0, "") for t in self.lidar]
        for k, (name, ts) in enumerate(self.cameras.items()):
            ev += [(int(t), 1 + k, name) for t in ts]
        return sorted(ev)


def frame_schedule(t_us: NDArray[np.int64], rig: SensorRig, rate_hz: float) -> SensorSchedule:
    """Every sensor at every frame time (the ``default`` rig)."""
    t = np.asarray(t_us, dtype=np.int64)
    return SensorSchedule({c.name: t.copy() for c in rig.cameras}, t.copy() if rig.lidar is not None else np.zeros(0, np.int64), rate_hz, rate_hz)


def camera_trigger_offset_us(cam: CameraSpec, lidar: LidarSpec) -> int:
    """When (relative to the sweep's time stamp, <= 0) the spinning LiDAR crosses the centre of
    ``cam``'s field of view (the optical axis' azimuth in the LiDAR frame)."""
    if lidar.firing == "instant":
        return 0
    fwd = cam.vehicle_from_camera[:3, :3] @ np.array([0.0, 0.0, -1.0])  # OpenGL looks along -z
    d = lidar.vehicle_from_lidar[:3, :3].T @ fwd
    az = math.degrees(math.atan2(d[1], d[0])) % 360.0
    rel = (lidar.cut_azimuth_deg - az) if lidar.firing == "spin_cw" else (az - lidar.cut_azimuth_deg)
    frac = (rel % 360.0) / 360.0
    return round((frac - 1.0) * lidar.period_us)


def nuscenes_schedule(t_end_us: int, rig: SensorRig, camera_hz: float = NUSCENES_CAMERA_HZ) -> SensorSchedule:
    """Sweeps every ``1 / rate_hz`` stamped at their end (the first covers [0, period]), cameras at
    ``camera_hz`` each with its own phase: frame ``j`` of a camera is exposed at ``j / camera_hz``
    after the first sweep's crossing of its field of view, so every sixth frame (2 Hz) falls in
    every tenth sweep exactly when the LiDAR crosses the camera's centre. Only captures (and sweep
    starts) within [0, ``t_end_us``] are kept."""
    li = rig.lidar
    if li is None:
        raise ValueError("the nuScenes schedule needs a LiDAR in the rig")
    period = li.period_us
    sweeps = np.arange(period, t_end_us + 1, period, dtype=np.int64)
    cams: dict[str, NDArray[np.int64]] = {}
    n = int(t_end_us * camera_hz / 1e6) + 2
    for c in rig.cameras:
        first = period + camera_trigger_offset_us(c, li)
        t = first + np.round(np.arange(n) * (1e6 / camera_hz)).astype(np.int64)
        cams[c.name] = t[(t >= 0) & (t <= t_end_us)]
    return SensorSchedule(cams, sweeps, camera_hz, li.rate_hz)


def track_poses(tracks: Any, t_us: NDArray[np.int64]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """(T, N, 4) poses x, y, z, yaw and (T, N) validity of ``tracks`` (a sequence of
    :class:`sim.log.Track`) at times ``t_us``: the same interpolation as :meth:`Track.pose_at`,
    vectorised over time."""
    t_us = np.asarray(t_us, dtype=np.int64)
    pose = np.zeros((len(t_us), len(tracks), 4))
    valid = np.zeros((len(t_us), len(tracks)), dtype=bool)
    for k, tr in enumerate(tracks):
        t = tr.t_us
        ok = (t_us >= t[0]) & (t_us <= t[-1])
        if not ok.any():
            continue
        tq = t_us[ok]
        i = np.searchsorted(t, tq, side="right") - 1
        last = (i >= len(t) - 1) | (t[np.minimum(i, len(t) - 1)] == tq)
        i0 = np.minimum(i, len(t) - 1)
        i1 = np.minimum(i + 1, len(t) - 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            a = np.where(last, 0.0, (tq - t[i0]) / np.maximum(t[i1] - t[i0], 1).astype(np.float64))
        p0, p1 = tr.pose[i0], tr.pose[i1]
        out = p0 + a[:, None] * (p1 - p0)
        dyaw = (p1[:, 3] - p0[:, 3] + np.pi) % (2 * np.pi) - np.pi
        out[:, 3] = p0[:, 3] + a * dyaw
        out[last] = tr.pose[i0[last]]
        pose[ok, k] = out
        valid[ok, k] = True
    return pose, valid


def lidar_motion(ego: Any, tracks: Any, spec: LidarSpec, t_us: int) -> Any:
    """The :class:`sim.render.mesh_lidar.LidarMotion` of the sweep stamped ``t_us``: sensor and
    actor poses at each column's firing time (``t_us + spec.column_time_offsets_us()``); world
    rows are the ego then ``tracks`` (as :func:`sim.synth.scene.world_from_tracks`)."""
    from sim.render.mesh_lidar import LidarMotion

    times = int(t_us) + spec.column_time_offsets_us()
    pose, valid = track_poses((ego, *tracks), times)
    e = pose[:, 0]
    c, s = np.cos(e[:, 3]), np.sin(e[:, 3])
    w2v = np.zeros((len(times), 4, 4))
    w2v[:, 0, 0], w2v[:, 0, 1], w2v[:, 1, 0], w2v[:, 1, 1] = c, -s, s, c
    w2v[:, 2, 2] = w2v[:, 3, 3] = 1.0
    w2v[:, :3, 3] = e[:, :3]
    s2w = w2v @ spec.vehicle_from_lidar
    ref_pose, _ = track_poses((ego,), np.array([t_us], np.int64))
    rp = ref_pose[0, 0]
    cr, sr = np.cos(rp[3]), np.sin(rp[3])
    ref = np.array([[cr, -sr, 0.0, rp[0]], [sr, cr, 0.0, rp[1]], [0.0, 0.0, 1.0, rp[2]], [0.0, 0.0, 0.0, 1.0]]) @ spec.vehicle_from_lidar
    return LidarMotion(times, s2w, pose, valid, ref)
