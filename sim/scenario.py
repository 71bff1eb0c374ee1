"""Scenario files: the pydantic schema of the scenario YAML, validation with line numbers, sweeps.

A scenario file (``version: 1``) describes one closed-loop episode family::

    version: 1
    name: lead_brake
    description: The lead car brakes hard in front of the ego.
    scene: {town: small, seed: 0}              # or {log: logs/town01, bundle: ..., renderer: neural}
    ego: {start: {t_s: 0.0, lane: L3, s: 10.0, speed: 10.0}, route: [L3, L7]}
    actors:
      - {op: insert, id: lead, class: car, size: [4.6, 1.9, 1.5],
         spawn: {lane: L3, s: 35.0, speed: 10.0}, behavior: {type: idm, v0: 12.0}}
      - {op: remove, id: "172"}
      - {op: reroute, id: "88", route: [L13, L12]}
    planner: {name: idm, params: {}}
    observation: [state]
    horizon_s: 20.0
    dt_s: 0.1
    metrics: [at_fault_collision, drivable_area, progress, ttc, comfort]
    seeds: [0, 1, 2]
    sweep: {actors.0.spawn.speed: [8, 12, 16]}

Units: metres, seconds, m/s, radians; poses are (x, y, yaw) in the world frame (z up).

The YAML is read with ruamel.yaml's round-trip parser (which never constructs Python objects from
tags; tagged values are rejected) so every problem can be reported as
``FILE:LINE: field.path: what was expected``. :func:`validate_file` collects all problems of a
file (schema and semantic: unknown lanes/actors/planners/metrics/behaviours, disconnected routes,
overlapping spawns, ``dt_s`` not dividing ``horizon_s``); :func:`load_scenario` raises the first
one as a :class:`~sim.errors.ScenarioError`; :func:`expand` turns a file into its episodes
(seeds x sweep points). A file that asks for more work than the documented limits
(:mod:`sim.scenario_limits`: steps, sweep grid, episodes, actors, coordinates, size) is refused
before any scene is built.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import itertools
import json
import logging
import math
import os
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from sim import scenario_limits as lim
from sim.errors import LoopdriveError, ScenarioError
from sim.scenario_limits import (
    LIMITS,
    Coord,
    Distance,
    Name,
    Offset,
    Seed,
    Size,
    Slots,
    Speed,
    Step,
    Time,
    Version,
    Yaw,
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

__all__ = [
    "SCHEMA_VERSION",
    "Episode",
    "ScenarioModel",
    "SceneContext",
    "expand",
    "expand_paths",
    "json_schema",
    "library_root",
    "load_scenario",
    "read_yaml",
    "scenario_files",
    "scene_context",
    "scene_for",
    "validate_file",
    "validate_paths",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: Upper bound on YAML nodes, while parsing and after alias expansion ("billion laughs" files).
_MAX_NODES = LIMITS.max_yaml_nodes
#: Default size (l, w, h) of an inserted actor per class when ``size`` is omitted, metres.
DEFAULT_SIZES: dict[str, tuple[float, float, float]] = {
    "car": (4.6, 1.9, 1.5),
    "truck": (8.0, 2.5, 3.2),
    "bus": (11.0, 2.6, 3.2),
    "cyclist": (1.8, 0.7, 1.7),
    "motorcycle": (2.2, 0.8, 1.5),
    "pedestrian": (0.6, 0.6, 1.75),
    "other": (2.0, 1.0, 1.0),
}
EGO_SIZE: tuple[float, float, float] = (4.6, 1.9, 1.6)


# ------------------------------------------------------------------------------------ the schema
def _id_str(v: Any) -> Any:
    """Accept ``id: 172`` as the string ``"172"`` (logged ids are strings)."""
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return v


ActorId = Annotated[str, BeforeValidator(_id_str), Field(min_length=1, description="actor id (string)")]
LaneId = Annotated[
    str, BeforeValidator(_id_str), Field(min_length=1, description="lane id from the scene's map")
]
Route = Annotated[list[LaneId], Field(min_length=1, max_length=LIMITS.max_route_lanes)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)


class SceneModel(_Model):
    """Where the world comes from: a drive log (and optional scene bundle), or a synthetic town."""

    log: str | None = Field(
        None, description="drive-log folder (relative to the scenario file, or the working directory)"
    )
    bundle: str | None = Field(
        None, description="reconstructed scene bundle for the neural/composite renderers"
    )
    town: str = Field("tiny", description="synthetic town preset used when no log is given")
    seed: Seed = Field(0, description="synthetic town seed used when no log is given")
    renderer: Literal["mesh", "neural", "composite"] = Field("mesh", description="sensor backend")
    neural_mode: Literal["auto", "surface", "volume"] = Field(
        "auto",
        description="how the neural/composite renderers draw the static background: `surface` (the bundle's baked "
        "iso-surface, colours from the field; fast), `volume` (full volume rendering; the reference) or `auto` "
        "(surface when its calibration agrees with volume rendering, else volume)",
    )
    actor_library: str | None = Field(
        None,
        description="actor-library folder for inserted actors' `asset` (relative to the scenario file; "
        "default $LOOPDRIVE_ACTORS or ./actors)",
    )


class StartModel(_Model):
    """Ego start: time into the log, and optionally a lane + arc length or a pose, and a speed."""

    t_s: Time = Field(0.0, description="start time into the log, s")
    lane: LaneId | None = Field(None, description="start on this lane ...")
    s: Distance = Field(0.0, description="... at this arc length, m")
    pose: tuple[Coord, Coord, Yaw] | None = Field(None, description="start pose x, y (m), yaw (rad), world frame")
    speed: Speed | None = Field(None, description="start speed, m/s (default: logged speed)")

    @model_validator(mode="after")
    def _one_start(self) -> StartModel:
        if self.lane is not None and self.pose is not None:
            raise ValueError("give either lane (+ s) or pose, not both")
        return self


class EgoModel(_Model):
    start: StartModel = Field(default_factory=StartModel)
    route: Route | None = Field(None, description="lane ids; default: the lanes the logged ego drove")


class BehaviorModel(BaseModel):
    """An actor policy by registry name; every other key is a parameter of that behaviour (SI units),
    e.g. ``{type: idm, v0: 14.0, T: 1.5}``."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    type: str = Field(description="behaviour name (log_replay, idm, mobil, constant_velocity, ...)")
    route: Route | None = Field(None, description="lane route the behaviour follows")

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SpawnModel(_Model):
    """Where an inserted actor appears: on ``lane`` at arc length ``s``, or at ``pose``."""

    lane: LaneId | None = None
    s: Distance = Field(0.0, description="arc length along the lane, m")
    lateral_offset: Offset = Field(0.0, description="offset left of the centreline, m")
    pose: tuple[Coord, Coord, Yaw] | None = Field(None, description="x, y (m), yaw (rad), world frame")
    speed: Speed = Field(0.0, description="initial speed, m/s")

    @model_validator(mode="after")
    def _one_place(self) -> SpawnModel:
        if (self.lane is None) == (self.pose is None):
            raise ValueError("expected exactly one of lane (+ s) or pose")
        return self


ActorClass = Literal["car", "truck", "bus", "cyclist", "pedestrian", "motorcycle", "other"]


class InsertModel(_Model):
    """Add an actor. With ``asset`` (a reconstructed actor of the actor library, ``source/id``, or
    just ``source`` for the one of that source nearest in size of the class) the neural backend
    renders it with that actor's field; ``class`` and ``size`` then default to the library actor's,
    and a given size must be within the library's rescaling tolerance."""

    op: Literal["insert"]
    id: ActorId
    cls: ActorClass | None = Field(None, alias="class", description="actor class (default: the asset's)")
    size: tuple[Size, Size, Size] | None = Field(
        None, description="length, width, height in metres (default: the asset's, else per class)"
    )
    asset: str | None = Field(
        None,
        pattern=r"^[^/\s.][^/\s]*(/[^/\s]+)?$",
        description="actor-library actor 'source/id' (e.g. town-s1/12) or source 'source' (the actor of "
        "that source and class nearest in size), see `loopdrive actors list`",
    )
    spawn: SpawnModel
    behavior: BehaviorModel = Field(default_factory=lambda: BehaviorModel(type="idm"))
    t_s: Time = Field(0.0, description="time the actor appears, s after the episode start")

    @model_validator(mode="after")
    def _class_or_asset(self) -> InsertModel:
        if self.cls is None and self.asset is None:
            raise ValueError("a class (car, truck, bus, cyclist, pedestrian, motorcycle, other) or an asset")
        return self


class RemoveModel(_Model):
    op: Literal["remove"]
    id: ActorId


class RerouteModel(_Model):
    op: Literal["reroute"]
    id: ActorId
    route: Route | None = None
    behavior: BehaviorModel | None = None

    @model_validator(mode="after")
    def _something(self) -> RerouteModel:
        if self.route is None and self.behavior is None:
            raise ValueError("expected a route and/or a behavior")
        return self


ActorOpModel = Annotated[InsertModel | RemoveModel | RerouteModel, Field(discriminator="op")]


class PlannerModel(_Model):
    name: str = Field("idm", description="planner name from the planner registry")
    params: dict[str, Any] = Field(default_factory=dict)


class ScenarioModel(_Model):
    """A loopdrive scenario file (``version: 1``)."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        populate_by_name=True,
        title="loopdrive scenario",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    version: Version = Field(description="schema version; only 1 exists")
    name: Name | None = Field(None, description="scenario name (default: the file name without extension)")
    description: str = Field("", description="what happens and what a good planner does")
    tags: list[str] = Field(default_factory=list)
    scene: SceneModel = Field(default_factory=SceneModel)
    ego: EgoModel = Field(default_factory=EgoModel)
    actors: list[ActorOpModel] = Field(default_factory=list, max_length=LIMITS.max_actor_ops)
    logged_behavior: BehaviorModel | None = Field(
        None, description="policy of logged actors no op touches (default: log replay)"
    )
    planner: PlannerModel = Field(default_factory=PlannerModel)
    observation: list[str] = Field(default_factory=lambda: ["state"], min_length=1)
    horizon_s: Time = Field(10.0, gt=0.0, description="episode length, s")
    dt_s: Step = Field(0.1, description="simulation step, s")
    max_actors: Slots = Field(64, description="actor slots (logged + inserted)")
    metrics: list[str] | None = Field(None, description="metric names (default: all registered)")
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1, max_length=LIMITS.max_seeds)
    sweep: dict[str, Annotated[list[Any], Field(max_length=LIMITS.max_sweep_values)]] = Field(
        default_factory=dict,
        max_length=LIMITS.max_sweep_keys,
        description="grid over dotted paths, e.g. {actors.0.spawn.speed: [8, 12]}",
    )


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the scenario file, for editors."""
    return ScenarioModel.model_json_schema(by_alias=True)


# ----------------------------------------------------------------------------- YAML with lines
Path_ = tuple[str | int, ...]


def _fmt_path(path: Sequence[str | int]) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


@dataclass
class _Doc:
    file: str
    data: Any
    lines: dict[Path_, int]

    def line(self, path: Sequence[str | int]) -> int | None:
        """Line of the deepest known node on ``path`` (1-based)."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), None)

    def err(self, path: Sequence[str | int], message: str) -> ScenarioError:
        return ScenarioError(message, file=self.file, field=_fmt_path(path) or None, line=self.line(path))


def _tag_of(node: Any) -> str | None:
    tag = getattr(node, "tag", None)
    value = getattr(tag, "value", tag if isinstance(tag, str) else None)
    return value if value else None


#: the YAML core-schema tags a scenario may use (anything else, e.g. ``!!python/...``, is refused)
_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{t}" for t in ("map", "seq", "str", "int", "float", "bool", "null")
)


def _to_plain(
    node: Any, path: Path_, lines: dict[Path_, int], file: str, budget: list[int], stack: set[int]
) -> Any:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar

    budget[0] -= 1
    if budget[0] < 0:
        raise ScenarioError(
            f"file too large (more than {_MAX_NODES} YAML nodes after aliases)",
            file=file,
            field=_fmt_path(path) or None,
        )
    tag = _tag_of(node)
    if isinstance(node, TaggedScalar) and tag == "tag:yaml.org,2002:str":
        return str(node.value)
    if isinstance(node, TaggedScalar) or (tag is not None and tag not in _PLAIN_TAGS):
        raise ScenarioError(
            f"expected a plain YAML value, got a value tagged {tag!r}",
            file=file,
            field=_fmt_path(path) or None,
            line=lines.get(path),
        )
    if isinstance(node, CommentedMap | CommentedSeq):
        if id(node) in stack:
            raise ScenarioError(
                "expected a finite document, got a recursive alias",
                file=file,
                field=_fmt_path(path) or None,
                line=lines.get(path),
            )
        stack.add(id(node))
        try:
            if isinstance(node, CommentedMap):
                out: dict[str, Any] = {}
                for k in node:
                    try:
                        kl = node.lc.key(k)[0] + 1
                    except Exception:
                        kl = lines.get(path)
                    if not isinstance(k, str):
                        raise ScenarioError(
                            f"expected string keys, got {k!r}",
                            file=file,
                            field=_fmt_path(path) or None,
                            line=kl,
                        )
                    sub = (*path, k)
                    if kl is not None:
                        lines[sub] = kl
                    out[k] = _to_plain(node[k], sub, lines, file, budget, stack)
                return out
            items: list[Any] = []
            for i, v in enumerate(node):
                sub = (*path, i)
                with contextlib.suppress(Exception):
                    lines[sub] = node.lc.item(i)[0] + 1
                items.append(_to_plain(v, sub, lines, file, budget, stack))
            return items
        finally:
            stack.discard(id(node))
    if node is None or isinstance(node, bool):
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, datetime | date):
        raise ScenarioError(
            f"expected a number or a string, got a date ({node}); quote it",
            file=file,
            field=_fmt_path(path) or None,
            line=lines.get(path),
        )
    raise ScenarioError(
        f"unsupported YAML value of type {type(node).__name__}",
        file=file,
        field=_fmt_path(path) or None,
        line=lines.get(path),
    )


def _parse_yaml_text(text: str, file: str) -> _Doc:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError

    yaml = YAML(typ="rt", pure=True)
    yaml.allow_duplicate_keys = False
    yaml.Composer = lim.counting_composer(_MAX_NODES)
    try:
        raw = yaml.load(text)
    except lim.TooManyNodes:
        raise ScenarioError(f"file too large (more than {_MAX_NODES} YAML nodes)", file=file) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = (exc.problem or exc.context or "syntax error").strip()
        raise ScenarioError(f"not valid YAML: {what}", file=file, line=line) from None
    except RecursionError:
        raise ScenarioError("not valid YAML: nested too deeply", file=file) from None
    except Exception as exc:  # any other parser failure is still the user's file
        raise ScenarioError(
            f"not valid YAML: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(
                ": "
            ),
            file=file,
        ) from None
    lines: dict[Path_, int] = {(): 1}
    try:
        data = _to_plain(raw, (), lines, file, [_MAX_NODES], set())
    except RecursionError:
        raise ScenarioError("expected a document nested less deeply", file=file) from None
    return _Doc(file=file, data=data, lines=lines)


def read_yaml(path: str | os.PathLike[str]) -> tuple[Any, dict[Path_, int]]:
    """Read a YAML file into plain Python values (dict/list/str/int/float/bool/None) and a map from
    field paths (tuples of keys and indices) to 1-based line numbers. Tags are rejected; no Python
    objects are ever constructed. Raises :class:`ScenarioError`."""
    doc = _read_doc(path)
    return doc.data, doc.lines


def _read_doc(path: str | os.PathLike[str]) -> _Doc:
    from sim.fsutil import read_input_bytes

    file = str(path)
    # a folder, device, FIFO or oversized file is refused before a byte is read
    try:
        data = read_input_bytes(path, error=ScenarioError, max_bytes=LIMITS.max_file_bytes, what="a scenario file")
    except ScenarioError as exc:
        raise ScenarioError(exc.message, file=file) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ScenarioError("expected UTF-8 text", file=file) from None
    return _parse_yaml_text(text, file)


# --------------------------------------------------------------------- pydantic errors -> lines
def _unwrap(tp: Any) -> list[Any]:
    """Member types of an annotation (Optional/Union/Annotated stripped)."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin is typing.Union or origin is types.UnionType:
        out: list[Any] = []
        for a in typing.get_args(tp):
            if a is not type(None):
                out.extend(_unwrap(a))
        return out
    return [tp]


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The pydantic model class that an error location points into (for 'known keys' hints)."""
    cur: list[Any] = [ScenarioModel]
    for part in loc:
        nxt: list[Any] = []
        for tp in cur:
            origin = typing.get_origin(tp)
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                if isinstance(part, str):
                    fld = tp.model_fields.get(part)
                    if fld is None:
                        for f in tp.model_fields.values():
                            if f.alias == part:
                                fld = f
                    if fld is not None:
                        nxt.extend(_unwrap(fld.annotation))
            elif origin in (list, tuple) and isinstance(part, int):
                args = [a for a in typing.get_args(tp) if a is not Ellipsis]
                if args:
                    nxt.extend(_unwrap(args[0] if origin is list else args[min(part, len(args) - 1)]))
            elif origin is dict and isinstance(part, str):
                nxt.extend(_unwrap(typing.get_args(tp)[1]))
        # discriminated-union tags appear in pydantic locations as the tag value ('insert')
        if not nxt and isinstance(part, str):
            for tp in cur:
                if (
                    isinstance(tp, type)
                    and issubclass(tp, BaseModel)
                    and "op" in tp.model_fields
                    and part in typing.get_args(tp.model_fields["op"].annotation)
                ):
                    nxt.append(tp)
        if not nxt:
            return None
        cur = [t for t in nxt if not (isinstance(t, type) and t is Any)]
        cur = cur or nxt
    for tp in cur:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return tp
    return None


def _data_path(data: Any, loc: Sequence[str | int]) -> Path_:
    """Map a pydantic error location onto the data (dropping union tags such as 'insert')."""
    out: list[str | int] = []
    cur = data
    for part in loc:
        in_dict = isinstance(cur, dict) and isinstance(part, str) and part in cur
        in_list = isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur)
        if in_dict or in_list:
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, dict) and isinstance(part, str) and cur.get("op") == part:
            continue  # discriminator tag
        elif isinstance(part, str) and (part.startswith("function-") or "[" in part):
            continue
        else:
            out.append(part)
            cur = None
    return tuple(out)


def _describe(err: Mapping[str, Any], loc: Sequence[str | int]) -> str:
    typ = err.get("type", "")
    ctx = err.get("ctx") or {}
    inp = err.get("input")
    msg = str(err.get("msg", "invalid value"))

    def got() -> str:
        r = repr(inp)
        return r if len(r) <= 60 else r[:57] + "..."

    if typ == "extra_forbidden":
        model = _model_at(loc[:-1])
        if model is not None:
            known = sorted(f.alias or n for n, f in model.model_fields.items())
            return f"unknown key; expected one of: {', '.join(known)}"
        return "unknown key"
    if typ == "missing":
        return "required field is missing"
    if typ == "literal_error":
        return f"expected {ctx.get('expected', 'one of the allowed values')}, got {got()}"
    if typ == "union_tag_invalid":
        return f"expected op to be one of {ctx.get('expected_tags', 'insert, remove, reroute')}, got {ctx.get('tag', got())!r}"
    if typ == "union_tag_not_found":
        return "expected an 'op' key (insert, remove or reroute)"
    if typ == "value_error":
        return "expected " + msg.removeprefix("Value error, ")
    if msg.startswith("Input should be "):
        return f"expected {msg.removeprefix('Input should be ')}, got {got()}"
    if typ == "too_short":
        return f"expected at least {ctx.get('min_length', 1)} item(s), got {ctx.get('actual_length', 0)}"
    return f"{msg[0].lower() + msg[1:]} (got {got()})" if msg else f"invalid value {got()}"


def _schema_errors(doc: _Doc, data: Any, exc: ValidationError) -> list[ScenarioError]:
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        dpath = _data_path(data, loc)
        line = doc.line(dpath)
        out.append(
            ScenarioError(_describe(err, loc), file=doc.file, field=_fmt_path(dpath) or None, line=line)
        )
    return out


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
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "") if items else "(none)"


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
                "asset", f"unknown library source {a.asset!r}; {where} has sources: {_short_list(list(lib.sources))}"
            )
        if a.cls is None:
            raise _AssetProblem("asset", f"expected a class with the source-only asset {a.asset!r} (or name an actor: source/id)")
        cands = [x for x in lib.actors if x.source == a.asset and x.cls == a.cls]
        if not cands:
            have = sorted({x.cls for x in lib.actors if x.source == a.asset})
            raise _AssetProblem(
                "asset", f"library source {a.asset!r} has no actor of class {a.cls!r}; it has: {_short_list(have)}"
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
        start_pose=pose,  # type: ignore[arg-type]
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
                    ),  # type: ignore[arg-type]
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
            from sim.behavior import BEHAVIORS  # type: ignore[attr-defined]

            return BEHAVIORS.names()
        if kind == "observation":
            from sim.observations import OBSERVATIONS  # type: ignore[attr-defined]

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
        from sim.behavior import BEHAVIORS  # type: ignore[attr-defined]

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


def _semantic(doc: _Doc, m: ScenarioModel, ctx: SceneContext | None) -> list[ScenarioError]:
    """Checks that need the registries and the scene's map and tracks."""
    errs: list[ScenarioError] = []

    def err(path: Path_, msg: str) -> None:
        errs.append(doc.err(path, msg))

    # registries
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
                err(p, f"unknown {kind} {nm!r}; known: {', '.join(known) or '(none)'}")
            elif kind == "planner":
                for loc, msg in _planner_param_problems(nm, m.planner.params):
                    err(("planner", "params", *loc), msg)
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
                err(p, f"unknown behavior {nm!r}; known: {', '.join(known_b)}")
                continue
            _check_behavior_params(doc, p[:-1], nm, errs)

    # library assets of inserted actors (exist, class, size within the rescaling tolerance)
    asset_sizes: dict[int, tuple[float, ...]] = {}
    for i, a in enumerate(m.actors):
        if isinstance(a, InsertModel) and a.asset is not None:
            try:
                la = _library_actor(a, library_root(m.scene, doc.file))
                asset_sizes[i] = tuple(a.size or la.size)
            except _AssetProblem as exc:
                err(("actors", i, exc.sub), exc.message)

    if ctx is None:
        return errs
    lm = ctx.lane_map
    for p, msg in lim.map_problems(m, lm.bounds):
        err(p, msg)

    def check_lane(path: Path_, lane: str) -> bool:
        if lane not in lm.lanes:
            sample = ", ".join(lm.lane_ids[:8]) + (", ..." if len(lm.lane_ids) > 8 else "")
            err(path, f"unknown lane {lane!r} (this map has {sample})")
            return False
        return True

    def check_route(path: Path_, route: Sequence[str]) -> None:
        try:
            lm.check_route(list(route), where="route")
        except ScenarioError as exc:
            sub = exc.field or "route"
            idx = sub[sub.find("[") + 1 : sub.find("]")] if "[" in sub else None
            err((*path, int(idx)) if idx is not None and idx.isdigit() else path, exc.message)

    # ego
    st = m.ego.start
    t_start_us = ctx.t0_us + round(st.t_s * 1e6)
    if ctx.ego is not None and ctx.t1_us > ctx.t0_us and t_start_us > ctx.t1_us:
        err(
            ("ego", "start", "t_s"),
            f"expected a start time within the log (<= {(ctx.t1_us - ctx.t0_us) / 1e6:g} s), got {st.t_s:g}",
        )
    if st.lane is not None and check_lane(("ego", "start", "lane"), st.lane):
        ln = lm.lanes[st.lane]
        if st.s > ln.length:
            err(
                ("ego", "start", "s"),
                f"expected an arc length within lane {st.lane!r} (<= {ln.length:.1f} m), got {st.s:g}",
            )
    if m.ego.route:
        check_route(("ego", "route"), m.ego.route)

    # actors: ids, lanes, routes, overlaps
    alive = {k for k in ctx.tracks}
    boxes: dict[str, Any] = {}
    for aid, tr in ctx.tracks.items():
        pose = tr.pose_at(t_start_us) if hasattr(tr, "pose_at") else None
        if pose is not None:
            boxes[aid] = _box(
                float(pose[0]), float(pose[1]), float(pose[3]), float(tr.size[0]), float(tr.size[1])
            )
    ego_pose: tuple[float, float, float] | None = None
    if st.pose is not None:
        ego_pose = tuple(st.pose)  # type: ignore[assignment]
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

    for i, a in enumerate(m.actors):
        base: Path_ = ("actors", i)
        if isinstance(a, InsertModel):
            a_size = a.size or asset_sizes.get(i) or (DEFAULT_SIZES[a.cls] if a.cls else None)
            if a.id in alive or a.id == "ego":
                err((*base, "id"), f"expected a new actor id, got {a.id!r} which already exists")
                continue
            alive.add(a.id)
            sp = a.spawn
            pose3: tuple[float, float, float] | None = None
            if sp.lane is not None:
                if not check_lane((*base, "spawn", "lane"), sp.lane):
                    continue
                ln = lm.lanes[sp.lane]
                if sp.s > ln.length:
                    err(
                        (*base, "spawn", "s"),
                        f"expected an arc length within lane {sp.lane!r} (<= {ln.length:.1f} m), got {sp.s:g}",
                    )
                    continue
                xy, yaw = ln.polyline.interpolate(sp.s)
                nx_, ny_ = -math.sin(float(yaw)), math.cos(float(yaw))
                pose3 = (
                    float(xy[0]) + nx_ * sp.lateral_offset,
                    float(xy[1]) + ny_ * sp.lateral_offset,
                    float(yaw),
                )
            elif sp.pose is not None:
                pose3 = tuple(sp.pose)  # type: ignore[assignment]
            if a.behavior.route:
                check_route((*base, "behavior", "route"), a.behavior.route)
            if pose3 is not None and a.t_s == 0.0 and a_size is not None:
                b = _box(*pose3, float(a_size[0]), float(a_size[1]))
                for other, ob in boxes.items():
                    if b.intersects(ob):
                        err(
                            (*base, "spawn"),
                            f"expected a free spawn, but actor {a.id!r} overlaps {'the ego' if other == 'ego' else repr(other)} at the start",
                        )
                        break
                boxes[a.id] = b
        elif isinstance(a, RemoveModel):
            if a.id not in alive:
                err(
                    (*base, "id"),
                    f"unknown actor id {a.id!r}; known: {', '.join(sorted(alive)[:12]) or '(none)'}",
                )
            else:
                alive.discard(a.id)
                boxes.pop(a.id, None)
        else:
            if a.id not in alive:
                err(
                    (*base, "id"),
                    f"unknown actor id {a.id!r}; known: {', '.join(sorted(alive)[:12]) or '(none)'}",
                )
            if a.route:
                check_route((*base, "route"), a.route)
            if a.behavior is not None and a.behavior.route:
                check_route((*base, "behavior", "route"), a.behavior.route)
    return errs


# ------------------------------------------------------------------------------- sweep helpers
_MISSING = object()


def _split_path(key: str) -> list[str | int]:
    return [int(p) if p.lstrip("-").isdigit() else p for p in key.split(".") if p != ""]


def _get_path(data: Any, parts: Sequence[str | int]) -> Any:
    cur = data
    for p in parts:
        if (isinstance(cur, dict) and isinstance(p, str) and p in cur) or (
            isinstance(cur, list) and isinstance(p, int) and -len(cur) <= p < len(cur)
        ):
            cur = cur[p]
        else:
            return _MISSING
    return cur


def _set_path(data: Any, parts: Sequence[str | int], value: Any) -> Any:
    """A copy of ``data`` with the value at ``parts`` replaced (missing mappings on the way, i.e.
    fields left at their defaults, are created)."""
    out = copy.deepcopy(data)
    cur = out
    for p in parts[:-1]:
        if isinstance(cur, dict) and p not in cur:
            cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value
    return out


def sweep_points(sweep: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The grid of a sweep, in file order (last key varies fastest); ``[{}]`` without a sweep."""
    keys = list(sweep)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(sweep[k] for k in keys))]


# ------------------------------------------------------------------------------------ loading
@dataclass(frozen=True)
class Episode:
    """One episode of a batch: a scenario spec at one seed and one sweep point.

    Attributes:
        episode_id: unique, filesystem-safe, stable across runs (``<scenario>__s<seed>[__p<k>]``).
        scenario: scenario name; ``file``: the YAML it came from (None for in-code specs).
        seed: the seed of the episode's ``np.random.Generator``.
        sweep: the sweep values of this point (dotted path -> value), empty without a sweep.
        spec: the engine's frozen scenario spec.
        planner, planner_params: planner registry name and its parameters.
        observation: observation kinds given to the planner.
        metrics: metric names to compute (empty = all registered).
    """

    episode_id: str
    scenario: str
    seed: int
    spec: ScenarioSpec
    file: str | None = None
    sweep: Mapping[str, Any] = field(default_factory=dict)
    planner: str = "idm"
    planner_params: Mapping[str, Any] = field(default_factory=dict)
    observation: tuple[str, ...] = ("state",)
    metrics: tuple[str, ...] = ()
    description: str = ""
    scene_horizon_s: float | None = None

    def scene_spec(self) -> ScenarioSpec:
        """The spec the scene is built for: the horizon the file declared (a synthetic town's
        traffic depends on it), even when the episode was cut with :meth:`with_horizon`."""
        from dataclasses import replace

        if self.scene_horizon_s is None or self.scene_horizon_s == self.spec.horizon_s:
            return self.spec
        return replace(self.spec, horizon_s=self.scene_horizon_s)

    def with_planner(self, name: str, params: Mapping[str, Any] | None = None) -> Episode:
        """The same episode driven by another planner."""
        from dataclasses import replace

        return replace(self, planner=name, planner_params=dict(params or {}))

    def with_horizon(self, horizon_s: float) -> Episode:
        """The same episode cut to ``horizon_s`` seconds (rounded to whole steps of ``dt_s``)."""
        from dataclasses import replace

        steps = max(1, round(horizon_s / self.spec.dt_s))
        keep = self.scene_horizon_s if self.scene_horizon_s is not None else self.spec.horizon_s
        return replace(self, spec=replace(self.spec, horizon_s=steps * self.spec.dt_s), scene_horizon_s=keep)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # the spec holds read-only mappings (not picklable): send plain values to worker processes
        return (
            _episode_from_plain,
            ({f.name: spec_to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)},),
        )


def spec_to_plain(obj: Any) -> Any:
    """A picklable / JSON-able nested copy of a spec (dataclasses tagged with their class name)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            "__spec__": type(obj).__name__,
            **{f.name: spec_to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)},
        }
    if isinstance(obj, Mapping):
        return {"__map__": [[spec_to_plain(k), spec_to_plain(v)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [spec_to_plain(v) for v in obj]}
    if isinstance(obj, list):
        return [spec_to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return {"__path__": str(obj)}
    return obj


_SPEC_CLASSES: dict[str, Any] = {
    c.__name__: c
    for c in (ScenarioSpec, SceneSpec, EgoSpec, InsertOp, RemoveOp, RerouteOp, SpawnSpec, BehaviorSpec)
}


def spec_from_plain(obj: Any) -> Any:
    """Inverse of :func:`spec_to_plain`."""
    if isinstance(obj, dict):
        if "__spec__" in obj:
            name = obj["__spec__"]
            cls = Episode if name == "Episode" else _SPEC_CLASSES[name]
            return cls(**{k: spec_from_plain(v) for k, v in obj.items() if k != "__spec__"})
        if "__map__" in obj:
            return {spec_from_plain(k): spec_from_plain(v) for k, v in obj["__map__"]}
        if "__tuple__" in obj:
            return tuple(spec_from_plain(v) for v in obj["__tuple__"])
        if "__path__" in obj:
            return Path(obj["__path__"])
        return {k: spec_from_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [spec_from_plain(v) for v in obj]
    return obj


def _episode_from_plain(d: dict[str, Any]) -> Episode:
    kw = {k: spec_from_plain(v) for k, v in d.items()}
    return Episode(**kw)


@dataclass(frozen=True)
class _Checked:
    doc: _Doc
    model: ScenarioModel | None
    ctx: SceneContext | None
    errors: tuple[ScenarioError, ...]


def _validate_data(
    doc: _Doc, data: Any, *, semantic: bool = True
) -> tuple[ScenarioModel | None, SceneContext | None, list[ScenarioError]]:
    if not isinstance(data, dict):
        kind = "an empty file" if data is None else type(data).__name__
        return (
            None,
            None,
            [ScenarioError(f"expected a mapping at the top level, got {kind}", file=doc.file, line=1)],
        )
    plain_errs = [doc.err(p, msg) for p, msg in lim.plain_problems(data)]  # NaN, inf, int64
    plain_fields = {e.field for e in plain_errs}
    try:
        m = ScenarioModel.model_validate(data)
    except ValidationError as exc:
        return None, None, plain_errs + [e for e in _schema_errors(doc, data, exc) if e.field not in plain_fields]
    # work limits (steps, sweep grid, episodes) before the scene is built or the sweep expanded
    limit_errs = [doc.err(p, msg) for p, msg in lim.model_problems(m, file_stem=Path(doc.file).stem)]
    if plain_errs or limit_errs:
        return None, None, plain_errs + limit_errs
    sweep_errs = _check_sweep_paths(doc, data, m)
    if sweep_errs or not semantic:
        return m, None, sweep_errs
    ctx: SceneContext | None = None
    errs: list[ScenarioError] = []
    try:
        logp = str(_resolve_log(m.scene.log, doc.file)) if m.scene.log else None
        _, ctx = _scene_cached(logp, m.scene.town, m.scene.seed, m.ego.start.t_s, m.horizon_s, m.dt_s)
    except LoopdriveError as exc:
        fld = "scene.log" if m.scene.log else "scene.town"
        errs.append(
            ScenarioError(
                exc.one_line() if exc.file else exc.message,
                file=doc.file,
                field=fld,
                line=doc.line(tuple(fld.split("."))),
            )
        )
    errs.extend(_semantic(doc, m, ctx))
    return m, ctx, errs


def _check_sweep_paths(doc: _Doc, data: Any, m: ScenarioModel) -> list[ScenarioError]:
    """Every sweep key must be a dotted path to an existing value, with at least one value."""
    errs = []
    dumped = m.model_dump(by_alias=True, mode="json") if m.sweep else {}
    for key, values in m.sweep.items():
        parts = _split_path(key)
        if not parts or (_get_path(data, parts) is _MISSING and _get_path(dumped, parts) is _MISSING):
            errs.append(
                doc.err(
                    ("sweep", key),
                    f"expected a dotted path to an existing field (e.g. actors.0.spawn.speed), got {key!r}",
                )
            )
        if not values:
            errs.append(doc.err(("sweep", key), "expected at least one value"))
    return errs


def _check_file(path: str | os.PathLike[str], *, semantic: bool = True) -> _Checked:
    doc = _read_doc(path)
    m, ctx, errs = _validate_data(doc, doc.data, semantic=semantic)
    if m is not None and not errs and m.sweep:
        # every sweep point must be a valid scenario as well
        seen: set[str] = set()
        for point in sweep_points(m.sweep):
            data = doc.data
            for k, v in point.items():
                data = _set_path(data, _split_path(k), v)
            _, _, perrs = _validate_data(doc, data, semantic=semantic)
            for e in perrs:
                msg = f"at sweep point {json.dumps(point)}: {e.message}"
                if msg not in seen:
                    seen.add(msg)
                    errs.append(
                        ScenarioError(
                            msg,
                            file=doc.file,
                            field=e.field,
                            line=doc.line(("sweep", _sweep_key_for(point, e.field))),
                        )
                    )
    return _Checked(doc=doc, model=m, ctx=ctx, errors=tuple(errs))


def _sweep_key_for(point: Mapping[str, Any], fld: str | None) -> str:
    if fld:
        dotted = fld.replace("[", ".").replace("]", "")
        for k in point:
            if dotted.startswith(k) or k.startswith(dotted):
                return k
    return next(iter(point))


def validate_file(path: str | os.PathLike[str], *, semantic: bool = True) -> list[ScenarioError]:
    """Every problem of one scenario file (empty list = valid). Never raises for bad content."""
    try:
        errs = list(_check_file(path, semantic=semantic).errors)
    except ScenarioError as exc:
        return [exc]
    return sorted(errs, key=lambda e: e.line or 0)


def scenario_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and directories (recursively, ``*.yaml``/``*.yml``, sorted) into files. A
    ``*.yaml`` entry of a folder that is not a regular file (a FIFO, a device, a dangling link) is
    kept, so that reading it refuses it by name instead of skipping it silently."""
    out: list[Path] = []
    for p in paths:
        pp = Path(p)
        if pp.is_dir():
            out.extend(sorted(q for q in pp.rglob("*") if q.suffix in (".yaml", ".yml") and not q.is_dir()))
        else:
            out.append(pp)
    return out


def validate_paths(paths: Iterable[str | os.PathLike[str]], *, semantic: bool = True) -> list[ScenarioError]:
    """All problems of all scenario files under ``paths`` (files or directories)."""
    files = scenario_files(paths)
    errs: list[ScenarioError] = []
    if not files:
        errs.append(
            ScenarioError("expected scenario files (*.yaml), found none", file=", ".join(map(str, paths)))
        )
    for f in files:
        errs.extend(validate_file(f, semantic=semantic))
    return errs


def _name_of(m: ScenarioModel, path: str | os.PathLike[str]) -> str:
    return m.name or Path(path).stem


def load_scenario(path: str | os.PathLike[str], *, semantic: bool = True) -> ScenarioSpec:
    """Read, validate and convert one scenario file (its first sweep point, if any) to the
    engine's :class:`~sim.spec.ScenarioSpec`. Raises the first problem as :class:`ScenarioError`."""
    chk = _check_file(path, semantic=semantic)
    if chk.errors:
        raise chk.errors[0]
    assert chk.model is not None
    m = chk.model
    if m.sweep:
        data = chk.doc.data
        for k, v in sweep_points(m.sweep)[0].items():
            data = _set_path(data, _split_path(k), v)
        m = ScenarioModel.model_validate(data)
    return _to_spec(m, _name_of(m, path), str(path), chk.ctx)


def expand(path: str | os.PathLike[str], *, semantic: bool = True) -> list[Episode]:
    """All episodes of a scenario file: seeds x sweep points (seed-major order)."""
    chk = _check_file(path, semantic=semantic)
    if chk.errors:
        raise chk.errors[0]
    assert chk.model is not None
    base = chk.model
    name = _name_of(base, path)
    points = sweep_points(base.sweep)
    specs: list[tuple[dict[str, Any], ScenarioModel]] = []
    for point in points:
        data = chk.doc.data
        for k, v in point.items():
            data = _set_path(data, _split_path(k), v)
        specs.append((point, ScenarioModel.model_validate(data) if point else base))
    out: list[Episode] = []
    for seed in base.seeds:
        for k, (point, m) in enumerate(specs):
            eid = f"{name}__s{seed}" + (f"__p{k:03d}" if base.sweep else "")
            out.append(
                Episode(
                    episode_id=_safe_id(eid),
                    scenario=name,
                    seed=int(seed),
                    spec=_to_spec(m, name, str(path), chk.ctx),
                    file=str(path),
                    sweep=dict(point),
                    planner=m.planner.name,
                    planner_params=dict(m.planner.params),
                    observation=tuple(m.observation),
                    metrics=tuple(m.metrics or ()),
                    description=m.description,
                )
            )
    return out


def _safe_id(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)


def expand_paths(paths: Iterable[str | os.PathLike[str]], *, semantic: bool = True) -> list[Episode]:
    """Episodes of every scenario file under ``paths``; duplicate episode ids raise ScenarioError."""
    out: list[Episode] = []
    seen: dict[str, str] = {}
    files = scenario_files(paths)
    if not files:
        raise ScenarioError("expected scenario files (*.yaml), found none", file=", ".join(map(str, paths)))
    for f in files:
        for ep in expand(f, semantic=semantic):
            if ep.episode_id in seen:
                raise ScenarioError(
                    f"duplicate scenario name {ep.scenario!r} (also in {seen[ep.episode_id]})",
                    file=str(f),
                    field="name",
                    line=1,
                )
            seen[ep.episode_id] = str(f)
            out.append(ep)
    return out


def to_builtin(obj: Any) -> Any:
    """JSON-friendly copy of spec/episode values (tuples -> lists, paths -> str, numpy -> python)."""
    if isinstance(obj, Mapping):
        return {str(k): to_builtin(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_builtin(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
