"""A geometric safety check of ``sensor_policy``'s plan against the LiDAR obstacle raster (the
planner parameter ``safety_decel``; off by default), in the spirit of UniAD's collision-aware
post-processing: the network plans, the check only slows the plan down where it would run into
what the sensor sees.

The plan's path (the origin then the K waypoints, ego frame, metres) is compared with the raster's
obstacle cells (channel 0, returns 0.3-3 m above the ground; a cell counts from ``min_returns``
returns). A cell *blocks* the path when it lies ahead of the ego's front and within
``half_width_m`` of the path; the free length along the path is the arc length of the first
blocking cell minus the ego's front overhang and ``margin_m``. The world is taken as static (one
sweep has no velocities), so the check is a braking envelope, not a forecast: the plan's speed
along its path is capped at ``sqrt(2 * decel * (free - s))``, the speed from which braking at
``decel`` m/s² stops at the free length, and the waypoints are re-timed along the same path. A
plan that already steers around the obstacle (its path clear of the cells) is left alone.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from agents.sensor_policy_data import RasterGeometry

__all__ = ["free_length", "slow_for_obstacles"]


def _arc(wp: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The polyline origin -> waypoints (K + 1, 2) and the arc length (m) at each of its points."""
    pts = np.vstack([[0.0, 0.0], wp])
    seg = np.diff(pts, axis=0)
    return pts, np.concatenate([[0.0], np.cumsum(np.hypot(seg[:, 0], seg[:, 1]))])


def _densify(wp: NDArray[np.float64], step_m: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Points every ``step_m`` along the polyline origin -> waypoints, and their arc lengths (m)."""
    pts, cum = _arc(wp)
    total = float(cum[-1])
    s = np.arange(0.0, total + 1e-9, step_m) if total > 0 else np.zeros(1)
    x = np.interp(s, cum, pts[:, 0])
    y = np.interp(s, cum, pts[:, 1])
    return np.stack([x, y], axis=1), s


def free_length(wp: NDArray[np.float64], raster: NDArray[np.uint8], geom: RasterGeometry, *, half_width_m: float = 1.4,
                front_m: float = 2.3, margin_m: float = 1.0, min_returns: int = 2) -> float:  # fmt: skip
    """Metres the ego can drive along the plan ``wp`` ((K, 2) ego frame, m) before its front comes
    within ``margin_m`` of an obstacle cell of ``raster`` that lies within ``half_width_m`` of the
    path (``inf`` when none does). Cells beside or behind the ego's own box are ignored."""
    occ = raster[..., 0].ravel() >= min(255, round(255 * min_returns / 4))
    if not occ.any():
        return math.inf
    fwd, left = geom.pixel_centres()
    ox, oy = fwd[occ], left[occ]
    ahead = ox > front_m
    ox, oy = ox[ahead], oy[ahead]
    if len(ox) == 0:
        return math.inf
    path, s = _densify(np.asarray(wp, np.float64), 0.25)
    d2 = (ox[:, None] - path[None, :, 0]) ** 2 + (oy[:, None] - path[None, :, 1]) ** 2
    j = np.argmin(d2, axis=1)
    hit = d2[np.arange(len(ox)), j] < half_width_m**2
    if not hit.any():
        return math.inf
    return max(0.0, float(s[j[hit]].min()) - front_m - margin_m)


def slow_for_obstacles(wp: NDArray[np.float64], t_s: NDArray[np.float64], raster: NDArray[np.uint8],
                       geom: RasterGeometry, decel: float) -> NDArray[np.float64]:  # fmt: skip
    """The plan ``wp`` ((K, 2) m at times ``t_s``) re-timed along its own path so that its speed
    never exceeds ``sqrt(2 * decel * (free - s))`` (:func:`free_length`), never passing the free
    length. Unchanged when nothing blocks the path or ``decel`` <= 0."""
    wp = np.asarray(wp, np.float64)
    if decel <= 0:
        return wp
    free = free_length(wp, raster, geom)
    if not math.isfinite(free):
        return wp
    path, s_path = _densify(wp, 0.25)
    total = float(s_path[-1])
    # the plan's own arc length at each waypoint time, and the capped profile integrated finely
    s_plan = _arc(wp)[1]
    t_plan = np.concatenate([[0.0], np.asarray(t_s, np.float64)])
    dt = 0.02
    ts = np.arange(0.0, float(t_plan[-1]) + 1e-9, dt)
    v_plan = np.gradient(np.interp(ts, t_plan, s_plan), dt)
    out_s = np.empty(len(ts))
    cur = 0.0
    for i in range(len(ts)):
        out_s[i] = cur
        v_cap = math.sqrt(2.0 * decel * max(free - cur, 0.0))
        cur = max(cur, min(cur + dt * max(0.0, min(v_plan[i], v_cap)), total, free))
    s_new = np.minimum(np.interp(t_s, ts, out_s), s_plan[1:])
    return np.stack([np.interp(s_new, s_path, path[:, 0]), np.interp(s_new, s_path, path[:, 1])], axis=1)
