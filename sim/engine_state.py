"""The state of B batched worlds at one step (:class:`SimState`): immutable, read-only arrays."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from sim.world import WorldState

if TYPE_CHECKING:
    from sim.engine_compile import Compiled

__all__ = ["OFF_ROUTE_M", "SimState", "merge_rows"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B_ = NDArray[np.bool_]

OFF_ROUTE_M = 4.0  # m: the ego is off its route beyond this lateral distance from the route


@dataclass(frozen=True, eq=False)
class SimState:
    """B independent worlds at one step (arrays (B,) or (B, N), N slots with the ego in slot 0).

    Units: m, rad, m/s, m/s^2; ``t_us`` int64 microseconds. The per-step metrics describe the step
    that produced this state (zeros / ``inf`` after a reset).
    """

    compiled: Compiled
    step_index: I64  # (B,)
    t_us: I64  # (B,)
    x: F64
    y: F64
    yaw: F64
    v: F64
    accel: F64  # (B, N) acceleration of the last step
    valid: B_  # (B, N)
    alive: B_  # (B, N) False once an actor has left the map
    path_id: I64  # (B, N) path of path-following actors (ego: its route)
    s: F64  # (B, N) arc length on it (ego: route progress)
    d: F64  # (B, N) lateral offset from it, left positive
    lc_timer: F64  # (B, N) s until the next MOBIL lane change may start
    lc_hold: F64  # (B, N) s before a pending lane change starts moving sideways
    v0_scale: F64  # (B, N) seeded desired-speed factor
    steer: F64  # (B,) ego front-wheel angle
    ego_lat: F64  # (B,) ego lateral offset from the route, m
    terminated: B_
    truncated: B_
    collision: B_
    collision_partner: I64  # (B,) slot, -1 = none
    offroad: B_
    wrong_way: B_
    route_complete: B_
    progress: F64  # (B,) m along the route in the last step
    min_ttc: F64  # (B,) s
    jerk: F64  # (B,) m/s^3
    action_clipped: B_  # (B,) the last action was outside the limits

    def __post_init__(self) -> None:
        # immutability enforced: every array of a state is read-only (a step builds new ones)
        for name in _ROW_FIELDS:
            getattr(self, name).setflags(write=False)

    @classmethod
    def _of(cls, compiled: Compiled, fields: dict[str, Any]) -> SimState:
        """The state with these fields (all of :data:`_ROW_FIELDS`, fresh arrays) made read-only,
        without the dataclass constructor's per-field ``object.__setattr__`` (the engine's step)."""
        obj = object.__new__(cls)
        d = obj.__dict__
        d["compiled"] = compiled
        for name in _ROW_FIELDS:
            a = fields[name]
            a.setflags(write=False)
            d[name] = a
        return obj

    @classmethod
    def _of_readonly(cls, compiled: Compiled, values: tuple[Any, ...]) -> SimState:
        """The state whose :data:`_ROW_FIELDS` are ``values`` (in that order), arrays that are
        already read-only (views of read-only blocks: the engine's fused step)."""
        obj = object.__new__(cls)
        d = obj.__dict__
        d["compiled"] = compiled
        d.update(zip(_ROW_FIELDS, values, strict=True))
        return obj

    @property
    def batch_size(self) -> int:
        return int(self.step_index.shape[0])

    @property
    def done(self) -> B_:
        return self.terminated | self.truncated

    def partner_id(self, b: int = 0) -> str | None:
        """Id of the actor the ego collided with in world ``b`` (None when no collision)."""
        j = int(self.collision_partner[b])
        return self.compiled.ids[j] if j >= 0 else None

    def world(self, b: int = 0) -> WorldState:
        """World ``b`` as a :class:`WorldState` (satisfies the renderer's ``WorldLike``)."""
        c = self.compiled
        return WorldState(
            t_us=int(self.t_us[b]),
            ids=c.ids,
            cls=c.cls,
            x=self.x[b],
            y=self.y[b],
            z=c.z,
            yaw=self.yaw[b],
            speed=self.v[b],
            length=c.length,
            width=c.width,
            height=c.height,
            valid=self.valid[b],
            t_spawn_us=c.world0.t_spawn_us,
            behavior=c.world0.behavior,
            static=c.world0.static,
        )

    def metrics(self, b: int = 0) -> dict[str, Any]:
        """The per-step metrics of world ``b`` as plain Python values."""
        # ``.item`` gives the Python bool / float / int of an element directly
        lat = self.ego_lat.item(b)
        j = self.collision_partner.item(b)
        return {
            "t_s": float((self.t_us.item(b) - self.compiled.t0_us) * 1e-6),
            "collision": self.collision.item(b),
            "collision_partner": self.compiled.ids[j] if j >= 0 else None,
            "offroad": self.offroad.item(b),
            "wrong_way": self.wrong_way.item(b),
            "route_complete": self.route_complete.item(b),
            "progress_m": self.progress.item(b),
            "route_progress_m": self.s.item(b, 0),
            "min_ttc_s": self.min_ttc.item(b),
            "jerk_mps3": self.jerk.item(b),
            "speed_mps": self.v.item(b, 0),
            "accel_mps2": self.accel.item(b, 0),
            "lateral_offset_m": lat,
            "off_route": abs(lat) > OFF_ROUTE_M,
        }


#: the per-world array fields (all but ``compiled``)
_ROW_FIELDS = tuple(f.name for f in dataclasses.fields(SimState) if f.name != "compiled")


def merge_rows(state: SimState, rows: B_, other: SimState) -> SimState:
    """A state whose worlds ``rows`` (B,) come from ``other`` (same compiled scenario and B)."""
    if other.compiled is not state.compiled:
        raise ValueError("merge_rows needs states of the same compiled scenario")
    ch: dict[str, Any] = {}
    for name in _ROW_FIELDS:
        a, o = getattr(state, name), getattr(other, name)
        m = rows.reshape((-1,) + (1,) * (a.ndim - 1))
        ch[name] = np.where(m, o, a)
    return dataclasses.replace(state, **ch)
