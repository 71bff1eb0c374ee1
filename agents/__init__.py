"""loopdrive planners: the :class:`~agents.base.Planner` interface and reference planners."""

from agents.base import (
    PLANNERS,
    Control,
    ObservationSpec,
    Planner,
    PlannerInit,
    PlannerOutput,
    Trajectory,
    check_observation_spec,
    make_planner,
)

__all__ = [
    "PLANNERS",
    "Control",
    "ObservationSpec",
    "Planner",
    "PlannerInit",
    "PlannerOutput",
    "Trajectory",
    "check_observation_spec",
    "make_planner",
]
