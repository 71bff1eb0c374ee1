"""An analytic LiDAR model: the ego's spinning LiDAR ray-cast against the other actors' 3D boxes
over a flat ground, no static scenery (:func:`simulate_lidar`). The episode driver's ``lidar``
observation when no render backend is wired, and a fast sensor for tests.

Frames: the LiDAR *sensor* frame is the vehicle frame (x forward, y left, z up) shifted by the
mount position (``LidarSpec.mount_xyz``); the vehicle frame's origin is the ego box's bottom centre.
World frame z up. Metres, radians. The output is the env's ``lidar`` range image
(``sim.observations.LidarObservation``): float32 (beams, azimuth_steps, 2), channel 0 range in
metres (0 = no return), channel 1 intensity; rays as :meth:`sim.sensors.LidarSpec.ray_directions`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sim.sensors import LidarSpec

__all__ = ["simulate_lidar"]


def simulate_lidar(world: Any, spec: LidarSpec, *, ground_z: float = 0.0) -> NDArray[np.float32]:
    """Ray-cast a spinning LiDAR mounted on the ego (row 0 of ``world``) against the other actors'
    3D boxes (from z to z + height) and a flat ground at ``ground_z``; no static scenery.

    Returns the ``lidar`` observation in the env's layout: a (beams, azimuth_steps, 2) float32 range
    image, range in metres (0 = nothing within ``max_range_m``) and intensity (0.3 ground, 0.6
    actors)."""
    dirs = spec.ray_directions().reshape(-1, 3)  # sensor frame == vehicle axes
    ex, ey, eyaw = float(world.x[0]), float(world.y[0]), float(world.yaw[0])
    ez = float(getattr(world, "z", np.zeros(1))[0])
    mx, my, mz = spec.mount_xyz
    c, s = math.cos(eyaw), math.sin(eyaw)
    o = np.array([ex + c * mx - s * my, ey + s * mx + c * my, ez + mz])
    dw = np.stack([c * dirs[:, 0] - s * dirs[:, 1], s * dirs[:, 0] + c * dirs[:, 1], dirs[:, 2]], axis=-1)
    R = len(dirs)
    t_best = np.full(R, np.inf)
    inten = np.zeros(R, np.float32)
    down = dw[:, 2] < -1e-6
    tg = np.where(down, (ground_z - o[2]) / np.where(down, dw[:, 2], -1.0), np.inf)
    t_best = np.minimum(t_best, tg)
    inten[np.isfinite(tg)] = 0.3
    valid = np.asarray(world.valid, bool).copy()
    valid[0] = False
    # only actors that can be within range
    reach = np.hypot(np.asarray(world.x) - o[0], np.asarray(world.y) - o[1]) - 0.5 * np.hypot(world.length, world.width)
    valid &= reach <= spec.max_range_m
    idx = np.flatnonzero(valid)
    if len(idx):
        ax = np.asarray(world.x)[idx]
        ay = np.asarray(world.y)[idx]
        az = np.asarray(getattr(world, "z", np.zeros(len(world.x))))[idx]
        ayaw = np.asarray(world.yaw)[idx]
        hl = np.asarray(world.length)[idx] / 2
        hw = np.asarray(world.width)[idx] / 2
        hh = np.asarray(world.height)[idx]
        ca, sa = np.cos(ayaw), np.sin(ayaw)
        # ray origin and direction in each box frame (A actors): (A,) and (R, A)
        ox = ca * (o[0] - ax) + sa * (o[1] - ay)
        oy = -sa * (o[0] - ax) + ca * (o[1] - ay)
        oz = o[2] - az
        dx = dw[:, 0:1] * ca[None] + dw[:, 1:2] * sa[None]
        dy = -dw[:, 0:1] * sa[None] + dw[:, 1:2] * ca[None]
        dz = np.broadcast_to(dw[:, 2:3], dx.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_near = np.full(dx.shape, -np.inf)
            t_far = np.full(dx.shape, np.inf)
            for oc, dc, lo, hi in ((ox, dx, -hl, hl), (oy, dy, -hw, hw), (oz, dz, 0.0 * hh, hh)):
                inv = 1.0 / dc
                t1 = (lo[None] - oc[None]) * inv
                t2 = (hi[None] - oc[None]) * inv
                par = np.abs(dc) < 1e-12
                inside = (oc[None] >= lo[None]) & (oc[None] <= hi[None])
                # a ray parallel to a slab: inside it -> no constraint, outside -> no hit
                t1 = np.where(par, np.where(inside, -np.inf, np.inf), t1)
                t2 = np.where(par, np.inf, t2)
                t_near = np.maximum(t_near, np.minimum(t1, t2))
                t_far = np.minimum(t_far, np.maximum(t1, t2))
        hit = (t_near <= t_far) & (t_near > 0.05)
        ta = np.where(hit, t_near, np.inf).min(axis=1)
        closer = ta < t_best
        t_best = np.where(closer, ta, t_best)
        inten[closer] = 0.6
    ok = t_best <= spec.max_range_m
    out = np.zeros((R, 2), np.float32)
    out[ok, 0] = t_best[ok]
    out[ok, 1] = inten[ok]
    return out.reshape(spec.beams, spec.azimuth_steps, 2)
