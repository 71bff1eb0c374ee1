"""``idm``: lane following on the route centreline with IDM speed control on privileged state.

It reads the ego's odometry (``ego``) and the ground-truth boxes of the other actors (``objects``),
follows the route centreline with pure pursuit and sets its speed by IDM (Treiber et al., 2000)
behind the nearest actor inside its lane corridor (actors predicted at constant velocity), with the
desired speed the lane's speed limit (slower in curves). It never leaves its lane: behind a stopped
car it stops and waits.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from pydantic import Field

from agents.planners.common import (
    ActorsView,
    EgoView,
    IdmParams,
    RouteRef,
    actors_from_obs,
    ego_from_obs,
    forecast,
)
from sim.dynamics import KinematicBicycle
from sim.planning import (
    Bool,
    Control,
    Float,
    Observation,
    ObservationSpec,
    Planner,
    PlannerInit,
    PlannerParams,
)

__all__ = ["IdmFields", "IdmPlanner", "IdmPlannerParams", "idm_params"]


def idm_params(params: dict[str, Any]) -> IdmParams:
    """:class:`IdmParams` with the fields given in ``params`` replaced (others ignored)."""
    names = {f.name for f in dataclasses.fields(IdmParams)}
    return IdmParams(**{k: v for k, v in params.items() if k in names})


class IdmFields(PlannerParams):
    """The :class:`~agents.planners.common.IdmParams` fields as declared planner parameters
    (defaults from that dataclass; m, s, m/s², m/s³)."""

    a_max: Float = Field(IdmParams.a_max, gt=0.0, description="comfortable acceleration, m/s²")
    b_comf: Float = Field(IdmParams.b_comf, gt=0.0, description="comfortable deceleration, m/s²")
    s0: Float = Field(IdmParams.s0, ge=0.0, description="standstill gap, m")
    T: Float = Field(IdmParams.T, ge=0.0, description="time headway, s")
    delta: Float = Field(IdmParams.delta, gt=0.0, description="acceleration exponent")
    decel_max: Float = Field(IdmParams.decel_max, gt=0.0, description="strongest braking asked for, m/s²")
    lat_accel_max: Float = Field(IdmParams.lat_accel_max, gt=0.0, description="lateral acceleration in curves, m/s²")
    lookahead_min: Float = Field(IdmParams.lookahead_min, ge=0.0, description="minimum pure-pursuit look-ahead, m")
    lookahead_gain: Float = Field(IdmParams.lookahead_gain, ge=0.0, description="look-ahead per m/s of speed, s")
    corridor_margin: Float = Field(IdmParams.corridor_margin, ge=0.0, description="extra corridor half-width, m")
    ramp_s: Float = Field(IdmParams.ramp_s, ge=0.0, description="time to move to a new lateral offset, s")
    stop_at_route_end: Bool = Field(IdmParams.stop_at_route_end, description="stop at the end of the route")
    jerk_max: Float = Field(IdmParams.jerk_max, gt=0.0, description="largest change of acceleration, m/s³")
    emergency_decel: Float = Field(IdmParams.emergency_decel, gt=0.0, description="braking beyond which jerk is not limited, m/s²")

    def idm(self) -> IdmParams:
        """The :class:`IdmParams` these fields describe."""
        return IdmParams(**{f.name: getattr(self, f.name) for f in dataclasses.fields(IdmParams)})


class IdmPlannerParams(IdmFields):
    """Parameters of ``idm``: the IDM fields and ``speed_frac``."""

    speed_frac: Float = Field(1.0, ge=0.0, le=2.0, description="desired speed as a fraction of the limit")


class IdmPlanner(Planner):
    """Route following + IDM. Params (:class:`IdmPlannerParams`): any :class:`IdmParams` field,
    ``speed_frac`` (1.0 = drive at the limit)."""

    name = "idm"
    Params = IdmPlannerParams
    kinds: tuple[str, ...] = ("ego", "objects")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        cfg: IdmPlannerParams = self.config  # type: ignore[assignment]
        self.idm = cfg.idm()
        self.speed_frac = cfg.speed_frac
        self.bicycle = KinematicBicycle()
        self.route: RouteRef | None = None

    def observation_spec(self) -> ObservationSpec:
        return ObservationSpec(kinds=self.kinds)

    def reset(self, init: PlannerInit, *, seed: int | None = None) -> None:
        self.route = RouteRef(init.lane_map, init.route)
        self.dt_s = float(init.dt_s)
        self.ego_size = (float(init.ego_size[0]), float(init.ego_size[1]))

    def actors(self, obs: Observation, ego: EgoView) -> ActorsView:
        """The actors this planner believes in (ground truth here)."""
        return actors_from_obs(obs)

    def plan(self, obs: Observation) -> Control:
        assert self.route is not None, "reset() first"
        ego = ego_from_obs(obs)
        f = forecast(
            ego, self.route, self.actors(obs, ego), np.zeros(1), np.array([self.speed_frac]),
            steps=1, dt_s=self.dt_s, bicycle=self.bicycle, params=self.idm, ego_size=self.ego_size, d_start=0.0,
        )  # fmt: skip
        a, st = f.controls[0, 0]
        return Control(float(a), float(st))

