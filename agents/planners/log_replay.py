"""``log_replay``: the oracle that drives the logged ego trajectory (``PlannerInit.expert``).

It tracks the log with the same pure pursuit used by the other reference planners (steering toward
the logged path a look-ahead ahead) and a feed-forward + PD speed law on the logged arc length at the
current episode time, so it reproduces the log closely whenever the log is dynamically feasible.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import Field

from agents.planners.common import ego_from_obs
from sim.controller import SCALAR_MATH, pure_pursuit_steer, pursuit_offset
from sim.dynamics import KinematicBicycle
from sim.errors import ScenarioError
from sim.map import Polyline
from sim.planning import (
    Control,
    Float,
    Observation,
    ObservationSpec,
    Planner,
    PlannerInit,
    PlannerParams,
)

__all__ = ["LogReplayParams", "LogReplayPlanner"]


class LogReplayParams(PlannerParams):
    """Parameters of ``log_replay`` (s, 1/s², 1/s, m, m/s³)."""

    lookahead_s: Float = Field(0.8, ge=0.0, le=10.0, description="pure-pursuit look-ahead time (minimum 4 m), s")
    k_pos: Float = Field(0.6, ge=0.0, description="gain on the arc-length error, 1/s²")
    k_vel: Float = Field(1.2, ge=0.0, description="gain on the speed error, 1/s")
    wheelbase: Float = Field(2.8, gt=0.0, le=20.0, description="wheelbase of the tracked bicycle, m")
    jerk_max: Float = Field(3.5, gt=0.0, description="largest change of acceleration, m/s³")


class LogReplayPlanner(Planner):
    """Follow the logged ego trajectory. Params: ``lookahead_s`` (0.8 s, minimum 4 m),
    ``k_pos`` (0.6 1/s² on arc-length error), ``k_vel`` (1.2 1/s on speed error), ``wheelbase``
    (2.8 m, the engine's bicycle), ``jerk_max`` (3.5 m/s³)."""

    name = "log_replay"
    requires_scenario = True
    Params = LogReplayParams

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        cfg: LogReplayParams = self.config  # type: ignore[assignment]
        self.lookahead_s = cfg.lookahead_s
        self.k_pos = cfg.k_pos
        self.k_vel = cfg.k_vel
        self.wheelbase = cfg.wheelbase
        self.jerk_max = cfg.jerk_max
        self._poly: Polyline | None = None

    def observation_spec(self) -> ObservationSpec:
        return ObservationSpec(kinds=("ego",))

    def reset(self, init: PlannerInit, *, seed: int | None = None) -> None:
        if init.expert is None or len(init.expert) < 2:
            raise ScenarioError("log_replay needs the logged ego trajectory (PlannerInit.expert)", field="planner")
        e = np.asarray(init.expert, np.float64)
        self._t = e[:, 0] - e[0, 0]
        self._poly = Polyline(e[:, 1:3])
        # arc length of each logged sample (projected; robust to repeated points at standstill)
        s, _ = self._poly.project(e[:, 1:3])
        self._s = np.maximum.accumulate(np.asarray(s, np.float64))
        self._v = e[:, 4]
        self._dt = float(init.dt_s)
        self._k = 0

    def plan(self, obs: Observation) -> Control:
        assert self._poly is not None, "reset() first"
        ego = ego_from_obs(obs)
        t = self._k * self._dt
        self._k += 1
        s_now, _ = self._poly.project(ego.xy)
        s_ref = float(np.interp(t + self._dt, self._t, self._s))
        v_ref = float(np.interp(t + self._dt, self._t, self._v))
        a_ff = (float(np.interp(t + 2 * self._dt, self._t, self._v)) - float(np.interp(t, self._t, self._v))) / (2 * self._dt)
        accel = a_ff + self.k_pos * (s_ref - float(s_now)) + self.k_vel * (v_ref - ego.speed)
        lr = pursuit_offset(KinematicBicycle(wheelbase=self.wheelbase))
        rear = ego.xy - lr * np.array([math.cos(ego.yaw), math.sin(ego.yaw)])
        s_r, _ = self._poly.project(rear)
        ld = max(4.0, self.lookahead_s * max(ego.speed, v_ref))
        tgt, _ = self._poly.interpolate(float(s_r) + ld)
        d = tgt - rear
        steer = pure_pursuit_steer(d[0], d[1], ego.yaw, self.wheelbase, fn=SCALAR_MATH)
        if v_ref < 0.05 and ego.speed < 0.3:
            accel = min(accel, -1.0)
        if accel > -4.0:  # comfort: bounded jerk unless braking hard
            accel = float(np.clip(accel, ego.accel - self.jerk_max * self._dt, ego.accel + self.jerk_max * self._dt))
        return Control(float(accel), float(steer))

