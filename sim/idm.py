"""The Intelligent Driver Model (Treiber, Hennecke and Helbing 2000): the one longitudinal car
follower of loopdrive, used by the engine's path-following actors and by the reference planners.

    a = a_max * (1 - (v / v0)^delta) - a_max * (s*(v, dv) / gap)^2,
    s* = s0 + max(0, v T + v dv / (2 sqrt(a_max b_comf))),   dv = v - v_lead,

clipped to [-decel_max, a_max]. Units: m, s, m/s, m/s^2. Everything is numpy-vectorised; the
constants may be scalars (a planner) or arrays broadcasting against the speeds. The engine's
compiled step (:mod:`sim.kernels_path`) evaluates the same formula one actor at a time with
:func:`idm_one`, a numba function that gives :func:`idm_accel`'s "hold" results bit for bit (the
tests compare the two): its power is :func:`idm_pow`, the routine numpy's ``**`` uses here.

A desired speed ``v0 <= 0.05`` m/s means "stop"; callers choose what that does (``zero_v0``):

* ``"hold"`` (engine actors): no creeping forward -- the acceleration is at most ``-b_comf``
  while moving faster than 0.01 m/s, at most 0 below;
* ``"brake"`` (planners): the free-road term becomes -1, i.e. braking at ``a_max`` on top of the
  interaction term.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numba
import numpy as np
from llvmlite import ir  # type: ignore[import-untyped]
from numba.core import cgutils, types
from numba.extending import intrinsic, overload
from numpy.typing import ArrayLike, NDArray

__all__ = ["IdmArrays", "IdmConstants", "idm_accel", "idm_one", "idm_pow"]

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


# ============================================================================ compiled, one actor
# numpy's float64 power is Intel SVML's ``__svml_pow8`` on AVX512 machines (numpy exports it), and
# libm's pow elsewhere; they differ in the last bit for about a quarter of the arguments. The
# compiled IDM calls the routine numpy calls, so the two give the same bits.
def _svml_pow8_address() -> int | None:
    try:
        from numpy.core import _multiarray_umath as umath

        lib = ctypes.CDLL(umath.__file__)
        return ctypes.cast(lib.__svml_pow8, ctypes.c_void_p).value
    except (AttributeError, OSError):  # numpy built without SVML
        return None


def _numpy_uses_svml(addr: int | None) -> bool:
    """Whether numpy's float64 ``**`` is the SVML routine (AVX512 dispatch), checked on values where
    it and libm's pow differ."""
    if addr is None:
        return False
    x = np.linspace(0.05, 1.95, 4001)
    return bool(np.any(x**4.0 != np.array([math.pow(float(v), 4.0) for v in x])))


_SVML_ADDR = _svml_pow8_address()
USE_SVML = _numpy_uses_svml(_SVML_ADDR)
if USE_SVML:
    import llvmlite.binding as llb  # type: ignore[import-untyped]

    llb.add_symbol("__svml_pow8", _SVML_ADDR)


@intrinsic
def _svml_pow(typingctx: Any, x: Any, y: Any) -> Any:
    """x ** y (float64) by ``__svml_pow8`` on a vector of 8 copies (lane 0 is the result)."""
    sig = types.float64(types.float64, types.float64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        vty = ir.VectorType(ir.DoubleType(), 8)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty, vty]), "__svml_pow8")
        vx, vy = ir.Constant(vty, ir.Undefined), ir.Constant(vty, ir.Undefined)
        for i in range(8):
            vx = builder.insert_element(vx, args[0], ir.Constant(ir.IntType(32), i))
            vy = builder.insert_element(vy, args[1], ir.Constant(ir.IntType(32), i))
        return builder.extract_element(builder.call(fn, [vx, vy]), ir.Constant(ir.IntType(32), 0))

    return sig, codegen


def idm_pow(x: float, y: float) -> float:
    """``x ** y`` exactly as numpy computes it for float64 arrays here (usable in numba code)."""
    return float(np.power(np.array([x], dtype=np.float64), np.array([y], dtype=np.float64))[0])


@overload(idm_pow, jit_options={"cache": True})  # type: ignore[typeddict-unknown-key]
def _idm_pow_nb(x, y):  # type: ignore[no-untyped-def]  # numba matches the argument names
    if USE_SVML:
        return lambda x, y: _svml_pow(x, y)  # type: ignore[call-arg]
    return lambda x, y: x**y


def _fmax(a: float, b: float) -> float:
    """numpy's ``maximum`` of two floats (NaN propagates; a tie returns ``a``)."""
    if a != a:
        return a
    if b != b:
        return b
    return a if a >= b else b


def _fmin(a: float, b: float) -> float:
    """numpy's ``minimum`` of two floats (NaN propagates; a tie returns ``a``)."""
    if a != a:
        return a
    if b != b:
        return b
    return a if a <= b else b


def _jit(fn: Any, **kw: Any) -> Any:
    return numba.njit(cache=True, **kw)(fn)


fmax_nb = _jit(_fmax, inline="always")
fmin_nb = _jit(_fmin, inline="always")


def _idm_one(v: float, v_lead: float, gap: float, v0: float, a: float, b_comf: float, s0: float, T: float, delta: float, decel_max: float) -> float:
    """:func:`idm_accel` (``zero_v0="hold"``) of one actor, the same operations in the same order."""
    dv = v - v_lead
    s_star = s0 + fmax_nb(0.0, v * T + v * dv / (2.0 * math.sqrt(a * b_comf)))
    free = 1.0 - idm_pow(fmax_nb(v, 0.0) / fmax_nb(v0, 0.1), delta)
    r = s_star / fmax_nb(gap, 0.1)
    acc = a * free - a * (r * r)
    if v0 <= 0.05:
        acc = fmin_nb(acc, -b_comf * (1.0 if v > 0.01 else 0.0))
    return fmin_nb(fmax_nb(acc, -decel_max), a)


idm_one = _jit(_idm_one)
