"""Vehicle dynamics: the :class:`DynamicsModel` protocol, its registry, and the kinematic bicycle.

A dynamics model maps a :class:`VehicleState` and an action to the next state (``forward``) and two
states back to the action between them (``inverse``), vectorised over any leading shape (the
engine passes its B worlds' egos, a planner its P proposals). The engine moves the ego only
through this protocol (``clip_action`` says which action ``forward`` really applies, so the engine
can report ``action_clipped``); models are looked up by name in :data:`DYNAMICS` (third parties add
more through the ``loopdrive.dynamics`` entry-point group) with a factory taking the ego's length.

State (:class:`VehicleState`, arrays of any common shape, e.g. ``(B,)``): position ``x, y`` of the
box centre (world, m), heading ``yaw`` (rad), speed ``v`` (m/s, >= 0), and the *applied*
acceleration ``accel`` (m/s^2) and front-wheel ``steer`` angle (rad) of the previous step (needed for
the jerk and steer-rate limits; a model without steering keeps ``steer`` 0).

The kinematic bicycle's actions are ``(..., 2)`` arrays ``[accel m/s^2, steer rad]``. The box
centre moves along the box heading (the convention of drive logs, whose yaw is the direction of
travel; Waymax's invertible bicycle does the same): ``yaw' = v * tan(steer) / wheelbase``, position
along the mean heading of the step, integrated with the mean speed of the step. ``inverse``
solves the same discretisation for the action, so ``forward(s, inverse(s, s', dt), dt)`` reproduces
the speed and heading of ``s'`` exactly (position to the chord-versus-arc error) whenever that
action lies within the limits.

Two backends evaluate that one model: ``"numpy"`` (ufuncs, any shape; the planners' forecasts) and
``"numba"`` (the compiled kernel :data:`sim.kernels.bicycle_forward_nb`, the engine's fast path).
They run the same arithmetic in the same order but take ``tan`` from different libraries (numpy's
SIMD routine vs libm), which may differ in the last bit; ``tests/test_dynamics.py`` compares them on
random inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sim.geometry import fclip, wrap_angle
from sim.kernels import bicycle_clip_nb, bicycle_forward_nb
from sim.registry import Registry

__all__ = ["DYNAMICS", "BicycleLimits", "BicycleState", "DynamicsModel", "KinematicBicycle", "VehicleState"]

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class VehicleState:
    """Vehicle state arrays (all the same shape); see the module docstring for units."""

    x: F64
    y: F64
    yaw: F64
    v: F64
    accel: F64
    steer: F64

    @classmethod
    def from_arrays(cls, x: ArrayLike, y: ArrayLike, yaw: ArrayLike, v: ArrayLike, accel: ArrayLike | None = None, steer: ArrayLike | None = None) -> VehicleState:
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


#: the name the state had when the bicycle was the only model
BicycleState = VehicleState


@runtime_checkable
class DynamicsModel(Protocol):
    """A vehicle model the engine moves the ego with (vectorised over any leading shape)."""

    def clip_action(self, state: VehicleState, action: ArrayLike, dt: float) -> F64:
        """The action ``forward`` really applies from ``state`` (within the model's limits)."""
        ...

    def forward(self, state: VehicleState, action: ArrayLike, dt: float) -> VehicleState:
        """The state ``dt`` seconds later under ``action`` (clipped as :meth:`clip_action` says)."""
        ...

    def inverse(self, state: VehicleState, next_state: VehicleState, dt: float) -> F64:
        """The (unclipped) action taking ``state`` to ``next_state`` in ``dt`` seconds."""
        ...


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
class KinematicBicycle:
    """Kinematic bicycle with ``wheelbase`` (m) and actuation ``limits``, evaluated by ``backend``
    (``"numpy"`` or ``"numba"``; see the module docstring)."""

    wheelbase: float = 2.8
    limits: BicycleLimits = BicycleLimits()
    backend: Literal["numpy", "numba"] = "numpy"

    @classmethod
    def for_vehicle(cls, length_m: float) -> KinematicBicycle:
        """The engine's ego model for a box ``length_m`` long: wheelbase 0.6 x length (at least
        1.5 m), default limits, compiled backend."""
        return cls(wheelbase=max(1.5, 0.6 * float(length_m)), backend="numba")

    def clip_action(self, state: VehicleState, action: ArrayLike, dt: float) -> F64:
        """The action actually applied: within the accel/steer bounds and reachable from the
        previous accel/steer under the jerk and steer-rate limits. Shape (..., 2)."""
        a = np.asarray(action, dtype=np.float64)
        lim = self.limits
        if self.backend == "numba":
            if a.shape == (np.size(state.accel), 2) and np.ndim(state.accel) == 1 and np.ndim(state.steer) == 1:  # (B,) rows as they are
                return bicycle_clip_nb(state.accel, state.steer, a, dt, lim.decel_max, lim.accel_max, lim.jerk_max, lim.steer_max, lim.steer_rate_max)
            shp = np.shape(state.accel)
            u = bicycle_clip_nb(_flat(state.accel, shp), _flat(state.steer, shp), _flat(a, (*shp, 2)).reshape(-1, 2), dt,
                                lim.decel_max, lim.accel_max, lim.jerk_max, lim.steer_max, lim.steer_rate_max)  # fmt: skip
            return np.asarray(u).reshape((*shp, 2))
        acc = fclip(a[..., 0], -lim.decel_max, lim.accel_max)
        acc = fclip(acc, state.accel - lim.jerk_max * dt, state.accel + lim.jerk_max * dt)
        st = fclip(a[..., 1], -lim.steer_max, lim.steer_max)
        st = fclip(st, state.steer - lim.steer_rate_max * dt, state.steer + lim.steer_rate_max * dt)
        return np.stack([acc, st], axis=-1)

    def forward(self, state: VehicleState, action: ArrayLike, dt: float, *, clip: bool = True) -> VehicleState:
        """Advance by ``dt`` seconds under ``action`` (..., 2) = [accel m/s^2, steer rad] (clipped to the
        limits unless ``clip`` is False). Speed stays in [0, speed_max]; a stop ends the step at rest."""
        if self.backend == "numba":
            return self._forward_compiled(state, action, dt, clip)
        u = self.clip_action(state, action, dt) if clip else np.asarray(action, dtype=np.float64)
        acc, st = u[..., 0], u[..., 1]
        v1 = fclip(state.v + acc * dt, 0.0, self.limits.speed_max)
        vm = 0.5 * (state.v + v1)
        yaw1 = state.yaw + vm * np.tan(st) / self.wheelbase * dt
        hmid = 0.5 * (state.yaw + yaw1)
        x1 = state.x + vm * np.cos(hmid) * dt
        y1 = state.y + vm * np.sin(hmid) * dt
        return VehicleState(x1, y1, wrap_angle(yaw1), v1, acc, st)

    def _forward_compiled(self, state: VehicleState, action: ArrayLike, dt: float, clip: bool) -> VehicleState:
        """:meth:`forward` through the compiled kernel (unclipped = infinite action limits)."""
        lim = self.limits
        inf = np.inf
        bounds = (lim.decel_max, lim.accel_max, lim.jerk_max, lim.steer_max, lim.steer_rate_max) if clip else (inf, inf, inf, inf, inf)
        fields = (state.x, state.y, state.yaw, state.v, state.accel, state.steer)
        a = np.asarray(action, dtype=np.float64)
        if a.shape == (np.size(state.x), 2) and np.ndim(state.x) == 1:  # (B,) rows as they are (fields share x's shape)
            o = bicycle_forward_nb(*fields, a, dt, *bounds, lim.speed_max, self.wheelbase)
            return VehicleState(o[0], o[1], o[2], o[3], o[4], o[5])
        shp = np.shape(state.x)
        o = bicycle_forward_nb(*(_flat(f, shp) for f in fields), _flat(a, (*shp, 2)).reshape(-1, 2), dt, *bounds, lim.speed_max, self.wheelbase)
        return VehicleState(*(o[i].reshape(shp) for i in range(6)))

    def inverse(self, state: VehicleState, next_state: VehicleState, dt: float) -> F64:
        """The action (..., 2) [accel, steer] taking ``state`` to ``next_state`` in ``dt`` (unclipped).

        Acceleration from the speed change; steer from the heading change over the distance
        travelled (the mean speed of the step). Steer is 0 when the vehicle does not move.
        """
        acc = (next_state.v - state.v) / dt
        vm = 0.5 * (state.v + next_state.v)
        dyaw = wrap_angle(next_state.yaw - state.yaw)
        st = np.where(vm > 1e-6, np.arctan(dyaw * self.wheelbase / np.maximum(vm * dt, 1e-12)), 0.0)
        return np.stack([acc, st], axis=-1)

    def states_from_poses(self, x: ArrayLike, y: ArrayLike, yaw: ArrayLike, dt: float) -> VehicleState:
        """States (T, ...) along a sampled trajectory: speeds from the distance between consecutive
        poses (averages of the neighbouring steps' mean speeds)."""
        x, y, yaw = (np.asarray(a, dtype=np.float64) for a in (x, y, yaw))
        d = np.hypot(np.diff(x, axis=0), np.diff(y, axis=0)) / dt  # mean speed of each step (T-1)
        v = np.concatenate([d[:1], 0.5 * (d[1:] + d[:-1]), d[-1:]], axis=0)
        return VehicleState.from_arrays(x, y, yaw, v)


def _flat(a: ArrayLike, shape: tuple[int, ...]) -> F64:
    """``a`` as float64 broadcast to ``shape`` and flattened (a view when it already has it)."""
    arr = np.asarray(a, dtype=np.float64)
    return arr.reshape(-1) if arr.shape == shape else np.broadcast_to(arr, shape).reshape(-1)


#: name -> factory ``(ego_length_m) -> DynamicsModel``; plug-ins through ``loopdrive.dynamics``
DYNAMICS: Registry[Callable[[float], DynamicsModel]] = Registry("dynamics model", "loopdrive.dynamics")
DYNAMICS.register("kinematic_bicycle", KinematicBicycle.for_vehicle)
