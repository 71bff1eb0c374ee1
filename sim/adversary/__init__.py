"""Corner-case generation: search spaces over scenario edits (:mod:`sim.adversary.space`) and the
search that finds solvable failures of a planner (:mod:`sim.adversary.search`)."""

from sim.adversary.search import (
    FAILURES,
    AttackConfig,
    AttackResult,
    Candidate,
    attack,
    evaluate_scenario_data,
    read_provenance,
    rerun_file,
    sample_cases,
)
from sim.adversary.space import TEMPLATES, Param, Template, choose_template

__all__ = [
    "FAILURES",
    "TEMPLATES",
    "AttackConfig",
    "AttackResult",
    "Candidate",
    "Param",
    "Template",
    "attack",
    "choose_template",
    "evaluate_scenario_data",
    "read_provenance",
    "rerun_file",
    "sample_cases",
]
