"""The engine's compiled step of the ego (:func:`sim.engine.step`): its move and its per-step
metrics, one numba call each over the B batched worlds.

* :data:`ego_move_nb`: the kinematic bicycle (:class:`sim.dynamics.KinematicBicycle`, compiled
  backend) under the action -- clipped to the limits, whether it was clipped (any component more
  than 1e-9 off), integrated -- and the ego's projection on its route (path 0, as
  :func:`sim.paths.project_on_paths`);
* :data:`ego_metrics_nb`: who is present this step, the contact interval with every other present
  actor (:func:`sim.safety.contact_interval`) giving the collision, its partner and the TTC signal,
  off-road and against-the-lanes (:func:`sim.rasters.ego_flags`), wrong-way against the route and
  route completion (see :mod:`sim.engine` for the definitions), progress, jerk, termination;
* :data:`step_arrays_nb`: the (B, N) arrays a step starts from, with the moved ego in slot 0;
* :data:`engine_step_nb`: the whole step of the common case (the compiled kinematic bicycle and
  only the path, replay and static motions) in one call: the three kernels above, the path
  followers' step (:data:`sim.kernels_path.path_step_nb`) and log replay, in the engine's order.
  Its scenario constants come packed once per compiled scenario in one :class:`StepConsts`
  (:func:`step_consts`), so a call checks 19 arguments instead of about 120.

Each calls the one kernel of each piece in :mod:`sim.kernels`; the tests compare the engine's
states with and without these (bit for bit). Units SI.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numba.core import types as nbt
from numba.experimental import structref

from sim.kernels import _clip_one_nb, _project_one_nb, bicycle_one_nb, contact_interval_nb, ego_flags_nb
from sim.kernels_path import path_step_nb

__all__ = ["StepConsts", "ego_metrics_nb", "ego_move_nb", "engine_step_nb", "step_arrays_nb", "step_consts"]


def _jit(fn: Any) -> Any:
    return numba.njit(cache=True)(fn)


def _ego_move(x, y, yaw, v, accel, steer, a, dt, decel_max, accel_max, jerk_max, steer_max, steer_rate_max, speed_max, wheelbase, xy, heading, ds, s_prev, terminated, truncated):  # type: ignore[no-untyped-def]
    """Slot 0 of the (B, N) ``x .. accel`` and ``steer`` (B,) moved by actions ``a`` (B, 2) for
    ``dt`` s. Returns (9, B): x, y, yaw, v, accel, steer, clipped (1.0 / 0.0), route arc length
    and lateral offset (from ``s_prev`` (B, N) column 0 as the guess); and a status: 0, or 1 when
    an action is not finite, 2 when a world is already done (``terminated`` / ``truncated`` (B,)),
    checked in that order before anything moves."""
    B = a.shape[0]
    out = np.empty((9, B))
    for b in range(B):
        if not (math.isfinite(a[b, 0]) and math.isfinite(a[b, 1])):
            return out, 1
    for b in range(B):
        if terminated[b] or truncated[b]:
            return out, 2
    for b in range(B):
        acc, st = _clip_one_nb(a[b, 0], a[b, 1], accel[b, 0], steer[b], dt, decel_max, accel_max, jerk_max, steer_max, steer_rate_max)
        out[6, b] = 1.0 if (abs(acc - a[b, 0]) > 1e-9 or abs(st - a[b, 1]) > 1e-9) else 0.0
        x1, y1, yaw1, v1, acc1, st1 = bicycle_one_nb(
            x[b, 0], y[b, 0], yaw[b, 0], v[b, 0], accel[b, 0], steer[b], acc, st, dt,
            decel_max, accel_max, jerk_max, steer_max, steer_rate_max, speed_max, wheelbase,
        )  # fmt: skip
        out[0, b] = x1
        out[1, b] = y1
        out[2, b] = yaw1
        out[3, b] = v1
        out[4, b] = acc1
        out[5, b] = st1
        out[7, b], out[8, b] = _project_one_nb(xy, heading, ds, 0, s_prev[b, 0], x1, y1, 6, 24)
    return out, 0


def _step_arrays(x, y, yaw, v, accel, s, d, lc_timer, lc_hold, alive, spawn_step, k, o):  # type: ignore[no-untyped-def]
    """The arrays a step starts from (B, N), with the moved ego ``o`` (:func:`_ego_move`'s rows) in
    slot 0: floats (13, B, N) = x, y, yaw, v before the actors move, the same as the step's
    outputs, acceleration, arc length, lateral offset, lane-change timer and hold; bools (3, B, N) =
    spawned (step ``k`` reached the slot's ``spawn_step`` and alive), alive, hidden (False)."""
    B, N = x.shape
    f = np.empty((13, B, N))
    m = np.empty((3, B, N), dtype=np.bool_)
    for b in range(B):
        for n in range(N):
            if n == 0:
                px, py, pyaw, pv, pa, ps = o[0, b], o[1, b], o[2, b], o[3, b], o[4, b], o[7, b]
            else:
                px, py, pyaw, pv, pa, ps = x[b, n], y[b, n], yaw[b, n], v[b, n], accel[b, n], s[b, n]
            f[0, b, n] = px
            f[1, b, n] = py
            f[2, b, n] = pyaw
            f[3, b, n] = pv
            f[4, b, n] = px
            f[5, b, n] = py
            f[6, b, n] = pyaw
            f[7, b, n] = pv
            f[8, b, n] = pa
            f[9, b, n] = ps
            f[10, b, n] = d[b, n]
            f[11, b, n] = lc_timer[b, n]
            f[12, b, n] = lc_hold[b, n]
            m[0, b, n] = spawn_step[n] <= k[b] and alive[b, n]
            m[1, b, n] = alive[b, n]
            m[2, b, n] = False
    return f, m


def _ego_metrics(  # type: ignore[no-untyped-def]
    x, y, yaw, v, length, width, spawned, alive, hidden, ttc_horizon,
    mask, mx0, my0, mres, bits, bx0, by0, bres, ok_mask, n_sectors, corner_lon, corner_lat,
    heading0, ds, off_route_m, route_end, o, s_prev, accel_prev, k, horizon_steps, dt, t0_us, dt_us,
):  # fmt: skip
    """The step's ego metrics from the moved worlds (B, N) (ego in slot 0; ``o`` the rows of
    :func:`_ego_move`, ``s_prev`` / ``accel_prev`` the state the step started from). Returns
    ``valid`` (B, N), the partner slot (B,) (-1 = no collision), floats (3, B) = the TTC signal (s),
    progress along the route (m) and jerk (m/s^3), flags (6, B) = collision, off-road, wrong-way,
    route complete, terminated, truncated, and the time (B,) in microseconds."""
    B, N = x.shape
    valid = np.empty((B, N), dtype=np.bool_)
    others = np.empty((B, N), dtype=np.bool_)
    for b in range(B):
        for n in range(N):
            valid[b, n] = (spawned[b, n] and alive[b, n] and not hidden[b, n]) or n == 0
            others[b, n] = valid[b, n] and n > 0
    ex = x[:, 0].copy()
    ey = y[:, 0].copy()
    eyaw = yaw[:, 0].copy()
    ev = v[:, 0].copy()
    first, _ = contact_interval_nb(ex, ey, eyaw, ev, length[0], width[0], x, y, yaw, v, length, width, others)
    offroad, against = ego_flags_nb(mask, mx0, my0, mres, bits, bx0, by0, bres, ok_mask, n_sectors, ex, ey, eyaw, corner_lon, corner_lat)
    partner = np.full(B, -1, dtype=np.int64)
    fl = np.empty((3, B))
    flags = np.zeros((6, B), dtype=np.bool_)
    t_us = np.empty(B, dtype=np.int64)
    P = heading0.shape[0]
    for b in range(B):
        t = np.inf
        for n in range(N):
            f = first[b, n]
            if f <= 0.0 and partner[b] < 0:
                partner[b] = n
            if f < t:
                t = f
        ego_s = o[7, b]
        u = min(max(ego_s / ds, 0.0), P - 1.000001)
        kk = np.int64(u)
        fr = u - kk
        hr = heading0[kk] + fr * (heading0[kk + 1] - heading0[kk])
        # against the route (while near it) or against every lane under the ego's centre
        wrong = math.cos(eyaw[b] - hr) < 0.0 and abs(o[8, b]) <= off_route_m
        fl[0, b] = t if t <= ttc_horizon else np.inf
        fl[1, b] = ego_s - s_prev[b, 0]
        fl[2, b] = (o[4, b] - accel_prev[b, 0]) / dt
        flags[0, b] = partner[b] >= 0
        flags[1, b] = offroad[b]
        flags[2, b] = (wrong or against[b]) and ev[b] > 0.5
        flags[3, b] = ego_s >= route_end  # the front bumper reached the end
        flags[4, b] = flags[0, b] or flags[1, b] or flags[3, b]
        flags[5, b] = k[b] >= horizon_steps and not flags[4, b]
        t_us[b] = t0_us + k[b] * dt_us
    return valid, partner, fl, flags, t_us


ego_move_nb = _jit(_ego_move)
ego_metrics_nb = _jit(_ego_metrics)
step_arrays_nb = _jit(_step_arrays)


# ============================================================================ the fused step
@structref.register
class StepConstsType(nbt.StructRef):
    """numba type of :class:`StepConsts`."""

    def preprocess_fields(self, fields):  # type: ignore[no-untyped-def]
        return tuple((n, nbt.unliteral(t)) for n, t in fields)


class StepConsts(structref.StructRefProxy):
    """The constants of a compiled scenario that :data:`engine_step_nb` reads, packed once (opaque
    to Python): ``move`` the bicycle's limits and wheelbase, ``path`` the leading arguments of
    :data:`sim.kernels_path.path_step_nb` and ``metrics`` the constants of :data:`ego_metrics_nb`
    (as the engine passes them), ``replay`` the log-replay tables, ``slots`` per-slot arrays and
    ``scalars`` the times."""


_FIELDS = ("move", "path", "metrics", "replay", "slots", "scalars", "flags")
structref.define_constructor(StepConsts, StepConstsType, list(_FIELDS))
structref.define_boxing(StepConstsType, StepConsts)


def _make_consts(move, path, metrics, replay, slots, scalars, flags):  # type: ignore[no-untyped-def]
    return StepConsts(move, path, metrics, replay, slots, scalars, flags)


_make_consts_nb = _jit(_make_consts)


def _own(a: Any) -> Any:
    """A writable C-contiguous copy of an array (so every scenario's constants have the same
    numba types and share one compiled step); scalars unchanged."""
    return np.array(a, order="C", copy=True) if isinstance(a, np.ndarray) else a


def step_consts(move: tuple[float, ...], path: tuple[Any, ...], metrics: tuple[Any, ...], replay: tuple[Any, ...], slots: tuple[Any, ...], scalars: tuple[Any, ...], flags: tuple[bool, ...]) -> StepConsts:
    """Pack a compiled scenario's constants for :data:`engine_step_nb` (see :class:`StepConsts`;
    the engine compiler builds it: ``replay`` = (pose (H+1, N, 4), presence (H+1, N), speed (H+1, N),
    replayed rows (N,)), ``slots`` = (spawn step (N,) int, length (N,), width (N,), path rows (N,)),
    ``scalars`` = (dt s, t0 us, dt us, horizon steps, TTC horizon s), ``flags`` = (any path rows,
    any replayed rows))."""
    own = lambda t: tuple(_own(a) for a in t)  # noqa: E731
    sc = (float(scalars[0]), int(scalars[1]), int(scalars[2]), int(scalars[3]), float(scalars[4]))
    return _make_consts_nb(tuple(float(v) for v in move), own(path), own(metrics), own(replay), own(slots), sc, (bool(flags[0]), bool(flags[1])))


def _engine_step(K, x, y, yaw, v, accel, valid, alive, path_id, s, d, lc_timer, lc_hold, v0_scale, steer, step_index, terminated, truncated, a):  # type: ignore[no-untyped-def]
    """One engine step of B worlds (:func:`sim.engine.step`'s common case) from the state's arrays
    and the actions ``a`` (B, 2). Returns a status (0, or :data:`ego_move_nb`'s refusal: nothing
    else is then meaningful) and the new state's arrays: floats (13, B, N) (rows 4..12: x, y, yaw,
    v, acceleration, arc length, lateral offset, lane-change timer and hold; rows 0..3 the poses
    before the actors moved), bools (2, B, N) = valid, alive, path ids (B, N), floats (5, B) =
    steer, lateral offset from the route, TTC signal, progress, jerk, flags (7, B) = collision,
    off-road, wrong-way, route complete, terminated, truncated, action clipped, and ints (3, B) =
    step index, time (us), collision partner."""
    dt, t0_us, dt_us, horizon, ttc_horizon = K.scalars
    has_path, has_replay = K.flags
    spawn_step, length, width, path_rows = K.slots
    B, N = x.shape
    path = K.path
    o, status = ego_move_nb(x, y, yaw, v, accel, steer, a, dt, *K.move, path[0], path[1], path[5], s, terminated, truncated)
    m_out = np.empty((2, B, N), dtype=np.bool_)
    pid = np.empty((B, N), dtype=np.int64)
    g_out = np.empty((5, B))
    fl_out = np.zeros((7, B), dtype=np.bool_)
    i_out = np.empty((3, B), dtype=np.int64)
    if status != 0:
        return status, np.empty((13, B, N)), m_out, pid, g_out, fl_out, i_out
    k = step_index + 1
    f, m = step_arrays_nb(x, y, yaw, v, accel, s, d, lc_timer, lc_hold, alive, spawn_step, k, o)
    pid[:, :] = path_id
    spawned = m[0]
    alive1 = m[1]
    hidden = m[2]
    if has_path:
        path_step_nb(
            *path, path_rows, k, dt, spawned, f[0], f[1], f[2], f[3], valid, v0_scale,
            f[4], f[5], f[6], f[7], f[8], pid, f[9], f[10], f[11], f[12], alive1,
        )  # fmt: skip
    if has_replay:  # sim.motion.ReplayMotion.advance, element by element
        rp, rv, rs, rrows = K.replay
        for b in range(B):
            kk = min(k[b], horizon)
            for n in range(N):
                if rrows[n]:
                    f[4, b, n] = rp[kk, n, 0]
                    f[5, b, n] = rp[kk, n, 1]
                    f[6, b, n] = rp[kk, n, 3]
                    vn = rs[kk, n]
                    f[8, b, n] = (vn - f[3, b, n]) / dt
                    f[7, b, n] = vn
                    hidden[b, n] = hidden[b, n] or not rv[kk, n]
    valid1, partner, fl, flags, t_us = ego_metrics_nb(
        f[4], f[5], f[6], f[7], length, width, spawned, alive1, hidden, ttc_horizon, *K.metrics, o, s, accel, k, horizon, dt, t0_us, dt_us,
    )  # fmt: skip
    m_out[0] = valid1
    m_out[1] = alive1
    for b in range(B):
        g_out[0, b] = o[5, b]
        g_out[1, b] = o[8, b]
        g_out[2, b] = fl[0, b]
        g_out[3, b] = fl[1, b]
        g_out[4, b] = fl[2, b]
        for j in range(6):
            fl_out[j, b] = flags[j, b]
        fl_out[6, b] = o[6, b] > 0.0
        i_out[0, b] = k[b]
        i_out[1, b] = t_us[b]
        i_out[2, b] = partner[b]
    return status, f, m_out, pid, g_out, fl_out, i_out


#: releases the GIL, so :class:`sim.engine.StepThreads` can run slices of the worlds in parallel
engine_step_nb = numba.njit(cache=True, nogil=True)(_engine_step)
