"""The engine's compiled step of the path followers (:class:`sim.motion.PathMotion`): one numba
call per step over the B batched worlds does what the actors on lane paths do in a step.

Per world and per path-following row present this step: the leader on its path (the
car-following neighbour search of :func:`sim.paths.path_neighbours`, one query per row), its stop
line at a junction (:func:`sim.paths.conflict_stops`), the IDM acceleration
(:func:`sim.idm.idm_one`) capped by the scripted brake, the MOBIL decision of the rows due one
(:func:`sim.mobil.mobil_decide`), and the integration of speed, arc length and lateral offset
(:data:`sim.kernels.path_motion_nb`). Every piece is the one implementation of its concept; this
module only strings them together, in the order the numpy engine used, so the results are the
same bits.

The per-slot constants are packed once per compiled scenario (:func:`path_constants`): a float
table ``prm`` (K, N) whose rows are named by :data:`PRM`, and the cosine / sine of every path
vertex's heading (computed with the same libm calls the neighbour search would make).
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

from sim.idm import fmax_nb, fmin_nb, idm_one
from sim.kernels import _project_one_nb, conflict_stops_nb, path_motion_nb
from sim.kernels_neighbours import (
    GRID_MIN_ACTORS,
    grid_alloc_nb,
    grid_build_nb,
    neighbour_one_nb,
    path_reach_nb,
)
from sim.mobil import mobil_decide, vertex_nb

__all__ = ["LC_CREEP", "PRM", "path_constants", "path_step_args", "path_step_nb"]

#: the rows of the packed per-slot parameter table (behaviour parameters, then the slot's size)
PRM = (
    "a_max", "b_comf", "s0", "T", "delta", "decel_max", "v0", "brake_at_s", "brake_to_speed", "brake_decel",
    "b_safe", "politeness", "threshold", "lc_cooldown", "length", "width",
)  # fmt: skip
(A_MAX, B_COMF, S0, T_, DELTA, DECEL_MAX, V0, BRAKE_AT, BRAKE_TO, BRAKE_DECEL, B_SAFE, POLITE, THRESH, COOLDOWN, LENGTH, WIDTH) = range(len(PRM))

#: fraction of the lane-change lateral rate kept at standstill (the rate scales with speed / 5 m/s
#: above it): a lane change blocked by a stopped car in its old lane still completes
LC_CREEP = 0.2


def _jit(fn: Any) -> Any:
    return numba.njit(cache=True)(fn)


def _trig(heading):  # type: ignore[no-untyped-def]
    """cos and sin of every path vertex's heading (Q, P), by the libm calls the kernels make."""
    Q, P = heading.shape
    c = np.empty((Q, P))
    s = np.empty((Q, P))
    for q in range(Q):
        for k in range(P):
            c[q, k] = math.cos(heading[q, k])
            s[q, k] = math.sin(heading[q, k])
    return c, s


trig_nb = _jit(_trig)


def path_constants(params: dict[str, NDArray[np.float64]], length: NDArray[np.float64], width: NDArray[np.float64], paths: Any) -> dict[str, Any]:
    """What :data:`path_step_nb` reads of a compiled scenario: ``prm`` (K, N), the heading's
    ``cos_h`` / ``sin_h`` (Q, P), ``grid_min`` (the neighbour search's grid threshold, None when
    the scenario has fewer slots: no grid compiled in) and the grid's ``reach`` (Q, 2) for the path
    table ``paths`` (infinite, i.e. no bounded box, when there is no grid: never computed then)."""
    heading = paths.heading
    sizes = {"length": length, "width": width}
    prm = np.stack([sizes[k] if k in sizes else params.get(k, np.full(len(length), np.nan)) for k in PRM]).astype(np.float64)
    cos_h, sin_h = trig_nb(np.ascontiguousarray(heading, dtype=np.float64))
    grid_min = GRID_MIN_ACTORS if len(length) >= GRID_MIN_ACTORS else None
    reach = path_reach_nb(paths.xy, paths.heading, paths.ds, 4) if grid_min is not None else np.full((heading.shape[0], 2), np.inf)
    for a in (prm, cos_h, sin_h, reach):
        a.setflags(write=False)
    return {"prm": prm, "cos_h": cos_h, "sin_h": sin_h, "grid_min": grid_min, "reach": reach}


def _leader_accel(xy, heading, cos_h, sin_h, ds, speed_limit, prm, b, n, pid, sn, dn, stop, px, py, fx, fy, pyaw, pv, allow, t_s, scale, dt, idx, wx, wy, reach, gf, gi):  # type: ignore[no-untyped-def]
    """Row ``n`` of world ``b``: (IDM acceleration capped by the scripted brake, leader gap minus
    the own half length (m), leader speed (m/s)). ``stop`` the stop-line distance (m)."""
    plen = prm[LENGTH]
    pwid = prm[WIDTH]
    # a lane change in progress (d != 0) watches the corridor from its lane path to where it is
    gap, v_lead, _ = neighbour_one_nb(xy, heading, cos_h, sin_h, ds, pid, sn, pwid[n], dn, px, py, fx, fy, pyaw, pv, plen, pwid, allow, 12, 4, False, idx, wx, wy, reach, gf, gi)
    gap = gap - 0.5 * plen[n]
    use_stop = stop < gap
    g = stop if use_stop else gap
    vl = 0.0 if use_stop else v_lead
    lim = speed_limit[pid, vertex_nb(sn, ds, xy.shape[1])]
    v0p = prm[V0, n]
    v0 = (lim if math.isnan(v0p) else v0p) * scale
    v = pv[n]
    a = idm_one(v, vl, g, v0, prm[A_MAX, n], prm[B_COMF, n], prm[S0, n], prm[T_, n], prm[DELTA, n], prm[DECEL_MAX, n])
    if t_s >= prm[BRAKE_AT, n]:  # scripted brake: brake_decel down to brake_to_speed, then hold it
        bts = prm[BRAKE_TO, n]
        a_brake = -prm[BRAKE_DECEL, n] if v > bts + 1e-6 else 0.0
        a_brake = fmax_nb(a_brake, (bts - v) / dt)
        a = fmin_nb(a, a_brake)
    return a, gap, v_lead


leader_accel_nb = numba.njit(cache=True, inline="always")(_leader_accel)


def _path_step(  # type: ignore[no-untyped-def]
    xy, heading, cos_h, sin_h, reach, ds, end_s, speed_limit, conf_s, conf_id, conf_lane, n_conf, lane, lane_s, lane_path, left, right, lane_length,
    prm, lc_rate, lc_every, mobil, is_path, path_or_ego, grid_min, rows,
    k, dt, spawned, px, py, pyaw, pv, valid_prev, v0_scale,
    x, y, yaw, v, acc, path_id, s, d, lc_timer, lc_hold, alive,
):  # fmt: skip
    """One step of the path followers ``rows`` (N,) of B worlds. ``px .. pv`` (B, N) the poses and
    speeds after the ego moved (read), ``valid_prev`` the previous step's presence; ``x .. alive``
    (B, N) the step's outputs, updated in place (``path_id``, ``s``, ``d`` start as the previous
    step's, with the ego's route progress in ``s[:, 0]``). ``grid_min``: None, or the fewest
    actors present in a world for its neighbour searches to use a grid (a compile-time choice:
    :mod:`sim.kernels_neighbours`)."""
    B, N = s.shape
    W = 13
    idx = np.empty(W, dtype=np.int64)
    wx = np.empty(W, dtype=np.float32)
    wy = np.empty(W, dtype=np.float32)
    gf, gi = grid_alloc_nb(N, grid_min)
    allow = np.empty(N, dtype=np.bool_)
    fx = np.empty(N, dtype=np.float32)
    fy = np.empty(N, dtype=np.float32)
    m = np.zeros((B, N), dtype=np.bool_)
    a = np.zeros((B, N))
    active = np.empty((B, N), dtype=np.bool_)
    any_m = False
    for b in range(B):
        for n in range(N):
            lc_timer[b, n] = fmax_nb(lc_timer[b, n] - dt, 0.0)
            lc_hold[b, n] = fmax_nb(lc_hold[b, n] - dt, 0.0)
            m[b, n] = rows[n] and spawned[b, n]
            any_m = any_m or m[b, n]
            active[b, n] = (valid_prev[b, n] or n == 0) and path_or_ego[n]
    if not any_m:
        return
    stops = conflict_stops_nb(conf_s, conf_id, conf_lane, path_id, s, pv, prm[LENGTH : LENGTH + 1], active, is_path.reshape((1, N)), 40.0, 4.0, 8, 6.0, 25.0, n_conf)
    any_mobil = False
    for n in range(N):
        any_mobil = any_mobil or mobil[n]
    plen = prm[LENGTH]
    pwid = prm[WIDTH]
    for b in range(B):
        for n in range(N):
            allow[n] = valid_prev[b, n] or n == 0
            fx[n] = np.float32(px[b, n])
            fy[n] = np.float32(py[b, n])
        grid_build_nb(px[b], py[b], plen, pwid, allow, gf, gi)
        t_s = k[b] * dt
        for n in range(N):
            if not m[b, n]:
                continue
            allow[n] = False
            a_n, gap, v_lead = leader_accel_nb(
                xy, heading, cos_h, sin_h, ds, speed_limit, prm, b, n, path_id[b, n], s[b, n], d[b, n], stops[b, n],
                px[b], py[b], fx, fy, pyaw[b], pv[b], allow, t_s, v0_scale[b, n], dt, idx, wx, wy, reach, gf, gi,
            )  # fmt: skip
            a[b, n] = a_n
            # MOBIL: all its actors decide on the same steps, not during a change or its cool-down
            if any_mobil and mobil[n] and k[b] % lc_every[n] == 0 and lc_timer[b, n] <= 0 and abs(d[b, n]) < 0.05:
                gain, q_new, s_new = mobil_decide(
                    xy, heading, cos_h, sin_h, ds, speed_limit, lane, lane_s, lane_path, left, right, lane_length,
                    px[b], py[b], fx, fy, pyaw[b], pv[b], plen, pwid, allow, path_id[b, n], s[b, n], pv[b, n], gap, v_lead, a_n, v0_scale[b, n],
                    plen[n], pwid[n], prm[A_MAX, n], prm[B_COMF, n], prm[S0, n], prm[T_, n], prm[DELTA, n], prm[DECEL_MAX, n],
                    prm[V0, n], prm[B_SAFE, n], prm[POLITE, n], prm[THRESH, n], idx, wx, wy, reach, gf, gi,
                )  # fmt: skip
                if np.isfinite(gain):
                    _, d_new = _project_one_nb(xy, heading, ds, q_new, s_new, px[b, n], py[b, n], 6, 24)
                    path_id[b, n] = q_new
                    s[b, n] = s_new
                    d[b, n] = d_new
                    lc_timer[b, n] = prm[COOLDOWN, n]
            allow[n] = valid_prev[b, n] or n == 0
    path_motion_nb(xy, heading, ds, end_s, path_id, m, a, dt, lc_rate, LC_CREEP, x, y, yaw, v, acc, s, d, lc_hold, alive)


path_step_nb = _jit(_path_step)


def path_step_args(paths: Any, params: dict[str, NDArray[np.float64]], length: NDArray[np.float64], width: NDArray[np.float64], row: dict[str, Any]) -> tuple[Any, ...]:
    """The leading arguments of :data:`path_step_nb` for a compiled scenario (its path table
    ``paths``, parameters, sizes and (1, N) row constants ``row``), packed once."""
    k = path_constants(params, length, width, paths)
    return (
        paths.xy, paths.heading, k["cos_h"], k["sin_h"], k["reach"], paths.ds, paths.end_s, paths.speed_limit, paths.conf_s, paths.conf_id, paths.conf_lane,
        paths.n_conflicts, paths.lane, paths.lane_s, paths.lane_path, paths.left, paths.right, paths.lane_length,
        k["prm"], np.ascontiguousarray(row["lc_rate"][0]), np.ascontiguousarray(row["lc_check_every"][0]), np.ascontiguousarray(row["mobil"][0]),
        np.ascontiguousarray(row["is_path"][0]), np.ascontiguousarray(row["path_or_ego"][0]),
        k["grid_min"],
    )  # fmt: skip
