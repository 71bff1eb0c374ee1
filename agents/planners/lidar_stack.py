"""``lidar_stack``: a sensor-only stack. It reads only the LiDAR sweep (``lidar``) and its own
odometry (``ego``) plus the map and route from :class:`~sim.planning.PlannerInit` -- never the other
actors' ground truth. Perception (:class:`agents.perception.LidarPerception`: ground removal,
DBSCAN clustering, oriented boxes, alpha-beta tracking with constant-velocity prediction) feeds the
same planning as the privileged planners: ``mode="idm"`` (default, lane following + IDM) or
``mode="pdm"`` (PDM-Closed proposals scored with the metric registry on the *perceived* boxes).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from agents.planners.common import ActorsView, EgoView
from agents.planners.idm import IdmPlanner, IdmPlannerParams
from agents.planners.pdm_closed import PdmClosedParams, PdmClosedPlanner
from sim.planning import Control, Float, Int, Observation, ObservationSpec, Planner, PlannerInit
from sim.sensors import default_rig

__all__ = ["LidarStackParams", "LidarStackPlanner"]


class LidarStackParams(PdmClosedParams, IdmPlannerParams):
    """Parameters of ``lidar_stack``: perception (m) and the inner planner's (``idm`` or
    ``pdm_closed``; a parameter the chosen inner planner does not have is ignored)."""

    mode: Literal["idm", "pdm"] = Field("idm", description="inner planner: idm or pdm (pdm_closed)")
    eps: Float = Field(1.0, gt=0.0, le=20.0, description="DBSCAN radius, m")
    min_samples: Int = Field(3, ge=1, le=1000, description="DBSCAN minimum points per cluster")
    road_margin_m: Float = Field(0.5, ge=0.0, le=50.0, description="obstacles this far off the road count, m")
    max_range_m: Float = Field(60.0, gt=0.0, le=500.0, description="LiDAR points beyond this range are dropped, m")


class LidarStackPlanner(Planner):
    """Sensor-only planner. Params (:class:`LidarStackParams`): ``mode`` (``idm`` | ``pdm``),
    ``eps`` (1.0 m DBSCAN radius), ``min_samples`` (3), ``road_margin_m`` (0.5 m), ``max_range_m``
    (60 m), and the inner planner's parameters."""

    name = "lidar_stack"
    Params = LidarStackParams

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.mode = self.config.mode  # type: ignore[attr-defined]
        inner_cls = IdmPlanner if self.mode == "idm" else PdmClosedPlanner
        inner_params = {k: v for k, v in params.items() if k in inner_cls.Params.model_fields}
        self.inner: IdmPlanner | PdmClosedPlanner = inner_cls(**inner_params)
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
        p: LidarStackParams = self.config  # type: ignore[assignment]
        self.perception = LidarPerception(
            rig.lidar, init.lane_map, dt_s=init.dt_s, road_margin_m=p.road_margin_m,
            max_range_m=p.max_range_m, eps=p.eps, min_samples=p.min_samples, tracker=MultiObjectTracker(),
        )  # fmt: skip
        self.inner.reset(init, seed=seed)

    def _perceived(self, obs: Observation, ego: EgoView) -> ActorsView:
        assert self.perception is not None
        self.last_actors = self.perception(obs["lidar"], ego.xy, ego.yaw)
        return self.last_actors

    def plan(self, obs: Observation) -> Control:
        return self.inner.plan(obs)

