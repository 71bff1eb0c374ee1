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

from agents.base import PLANNERS, Control, Observation, ObservationSpec, Planner, PlannerInit
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

__all__ = ["IdmPlanner", "idm_params"]


def idm_params(params: dict[str, Any]) -> IdmParams:
    """:class:`IdmParams` with the fields given in ``params`` replaced (others ignored)."""
    names = {f.name for f in dataclasses.fields(IdmParams)}
    return IdmParams(**{k: v for k, v in params.items() if k in names})


class IdmPlanner(Planner):
    """Route following + IDM. Params: any :class:`IdmParams` field, ``speed_frac`` (1.0 = drive at
    the limit)."""

    name = "idm"
    kinds: tuple[str, ...] = ("ego", "objects")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.idm = idm_params(params)
        self.speed_frac = float(params.get("speed_frac", 1.0))
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


PLANNERS.register(IdmPlanner.name, IdmPlanner)
