"""World edits as pure functions: ``insert``, ``remove``, ``reroute`` (each returns a new world).

Every mistake raises :class:`sim.errors.ScenarioError` whose ``field`` is the path of the offending
entry in the scenario (``actors[2].spawn.lane``; pass ``where`` to set the prefix) and whose message
says what was expected: unknown actor ids, lanes that are not on the map, disconnected routes,
unknown behaviours or parameters, an inserted box overlapping an existing actor, or no free slot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sim.behavior import BEHAVIORS
from sim.errors import RegistryError, ScenarioError
from sim.log import ACTOR_CLASSES
from sim.map import LaneMap
from sim.spec import BehaviorSpec, InsertOp
from sim.world import EGO_ID, WorldState, boxes_overlap

__all__ = ["check_behavior", "insert", "remove", "reroute"]


def _known_ids(world: WorldState) -> str:
    ids = [a for a in world.ids[1:] if a]
    return ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "") if ids else "none"


def check_behavior(spec: BehaviorSpec, lane_map: LaneMap | None, where: str) -> None:
    """Validate a behaviour spec: a registered name, known numeric parameters, a connected route."""
    try:
        cls = BEHAVIORS.get(spec.type)
    except RegistryError as exc:
        raise ScenarioError(exc.message, field=f"{where}.type") from None
    cls.validate(spec.params, where=f"{where}.params")
    if spec.route is not None:
        if lane_map is None:
            raise ScenarioError("a lane route needs the scene's lane map", field=f"{where}.route")
        lane_map.check_route(list(spec.route), where=f"{where}.route")


def _slot(world: WorldState, actor_id: str, where: str) -> int:
    if actor_id == EGO_ID:
        raise ScenarioError("the ego cannot be edited here (set ego.start / ego.route instead)", field=f"{where}.id")
    i = world.index(actor_id)
    if i is None:
        raise ScenarioError(f"unknown actor id {actor_id!r}; the world has: {_known_ids(world)}", field=f"{where}.id")
    return i


def insert(world: WorldState, op: InsertOp, lane_map: LaneMap, *, where: str = "actor") -> WorldState:
    """Add an actor (``op``: id, class, size (l, w, h) m, spawn on a lane at arc length ``s`` or at a
    world pose, speed m/s, behaviour) in a free slot. It appears at ``world.t_us + op.t_s``."""
    if not op.id or op.id == EGO_ID or world.index(op.id) is not None:
        raise ScenarioError(f"expected a new actor id, {op.id!r} is already in the world", field=f"{where}.id")
    if op.cls not in ACTOR_CLASSES:
        raise ScenarioError(f"expected one of {', '.join(ACTOR_CLASSES)}, got {op.cls!r}", field=f"{where}.class")
    if len(op.size) != 3 or not all(math.isfinite(v) and v > 0 for v in op.size):
        raise ScenarioError(f"expected three positive sizes [length, width, height] in metres, got {list(op.size)}", field=f"{where}.size")
    asset = getattr(op, "asset", None)
    if asset is not None and (not isinstance(asset, str) or asset.count("/") != 1 or not all(asset.split("/"))):
        raise ScenarioError(f"expected an actor-library key 'source/id' (see `loopdrive actors list`), got {asset!r}", field=f"{where}.asset")
    if not (math.isfinite(op.t_s) and op.t_s >= 0):
        raise ScenarioError(f"expected a time >= 0 s, got {op.t_s}", field=f"{where}.t_s")
    sp = op.spawn
    if not (math.isfinite(sp.speed) and sp.speed >= 0):
        raise ScenarioError(f"expected a speed >= 0 m/s, got {sp.speed}", field=f"{where}.spawn.speed")
    route = op.behavior.route
    if sp.lane is not None:
        lane = lane_map.lane(sp.lane, where=f"{where}.spawn.lane")
        if not (math.isfinite(sp.s) and 0.0 <= sp.s <= lane.length):
            raise ScenarioError(f"expected an arc length in [0, {lane.length:.1f}] m on lane {lane.id!r}, got {sp.s}", field=f"{where}.spawn.s")
        xy, h = lane.polyline.interpolate(sp.s)
        yaw = float(h)
        x = float(xy[0]) - sp.lateral_offset * math.sin(yaw)
        y = float(xy[1]) + sp.lateral_offset * math.cos(yaw)
        if route is None and op.behavior.type in ("idm", "mobil"):
            route = (lane.id,)
        elif route is not None and route[0] != lane.id:
            raise ScenarioError(f"the route must start on the spawn lane {lane.id!r}, got {route[0]!r}", field=f"{where}.behavior.route[0]")
    elif sp.pose is not None:
        if len(sp.pose) != 3 or not all(math.isfinite(v) for v in sp.pose):
            raise ScenarioError(f"expected a finite pose [x, y, yaw], got {sp.pose}", field=f"{where}.spawn.pose")
        x, y, yaw = (float(v) for v in sp.pose)
    else:
        raise ScenarioError("expected a spawn lane (with s) or a pose", field=f"{where}.spawn")
    beh = BehaviorSpec(op.behavior.type, op.behavior.params, tuple(route) if route is not None else None)
    check_behavior(beh, lane_map, f"{where}.behavior")
    if op.t_s == 0.0:
        others = np.flatnonzero(world.valid)
        if len(others):
            hit = boxes_overlap(
                (x, y, yaw, op.size[0], op.size[1]),
                (world.x[others], world.y[others], world.yaw[others], world.length[others], world.width[others]),
            )
            if hit.any():
                other = world.ids[int(others[np.argmax(hit)])]
                raise ScenarioError(f"the spawned box of {op.id!r} overlaps actor {other!r}; move it along the lane", field=f"{where}.spawn")
    free = world.free_slots()
    if not free:
        raise ScenarioError(f"no free actor slot for {op.id!r}: all {world.capacity - 1} are used (raise max_actors)", field=where)
    t_spawn = world.t_us + round(op.t_s * 1e6)
    return world.set_slot(
        free[0],
        ids=op.id,
        cls=op.cls,
        behavior=beh,
        static=False,
        x=x,
        y=y,
        z=0.0,
        yaw=yaw,
        speed=sp.speed,
        length=op.size[0],
        width=op.size[1],
        height=op.size[2],
        valid=op.t_s == 0.0,
        t_spawn_us=t_spawn,
    )


def remove(world: WorldState, actor_id: str, *, where: str = "actor") -> WorldState:
    """Delete an actor: its slot becomes free (gone from observations, collisions and renders)."""
    i = _slot(world, actor_id, where)
    return world.set_slot(i, ids="", cls="", behavior=BehaviorSpec("none"), static=False, valid=False)


def reroute(
    world: WorldState,
    actor_id: str,
    route: Sequence[str] | None = None,
    behavior: BehaviorSpec | None = None,
    *,
    lane_map: LaneMap | None = None,
    where: str = "actor",
) -> WorldState:
    """Give an actor a new lane route and/or behaviour.

    A route makes a non-path behaviour (log replay, static, constant velocity) drive the route with
    ``idm`` unless ``behavior`` says otherwise. The actor must stand on the route's first lane (or
    beside it, on the lane it changes from)."""
    i = _slot(world, actor_id, where)
    cur = world.behavior[i]
    new = behavior if behavior is not None else cur
    if route is not None:
        r = tuple(route)
        typ = new.type if (behavior is not None or new.type in ("idm", "mobil")) else "idm"
        new = BehaviorSpec(typ, new.params if typ == new.type else {}, r)
        if lane_map is None:
            raise ScenarioError("rerouting needs the scene's lane map", field=f"{where}.route")
        lane_map.check_route(list(r), where=f"{where}.route")
        first = lane_map.lanes[r[0]]
        s_on, d = first.polyline.project([world.x[i], world.y[i]])
        if abs(float(d)) > first.width or not (-5.0 <= float(s_on) <= first.length + 5.0):
            raise ScenarioError(
                f"actor {actor_id!r} at ({world.x[i]:.1f}, {world.y[i]:.1f}) is not on lane {first.id!r}; a route must start on the actor's lane",
                field=f"{where}.route[0]",
            )
    check_behavior(new, lane_map, f"{where}.behavior" if behavior is not None else where)
    return world.set_slot(i, behavior=new, static=False)
