"""Trajectory tracking: pure pursuit for steering plus a PI speed controller.

A planned trajectory is K future positions (x, y) in the **ego frame** (x forward, y left, metres,
origin at the ego box centre) at times ``dt, 2 dt, ..., K dt`` seconds from now. The controller
turns it into bicycle controls [accel m/s^2, steer rad] (see :mod:`sim.dynamics`):

* steering: pure pursuit (Coulter 1992) towards the point of the trajectory polyline (starting at
  the ego) at arc length ``lookahead = max(lookahead_min, lookahead_time * v)``; curvature
  ``2 y / d^2`` at that point, steer ``atan(wheelbase * curvature)``;
* speed: the planned speed is the mean speed over the first ``speed_horizon`` points; the
  acceleration is ``kp * (v_plan - v) + ki * integral`` with the integral clamped (anti wind-up).

Vectorised over a leading batch axis. The integral is explicit state (returned and passed back),
so the controller itself is stateless and deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["TrajectoryController"]

F64 = NDArray[np.float64]


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
        curv = np.where(d2 > 0.25, 2.0 * tgt[:, 1] / np.maximum(d2, 1e-9), 0.0)
        steer = np.arctan(self.wheelbase * curv)
        err = v_plan - v
        integ_new = np.clip(integ + err * sim_dt, -self.integral_max, self.integral_max)
        accel = self.kp * err + self.ki * integ_new
        out = np.stack([accel, steer], axis=-1)
        return out, integ_new
