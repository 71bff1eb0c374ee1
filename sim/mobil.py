"""MOBIL lane changes (Kesting, Treiber and Helbing 2007) for the path followers of ``mobil``
behaviours: change to a neighbour lane's path when

    a_new - a_now + politeness * ((a_new_follower' - a_new_follower) + (a_old_follower' - a_old_follower))
        > threshold

and neither the actor nor its new follower would brake harder than ``b_safe`` (m/s^2), with both
new gaps above 0.5 m. All accelerations are IDM's (:mod:`sim.idm`) with the actor's parameters.
Decisions are taken every ``lc_check_s`` seconds (all MOBIL actors on the same steps), at most
one change per ``lc_cooldown`` s, never during a lane change or within 15 m of the lane's end.
Vectorised over the B worlds and the actors due a decision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sim.idm import IdmArrays, idm_accel
from sim.paths import PathTable, path_neighbours, project_on_paths
from sim.step_context import StepContext

__all__ = ["mobil_changes"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B_ = NDArray[np.bool_]

_PARAMS = ("a_max", "b_comf", "s0", "T", "delta", "decel_max", "v0", "b_safe", "politeness", "threshold", "lc_cooldown")


@dataclass(frozen=True, eq=False)
class _Deciders:
    """The actors due a decision, as columns ``cols`` of the (B, N) arrays: their path, arc length,
    speed, size, parameters (1, m), desired-speed scale, what they see, and their current leader
    gap / speed / acceleration and old follower's accelerations without and with them."""

    cols: I64
    due: B_
    pid: I64
    s: F64
    v: F64
    L: F64
    W: F64
    P: dict[str, F64]
    idm: IdmArrays
    scale: F64
    allowed: B_
    gap: F64
    a_cur: F64
    a_old: F64
    a_old_new: F64


def mobil_changes(ctx: StepContext, props: F64, allowed: B_, gap: F64, v_lead: F64, a_cur: F64, is_path: B_) -> None:
    """Apply MOBIL's lane changes to ``ctx`` (path, arc length, lateral offset, cool-down timer of
    the actors that change). ``props`` (B, N, 6) and ``allowed`` (B, N, N) as for
    :func:`sim.paths.path_neighbours`; ``gap``, ``v_lead``, ``a_cur`` (B, N) each actor's leader gap
    (m), leader speed (m/s) and IDM acceleration (m/s^2) on its current path; ``is_path`` the rows
    that move along paths this step."""
    c = ctx.c
    due = ((ctx.k[:, None] % c.row["lc_check_every"]) == 0) & c.row["mobil"]  # all MOBIL actors decide on the same steps
    if not due.any():
        return
    due &= is_path & (ctx.lc_timer <= 0) & (np.abs(ctx.d) < 0.05)
    if not due.any():
        return
    q = _deciders(ctx, due, props, allowed, gap, v_lead, a_cur)
    best_gain, best_q, best_s = _best_change(c.paths, q, props)
    changed = np.isfinite(best_gain)
    if not changed.any():
        return
    cols = q.cols
    # lateral offset of the current position from the new path
    _, d_new = project_on_paths(c.paths, best_q, best_s, ctx.pre[0][:, cols], ctx.pre[1][:, cols])
    ctx.path_id[:, cols] = np.where(changed, best_q, q.pid)
    ctx.s[:, cols] = np.where(changed, best_s, q.s)
    ctx.d[:, cols] = np.where(changed, d_new, ctx.d[:, cols])
    ctx.lc_timer[:, cols] = np.where(changed, q.P["lc_cooldown"], ctx.lc_timer[:, cols])


def _deciders(ctx: StepContext, due: B_, props: F64, allowed: B_, gap: F64, v_lead: F64, a_cur: F64) -> _Deciders:
    """The columns (slots) due a decision in some world, with what the decision reads."""
    c, paths = ctx.c, ctx.c.paths
    B = ctx.s.shape[0]
    cols = np.flatnonzero(due.any(axis=0))
    pid, sc, vc = ctx.path_id[:, cols], ctx.s[:, cols], ctx.pre[3][:, cols]
    alw = allowed[:, cols]
    gap_c, vl_c = gap[:, cols], v_lead[:, cols]
    L = np.repeat(c.length[cols][None], B, axis=0)
    W = np.repeat(c.width[cols][None], B, axis=0)
    Pc = {n: c.params[n][cols][None, :] for n in _PARAMS}
    idm = IdmArrays(Pc["a_max"], Pc["b_comf"], Pc["s0"], Pc["T"], Pc["delta"], Pc["decel_max"])
    scale = ctx.state.v0_scale[:, cols]
    lim_now = paths.speed_limit[pid, paths.vertex(pid, sc)]
    v0 = np.where(np.isnan(Pc["v0"]), lim_now, Pc["v0"]) * scale
    # old follower: behind me on my path
    g_of, v_of, who_of = path_neighbours(paths, pid, sc, W, props, alw, backward=True)
    g_of = g_of - 0.5 * L
    has_of = who_of >= 0
    v_o = np.where(has_of, v_of, 0.0)
    a_o = np.where(has_of, idm_accel(v_o, vc, g_of, v0, idm), 0.0)
    a_o_new = np.where(has_of, idm_accel(v_o, vl_c, g_of + L + gap_c, v0, idm), 0.0)
    return _Deciders(cols, due[:, cols], pid, sc, vc, L, W, Pc, idm, scale, alw, gap_c, a_cur[:, cols], a_o, a_o_new)


def _best_change(paths: PathTable, q: _Deciders, props: F64) -> tuple[F64, I64, F64]:
    """Per decider (B, m): the best incentive over the left and right neighbour paths (``-inf`` when
    no change qualifies), that path and the arc length on it."""
    kv = paths.vertex(q.pid, q.s)
    lane = paths.lane[q.pid, kv]
    lane_s = paths.lane_s[q.pid, kv]
    best_gain = np.full(q.s.shape, -np.inf)
    best_q = q.pid.copy()
    best_s = q.s.copy()
    for side in (paths.left, paths.right):
        tgt = side[lane]
        ok = q.due & (tgt >= 0) & (lane_s < paths.lane_length[lane] - 15.0)
        if not ok.any():
            continue
        tl = np.maximum(tgt, 0)
        path = paths.lane_path[tl]
        s_t = lane_s * (paths.lane_length[tl] / np.maximum(paths.lane_length[lane], 1e-6))
        gain, safe = _incentive(paths, q, props, path, s_t)
        take = ok & safe & (gain > q.P["threshold"]) & (gain > best_gain)
        best_gain = np.where(take, gain, best_gain)
        best_q = np.where(take, path, best_q)
        best_s = np.where(take, s_t, best_s)
    return best_gain, best_q, best_s


def _incentive(paths: PathTable, q: _Deciders, props: F64, path: I64, s_t: F64) -> tuple[F64, B_]:
    """MOBIL's incentive (m/s^2) of moving to ``path`` at arc length ``s_t`` and whether it is safe."""
    P, L = q.P, q.L
    g_nl, v_nl, _ = path_neighbours(paths, path, s_t, q.W, props, q.allowed)
    g_nl = g_nl - 0.5 * L
    g_nf, v_nf, who_nf = path_neighbours(paths, path, s_t, q.W, props, q.allowed, backward=True)
    g_nf = g_nf - 0.5 * L
    lim_t = paths.speed_limit[path, paths.vertex(path, s_t)]
    v0_t = np.where(np.isnan(P["v0"]), lim_t, P["v0"]) * q.scale
    a_c_new = idm_accel(q.v, v_nl, g_nl, v0_t, q.idm)
    has_nf = who_nf >= 0
    v_n = np.where(has_nf, v_nf, 0.0)
    a_n = np.where(has_nf, idm_accel(v_n, v_nl, g_nf + L + g_nl, v0_t, q.idm), 0.0)
    a_n_new = np.where(has_nf, idm_accel(v_n, q.v, g_nf, v0_t, q.idm), 0.0)
    safe = (a_n_new >= -P["b_safe"]) & (a_c_new >= -P["b_safe"]) & (g_nf > 0.5) & (g_nl > 0.5)
    gain = a_c_new - q.a_cur + P["politeness"] * ((a_n_new - a_n) + (q.a_old_new - q.a_old))
    return gain, safe
