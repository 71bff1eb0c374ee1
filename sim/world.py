"""``WorldState``: the actors of one world at one instant, as a structure of numpy arrays.

Slots: a world has a fixed capacity of actor slots (``max_actors + 1``); row 0 is always the ego
(id ``"ego"``). ``valid`` masks the slots that hold an actor *now*; free slots have id ``""``.
Poses are world frame (metres, radians, z up): (x, y) is the box centre on the ground, z the box
bottom, yaw counter-clockwise from +x. Speeds are m/s along the heading. Time is ``t_us``
(int64 microseconds from the start of the drive log).

A ``WorldState`` is immutable: its arrays are read-only and every edit returns a new state
(:mod:`sim.edits`). It satisfies :class:`sim.render.base.WorldLike`, so a renderer can draw it.

This module also builds worlds from a drive log / synthetic scene (:func:`world_from_scene`),
carries the small built-in :func:`crossroads_scene` (a hand-made 4-way intersection used by tests
and as a fallback), and the vectorised oriented-box geometry (:func:`box_corners`,
:func:`boxes_overlap`) shared by edits, engine and metrics.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sim.log import Track
from sim.spec import BehaviorSpec

__all__ = [
    "EGO_ID",
    "SceneData",
    "SceneLike",
    "WorldState",
    "box_corners",
    "boxes_overlap",
    "crossroads_scene",
    "track_speed",
    "world_from_scene",
]

log = logging.getLogger(__name__)

EGO_ID = "ego"

F64 = NDArray[np.float64]

_ARRAY_FIELDS = ("x", "y", "z", "yaw", "speed", "length", "width", "height", "valid", "t_spawn_us")


def _ro(a: ArrayLike, dtype: Any) -> NDArray[Any]:
    out = np.array(a, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class WorldState:
    """All actors at ``t_us`` (see the module docstring for frames and units).

    Attributes:
        t_us: time, int64 microseconds from the start of the log.
        ids: actor id per slot (``"ego"`` in slot 0, ``""`` for a free slot).
        cls: class name per slot (``car``, ``truck``, ``pedestrian``, ...; ``""`` when free).
        x, y, z, yaw: pose per slot (world frame, m / rad).
        speed: m/s along the heading.
        length, width, height: box size, m.
        valid: the slot holds an actor at ``t_us``.
        t_spawn_us: when the actor appears (an inserted actor with ``t_s > 0`` is not valid before).
        behavior: the policy of each slot (``BehaviorSpec``: registry name, params, lane route);
            the ego's is ``BehaviorSpec("ego")``.
        static: parked (never moving) actors.
    """

    t_us: int
    ids: tuple[str, ...]
    cls: tuple[str, ...]
    x: F64
    y: F64
    z: F64
    yaw: F64
    speed: F64
    length: F64
    width: F64
    height: F64
    valid: NDArray[np.bool_]
    t_spawn_us: NDArray[np.int64]
    behavior: tuple[BehaviorSpec, ...]
    static: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name in _ARRAY_FIELDS:
            dt = np.bool_ if name == "valid" else (np.int64 if name == "t_spawn_us" else np.float64)
            a = getattr(self, name)
            if not (isinstance(a, np.ndarray) and a.dtype == dt and not a.flags.writeable):
                a = _ro(a, dt)
                object.__setattr__(self, name, a)
            if a.shape != (n,):
                raise ValueError(f"WorldState.{name} has shape {a.shape}, expected ({n},)")
        if len(self.cls) != n or len(self.behavior) != n:
            raise ValueError("WorldState ids, cls and behavior must have one entry per slot")
        if not self.static:
            object.__setattr__(self, "static", (False,) * n)
        if n == 0 or self.ids[0] != EGO_ID:
            raise ValueError("slot 0 of a WorldState must be the ego")

    # ---------------------------------------------------------------------------- queries
    @property
    def capacity(self) -> int:
        """Number of slots (ego included)."""
        return len(self.ids)

    @property
    def behavior_names(self) -> tuple[str, ...]:
        """Registry name of each slot's behaviour."""
        return tuple(b.type for b in self.behavior)

    def index(self, actor_id: str) -> int | None:
        """Slot of ``actor_id`` (valid or waiting to spawn), or None."""
        for i, a in enumerate(self.ids):
            if a == actor_id and a != "":
                return i
        return None

    def free_slots(self) -> list[int]:
        return [i for i, a in enumerate(self.ids) if a == ""]

    def replace(self, **changes: Any) -> WorldState:
        """A copy with some fields replaced (arrays are copied read-only)."""
        return dataclasses.replace(self, **changes)

    def set_slot(self, i: int, **values: Any) -> WorldState:
        """A copy with slot ``i``'s entries replaced (``ids``, ``cls``, ``behavior``, ``static`` and
        any array field)."""
        changes: dict[str, Any] = {}
        for k, v in values.items():
            if k in ("ids", "cls", "behavior", "static"):
                t = list(getattr(self, k))
                t[i] = v
                changes[k] = tuple(t)
            elif k in _ARRAY_FIELDS:
                a = np.array(getattr(self, k))
                a[i] = v
                changes[k] = a
            else:
                raise KeyError(k)
        return self.replace(**changes)

    def box(self, i: int) -> tuple[float, float, float, float, float]:
        """(x, y, yaw, length, width) of slot ``i``."""
        return (float(self.x[i]), float(self.y[i]), float(self.yaw[i]), float(self.length[i]), float(self.width[i]))


# ------------------------------------------------------------------------------------- boxes
def box_corners(x: ArrayLike, y: ArrayLike, yaw: ArrayLike, length: ArrayLike, width: ArrayLike) -> F64:
    """Corners (..., 4, 2) of oriented boxes (front-left, rear-left, rear-right, front-right)."""
    x, y, yaw, length, width = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (x, y, yaw, length, width)))
    c, s = np.cos(yaw), np.sin(yaw)
    hl, hw = length / 2.0, width / 2.0
    lx = np.stack([hl, -hl, -hl, hl], axis=-1)
    ly = np.stack([hw, hw, -hw, -hw], axis=-1)
    return np.stack([x[..., None] + c[..., None] * lx - s[..., None] * ly, y[..., None] + s[..., None] * lx + c[..., None] * ly], axis=-1)


def boxes_overlap(
    a: tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike, ArrayLike],
    b: tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike, ArrayLike],
    margin: float = 0.0,
) -> NDArray[np.bool_]:
    """Whether oriented boxes ``a`` and ``b`` (each ``(x, y, yaw, length, width)``, broadcastable
    arrays) overlap, by the separating-axis theorem; ``margin`` (m) inflates both boxes."""
    ax, ay, ayaw, al, aw = (np.asarray(v, dtype=np.float64) for v in a)
    bx, by, byaw, bl, bw = (np.asarray(v, dtype=np.float64) for v in b)
    dx, dy = bx - ax, by - ay
    ca, sa, cb, sb = np.cos(ayaw), np.sin(ayaw), np.cos(byaw), np.sin(byaw)
    ahl, ahw, bhl, bhw = al / 2 + margin, aw / 2 + margin, bl / 2 + margin, bw / 2 + margin
    sep = np.zeros(np.broadcast(dx, dy, ca, cb, ahl, bhl).shape, dtype=bool)
    # axes: a's forward, a's left, b's forward, b's left
    for ux, uy in ((ca, sa), (-sa, ca), (cb, sb), (-sb, cb)):
        ra = ahl * np.abs(ca * ux + sa * uy) + ahw * np.abs(-sa * ux + ca * uy)
        rb = bhl * np.abs(cb * ux + sb * uy) + bhw * np.abs(-sb * ux + cb * uy)
        sep |= np.abs(dx * ux + dy * uy) > ra + rb
    return ~sep


# ------------------------------------------------------------------------------ scene sources
class SceneLike(Protocol):
    """What a world is built from: a :class:`sim.log.DriveLog` or a ``sim.synth`` scene."""

    @property
    def map(self) -> dict[str, Any]: ...
    @property
    def ego(self) -> Track: ...
    @property
    def tracks(self) -> tuple[Track, ...]: ...


@dataclass(frozen=True)
class SceneData:
    """An in-memory scene (map dictionary in ``map.json`` form, ego track, actor tracks)."""

    map: dict[str, Any]
    ego: Track
    tracks: tuple[Track, ...] = ()
    t_us: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    name: str = "scene"


def track_speed(track: Track, t_us: NDArray[np.int64] | None = None) -> F64:
    """Speed (m/s) of a track at its samples (or interpolated at ``t_us``) from central
    differences of its positions."""
    if len(track.t_us) < 2:
        v = np.zeros(len(track.t_us))
    else:
        t = track.t_us.astype(np.float64) * 1e-6
        v = np.hypot(np.gradient(track.pose[:, 0], t), np.gradient(track.pose[:, 1], t))
    if t_us is None:
        return v
    return np.interp(np.asarray(t_us, dtype=np.float64), track.t_us.astype(np.float64), v) if len(v) else np.zeros(len(t_us))


def world_from_scene(
    scene: SceneLike,
    t_us: int,
    capacity: int,
    *,
    ego_size: tuple[float, float, float] | None = None,
    logged_behavior: BehaviorSpec | None = None,
    t_end_us: int | None = None,
) -> WorldState:
    """The world at ``t_us`` from a scene's tracks.

    Slot 0 is the ego (pose from the ego track); the other slots take the actor tracks that exist
    at any time in [``t_us``, ``t_end_us``], nearest to the ego first, up to ``capacity - 1``
    (the rest are dropped with a log message). Actors whose track starts later are present with
    ``valid`` False and ``t_spawn_us`` set to their first sample. Logged actors get
    ``logged_behavior`` (default log replay), except parked ones and pedestrians, which replay.
    """
    t_end = t_us if t_end_us is None else t_end_us
    ego_pose = scene.ego.pose_at(t_us)
    if ego_pose is None:
        ego_pose = scene.ego.pose[0] if t_us < scene.ego.t_us[0] else scene.ego.pose[-1]
    rows: list[tuple[float, Track, NDArray[np.float64], int]] = []
    for tr in scene.tracks:
        if len(tr.t_us) == 0 or tr.t_us[-1] < t_us or tr.t_us[0] > t_end:
            continue
        t_first = max(t_us, int(tr.t_us[0]))
        p = tr.pose_at(t_first)
        assert p is not None
        rows.append((float(np.hypot(p[0] - ego_pose[0], p[1] - ego_pose[1])), tr, p, t_first))
    rows.sort(key=lambda r: (r[0], r[1].id))
    if len(rows) > capacity - 1:
        log.info("keeping the %d actors nearest the ego of %d in the log", capacity - 1, len(rows))
        rows = rows[: capacity - 1]
    lb = logged_behavior or BehaviorSpec()
    size = ego_size or scene.ego.size
    n = capacity
    ids = [EGO_ID] + [""] * (n - 1)
    cls = [scene.ego.cls or "car"] + [""] * (n - 1)
    arr = {k: np.zeros(n) for k in ("x", "y", "z", "yaw", "speed", "length", "width", "height")}
    valid = np.zeros(n, dtype=bool)
    t_spawn = np.zeros(n, dtype=np.int64)
    beh: list[BehaviorSpec] = [BehaviorSpec("ego")] + [BehaviorSpec("none")] * (n - 1)
    static = [False] * n
    arr["x"][0], arr["y"][0], arr["z"][0], arr["yaw"][0] = ego_pose
    arr["speed"][0] = float(track_speed(scene.ego, np.array([t_us]))[0])
    arr["length"][0], arr["width"][0], arr["height"][0] = size
    valid[0] = True
    t_spawn[0] = t_us
    for k, (_, tr, p, t_first) in enumerate(rows, start=1):
        ids[k], cls[k] = tr.id, tr.cls
        arr["x"][k], arr["y"][k], arr["z"][k], arr["yaw"][k] = p
        arr["speed"][k] = 0.0 if tr.static else float(track_speed(tr, np.array([t_first]))[0])
        arr["length"][k], arr["width"][k], arr["height"][k] = tr.size
        valid[k] = t_first == t_us
        t_spawn[k] = t_first
        # parked actors and pedestrians (who do not drive lanes) always replay their log
        beh[k] = BehaviorSpec("log_replay") if (tr.static or tr.cls == "pedestrian") else lb
        static[k] = tr.static
    return WorldState(
        t_us=int(t_us),
        ids=tuple(ids),
        cls=tuple(cls),
        valid=valid,
        t_spawn_us=t_spawn,
        behavior=tuple(beh),
        static=tuple(static),
        **arr,
    )


# ------------------------------------------------------------------------- built-in crossroads
def _bezier(p0: F64, p1: F64, h0: float, h1: float, n: int = 24) -> F64:
    """Quadratic Bezier from p0 (heading h0) to p1 (heading h1); a straight line when parallel."""
    d0 = np.array([np.cos(h0), np.sin(h0)])
    d1 = np.array([np.cos(h1), np.sin(h1)])
    m = np.array([d0, -d1]).T
    if abs(np.linalg.det(m)) < 1e-6:
        return np.linspace(p0, p1, n)
    t0, _ = np.linalg.solve(m, p1 - p0)
    c = p0 + t0 * d0
    u = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - u) ** 2 * p0 + 2 * (1 - u) * u * c + u**2 * p1


def _crossroads_map(arm: float, lane_width: float, speed_limit: float) -> dict[str, Any]:
    """The ``map.json`` dictionary of :func:`crossroads_scene` (lane ids and geometry there; m, m/s)."""
    heads = {"E": 0.0, "N": np.pi / 2, "W": np.pi, "S": -np.pi / 2}
    order = ["E", "N", "W", "S"]  # counter-clockwise: left of E is N
    box = 2 * lane_width
    lanes: dict[str, dict[str, Any]] = {}

    def fr(d: str) -> tuple[F64, F64]:
        h = heads[d]
        return np.array([np.cos(h), np.sin(h)]), np.array([np.sin(h), -np.cos(h)])

    for d in order:
        f, r = fr(d)
        for k in (0, 1):
            off = lane_width * (0.5 + k)
            lanes[f"{d}_in_{k}"] = {"centerline": [(-arm * f + off * r), (-box * f + off * r)], "speed_limit": speed_limit}
            lanes[f"{d}_out_{k}"] = {"centerline": [(box * f + off * r), (arm * f + off * r)], "speed_limit": speed_limit}
    for d in order:
        f, r = fr(d)
        i = order.index(d)
        left, right = order[(i + 1) % 4], order[(i - 1) % 4]
        for k in (0, 1):
            lanes[f"{d}_{k}_straight"] = {"from": f"{d}_in_{k}", "to": f"{d}_out_{k}", "speed_limit": speed_limit}
        lanes[f"{d}_0_left"] = {"from": f"{d}_in_0", "to": f"{left}_out_0", "speed_limit": min(speed_limit, 8.0)}
        lanes[f"{d}_1_right"] = {"from": f"{d}_in_1", "to": f"{right}_out_1", "speed_limit": min(speed_limit, 6.0)}
    succ: dict[str, list[str]] = {k: [] for k in lanes}
    pred: dict[str, list[str]] = {k: [] for k in lanes}
    for lid, ln in lanes.items():
        if "from" in ln:
            a, b = lanes[ln["from"]], lanes[ln["to"]]
            p0, p1 = np.asarray(a["centerline"][-1]), np.asarray(b["centerline"][0])
            h0 = heads[ln["from"][0]]
            h1 = heads[ln["to"][0]]
            ln["centerline"] = list(_bezier(p0, p1, h0, h1, 2 if "straight" in lid else 24))
            succ[ln["from"]].append(lid)
            pred[lid].append(ln["from"])
            succ[lid].append(ln["to"])
            pred[ln["to"]].append(lid)
    out_lanes = []
    for lid, ln in lanes.items():
        nb: dict[str, str | None] = {"left": None, "right": None}
        if "_in_" in lid or "_out_" in lid:
            d, kind, idx = lid.split("_")
            other = f"{d}_{kind}_{1 - int(idx)}"
            nb["right" if idx == "0" else "left"] = other
        out_lanes.append(
            {
                "id": lid,
                "centerline": [[round(float(p[0]), 6), round(float(p[1]), 6)] for p in ln["centerline"]],
                "width": lane_width,
                "speed_limit": ln["speed_limit"],
                "successors": succ[lid],
                "predecessors": pred[lid],
                "left": nb["left"],
                "right": nb["right"],
            }
        )
    return {"lanes": out_lanes, "crosswalks": []}


def crossroads_scene(
    arm: float = 80.0,
    lane_width: float = 3.5,
    speed_limit: float = 13.9,
    duration_s: float = 20.0,
    dt_s: float = 0.1,
    actors: Sequence[tuple[str, str, float, float]] = (("car_1", "E_in_1", 30.0, 8.0), ("car_2", "N_in_1", 20.0, 7.0), ("car_3", "W_in_0", 25.0, 9.0)),
    ego_lane: str = "E_in_1",
    ego_s: float = 8.0,
    ego_speed: float = 8.0,
) -> SceneData:
    """A hand-made 4-way intersection with two lanes each way (right-hand traffic).

    Lane ids: ``{D}_in_{k}`` approach the junction heading in direction D (E, N, W, S), ``{D}_out_{k}``
    leave it, ``{D}_{k}_straight|left|right`` cross it; k = 0 is the inner (left) lane, 1 the outer.
    Left turns start from the inner lane, right turns from the outer. Arms are ``arm`` metres from
    the centre; the junction box is ``2 * lane_width`` half-size.

    ``actors`` are (id, lane, s, speed) driving at constant speed along the lane's straight route
    (a constant-speed log); the ego drives from ``ego_lane`` at ``ego_s`` straight on at
    ``ego_speed``. Times are sampled every ``dt_s`` for ``duration_s``.
    """
    map_dict = _crossroads_map(arm, lane_width, speed_limit)
    from sim.map import LaneMap  # local: keep the import graph light

    lm = LaneMap.from_dict(map_dict)
    n = round(duration_s / dt_s) + 1
    t_us = (np.arange(n) * round(dt_s * 1e6)).astype(np.int64)

    def straight_track(tid: str, lane: str, s0: float, v: float, size: tuple[float, float, float]) -> Track:
        d = lane.split("_")[0]
        k = lane.split("_")[-1]
        route = [lane, f"{d}_{k}_straight", f"{d}_out_{k}"] if "_in_" in lane else [lane]
        pl = lm.route_polyline(route)
        s = s0 + v * t_us * 1e-6
        xy, h = pl.interpolate(s)
        pose = np.column_stack([xy, np.zeros(n), h])
        return Track(tid, "car", size, t_us, pose, static=v == 0.0)

    ego = straight_track(EGO_ID, ego_lane, ego_s, ego_speed, (4.6, 1.9, 1.5))
    tracks = tuple(straight_track(a, ln, s, v, (4.5, 1.9, 1.5)) for a, ln, s, v in actors)
    return SceneData(map=map_dict, ego=ego, tracks=tracks, t_us=t_us, name="crossroads")
