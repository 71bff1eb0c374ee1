"""The definition of a batch run, its hash, and the check that ``--resume`` continues the same run.

A run folder's ``run.json`` records, next to the descriptive fields the reports read, the
*definition* of the run -- everything its rows depend on -- as canonical JSON, and its sha256:

``engine``
    :data:`ENGINE_VERSION` (bumped whenever a change to the engine, the behaviours, the metrics or
    the reference planners changes episode results), the installed ``loopdrive`` version and the
    run-folder format.
``planner``
    the planner given on the command line (``null``: each scenario's own) and its parameters.
``options``
    the other overrides: ``horizon_s`` (s), ``renderer``, ``video`` and the rollout function
    (``module:name``; another simulator makes other rows).
``files``
    sha256 of every file the run reads that the scenario only names by path: planner parameters
    naming a file (policy weights), the drive log's ``meta.json`` / ``tracks.json`` / ``map.json``
    and the scene bundle's ``bundle.json``.
``episodes``
    per episode id: scenario name, seed, sweep point, the scenario's planner and parameters,
    observation kinds, metrics, and the sha256 of its compiled spec (``specs`` holds each distinct
    compiled spec once, so a difference can be named field by field).

The executor and the number of workers are not part of it: rows do not depend on them.

:func:`check_resume` compares a new definition with the one a folder holds and raises
:class:`~sim.errors.ResultsError` naming the first difference, e.g.::

    out/run/run.json: planner.params.weights: this run has 'a.safetensors', the folder has
    'b.safetensors' (--resume continues only the same run: run it again with the same scenario
    files and options, or choose another --out)

A folder written before definitions existed (no ``definition`` in its ``run.json``) cannot be
checked, so it cannot be resumed either: the error says so and asks for a new ``--out``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sim.errors import ResultsError
from sim.fsutil import read_input_bytes, sha256_file

__all__ = [
    "ENGINE_VERSION",
    "canonical_json",
    "check_resume",
    "definition_digest",
    "first_difference",
    "open_run_folder",
    "read_run_json",
    "run_definition",
]

#: Version of everything that makes an episode's numbers (engine, behaviours, dynamics, metrics,
#: reference planners, observation builders). Bump it in the change that alters results, so that
#: ``--resume`` refuses to mix rows of the old and the new code in one run folder.
ENGINE_VERSION = 1

#: cap on a run.json read back for ``--resume`` (bytes)
MAX_RUN_JSON_BYTES = 256 * 1024 * 1024
#: files named by a planner parameter or a scene that are hashed into the definition; bigger ones
#: are recorded by size and modification time only (bytes)
MAX_HASHED_BYTES = 4 * 1024**3
_LOG_FILES = ("meta.json", "tracks.json", "map.json")
_BUNDLE_FILES = ("bundle.json",)
_HINT = "--resume continues only the same run: run it again with the same scenario files and options, or choose another --out"


# ------------------------------------------------------------------------------ canonical form
def _plain(obj: Any) -> Any:
    """JSON-able nested copy: dataclasses and mappings as objects (string keys), tuples and lists
    as arrays, paths as strings, non-finite floats as ``"nan"`` / ``"inf"`` / ``"-inf"``."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if type(obj).__module__ == "numpy" and callable(getattr(obj, "tolist", None)):
        return _plain(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return repr(obj)


def canonical_json(obj: Any) -> str:
    """The canonical JSON text of ``obj`` (sorted keys, no spaces, non-finite floats as strings)."""
    return json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def definition_digest(definition: Mapping[str, Any]) -> str:
    """sha256 (hex) of :func:`canonical_json` of ``definition``."""
    return hashlib.sha256(canonical_json(definition).encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------------- the files
def _file_digest(path: Path) -> str | None:
    """sha256 of a regular file (streamed), ``size:<n>,mtime_ns:<t>`` above :data:`MAX_HASHED_BYTES`,
    None when ``path`` is not a regular file."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    if st.st_size > MAX_HASHED_BYTES:
        return f"size:{st.st_size},mtime_ns:{st.st_mtime_ns}"
    try:
        return sha256_file(path)
    except OSError:
        return None


def _param_files(params: Any, out: dict[str, str]) -> None:
    """Add the digest of every string in ``params`` that names an existing regular file."""
    if isinstance(params, Mapping):
        for v in params.values():
            _param_files(v, out)
    elif isinstance(params, list | tuple):
        for v in params:
            _param_files(v, out)
    elif isinstance(params, str | os.PathLike) and len(os.fspath(params)) < 4096:
        p = os.fspath(params)
        if p not in out and (d := _file_digest(Path(p))) is not None:
            out[p] = d


def _scene_files(spec: Any, out: dict[str, str]) -> None:
    scene = getattr(spec, "scene", None)
    for folder, names in ((getattr(scene, "log", None), _LOG_FILES), (getattr(scene, "bundle", None), _BUNDLE_FILES)):
        if folder is None:
            continue
        for name in names:
            key = os.path.join(os.fspath(folder), name)
            if key not in out and (d := _file_digest(Path(key))) is not None:
                out[key] = d


# -------------------------------------------------------------------------------- definition
def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("loopdrive")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return "unknown"


def _fn_name(fn: Callable[..., Any] | None) -> str:
    if fn is None:
        return "sim.batch:rollout"
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


def run_definition(
    episodes: Sequence[Any],
    *,
    planner: str | None,
    planner_params: Mapping[str, Any] | None,
    horizon_s: float | None,
    renderer: str | None,
    video: bool,
    rollout_fn: Callable[..., Any] | None,
    run_format: int,
) -> dict[str, Any]:
    """The definition of a run of ``episodes`` (:class:`~sim.scenario.Episode` s, already cut to
    ``horizon_s`` and switched to ``renderer``) with the given overrides, as described in the
    module docstring (plain JSON values, insertion order = the order differences are reported in)."""
    files: dict[str, str] = {}
    _param_files(planner_params or {}, files)
    specs: dict[str, Any] = {}
    eps: dict[str, Any] = {}
    for e in episodes:
        spec = _plain(e.spec)
        key = definition_digest({"spec": spec})
        specs.setdefault(key, spec)
        _param_files(e.planner_params, files)
        _scene_files(e.spec, files)
        eps[e.episode_id] = {
            "scenario": e.scenario,
            "seed": int(e.seed),
            "sweep": _plain(dict(e.sweep)),
            "planner": e.planner,
            "planner_params": _plain(dict(e.planner_params)),
            "observation": list(e.observation),
            "metrics": list(e.metrics),
            "scene_horizon_s": _plain(e.scene_horizon_s),
            "spec": key,
        }
    return {
        "engine": {"engine_version": ENGINE_VERSION, "loopdrive": _package_version(), "run_format": run_format},
        "planner": {"name": planner, "params": _plain(dict(planner_params or {}))},
        "options": {"horizon_s": _plain(horizon_s), "renderer": renderer, "video": bool(video), "rollout": _fn_name(rollout_fn)},
        "files": dict(sorted(files.items())),
        "episodes": eps,
        "specs": specs,
    }


# ------------------------------------------------------------------------------- differences
_MISSING = object()
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


def _join(path: str, key: str) -> str:
    if _IDENT.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def _show(v: Any) -> str:
    if v is _MISSING:
        return "no such field"
    if v is None:
        return "none"
    if isinstance(v, dict):
        return f"an entry of {len(v)} fields"
    if isinstance(v, list):
        text = json.dumps(v)
        return text if len(text) <= 80 else f"a list of {len(v)} items"
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _diff(new: Any, old: Any, path: str) -> tuple[str, str, str] | None:
    if isinstance(new, dict) and isinstance(old, dict):
        for k in [*new, *(k for k in old if k not in new)]:
            d = _diff(new.get(k, _MISSING), old.get(k, _MISSING), _join(path, k))
            if d is not None:
                return d
        return None
    if isinstance(new, list) and isinstance(old, list) and len(new) == len(old):
        for i, (a, b) in enumerate(zip(new, old, strict=True)):
            d = _diff(a, b, f"{path}[{i}]")
            if d is not None:
                return d
        return None
    if new is not _MISSING and old is not _MISSING and type(new) is type(old) and new == old:
        return None
    return path, _show(new), _show(old)


def _expanded(definition: Mapping[str, Any]) -> dict[str, Any]:
    """``definition`` with each episode's spec digest replaced by the spec it names (when known),
    so a changed scenario is reported by field (``episodes.<id>.spec.horizon_s``)."""
    specs = definition.get("specs")
    eps = definition.get("episodes")
    if not isinstance(specs, dict) or not isinstance(eps, dict):
        return dict(definition)
    out = {k: v for k, v in definition.items() if k != "specs"}
    out["episodes"] = {
        eid: ({**e, "spec": specs.get(e.get("spec"), e.get("spec"))} if isinstance(e, dict) else e)
        for eid, e in eps.items()
    }
    return out


def _episode_sets(new: Mapping[str, Any], old: Mapping[str, Any]) -> tuple[str, str, str] | None:
    a, b = new.get("episodes"), old.get("episodes")
    if not isinstance(a, dict) or not isinstance(b, dict) or a.keys() == b.keys():
        return None
    only_new = [k for k in a if k not in b]
    only_old = [k for k in b if k not in a]
    what = f"first only in this run: {only_new[0]}" if only_new else f"first only in the folder: {only_old[0]}"
    return "episodes", f"{len(a)} episodes", f"{len(b)} episodes ({what})"


def first_difference(new: Mapping[str, Any], old: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """``(field path, this run's value, the folder's value)`` of the first difference between two
    run definitions (engine, planner, options, files, the set of episodes, then episode by
    episode in this run's order), or None when they agree."""
    # both sides as JSON values (1.0 stays 1.0, tuples become lists), this run's key order kept
    new = json.loads(json.dumps(_plain(new), allow_nan=False))
    new_x, old_x = _expanded(new), _expanded(old)
    for key in ("engine", "planner", "options", "files"):
        d = _diff(new_x.get(key, _MISSING), old_x.get(key, _MISSING), key)
        if d is not None:
            return d
    d = _episode_sets(new_x, old_x)
    if d is not None:
        return d
    return _diff(new_x, old_x, "")


# ------------------------------------------------------------------------------------- resume
def read_run_json(path: Path) -> dict[str, Any]:
    """A run folder's ``run.json`` as a dict (:class:`ResultsError` when unreadable or not an
    object; never reads a device, FIFO or folder)."""
    raw = read_input_bytes(path, error=ResultsError, max_bytes=MAX_RUN_JSON_BYTES, what="a run.json written by `loopdrive run`")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ResultsError("expected the JSON written by `loopdrive run`, got unreadable JSON", file=path) from None
    if not isinstance(data, dict):
        raise ResultsError(f"expected a JSON object, got {type(data).__name__}", file=path)
    return data


def check_resume(path: Path, definition: Mapping[str, Any], digest: str | None = None) -> None:
    """Raise :class:`ResultsError` (file ``path``, the first differing field) unless the run.json
    at ``path`` holds the same definition as ``definition``."""
    prev = read_run_json(path)
    old = prev.get("definition")
    if not isinstance(old, dict):
        raise ResultsError(
            "this folder was written by an older loopdrive without a run definition, so --resume cannot "
            "check that it continues the same run; start the run again with another --out",
            file=path,
            field="definition",
        )
    digest = digest or definition_digest(definition)
    if prev.get("definition_sha256") == digest and definition_digest(old) == digest:
        return
    d = first_difference(definition, old)
    if d is None:  # the digests differ but no field does: the recorded digest was altered
        d = ("definition_sha256", repr(digest), repr(prev.get("definition_sha256")))
    field, mine, theirs = d
    raise ResultsError(f"this run has {mine}, the folder has {theirs} ({_HINT})", file=path, field=field)



def open_run_folder(out: Path, *, resume: bool, definition: Mapping[str, Any], info: Mapping[str, Any]) -> None:
    """Check that ``out`` may receive this run, then (re)write its ``run.json`` atomically: the
    descriptive ``info`` fields, the ``definition`` and its sha256.

    Refused (before anything is written): ``out`` is a file (:class:`ScenarioError`); ``out``
    holds a run and ``resume`` is False, or is a non-empty folder that is not a run folder
    (:class:`ScenarioError`); ``resume`` into a folder whose run has another definition, whose
    run.json is unreadable or predates definitions, or that holds episodes without a run.json
    (:class:`ResultsError`, naming the first difference)."""
    from sim.errors import ScenarioError
    from sim.fsutil import atomic_write_text

    run_json = out / "run.json"
    if out.exists() and not out.is_dir():
        raise ScenarioError("expected a folder for the results, got a file", file=str(out))
    digest = definition_digest(definition)
    if os.path.lexists(run_json):
        if not resume:
            raise ScenarioError("already holds a run; pass --resume to continue it or choose another --out", file=str(out))
        check_resume(run_json, definition, digest)
    elif out.is_dir() and any(out.iterdir()):
        if not resume:
            raise ScenarioError("expected an empty or new folder for the results", file=str(out))
        if (out / "episodes").is_dir() and any((out / "episodes").iterdir()):
            raise ResultsError(
                "holds episodes but no run.json, so --resume cannot check that it continues the same run; "
                "choose another --out",
                file=str(out),
            )
    out.mkdir(parents=True, exist_ok=True)
    record = {**_plain(dict(info)), "definition": _plain(dict(definition)), "definition_sha256": digest}
    atomic_write_text(run_json, json.dumps(record, indent=1, sort_keys=True, allow_nan=False), fsync=True)
