"""Search spaces over scenario edits: adversarial actor templates for a base scenario.

A :class:`Template` maps a point ``u`` of the unit cube ``[0, 1]^d`` to a scenario (the base
scenario's plain YAML data with one adversarial actor inserted). Every parameter has physical
bounds (SI units) chosen so the adversary stays dynamically feasible and plausible:

* ``lead_brake`` -- a lead vehicle on the ego's route: gap (m), speed (m/s), brake start (s),
  deceleration (m/s², at most 8: a hard but physical stop), speed held after braking (m/s).
* ``cut_in`` -- a car in the lane next to the ego that changes into the ego's lane: longitudinal
  offset (m), speed (m/s), wait before the lane change (s) and lane-change duration (s, at least
  2.5 s: peak lateral acceleration of a 3.6 m lane change stays below about 3.6 m/s²).
* ``crossing`` -- a pedestrian crossing the ego's route: distance ahead of the ego (m), appearance
  time (s), walking speed (m/s, at most 2.2), side, start offset from the centreline (m).
* ``perturb`` -- speeds and timings of the base scenario's own inserted actors: speed scale,
  brake-start / lane-change-start / appearance shift (s), ego start speed offset (m/s).

Actors are spawned on map lanes (vehicles) or walk straight across the road (pedestrians); the
engine's kinematic bicycle with its acceleration/jerk/steer limits moves them, so what they do is
feasible by construction. The base scenario must start the ego on a lane (``ego.start.lane``).
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from sim.errors import ScenarioError
from sim.registry import Registry

__all__ = ["TEMPLATES", "BaseInfo", "Param", "Template", "base_info", "choose_template"]

ADV_ID = "adversary"


@dataclass(frozen=True)
class Param:
    """One search dimension: ``name`` in [``low``, ``high``] (``unit``)."""

    name: str
    low: float
    high: float
    unit: str = ""

    def value(self, u: float) -> float:
        return float(self.low + (self.high - self.low) * float(np.clip(u, 0.0, 1.0)))


@dataclass(frozen=True)
class BaseInfo:
    """What a template needs of the base: the plain YAML data, the lane map, the ego's start lane,
    arc length (m) and speed (m/s), and the ego's lane route.

    Insertion templates (all but ``perturb``) replace the base's own inserted actors."""

    data: dict[str, Any]
    lane_map: Any
    lane: str
    s: float
    speed: float
    route: tuple[str, ...]
    file: str


def base_info(data: dict[str, Any], lane_map: Any, file: str) -> BaseInfo:
    """Read the ego start of a base scenario (``ScenarioError`` when it is not lane-based)."""
    ego = data.get("ego") or {}
    start = ego.get("start") or {}
    lane = start.get("lane")
    if lane is None:
        raise ScenarioError("expected a base scenario whose ego starts on a lane (ego.start.lane)", file=file, field="ego.start.lane")
    route = tuple(str(r) for r in (ego.get("route") or [lane]))
    speed = start.get("speed")
    if speed is None:
        speed = 0.6 * float(lane_map.lanes[str(lane)].speed_limit or 10.0)
    return BaseInfo(copy.deepcopy(data), lane_map, str(lane), float(start.get("s", 0.0)), float(speed), route, file)


def _route_lanes(info: BaseInfo) -> list[str]:
    r = list(info.route)
    r = r[r.index(info.lane):] if info.lane in r else [info.lane, *r]
    return r


def _spawn_on_route(info: BaseInfo, lanes: list[str], s_ahead: float) -> tuple[str, float, list[str]] | None:
    """(lane, s, remaining route) of the point ``s_ahead`` metres along ``lanes`` from the ego's
    start arc length, or None beyond the route's end (keeps 1 m from lane ends)."""
    s = info.s + s_ahead
    for i, lid in enumerate(lanes):
        length = float(info.lane_map.lanes[lid].length)
        if s < length - 1.0:
            return lid, max(s, 0.5), lanes[i:]
        s -= length
    return None


class Template(ABC):
    """An adversarial edit family. ``params`` are the search dimensions (unit-cube coordinates map
    linearly onto their bounds)."""

    name: ClassVar[str]
    params: ClassVar[tuple[Param, ...]]
    #: insertion templates replace the base's own inserted actors (the base sets the road, the
    #: adversary the challenge); logged actors and remove/reroute ops stay
    replaces_inserts: ClassVar[bool] = True

    @property
    def dim(self) -> int:
        return len(self.params)

    def values(self, u: NDArray[np.float64]) -> dict[str, float]:
        """Physical parameter values of unit-cube point ``u``."""
        return {p.name: round(p.value(x), 4) for p, x in zip(self.params, np.asarray(u, np.float64), strict=True)}

    def edit(self, info: BaseInfo, u: NDArray[np.float64]) -> dict[str, Any] | None:
        """The scenario data for ``u`` (a deep copy of the base with the edit), or None when the
        point cannot be realised on this map (e.g. beyond the route's end)."""
        data = copy.deepcopy(info.data)
        if self.replaces_inserts:
            dropped = {a.get("id") for a in data.get("actors") or [] if a.get("op") == "insert"}
            data["actors"] = [a for a in data.get("actors") or [] if a.get("op") != "insert" and a.get("id") not in dropped]
        return self._edit(data, info, self.values(u))

    @abstractmethod
    def _edit(self, data: dict[str, Any], info: BaseInfo, v: dict[str, float]) -> dict[str, Any] | None: ...


def _insert(data: dict[str, Any], actor: dict[str, Any]) -> dict[str, Any]:
    data.setdefault("actors", [])
    data["actors"] = [*data["actors"], actor]
    return data


class LeadBrake(Template):
    name = "lead_brake"
    params = (
        Param("gap", 8.0, 40.0, "m"),
        Param("speed", 4.0, 13.0, "m/s"),
        Param("brake_at_s", 0.3, 4.0, "s"),
        Param("brake_decel", 3.0, 8.0, "m/s^2"),
        Param("brake_to_speed", 0.0, 4.0, "m/s"),
    )

    def _edit(self, data: dict[str, Any], info: BaseInfo, v: dict[str, float]) -> dict[str, Any] | None:
        sp = _spawn_on_route(info, _route_lanes(info), v["gap"] + 4.6)
        if sp is None:
            return None
        lane, s, route = sp
        beh = {"type": "idm", "v0": v["speed"], "route": route, "brake_at_s": v["brake_at_s"],
               "brake_decel": v["brake_decel"], "brake_to_speed": min(v["brake_to_speed"], v["speed"])}  # fmt: skip
        return _insert(data, {"op": "insert", "id": ADV_ID, "class": "car", "spawn": {"lane": lane, "s": round(s, 3), "speed": v["speed"]}, "behavior": beh})


class CutIn(Template):
    name = "cut_in"
    params = (
        Param("offset", 2.0, 25.0, "m"),
        Param("speed", 4.0, 14.0, "m/s"),
        Param("lane_change_after_s", 0.2, 3.0, "s"),
        Param("lane_change_time", 2.5, 5.0, "s"),
    )

    def _edit(self, data: dict[str, Any], info: BaseInfo, v: dict[str, float]) -> dict[str, Any] | None:
        lanes = _route_lanes(info)
        lm = info.lane_map
        ego_lane = lm.lanes[lanes[0]]
        nbr = ego_lane.left or ego_lane.right
        if nbr is None:
            return None
        nbr_len = float(lm.lanes[nbr].length)
        s = info.s + v["offset"]
        if s > nbr_len - 1.0:
            return None
        beh = {"type": "idm", "v0": v["speed"], "route": [nbr, *lanes], "lane_change_after_s": v["lane_change_after_s"],
               "lane_change_time": v["lane_change_time"]}  # fmt: skip
        return _insert(data, {"op": "insert", "id": ADV_ID, "class": "car", "spawn": {"lane": nbr, "s": round(s, 3), "speed": v["speed"]}, "behavior": beh})


class Crossing(Template):
    name = "crossing"
    params = (
        Param("ahead", 10.0, 45.0, "m"),
        Param("appear_s", 0.0, 4.0, "s"),
        Param("speed", 0.8, 2.2, "m/s"),
        Param("side", 0.0, 1.0, ""),
        Param("offset", 3.0, 7.0, "m"),
    )

    def _edit(self, data: dict[str, Any], info: BaseInfo, v: dict[str, float]) -> dict[str, Any] | None:
        lanes = _route_lanes(info)
        sp = _spawn_on_route(info, lanes, v["ahead"])
        if sp is None:
            return None
        lane, s, _ = sp
        pl = info.lane_map.lanes[lane]
        c = np.asarray(pl.centerline, np.float64)
        seg = np.cumsum(np.r_[0.0, np.hypot(*np.diff(c, axis=0).T)])
        x, y = float(np.interp(s, seg, c[:, 0])), float(np.interp(s, seg, c[:, 1]))
        k = int(np.clip(np.searchsorted(seg, s) - 1, 0, len(c) - 2))
        hd = math.atan2(c[k + 1, 1] - c[k, 1], c[k + 1, 0] - c[k, 0])
        side = 1.0 if v["side"] >= 0.5 else -1.0
        nx, ny = -math.sin(hd) * side, math.cos(hd) * side  # unit normal to the chosen side
        px, py = x + nx * v["offset"], y + ny * v["offset"]
        yaw = math.atan2(-ny, -nx)  # walking back across the route
        return _insert(data, {"op": "insert", "id": ADV_ID, "class": "pedestrian", "t_s": v["appear_s"],
                              "spawn": {"pose": [round(px, 3), round(py, 3), round(yaw, 4)], "speed": v["speed"]},
                              "behavior": {"type": "constant_velocity"}})  # fmt: skip


class Perturb(Template):
    """Speeds and timings of the base's inserted actors and the ego's start speed."""

    name = "perturb"
    replaces_inserts = False
    params = (
        Param("speed_scale", 0.6, 1.4, ""),
        Param("timing_shift", -1.5, 1.5, "s"),
        Param("ego_speed_delta", -2.0, 3.0, "m/s"),
        Param("decel_scale", 0.8, 1.4, ""),
    )

    def _edit(self, data: dict[str, Any], info: BaseInfo, v: dict[str, float]) -> dict[str, Any] | None:
        touched = False
        for a in data.get("actors") or []:
            if a.get("op") != "insert":
                continue
            touched = True
            sp = a.get("spawn", {})
            sp["speed"] = round(max(0.0, float(sp.get("speed", 0.0)) * v["speed_scale"]), 4)
            beh = a.setdefault("behavior", {"type": "idm"})
            if "v0" in beh:
                beh["v0"] = round(max(0.5, float(beh["v0"]) * v["speed_scale"]), 4)
            for key in ("brake_at_s", "lane_change_after_s"):
                if key in beh:
                    beh[key] = round(max(0.0, float(beh[key]) + v["timing_shift"]), 4)
            if "brake_decel" in beh:
                beh["brake_decel"] = round(min(8.0, float(beh["brake_decel"]) * v["decel_scale"]), 4)
            if float(a.get("t_s", 0.0)) > 0.0:
                a["t_s"] = round(max(0.0, float(a["t_s"]) + v["timing_shift"]), 4)
        if not touched:
            return None
        start = data.setdefault("ego", {}).setdefault("start", {})
        start["speed"] = round(max(0.0, info.speed + v["ego_speed_delta"]), 4)
        return data


#: name -> template class; third parties add templates through ``loopdrive.adversary_templates``.
TEMPLATES: Registry[type[Template]] = Registry("adversary template", "loopdrive.adversary_templates")
for _t in (LeadBrake, CutIn, Crossing, Perturb):
    TEMPLATES.register(_t.name, _t)


def choose_template(data: dict[str, Any]) -> str:
    """A template that fits the base: ``crossing`` for scenarios with pedestrians, ``cut_in`` for
    lane-change actors, otherwise ``lead_brake``."""
    for a in data.get("actors") or []:
        if a.get("op") != "insert":
            continue
        if a.get("class") == "pedestrian":
            return "crossing"
        if "lane_change_after_s" in (a.get("behavior") or {}) or "lane_change_time" in (a.get("behavior") or {}):
            return "cut_in"
    return "lead_brake"
