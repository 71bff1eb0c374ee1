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

**Prediction** (planner parameter ``safety_predict_s``, s; off by default): one sweep cannot show a
car coming *across* the path, so :func:`predicted_free_length` also takes the obstacles the
project's LiDAR perception tracks (:class:`agents.perception.LidarPerception`: clustering + alpha-beta
tracking, the same as ``lidar_stack``), moves each moving one at constant velocity over the
horizon, and drives the ego's footprint along the plan as timed (its path, heading along the
path, extrapolated at the last waypoint's speed past the plan's end). When the ego at time t
overlaps a track at a time within ``time_margin_s`` of t, the plan is in conflict with it: the
free length becomes the first arc length at which the ego's footprint touches the track's
swept region over the horizon (where it crosses the path, or its current position for a car
ahead in the lane), less ``margin_m``, and the same braking envelope applies. A car moving away,
or one that crosses before or after the ego (more than ``time_margin_s`` apart), is left alone, and
so is a crossing track whose way the ego is already in (it clears it by driving on). Tracks need
``PREDICT_MIN_HITS`` detections first.
The overlap test is the project's one box-contact test (:mod:`sim.safety`), the ego's box grown
by ``pad_m`` on every side.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agents.sensor_policy_data import RasterGeometry
from sim.safety import contact_interval, in_contact

__all__ = ["PREDICT_MAX_RANGE_M", "PREDICT_MIN_HITS", "PREDICT_MIN_SPEED", "PREDICT_ROAD_MARGIN_M", "free_length", "predicted_free_length", "slow_for_obstacles", "tracks_in_ego_frame"]

#: LiDAR points this far off the drivable area (m) still make tracks: a car coming out of a
#: driveway or a yard is off the road until shortly before it crosses the path
PREDICT_ROAD_MARGIN_M = 12.0
#: LiDAR points beyond this range (m) are not tracked
PREDICT_MAX_RANGE_M = 50.0
#: tracks slower than this (m/s) are left to the raster check: the centroid of a parked car's visible
#: side drifts as the ego drives past, which the tracker reads as up to about 1.5 m/s
PREDICT_MIN_SPEED = 2.0
#: tracks confirmed by fewer detections are not predicted: a fragment of a wall or a hedge seen from
#: a new angle makes a short-lived track with a made-up velocity
PREDICT_MIN_HITS = 5
#: a track whose velocity points back at the ego within this cosine is head-on (braking for it
#: lowers the impact speed even once the ego is in its way)
_HEAD_ON_COS = 0.7
#: tracks longer / wider than this (m) are not road users (a building facade, a wall)
_MAX_TRACK_LENGTH_M, _MAX_TRACK_WIDTH_M = 8.0, 3.5


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
                       geom: RasterGeometry, decel: float, *, free_cap: float = math.inf) -> NDArray[np.float64]:  # fmt: skip
    """The plan ``wp`` ((K, 2) m at times ``t_s``) re-timed along its own path so that its speed
    never exceeds ``sqrt(2 * decel * (free - s))`` (``free``: the smaller of :func:`free_length`
    and ``free_cap``, m, e.g. :func:`predicted_free_length`), never passing the free length.
    Unchanged when nothing blocks the path or ``decel`` <= 0."""
    wp = np.asarray(wp, np.float64)
    if decel <= 0:
        return wp
    free = min(free_length(wp, raster, geom), free_cap)
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


# ------------------------------------------------------------------------------ prediction
def tracks_in_ego_frame(actors: Any, ego_xy: NDArray[np.float64], ego_yaw: float,
                        min_speed: float = PREDICT_MIN_SPEED) -> dict[str, NDArray[np.float64]]:  # fmt: skip
    """The moving tracks of an :class:`agents.planners.common.ActorsView` (world frame, as
    :class:`agents.perception.LidarPerception` returns them) in the ego frame at plan time:
    ``xy`` (N, 2) m, ``vel`` (N, 2) m/s, ``yaw`` (N,) rad, ``length``, ``width`` (N,) m. Tracks
    slower than ``min_speed`` m/s or larger than a vehicle are dropped (the raster check covers
    what stands still)."""
    c, s = math.cos(ego_yaw), math.sin(ego_yaw)
    rot = np.array([[c, s], [-s, c]])  # world -> ego
    vel = actors.vel() if actors.n else np.zeros((0, 2))
    keep = (np.hypot(vel[:, 0], vel[:, 1]) >= min_speed) & (actors.length <= _MAX_TRACK_LENGTH_M) & (actors.width <= _MAX_TRACK_WIDTH_M)
    xy = (np.asarray(actors.xy, np.float64)[keep] - np.asarray(ego_xy, np.float64)[None]) @ rot.T
    return {"xy": xy, "vel": vel[keep] @ rot.T, "yaw": np.asarray(actors.yaw, np.float64)[keep] - ego_yaw,
            "length": np.asarray(actors.length, np.float64)[keep], "width": np.asarray(actors.width, np.float64)[keep]}  # fmt: skip


def _overlap(ego_xy: NDArray[np.float64], ego_yaw: NDArray[np.float64], ego_size: tuple[float, float], trk_xy: NDArray[np.float64],
             trk_yaw: float, trk_size: tuple[float, float]) -> NDArray[np.bool_]:  # fmt: skip
    """Whether the ego box at each of its poses (E, 2) / (E,) overlaps the track's box at each of
    its positions (P, 2) (heading ``trk_yaw``): (E, P) bool, by the project's one box-contact test
    (:func:`sim.safety.contact_interval` at zero speed)."""
    e, n = len(ego_xy), len(trk_xy)
    zero_e, zero_a = np.zeros(e), np.zeros((e, n))
    actors = (np.broadcast_to(trk_xy[None, :, 0], (e, n)).copy(), np.broadcast_to(trk_xy[None, :, 1], (e, n)).copy(),
              np.full((e, n), float(trk_yaw)), zero_a)  # fmt: skip
    first, _ = contact_interval((ego_xy[:, 0].copy(), ego_xy[:, 1].copy(), ego_yaw.astype(np.float64), zero_e), ego_size, actors,
                                (np.full(n, float(trk_size[0])), np.full(n, float(trk_size[1]))), np.ones((e, n), bool))  # fmt: skip
    return in_contact(first)


def _ego_along(wp: NDArray[np.float64], t_s: NDArray[np.float64], times: NDArray[np.float64],
               step_m: float) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:  # fmt: skip
    """The plan's path sampled every ``step_m`` (points (S, 2), headings (S,), arc lengths (S,)),
    extended straight on past the last waypoint, and the arc length (T,) at each of ``times`` (s)
    (the plan's timing, then its last segment's speed)."""
    pts, cum = _arc(wp)
    t_plan = np.concatenate([[0.0], np.asarray(t_s, np.float64)])
    v_end = (cum[-1] - cum[-2]) / max(t_plan[-1] - t_plan[-2], 1e-6)
    s_t = np.where(times <= t_plan[-1], np.interp(times, t_plan, cum), cum[-1] + v_end * (times - t_plan[-1]))
    seg = pts[-1] - pts[-2]
    d_end = seg / np.hypot(*seg) if np.hypot(*seg) > 1e-6 else np.array([1.0, 0.0])
    total = float(max(cum[-1], s_t[-1]))
    s = np.arange(0.0, total + step_m, step_m)
    inside = s <= cum[-1]
    x = np.where(inside, np.interp(s, cum, pts[:, 0]), pts[-1, 0] + (s - cum[-1]) * d_end[0])
    y = np.where(inside, np.interp(s, cum, pts[:, 1]), pts[-1, 1] + (s - cum[-1]) * d_end[1])
    path = np.stack([x, y], axis=1)
    hd = np.arctan2(np.gradient(y), np.gradient(x)) if len(s) > 1 else np.zeros(1)
    return path, hd, s, s_t


def predicted_free_length(wp: NDArray[np.float64], t_s: NDArray[np.float64], tracks: dict[str, NDArray[np.float64]], *,
                          horizon_s: float, ego_length: float = 4.6, ego_width: float = 1.9, pad_m: float = 0.3,
                          margin_m: float = 0.5, time_margin_s: float = 0.5, dt_s: float = 0.1) -> float:  # fmt: skip
    """Metres the ego can drive along the plan ``wp`` ((K, 2) ego frame, m, at times ``t_s`` s)
    before its footprint (``ego_length`` x ``ego_width`` m, grown by ``pad_m`` on every side: a
    perceived box is often smaller than the car, only its visible faces) enters, less ``margin_m``,
    the swept region over ``horizon_s`` s of a track it would meet (``tracks``:
    :func:`tracks_in_ego_frame`, constant velocity, sampled every ``dt_s`` s): a track meets the plan
    when the ego at some time t of the horizon overlaps it at a time within ``time_margin_s`` of t.
    ``inf`` when no track meets it. Tracks whose centre is behind the ego's front are ignored
    (braking cannot help against them), and so is a track not coming head-on whose swept region
    the ego's box already overlaps (the ego is in its way: it clears it by driving on, not by
    stopping there -- a left turn across the oncoming lane)."""
    wp = np.asarray(wp, np.float64)
    ahead = tracks["xy"][:, 0] > ego_length / 2.0
    if horizon_s <= 0 or not ahead.any():
        return math.inf
    size = (ego_length + 2.0 * pad_m, ego_width + 2.0 * pad_m)
    times = np.arange(0.0, horizon_s + 1e-9, dt_s)
    path, hd, s, s_t = _ego_along(wp, t_s, times, 0.25)
    j = np.minimum(np.searchsorted(s, s_t), len(s) - 1)
    lag = round(time_margin_s / dt_s)
    near = np.abs(np.arange(len(times))[:, None] - np.arange(len(times))[None, :]) <= lag  # (T ego, T track)
    free = math.inf
    for i in np.flatnonzero(ahead):
        pos = tracks["xy"][i][None] + times[:, None] * tracks["vel"][i][None]  # (T, 2)
        trk = (float(tracks["length"][i]), float(tracks["width"][i]))
        if not np.any(_overlap(path[j], hd[j], size, pos, float(tracks["yaw"][i]), trk) & near):
            continue
        hit = np.flatnonzero(_overlap(path, hd, size, pos, float(tracks["yaw"][i]), trk).any(axis=1))
        vx, vy = tracks["vel"][i]
        if len(hit) and hit[0] == 0 and vx > -_HEAD_ON_COS * math.hypot(vx, vy):
            continue  # already in a crossing track's way: stopping here would not clear it, driving on does
        if len(hit):
            free = min(free, max(0.0, float(s[hit[0]]) - margin_m))
    return free
