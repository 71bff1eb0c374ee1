"""Episodes (seeds x sweep points), file validation and loading, and plain (picklable) copies of
specs."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from sim import scenario_limits as lim
from sim.errors import LoopdriveError, ScenarioError
from sim.scenario.context import SceneContext, _resolve_log, _scene_cached, _to_spec
from sim.scenario.schema import ScenarioModel
from sim.scenario.semantic import _semantic
from sim.scenario.yaml_doc import (
    _MISSING,
    _Doc,
    _get_path,
    _read_doc,
    _schema_errors,
    _set_path,
    _split_path,
    sweep_points,
)
from sim.spec import (
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
        return (
            None,
            None,
            plain_errs + [e for e in _schema_errors(doc, data, exc) if e.field not in plain_fields],
        )
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
        for key, v in point.items():
            data = _set_path(data, _split_path(key), v)
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


def expand_with_seeds(paths: Iterable[str | os.PathLike[str]], seeds: Iterable[int] | None) -> list[Episode]:
    """The episodes of the scenario files under ``paths``; with ``seeds``, each one once per seed
    (episode id suffixed ``__x<seed>``) instead of with the files' own seeds."""
    from dataclasses import replace

    eps = expand_paths(list(paths))
    if seeds is None:
        return eps
    seeds = [int(s) for s in seeds]
    return [replace(e, seed=s, episode_id=f"{e.episode_id}__x{s}") for e in eps for s in seeds]


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
