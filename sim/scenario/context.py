"""The scene a scenario plays in (map, tracks, logged ego), library assets of inserted actors, and
the validated model turned into a :class:`~sim.spec.ScenarioSpec`."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import LoopdriveError, ScenarioError
from sim.scenario.schema import (
    DEFAULT_SIZES,
    BehaviorModel,
    InsertModel,
    RemoveModel,
    ScenarioModel,
    SceneModel,
)
from sim.spec import (
    ActorOp,
    BehaviorSpec,
    EgoSpec,
    InsertOp,
    RemoveOp,
    RerouteOp,
    ScenarioSpec,
    SceneSpec,
    SpawnSpec,
)

log = logging.getLogger(__name__)


# -------------------------------------------------------------------------------- scene context
@dataclass(frozen=True)
class SceneContext:
    """The static facts of a scene a scenario is checked against: its lane map, the logged ego
    track and actor tracks (``sim.log.Track``, world frame) and the log's time span (µs)."""

    lane_map: Any
    ego: Any
    tracks: Mapping[str, Any]
    t0_us: int = 0
    t1_us: int = 0
    ego_route: tuple[str, ...] | None = None

    def logged_ego_route(self) -> tuple[str, ...]:
        """The lanes the logged ego drove (the synthetic town's route, or the lanes nearest to the
        logged ego poses in order)."""
        if self.ego_route:
            return tuple(self.ego_route)
        if self.ego is None:
            return (self.lane_map.lane_ids[0],)
        out: list[str] = []
        for p in self.ego.pose[:: max(1, len(self.ego.pose) // 50)]:
            lid, _, _ = self.lane_map.nearest_lane(float(p[0]), float(p[1]), float(p[3]))
            if not out or out[-1] != lid:
                out.append(lid)
        return tuple(out)


@functools.lru_cache(maxsize=16)
def _scene_cached(
    log_path: str | None, town: str, seed: int, start_t_s: float, horizon_s: float, dt_s: float
) -> tuple[Any, SceneContext]:
    """The scene object the engine runs (``sim.engine.load_scene``: a drive log, or the synthetic
    town, at least as long as its preset's log) and its :class:`SceneContext`. Cached per
    process: scenario validation and the episodes of a batch share it."""
    spec = ScenarioSpec(
        scene=SceneSpec(log=Path(log_path) if log_path else None, town=town, seed=seed),
        ego=EgoSpec(start_t_s=start_t_s),
        horizon_s=horizon_s,
        dt_s=dt_s,
    )
    from sim.engine import load_scene

    try:
        scene = load_scene(spec)
    except LoopdriveError:
        raise
    except (KeyError, ValueError, OSError) as exc:
        what = f"log {log_path!r}" if log_path else f"synthetic town {town!r} seed {seed}"
        raise ScenarioError(f"cannot load {what}: {exc}", field="scene") from None
    lm, ego, tracks = _unpack_synth_scene(scene)
    route = getattr(scene, "ego_route", None)
    t0 = int(ego.t_us[0]) if ego is not None and len(ego.t_us) else 0
    t1 = int(ego.t_us[-1]) if ego is not None and len(ego.t_us) else 0
    ctx = SceneContext(
        lane_map=lm,
        ego=ego,
        tracks={t.id: t for t in tracks},
        t0_us=t0,
        t1_us=t1,
        ego_route=tuple(route) if route else None,
    )
    return scene, ctx


def scene_for(spec: ScenarioSpec) -> tuple[Any, SceneContext]:
    """The (cached) scene object and context of an in-code spec."""
    sc = spec.scene
    return _scene_cached(
        str(sc.log) if sc.log is not None else None,
        sc.town,
        sc.seed,
        spec.ego.start_t_s,
        spec.horizon_s,
        spec.dt_s,
    )


def _unpack_synth_scene(scene: Any) -> tuple[Any, Any, Sequence[Any]]:
    """Accept the synthetic town's scene object: attributes or keys ``map`` (dict or LaneMap),
    ``ego`` (Track) and ``tracks`` (Tracks)."""
    from sim.map import LaneMap

    def get(name: str) -> Any:
        if isinstance(scene, Mapping):
            return scene.get(name)
        return getattr(scene, name, None)

    m = get("map")
    if m is None or callable(m):
        m = get("lane_map")
        m = m() if callable(m) else m
    lm = m if isinstance(m, LaneMap) else LaneMap.from_dict(m)
    ego = get("ego")
    tracks = tuple(get("tracks") or ())
    return lm, ego, tracks


def scene_context(
    scene: SceneSpec, *, start_t_s: float = 0.0, horizon_s: float = 10.0, dt_s: float = 0.1
) -> SceneContext:
    """Lane map and tracks of a scene (cached). A synthetic town's traffic is its preset log's
    unless start time plus horizon runs past that log, and its tracks are sampled at the step, so
    pass those when the tracks matter."""
    return scene_for(
        ScenarioSpec(scene=scene, ego=EgoSpec(start_t_s=start_t_s), horizon_s=horizon_s, dt_s=dt_s)
    )[1]


def _resolve_log(p: str, file: str | None) -> Path:
    cand = Path(p)
    if cand.is_absolute():
        return cand
    if file is not None:
        rel = Path(file).parent / cand
        if rel.exists():
            return rel
    return cand


# ------------------------------------------------------------------------------- library assets
class _AssetProblem(Exception):
    """An insert op's ``asset`` cannot be used: ``sub`` is the offending key of the op."""

    def __init__(self, sub: str, message: str) -> None:
        super().__init__(message)
        self.sub = sub
        self.message = message


def library_root(scene: SceneModel, file: str | None = None) -> Path:
    """The actor-library folder of a scenario: ``scene.actor_library`` (relative to the scenario
    file, else the working directory), else ``$LOOPDRIVE_ACTORS``, else ``./actors``."""
    if scene.actor_library:
        return _resolve_log(scene.actor_library, file)
    return Path(os.environ.get("LOOPDRIVE_ACTORS", "actors"))


def _short_list(items: Sequence[str], n: int = 16) -> str:
    return (
        ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")
        if items
        else "(none)"
    )


def _library_actor(a: InsertModel, root: Path) -> Any:
    """The :class:`~sim.actor_library.LibraryActor` an insert op's ``asset`` names (``source/id``,
    or ``source``: the actor of that source and the op's class nearest in size), checked against
    the op's class and size (within :data:`sim.actor_library.SIZE_TOLERANCE`). Raises
    :class:`_AssetProblem`."""
    from sim.actor_library import SIZE_TOLERANCE, ActorLibrary, check_size
    from sim.errors import BundleError

    assert a.asset is not None
    where = f"the actor library at {root}"
    if root.exists() and not root.is_dir():
        raise _AssetProblem("asset", f"expected an actor-library folder, got the file {root}")
    try:
        lib = ActorLibrary(root)
    except BundleError as exc:
        raise _AssetProblem("asset", f"expected a readable actor library: {exc.one_line()}") from None
    if not lib.actors:
        raise _AssetProblem(
            "asset",
            f"expected reconstructed actors in {where}, found none (set scene.actor_library or "
            "$LOOPDRIVE_ACTORS, or harvest a bundle with `loopdrive actors add BUNDLE`)",
        )
    by_key = {x.key: x for x in lib.actors}
    if "/" in a.asset:
        la = by_key.get(a.asset)
        if la is None:
            raise _AssetProblem(
                "asset", f"unknown library actor {a.asset!r}; {where} has: {_short_list(sorted(by_key))}"
            )
        if a.cls is not None and a.cls != la.cls:
            raise _AssetProblem(
                "class", f"expected class {la.cls!r} (that of library actor {la.key!r}), got {a.cls!r}"
            )
    else:
        if a.asset not in lib.sources:
            raise _AssetProblem(
                "asset",
                f"unknown library source {a.asset!r}; {where} has sources: {_short_list(list(lib.sources))}",
            )
        if a.cls is None:
            raise _AssetProblem(
                "asset",
                f"expected a class with the source-only asset {a.asset!r} (or name an actor: source/id)",
            )
        cands = [x for x in lib.actors if x.source == a.asset and x.cls == a.cls]
        if not cands:
            have = sorted({x.cls for x in lib.actors if x.source == a.asset})
            raise _AssetProblem(
                "asset",
                f"library source {a.asset!r} has no actor of class {a.cls!r}; it has: {_short_list(have)}",
            )
        tgt = np.log(np.asarray(a.size or DEFAULT_SIZES[a.cls], dtype=np.float64))
        la = min(cands, key=lambda x: (float(np.max(np.abs(tgt - np.log(np.asarray(x.size))))), x.key))
    if a.size is not None:
        try:
            check_size(la, a.size, SIZE_TOLERANCE)
        except BundleError as exc:
            raise _AssetProblem("size", f"{exc.message}; omit size to take the library actor's") from None
    return la


# ------------------------------------------------------------------------------- model -> spec
def _behavior(b: BehaviorModel | None) -> BehaviorSpec | None:
    if b is None:
        return None
    return BehaviorSpec(type=b.type, params=b.params, route=tuple(b.route) if b.route else None)


def _to_spec(m: ScenarioModel, name: str, file: str | None, ctx: SceneContext | None) -> ScenarioSpec:
    sc = m.scene
    uses_assets = any(isinstance(a, InsertModel) and a.asset for a in m.actors)
    lib_root = library_root(sc, file) if (sc.actor_library or uses_assets) else None
    scene = SceneSpec(
        log=_resolve_log(sc.log, file) if sc.log else None,
        town=sc.town,
        seed=sc.seed,
        bundle=_resolve_log(sc.bundle, file) if sc.bundle else None,
        renderer=sc.renderer,
        neural_mode=sc.neural_mode,
        actor_library=lib_root,
        rig=sc.rig,
    )
    st = m.ego.start
    pose = tuple(st.pose) if st.pose is not None else None
    if st.lane is not None:
        if ctx is None:
            ctx = scene_context(scene, start_t_s=st.t_s, horizon_s=m.horizon_s, dt_s=m.dt_s)
        ln = ctx.lane_map.lanes.get(st.lane)
        if ln is None:
            raise ScenarioError(f"unknown lane {st.lane!r}", file=file, field="ego.start.lane")
        xy, yaw = ln.polyline.interpolate(min(st.s, ln.length))
        pose = (float(xy[0]), float(xy[1]), float(yaw))
    ego = EgoSpec(
        start_t_s=st.t_s,
        route=tuple(m.ego.route) if m.ego.route else None,
        start_pose=pose,
        start_speed=st.speed,
    )
    ops: list[ActorOp] = []
    for i, a in enumerate(m.actors):
        if isinstance(a, InsertModel):
            cls, asset = a.cls, None
            size: tuple[float, ...] | None = tuple(a.size) if a.size is not None else None
            if a.asset is not None:
                assert lib_root is not None
                try:
                    la = _library_actor(a, lib_root)
                except _AssetProblem as exc:
                    raise ScenarioError(exc.message, file=file, field=f"actors[{i}].{exc.sub}") from None
                cls, asset = la.cls, la.key
                size = size or tuple(float(v) for v in la.size)
            assert cls is not None
            size = size or DEFAULT_SIZES[cls]
            sp = a.spawn
            ops.append(
                InsertOp(
                    id=a.id,
                    cls=cls,
                    size=size,  # type: ignore[arg-type]
                    spawn=SpawnSpec(
                        lane=sp.lane,
                        s=sp.s,
                        pose=tuple(sp.pose) if sp.pose else None,
                        speed=sp.speed,
                        lateral_offset=sp.lateral_offset,
                    ),
                    behavior=_behavior(a.behavior) or BehaviorSpec(type="idm"),
                    t_s=a.t_s,
                    asset=asset,
                )
            )
        elif isinstance(a, RemoveModel):
            ops.append(RemoveOp(id=a.id))
        else:
            ops.append(
                RerouteOp(id=a.id, route=tuple(a.route) if a.route else None, behavior=_behavior(a.behavior))
            )
    return ScenarioSpec(
        name=name,
        scene=scene,
        ego=ego,
        actors=tuple(ops),
        logged_behavior=_behavior(m.logged_behavior) or BehaviorSpec(),
        horizon_s=m.horizon_s,
        dt_s=m.dt_s,
        max_actors=m.max_actors,
    )
