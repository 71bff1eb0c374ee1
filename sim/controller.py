"""Trajectory tracking: the one pure-pursuit steering law, and the tracker built on it (pure pursuit
plus a PI speed controller).

:func:`pure_pursuit_steer` is the steering of every tracker in loopdrive: this module's
:class:`TrajectoryController` (the env's trajectory actions, the batch runner's trajectory plans,
the NeuroNCAP reference run) and the reference planners (their route following and forecasts).
Pure pursuit (Coulter 1992) steers the point of the vehicle whose heading follows
``yaw' = v tan(steer) / wheelbase`` (:func:`pursuit_offset` behind the box centre) onto the circle
through a target point: ``steer = atan(2 wheelbase sin(alpha) / d)``, alpha the target's bearing
from the heading and d its distance.

A planned trajectory is K future positions (x, y) in the **ego frame** (x forward, y left, metres,
origin at the ego box centre) at times ``dt, 2 dt, ..., K dt`` seconds from now. The controller
turns it into bicycle controls [accel m/s^2, steer rad] (see :mod:`sim.dynamics`):

* steering: :func:`pure_pursuit_steer` towards the point of the trajectory polyline (starting at
  the ego) at arc length ``lookahead = max(lookahead_min, lookahead_time * v)`` (no steering when
  that point is within 0.5 m: a plan that does not move);
* speed: the planned speed is the mean speed over the first ``speed_horizon`` points; the
  acceleration is ``kp * (v_plan - v) + ki * integral`` with the integral clamped (anti wind-up).

Vectorised over a leading batch axis. The integral is explicit state (returned and passed back),
so the controller itself is stateless and deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sim.geometry import wrap_angle

__all__ = ["ARRAY_MATH", "SCALAR_MATH", "PursuitMath", "TrajectoryController", "pure_pursuit_steer", "pursuit_offset"]

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class PursuitMath:
    """The elementary functions :func:`pure_pursuit_steer` evaluates its formula with."""

    atan2: Callable[[Any, Any], Any]
    sin: Callable[[Any], Any]
    atan: Callable[[Any], Any]
    maximum: Callable[[Any, Any], Any]


#: numpy ufuncs: arrays of any shape
ARRAY_MATH = PursuitMath(np.arctan2, np.sin, np.arctan, np.maximum)
#: Python's ``math`` (libm): one vehicle as floats. numpy's SIMD atan2 / atan may differ from
#: libm's in the last bit, so a caller keeps the arithmetic its recorded results were made with.
SCALAR_MATH = PursuitMath(math.atan2, math.sin, math.atan, max)


def pure_pursuit_steer(dx: Any, dy: Any, heading: Any, wheelbase: float, min_dist: float = 1.0, fn: PursuitMath = ARRAY_MATH) -> Any:
    """Front-wheel angle (rad) that puts the pursuit point on the circle through a target ``dx``,
    ``dy`` (m, world frame, from the pursuit point) given the ``heading`` (rad):
    ``atan(2 wheelbase sin(alpha) / max(d, min_dist))`` with ``alpha`` the target's bearing from the
    heading (wrapped to [-pi, pi)) and ``d`` its distance (m)."""
    alpha = wrap_angle(fn.atan2(dy, dx) - heading)
    dist = fn.maximum(np.hypot(dx, dy), min_dist)
    return fn.atan(2.0 * wheelbase * fn.sin(alpha) / dist)


def pursuit_offset(model: Any) -> float:
    """Distance (m) from a vehicle model's reference point (the box centre) back to the point whose
    heading follows ``yaw' = v tan(steer) / L`` -- where pure pursuit is exact: ``lr`` for a
    centre-of-gravity bicycle, 0 for the engine's model, which turns about its reference point."""
    lr = getattr(model, "lr", 0.0)
    return float(model.wheelbase / 2.0 if lr is None else lr)


@dataclass(frozen=True)
class TrajectoryController:
    """Pure pursuit + PI speed control.

    Attributes:
        wheelbase: m (match the ego's bicycle).
        dt: s between trajectory points.
        lookahead_min: m; lookahead_time: s (lookahead grows with speed).
        speed_horizon: number of leading points whose mean speed is the target.
        kp: 1/s proportional speed gain; ki: 1/s^2 integral gain; integral_max: m/s clamp.
    """

    wheelbase: float = 2.76
    dt: float = 0.5
    lookahead_min: float = 3.0
    lookahead_time: float = 0.8
    speed_horizon: int = 2
    kp: float = 1.5
    ki: float = 0.1
    integral_max: float = 2.0

    def __call__(self, trajectory: ArrayLike, speed: ArrayLike, integral: ArrayLike, sim_dt: float) -> tuple[F64, F64]:
        """Controls (B, 2) and the new speed-error integral (B,) for trajectories (B, K, 2) (or
        (K, 2) with scalar ``speed``), ego speeds (B,) m/s and the previous integral (B,) m."""
        tr = np.asarray(trajectory, dtype=np.float64)
        single = tr.ndim == 2
        if single:
            tr = tr[None]
        v = np.atleast_1d(np.asarray(speed, dtype=np.float64))
        integ = np.atleast_1d(np.asarray(integral, dtype=np.float64))
        B, K, _ = tr.shape
        pts = np.concatenate([np.zeros((B, 1, 2)), tr], axis=1)  # start at the ego
        seg = np.linalg.norm(np.diff(pts, axis=1), axis=-1)  # (B, K)
        cum = np.concatenate([np.zeros((B, 1)), np.cumsum(seg, axis=1)], axis=1)
        nh = max(1, min(self.speed_horizon, K))
        v_plan = cum[:, nh] / (nh * self.dt)
        # pure pursuit target at the lookahead arc length (the last point when the plan is shorter)
        ld = np.maximum(self.lookahead_min, self.lookahead_time * v)
        ld_eff = np.minimum(ld, cum[:, -1])
        j = np.clip(np.sum(cum < ld_eff[:, None], axis=1), 1, K)  # segment index (1-based end point)
        bi = np.arange(B)
        p0, p1 = pts[bi, j - 1], pts[bi, j]
        f = np.where(seg[bi, j - 1] > 1e-9, (ld_eff - cum[bi, j - 1]) / np.maximum(seg[bi, j - 1], 1e-9), 0.0)
        tgt = p0 + np.clip(f, 0.0, 1.0)[:, None] * (p1 - p0)
        d2 = np.sum(tgt * tgt, axis=-1)
        steer = np.where(d2 > 0.25, pure_pursuit_steer(tgt[:, 0], tgt[:, 1], 0.0, self.wheelbase, min_dist=0.5), 0.0)
        err = v_plan - v
        integ_new = np.clip(integ + err * sim_dt, -self.integral_max, self.integral_max)
        accel = self.kp * err + self.ki * integ_new
        out = np.stack([accel, steer], axis=-1)
        return out, integ_new
