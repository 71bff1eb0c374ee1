"""Actor behaviours: log replay, IDM along a lane route, IDM + MOBIL lane changes, constant
velocity, static.

Behaviours are looked up by name in :data:`BEHAVIORS` (third parties add more through the
``loopdrive.behaviors`` entry-point group). Each declares its parameters with units and defaults
(:attr:`Behavior.defaults`; a scenario sets them in ``BehaviorSpec.params``) and the vectorised
:class:`~sim.motion.Motion` that moves its actors every step (:attr:`Behavior.motion`; the engine
dispatches to it with the mask of the behaviour's rows, see :mod:`sim.motion`).

Path-following behaviours (``idm``, ``mobil``) move actors along lane **paths** (:mod:`sim.paths`):
an actor on a path is (path id, arc length ``s``, lateral offset ``d``); a lane change switches to
the neighbour lane's path and lets ``d`` decay to zero. Car following is IDM (:mod:`sim.idm`),
junctions are first-come-first-served (:func:`sim.paths.conflict_stops`), lane changes MOBIL
(:mod:`sim.mobil`).

* **Scripted braking**: every moving behaviour accepts ``brake_at_s`` (s after the episode start),
  ``brake_decel`` (m/s^2) and ``brake_to_speed`` (m/s) for "lead vehicle brakes hard" scenarios.
"""

from __future__ import annotations

import math
from abc import ABC
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from sim.errors import ScenarioError
from sim.geometry import fclip
from sim.idm import idm_accel
from sim.motion import ConstantVelocityMotion, Motion, PathMotion, ReplayMotion, StaticMotion
from sim.paths import (
    PathTable,
    build_path_table,
    conflict_stops,
    lane_conflicts,
    path_neighbours,
    project_on_paths,
    straight_continuation,
)
from sim.registry import Registry

__all__ = [
    "BEHAVIORS",
    "IDM",
    "Behavior",
    "ConstantVelocity",
    "LogReplay",
    "Mobil",
    "PathTable",  # this and the names below: re-exported from sim.paths, sim.idm, sim.geometry
    "Static",
    "build_path_table",
    "conflict_stops",
    "fclip",
    "idm_accel",
    "lane_conflicts",
    "path_neighbours",
    "project_on_paths",
    "straight_continuation",
]

#: motion of the built-in kinds (a behaviour that sets only ``kind`` moves with it; unknown: path)
MOTION_OF_KIND: Mapping[str, type[Motion]] = MappingProxyType({
    m.kind: m for m in (PathMotion, ConstantVelocityMotion, ReplayMotion, StaticMotion)
})

#: shared scripted-brake parameters (every behaviour accepts them)
BRAKE_DEFAULTS: Mapping[str, float] = MappingProxyType({
    "brake_at_s": math.inf,  # s after episode start at which the actor starts braking
    "brake_decel": 6.0,  # m/s^2 deceleration of the scripted brake
    "brake_to_speed": 0.0,  # m/s speed held after the brake
})


# =============================================================================== behaviour classes
class Behavior(ABC):
    """A behaviour type. Subclasses set ``name``, ``defaults`` (parameter -> default, SI units),
    ``motion`` (the :class:`~sim.motion.Motion` moving their rows; ``kind`` follows from it) and
    ``changes_lanes`` (MOBIL, for path motion). A subclass that sets only ``kind`` (one of
    ``path``, ``constant_velocity``, ``replay``, ``static``) gets that kind's motion.
    """

    name: ClassVar[str]
    motion: ClassVar[type[Motion]] = PathMotion
    kind: ClassVar[str] = "path"
    changes_lanes: ClassVar[bool] = False
    defaults: ClassVar[Mapping[str, float]] = MappingProxyType({})

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "motion" in cls.__dict__:
            cls.kind = cls.motion.kind
        elif "kind" in cls.__dict__:
            cls.motion = MOTION_OF_KIND.get(cls.kind, PathMotion)

    @classmethod
    def validate(cls, params: Mapping[str, Any], where: str = "behavior.params") -> dict[str, float]:
        """Parameters merged over the defaults; unknown names or non-numbers raise ScenarioError."""
        out = dict(cls.defaults)
        for k, v in params.items():
            if k not in cls.defaults:
                raise ScenarioError(f"unknown parameter {k!r} of behaviour {cls.name!r}; known: {', '.join(sorted(cls.defaults))}", field=f"{where}.{k}")
            try:
                fv = float(v)
            except (TypeError, ValueError):
                raise ScenarioError(f"expected a number, got {v!r}", field=f"{where}.{k}") from None
            if math.isnan(fv):
                raise ScenarioError("expected a number, got NaN", field=f"{where}.{k}")
            out[k] = fv
        return out


IDM_DEFAULTS: Mapping[str, float] = MappingProxyType({
    "a_max": 2.0,  # m/s^2 maximum (comfortable) acceleration a
    "b_comf": 3.0,  # m/s^2 comfortable deceleration b
    "s0": 2.0,  # m minimum bumper-to-bumper gap
    "T": 1.5,  # s desired time headway
    "delta": 4.0,  # acceleration exponent
    "v0": math.nan,  # m/s desired speed; NaN = the lane's speed limit
    "v0_jitter": 0.0,  # fraction: v0 scaled by U(1 - j, 1 + j) drawn from the episode rng
    "decel_max": 8.0,  # m/s^2 physical braking limit of the actor
    "lane_change_time": 3.0,  # s to move one lane width sideways (route lane changes, MOBIL)
    "lane_change_after_s": 0.0,  # s to wait before a route's first lane change starts
    **BRAKE_DEFAULTS,
})


class IDM(Behavior):
    """Intelligent Driver Model along a lane route (Treiber et al. 2000), constants in SI units:
    ``a_max`` 2.0 m/s^2, ``b_comf`` 3.0 m/s^2, ``s0`` 2.0 m, ``T`` 1.5 s, ``delta`` 4, ``v0`` the
    lane speed limit; accelerations are clipped to [-``decel_max``, ``a_max``]."""

    name = "idm"
    defaults: ClassVar[Mapping[str, float]] = IDM_DEFAULTS


class Mobil(Behavior):
    """IDM plus MOBIL lane changes (Kesting, Treiber and Helbing 2007): change when
    ``gain + politeness * (followers' gain) > threshold`` and the new follower brakes less than
    ``b_safe``. ``politeness`` 0.3, ``threshold`` 0.2 m/s^2, ``b_safe`` 4.0 m/s^2, at most one change
    every ``lc_cooldown`` 3.0 s, decisions every ``lc_check_s`` 0.5 s."""

    name = "mobil"
    changes_lanes = True
    defaults: ClassVar[Mapping[str, float]] = MappingProxyType(
        {**IDM_DEFAULTS, "politeness": 0.3, "threshold": 0.2, "b_safe": 4.0, "lc_cooldown": 3.0, "lc_check_s": 0.5}
    )


class ConstantVelocity(Behavior):
    """Straight ahead along the initial heading; ``speed`` (m/s, NaN = initial speed)."""

    name = "constant_velocity"
    motion = ConstantVelocityMotion
    defaults: ClassVar[Mapping[str, float]] = MappingProxyType({"speed": math.nan, **BRAKE_DEFAULTS})


class LogReplay(Behavior):
    """The logged poses, exactly (non-reactive); absent outside the track's time span."""

    name = "log_replay"
    motion = ReplayMotion
    defaults: ClassVar[Mapping[str, float]] = MappingProxyType({})


class Static(Behavior):
    """Stays where it is (parked cars, stopped obstacles)."""

    name = "static"
    motion = StaticMotion
    defaults: ClassVar[Mapping[str, float]] = MappingProxyType({})


#: name -> behaviour class; third parties use the ``loopdrive.behaviors`` entry-point group
BEHAVIORS: Registry[type[Behavior]] = Registry("behaviour", "loopdrive.behaviors")
for _b in (LogReplay, IDM, Mobil, ConstantVelocity, Static):
    BEHAVIORS.register(_b.name, _b)
