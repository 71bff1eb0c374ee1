"""The planning interface (layer 3 of ``docs/architecture.md``): what a planner is, what it is
given and returns, how it is found by name, and how learned planners are trained.

* :class:`Planner`, :class:`ObservationSpec`, :class:`PlannerInit`, :class:`Trajectory`,
  :class:`Control` (:mod:`sim.planning.interface`); the parameter schema :class:`PlannerParams`
  (:mod:`sim.planning.params`);
* :data:`PLANNERS` and :func:`make_planner` (:mod:`sim.planning.registry`), resolved through the
  ``loopdrive.planners`` entry-point group: the reference planners in ``agents`` register there
  like any plug-in, so ``sim`` never imports ``agents``;
* the observation builders ``ego`` and ``objects`` (:mod:`sim.planning.observe`);
* :data:`TRAINERS`, the imitation and RL trainer interfaces (:mod:`sim.planning.training`).
"""

from sim.planning.interface import (
    Control,
    Observation,
    ObservationSpec,
    Planner,
    PlannerInit,
    PlannerOutput,
    Trajectory,
    check_observation_spec,
)
from sim.planning.params import Bool, Float, Int, NoParams, PlannerParams
from sim.planning.registry import PLANNERS, make_planner, planner_class, with_opt_ins, with_opt_ins_episodes

__all__ = [
    "PLANNERS",
    "Bool",
    "Control",
    "Float",
    "Int",
    "NoParams",
    "Observation",
    "ObservationSpec",
    "Planner",
    "PlannerInit",
    "PlannerOutput",
    "PlannerParams",
    "Trajectory",
    "check_observation_spec",
    "make_planner",
    "planner_class",
    "with_opt_ins",
    "with_opt_ins_episodes",
]
