"""Semantic checks of a scenario: registries (planner, metrics, observations, behaviours), library
assets, lanes, routes, actor ids and overlapping spawns."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sim import scenario_limits as lim
from sim.errors import LoopdriveError, ScenarioError
from sim.scenario.context import SceneContext, _AssetProblem, _library_actor, library_root
from sim.scenario.schema import DEFAULT_SIZES, EGO_SIZE, InsertModel, RemoveModel, ScenarioModel
from sim.scenario.yaml_doc import Path_, _Doc, _fmt_path, _get_path

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- semantic checks
def _registry_names(kind: str) -> list[str] | None:
    """Known names of a registry, or None when the registry is not available in this build."""
    try:
        if kind == "planner":
            from sim.planning import PLANNERS

            return PLANNERS.names()
        if kind == "metric":
            from sim.metrics import METRICS

            return METRICS.names()
        if kind == "behavior":
            from sim.behavior import BEHAVIORS

            return BEHAVIORS.names()
        if kind == "observation":
            from sim.observations import OBSERVATIONS

            return OBSERVATIONS.names()
    except ImportError:
        return None
    return None


def _planner_param_problems(name: str, params: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """``planner.params`` against the planner's declared parameter schema (``Planner.Params``)."""
    try:
        from sim.planning import PLANNERS

        cls = PLANNERS.get(name)
    except (ImportError, LoopdriveError):
        return []
    check = getattr(cls, "param_problems", None)
    return list(check(params, from_file=True)) if check is not None else []


def _check_behavior_params(doc: _Doc, path: Path_, name: str, errs: list[ScenarioError]) -> None:
    """Parameters of a behaviour (the keys besides ``type`` and ``route``) against its declared
    defaults, through the behaviour class's own ``validate``."""
    try:
        from sim.behavior import BEHAVIORS

        cls = BEHAVIORS.get(name)
    except (ImportError, LoopdriveError):
        return
    node = _get_path(doc.data, path)
    if not isinstance(node, dict) or not hasattr(cls, "validate"):
        return
    params = {k: v for k, v in node.items() if k not in ("type", "route")}
    bad = lim.behavior_param_problems(params)
    for k, msg in bad:
        errs.append(doc.err((*path, k), msg))
    if bad:
        return
    try:
        cls.validate(params, where=_fmt_path(path))
    except ScenarioError as exc:
        key = (exc.field or "").rsplit(".", 1)[-1]
        sub = (*path, key) if key in params else path
        errs.append(doc.err(sub, exc.message))


def _box(x: float, y: float, yaw: float, length: float, width: float) -> Any:
    from shapely.geometry import Polygon

    c, s = math.cos(yaw), math.sin(yaw)
    hl, hw = length / 2.0, width / 2.0
    pts = [
        (x + c * dx - s * dy, y + s * dx + c * dy) for dx, dy in ((hl, hw), (-hl, hw), (-hl, -hw), (hl, -hw))
    ]
    return Polygon(pts)


def _registry_problems(doc: _Doc, m: ScenarioModel, errs: list[ScenarioError]) -> None:
    """The planner, metrics and observations against their registries (and the planner's params)."""
    for kind, names, path in (
        ("planner", [m.planner.name], ("planner", "name")),
        ("metric", m.metrics or [], ("metrics",)),
        ("observation", m.observation, ("observation",)),
    ):
        known = _registry_names(kind)
        if not known:  # registry not available (or empty) in this build
            continue
        for i, nm in enumerate(names):
            if nm not in known:
                p = path if kind == "planner" else (*path, i)
                errs.append(doc.err(p, f"unknown {kind} {nm!r}; known: {', '.join(known) or '(none)'}"))
            elif kind == "planner":
                for loc, msg in _planner_param_problems(nm, m.planner.params):
                    errs.append(doc.err(("planner", "params", *loc), msg))


def _behaviour_problems(doc: _Doc, m: ScenarioModel, errs: list[ScenarioError]) -> None:
    """Behaviour types (logged and of each actor) against the registry, and their parameters."""
    behaviours: list[tuple[Path_, str]] = []
    if m.logged_behavior is not None:
        behaviours.append((("logged_behavior", "type"), m.logged_behavior.type))
    for i, a in enumerate(m.actors):
        b = getattr(a, "behavior", None)
        if b is not None:
            behaviours.append((("actors", i, "behavior", "type"), b.type))
    known_b = _registry_names("behavior")
    if known_b:
        for p, nm in behaviours:
            if nm not in known_b:
                errs.append(doc.err(p, f"unknown behavior {nm!r}; known: {', '.join(known_b)}"))
                continue
            _check_behavior_params(doc, p[:-1], nm, errs)


def _asset_sizes(doc: _Doc, m: ScenarioModel, errs: list[ScenarioError]) -> dict[int, tuple[float, ...]]:
    """Library assets of inserted actors (exist, class, size within the rescaling tolerance): the
    size (m) of each inserted actor with an asset, by actor index."""
    asset_sizes: dict[int, tuple[float, ...]] = {}
    for i, a in enumerate(m.actors):
        if isinstance(a, InsertModel) and a.asset is not None:
            try:
                la = _library_actor(a, library_root(m.scene, doc.file))
                asset_sizes[i] = tuple(a.size or la.size)
            except _AssetProblem as exc:
                errs.append(doc.err(("actors", i, exc.sub), exc.message))
    return asset_sizes


@dataclass
class _MapChecks:
    """Lane and route checks against the scene's lane map, appending to ``errs``."""

    doc: _Doc
    lm: Any
    errs: list[ScenarioError]

    def err(self, path: Path_, msg: str) -> None:
        self.errs.append(self.doc.err(path, msg))

    def check_lane(self, path: Path_, lane: str) -> bool:
        lm = self.lm
        if lane not in lm.lanes:
            sample = ", ".join(lm.lane_ids[:8]) + (", ..." if len(lm.lane_ids) > 8 else "")
            self.err(path, f"unknown lane {lane!r} (this map has {sample})")
            return False
        return True

    def check_route(self, path: Path_, route: Sequence[str]) -> None:
        try:
            self.lm.check_route(list(route), where="route")
        except ScenarioError as exc:
            sub = exc.field or "route"
            idx = sub[sub.find("[") + 1 : sub.find("]")] if "[" in sub else None
            self.err((*path, int(idx)) if idx is not None and idx.isdigit() else path, exc.message)


def _ego_problems(m: ScenarioModel, ctx: SceneContext, chk: _MapChecks, t_start_us: int) -> None:
    """The ego's start time (within the log), start lane and arc length, and route."""
    st = m.ego.start
    if ctx.ego is not None and ctx.t1_us > ctx.t0_us and t_start_us > ctx.t1_us:
        chk.err(
            ("ego", "start", "t_s"),
            f"expected a start time within the log (<= {(ctx.t1_us - ctx.t0_us) / 1e6:g} s), got {st.t_s:g}",
        )
    if st.lane is not None and chk.check_lane(("ego", "start", "lane"), st.lane):
        ln = chk.lm.lanes[st.lane]
        if st.s > ln.length:
            chk.err(
                ("ego", "start", "s"),
                f"expected an arc length within lane {st.lane!r} (<= {ln.length:.1f} m), got {st.s:g}",
            )
    if m.ego.route:
        chk.check_route(("ego", "route"), m.ego.route)


def _start_boxes(m: ScenarioModel, ctx: SceneContext, t_start_us: int) -> dict[str, Any]:
    """Footprints (shapely polygons, m) of the logged actors and the ego at the start time."""
    lm = ctx.lane_map
    boxes: dict[str, Any] = {}
    for aid, tr in ctx.tracks.items():
        pose = tr.pose_at(t_start_us) if hasattr(tr, "pose_at") else None
        if pose is not None:
            boxes[aid] = _box(
                float(pose[0]), float(pose[1]), float(pose[3]), float(tr.size[0]), float(tr.size[1])
            )
    st = m.ego.start
    ego_pose: tuple[float, float, float] | None = None
    if st.pose is not None:
        ego_pose = tuple(st.pose)
    elif st.lane is not None and st.lane in lm.lanes:
        ln = lm.lanes[st.lane]
        xy, yaw = ln.polyline.interpolate(min(st.s, ln.length))
        ego_pose = (float(xy[0]), float(xy[1]), float(yaw))
    elif ctx.ego is not None and hasattr(ctx.ego, "pose_at"):
        p = ctx.ego.pose_at(t_start_us)
        if p is not None:
            ego_pose = (float(p[0]), float(p[1]), float(p[3]))
    if ego_pose is not None:
        ego_size = tuple(ctx.ego.size) if ctx.ego is not None else EGO_SIZE
        boxes["ego"] = _box(*ego_pose, float(ego_size[0]), float(ego_size[1]))
    return boxes


def _insert_problems(
    i: int,
    a: InsertModel,
    chk: _MapChecks,
    alive: set[str],
    boxes: dict[str, Any],
    asset_sizes: Mapping[int, tuple[float, ...]],
) -> None:
    """An inserted actor: a new id, its spawn lane and arc length, route, and a free spawn."""
    base: Path_ = ("actors", i)
    a_size = a.size or asset_sizes.get(i) or (DEFAULT_SIZES[a.cls] if a.cls else None)
    if a.id in alive or a.id == "ego":
        chk.err((*base, "id"), f"expected a new actor id, got {a.id!r} which already exists")
        return
    alive.add(a.id)
    sp = a.spawn
    pose3: tuple[float, float, float] | None = None
    if sp.lane is not None:
        if not chk.check_lane((*base, "spawn", "lane"), sp.lane):
            return
        ln = chk.lm.lanes[sp.lane]
        if sp.s > ln.length:
            chk.err(
                (*base, "spawn", "s"),
                f"expected an arc length within lane {sp.lane!r} (<= {ln.length:.1f} m), got {sp.s:g}",
            )
            return
        xy, yaw = ln.polyline.interpolate(sp.s)
        nx_, ny_ = -math.sin(float(yaw)), math.cos(float(yaw))
        pose3 = (
            float(xy[0]) + nx_ * sp.lateral_offset,
            float(xy[1]) + ny_ * sp.lateral_offset,
            float(yaw),
        )
    elif sp.pose is not None:
        pose3 = tuple(sp.pose)
    if a.behavior.route:
        chk.check_route((*base, "behavior", "route"), a.behavior.route)
    if pose3 is not None and a.t_s == 0.0 and a_size is not None:
        b = _box(*pose3, float(a_size[0]), float(a_size[1]))
        for other, ob in boxes.items():
            if b.intersects(ob):
                chk.err(
                    (*base, "spawn"),
                    f"expected a free spawn, but actor {a.id!r} overlaps {'the ego' if other == 'ego' else repr(other)} at the start",
                )
                break
        boxes[a.id] = b


def _actor_problems(
    m: ScenarioModel,
    chk: _MapChecks,
    alive: set[str],
    boxes: dict[str, Any],
    asset_sizes: Mapping[int, tuple[float, ...]],
) -> None:
    """Actor operations in order: inserted ids are new, removed/rerouted ids exist, routes connect."""
    for i, a in enumerate(m.actors):
        base: Path_ = ("actors", i)
        if isinstance(a, InsertModel):
            _insert_problems(i, a, chk, alive, boxes, asset_sizes)
        elif isinstance(a, RemoveModel):
            if a.id not in alive:
                chk.err(
                    (*base, "id"),
                    f"unknown actor id {a.id!r}; known: {', '.join(sorted(alive)[:12]) or '(none)'}",
                )
            else:
                alive.discard(a.id)
                boxes.pop(a.id, None)
        else:
            if a.id not in alive:
                chk.err(
                    (*base, "id"),
                    f"unknown actor id {a.id!r}; known: {', '.join(sorted(alive)[:12]) or '(none)'}",
                )
            if a.route:
                chk.check_route((*base, "route"), a.route)
            if a.behavior is not None and a.behavior.route:
                chk.check_route((*base, "behavior", "route"), a.behavior.route)


def _semantic(doc: _Doc, m: ScenarioModel, ctx: SceneContext | None) -> list[ScenarioError]:
    """Checks that need the registries and the scene's map and tracks."""
    errs: list[ScenarioError] = []
    _registry_problems(doc, m, errs)
    _behaviour_problems(doc, m, errs)
    asset_sizes = _asset_sizes(doc, m, errs)
    if ctx is None:
        return errs
    chk = _MapChecks(doc, ctx.lane_map, errs)
    for p, msg in lim.map_problems(m, ctx.lane_map.bounds):
        chk.err(p, msg)
    t_start_us = ctx.t0_us + round(m.ego.start.t_s * 1e6)
    _ego_problems(m, ctx, chk, t_start_us)
    boxes = _start_boxes(m, ctx, t_start_us)
    _actor_problems(m, chk, set(ctx.tracks), boxes, asset_sizes)
    return errs
