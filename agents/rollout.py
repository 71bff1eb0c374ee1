"""Run one closed-loop episode of a planner through the world engine (``sim.engine``).

:func:`run_planner_episode` is the planner-side twin of the batch runner's rollout
(``sim.batch.rollout``): same engine calls, same ``PlannerInit``, same :class:`EpisodeRecord`
(built by the batch runner's own helper, so the metrics agree), plus what training and tests need:

* it accepts a :class:`~agents.base.Planner` *instance* (a spy, a learned policy) or a name;
* it checks the planner's :class:`~agents.base.ObservationSpec` against the configured observation
  kinds and rig (:func:`agents.base.check_observation_spec`) and passes the planner **only** the
  kinds it declared (:func:`observe`);
* it can record each step's observation and the applied control (behaviour-cloning data);
* a planner that raises, returns NaN or returns something else ends the episode with
  ``status = "error"`` (never an exception out of here unless ``raise_errors``).

Observation kinds: ``ego`` and ``objects`` (see :mod:`agents.planners.common`) are always
available; every other kind comes from the ``sim.observations`` registry (same arrays as the env).
Kinds that need rendered sensors (``camera``, ``lidar``) use the ``renderer`` passed in (a
``sim.render.base.RenderBackend``); without one, ``lidar`` falls back to the analytic box LiDAR of
:func:`agents.perception.simulate_lidar` (actor boxes over a flat ground, same range-image layout,
no static scenery) and ``camera`` is an error.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agents.base import Control, Planner, PlannerInit, Trajectory, check_observation_spec, make_planner
from sim.errors import EpisodeStateError, LoopdriveError
from sim.metrics import EpisodeRecord
from sim.sensors import SensorRig, default_rig
from sim.spec import ScenarioSpec

__all__ = ["ALWAYS_AVAILABLE", "EpisodeResult", "batch_rollout", "observe", "planner_init", "run_planner_episode"]

log = logging.getLogger(__name__)

#: kinds every episode can offer whatever the configuration (own odometry; privileged boxes for
#: the reference planners, as the batch runner does)
ALWAYS_AVAILABLE = ("ego", "objects")


@dataclass
class EpisodeResult:
    """One episode: ``status`` ``ok`` / ``error`` (``error`` holds the one-line reason), the metrics
    record (None when the episode failed before a second step), the applied controls (T, 2)
    [accel m/s², steer rad], the recorded observations when asked, and how it ended."""

    status: str
    error: str
    record: EpisodeRecord | None
    actions: NDArray[np.float64]
    observations: list[dict[str, Any]] = field(default_factory=list)
    termination: str = ""
    steps: int = 0


# --------------------------------------------------------------------------------- observations
class _Observer:
    """Builds the observation kinds of one episode (caches renderers / rasterisers)."""

    def __init__(self, compiled: Any, rig: SensorRig, renderer: Any = None) -> None:
        self.compiled = compiled
        self.rig = rig
        self.renderer = renderer
        self._cache: dict[str, Any] = {}

    def __call__(self, kinds: Sequence[str], state: Any) -> dict[str, Any]:
        from agents.planners.common import ego_observation, objects_observation

        world = state.world(0)
        obs: dict[str, Any] = {}
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
                frames = [self.renderer.render(world, self.rig)]
            return kobj.compute(state, frames)[0]
        if kind == "lidar":
            from agents.perception import simulate_lidar

            if self.rig.lidar is None:
                raise EpisodeStateError("the lidar observation needs a rig with a LiDAR", field="observation")
            return simulate_lidar(world, self.rig.lidar)
        raise EpisodeStateError(
            f"observation kind {kind!r} needs rendered sensors: pass a render backend", field="observation"
        )


def observe(kinds: Sequence[str], state: Any, *, rig: SensorRig | None = None) -> dict[str, Any]:
    """The observation dict with exactly ``kinds`` for world 0 of an engine state."""
    return _Observer(state.compiled, rig or default_rig())(kinds, state)


# ------------------------------------------------------------------------------------ episode
def planner_init(compiled: Any, spec: ScenarioSpec, planner: Planner, rig: SensorRig | None = None) -> PlannerInit:
    """The :class:`PlannerInit` of an episode (expert and scenario only for oracle planners)."""
    from sim.batch import _expert
    from sim.scenario import Episode

    ep = Episode(episode_id="x", scenario=spec.name, seed=0, spec=spec)
    expert, _ = _expert(compiled, ep)
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
    if isinstance(out, Control):
        if not out.is_finite():
            raise EpisodeStateError(f"planner {name!r} returned a non-finite control {out}")
        return np.array([out.accel, out.steer], np.float64)
    if isinstance(out, Trajectory):
        if not out.is_finite():
            raise EpisodeStateError(f"planner {name!r} returned a non-finite trajectory")
        from sim.batch import _pure_pursuit

        return np.asarray(_pure_pursuit(out, state, wheelbase), np.float64)
    raise EpisodeStateError(f"planner {name!r} returned {type(out).__name__}, expected a Trajectory or a Control")


def run_planner_episode(
    spec: ScenarioSpec,
    planner: Planner | str,
    seed: int = 0,
    *,
    params: Mapping[str, Any] | None = None,
    observation: Sequence[str] | None = None,
    rig: SensorRig | None = None,
    compiled: Any = None,
    renderer: Any = None,
    record_observations: bool = False,
    extra_kinds: Sequence[str] = (),
    expert: Planner | None = None,
    max_steps: int | None = None,
    raise_errors: bool = False,
) -> EpisodeResult:
    """Drive ``spec`` with ``planner`` (instance or registry name + ``params``) from a
    ``np.random.Generator`` seeded with ``seed``.

    Args:
        observation: the configured observation kinds (default: whatever the planner asks for);
            :data:`ALWAYS_AVAILABLE` kinds are added. A planner asking for more gets a
            ``ScenarioError`` naming what is missing (raised, not an error episode: it is a setup
            mistake).
        rig: the sensor rig (default :func:`sim.sensors.default_rig`).
        compiled: a ``sim.engine.Compiled`` of ``spec`` to reuse (faster for many seeds).
        renderer: a render backend for the ``camera``/``lidar`` kinds (see the module docs).
        record_observations: keep every step's observation in the result.
        extra_kinds: more kinds to record (not shown to the planner), e.g. ``bev`` for behaviour
            cloning from an expert that plans on ``objects``.
        expert: a second planner queried on the same states (not executed); its controls are
            recorded in ``result.observations[i]["expert_action"]`` (DAgger-style relabelling).
        max_steps: stop earlier than the horizon.
        raise_errors: re-raise planner failures instead of returning an error episode.
    """
    from sim import engine
    from sim.batch import _expert, _record
    from sim.scenario import Episode

    pl = make_planner(planner, **dict(params or {})) if isinstance(planner, str) else planner
    name = getattr(pl, "name", type(pl).__name__)
    rig = rig or default_rig()
    if compiled is None:
        from sim.batch import _load_scene  # the batch runner's per-process scene cache

        compiled = engine.compile_scenario(spec, _load_scene(engine, Episode(episode_id="x", scenario=spec.name, seed=seed, spec=spec)))
    c = compiled
    ospec = pl.observation_spec()
    offered = tuple(dict.fromkeys([*(observation if observation is not None else ospec.kinds), *ALWAYS_AVAILABLE]))
    check_observation_spec(ospec, offered, [cam.name for cam in rig.cameras], planner=name)
    extra = tuple(k for k in extra_kinds if k not in ospec.kinds)
    if extra:
        check_observation_spec(type(ospec)(kinds=extra), offered, planner=f"{name} (recorded kinds)")
    observer = _Observer(c, rig, renderer)
    rng = np.random.default_rng(seed)
    state = engine.reset(c, rng)
    ep = Episode(episode_id="x", scenario=spec.name, seed=seed, spec=spec)
    _, reference = _expert(c, ep)
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


def batch_rollout(ep: Any, planner: str, params: Mapping[str, Any]) -> EpisodeRecord:
    """A ``sim.batch.run_episode`` ``rollout_fn``: one batch episode through
    :func:`run_planner_episode` (so every observation kind this package knows is available);
    raises on a failing planner so the batch records an ``error`` row."""
    res = run_planner_episode(
        ep.spec, planner, ep.seed, params=params, observation=tuple(ep.observation), raise_errors=True
    )
    if res.record is None:  # pragma: no cover - raise_errors covers failures
        raise EpisodeStateError("the episode ended before its second step")
    return res.record


def _finite(x: float) -> bool:
    return math.isfinite(x)
