"""Driving one episode: the default rollout (engine + planner from the registry), the expert
reference, the episode record, and the public episode API (:func:`drive_episode`,
:class:`SensorObserver`, :func:`planner_init`) shared with ``sim.rollout``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sim.batch.renderers import (
    RENDERER_FROM_SCENARIO,
    _load_scene,
    _needs_render,
    episode_scene,
    make_renderer,
    scenario_rig,
    with_renderer,
)
from sim.errors import EpisodeStateError, LoopdriveError
from sim.metrics import EpisodeRecord, progress_route
from sim.scenario import Episode
from sim.sensors import SensorRig
from sim.spec import ScenarioSpec

log = logging.getLogger(__name__)


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
    with ``ep.seed``), offering the scenario's observation kinds plus :data:`ALWAYS_AVAILABLE` and
    :data:`RIG_KINDS` (what the engine and the default rig can always make, as the leaderboard
    offers: a planner given with ``run --planner`` gets them although the scenario's list was
    written for its own planner); rendered kinds (camera, lidar) come from the scenario's backend
    (``scene.renderer``), built only when the planner asks for one. Planner failures raise."""
    compiled = engine.compile_scenario(ep.spec, _load_scene(engine, ep))
    observation = tuple(dict.fromkeys([*ep.observation, *RIG_KINDS]))
    res = drive_episode(
        ep.spec, planner, ep.seed, params=params, observation=observation, compiled=compiled,
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
#: kinds a batch episode also offers: the default rig's LiDAR (rendered by the scenario's backend
#: when asked for), the engine's BEV raster and state vector (``sim.leaderboard.RIG_KINDS``)
RIG_KINDS = ("lidar", "bev", "state")


class SensorObserver:
    """Builds the observation kinds of one episode for world 0 of an engine state (caches the
    ``sim.observations`` kinds); the one observer of batch runs, :func:`drive_episode` and
    ``sim.rollout``. ``ego``/``objects`` come from ``sim.planning.observe``; every other kind
    from the ``sim.observations`` registry (same arrays as the env; ``state``/``bev`` need no
    renderer); ``camera``/``lidar`` use ``renderer`` (a ``RenderBackend``) with ``rig``; without
    one, ``lidar`` falls back to the analytic box LiDAR of :func:`sim.render.box_lidar.simulate_lidar`
    (actor boxes over a flat ground, no static scenery) and ``camera`` is an
    :class:`~sim.errors.EpisodeStateError` (field ``observation``). With ``full_rig`` (a scenario's
    ``scene.rig: log``) every render renders every sensor of ``rig``, whatever the kinds read."""

    def __init__(self, compiled: Any, rig: SensorRig, renderer: Any = None, full_rig: bool = False) -> None:
        self.compiled = compiled
        self.rig = rig
        self.renderer = renderer
        self.full_rig = bool(full_rig)
        self._cache: dict[str, Any] = {}
        # the last rendered frame: (state, cameras rendered, lidar rendered, frame); one render per
        # state whatever the number of kinds (and calls) that read it
        self._frame: tuple[Any, bool, bool, Any] | None = None
        self._kinds_now: list[str] = []

    def _render(self, state: Any, world: Any, kinds: Sequence[str]) -> Any:
        """The sensor frame of ``state`` holding what ``kinds`` read (``camera``: the rig's
        cameras, ``lidar``: its LiDAR, any other rendered kind: both), rendered once per state."""
        cams = self.full_rig or any(k != "lidar" for k in kinds)
        lidar = (self.full_rig or any(k != "camera" for k in kinds)) and self.rig.lidar is not None
        f = self._frame
        if f is not None and f[0] is state and (f[1] or not cams) and (f[2] or not lidar):
            return f[3]
        if f is not None and f[0] is state:  # widen to what was rendered before for this state
            cams, lidar = cams or f[1], lidar or f[2]
        frame = self.renderer.render(
            world, SensorRig(self.rig.cameras if cams else (), self.rig.lidar if lidar else None)
        )
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
                names = [c.name for c in self.rig.cameras]
                cam = "front" if "front" in names or not names else names[0]
                kobj = cls(ObservationConfig(rig=self.rig, camera=cam), self.compiled)
            self._cache[kind] = kobj
        if kobj is not None:
            frames = None
            if getattr(kobj, "needs_render", False):
                assert self.renderer is not None
                frames = [
                    self._render(state, world, [k for k in self._kinds_now if _needs_render(k)] or [kind])
                ]
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
    raise EpisodeStateError(
        f"planner {name!r} returned {type(out).__name__}, expected a Trajectory or a Control"
    )


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
        rig: the sensor rig (default: the scenario's ``scene.rig``, :func:`scenario_rig`).
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
    if isinstance(renderer, str):
        spec = with_renderer(spec, None if renderer == RENDERER_FROM_SCENARIO else renderer)
    if compiled is None:
        compiled = engine.compile_scenario(spec, episode_scene(spec))
    c = compiled
    rig = rig or scenario_rig(spec, c.scene)
    ospec = pl.observation_spec()
    offered = tuple(
        dict.fromkeys([*(observation if observation is not None else ospec.kinds), *ALWAYS_AVAILABLE])
    )
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
        return _drive(
            spec, pl, name, seed, c, rig, renderer, record_observations, extra, expert, max_steps, raise_errors
        )  # fmt: skip
    finally:
        if own is not None:
            own.close()


def _drive(
    spec: ScenarioSpec, pl: Any, name: str, seed: int, c: Any, rig: SensorRig, renderer: Any,
    record_observations: bool, extra: tuple[str, ...], expert: Any, max_steps: int | None, raise_errors: bool,
) -> EpisodeResult:  # fmt: skip
    from sim import engine

    ospec = pl.observation_spec()
    observer = SensorObserver(c, rig, renderer, full_rig=getattr(spec.scene, "rig", "default") == "log")
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
