"""``lidar_stack``: a sensor-only stack. It reads only the LiDAR sweep (``lidar``) and its own
odometry (``ego``) plus the map and route from :class:`~agents.base.PlannerInit` -- never the other
actors' ground truth. Perception (:class:`agents.perception.LidarPerception`: ground removal,
DBSCAN clustering, oriented boxes, alpha-beta tracking with constant-velocity prediction) feeds the
same planning as the privileged planners: ``mode="idm"`` (default, lane following + IDM) or
``mode="pdm"`` (PDM-Closed proposals scored with the metric registry on the *perceived* boxes).
"""

from __future__ import annotations

from typing import Any

from agents.base import PLANNERS, Control, Observation, ObservationSpec, Planner, PlannerInit
from agents.planners.common import ActorsView, EgoView
from agents.planners.idm import IdmPlanner
from agents.planners.pdm_closed import PdmClosedPlanner
from sim.sensors import default_rig

__all__ = ["LidarStackPlanner"]


class LidarStackPlanner(Planner):
    """Sensor-only planner. Params: ``mode`` (``idm`` | ``pdm``), ``eps`` (1.0 m DBSCAN radius),
    ``min_samples`` (3), ``road_margin_m`` (0.5 m), ``max_range_m`` (60 m), and the inner planner's
    parameters."""

    name = "lidar_stack"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.mode = str(params.get("mode", "idm"))
        if self.mode not in ("idm", "pdm"):
            from sim.errors import ScenarioError

            raise ScenarioError(f"expected mode 'idm' or 'pdm', got {self.mode!r}", field="planner.params.mode")
        inner_params = {k: v for k, v in params.items() if k not in ("mode", "eps", "min_samples", "road_margin_m", "max_range_m")}
        self.inner: IdmPlanner | PdmClosedPlanner = IdmPlanner(**inner_params) if self.mode == "idm" else PdmClosedPlanner(**inner_params)
        self.inner.actors = self._perceived  # type: ignore[method-assign]
        self.perception: Any = None
        #: the obstacles perceived at the last step (for inspection / tests)
        self.last_actors: ActorsView = ActorsView.empty()

    def observation_spec(self) -> ObservationSpec:
        return ObservationSpec(kinds=("ego", "lidar"))

    def reset(self, init: PlannerInit, *, seed: int | None = None) -> None:
        from agents.perception import (  # (agents.perception imports this package)
            LidarPerception,
            MultiObjectTracker,
        )

        rig = init.rig if init.rig is not None and init.rig.lidar is not None else default_rig()
        assert rig.lidar is not None
        p = self.params
        self.perception = LidarPerception(
            rig.lidar, init.lane_map, dt_s=init.dt_s, road_margin_m=float(p.get("road_margin_m", 0.5)),
            max_range_m=float(p.get("max_range_m", 60.0)), eps=float(p.get("eps", 1.0)),
            min_samples=int(p.get("min_samples", 3)), tracker=MultiObjectTracker(),
        )  # fmt: skip
        self.inner.reset(init, seed=seed)

    def _perceived(self, obs: Observation, ego: EgoView) -> ActorsView:
        assert self.perception is not None
        self.last_actors = self.perception(obs["lidar"], ego.xy, ego.yaw)
        return self.last_actors

    def plan(self, obs: Observation) -> Control:
        return self.inner.plan(obs)


PLANNERS.register(LidarStackPlanner.name, LidarStackPlanner)
