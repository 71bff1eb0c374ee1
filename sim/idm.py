"""The Intelligent Driver Model (Treiber, Hennecke and Helbing 2000): the one longitudinal car
follower of loopdrive, used by the engine's path-following actors and by the reference planners.

    a = a_max * (1 - (v / v0)^delta) - a_max * (s*(v, dv) / gap)^2,
    s* = s0 + max(0, v T + v dv / (2 sqrt(a_max b_comf))),   dv = v - v_lead,

clipped to [-decel_max, a_max]. Units: m, s, m/s, m/s^2. Everything is numpy-vectorised; the
constants may be scalars (a planner) or arrays broadcasting against the speeds (the engine's
per-actor parameters).

A desired speed ``v0 <= 0.05`` m/s means "stop"; callers choose what that does (``zero_v0``):

* ``"hold"`` (engine actors): no creeping forward -- the acceleration is at most ``-b_comf``
  while moving faster than 0.01 m/s, at most 0 below;
* ``"brake"`` (planners): the free-road term becomes -1, i.e. braking at ``a_max`` on top of the
  interaction term.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["IdmArrays", "IdmConstants", "idm_accel"]

F64 = NDArray[np.float64]


class IdmConstants(Protocol):
    """The IDM constants (scalars or arrays broadcasting against the speeds)."""

    @property
    def a_max(self) -> ArrayLike: ...  # m/s^2 maximum (comfortable) acceleration
    @property
    def b_comf(self) -> ArrayLike: ...  # m/s^2 comfortable deceleration
    @property
    def s0(self) -> ArrayLike: ...  # m minimum bumper-to-bumper gap
    @property
    def T(self) -> ArrayLike: ...  # s desired time headway
    @property
    def delta(self) -> ArrayLike: ...  # acceleration exponent
    @property
    def decel_max(self) -> ArrayLike: ...  # m/s^2 strongest braking


@dataclass(frozen=True)
class IdmArrays:
    """:class:`IdmConstants` as arrays (the engine's per-actor parameters, rows (1, N))."""

    a_max: F64
    b_comf: F64
    s0: F64
    T: F64
    delta: F64
    decel_max: F64


def idm_accel(v: F64, v_lead: F64, gap: F64, v0: F64, p: IdmConstants, *, zero_v0: Literal["hold", "brake"] = "hold") -> F64:
    """IDM acceleration (m/s^2) for speed ``v``, leader speed ``v_lead`` (m/s, along the path), bumper
    gap ``gap`` (m; ``inf`` = free road) and desired speed ``v0`` (m/s), clipped to
    [-decel_max, a_max]. ``zero_v0``: what a desired speed of zero does (module docstring)."""
    a = p.a_max
    dv = v - v_lead
    s_star = p.s0 + np.maximum(0.0, v * p.T + v * dv / (2.0 * np.sqrt(a * p.b_comf)))  # type: ignore[operator]
    free = 1.0 - (np.maximum(v, 0.0) / np.maximum(v0, 0.1)) ** p.delta
    stop = v0 <= 0.05
    if zero_v0 == "brake":
        free = np.where(stop, -1.0, free)
    inter = (s_star / np.maximum(gap, 0.1)) ** 2
    acc = a * free - a * inter
    if zero_v0 == "hold":
        acc = np.where(stop, np.minimum(acc, -p.b_comf * (v > 0.01)), acc)  # type: ignore[operator]
    return np.minimum(np.maximum(acc, -p.decel_max), a)  # type: ignore[operator]
