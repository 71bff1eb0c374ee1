"""Batch runs: scenario files x seeds x sweep points, driven by a planner, scored by the metrics.

``run_batch(paths, out)`` expands the scenario files into :class:`~sim.scenario.Episode` s, runs
each closed-loop (:func:`run_episode`) on a local process pool or on Ray, and writes::

    OUT/run.json                        what was run (planner, episode ids, options) and the run
                                        definition with its sha256 (sim.run_definition)
    OUT/results.parquet                 one row per episode: episode_id, scenario, file, seed, sweep
                                        (JSON) and sweep.<path> columns, planner, every metric value
                                        (<metric>) and score (<metric>_score), score, status
                                        (ok / error), error, steps, sim_time_s
    OUT/episodes/<episode_id>/metrics.json       the row plus per-metric details
    OUT/episodes/<episode_id>/trajectory.parquet ego and actors per step (long format)
    OUT/episodes/<episode_id>/video.mp4          BEV video (``video=True``)

Crash safety: an episode's files are written into a temporary folder that is renamed into place
only when complete, so a run killed at any moment loses at most the episodes in flight;
``resume=True`` runs only the episodes without a folder and rebuilds ``results.parquet``, and only
when the run's definition (scenarios, planner and parameters, seeds, horizon, renderer, engine
version, ...) is the folder's: otherwise a :class:`~sim.errors.ResultsError` names the first
difference. An exception inside one episode becomes an ``error`` row; the batch goes on. Rows do
not depend on the executor, the number of workers or the order of completion. Worker processes
exit when the run's process dies, however it dies (:mod:`sim.workers`); a local Ray instance is
started for the run and stopped after it (:mod:`sim.ray_executor`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# the names used elsewhere (private helpers too) stay importable from sim.batch
from sim.batch.driving import (  # noqa: F401
    ALWAYS_AVAILABLE,
    EpisodeResult,
    SensorObserver,
    _params_for,
    drive_episode,
    planner_init,
    rollout,
)
from sim.batch.episode import EpisodeOutcome, RolloutFn, run_episode, trajectory_table
from sim.batch.executors import _iter_local, _iter_ray
from sim.batch.persist import (
    _clean_tmp,
    _done_ids,
    load_results,
    persist,
    read_episode,
    write_results,
)
from sim.batch.renderers import (  # noqa: F401
    RENDERER_FROM_SCENARIO,
    _load_scene,
    episode_scene,
    make_renderer,
    scenario_rig,
    with_renderer,
)
from sim.errors import ScenarioError
from sim.run_definition import open_run_folder, run_definition
from sim.scenario import Episode, expand_paths, scene_context, to_builtin

__all__ = [
    "RENDERER_FROM_SCENARIO",
    "BatchSummary",
    "EpisodeOutcome",
    "EpisodeResult",
    "drive_episode",
    "episode_scene",
    "load_results",
    "make_renderer",
    "planner_init",
    "rollout",
    "run_batch",
    "run_episode",
    "scenario_rig",
    "trajectory_table",
    "with_renderer",
]

log = logging.getLogger(__name__)

Executor = Literal["local", "ray"]
#: progress(done, failed, total) callback type
ProgressFn = Callable[[int, int, int], None]
#: run-folder format (2: run.json holds the run definition and its sha256, see sim.run_definition)
RUN_FORMAT = 2


# ------------------------------------------------------------------------------------ batch
@dataclass(frozen=True)
class BatchSummary:
    """What a batch run did: the run folder, episode counts, and wall time (s)."""

    out: Path
    total: int
    ran: int
    skipped: int
    failed: int
    wall_s: float
    results: Path
    errors: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def _check_bundles(eps: Sequence[Episode]) -> None:
    """Every episode on a ``neural``/``composite`` backend has a scene-bundle folder."""
    seen: set[tuple[str, str]] = set()
    for e in eps:
        sc = e.spec.scene
        key = (e.file or e.scenario, str(sc.bundle))
        if sc.renderer not in ("neural", "composite") or key in seen:
            continue
        seen.add(key)
        if sc.bundle is None:
            raise ScenarioError(
                f"renderer {sc.renderer!r} needs a scene bundle: set scene.bundle (a folder made by "
                "`loopdrive recon`) or run with --renderer mesh",
                file=e.file or e.scenario,
                field="scene.bundle",
            )
        if not (Path(sc.bundle) / "bundle.json").is_file():
            raise ScenarioError(
                f"expected a scene-bundle folder with bundle.json for renderer {sc.renderer!r}, got {str(sc.bundle)!r}",
                file=e.file or e.scenario,
                field="scene.bundle",
            )


def _batch_episodes(
    paths: Iterable[str | os.PathLike[str]] | None,
    episodes: Sequence[Episode] | None,
    horizon_s: float | None,
    renderer: str | None,
) -> list[Episode]:
    """The episodes of a batch: the given ones or those of the files under ``paths``, cut to
    ``horizon_s`` (s) and on ``renderer`` when given; bundles checked, ids unique."""
    eps = list(episodes) if episodes is not None else expand_paths(list(paths or []))
    if horizon_s is not None:
        if not horizon_s > 0:
            raise ScenarioError(f"expected a positive horizon in seconds, got {horizon_s}", field="horizon_s")
        eps = [e.with_horizon(horizon_s) for e in eps]
    if renderer is not None:
        import dataclasses

        eps = [dataclasses.replace(e, spec=with_renderer(e.spec, renderer)) for e in eps]
    _check_bundles(eps)
    ids = [e.episode_id for e in eps]
    if len(set(ids)) != len(ids):
        raise ScenarioError("episode ids must be unique", field="episodes")
    return eps


def _persist_all(
    outp: Path,
    outcomes: Iterable[EpisodeOutcome],
    done: int,
    failed: int,
    total: int,
    errors: list[tuple[str, str]],
    progress: ProgressFn | None,
) -> tuple[int, int]:
    """Persist each outcome as it arrives, appending failures to ``errors`` and reporting
    progress; returns (episodes ran, episodes failed in all)."""
    ran = 0
    for outcome in outcomes:
        persist(outp, outcome)
        ran += 1
        done += 1
        if outcome.row["status"] != "ok":
            failed += 1
            errors.append((outcome.row["episode_id"], outcome.row["error"]))
        if progress is not None:
            progress(done, failed, total)
    return ran, failed


def _run_info(
    ids: Sequence[str],
    planner: str | None,
    planner_params: Mapping[str, Any] | None,
    video: bool,
    executor: Executor,
    workers: int,
    horizon_s: float | None,
    renderer: str | None,
) -> dict[str, Any]:
    """What run.json records about the run besides its definition."""
    return {
        "format": RUN_FORMAT,
        "planner": planner or "(per scenario)",
        "planner_params": to_builtin(dict(planner_params or {})),
        "episodes": list(ids),
        "video": video,
        "executor": executor,
        "workers": workers,
        "horizon_s": horizon_s,
        "renderer": renderer,
    }


def _open_run(
    outp: Path, resume: bool, definition: Mapping[str, Any], info: dict[str, Any], ids: Sequence[str]
) -> tuple[set[str], int]:
    """Open (or resume) the run folder, drop unfinished episode folders; returns the ids already
    finished (when resuming) and how many of the run's episodes among them failed."""
    open_run_folder(outp, resume=resume, definition=definition, info=info)
    _clean_tmp(outp)
    done_before = _done_ids(outp) if resume else set()
    failed = sum(1 for eid in done_before & set(ids) if read_episode(outp, eid)["row"].get("status") != "ok")
    return done_before, failed


def _outcomes(
    executor: Executor,
    todo: Sequence[Episode],
    planner: str | None,
    planner_params: Mapping[str, Any] | None,
    video: bool,
    workers: int,
    ray_address: str | None,
    rollout_fn: RolloutFn | None,
) -> Iterator[EpisodeOutcome]:
    """The outcomes of ``todo`` as they finish, on the chosen executor."""
    if executor == "local":
        return _iter_local(todo, planner, planner_params, video, workers, rollout_fn)
    return _iter_ray(todo, planner, planner_params, video, workers, ray_address, rollout_fn)


def run_batch(
    paths: Iterable[str | os.PathLike[str]] | None = None,
    out: str | os.PathLike[str] = "out/run",
    *,
    episodes: Sequence[Episode] | None = None,
    planner: str | None = None,
    planner_params: Mapping[str, Any] | None = None,
    workers: int = 1,
    executor: Executor = "local",
    ray_address: str | None = None,
    resume: bool = False,
    video: bool = False,
    progress: ProgressFn | None = None,
    rollout_fn: RolloutFn | None = None,
    horizon_s: float | None = None,
    renderer: str | None = None,
) -> BatchSummary:
    """Run every episode of the scenario files under ``paths`` (or the given ``episodes``) and
    write the run folder described in the module docstring.

    Args:
        planner: planner name overriding each scenario's ``planner.name`` (and its params).
        workers: parallel episodes (processes for ``local``, CPUs for a Ray instance we start).
        executor: ``local`` (process pool; in-process when ``workers`` is 1) or ``ray``.
        ray_address: join this Ray cluster instead of starting a local instance.
        resume: continue a run in ``out``: only the episodes without a finished folder run; the
            run's definition must be the folder's (see :mod:`sim.run_definition`).
        progress: called as ``progress(done, failed, total)`` after each episode.
        horizon_s: cut every episode to this many seconds (a quick smoke run); the scene stays
            the one of the file's horizon.
        rollout_fn: replaces :func:`rollout` (a picklable module-level function
            ``(episode, planner, params) -> EpisodeRecord``), e.g. another simulator.
        renderer: sensor backend overriding every scenario's ``scene.renderer`` (``mesh``,
            ``neural``, ``composite``). Planners that observe ``camera``/``lidar`` get them from
            the episode's backend; a ``neural``/``composite`` episode without a readable
            ``scene.bundle`` fails the batch before anything runs.

    Raises:
        ScenarioError: invalid scenario files, an ``out`` that already holds a run (without
            ``resume``); :class:`~sim.ray_executor.RayStartError` (a ScenarioError) when Ray cannot
            be started or joined.
        ResultsError: ``resume`` into a folder holding another run (the first difference is
            named), an unreadable run.json, or one written before run definitions existed.
    """
    if executor not in ("local", "ray"):
        raise ScenarioError(f"expected executor 'local' or 'ray', got {executor!r}", field="executor")
    if workers < 1:
        raise ScenarioError(f"expected at least one worker, got {workers}", field="workers")
    eps = _batch_episodes(paths, episodes, horizon_s, renderer)
    ids = [e.episode_id for e in eps]
    outp = Path(out)
    definition = run_definition(
        eps, planner=planner, planner_params=planner_params, horizon_s=horizon_s, renderer=renderer,
        video=video, rollout_fn=rollout_fn, run_format=RUN_FORMAT,
    )  # fmt: skip
    info = _run_info(ids, planner, planner_params, video, executor, workers, horizon_s, renderer)
    done_before, failed = _open_run(outp, resume, definition, info, ids)
    todo = [e for e in eps if e.episode_id not in done_before]
    total = len(eps)
    errors: list[tuple[str, str]] = []
    # episodes already finished count as done for the progress display
    done = total - len(todo)
    if progress is not None:
        progress(done, failed, total)
    t0 = time.perf_counter()
    it = _outcomes(executor, todo, planner, planner_params, video, workers, ray_address, rollout_fn)
    ran, failed = _persist_all(outp, it, done, failed, total, errors, progress)
    results = write_results(outp, ids)
    return BatchSummary(
        out=outp,
        total=total,
        ran=ran,
        skipped=total - len(todo),
        failed=failed,
        wall_s=time.perf_counter() - t0,
        results=results,
        errors=tuple(errors),
    )


def scene_lane_map(details: Mapping[str, Any]) -> Any:
    """The lane map of an episode from its metrics.json ``scene`` entry (for reports)."""
    from sim.spec import SceneSpec

    sc = details.get("scene") or {}
    spec = SceneSpec(
        log=Path(sc["log"]) if sc.get("log") else None,
        town=sc.get("town", "tiny"),
        seed=int(sc.get("seed", 0)),
    )
    return scene_context(spec).lane_map
