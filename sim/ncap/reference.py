"""The "no action" reference of NeuroNCAP's score, run in loopdrive's own engine.

NeuroNCAP scores an impact against the impact speed "that would have happened if no actions were
taken" (its reference keeps the logged ego motion, without the planner). Here the reference is a
closed-loop run of the same scenario file with the ego driven by :class:`NoActionEgo`: it holds its
start speed (``accel = 2/s x (v_start - v)``: no braking, no speeding up) and follows its route's
centreline (pure pursuit through :class:`sim.controller.TrajectoryController`, the tracker that
executes every planner's trajectories). Everything else -- the scene, the target, the logged
actors, the engine, its collision test -- is the permutation's. :func:`no_action_rollout` is the
batch runner's ``rollout_fn`` for those runs (``sim.batch.run_batch(..., rollout_fn=...)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from sim.errors import EpisodeStateError

__all__ = ["NO_ACTION", "NoActionEgo", "no_action_rollout"]

#: planner label of the reference runs (not a registered planner: it only exists here)
NO_ACTION = "no_action"
#: speed-holding gain, 1/s
SPEED_GAIN = 2.0
#: points of the followed path handed to the tracker, and their spacing in steps
PLAN_POINTS = 20


class NoActionEgo:
    """An ego that takes no action: constant start speed along the route centreline. It has the
    :class:`sim.planning.Planner` methods the episode driver calls (``observation_spec``,
    ``reset``, ``plan``) without being a registered planner."""

    name = NO_ACTION
    requires_scenario = False

    def __init__(self) -> None:
        self._path: Any = None
        self._v0: float | None = None

    def observation_spec(self) -> Any:
        from sim.planning import ObservationSpec

        return ObservationSpec(kinds=("ego",))

    def reset(self, init: Any, *, seed: int | None = None) -> None:
        from sim.controller import TrajectoryController
        from sim.metrics import progress_route

        self._path = init.lane_map.route_polyline(list(progress_route(init.lane_map, init.route)))
        self._dt = float(init.dt_s)
        wheelbase = max(1.5, 0.6 * float(init.ego_size[0]))  # the engine's bicycle (sim.engine.compile_scenario)
        self._ctl = TrajectoryController(wheelbase=wheelbase, dt=self._dt, ki=0.0)
        self._v0 = None

    def plan(self, obs: Mapping[str, Any]) -> Any:
        from sim.planning import Control

        if self._path is None:
            raise EpisodeStateError("NoActionEgo.plan before reset")
        x, y, yaw, v = (float(a) for a in np.asarray(obs["ego"], np.float64).reshape(-1)[:4])
        if self._v0 is None:
            self._v0 = v
        s, _ = self._path.project(np.array([x, y]))
        v_ref = max(self._v0, 0.5)
        pts, _ = self._path.interpolate(float(s) + v_ref * self._dt * np.arange(1, PLAN_POINTS + 1))
        c, sn = math.cos(yaw), math.sin(yaw)
        rel = pts - np.array([x, y])
        local = np.stack([c * rel[:, 0] + sn * rel[:, 1], -sn * rel[:, 0] + c * rel[:, 1]], axis=1)
        out, _ = self._ctl(local[None], np.array([v]), np.zeros(1), self._dt)
        return Control(float(SPEED_GAIN * (self._v0 - v)), float(out[0, 1]))


def no_action_rollout(ep: Any, planner: str, params: Mapping[str, Any]) -> Any:
    """The batch runner's rollout of a reference run: ``ep`` (a :class:`sim.scenario.Episode`)
    driven by :class:`NoActionEgo`; ``planner`` and ``params`` are ignored. Returns the episode's
    :class:`sim.metrics.EpisodeRecord`."""
    from sim import engine
    from sim.batch import drive_episode, episode_scene

    compiled = engine.compile_scenario(ep.spec, episode_scene(ep.scene_spec()))
    res = drive_episode(ep.spec, NoActionEgo(), ep.seed, observation=("ego",), compiled=compiled, raise_errors=True)
    if res.record is None:  # pragma: no cover - a reset world is never done
        raise EpisodeStateError("the reference episode ended before its second step")
    return res.record
