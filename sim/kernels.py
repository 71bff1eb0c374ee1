"""Compiled (numba) kernels of the engine's hot spots: the one implementation of each.

At B = 1 the engine's cost is the fixed overhead of many small numpy calls; these functions are one
compiled loop over (world, query, actor) each: the car-following neighbour search
(:func:`sim.paths.path_neighbours`, over a per-world grid: :mod:`sim.kernels_neighbours`), the intersection yielding (:func:`sim.paths.conflict_stops`),
the projection onto lane paths (:func:`sim.paths.project_on_paths`), the path followers' motion
(:class:`sim.motion.PathMotion`), the contact interval of two boxes moving at constant velocity
(:func:`sim.safety.contact_interval`), the ego's off-road / wrong-way flags, the compiled backend
of the kinematic bicycle (:class:`sim.dynamics.KinematicBicycle`) and the ``state`` observation.

numba is a hard dependency, and each kernel has one source: the Python function below. There is
no hand-maintained numpy twin; ``kernel.py_func`` runs the same source un-jitted (the tests compare
the two on random inputs, which checks that the compiled semantics are Python's). Kernels are
compiled on first use and cached on disk (``cache=True``); they call libm, so a sine or a tangent
may differ in the last bit from numpy's SIMD routines (see :mod:`sim.dynamics`).
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

from sim.kernels_neighbours import path_neighbours_nb

__all__ = [
    "bicycle_clip_nb",
    "bicycle_forward_nb",
    "conflict_stops_nb",
    "contact_interval_nb",
    "ego_flags_nb",
    "path_motion_nb",
    "path_neighbours_nb",
    "project_nb",
    "state_obs_nb",
]


def _jit(fn: Any) -> Any:
    return numba.njit(cache=True, nogil=True)(fn)


def _conflict_stops(conf_s, conf_id, conf_lane, path_id, s, v, length, active, can_yield, lookahead, stop_margin, n_next, decel_commit, cluster_m, n_conf):  # type: ignore[no-untyped-def]
    """Kernel of :func:`sim.paths.conflict_stops` (arrays (B, N); length, can_yield
    broadcast to (B, N)). Returns the stop distance (m, ``inf`` = right of way)."""
    B, N = s.shape
    C = conf_s.shape[1]
    n_next = min(n_next, C)
    out = np.full((B, N), np.inf)
    E = N * n_next
    e_cid = np.empty(E, dtype=np.int64)
    e_lane = np.empty(E, dtype=np.int64)
    e_line = np.empty(E)
    e_at = np.empty(E)
    e_key = np.empty(E)
    e_comm = np.empty(E, dtype=np.bool_)
    e_n = np.empty(E, dtype=np.int64)
    best_key = np.full(n_conf, np.inf)
    best_lane = np.full(n_conf, -1, dtype=np.int64)
    other_key = np.full(n_conf, np.inf)
    cs_buf = np.empty(n_next)
    for b in range(B):
        ne = 0
        for n in range(N):
            if not active[b, n]:
                continue
            q = path_id[b, n]
            sn = s[b, n]
            ln_ = length[b if length.shape[0] > 1 else 0, n]
            clear = 0.5 * ln_ + 2.0
            first = 0
            for c in range(C):
                if conf_s[q, c] < sn - clear:
                    first += 1
            # relevant entries among the next n_next conflicts
            n0 = ne
            first_s = np.inf
            for j in range(n_next):
                t = first + j
                if t >= C:
                    break
                cid = conf_id[q, t]
                if cid < 0:
                    continue
                cs = conf_s[q, t]
                dist = cs - sn
                if not (dist < lookahead and dist > -clear):
                    continue
                if ne == n0:
                    first_s = cs
                e_cid[ne] = cid
                e_lane[ne] = conf_lane[q, t]
                cs_buf[ne - n0] = cs
                e_line[ne] = dist - (0.5 * ln_ + stop_margin)
                e_at[ne] = dist - (0.5 * ln_ + 2.0)
                e_n[ne] = n
                ne += 1
            if ne == n0:
                continue
            vv = v[b, n]
            brake = vv * vv / (2.0 * decel_commit) - 0.5
            any_comm = False
            for e in range(n0, ne):
                if first_s + cluster_m >= cs_buf[e - n0]:
                    e_line[e] = first_s - sn - 0.5 * ln_ - stop_margin
                e_comm[e] = e_line[e] < brake
                any_comm = any_comm or e_comm[e]
            t_arr = max(first_s - sn, 0.0) / max(vv, 1.0) - (1e3 if any_comm else 0.0)
            key = t_arr + 1e-6 * n
            for e in range(n0, ne):
                e_key[e] = key
        if ne == 0:
            continue
        for e in range(ne):
            g = e_cid[e]
            best_key[g] = np.inf
            best_lane[g] = -1
            other_key[g] = np.inf
        for e in range(ne):  # earliest arrival per conflict (first in slot order on ties)
            g = e_cid[e]
            if best_lane[g] < 0 or e_key[e] < best_key[g]:
                best_key[g] = e_key[e]
                best_lane[g] = e_lane[e]
        for e in range(ne):  # earliest arrival on the other lane
            g = e_cid[e]
            if e_lane[e] != best_lane[g] and e_key[e] < other_key[g]:
                other_key[g] = e_key[e]
        for e in range(ne):
            g = e_cid[e]
            n = e_n[e]
            comp = other_key[g] if e_lane[e] == best_lane[g] else best_key[g]
            if not (comp < e_key[e] and can_yield[b if can_yield.shape[0] > 1 else 0, n]):
                continue
            if not e_comm[e]:
                stop = e_line[e]
            elif e_at[e] > 0.0:  # both committed: stop at the conflict point itself
                stop = e_at[e]
            else:
                continue
            if stop < out[b, n]:
                out[b, n] = stop
    return out


def _contact_interval(ex, ey, eyaw, ev, el, ew, x, y, yaw, v, ln, wd, others):  # type: ignore[no-untyped-def]
    """The time interval (s) during which the ego box (B,) and each actor box (B, N) overlap when
    both keep their velocity along their headings, for the pairs ``others`` (B, N): ``first``
    (earliest t >= 0; 0 when they overlap now) and ``last``; ``inf`` / ``-inf`` when they never meet.

    Exact for constant velocities: on each of the four separating axes (ego forward/left, actor
    forward/left) the projected distance is linear in t, so the boxes overlap on the intersection
    of four time intervals. Ego size ``el``, ``ew`` (m), actor sizes ``ln``, ``wd`` (N,)."""
    B, N = x.shape
    first = np.full((B, N), np.inf)
    last = np.full((B, N), -np.inf)
    p0 = np.empty(4)
    pv = np.empty(4)
    r = np.empty(4)
    for b in range(B):
        ce = math.cos(eyaw[b])
        se = math.sin(eyaw[b])
        evx = ev[b] * ce
        evy = ev[b] * se
        for n in range(N):
            if not others[b, n]:
                continue
            ca = math.cos(yaw[b, n])
            sa = math.sin(yaw[b, n])
            dx = x[b, n] - ex[b]
            dy = y[b, n] - ey[b]
            dvx = v[b, n] * ca - evx
            dvy = v[b, n] * sa - evy
            cd = abs(ca * ce + sa * se)
            sd = abs(sa * ce - ca * se)
            hl = 0.5 * ln[n]
            hw = 0.5 * wd[n]
            p0[0] = dx * ce + dy * se
            p0[1] = dy * ce - dx * se
            p0[2] = dx * ca + dy * sa
            p0[3] = dy * ca - dx * sa
            pv[0] = dvx * ce + dvy * se
            pv[1] = dvy * ce - dvx * se
            pv[2] = dvx * ca + dvy * sa
            pv[3] = dvy * ca - dvx * sa
            r[0] = 0.5 * el + hl * cd + hw * sd
            r[1] = 0.5 * ew + hl * sd + hw * cd
            r[2] = hl + 0.5 * el * cd + 0.5 * ew * sd
            r[3] = hw + 0.5 * el * sd + 0.5 * ew * cd
            tlo = -np.inf
            thi = np.inf
            for a in range(4):
                if abs(pv[a]) < 1e-9:
                    if abs(p0[a]) <= r[a]:
                        lo, hi = -np.inf, np.inf
                    else:
                        lo, hi = np.inf, -np.inf
                else:
                    inv = 1.0 / pv[a]
                    t1 = (-r[a] - p0[a]) * inv
                    t2 = (r[a] - p0[a]) * inv
                    lo, hi = min(t1, t2), max(t1, t2)
                tlo = max(tlo, lo)
                thi = min(thi, hi)
            if tlo <= thi and thi >= 0.0:
                first[b, n] = max(tlo, 0.0)
                last[b, n] = thi
    return first, last


def _project_one(xy, heading, ds, q, s_guess, x, y, back, ahead):  # type: ignore[no-untyped-def]
    """One point (x, y) projected on path ``q`` near ``s_guess``: (arc length m, lateral offset m,
    left positive); the vertices ``back`` before to ``ahead`` after are searched."""
    P = xy.shape[1]
    k0 = min(max(np.int64(s_guess / ds), 0), P - 1)
    best = np.inf
    kb = 0
    bx = 0.0
    by = 0.0
    for o in range(-back, ahead + 1):
        k = min(max(k0 + o, 0), P - 2)
        dx = x - xy[q, k, 0]
        dy = y - xy[q, k, 1]
        e = dx * dx + dy * dy
        if e < best:
            best = e
            kb = k
            bx = dx
            by = dy
    h = heading[q, kb]
    c = math.cos(h)
    sn = math.sin(h)
    return kb * ds + c * bx + sn * by, -sn * bx + c * by


_project_one_nb = _jit(_project_one)


def _project(xy, heading, ds, path_id, s_guess, x, y, back, ahead):  # type: ignore[no-untyped-def]
    """Kernel of :func:`sim.paths.project_on_paths` over 1-D arrays: (arc length m,
    lateral offset m, left positive)."""
    n_pts = s_guess.shape[0]
    s_out = np.empty(n_pts)
    d_out = np.empty(n_pts)
    for i in range(n_pts):
        s_out[i], d_out[i] = _project_one_nb(xy, heading, ds, path_id[i], s_guess[i], x[i], y[i], back, ahead)
    return s_out, d_out


def _state_obs(xy, heading, speed_limit, ds, route_length, horizon_steps, dt_s, route_ds, x, y, yaw, v, accel, steer, ego_lat, step_index, es, valid, length, width, n_actors, n_feat, ego_feat, bound):  # type: ignore[no-untyped-def]
    """Kernel of :meth:`sim.observations.StateObservation.compute` (route path 0); float32 (B, size)."""
    B, N = x.shape
    K = route_ds.shape[0]
    P = xy.shape[0]
    size = ego_feat + 2 * K + n_feat * n_actors
    out = np.zeros((B, size))
    m_ = min(n_actors, N - 1)
    d2 = np.empty(N)
    for b in range(B):
        ex = x[b, 0]
        ey = y[b, 0]
        eyaw = yaw[b, 0]
        ce = math.cos(eyaw)
        se = math.sin(eyaw)
        sb = es[b]
        u = min(max(sb / ds, 0.0), P - 1.000001)
        k = np.int64(u)
        f = u - k
        h = heading[k] + f * (heading[k + 1] - heading[k])
        kv = min(max(np.int64(sb / ds), 0), P - 1)
        out[b, 0] = v[b, 0]
        out[b, 1] = accel[b, 0]
        out[b, 2] = steer[b]
        out[b, 3] = ego_lat[b]
        out[b, 4] = math.sin(h - eyaw)
        out[b, 5] = math.cos(h - eyaw)
        out[b, 6] = speed_limit[kv]
        out[b, 7] = max(route_length - sb, 0.0)
        out[b, 8] = (horizon_steps - step_index[b]) * dt_s
        out[b, 9] = sb
        for i in range(K):
            rs = min(sb + route_ds[i], route_length)
            u = min(max(rs / ds, 0.0), P - 1.000001)
            k = np.int64(u)
            f = u - k
            rx = xy[k, 0] + f * (xy[k + 1, 0] - xy[k, 0])
            ry = xy[k, 1] + f * (xy[k + 1, 1] - xy[k, 1])
            dx = rx - ex
            dy = ry - ey
            out[b, ego_feat + 2 * i] = ce * dx + se * dy
            out[b, ego_feat + 2 * i + 1] = -se * dx + ce * dy
        for n in range(N):
            ax = x[b, n] - ex
            ay = y[b, n] - ey
            d2[n] = ax * ax + ay * ay if valid[b, n] else np.inf
        d2[0] = np.inf
        order = np.argsort(d2, kind="mergesort")
        a0 = ego_feat + 2 * K
        for j in range(m_):
            n = order[j]
            pres = 1.0 if d2[n] < np.inf else 0.0
            axo = x[b, n] - ex
            ayo = y[b, n] - ey
            ryaw = yaw[b, n] - eyaw
            cr = math.cos(ryaw)
            sr = math.sin(ryaw)
            va = v[b, n]
            o = a0 + n_feat * j
            out[b, o] = 1.0 * pres
            out[b, o + 1] = (ce * axo + se * ayo) * pres
            out[b, o + 2] = (ce * ayo - se * axo) * pres
            out[b, o + 3] = cr * pres
            out[b, o + 4] = sr * pres
            out[b, o + 5] = va * cr * pres
            out[b, o + 6] = va * sr * pres
            out[b, o + 7] = length[n] * pres
            out[b, o + 8] = width[n] * pres
    res = np.empty((B, size), dtype=np.float32)
    for b in range(B):
        for i in range(size):
            res[b, i] = np.float32(min(max(out[b, i], -bound), bound))
    return res


def _path_motion(xy, heading, ds, end_s, path_id, m, a, dt, lc_rate, lc_creep, x, y, yaw, v, acc, s, d, lc_hold, alive):  # type: ignore[no-untyped-def]
    """The path followers' motion (:class:`sim.motion.PathMotion`) (rows ``m`` (B, N)): speed, arc length and
    decaying lateral offset after acceleration ``a`` (m/s^2) for ``dt`` s; updates x, y, yaw, v,
    acc, s, d and alive (cleared past the path's end) in place."""
    B, N = s.shape
    P = xy.shape[1]
    two_pi = 2.0 * np.pi
    for b in range(B):
        for n in range(N):
            if not m[b, n]:
                continue
            q = path_id[b, n]
            vn = v[b, n]
            an = a[b, n]
            dn = d[b, n]
            v1 = max(vn + an * dt, 0.0)
            s1 = s[b, n] + 0.5 * (vn + v1) * dt
            if lc_hold[b, n] > 0:
                d1 = dn
            else:
                rate = lc_rate[n] * dt * min(max(vn / 5.0, lc_creep), 1.0)
                sg = 1.0 if dn > 0 else (-1.0 if dn < 0 else 0.0)
                d1 = dn - sg * min(abs(dn), rate)
            u = min(max(s1 / ds, 0.0), P - 1.000001)
            k = np.int64(u)
            f = u - k
            px = xy[q, k, 0] + f * (xy[q, k + 1, 0] - xy[q, k, 0])
            py = xy[q, k, 1] + f * (xy[q, k + 1, 1] - xy[q, k, 1])
            h = heading[q, k] + f * (heading[q, k + 1] - heading[q, k])
            # without a lateral offset the sine, cosine and arctangent are skipped where their
            # result is known exactly: px - (+-0) == px for px != 0 (h finite), and
            # atan2(+-0, y) == +-0 for y >= 1 (v1 not NaN)
            flat = d1 == 0.0 and math.isfinite(h)
            x[b, n] = px if flat and px != 0.0 else px - d1 * math.sin(h)
            y[b, n] = py if flat and py != 0.0 else py + d1 * math.cos(h)
            r = (d1 - dn) / dt
            turn = r if r == 0.0 and not math.isnan(v1) else math.atan2(r, max(v1, 1.0))
            yaw[b, n] = (h + turn + np.pi) % two_pi - np.pi
            v[b, n] = v1
            acc[b, n] = an
            s[b, n] = s1
            d[b, n] = d1
            if s1 > end_s[q]:
                alive[b, n] = False


def _ego_flags(mask, mx0, my0, mres, bits, bx0, by0, bres, ok_mask, n_sectors, ex, ey, eyaw, corner_lon, corner_lat):  # type: ignore[no-untyped-def]
    """Kernel of the engine's off-road test (a footprint corner off the drivable raster) and of
    :meth:`sim.rasters.LaneDirectionRaster.against` at the ego centre. Returns two (B,) bool arrays."""
    B = ex.shape[0]
    h, w = mask.shape
    hb, wb = bits.shape
    off = np.zeros(B, dtype=np.bool_)
    against = np.zeros(B, dtype=np.bool_)
    two_pi = 2.0 * np.pi
    for b in range(B):
        ce = math.cos(eyaw[b])
        se = math.sin(eyaw[b])
        for i in range(corner_lon.shape[0]):
            cx = ex[b] + ce * corner_lon[i] - se * corner_lat[i]
            cy = ey[b] + se * corner_lon[i] + ce * corner_lat[i]
            c = np.int64(np.floor((cx - mx0) / mres))
            r = np.int64(np.floor((cy - my0) / mres))
            if not (c >= 0 and c < w and r >= 0 and r < h and mask[r, c]):
                off[b] = True
        c = np.int64(np.floor((ex[b] - bx0) / bres))
        r = np.int64(np.floor((ey[b] - by0) / bres))
        if c >= 0 and c < wb and r >= 0 and r < hb:
            cell = bits[r, c]
            sec = np.int64(np.floor((eyaw[b] % two_pi) / (two_pi / n_sectors))) % n_sectors
            against[b] = cell != 0 and (cell & ok_mask[sec]) == 0
    return off, against


def _bicycle_clip_one(a0, a1, accel, steer, dt, decel_max, accel_max, jerk_max, steer_max, steer_rate_max):  # type: ignore[no-untyped-def]
    """One action [accel, steer] clipped to the bicycle's bounds and to what the jerk and steer-rate
    limits reach from the previous ``accel``, ``steer`` in ``dt`` s."""
    acc = min(max(a0, -decel_max), accel_max)
    acc = min(max(acc, accel - jerk_max * dt), accel + jerk_max * dt)
    st = min(max(a1, -steer_max), steer_max)
    st = min(max(st, steer - steer_rate_max * dt), steer + steer_rate_max * dt)
    return acc, st


_clip_one_nb = _jit(_bicycle_clip_one)


def _bicycle_clip(accel, steer, a, dt, decel_max, accel_max, jerk_max, steer_max, steer_rate_max):  # type: ignore[no-untyped-def]
    """:meth:`sim.dynamics.KinematicBicycle.clip_action` over 1-D state arrays, actions (n, 2)."""
    n = accel.shape[0]
    out = np.empty((n, 2))
    for b in range(n):
        out[b, 0], out[b, 1] = _clip_one_nb(a[b, 0], a[b, 1], accel[b], steer[b], dt, decel_max, accel_max, jerk_max, steer_max, steer_rate_max)
    return out


def _bicycle_one(x, y, yaw, v, accel, steer, a0, a1, dt, decel_max, accel_max, jerk_max, steer_max, steer_rate_max, speed_max, wheelbase):  # type: ignore[no-untyped-def]
    """One vehicle of :func:`_bicycle_forward`: the action (a0, a1) clipped, then integrated for
    ``dt`` s. Returns x, y, yaw, v, accel, steer."""
    acc, st = _clip_one_nb(a0, a1, accel, steer, dt, decel_max, accel_max, jerk_max, steer_max, steer_rate_max)
    v1 = min(max(v + acc * dt, 0.0), speed_max)
    vm = 0.5 * (v + v1)
    yaw1 = yaw + vm * math.tan(st) / wheelbase * dt
    hmid = 0.5 * (yaw + yaw1)
    two_pi = 2.0 * np.pi
    return x + vm * math.cos(hmid) * dt, y + vm * math.sin(hmid) * dt, (yaw1 + np.pi) % two_pi - np.pi, v1, acc, st


bicycle_one_nb = _jit(_bicycle_one)


def _bicycle_forward(x, y, yaw, v, accel, steer, a, dt, decel_max, accel_max, jerk_max, steer_max, steer_rate_max, speed_max, wheelbase):  # type: ignore[no-untyped-def]
    """:meth:`sim.dynamics.KinematicBicycle.forward` over 1-D state arrays (n,), actions (n, 2):
    the action clipped, then integrated for ``dt`` s. Returns x, y, yaw, v, accel, steer (6, n)."""
    n = x.shape[0]
    out = np.empty((6, n))
    for b in range(n):
        out[0, b], out[1, b], out[2, b], out[3, b], out[4, b], out[5, b] = bicycle_one_nb(
            x[b], y[b], yaw[b], v[b], accel[b], steer[b], a[b, 0], a[b, 1], dt, decel_max, accel_max, jerk_max, steer_max, steer_rate_max, speed_max, wheelbase,
        )  # fmt: skip
    return out


conflict_stops_nb = _jit(_conflict_stops)
contact_interval_nb = _jit(_contact_interval)
project_nb = _jit(_project)
state_obs_nb = _jit(_state_obs)
path_motion_nb = _jit(_path_motion)
ego_flags_nb = _jit(_ego_flags)
bicycle_clip_nb = _jit(_bicycle_clip)
bicycle_forward_nb = _jit(_bicycle_forward)
