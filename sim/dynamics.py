"""Vehicle dynamics: a kinematic bicycle with forward and inverse models.

State (:class:`BicycleState`, arrays of any common shape, e.g. ``(B, N)``): position ``x, y`` of the
box centre (world, m), heading ``yaw`` (rad), speed ``v`` (m/s, >= 0), and the *applied*
acceleration ``accel`` (m/s^2) and front-wheel ``steer`` angle (rad) of the previous step (needed for
the jerk and steer-rate limits). Actions are ``(..., 2)`` arrays ``[accel m/s^2, steer rad]``.

The model is the kinematic bicycle with the box centre moving along the box heading (the
convention of drive logs, whose yaw is the direction of travel; Waymax's invertible bicycle does
the same): ``yaw' = v * tan(steer) / wheelbase``, position along the mean heading of the step,
integrated with the mean speed of the step. ``inverse`` solves the same discretisation for the
action, so ``forward(s, inverse(s, s', dt), dt)`` reproduces the speed and heading of ``s'``
exactly (position to the chord-versus-arc error) whenever that action lies within the limits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sim.geometry import wrap_angle

__all__ = ["BicycleLimits", "BicycleState", "KinematicBicycle"]

F64 = NDArray[np.float64]


def fclip(a, lo, hi):  # type: ignore[no-untyped-def]
    """``np.clip`` without its dispatch overhead (same values for finite inputs)."""
    return np.minimum(np.maximum(a, lo), hi)


@dataclass(frozen=True)
class BicycleLimits:
    """Actuation limits (SI units). Defaults suit a passenger car.

    Attributes:
        accel_max: 3.0 m/s^2 maximum acceleration.
        decel_max: 8.0 m/s^2 maximum braking (positive number; about 0.8 g emergency braking).
        jerk_max: 15.0 m/s^3 maximum rate of change of acceleration.
        steer_max: 0.6 rad maximum front-wheel angle.
        steer_rate_max: 1.0 rad/s maximum front-wheel angle rate.
        speed_max: 40.0 m/s; speed is also kept >= 0 (no reversing).
    """

    accel_max: float = 3.0
    decel_max: float = 8.0
    jerk_max: float = 15.0
    steer_max: float = 0.6
    steer_rate_max: float = 1.0
    speed_max: float = 40.0


@dataclass(frozen=True)
class BicycleState:
    """Bicycle state arrays (all the same shape); see the module docstring for units."""

    x: F64
    y: F64
    yaw: F64
    v: F64
    accel: F64
    steer: F64

    @classmethod
    def from_arrays(cls, x: ArrayLike, y: ArrayLike, yaw: ArrayLike, v: ArrayLike, accel: ArrayLike | None = None, steer: ArrayLike | None = None) -> BicycleState:
        xs = np.asarray(x, dtype=np.float64)
        z = np.zeros_like(xs)
        return cls(
            xs,
            np.asarray(y, dtype=np.float64),
            np.asarray(yaw, dtype=np.float64),
            np.asarray(v, dtype=np.float64),
            z if accel is None else np.asarray(accel, dtype=np.float64),
            z if steer is None else np.asarray(steer, dtype=np.float64),
        )


@dataclass(frozen=True)
class KinematicBicycle:
    """Kinematic bicycle with ``wheelbase`` (m) and actuation ``limits``."""

    wheelbase: float = 2.8
    limits: BicycleLimits = BicycleLimits()

    def clip_action(self, state: BicycleState, action: ArrayLike, dt: float) -> F64:
        """The action actually applied: within the accel/steer bounds and reachable from the
        previous accel/steer under the jerk and steer-rate limits. Shape (..., 2)."""
        a = np.asarray(action, dtype=np.float64)
        lim = self.limits
        acc = fclip(a[..., 0], -lim.decel_max, lim.accel_max)
        acc = fclip(acc, state.accel - lim.jerk_max * dt, state.accel + lim.jerk_max * dt)
        st = fclip(a[..., 1], -lim.steer_max, lim.steer_max)
        st = fclip(st, state.steer - lim.steer_rate_max * dt, state.steer + lim.steer_rate_max * dt)
        return np.stack([acc, st], axis=-1)

    def forward(self, state: BicycleState, action: ArrayLike, dt: float, *, clip: bool = True) -> BicycleState:
        """Advance by ``dt`` seconds under ``action`` (..., 2) = [accel m/s^2, steer rad] (clipped to the
        limits unless ``clip`` is False). Speed stays in [0, speed_max]; a stop ends the step at rest."""
        u = self.clip_action(state, action, dt) if clip else np.asarray(action, dtype=np.float64)
        acc, st = u[..., 0], u[..., 1]
        v1 = fclip(state.v + acc * dt, 0.0, self.limits.speed_max)
        vm = 0.5 * (state.v + v1)
        yaw1 = state.yaw + vm * np.tan(st) / self.wheelbase * dt
        hmid = 0.5 * (state.yaw + yaw1)
        x1 = state.x + vm * np.cos(hmid) * dt
        y1 = state.y + vm * np.sin(hmid) * dt
        return BicycleState(x1, y1, wrap_angle(yaw1), v1, acc, st)

    def inverse(self, state: BicycleState, next_state: BicycleState, dt: float) -> F64:
        """The action (..., 2) [accel, steer] taking ``state`` to ``next_state`` in ``dt`` (unclipped).

        Acceleration from the speed change; steer from the heading change over the distance
        travelled (the mean speed of the step). Steer is 0 when the vehicle does not move.
        """
        acc = (next_state.v - state.v) / dt
        vm = 0.5 * (state.v + next_state.v)
        dyaw = wrap_angle(next_state.yaw - state.yaw)
        st = np.where(vm > 1e-6, np.arctan(dyaw * self.wheelbase / np.maximum(vm * dt, 1e-12)), 0.0)
        return np.stack([acc, st], axis=-1)

    def states_from_poses(self, x: ArrayLike, y: ArrayLike, yaw: ArrayLike, dt: float) -> BicycleState:
        """States (T, ...) along a sampled trajectory: speeds from the distance between consecutive
        poses (averages of the neighbouring steps' mean speeds)."""
        x, y, yaw = (np.asarray(a, dtype=np.float64) for a in (x, y, yaw))
        d = np.hypot(np.diff(x, axis=0), np.diff(y, axis=0)) / dt  # mean speed of each step (T-1)
        v = np.concatenate([d[:1], 0.5 * (d[1:] + d[:-1]), d[-1:]], axis=0)
        return BicycleState.from_arrays(x, y, yaw, v)
