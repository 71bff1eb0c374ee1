"""``loopdrive ncap``: NeuroNCAP's protocol in loopdrive's own closed loop, on a reconstructed log.

:func:`run_ncap` builds the three scenario types from the log (:mod:`sim.ncap.scenarios`), writes
``runs`` permutations of each as scenario files, runs them twice through the batch runner
(:func:`sim.batch.run_batch`: the planner under test, and the no-action reference of
:mod:`sim.ncap.reference`), scores them (:mod:`sim.ncap.score`) and writes the report
(:mod:`sim.ncap.report`). The run folder::

    OUT/ncap.json                 the run's definition (bundle, log, planner, runs, sensors, seed)
                                  and its sha256: --resume continues only the same run
    OUT/scenarios/<type>/ncap_<type>_<k>.yaml   one scenario file per permutation (`loopdrive run
                                  FILE` replays it; `loopdrive validate` checks it)
    OUT/run/                      the planner's batch run (run.json, results.parquet, episodes/,
                                  report.html, summary.md)
    OUT/reference/                the no-action reference runs (same episode ids)
    OUT/results.parquet           one row per permutation (see :data:`RESULT_FIELDS`)
    OUT/results.json              settings, the per-type designs, the summary
    OUT/report.md, report.html, hist_<type>.png, videos/<episode>.mp4 (the worst runs)

Every input is checked (:func:`check_config`) and every scenario built before ``OUT`` is made.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.errors import BundleError, LoopdriveError, ResultsError, ScenarioError
from sim.fsutil import atomic_path, atomic_write_text
from sim.ncap.scenarios import NCAP_TYPES, Design, Permutation

__all__ = ["NCAP_FORMAT", "RESULT_FIELDS", "NcapConfig", "NcapSummary", "build_scenarios", "check_config", "run_ncap"]

log = logging.getLogger(__name__)

#: run-folder format of ``ncap.json``
NCAP_FORMAT = 1
#: most permutations per type
MAX_RUNS = 1000
SENSORS = ("mesh", "neural")
#: columns of ``results.parquet``
RESULT_FIELDS = (
    "type", "index", "episode_id", "file", "status", "error", "termination", "collided", "impact_speed_ms",
    "impact_actor", "impact_t_s", "reference_status", "reference_collided", "reference_speed_ms",
    "reference_source", "reference_actor", "score", "target_speed_ms", "lon_shift_m", "lat_shift_m",
    "yaw_shift_rad", "designed_impact_s", "closing_speed_ms",
)  # fmt: skip
#: progress(phase, done, failed, total); phase "reference" or "planner"
ProgressFn = Callable[[str, int, int, int], None]


@dataclass(frozen=True)
class NcapConfig:
    """What an NCAP run runs: the scene bundle and drive log (folders), the planner (registry
    name), permutations per type, the sensor backend (``mesh`` or ``neural``), the seed of the
    permutations and the parallel episodes; ``planner_params`` (the planner's ``params`` in every
    permutation's file, e.g. other weights) are part of the definition when given."""

    bundle: Path
    log: Path
    planner: str
    runs: int = 100
    sensors: str = "mesh"
    seed: int = 0
    workers: int = 1
    types: tuple[str, ...] = NCAP_TYPES
    planner_params: Mapping[str, Any] = field(default_factory=dict)

    def definition(self) -> dict[str, Any]:
        """Everything the rows depend on (``workers`` aside), for ``ncap.json``."""
        from sim.run_definition import ENGINE_VERSION

        return {
            "engine": {"engine_version": ENGINE_VERSION, "ncap_format": NCAP_FORMAT},
            "planner": {"name": self.planner, **({"params": dict(self.planner_params)} if self.planner_params else {})},
            "options": {"runs": self.runs, "sensors": self.sensors, "seed": self.seed, "types": list(self.types)},
            "files": {"bundle": str(self.bundle.resolve()), "log": str(self.log.resolve())},
        }

    def settings(self) -> dict[str, Any]:
        """The definition's values flat, with ``workers`` (for results.json and the report)."""
        d = self.definition()
        params = {"planner_params": dict(self.planner_params)} if self.planner_params else {}
        return {**d["engine"], "planner": self.planner, **params, **d["options"], **d["files"], "workers": self.workers}


def _planner_kinds(name: str) -> tuple[str, ...]:
    try:
        from sim.planning import make_planner

        return tuple(make_planner(name).observation_spec().kinds)
    except LoopdriveError as exc:
        raise ScenarioError(f"cannot make planner {name!r}: {exc.message}", field="planner") from None


def _check_bundle(cfg: NcapConfig) -> None:
    from sim.log_validate import load_json

    if not cfg.bundle.is_dir():
        raise BundleError("expected a scene-bundle folder (made by `loopdrive recon`)", file=cfg.bundle)
    if cfg.sensors == "neural":
        from sim.recon.bundle import load_bundle

        load_bundle(cfg.bundle)  # weights against their sha256 and the model
        return
    doc = load_json(cfg.bundle / "bundle.json", error=BundleError)
    if not isinstance(doc, dict) or doc.get("format") != "loopdrive-scene-bundle":
        raise BundleError("expected format 'loopdrive-scene-bundle'", file=cfg.bundle / "bundle.json", field="format")


def check_config(cfg: NcapConfig) -> tuple[str, ...]:
    """Check every input before any work: numbers, sensors, the planner (constructible), the drive
    log (headers) and the bundle (its ``bundle.json``; fully loaded for ``neural``). Returns the
    planner's observation kinds. Raises the area's :class:`~sim.errors.LoopdriveError`."""
    from sim.log import validate_log

    if not 1 <= cfg.runs <= MAX_RUNS:
        raise ScenarioError(f"expected 1..{MAX_RUNS} permutations per type, got {cfg.runs}", field="runs")
    if cfg.sensors not in SENSORS:
        raise ScenarioError(f"expected sensors {' or '.join(SENSORS)}, got {cfg.sensors!r}", field="sensors")
    if not 0 <= cfg.seed < 2**63:
        raise ScenarioError(f"expected a seed in [0, 2^63), got {cfg.seed}", field="seed")
    if cfg.workers < 1:
        raise ScenarioError(f"expected at least one worker, got {cfg.workers}", field="workers")
    bad = [t for t in cfg.types if t not in NCAP_TYPES]
    if bad or not cfg.types:
        raise ScenarioError(f"expected scenario types among {', '.join(NCAP_TYPES)}, got {list(cfg.types)}", field="types")
    kinds = _planner_kinds(cfg.planner)
    dl = validate_log(cfg.log, check_payloads=False)
    rendered = {"camera", "lidar"} & set(kinds)
    if rendered and cfg.sensors == "mesh" and not isinstance(dl.meta.get("synth"), dict):
        raise ScenarioError(f"planner {cfg.planner!r} observes {', '.join(sorted(rendered))}, and mesh sensors need a "
                            "synthetic log (this one is imported): use --sensors neural", field="sensors")  # fmt: skip
    _check_bundle(cfg)
    return kinds


def _target(cfg: NcapConfig, kinds: Sequence[str]) -> tuple[dict[str, Any], tuple[float, float, float], Path | None]:
    """The target's insert fields, its box (l, w, h) and the actor library it comes from (neural
    sensors for a planner that observes them: the library car nearest a default car's size)."""
    from sim.scenario import DEFAULT_SIZES

    if cfg.sensors != "neural" or not {"camera", "lidar"} & set(kinds):
        size = DEFAULT_SIZES["car"]
        return {"class": "car", "size": list(size)}, size, None
    from sim.actor_library import SIZE_TOLERANCE, open_library

    lib = open_library()
    try:
        la = lib.match("car", DEFAULT_SIZES["car"], SIZE_TOLERANCE)
    except BundleError:
        raise ScenarioError(f"neural sensors render the target from the actor library at {lib.root}, which has no car: "
                            "harvest one with `loopdrive actors add BUNDLE` (or use --sensors mesh)", field="sensors") from None  # fmt: skip
    size = (float(la.size[0]), float(la.size[1]), float(la.size[2]))
    return {"asset": la.key}, size, Path(lib.root).resolve()


@dataclass(frozen=True)
class Built:
    """The scenarios of a run: the designs per type, and (permutation, file content) pairs."""

    designs: dict[str, Design]
    items: list[tuple[Permutation, dict[str, Any]]] = field(default_factory=list)


def build_scenarios(cfg: NcapConfig, kinds: Sequence[str]) -> Built:
    """The designs and every permutation's scenario-file content (nothing written)."""
    from sim.ncap.scenarios import permutation_scenarios
    from sim.scenario import scene_context
    from sim.spec import SceneSpec

    ctx = scene_context(SceneSpec(log=cfg.log.resolve()))
    target, size, library = _target(cfg, kinds)
    scene: dict[str, Any] = {"log": str(cfg.log.resolve()), "bundle": str(cfg.bundle.resolve()), "renderer": cfg.sensors}
    if library is not None:
        scene["actor_library"] = str(library)
    designs, items = permutation_scenarios(ctx, cfg.types, cfg.runs, cfg.seed, size, scene=scene, planner=cfg.planner, observation=kinds,
                                           target=target, planner_params=cfg.planner_params)  # fmt: skip
    return Built(designs=designs, items=items)


# ------------------------------------------------------------------------------ run folder
def _open_folder(out: Path, definition: Mapping[str, Any], resume: bool) -> None:
    """Refuse an ``out`` that is a file, holds another run (``--resume``: a different definition,
    named by its first difference) or unrelated files; then (re)write ``ncap.json``."""
    import json

    from sim.run_definition import check_resume, definition_digest

    f = out / "ncap.json"
    if out.exists() and not out.is_dir():
        raise ScenarioError("expected a folder for the results, got a file", file=str(out))
    if os.path.lexists(f):
        if not resume:
            raise ScenarioError("already holds an ncap run; pass --resume to continue it or choose another --out", file=str(out))
        check_resume(f, definition)
    elif out.is_dir() and any(out.iterdir()):
        if not resume:
            raise ScenarioError("expected an empty or new folder for the results", file=str(out))
        raise ResultsError("holds files but no ncap.json, so --resume cannot check that it continues the same run; "
                           "choose another --out", file=str(out))  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    rec = {"definition": dict(definition), "definition_sha256": definition_digest(definition)}
    atomic_write_text(f, json.dumps(rec, indent=1, sort_keys=True), fsync=True)


def _write_scenarios(out: Path, built: Built) -> list[Path]:
    import yaml

    files = []
    for p, data in built.items:
        path = out / "scenarios" / p.kind / f"{p.name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        head = f"# loopdrive ncap: {p.kind} permutation {p.index}; replay it with `loopdrive run {path.name} --out DIR`\n"
        text = head + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            atomic_write_text(path, text)
        files.append(path)
    return files


@dataclass(frozen=True)
class NcapSummary:
    """What an NCAP run did: the folder, the per-type and overall summary
    (:func:`sim.ncap.score.summarize`), the batch runs' counts and the written files."""

    out: Path
    summary: dict[str, Any]
    permutations: int
    errored: int
    ran: int
    skipped: int
    wall_s: float
    files: dict[str, Path]
    errors: tuple[tuple[str, str], ...] = ()


def _row(p: Permutation, eid: str, file: Path, run_row: Mapping[str, Any] | None, ref_row: Mapping[str, Any] | None,
         out: Path) -> dict[str, Any]:  # fmt: skip
    from sim.ncap.score import episode_record, first_impact, ncap_score

    row: dict[str, Any] = {
        "type": p.kind, "index": p.index, "episode_id": eid, "file": str(file.relative_to(out)), "status": "error",
        "error": "", "termination": "", "collided": None, "impact_speed_ms": None, "impact_actor": None,
        "impact_t_s": None, "reference_status": "error", "reference_collided": None, "reference_speed_ms": None,
        "reference_source": None, "reference_actor": None, "score": None, "target_speed_ms": p.speed,
        "lon_shift_m": p.lon_shift_m, "lat_shift_m": p.lat_shift_m, "yaw_shift_rad": p.yaw_shift_rad,
        "designed_impact_s": p.t_impact_s, "closing_speed_ms": p.closing_speed_ms,
    }  # fmt: skip
    if ref_row is None or ref_row.get("status") != "ok":
        row["error"] = "reference run: " + str((ref_row or {}).get("error") or "missing")
    else:
        ref = first_impact(episode_record(out / "reference", eid))
        row["reference_status"] = "ok"
        row["reference_collided"] = ref is not None
        row["reference_speed_ms"] = ref.speed_ms if ref is not None else p.closing_speed_ms
        row["reference_source"] = "reference_run" if ref is not None else "design"
        row["reference_actor"] = ref.actor if ref is not None else None
    if run_row is None or run_row.get("status") != "ok":
        row["error"] = str((run_row or {}).get("error") or "missing") if not row["error"] else row["error"]
        row["status"] = "error"
        return row
    rec = episode_record(out / "run", eid)
    hit = first_impact(rec)
    row["termination"] = str(rec.meta.get("termination", ""))
    row["collided"] = hit is not None
    if hit is not None:
        row.update(impact_speed_ms=hit.speed_ms, impact_actor=hit.actor, impact_t_s=hit.t_s)
    if row["reference_status"] == "ok":
        row["status"] = "ok"
        row["score"] = ncap_score(hit is not None, hit.speed_ms if hit else 0.0, float(row["reference_speed_ms"]))
    return row


def _write_results(out: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    import polars as pl

    df = pl.DataFrame([{k: r[k] for k in RESULT_FIELDS} for r in rows], infer_schema_length=None)
    path = out / "results.parquet"
    with atomic_path(path, suffix=".parquet") as tmp:
        df.write_parquet(tmp)
    return path


def run_ncap(cfg: NcapConfig, out: str | os.PathLike[str], *, resume: bool = False, progress: ProgressFn | None = None,
             videos: int = 3) -> NcapSummary:  # fmt: skip
    """Run NeuroNCAP's protocol (see the module docstring) and write the run folder ``out``.

    Raises:
        LoopdriveError: a bad input (:func:`check_config`), a log whose route cannot hold a
            scenario type, an ``out`` that cannot take the run -- all before ``out`` is made or
            changed.
    """
    from sim.batch import load_results, run_batch
    from sim.ncap.reference import NO_ACTION, no_action_rollout
    from sim.ncap.report import write_ncap_report
    from sim.ncap.score import dumps, summarize
    from sim.scenario import expand_paths

    outp = Path(out)
    kinds = check_config(cfg)
    built = build_scenarios(cfg, kinds)
    _open_folder(outp, cfg.definition(), resume)
    t0 = time.perf_counter()
    files = _write_scenarios(outp, built)
    eps = expand_paths(files)  # the scenario validator of `loopdrive validate`
    by_name = {p.name: (p, f) for (p, _), f in zip(built.items, files, strict=True)}

    def cb(phase: str) -> Callable[[int, int, int], None] | None:
        return None if progress is None else (lambda d, f, t: progress(phase, d, f, t))

    ref = run_batch(None, outp / "reference", episodes=eps, planner=NO_ACTION, workers=cfg.workers, resume=resume,
                    progress=cb("reference"), rollout_fn=no_action_rollout)  # fmt: skip
    run = run_batch(None, outp / "run", episodes=eps, workers=cfg.workers, resume=resume, progress=cb("planner"))
    run_rows = {r["episode_id"]: r for r in load_results(outp / "run").to_dicts()}
    ref_rows = {r["episode_id"]: r for r in load_results(outp / "reference").to_dicts()}
    rows = []
    for ep in eps:
        p, f = by_name[ep.scenario]
        rows.append(_row(p, ep.episode_id, f, run_rows.get(ep.episode_id), ref_rows.get(ep.episode_id), outp))
    summary = summarize(rows, cfg.types)
    res_path = _write_results(outp, rows)
    settings = cfg.settings()
    designs = {k: {"source": d.source, "designed_impact_s": round(d.t_impact_s, 3), "horizon_s": d.horizon_s,
                   "ego_route": list(d.ego.route), "ego_start": {"t_s": d.ego.t_s, "lane": d.ego.lane, "s": d.ego.s,
                   "speed": d.ego.speed}, "longitudinal_jitter_scale": d.lon_scale}
               for k, d in built.designs.items()}  # fmt: skip
    json_path = outp / "results.json"
    atomic_write_text(json_path, dumps({"settings": settings, "designs": designs, "summary": summary}))
    written = write_ncap_report(outp, rows, summary, settings, designs, videos=videos)
    errors = tuple((r["episode_id"], r["error"]) for r in rows if r["status"] != "ok")
    return NcapSummary(
        out=outp, summary=summary, permutations=len(rows), errored=len(errors), ran=run.ran + ref.ran,
        skipped=run.skipped + ref.skipped, wall_s=time.perf_counter() - t0,
        files={"results": res_path, "results_json": json_path, **written}, errors=errors,
    )  # fmt: skip

