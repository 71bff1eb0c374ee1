"""The functional core: ``reset(spec, rng) -> SimState`` and ``step(state, ego_action, rng) -> SimState``.

The env, the batch runner and notebooks all drive episodes through these functions. A
:class:`SimState` is immutable (its arrays are read-only) and always **batched**: every per-world
array has a leading axis of B independent worlds (B = 1 from :func:`reset`; :func:`reset_batch`
makes more), so :func:`step` moves B worlds with one set of numpy operations and no Python loop
over actors or worlds.

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

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sim.dynamics import VehicleState
from sim.engine_compile import Compiled, compile_scenario, load_scene
from sim.engine_state import _ROW_FIELDS, OFF_ROUTE_M, SimState, merge_rows  # noqa: F401  (_ROW_FIELDS: env and tests slice rows by it)
from sim.errors import EpisodeStateError
from sim.kernels_ego import ego_metrics_nb, ego_move_nb
from sim.map import Polyline
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
def reset_batch(compiled: Compiled, rngs: Sequence[np.random.Generator]) -> SimState:
    """B worlds at the start of the episode, world b seeded by ``rngs[b]``."""
    c = compiled
    B, N = len(rngs), c.num_slots
    w = c.world0
    jit = c.params["v0_jitter"]
    v0s = np.stack([1.0 + jit * (2.0 * r.random(N) - 1.0) for r in rngs]) if B else np.zeros((0, N))
    rc = ResetContext(
        c=c, x=np.tile(w.x, (B, 1)), y=np.tile(w.y, (B, 1)), yaw=np.tile(w.yaw, (B, 1)), v=np.tile(w.speed, (B, 1)),
        valid=np.tile(w.valid & (c.spawn_step <= 0), (B, 1)), d=np.zeros((B, N)), lc_hold=np.zeros((B, N)),
    )  # fmt: skip
    for motion, rows in c.motions:
        motion.start(rc, rows[0])
    s = np.tile(c.s0, (B, 1))
    ego_s, ego_lat = Polyline(c.paths.xy[0]).project(np.stack([rc.x[:, 0], rc.y[:, 0]], axis=-1))
    s[:, 0] = ego_s
    zb = np.zeros(B)
    f = np.zeros(B, dtype=bool)
    return SimState(
        compiled=c, step_index=np.zeros(B, dtype=np.int64), t_us=np.full(B, c.t0_us, dtype=np.int64),
        x=rc.x, y=rc.y, yaw=rc.yaw, v=rc.v, accel=np.zeros((B, N)), valid=rc.valid,
        alive=np.tile((np.asarray([bool(i) for i in c.ids])), (B, 1)), path_id=np.tile(c.path0, (B, 1)), s=s, d=rc.d,
        lc_timer=np.zeros((B, N)), lc_hold=rc.lc_hold, v0_scale=v0s, steer=zb.copy(), ego_lat=np.asarray(ego_lat, dtype=np.float64),
        terminated=f, truncated=f.copy(), collision=f.copy(), collision_partner=np.full(B, -1, dtype=np.int64),
        offroad=f.copy(), wrong_way=f.copy(), route_complete=f.copy(), progress=zb.copy(), min_ttc=np.full(B, np.inf),
        jerk=zb.copy(), action_clipped=f.copy(),
    )  # fmt: skip


def reset(spec: ScenarioSpec | Compiled, rng: np.random.Generator, *, scene: SceneLike | None = None) -> SimState:
    """One world (B = 1) at the start of the episode described by ``spec`` (a ScenarioSpec, compiled
    on the fly, or an already :class:`Compiled` one, which is much faster)."""
    c = spec if isinstance(spec, Compiled) else compile_scenario(spec, scene)
    return reset_batch(c, [rng])


# ==================================================================================== step
def _checked_action(state: SimState, ego_action: ArrayLike) -> F64:
    """The ego action as (B, 2); bad shapes, non-finite values and finished episodes raise."""
    B = state.batch_size
    a = np.asarray(ego_action, dtype=np.float64)
    if a.shape == (2,):
        a = np.broadcast_to(a, (B, 2))
    if a.shape != (B, 2):
        raise EpisodeStateError(f"expected an ego action of shape (2,) or ({B}, 2), got {a.shape}", field="action")
    if not np.all(np.isfinite(a)):
        raise EpisodeStateError(f"the ego action must be finite, got {a.tolist() if a.size <= 8 else 'non-finite values'}", field="action")
    if state.done.any():
        raise EpisodeStateError("the episode is over (terminated or truncated); reset before stepping again")
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


def _move_actors(state: SimState, e1: VehicleState, ego_s: F64, k: I64) -> StepContext:
    """Every actor moved by its motion (one call per motion over its rows)."""
    c = state.compiled
    pre = []
    for arr, col in ((state.x, e1.x), (state.y, e1.y), (state.yaw, e1.yaw), (state.v, e1.v)):
        a = arr.copy()
        a[:, 0] = col
        a.flags.writeable = False
        pre.append(a)
    acc = state.accel.copy()
    acc[:, 0] = e1.accel
    s = state.s.copy()
    s[:, 0] = ego_s
    ctx = StepContext(
        c=c, state=state, k=k, dt=c.dt_s, spawned=(c.spawn_step[None, :] <= k[:, None]) & state.alive, pre=(pre[0], pre[1], pre[2], pre[3]),
        x=pre[0].copy(), y=pre[1].copy(), yaw=pre[2].copy(), v=pre[3].copy(), acc=acc, path_id=state.path_id.copy(), s=s,
        d=state.d.copy(), lc_timer=state.lc_timer, lc_hold=state.lc_hold, alive=state.alive.copy(), hidden=np.zeros_like(state.valid),
    )  # fmt: skip
    for motion, rows in c.motions:
        motion.advance(ctx, rows)
    return ctx


def _ego_flags_of_step(state: SimState, e1: VehicleState, ctx: StepContext, ego_s: F64, ego_lat: F64) -> dict[str, NDArray[Any]]:
    """The per-step metrics of the ego (collision, partner, TTC, off-road, wrong-way, completion),
    one compiled call (:data:`sim.kernels_ego.ego_metrics_nb`)."""
    c = state.compiled
    valid, partner, ttc, flags = ego_metrics_nb(
        ctx.x, ctx.y, ctx.yaw, ctx.v, c.length, c.width, ctx.spawned, ctx.alive, ctx.hidden, TTC_SIGNAL_HORIZON_S, *c.row["ego_metrics"], ego_s, ego_lat
    )  # fmt: skip
    return {
        "valid": valid, "collision": flags[0], "collision_partner": partner, "min_ttc": ttc, "offroad": flags[1], "wrong_way": flags[2],
        "route_complete": flags[3],  # the front bumper reached the end
    }  # fmt: skip


def step(state: SimState, ego_action: ArrayLike, rng: np.random.Generator | None = None) -> SimState:
    """Advance every world by ``dt_s``.

    Args:
        state: B worlds, none of them done.
        ego_action: (2,) or (B, 2) [accel m/s^2, steer rad]; clipped to the bicycle limits
            (``action_clipped`` says when).
        rng: the episode generator (reserved for stochastic behaviours; the built-ins are
            deterministic given the reset).

    Raises:
        EpisodeStateError: a non-finite action, or a world that is already done.
    """
    c = state.compiled
    a = _checked_action(state, ego_action)
    k = state.step_index + 1
    bicycle = c.row["ego_move"]
    if bicycle is not None:  # the compiled kinematic bicycle and route projection, one call
        o = ego_move_nb(state.x, state.y, state.yaw, state.v, state.accel, state.steer, a, c.dt_s, *bicycle, c.paths.xy, c.paths.heading, c.paths.ds, state.s)
        e1, clipped, ego_s, ego_lat = VehicleState(o[0], o[1], o[2], o[3], o[4], o[5]), o[6] > 0.0, o[7], o[8]
    else:
        e1, clipped = _move_ego(state, a)
        ego_s, ego_lat = project_on_paths(c.paths, np.zeros(state.batch_size, dtype=np.int64), state.s[:, 0], e1.x, e1.y)
    ctx = _move_actors(state, e1, ego_s, k)
    m = _ego_flags_of_step(state, e1, ctx, ego_s, ego_lat)
    terminated = m["collision"] | m["offroad"] | m["route_complete"]
    return SimState(
        compiled=c, step_index=k, t_us=c.t0_us + k * c.dt_us, x=ctx.x, y=ctx.y, yaw=ctx.yaw, v=ctx.v, accel=ctx.acc,
        valid=m["valid"], alive=ctx.alive, path_id=ctx.path_id, s=ctx.s, d=ctx.d, lc_timer=ctx.lc_timer, lc_hold=ctx.lc_hold,
        v0_scale=state.v0_scale, steer=e1.steer, ego_lat=ego_lat, terminated=terminated,
        truncated=(k >= c.horizon_steps) & ~terminated, collision=m["collision"], collision_partner=m["collision_partner"],
        offroad=m["offroad"], wrong_way=m["wrong_way"], route_complete=m["route_complete"], progress=ego_s - state.s[:, 0],
        min_ttc=m["min_ttc"], jerk=(e1.accel - state.accel[:, 0]) / c.dt_s, action_clipped=clipped,
    )  # fmt: skip
