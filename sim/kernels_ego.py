"""The engine's compiled step of the ego (:func:`sim.engine.step`): its move and its per-step
metrics, one numba call each over the B batched worlds.

* :data:`ego_move_nb`: the kinematic bicycle (:class:`sim.dynamics.KinematicBicycle`, compiled
  backend) under the action -- clipped to the limits, whether it was clipped (any component more
  than 1e-9 off), integrated -- and the ego's projection on its route (path 0, as
  :func:`sim.paths.project_on_paths`);
* :data:`ego_metrics_nb`: who is present this step, the contact interval with every other present
  actor (:func:`sim.safety.contact_interval`) giving the collision, its partner and the TTC signal,
  off-road and against-the-lanes (:func:`sim.rasters.ego_flags`), wrong-way against the route and
  route completion (see :mod:`sim.engine` for the definitions).

Each calls the one kernel of each piece in :mod:`sim.kernels`; the tests compare the engine's
states with and without these (bit for bit). Units SI.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

from sim.kernels import _clip_one_nb, _project_one_nb, bicycle_one_nb, contact_interval_nb, ego_flags_nb

__all__ = ["ego_metrics_nb", "ego_move_nb"]


def _jit(fn: Any) -> Any:
    return numba.njit(cache=True)(fn)


def _ego_move(x, y, yaw, v, accel, steer, a, dt, decel_max, accel_max, jerk_max, steer_max, steer_rate_max, speed_max, wheelbase, xy, heading, ds, s_prev):  # type: ignore[no-untyped-def]
    """Slot 0 of the (B, N) ``x .. accel`` and ``steer`` (B,) moved by actions ``a`` (B, 2) for
    ``dt`` s. Returns (9, B): x, y, yaw, v, accel, steer, clipped (1.0 / 0.0), route arc length
    and lateral offset (from ``s_prev`` (B, N) column 0 as the guess)."""
    B = a.shape[0]
    out = np.empty((9, B))
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
    return out


def _ego_metrics(  # type: ignore[no-untyped-def]
    x, y, yaw, v, length, width, spawned, alive, hidden, ttc_horizon,
    mask, mx0, my0, mres, bits, bx0, by0, bres, ok_mask, n_sectors, corner_lon, corner_lat,
    heading0, ds, off_route_m, route_end, ego_s, ego_lat,
):  # fmt: skip
    """The step's ego metrics from the moved worlds (B, N) (ego in slot 0). Returns ``valid``
    (B, N), the partner slot (B,) (-1 = no collision), the TTC signal (B,) s, and the flags (4, B)
    collision, off-road, wrong-way, route complete."""
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
    ttc = np.empty(B)
    flags = np.zeros((4, B), dtype=np.bool_)
    P = heading0.shape[0]
    for b in range(B):
        t = np.inf
        for n in range(N):
            f = first[b, n]
            if f <= 0.0 and partner[b] < 0:
                partner[b] = n
            if f < t:
                t = f
        ttc[b] = t if t <= ttc_horizon else np.inf
        u = min(max(ego_s[b] / ds, 0.0), P - 1.000001)
        k = np.int64(u)
        fr = u - k
        hr = heading0[k] + fr * (heading0[k + 1] - heading0[k])
        # against the route (while near it) or against every lane under the ego's centre
        wrong = math.cos(eyaw[b] - hr) < 0.0 and abs(ego_lat[b]) <= off_route_m
        flags[0, b] = partner[b] >= 0
        flags[1, b] = offroad[b]
        flags[2, b] = (wrong or against[b]) and ev[b] > 0.5
        flags[3, b] = ego_s[b] >= route_end
    return valid, partner, ttc, flags


ego_move_nb = _jit(_ego_move)
ego_metrics_nb = _jit(_ego_metrics)
