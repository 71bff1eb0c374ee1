"""The vectorised motion of the actors: what a behaviour (:mod:`sim.behavior`) does each step.

Every :class:`~sim.behavior.Behavior` names the :class:`Motion` that moves its actors. The engine
groups the slots by motion and, each step, calls each motion once with the mask of its slots
(``rows``, (1, N)) and a :class:`StepContext`: the arrays of the B batched worlds (B, N) after the
ego has moved. A motion reads the world before any actor moved (``ctx.pre``) and writes only its
own rows of the output arrays, so motions do not depend on their order. At a reset, ``start``
places its rows (:class:`ResetContext`).

Built-in motions (units SI: m, s, m/s, m/s^2):

* :class:`PathMotion` (``idm``, ``mobil``): along a lane path (:mod:`sim.paths`) with the IDM
  acceleration (:mod:`sim.idm`) behind the leader on the path or a yield line at a junction,
  the scripted brake, MOBIL lane changes (:mod:`sim.mobil`) for the rows that change lanes, and
  the integration of speed, arc length and a lateral offset that decays over
  ``lane_change_time``: all in one compiled call per step (:data:`sim.kernels_path.path_step_nb`);
* :class:`ConstantVelocityMotion`: straight along the heading towards ``speed``;
* :class:`ReplayMotion`: the logged poses, absent outside the track's time span;
* :class:`StaticMotion`: does not move.

A plug-in behaviour may bring its own :class:`Motion` subclass (a ``kind`` other than the four
above gets no lane path or replay table from the compiler; it moves from the poses alone).
What a scenario compiles per kind (lane paths for ``path``, replay tables for ``replay``) stays in
:mod:`sim.engine_compile`: those tables are shared by all rows and built once.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from sim.geometry import fclip
from sim.kernels_path import LC_CREEP, path_step_nb
from sim.step_context import ResetContext, StepContext

__all__ = ["LC_CREEP", "ConstantVelocityMotion", "Motion", "PathMotion", "ReplayMotion", "ResetContext", "StaticMotion", "StepContext"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B_ = NDArray[np.bool_]

class Motion:
    """How the rows of some behaviours move; subclasses override :meth:`start` and :meth:`advance`."""

    kind: ClassVar[str] = "custom"

    @staticmethod
    def start(ctx: ResetContext, rows: B_) -> None:
        """Place ``rows`` (N,) at a reset (default: where the world puts them)."""

    @staticmethod
    def advance(ctx: StepContext, rows: B_) -> None:
        """Move ``rows`` (1, N) by one step (default: stay)."""


class StaticMotion(Motion):
    """Stays where it is, at rest."""

    kind = "static"

    @staticmethod
    def start(ctx: ResetContext, rows: B_) -> None:
        ctx.v[:, rows] = 0.0


class ConstantVelocityMotion(Motion):
    """Straight along the heading; the speed goes to ``speed`` (NaN = keep the current one) within
    [-brake_decel, a_max] m/s^2, or down to ``brake_to_speed`` while the scripted brake is on."""

    kind = "constant_velocity"

    @staticmethod
    def advance(ctx: StepContext, rows: B_) -> None:
        R, dt = ctx.c.row, ctx.dt
        m = rows & ctx.spawned
        if not m.any():
            return
        x, y, yaw, v = ctx.pre
        braking = ctx.braking
        vt = np.where(R["speed_nan"], v, R["p_speed"])
        vt = np.where(braking, np.minimum(vt, R["p_brake_to_speed"]), vt)
        a_cv = fclip((vt - v) / dt, -R["p_brake_decel"], R["p_a_max"])
        v1 = np.maximum(v + a_cv * dt, 0.0)
        vm = 0.5 * (v + v1)
        ctx.x = np.where(m, x + vm * np.cos(yaw) * dt, ctx.x)
        ctx.y = np.where(m, y + vm * np.sin(yaw) * dt, ctx.y)
        ctx.acc = np.where(m, a_cv, ctx.acc)
        ctx.v = np.where(m, v1, ctx.v)


class ReplayMotion(Motion):
    """The logged pose at each step (``Compiled.replay_*``), present only within the track's span."""

    kind = "replay"

    @staticmethod
    def start(ctx: ResetContext, rows: B_) -> None:
        c = ctx.c
        ctx.x[:, rows] = c.replay_pose[0, rows, 0]
        ctx.y[:, rows] = c.replay_pose[0, rows, 1]
        ctx.yaw[:, rows] = c.replay_pose[0, rows, 3]
        ctx.v[:, rows] = c.replay_speed[0, rows]
        ctx.valid[:, rows] &= c.replay_valid[0, rows]

    @staticmethod
    def advance(ctx: StepContext, rows: B_) -> None:
        c, dt = ctx.c, ctx.dt
        kk = np.minimum(ctx.k, c.horizon_steps)
        rp = c.replay_pose[kk]  # (B, N, 4)
        ctx.x = np.where(rows, rp[..., 0], ctx.x)
        ctx.y = np.where(rows, rp[..., 1], ctx.y)
        ctx.yaw = np.where(rows, rp[..., 3], ctx.yaw)
        v_new = c.replay_speed[kk]
        ctx.acc = np.where(rows, (v_new - ctx.pre[3]) / dt, ctx.acc)
        ctx.v = np.where(rows, v_new, ctx.v)
        ctx.hidden |= rows & ~c.replay_valid[kk]


class PathMotion(Motion):
    """Along a lane path with IDM, junction yielding, the scripted brake and (for the rows of
    lane-changing behaviours) MOBIL; see the module docstring."""

    kind = "path"

    @staticmethod
    def start(ctx: ResetContext, rows: B_) -> None:
        c = ctx.c
        px, py, h = c.paths.sample(c.path0, c.s0)
        # path followers start exactly on their path (plus the lateral offset of a pending lane change)
        d = np.where(np.abs(c.d0) > 0.75, c.d0, 0.0)
        ctx.x[:, rows] = (px - d * np.sin(h))[rows]
        ctx.y[:, rows] = (py + d * np.cos(h))[rows]
        ctx.yaw[:, rows] = h[rows]
        ctx.d[:, rows] = d[rows]
        ctx.lc_hold[:, rows] = np.where(np.abs(d) > 0, c.params["lane_change_after_s"], 0.0)[rows]

    @staticmethod
    def advance(ctx: StepContext, rows: B_) -> None:
        path_step_nb(
            *ctx.c.row["path_step"], rows[0], ctx.k, ctx.dt, ctx.spawned, *ctx.pre, ctx.state.valid, ctx.state.v0_scale,
            ctx.x, ctx.y, ctx.yaw, ctx.v, ctx.acc, ctx.path_id, ctx.s, ctx.d, ctx.lc_timer, ctx.lc_hold, ctx.alive,
        )  # fmt: skip
