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

import contextlib
import io
import json
import logging
import math
import os
import shutil
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from sim.errors import EpisodeStateError, LoopdriveError, ScenarioError
from sim.fsutil import atomic_path, atomic_write_text, make_temp_dir, replace_dir
from sim.metrics import METRICS, EpisodeRecord, compute_metrics, progress_route
from sim.run_definition import open_run_folder, run_definition
from sim.scenario import Episode, expand_paths, scene_context, scene_for, to_builtin
from sim.sensors import SensorRig, default_rig
from sim.spec import ScenarioSpec

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
    "trajectory_table",
    "with_renderer",
]

log = logging.getLogger(__name__)

Executor = Literal["local", "ray"]
#: progress(done, failed, total) callback type
ProgressFn = Callable[[int, int, int], None]
RolloutFn = Callable[[Episode, str, Mapping[str, Any]], EpisodeRecord]
#: run-folder format (2: run.json holds the run definition and its sha256, see sim.run_definition)
RUN_FORMAT = 2


# ------------------------------------------------------------------------------------ rollout
def rollout(
    ep: Episode, planner: str | None = None, planner_params: Mapping[str, Any] | None = None
) -> EpisodeRecord:
    """Run one episode closed-loop and return what the metrics need.

    The world is stepped by ``sim.engine`` (``reset(spec, rng)``, ``step(state, action, rng)``);
    the ego is driven by the planner from ``sim.planning.PLANNERS`` (``planner`` overrides the
    scenario's), one ``np.random.Generator`` seeded with ``ep.seed`` is passed down.
    """
    try:
        from sim import engine
    except ImportError as exc:
        raise EpisodeStateError(f"the world engine (sim.engine) is not available: {exc}") from None
    return _closed_loop(
        engine,
        ep,
        planner or ep.planner,
        _params_for(ep, planner, planner_params),
    )


def _params_for(ep: Episode, planner: str | None, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The planner parameters of an episode: the given ones; else the scenario's, but only when
    the scenario's own planner runs (they mean nothing to another planner)."""
    if params is not None:
        return dict(params)
    if planner is None or planner == ep.planner:
        return dict(ep.planner_params)
    return {}


def episode_scene(spec: ScenarioSpec) -> Any:
    """The scene object (drive log or synthetic town) a spec runs in, cached per process (shared
    with scenario validation): pass it to ``sim.engine.compile_scenario``."""
    return scene_for(spec)[0]


def _load_scene(engine: Any, ep: Episode) -> Any:
    """The episode's scene, cached per worker process (shared with scenario validation)."""
    return episode_scene(ep.scene_spec())


# ----------------------------------------------------------------------------- sensor backends
#: ``renderer`` value of :func:`drive_episode` meaning "the scenario's ``scene.renderer``"
RENDERER_FROM_SCENARIO = "scenario"


def with_renderer(spec: ScenarioSpec, renderer: str | None) -> ScenarioSpec:
    """``spec`` with ``scene.renderer`` replaced (``None`` keeps it). The name is checked against
    the render-backend registry (:class:`~sim.errors.ScenarioError` listing the known ones)."""
    import dataclasses

    if renderer is None or renderer == spec.scene.renderer:
        return spec
    _renderer_factory(renderer)
    return dataclasses.replace(spec, scene=dataclasses.replace(spec.scene, renderer=renderer))


def _renderer_factory(name: str) -> Any:
    import importlib

    from sim.render.base import RENDERERS

    if name not in RENDERERS:
        # the built-in backends register on import (so an unknown name lists all of them)
        for mod in (name, "mesh", "neural", "composite"):
            with contextlib.suppress(ImportError):
                importlib.import_module(f"sim.render.{mod}")
            if name in RENDERERS:
                break
    try:
        return RENDERERS.get(name)
    except LoopdriveError as exc:
        raise ScenarioError(exc.message, field="scene.renderer") from None


def make_renderer(spec: ScenarioSpec, scene: Any = None, name: str | None = None, **options: Any) -> Any:
    """The sensor backend of a scenario, as the env builds it: ``name`` (default
    ``spec.scene.renderer``: ``mesh``, ``neural``, ``composite`` or a registered third-party one)
    constructed by its ``from_scenario`` (scene bundle, actor library and inserted actors'
    ``asset`` s) or from the scene (default :func:`episode_scene`). A neural/composite backend
    without ``scene.bundle`` raises :class:`~sim.errors.ScenarioError` naming that field; a missing
    or unreadable bundle folder a :class:`~sim.errors.BundleError`. Close it after use."""
    spec = with_renderer(spec, name)
    factory = _renderer_factory(spec.scene.renderer)
    if spec.scene.renderer in ("neural", "composite") and spec.scene.bundle is None:
        raise ScenarioError(
            f"renderer {spec.scene.renderer!r} needs a scene bundle: set scene.bundle in the scenario "
            "(a folder made by `loopdrive recon`) or choose --renderer mesh",
            field="scene.bundle",
        )
    if scene is None:
        scene = episode_scene(spec)
    from_scenario = getattr(factory, "from_scenario", None)
    return from_scenario(spec, scene, **options) if from_scenario is not None else factory(scene, **options)


def _needs_render(kind: str) -> bool:
    if kind in ("ego", "objects"):
        return False
    try:
        from sim.observations import OBSERVATIONS

        return bool(getattr(OBSERVATIONS.get(kind), "needs_render", False))
    except (ImportError, LoopdriveError):
        return False


def _pure_pursuit(traj: Any, state: Any, wheelbase: float) -> NDArray[np.float64]:
    """[accel m/s², steer rad] tracking a planner's ego-frame :class:`~sim.planning.Trajectory`
    with the engine's :class:`sim.controller.TrajectoryController` (pure pursuit + speed control),
    after resampling the plan to uniform steps. Stateless (no integral term carried between
    steps), so ``sim.rollout`` and the batch runner execute a plan identically."""
    from sim.controller import TrajectoryController

    t = np.asarray(traj.t_s, np.float64)
    xy = np.asarray(traj.xy, np.float64)
    dt = float(t[0]) if len(t) == 1 else float(np.median(np.diff(t)))
    dt = max(dt, 1e-3)
    grid = dt * np.arange(1, len(t) + 1)
    pts = np.stack([np.interp(grid, t, xy[:, 0]), np.interp(grid, t, xy[:, 1])], axis=1)
    ctl = TrajectoryController(wheelbase=wheelbase, dt=dt, ki=0.0)
    out, _ = ctl(pts[None], np.array([state.v[0, 0]]), np.zeros(1), 0.0)
    return np.asarray(out[0], np.float64)


def _closed_loop(engine: Any, ep: Episode, planner: str, params: dict[str, Any]) -> EpisodeRecord:
    """Drive ``ep`` with ``planner`` through the engine (:func:`drive_episode`, one Generator seeded
    with ``ep.seed``), offering the scenario's observation kinds plus :data:`ALWAYS_AVAILABLE`;
    rendered kinds (camera, lidar) come from the scenario's backend (``scene.renderer``), built
    only when the planner asks for one. Planner failures raise."""
    compiled = engine.compile_scenario(ep.spec, _load_scene(engine, ep))
    res = drive_episode(
        ep.spec, planner, ep.seed, params=params, observation=ep.observation, compiled=compiled,
        raise_errors=True, renderer=RENDERER_FROM_SCENARIO,
    )  # fmt: skip
    if res.record is None:  # pragma: no cover - a reset world is never done
        raise EpisodeStateError("the episode ended before its second step")
    return res.record


def _expert(compiled: Any, ep: Episode) -> tuple[NDArray[np.float64] | None, float | None]:
    """The logged ego over the episode as (T, 5) t_s, x, y, yaw, speed, and its progress along
    the ego route (m) -- only when the ego starts where the log has it."""
    tr = getattr(compiled.scene, "ego", None)
    if tr is None:
        return None, None
    T = compiled.horizon_steps + 1
    t_us = compiled.t0_us + np.arange(T, dtype=np.int64) * compiled.dt_us
    poses = [tr.pose_at(int(t)) for t in t_us]
    if any(p is None for p in poses):
        return None, None
    P = np.array(poses)
    spd = np.hypot(*np.gradient(P[:, :2], compiled.dt_s, axis=0).T)
    exp = np.column_stack([(t_us - compiled.t0_us) * 1e-6, P[:, 0], P[:, 1], P[:, 3], spd])
    if ep.spec.ego.start_pose is not None or ep.spec.ego.route is not None:
        return exp, None
    route = progress_route(compiled.lane_map, compiled.ego_route)
    s, _ = compiled.lane_map.route_polyline(list(route)).project(P[:, :2])
    return exp, float(s[-1] - s[0])


def _record(compiled: Any, hist: Sequence[Any], reference: float | None, planner: str) -> EpisodeRecord:
    def col(name: str) -> NDArray[Any]:
        return np.stack([getattr(h, name)[0] for h in hist])

    x, y, yaw, v, acc, valid = (col(n) for n in ("x", "y", "yaw", "v", "accel", "valid"))
    t = np.array([(int(h.t_us[0]) - compiled.t0_us) * 1e-6 for h in hist])
    last = hist[-1]
    static = np.asarray(compiled.world0.static[1:], bool) if len(compiled.world0.static) else None
    return EpisodeRecord(
        t_s=t,
        ego_xy=np.stack([x[:, 0], y[:, 0]], axis=1),
        ego_yaw=yaw[:, 0],
        ego_speed=v[:, 0],
        ego_size=(float(compiled.length[0]), float(compiled.width[0])),
        actor_ids=tuple(compiled.ids[1:]),
        actor_cls=tuple(c or "other" for c in compiled.cls[1:]),
        actor_xy=np.stack([x[:, 1:], y[:, 1:]], axis=-1),
        actor_yaw=yaw[:, 1:],
        actor_speed=v[:, 1:],
        actor_size=np.stack([compiled.length[1:], compiled.width[1:]], axis=1),
        actor_valid=valid[:, 1:] & np.array([bool(i) for i in compiled.ids[1:]])[None, :],
        lane_map=compiled.lane_map,
        route=tuple(compiled.ego_route),
        actor_static=static,
        reference_progress_m=reference,
        ego_accel=acc[:, 0],
        meta={
            "terminated": bool(last.terminated[0]),
            "truncated": bool(last.truncated[0]),
            "termination": "collision"
            if bool(last.collision[0])
            else "offroad"
            if bool(last.offroad[0])
            else "route_complete"
            if bool(last.route_complete[0])
            else ("horizon" if bool(last.truncated[0]) else ""),
            "engine_min_ttc_s": float(np.min([float(h.min_ttc[0]) for h in hist])),
        },
    )


# ---------------------------------------------------------------------- public episode API
@dataclass
class EpisodeResult:
    """One episode of :func:`drive_episode`: ``status`` ``ok`` / ``error`` (``error`` holds the
    one-line reason), the metrics record (None when the episode failed before a second step), the
    applied controls (T, 2) [accel m/s², steer rad], the recorded observations when asked, and how
    it ended (``collision``, ``offroad``, ``route_complete``, ``horizon``, ``error``, ``stopped``)."""

    status: str
    error: str
    record: EpisodeRecord | None
    actions: NDArray[np.float64]
    observations: list[dict[str, Any]] = field(default_factory=list)
    termination: str = ""
    steps: int = 0


#: kinds every episode can offer whatever the configuration (own odometry; privileged boxes for
#: the reference planners)
ALWAYS_AVAILABLE = ("ego", "objects")


class SensorObserver:
    """Builds the observation kinds of one episode for world 0 of an engine state (caches the
    ``sim.observations`` kinds); the one observer of batch runs, :func:`drive_episode` and
    ``sim.rollout``. ``ego``/``objects`` come from ``sim.planning.observe``; every other kind
    from the ``sim.observations`` registry (same arrays as the env; ``state``/``bev`` need no
    renderer); ``camera``/``lidar`` use ``renderer`` (a ``RenderBackend``) with ``rig``; without
    one, ``lidar`` falls back to the analytic box LiDAR of :func:`sim.render.box_lidar.simulate_lidar`
    (actor boxes over a flat ground, no static scenery) and ``camera`` is an
    :class:`~sim.errors.EpisodeStateError` (field ``observation``)."""

    def __init__(self, compiled: Any, rig: SensorRig, renderer: Any = None) -> None:
        self.compiled = compiled
        self.rig = rig
        self.renderer = renderer
        self._cache: dict[str, Any] = {}
        # the last rendered frame: (state, cameras rendered, lidar rendered, frame); one render per
        # state whatever the number of kinds (and calls) that read it
        self._frame: tuple[Any, bool, bool, Any] | None = None
        self._kinds_now: list[str] = []

    def _render(self, state: Any, world: Any, kinds: Sequence[str]) -> Any:
        """The sensor frame of ``state`` holding what ``kinds`` read (``camera``: the rig's
        cameras, ``lidar``: its LiDAR, any other rendered kind: both), rendered once per state."""
        cams = any(k != "lidar" for k in kinds)
        lidar = any(k != "camera" for k in kinds) and self.rig.lidar is not None
        f = self._frame
        if f is not None and f[0] is state and (f[1] or not cams) and (f[2] or not lidar):
            return f[3]
        if f is not None and f[0] is state:  # widen to what was rendered before for this state
            cams, lidar = cams or f[1], lidar or f[2]
        frame = self.renderer.render(world, SensorRig(self.rig.cameras if cams else (), self.rig.lidar if lidar else None))
        self._frame = (state, cams, lidar, frame)
        return frame

    def __call__(self, kinds: Sequence[str], state: Any) -> dict[str, Any]:
        from sim.planning.observe import ego_observation, objects_observation

        world = state.world(0)
        obs: dict[str, Any] = {}
        self._kinds_now = [k for k in kinds if k not in ("ego", "objects")]
        for k in kinds:
            if k == "ego":
                obs[k] = ego_observation(
                    float(state.x[0, 0]), float(state.y[0, 0]), float(state.yaw[0, 0]), float(state.v[0, 0]),
                    float(state.accel[0, 0]), float(state.steer[0]),
                )  # fmt: skip
            elif k == "objects":
                obs[k] = objects_observation(world, self.compiled.num_slots - 1)
            else:
                obs[k] = self._registry_or_fallback(k, state, world)
        return obs

    def _registry_or_fallback(self, kind: str, state: Any, world: Any) -> Any:
        kobj = self._cache.get(kind)
        if kobj is None and kind not in self._cache:
            from sim.observations import OBSERVATIONS, ObservationConfig

            cls = OBSERVATIONS.get(kind)
            needs_render = getattr(cls, "needs_render", False)
            if needs_render and self.renderer is None:
                kobj = None  # fallbacks below
            else:
                kobj = cls(ObservationConfig(rig=self.rig), self.compiled)
            self._cache[kind] = kobj
        if kobj is not None:
            frames = None
            if getattr(kobj, "needs_render", False):
                assert self.renderer is not None
                frames = [self._render(state, world, [k for k in self._kinds_now if _needs_render(k)] or [kind])]
            return kobj.compute(state, frames)[0]
        if kind == "lidar":
            from sim.render.box_lidar import simulate_lidar

            if self.rig.lidar is None:
                raise EpisodeStateError("the lidar observation needs a rig with a LiDAR", field="observation")
            return simulate_lidar(world, self.rig.lidar)
        raise EpisodeStateError(
            f"observation kind {kind!r} needs rendered sensors: pass a render backend", field="observation"
        )


def planner_init(compiled: Any, spec: ScenarioSpec, planner: Any, rig: SensorRig | None = None) -> Any:
    """The ``sim.planning.PlannerInit`` of an episode (expert and scenario only for oracle planners)."""
    from sim.planning import PlannerInit

    expert, _ = _expert(compiled, Episode(episode_id="x", scenario=spec.name, seed=0, spec=spec))
    return PlannerInit(
        lane_map=compiled.lane_map,
        route=tuple(compiled.ego_route),
        dt_s=compiled.dt_s,
        horizon_s=spec.horizon_s,
        ego_size=(float(compiled.length[0]), float(compiled.width[0]), float(compiled.height[0])),
        rig=rig,
        expert=expert if planner.requires_scenario else None,
        scenario=spec if planner.requires_scenario else None,
    )


def _to_action(out: Any, state: Any, wheelbase: float, name: str) -> NDArray[np.float64]:
    from sim.planning import Control, Trajectory

    if isinstance(out, Control):
        if not out.is_finite():
            raise EpisodeStateError(f"planner {name!r} returned a non-finite control {out}")
        return np.array([out.accel, out.steer], np.float64)
    if isinstance(out, Trajectory):
        if not out.is_finite():
            raise EpisodeStateError(f"planner {name!r} returned a non-finite trajectory")
        return np.asarray(_pure_pursuit(out, state, wheelbase), np.float64)
    raise EpisodeStateError(f"planner {name!r} returned {type(out).__name__}, expected a Trajectory or a Control")


def drive_episode(
    spec: ScenarioSpec,
    planner: Any,
    seed: int = 0,
    *,
    renderer: Any = None,
    rig: SensorRig | None = None,
    params: Mapping[str, Any] | None = None,
    observation: Sequence[str] | None = None,
    compiled: Any = None,
    record_observations: bool = False,
    extra_kinds: Sequence[str] = (),
    expert: Any = None,
    max_steps: int | None = None,
    raise_errors: bool = False,
) -> EpisodeResult:
    """Drive ``spec`` closed loop with ``planner`` (a ``sim.planning.Planner`` instance, or a
    registry name + ``params``) from one ``np.random.Generator`` seeded with ``seed``; the public
    episode API behind ``sim.rollout.run_planner_episode`` and the batch runner's sensor path.

    Args:
        renderer: the sensor backend for the ``camera``/``lidar`` kinds: a ``RenderBackend``
            instance (the caller closes it), a backend name (``mesh``, ``neural``, ``composite``)
            or :data:`RENDERER_FROM_SCENARIO` (``"scenario"``: ``spec.scene.renderer``), built with
            :func:`make_renderer` only when the planner asks for a rendered kind and closed at the
            end; ``None`` (default): no backend (``lidar`` falls back to the analytic box LiDAR,
            see :class:`SensorObserver`).
        rig: the sensor rig (default :func:`sim.sensors.default_rig`).
        observation: the configured observation kinds (default: whatever the planner asks for);
            :data:`ALWAYS_AVAILABLE` kinds are added. A planner asking for more gets a
            ``ScenarioError`` naming what is missing (raised: a setup mistake).
        compiled: a ``sim.engine.Compiled`` of ``spec`` to reuse (faster for many seeds).
        record_observations: keep every step's observation in the result.
        extra_kinds: more kinds to record (not shown to the planner), e.g. ``bev``.
        expert: a second planner queried on the same states (not executed); its controls are
            recorded in ``result.observations[i]["expert_action"]``.
        max_steps: stop earlier than the horizon.
        raise_errors: re-raise planner failures instead of returning an ``error`` episode.
    """
    from sim import engine
    from sim.planning import check_observation_spec, make_planner

    pl = make_planner(planner, **dict(params or {})) if isinstance(planner, str) else planner
    name = getattr(pl, "name", type(pl).__name__)
    rig = rig or default_rig()
    if isinstance(renderer, str):
        spec = with_renderer(spec, None if renderer == RENDERER_FROM_SCENARIO else renderer)
    if compiled is None:
        compiled = engine.compile_scenario(spec, episode_scene(spec))
    c = compiled
    ospec = pl.observation_spec()
    offered = tuple(dict.fromkeys([*(observation if observation is not None else ospec.kinds), *ALWAYS_AVAILABLE]))
    check_observation_spec(ospec, offered, [cam.name for cam in rig.cameras], planner=name)
    extra = tuple(k for k in extra_kinds if k not in ospec.kinds)
    if extra:
        check_observation_spec(type(ospec)(kinds=extra), offered, planner=f"{name} (recorded kinds)")
    own = None
    if isinstance(renderer, str) and any(_needs_render(k) for k in (*ospec.kinds, *extra)):
        own = renderer = make_renderer(spec, c.scene)
    elif isinstance(renderer, str):
        renderer = None
    try:
        return _drive(spec, pl, name, seed, c, rig, renderer, record_observations, extra, expert, max_steps, raise_errors)
    finally:
        if own is not None:
            own.close()


def _drive(
    spec: ScenarioSpec, pl: Any, name: str, seed: int, c: Any, rig: SensorRig, renderer: Any,
    record_observations: bool, extra: tuple[str, ...], expert: Any, max_steps: int | None, raise_errors: bool,
) -> EpisodeResult:  # fmt: skip
    from sim import engine

    ospec = pl.observation_spec()
    observer = SensorObserver(c, rig, renderer)
    rng = np.random.default_rng(seed)
    state = engine.reset(c, rng)
    _, reference = _expert(c, Episode(episode_id="x", scenario=spec.name, seed=seed, spec=spec))
    hist = [state]
    actions: list[NDArray[np.float64]] = []
    obs_log: list[dict[str, Any]] = []
    wheelbase = float(c.bicycle.wheelbase)
    status, error = "ok", ""
    try:
        pl.reset(planner_init(c, spec, pl, rig), seed=seed)
        if expert is not None:
            expert.reset(planner_init(c, spec, expert, rig), seed=seed)
        while not bool(state.done[0]) and (max_steps is None or len(actions) < max_steps):
            obs = observer(ospec.kinds, state)
            action = _to_action(pl.plan(obs), state, wheelbase, name)
            if record_observations:
                entry = {**obs, **observer(extra, state)} if extra else dict(obs)
                if expert is not None:
                    ex = observer(expert.observation_spec().kinds, state)
                    entry["expert_action"] = _to_action(expert.plan(ex), state, wheelbase, expert.name)
                obs_log.append(entry)
            state = engine.step(state, action, rng)
            actions.append(np.array([state.accel[0, 0], state.steer[0]]))
            hist.append(state)
    except Exception as exc:
        if raise_errors:
            raise
        status = "error"
        error = exc.one_line() if isinstance(exc, LoopdriveError) else f"{type(exc).__name__}: {exc}"
        log.info("planner %s failed at step %d: %s", name, len(actions), error)
    record = _record(c, hist, reference, name) if len(hist) >= 2 else None
    last = hist[-1]
    term = (
        "collision" if bool(last.collision[0]) else "offroad" if bool(last.offroad[0])
        else "route_complete" if bool(last.route_complete[0]) else "horizon" if bool(last.truncated[0])
        else ("error" if status == "error" else "stopped")
    )  # fmt: skip
    return EpisodeResult(
        status=status,
        error=error,
        record=record,
        actions=np.array(actions, np.float64).reshape(-1, 2),
        observations=obs_log,
        termination=term,
        steps=len(actions),
    )


# ------------------------------------------------------------------------------- one episode
@dataclass(frozen=True)
class EpisodeOutcome:
    """What one episode produced: the results row, the metrics.json content, the trajectory as
    parquet bytes, and the video as mp4 bytes (when asked)."""

    row: dict[str, Any]
    details: dict[str, Any]
    trajectory: bytes | None = None
    video: bytes | None = None


def _base_row(ep: Episode, planner: str) -> dict[str, Any]:
    row: dict[str, Any] = {
        "episode_id": ep.episode_id,
        "scenario": ep.scenario,
        "file": ep.file or "",
        "seed": int(ep.seed),
        "sweep": json.dumps(to_builtin(dict(ep.sweep)), sort_keys=True),
        "planner": planner,
    }
    for k, v in ep.sweep.items():
        row[f"sweep.{k}"] = v
    for name in METRICS.names():
        row[name] = math.nan
        row[f"{name}_score"] = math.nan
    row.update({"score": math.nan, "status": "error", "error": "", "steps": 0, "sim_time_s": 0.0})
    return row


def run_episode(
    ep: Episode,
    planner: str | None = None,
    planner_params: Mapping[str, Any] | None = None,
    *,
    video: bool = False,
    rollout_fn: RolloutFn | None = None,
) -> EpisodeOutcome:
    """Run, score and serialise one episode. Never raises for a failing episode: the exception
    becomes ``status = "error"`` with its one-line message (the traceback is in the details)."""
    name = planner or ep.planner
    params = _params_for(ep, planner, planner_params)
    row = _base_row(ep, name)
    details: dict[str, Any] = {
        "scene": to_builtin(
            {"log": ep.spec.scene.log, "town": ep.spec.scene.town, "seed": ep.spec.scene.seed}
        ),
        "planner_params": to_builtin(params),
        "description": ep.description,
    }
    t0 = time.perf_counter()
    traj = vid = None
    try:
        rec = (rollout_fn or rollout)(ep, name, params)
        values, score = compute_metrics(rec, ep.metrics or None)
        for m, v in values.items():
            row[m] = float(v.value)
            row[f"{m}_score"] = float(v.score)
        row.update(
            {"score": float(score), "status": "ok", "steps": rec.n_steps, "sim_time_s": rec.duration_s}
        )
        details["metrics"] = {
            m: {
                "value": float(v.value),
                "score": float(v.score),
                "unit": METRICS.get(m).unit,
                "kind": METRICS.get(m).kind,
                "details": to_builtin(v.details),
            }
            for m, v in values.items()
        }
        details["route"] = list(rec.route)
        details["ego_size"] = list(rec.ego_size)
        details.update({k: to_builtin(v) for k, v in rec.meta.items()})
        traj = trajectory_table(rec)
        if video:
            from sim.report import render_video

            vid = render_video(rec)
    except Exception as exc:
        msg = exc.one_line() if isinstance(exc, LoopdriveError) else f"{type(exc).__name__}: {exc}"
        row["status"] = "error"
        row["error"] = msg.splitlines()[0] if msg else type(exc).__name__
        details["traceback"] = traceback.format_exc()
        log.debug("episode %s failed: %s", ep.episode_id, msg)
    details["wall_s"] = time.perf_counter() - t0
    return EpisodeOutcome(row=row, details=details, trajectory=traj, video=vid)


def trajectory_table(rec: EpisodeRecord) -> bytes:
    """The episode as a long-format parquet table (bytes): one row per (step, actor) with columns
    step, t_s, actor_id (``ego`` for the ego), cls, x, y, yaw (world frame, m / rad), speed (m/s),
    length, width (m), valid."""
    import polars as pl

    T, n = rec.n_steps, len(rec.actor_ids)
    steps = np.repeat(np.arange(T, dtype=np.int32), n + 1)
    ids = np.tile(np.array(("ego", *rec.actor_ids), dtype=object), T)
    cls = np.tile(np.array(("car", *rec.actor_cls), dtype=object), T)
    x = np.concatenate([rec.ego_xy[:, None, 0], rec.actor_xy[..., 0]], axis=1).reshape(-1)
    y = np.concatenate([rec.ego_xy[:, None, 1], rec.actor_xy[..., 1]], axis=1).reshape(-1)
    yaw = np.concatenate([rec.ego_yaw[:, None], rec.actor_yaw], axis=1).reshape(-1)
    sp = np.concatenate([rec.ego_speed[:, None], rec.actor_speed], axis=1).reshape(-1)
    size = np.concatenate([np.array([rec.ego_size]), rec.actor_size], axis=0)
    valid = np.concatenate([np.ones((T, 1), bool), rec.actor_valid], axis=1).reshape(-1)
    df = pl.DataFrame(
        {
            "step": steps,
            "t_s": np.repeat(rec.t_s, n + 1),
            "actor_id": pl.Series(ids.tolist(), dtype=pl.String),
            "cls": pl.Series(cls.tolist(), dtype=pl.String),
            "x": x,
            "y": y,
            "yaw": yaw,
            "speed": sp,
            "length": np.tile(size[:, 0], T),
            "width": np.tile(size[:, 1], T),
            "valid": valid,
        }
    )
    buf = io.BytesIO()
    df.write_parquet(buf, compression="zstd")
    return buf.getvalue()


# --------------------------------------------------------------------------- persistence
def _json_safe(obj: Any) -> Any:
    """Non-finite floats as strings ("inf", "-inf", "nan") so metrics.json stays strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def _json_unsafe(obj: Any) -> Any:
    if isinstance(obj, str) and obj in ("inf", "-inf", "nan"):
        return float(obj)
    if isinstance(obj, dict):
        return {k: _json_unsafe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_unsafe(v) for v in obj]
    return obj


def _write_json_atomic(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_json_safe(obj), indent=1, sort_keys=True, allow_nan=False), fsync=True)


def _episodes_dir(out: Path) -> Path:
    return out / "episodes"


def persist(out: Path, outcome: EpisodeOutcome) -> Path:
    """Write one episode's folder atomically (temp folder + rename); returns the folder."""
    eid = outcome.row["episode_id"]
    root = _episodes_dir(out)
    root.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(root, prefix=f".tmp-{eid}-")
    try:
        if outcome.trajectory is not None:
            (tmp / "trajectory.parquet").write_bytes(outcome.trajectory)
        if outcome.video is not None:
            (tmp / "video.mp4").write_bytes(outcome.video)
        with open(tmp / "metrics.json", "w", encoding="utf-8") as f:
            json.dump(
                _json_safe({"row": outcome.row, **outcome.details}),
                f,
                indent=1,
                sort_keys=True,
                allow_nan=False,
            )
            f.flush()
            os.fsync(f.fileno())
        return replace_dir(tmp, root / eid)  # re-running an episode replaces it
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _done_ids(out: Path) -> set[str]:
    root = _episodes_dir(out)
    if not root.is_dir():
        return set()
    return {
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / "metrics.json").is_file()
    }


def _clean_tmp(out: Path) -> None:
    root = _episodes_dir(out)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".tmp-"):
                shutil.rmtree(p, ignore_errors=True)


def read_episode(out: Path, episode_id: str) -> dict[str, Any]:
    """The metrics.json of one finished episode (non-finite floats restored)."""
    with open(_episodes_dir(out) / episode_id / "metrics.json", encoding="utf-8") as f:
        return _json_unsafe(json.load(f))


def write_results(out: Path, episode_ids: Sequence[str]) -> Path:
    """(Re)build ``results.parquet`` from the episode folders, in ``episode_ids`` order."""
    import polars as pl

    rows = [
        read_episode(out, e)["row"]
        for e in episode_ids
        if (_episodes_dir(out) / e / "metrics.json").is_file()
    ]
    cols = _column_order({k for r in rows for k in r})
    series = []
    for c in cols:
        vals = [r.get(c) for r in rows]
        present = [v for v in vals if v is not None]
        if present and all(isinstance(v, bool) for v in present):
            series.append(pl.Series(c, vals, dtype=pl.Boolean))
        elif c in ("seed", "steps") and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
            series.append(pl.Series(c, vals, dtype=pl.Int64))
        elif present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
            series.append(pl.Series(c, [None if v is None else float(v) for v in vals], dtype=pl.Float64))
        else:
            strs = [None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in vals]
            series.append(pl.Series(c, strs, dtype=pl.String))
    df = pl.DataFrame(series) if series else pl.DataFrame({"episode_id": pl.Series([], dtype=pl.String)})
    path = out / "results.parquet"
    with atomic_path(path, suffix=".parquet") as tmp:
        df.write_parquet(tmp)
    return path


def _column_order(keys: set[str]) -> list[str]:
    lead = ["episode_id", "scenario", "file", "seed", "sweep"]
    lead += sorted(k for k in keys if k.startswith("sweep."))
    lead += ["planner"]
    for m in METRICS.names():
        lead += [m, f"{m}_score"]
    lead += ["score", "status", "error", "steps", "sim_time_s"]
    out = [k for k in lead if k in keys]
    return out + sorted(keys - set(out))


def load_results(out: str | os.PathLike[str]) -> Any:
    """``results.parquet`` of a run folder as a polars DataFrame (ScenarioError when missing)."""
    import polars as pl

    p = Path(out) / "results.parquet"
    if not p.is_file():
        raise ScenarioError(
            "expected a run folder with results.parquet (made by `loopdrive run`)", file=str(out)
        )
    return pl.read_parquet(p)


# ------------------------------------------------------------------------------- executors
def _iter_local(
    tasks: Sequence[Episode],
    planner: str | None,
    params: Mapping[str, Any] | None,
    video: bool,
    workers: int,
    rollout_fn: RolloutFn | None = None,
) -> Iterator[EpisodeOutcome]:
    """In-process for one worker; else a process pool whose workers die with this process
    (:func:`sim.workers.iter_process_pool`)."""
    if workers <= 1:
        for ep in tasks:
            yield run_episode(ep, planner, params, video=video, rollout_fn=rollout_fn)
        return
    from sim.workers import iter_process_pool

    yield from iter_process_pool(
        run_episode, tasks, workers, args=(planner, params), kwargs={"video": video, "rollout_fn": rollout_fn}
    )


def _iter_ray(
    tasks: Sequence[Episode],
    planner: str | None,
    params: Mapping[str, Any] | None,
    video: bool,
    workers: int,
    address: str | None,
    rollout_fn: RolloutFn | None = None,
) -> Iterator[EpisodeOutcome]:
    """Ray tasks on a local instance started for the run or the cluster at ``address``
    (:func:`sim.ray_executor.iter_ray`)."""
    from sim.ray_executor import iter_ray

    yield from iter_ray(
        run_episode, tasks, workers, address, args=(planner, params), kwargs={"video": video, "rollout_fn": rollout_fn}
    )


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
    outp = Path(out)
    planner_label = planner or "(per scenario)"
    definition = run_definition(
        eps, planner=planner, planner_params=planner_params, horizon_s=horizon_s, renderer=renderer,
        video=video, rollout_fn=rollout_fn, run_format=RUN_FORMAT,
    )  # fmt: skip
    info = {
        "format": RUN_FORMAT,
        "planner": planner_label,
        "planner_params": to_builtin(dict(planner_params or {})),
        "episodes": ids,
        "video": video,
        "executor": executor,
        "workers": workers,
        "horizon_s": horizon_s,
        "renderer": renderer,
    }
    open_run_folder(outp, resume=resume, definition=definition, info=info)
    _clean_tmp(outp)
    done_before = _done_ids(outp) if resume else set()
    todo = [e for e in eps if e.episode_id not in done_before]
    total = len(eps)
    failed = 0
    errors: list[tuple[str, str]] = []
    # episodes already finished count as done for the progress display
    done = total - len(todo)
    for eid in done_before & set(ids):
        if read_episode(outp, eid)["row"].get("status") != "ok":
            failed += 1
    if progress is not None:
        progress(done, failed, total)
    t0 = time.perf_counter()
    it = (
        _iter_local(todo, planner, planner_params, video, workers, rollout_fn)
        if executor == "local"
        else _iter_ray(todo, planner, planner_params, video, workers, ray_address, rollout_fn)
    )
    ran = 0
    for outcome in it:
        persist(outp, outcome)
        ran += 1
        done += 1
        if outcome.row["status"] != "ok":
            failed += 1
            errors.append((outcome.row["episode_id"], outcome.row["error"]))
        if progress is not None:
            progress(done, failed, total)
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
