"""Run one closed-loop episode of a planner through the world engine (``sim.engine``).

:func:`run_planner_episode` is the planner-side name of the public episode API
:func:`sim.batch.drive_episode` (the batch runner's own sensor path): same engine calls, same
``PlannerInit``, same :class:`EpisodeRecord`, plus what training and tests need:

* it accepts a :class:`~sim.planning.Planner` *instance* (a spy, a learned policy) or a registry
  name (:data:`sim.planning.PLANNERS`);
* it checks the planner's :class:`~sim.planning.ObservationSpec` against the configured observation
  kinds and rig (:func:`sim.planning.check_observation_spec`) and passes the planner **only** the
  kinds it declared (:func:`observe`);
* it can record each step's observation and the applied control (behaviour-cloning data);
* a planner that raises, returns NaN or returns something else ends the episode with
  ``status = "error"`` (never an exception out of here unless ``raise_errors``).

Observation kinds: ``ego`` and ``objects`` (see :mod:`sim.planning.observe`) are always
available; every other kind comes from the ``sim.observations`` registry (same arrays as the env).
Kinds that need rendered sensors (``camera``, ``lidar``) use the ``renderer`` passed in (a
``sim.render.base.RenderBackend``, a backend name, or ``"scenario"`` for the scenario's
``scene.renderer``); without one, ``lidar`` falls back to the analytic box LiDAR of
:func:`sim.render.box_lidar.simulate_lidar` (actor boxes over a flat ground, same range-image layout,
no static scenery) and ``camera`` is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sim.batch import ALWAYS_AVAILABLE, EpisodeResult, SensorObserver, drive_episode, planner_init
from sim.errors import EpisodeStateError
from sim.metrics import EpisodeRecord
from sim.planning import Planner
from sim.sensors import SensorRig, default_rig
from sim.spec import ScenarioSpec

__all__ = ["ALWAYS_AVAILABLE", "EpisodeResult", "batch_rollout", "observe", "planner_init", "run_planner_episode"]

log = logging.getLogger(__name__)


def observe(kinds: Sequence[str], state: Any, *, rig: SensorRig | None = None) -> dict[str, Any]:
    """The observation dict with exactly ``kinds`` for world 0 of an engine state."""
    return SensorObserver(state.compiled, rig or default_rig())(kinds, state)


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
    ``np.random.Generator`` seeded with ``seed``: :func:`sim.batch.drive_episode` (see it for
    every argument; ``renderer`` None keeps the analytic LiDAR fallback, ``"scenario"`` renders
    with the scenario's ``scene.renderer``)."""
    return drive_episode(
        spec, planner, seed, renderer=renderer, rig=rig, params=params, observation=observation, compiled=compiled,
        record_observations=record_observations, extra_kinds=extra_kinds, expert=expert, max_steps=max_steps,
        raise_errors=raise_errors,
    )  # fmt: skip


def batch_rollout(ep: Any, planner: str, params: Mapping[str, Any]) -> EpisodeRecord:
    """A ``sim.batch.run_episode`` ``rollout_fn``: one batch episode through
    :func:`run_planner_episode` (so every observation kind this package knows is available;
    ``camera``/``lidar`` from the episode's ``scene.renderer``); raises on a failing planner so the
    batch records an ``error`` row."""
    res = run_planner_episode(
        ep.spec, planner, ep.seed, params=params, observation=tuple(ep.observation), raise_errors=True,
        renderer="scenario",
    )
    if res.record is None:  # pragma: no cover - raise_errors covers failures
        raise EpisodeStateError("the episode ended before its second step")
    return res.record
