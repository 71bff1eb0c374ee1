"""Motion-compensated LiDAR rays: every return is a ray from where the sensor was when it fired.

A drive log stores a sweep's returns as **world** points (each where the surface was hit) with
the sensor pose at the sweep's time stamp (``sensor_to_world``); a spinning LiDAR
(``lidar/<i>.extra.npy``: per-point ``dt_us``, firing time minus the stamp, <= 0) fired them over a
whole rotation while the ego moved. The reconstructor therefore casts each return's ray from the
sensor's position **at its firing time** -- the stamped pose moved by the ego's own motion between
the two times, ``S(t) = E(t) E(t_stamp)^-1 S(t_stamp)``, with the ego pose ``E`` interpolated on
the ego track (x, y, z linearly, yaw on the circle) -- and its range is the distance from there.
Without per-point times (``instant`` LiDARs, older logs) every ray starts at the stamped pose, as
before.

Rays are binned into the (beam, column) grid of the rig's LiDAR by the direction at which they
left the sensor at their firing time (:func:`compensated_ray_grid`). A moving actor's returns are
compared with the actor where it was when they were fired: each sweep's rays are split into
:data:`TIME_BINS` equal slices of the rotation, each with its own actor poses
(:func:`time_bin`, :func:`bin_times_us`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from sim.log import Track
from sim.sensors import LidarSpec

__all__ = ["TIME_BINS", "bin_times_us", "compensated_ray_grid", "ego_se3_at", "sensor_poses_at", "time_bin"]

#: slices of a spinning sweep with their own actor poses (an actor at 10 m/s moves 6 cm within one
#: slice of a 20 Hz sweep)
TIME_BINS = 4


def ego_se3_at(ego: Track, t_us: NDArray[np.integer] | NDArray[np.floating]) -> NDArray[np.float64]:
    """(N, 4, 4) world-from-ego of the ego track at times ``t_us`` (N,): x, y, z linearly
    interpolated and yaw unwrapped then interpolated; clamped to the track's ends."""
    t = np.asarray(ego.t_us, dtype=np.float64)
    tq = np.clip(np.asarray(t_us, dtype=np.float64).reshape(-1), t[0], t[-1])
    p = np.asarray(ego.pose, dtype=np.float64)
    x, y, z = (np.interp(tq, t, p[:, k]) for k in range(3))
    yaw = np.interp(tq, t, np.unwrap(p[:, 3]))
    c, s = np.cos(yaw), np.sin(yaw)
    out = np.tile(np.eye(4), (len(tq), 1, 1))
    out[:, 0, 0], out[:, 0, 1], out[:, 1, 0], out[:, 1, 1] = c, -s, s, c
    out[:, 0, 3], out[:, 1, 3], out[:, 2, 3] = x, y, z
    return out


def sensor_poses_at(ego: Track, s2w_stamp: NDArray[np.floating], t_stamp_us: int, t_us: NDArray[np.floating]) -> NDArray[np.float64]:
    """(N, 4, 4) sensor-to-world at times ``t_us``: the stamped pose moved by the ego's motion
    from ``t_stamp_us`` (see the module docstring)."""
    e_t = ego_se3_at(ego, t_us)
    e_s = ego_se3_at(ego, np.array([t_stamp_us]))[0]
    return e_t @ (np.linalg.inv(e_s) @ np.asarray(s2w_stamp, dtype=np.float64))


def time_bin(dt_us: NDArray[np.floating], spec: LidarSpec) -> NDArray[np.uint8]:
    """Time slice (0 .. bins-1) of rays fired ``dt_us`` (<= 0) before their sweep's stamp."""
    if spec.firing == "instant":
        return np.zeros(np.shape(dt_us), np.uint8)
    per = float(spec.period_us)
    return np.clip(np.floor((np.asarray(dt_us, dtype=np.float64) + per) / per * TIME_BINS), 0, TIME_BINS - 1).astype(np.uint8)


def bin_times_us(t_stamp_us: int, spec: LidarSpec) -> NDArray[np.int64]:
    """Time (us) of each slice of a sweep stamped ``t_stamp_us``: the slice's middle (one slice, the
    stamp, for an ``instant`` LiDAR)."""
    if spec.firing == "instant":
        return np.array([t_stamp_us], np.int64)
    per = float(spec.period_us)
    return np.round(t_stamp_us - per + (np.arange(TIME_BINS) + 0.5) * per / TIME_BINS).astype(np.int64)


def compensated_ray_grid(spec: LidarSpec, s2w: NDArray[np.floating], pts_world: NDArray[np.floating], s2w_points: NDArray[np.floating] | None = None,
                         dt_points: NDArray[np.floating] | None = None) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """The full (beam, column) ray grid of one sweep with per-return sensor poses.

    Args:
        s2w: (4, 4) the sweep's stamped sensor pose. pts_world: (N, 4) world x, y, z (m), intensity.
        s2w_points: (N, 4, 4) the sensor pose at each return's firing time (None: all at ``s2w``).
        dt_points: (N,) each return's firing time minus the stamp (us; None: the column's nominal).

    Returns:
        dirs (B*Az, 3) unit directions in the **stamped** sensor frame (rotate by ``s2w`` for the
        world; the exact return direction where there is a return), range (B*Az,) m from the
        firing-time origin (0 = dropped), intensity (B*Az,), origin offset (B*Az, 3) world m of the
        firing-time origin from ``s2w``'s (0 for dropped rays) and ``dt_us`` (B*Az,) firing time
        minus the stamp (the column's nominal time for dropped rays).
    """
    B, Az = spec.beams, spec.azimuth_steps
    s2w = np.asarray(s2w, dtype=np.float64)
    dirs = spec.ray_directions().reshape(-1, 3).astype(np.float32)
    rng = np.zeros(B * Az, np.float32)
    inten = np.zeros(B * Az, np.float32)
    off = np.zeros((B * Az, 3), np.float32)
    col_dt = np.tile(spec.column_time_offsets_us().astype(np.float32), B)
    dt_out = col_dt.copy()
    if not len(pts_world):
        return dirs, rng, inten, off, dt_out
    pw = np.asarray(pts_world[:, :3], dtype=np.float64)
    if s2w_points is None:
        o = np.broadcast_to(s2w[:3, 3], pw.shape)
        rot = np.broadcast_to(s2w[:3, :3], (len(pw), 3, 3))
    else:
        o, rot = s2w_points[:, :3, 3], s2w_points[:, :3, :3]
    v = pw - o
    r = np.linalg.norm(v, axis=1)
    ok = r > 1e-3
    v, r, o, rot, it = v[ok], r[ok], o[ok], rot[ok], pts_world[ok, 3]
    dtp = None if dt_points is None else np.asarray(dt_points, dtype=np.float32)[ok]
    p_fire = np.einsum("nji,nj->ni", rot, v)  # R^T v: the direction it left the sensor, firing frame
    el = np.degrees(np.arcsin(np.clip(p_fire[:, 2] / r, -1, 1)))
    lo, hi = spec.vertical_fov_deg
    row = np.rint((hi - el) / (hi - lo) * (B - 1)).astype(np.int64) if B > 1 else np.zeros(len(r), np.int64)
    az = np.arctan2(p_fire[:, 1], p_fire[:, 0]) % (2 * np.pi)
    col = np.rint(az / (2 * np.pi / Az)).astype(np.int64) % Az
    keep = (row >= 0) & (row < B)
    k = row[keep] * Az + col[keep]
    order = np.argsort(-r[keep], kind="stable")  # several returns in one cell: the nearest wins
    k = k[order]
    rr = r[keep][order]
    d_stamp = (v[keep][order] / rr[:, None]) @ s2w[:3, :3]  # R_stamp^T d
    rng[k] = rr
    inten[k] = it[keep][order]
    dirs[k] = d_stamp.astype(np.float32)
    off[k] = (o[keep][order] - s2w[:3, 3]).astype(np.float32)
    if dtp is not None:
        dt_out[k] = dtp[keep][order]
    return dirs, rng, inten, off, dt_out
