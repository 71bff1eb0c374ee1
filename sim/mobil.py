"""MOBIL lane changes (Kesting, Treiber and Helbing 2007) for the path followers of ``mobil``
behaviours: change to a neighbour lane's path when

    a_new - a_now + politeness * ((a_new_follower' - a_new_follower) + (a_old_follower' - a_old_follower))
        > threshold

and neither the actor nor its new follower would brake harder than ``b_safe`` (m/s^2), with both
new gaps above 0.5 m. All accelerations are IDM's (:func:`sim.idm.idm_one`) with the deciding
actor's parameters. Decisions are taken every ``lc_check_s`` seconds (all MOBIL actors on the same
steps), at most one change per ``lc_cooldown`` s, never during a lane change or within 15 m of the
lane's end.

:func:`mobil_decide` is one actor's decision, a numba function called by the engine's compiled
path step (:data:`sim.kernels_path.path_step_nb`) for every actor due a decision; its neighbour
searches are :func:`sim.paths.path_neighbours`' (one query each). Units: m, s, m/s, m/s^2.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

from sim.idm import idm_one
from sim.kernels_neighbours import neighbour_one_nb

__all__ = ["mobil_decide"]

#: m: no lane change starts this close to the end of the lane
END_CLEARANCE_M = 15.0


def _jit(fn: Any, **kw: Any) -> Any:
    return numba.njit(cache=True, **kw)(fn)


def _vertex(s: float, ds: float, P: int) -> int:
    """:meth:`sim.paths.PathTable.vertex`: the vertex at or before ``s`` (clipped)."""
    return min(max(int(s / ds), 0), P - 1)


vertex_nb = _jit(_vertex, inline="always")


def _follower(xy, heading, cos_h, sin_h, ds, q, sq, W, L, px, py, fx, fy, pyaw, pv, plen, pwid, allow, idx, wx, wy, reach, gf, gi):  # type: ignore[no-untyped-def]
    """The follower behind arc length ``sq`` on path ``q``: (gap minus ``L``/2 m, speed m/s, found)."""
    g, v, n = neighbour_one_nb(xy, heading, cos_h, sin_h, ds, q, sq, W, 0.0, px, py, fx, fy, pyaw, pv, plen, pwid, allow, 12, 4, True, idx, wx, wy, reach, gf, gi)
    return g - 0.5 * L, v, n >= 0


follower_nb = _jit(_follower, inline="always")


def _mobil_decide(  # type: ignore[no-untyped-def]
    xy, heading, cos_h, sin_h, ds, speed_limit, lane, lane_s, lane_path, left, right, lane_length,
    px, py, fx, fy, pyaw, pv, plen, pwid, allow, pid, sc, vc, gap_c, vl_c, a_cur, scale, L, W,
    a_max, b_comf, s0, T, delta, decel_max, v0p, b_safe, politeness, threshold, idx, wx, wy, reach, gf, gi,
):  # fmt: skip
    """One actor's decision: on path ``pid`` at arc length ``sc`` with speed ``vc``, its leader gap
    ``gap_c`` (own half length taken off) and speed ``vl_c``, its current acceleration ``a_cur``,
    desired-speed scale ``scale``, size ``L`` x ``W``, its IDM and MOBIL parameters (``v0p`` NaN =
    the speed limit). The actors it sees: columns ``px .. pwid`` and ``allow`` (N,). Returns the
    best incentive over the left and right neighbour paths (``-inf`` when no change qualifies),
    that path and the arc length on it. ``idx .. gi``: the neighbour search's scratch and the
    world's actor grid (:func:`sim.kernels_neighbours.grid_build_nb`)."""
    P = xy.shape[1]
    lim_now = speed_limit[pid, vertex_nb(sc, ds, P)]
    v0 = (lim_now if math.isnan(v0p) else v0p) * scale
    # old follower: behind me on my path
    g_of, v_of, has_of = follower_nb(xy, heading, cos_h, sin_h, ds, pid, sc, W, L, px, py, fx, fy, pyaw, pv, plen, pwid, allow, idx, wx, wy, reach, gf, gi)
    v_o = v_of if has_of else 0.0
    a_o = idm_one(v_o, vc, g_of, v0, a_max, b_comf, s0, T, delta, decel_max) if has_of else 0.0
    a_o_new = idm_one(v_o, vl_c, g_of + L + gap_c, v0, a_max, b_comf, s0, T, delta, decel_max) if has_of else 0.0
    kv = vertex_nb(sc, ds, P)
    ln = lane[pid, kv]
    ls = lane_s[pid, kv]
    best_gain = -np.inf
    best_q = pid
    best_s = sc
    for side in range(2):
        tgt = left[ln] if side == 0 else right[ln]
        if not (tgt >= 0 and ls < lane_length[ln] - END_CLEARANCE_M):
            continue
        path = lane_path[tgt]
        s_t = ls * (lane_length[tgt] / max(lane_length[ln], 1e-6))
        g_nl, v_nl, _ = neighbour_one_nb(xy, heading, cos_h, sin_h, ds, path, s_t, W, 0.0, px, py, fx, fy, pyaw, pv, plen, pwid, allow, 12, 4, False, idx, wx, wy, reach, gf, gi)
        g_nl = g_nl - 0.5 * L
        g_nf, v_nf, has_nf = follower_nb(xy, heading, cos_h, sin_h, ds, path, s_t, W, L, px, py, fx, fy, pyaw, pv, plen, pwid, allow, idx, wx, wy, reach, gf, gi)
        lim_t = speed_limit[path, vertex_nb(s_t, ds, P)]
        v0_t = (lim_t if math.isnan(v0p) else v0p) * scale
        a_c_new = idm_one(vc, v_nl, g_nl, v0_t, a_max, b_comf, s0, T, delta, decel_max)
        v_n = v_nf if has_nf else 0.0
        a_n = idm_one(v_n, v_nl, g_nf + L + g_nl, v0_t, a_max, b_comf, s0, T, delta, decel_max) if has_nf else 0.0
        a_n_new = idm_one(v_n, vc, g_nf, v0_t, a_max, b_comf, s0, T, delta, decel_max) if has_nf else 0.0
        safe = a_n_new >= -b_safe and a_c_new >= -b_safe and g_nf > 0.5 and g_nl > 0.5
        gain = a_c_new - a_cur + politeness * ((a_n_new - a_n) + (a_o_new - a_o))
        if safe and gain > threshold and gain > best_gain:
            best_gain = gain
            best_q = path
            best_s = s_t
    return best_gain, best_q, best_s


mobil_decide = _jit(_mobil_decide)
