"""The functional core: ``reset(spec, rng) -> SimState`` and ``step(state, ego_action, rng) -> SimState``.

The env, the batch runner and notebooks all drive episodes through these functions. A
:class:`SimState` is immutable (its arrays are read-only) and always **batched**: every per-world
array has a leading axis of B independent worlds (B = 1 from :func:`reset`; :func:`reset_batch`
makes more), so :func:`step` moves B worlds at once. For the common case (the compiled kinematic
bicycle and the built-in motions) a step is a handful of compiled calls over the batched arrays
-- the ego's move (:mod:`sim.kernels_ego`), the path followers' step (:mod:`sim.kernels_path`),
the metrics -- with Python only at the boundary; other dynamics models and plug-in motions run
their own (numpy) code between the same calls.

What does not change during an episode (lane map, paths, log-replay poses, per-actor behaviour
parameters, the drivable-area raster, the ego's dynamics model) lives in a shared
:class:`Compiled` scenario, built once by :func:`compile_scenario` (:mod:`sim.engine_compile`)
and reused across resets.

Per step (``dt_s`` seconds): the ego moves by its :class:`~sim.dynamics.DynamicsModel` under the
action (clipped to the model's limits; ``action_clipped`` says when); then every actor moves by
its behaviour's :class:`~sim.motion.Motion`, one call per motion over all its rows; then the
metrics of the step are computed for the ego: collision and the partner's id and the minimum
time-to-collision (:mod:`sim.safety`: exact constant-velocity contact times; ``inf`` beyond
:data:`~sim.safety.TTC_SIGNAL_HORIZON_S`), off-road (a footprint corner outside the lane areas),
wrong-way (heading more than 90 degrees from the route while within ``OFF_ROUTE_M`` of it, or from
every lane under the ego's centre; see :class:`~sim.rasters.LaneDirectionRaster`), off-route
(``metrics()["off_route"]``: more than ``OFF_ROUTE_M`` beside the route), route progress (m along
the route) and jerk (m/s^3). The episode terminates on a collision, off-road or route completion
and is truncated at the horizon.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sim.dynamics import VehicleState
from sim.engine_compile import Compiled, compile_scenario, load_scene
from sim.engine_state import _ROW_FIELDS, OFF_ROUTE_M, SimState, merge_rows  # noqa: F401  (_ROW_FIELDS: env and tests slice rows by it)
from sim.errors import EpisodeStateError
from sim.kernels_ego import ego_metrics_nb, ego_move_nb, engine_step_nb, step_arrays_nb
from sim.motion import ConstantVelocityMotion, PathMotion, ReplayMotion, StaticMotion
from sim.paths import project_on_paths
from sim.rasters import LANE_SECTORS, DrivableRaster, LaneDirectionRaster
from sim.safety import TTC_SIGNAL_HORIZON_S
from sim.spec import ScenarioSpec
from sim.step_context import ResetContext, StepContext
from sim.world import SceneLike

__all__ = [
    "LANE_SECTORS",
    "OFF_ROUTE_M",
    "TTC_SIGNAL_HORIZON_S",
    "Compiled",
    "DrivableRaster",
    "LaneDirectionRaster",
    "SimState",
    "StepThreads",
    "compile_scenario",
    "load_scene",
    "merge_rows",
    "reset",
    "reset_batch",
    "step",
]

log = logging.getLogger(__name__)

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B_ = NDArray[np.bool_]


# ==================================================================================== reset
#: the motions whose ``start`` places rows from the compiled scenario alone (no generator, no state)
_PURE_START = (PathMotion, ReplayMotion, StaticMotion, ConstantVelocityMotion)


def _start_rows(c: Compiled, B: int) -> tuple[ResetContext, F64, F64]:
    """The (B, N) poses, presence, offsets and holds of B worlds placed by their motions, the arc
    lengths (ego: its route projection) and the ego's lateral offset from the route (B,)."""
    w = c.world0
    N = c.num_slots
    rc = ResetContext(
        c=c, x=np.tile(w.x, (B, 1)), y=np.tile(w.y, (B, 1)), yaw=np.tile(w.yaw, (B, 1)), v=np.tile(w.speed, (B, 1)),
        valid=np.tile(w.valid & (c.spawn_step <= 0), (B, 1)), d=np.zeros((B, N)), lc_hold=np.zeros((B, N)),
    )  # fmt: skip
    for motion, rows in c.motions:
        motion.start(rc, rows[0])
    s = np.tile(c.s0, (B, 1))
    ego_s, ego_lat = c.row["route_polyline"].project(np.stack([rc.x[:, 0], rc.y[:, 0]], axis=-1))
    s[:, 0] = ego_s
    return rc, s, np.asarray(ego_lat, dtype=np.float64)


def _start_template(c: Compiled) -> tuple[ResetContext, F64, F64] | None:
    """:func:`_start_rows` of one world, computed once per compiled scenario (the same for every
    world and every reset) when every motion's ``start`` is a built-in one; None otherwise."""
    if not all(m in _PURE_START for m, _ in c.motions):
        return None
    tpl = c.row.get("reset_template")
    if tpl is None:
        tpl = c.row["reset_template"] = _start_rows(c, 1)
    return tpl


def reset_batch(compiled: Compiled, rngs: Sequence[np.random.Generator]) -> SimState:
    """B worlds at the start of the episode, world b seeded by ``rngs[b]``."""
    c = compiled
    B, N = len(rngs), c.num_slots
    jit = c.params["v0_jitter"]
    v0s = np.stack([1.0 + jit * (2.0 * r.random(N) - 1.0) for r in rngs]) if B else np.zeros((0, N))
    tpl = _start_template(c)
    if tpl is None:
        rc, s, ego_lat = _start_rows(c, B)
    else:
        t, s1, lat1 = tpl
        rep = lambda a: np.repeat(a, B, axis=0)  # noqa: E731
        rc = ResetContext(c=c, x=rep(t.x), y=rep(t.y), yaw=rep(t.yaw), v=rep(t.v), valid=rep(t.valid), d=rep(t.d), lc_hold=rep(t.lc_hold))
        s, ego_lat = rep(s1), rep(lat1)
    zb = np.zeros(B)
    f = np.zeros(B, dtype=bool)
    return SimState._of(c, dict(
        step_index=np.zeros(B, dtype=np.int64), t_us=np.full(B, c.t0_us, dtype=np.int64),
        x=rc.x, y=rc.y, yaw=rc.yaw, v=rc.v, accel=np.zeros((B, N)), valid=rc.valid,
        alive=np.tile((np.asarray([bool(i) for i in c.ids])), (B, 1)), path_id=np.tile(c.path0, (B, 1)), s=s, d=rc.d,
        lc_timer=np.zeros((B, N)), lc_hold=rc.lc_hold, v0_scale=v0s, steer=zb.copy(), ego_lat=ego_lat,
        terminated=f, truncated=f.copy(), collision=f.copy(), collision_partner=np.full(B, -1, dtype=np.int64),
        offroad=f.copy(), wrong_way=f.copy(), route_complete=f.copy(), progress=zb.copy(), min_ttc=np.full(B, np.inf),
        jerk=zb.copy(), action_clipped=f.copy(),
    ))  # fmt: skip


def reset(spec: ScenarioSpec | Compiled, rng: np.random.Generator, *, scene: SceneLike | None = None) -> SimState:
    """One world (B = 1) at the start of the episode described by ``spec`` (a ScenarioSpec, compiled
    on the fly, or an already :class:`Compiled` one, which is much faster)."""
    c = spec if isinstance(spec, Compiled) else compile_scenario(spec, scene)
    return reset_batch(c, [rng])


# ==================================================================================== step
def _action_rows(state: SimState, ego_action: ArrayLike) -> F64:
    """The ego action as (B, 2); a bad shape raises."""
    B = state.batch_size
    a = np.asarray(ego_action, dtype=np.float64)
    if a.shape == (2,):
        a = np.broadcast_to(a, (B, 2))
    if a.shape != (B, 2):
        raise EpisodeStateError(f"expected an ego action of shape (2,) or ({B}, 2), got {a.shape}", field="action")
    return a


def _refuse(status: int, a: F64) -> None:
    """Raise for a refused step: ``status`` 1 = a non-finite action, 2 = a world already done."""
    if status == 1:
        raise EpisodeStateError(f"the ego action must be finite, got {a.tolist() if a.size <= 8 else 'non-finite values'}", field="action")
    if status == 2:
        raise EpisodeStateError("the episode is over (terminated or truncated); reset before stepping again")


def _checked_action(state: SimState, ego_action: ArrayLike) -> F64:
    """The ego action as (B, 2); bad shapes, non-finite values and finished episodes raise."""
    a = _action_rows(state, ego_action)
    _refuse(1 if not np.all(np.isfinite(a)) else 2 if state.done.any() else 0, a)
    return a


def _move_ego(state: SimState, a: F64) -> tuple[VehicleState, B_]:
    """The ego after one step through the scenario's dynamics model, and whether the action was
    clipped to the model's limits."""
    c = state.compiled
    model, dt = c.dynamics, c.dt_s
    now = VehicleState(state.x[:, 0], state.y[:, 0], state.yaw[:, 0], state.v[:, 0], state.accel[:, 0], state.steer)
    applied = model.clip_action(now, a, dt)
    clipped = np.any(np.abs(applied - a) > 1e-9, axis=-1)
    return model.forward(now, applied, dt), clipped


def _move_actors(state: SimState, o: F64, k: I64) -> StepContext:
    """Every actor moved by its motion (one call per motion over its rows); ``o`` the moved ego
    (the rows of :data:`sim.kernels_ego.ego_move_nb`)."""
    c = state.compiled
    f, m = step_arrays_nb(state.x, state.y, state.yaw, state.v, state.accel, state.s, state.d, state.lc_timer, state.lc_hold, state.alive, c.spawn_step, k, o)
    pre = (f[0], f[1], f[2], f[3])
    for a in pre:
        a.flags.writeable = False
    ctx = StepContext(
        c=c, state=state, k=k, dt=c.dt_s, spawned=m[0], pre=pre, x=f[4], y=f[5], yaw=f[6], v=f[7], acc=f[8], path_id=state.path_id.copy(),
        s=f[9], d=f[10], lc_timer=f[11], lc_hold=f[12], alive=m[1], hidden=m[2],
    )  # fmt: skip
    for motion, rows in c.motions:
        motion.advance(ctx, rows)
    return ctx


class StepThreads:
    """Worker threads that share :func:`step`'s compiled call among them: the B worlds are cut
    into ``threads`` contiguous slices, one compiled call each (it releases the GIL), and the
    blocks are joined. Every world is computed alone, so the results are the same bits as one
    call. Owned by one env (no global pool); :meth:`close` stops the threads.

    Args:
        threads: the number of slices (and of threads, the caller's included), >= 1.
        min_worlds: no slice gets fewer worlds (below ``2 * min_worlds`` the step is one call).
    """

    def __init__(self, threads: int, min_worlds: int = 8) -> None:
        if int(threads) < 1:
            raise ValueError(f"expected threads >= 1, got {threads}")
        self.threads = int(threads)
        self.min_worlds = max(int(min_worlds), 1)
        self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="loopdrive-step") if self.threads > 1 else None

    def slices(self, batch: int) -> list[tuple[int, int]]:
        """The [lo, hi) world slices of a step of ``batch`` worlds."""
        n = max(1, min(self.threads, batch // self.min_worlds))
        cuts = [batch * j // n for j in range(n + 1)]
        return list(itertools.pairwise(cuts))

    def close(self) -> None:
        """Stop the worker threads (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def run(self, fused: object, args: tuple[NDArray[Any], ...]) -> tuple[Any, ...]:
        """:data:`sim.kernels_ego.engine_step_nb` over ``args`` (arrays with the worlds on axis 0),
        slice by slice; returns its (status, blocks...) as one call would."""
        parts = self.slices(args[0].shape[0])
        if self._pool is None or len(parts) < 2:
            return engine_step_nb(fused, *args)
        futures = [self._pool.submit(engine_step_nb, fused, *(x[lo:hi] for x in args)) for lo, hi in parts[1:]]
        lo, hi = parts[0]
        res = [engine_step_nb(fused, *(x[lo:hi] for x in args))] + [fu.result() for fu in futures]
        codes = {int(r[0]) for r in res}
        status = 1 if 1 in codes else 2 if 2 in codes else 0  # one call checks every action first, then done
        f, m, pid, g, fl, i = (np.concatenate([r[j] for r in res], axis=0 if j == 3 else 1) for j in range(1, 7))
        return status, f, m, pid, g, fl, i


def _fused_step(state: SimState, fused: object, a: F64, threads: StepThreads | None = None) -> SimState:
    """:func:`step` as one call of :data:`sim.kernels_ego.engine_step_nb` (or one per slice of
    worlds with ``threads``); the new state's arrays are views of the blocks, made read-only."""
    st = state
    args = (
        st.x, st.y, st.yaw, st.v, st.accel, st.valid, st.alive, st.path_id, st.s, st.d, st.lc_timer, st.lc_hold, st.v0_scale, st.steer,
        st.step_index, st.terminated, st.truncated, a,
    )  # fmt: skip
    status, f, m, pid, g, fl, i = engine_step_nb(fused, *args) if threads is None else threads.run(fused, args)
    if status:
        _refuse(status, a)
    for blk in (f, m, pid, g, fl, i):
        blk.flags.writeable = False
    _, _, _, _, x, y, yaw, v, acc, s, d, lc_timer, lc_hold = f
    valid, alive = m
    steer, ego_lat, min_ttc, progress, jerk = g
    collision, offroad, wrong_way, complete, terminated, truncated, clipped = fl
    k, t_us, partner = i
    return SimState._of_readonly(state.compiled, (
        k, t_us, x, y, yaw, v, acc, valid, alive, pid, s, d, lc_timer, lc_hold, st.v0_scale, steer, ego_lat, terminated, truncated, collision,
        partner, offroad, wrong_way, complete, progress, min_ttc, jerk, clipped,
    ))  # fmt: skip


def step(state: SimState, ego_action: ArrayLike, rng: np.random.Generator | None = None, *, threads: StepThreads | None = None) -> SimState:
    """Advance every world by ``dt_s``.

    Args:
        state: B worlds, none of them done.
        ego_action: (2,) or (B, 2) [accel m/s^2, steer rad]; clipped to the bicycle limits
            (``action_clipped`` says when).
        rng: the episode generator (reserved for stochastic behaviours; the built-ins are
            deterministic given the reset).
        threads: share the compiled step of the common case among these threads (same bits);
            other dynamics models and plug-in motions ignore it.

    Raises:
        EpisodeStateError: a non-finite action, or a world that is already done.
    """
    c = state.compiled
    fused = c.row["engine_step"]
    if fused is not None:  # the common case: one compiled call
        return _fused_step(state, fused, _action_rows(state, ego_action), threads)
    k = state.step_index + 1
    bicycle = c.row["ego_move"]
    if bicycle is not None:  # the checks, the compiled kinematic bicycle and the route projection, one call
        a = _action_rows(state, ego_action)
        o, status = ego_move_nb(
            state.x, state.y, state.yaw, state.v, state.accel, state.steer, a, c.dt_s, *bicycle, c.paths.xy, c.paths.heading, c.paths.ds, state.s,
            state.terminated, state.truncated,
        )  # fmt: skip
        _refuse(status, a)
    else:
        a = _checked_action(state, ego_action)
        e1, clipped = _move_ego(state, a)
        ego_s, ego_lat = project_on_paths(c.paths, np.zeros(state.batch_size, dtype=np.int64), state.s[:, 0], e1.x, e1.y)
        o = np.stack([e1.x, e1.y, e1.yaw, e1.v, e1.accel, e1.steer, clipped, ego_s, ego_lat]).astype(np.float64)
    ctx = _move_actors(state, o, k)
    valid, partner, fl, flags, t_us = ego_metrics_nb(
        ctx.x, ctx.y, ctx.yaw, ctx.v, c.length, c.width, ctx.spawned, ctx.alive, ctx.hidden, TTC_SIGNAL_HORIZON_S, *c.row["ego_metrics"],
        o, state.s, state.accel, k, c.horizon_steps, c.dt_s, c.t0_us, c.dt_us,
    )  # fmt: skip
    return SimState._of(c, {
        "step_index": k, "t_us": t_us, "x": ctx.x, "y": ctx.y, "yaw": ctx.yaw, "v": ctx.v, "accel": ctx.acc,
        "valid": valid, "alive": ctx.alive, "path_id": ctx.path_id, "s": ctx.s, "d": ctx.d, "lc_timer": ctx.lc_timer, "lc_hold": ctx.lc_hold,
        "v0_scale": state.v0_scale, "steer": o[5], "ego_lat": o[8], "terminated": flags[4], "truncated": flags[5], "collision": flags[0],
        "collision_partner": partner, "offroad": flags[1], "wrong_way": flags[2], "route_complete": flags[3], "progress": fl[1],
        "min_ttc": fl[0], "jerk": fl[2], "action_clipped": o[6] > 0.0,
    })  # fmt: skip
