"""What one engine step hands to the actors' motions (:mod:`sim.motion`): the arrays of B batched
worlds with N slots (SI units), in :class:`StepContext` for a step and :class:`ResetContext` for a
reset. ``c`` is the :class:`sim.engine_compile.Compiled` scenario and ``state`` the
:class:`sim.engine_state.SimState` the step starts from (typed loosely here: the compiler imports
the motions, so naming its types would close an import cycle)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["ResetContext", "StepContext"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B_ = NDArray[np.bool_]


@dataclass(eq=False)
class StepContext:
    """One engine step of B worlds with N slots. ``pre`` = (x, y, yaw, v) (B, N) after the ego moved
    and before any actor did (read-only); the other arrays are the step's outputs (motions replace
    or update their own rows); ``hidden`` marks rows a motion makes absent this step."""

    c: Any  # the compiled scenario (sim.engine_compile.Compiled)
    state: Any  # the SimState the step starts from
    k: I64  # (B,) index of the step being made
    dt: float  # s
    spawned: B_  # (B, N) rows that exist this step
    pre: tuple[F64, F64, F64, F64]
    x: F64
    y: F64
    yaw: F64
    v: F64
    acc: F64
    path_id: I64
    s: F64
    d: F64
    lc_timer: F64
    lc_hold: F64
    alive: B_
    hidden: B_

    @property
    def braking(self) -> B_:
        """(B, N) rows whose scripted brake (``brake_at_s`` after the start) is on."""
        return (self.k * self.dt)[:, None] >= self.c.row["p_brake_at_s"]


@dataclass(eq=False)
class ResetContext:
    """The (B, N) arrays of B worlds being reset (writable); ``c`` the compiled scenario."""

    c: Any  # the compiled scenario (sim.engine_compile.Compiled)
    x: F64
    y: F64
    yaw: F64
    v: F64
    valid: B_
    d: F64
    lc_hold: F64
