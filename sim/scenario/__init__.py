"""Scenario files: the pydantic schema of the scenario YAML, validation with line numbers, sweeps.

A scenario file (``version: 1``) describes one closed-loop episode family::

    version: 1
    name: lead_brake
    description: The lead car brakes hard in front of the ego.
    scene: {town: small, seed: 0}              # or {log: logs/town01, bundle: ..., renderer: neural}
    ego: {start: {t_s: 0.0, lane: L3, s: 10.0, speed: 10.0}, route: [L3, L7]}
    actors:
      - {op: insert, id: lead, class: car, size: [4.6, 1.9, 1.5],
         spawn: {lane: L3, s: 35.0, speed: 10.0}, behavior: {type: idm, v0: 12.0}}
      - {op: remove, id: "172"}
      - {op: reroute, id: "88", route: [L13, L12]}
    planner: {name: idm, params: {}}
    observation: [state]
    horizon_s: 20.0
    dt_s: 0.1
    metrics: [at_fault_collision, drivable_area, progress, ttc, comfort]
    seeds: [0, 1, 2]
    sweep: {actors.0.spawn.speed: [8, 12, 16]}

Units: metres, seconds, m/s, radians; poses are (x, y, yaw) in the world frame (z up).

The YAML is read with ruamel.yaml's round-trip parser (which never constructs Python objects from
tags; tagged values are rejected) so every problem can be reported as
``FILE:LINE: field.path: what was expected``. :func:`validate_file` collects all problems of a
file (schema and semantic: unknown lanes/actors/planners/metrics/behaviours, disconnected routes,
overlapping spawns, ``dt_s`` not dividing ``horizon_s``); :func:`load_scenario` raises the first
one as a :class:`~sim.errors.ScenarioError`; :func:`expand` turns a file into its episodes
(seeds x sweep points). A file that asks for more work than the documented limits
(:mod:`sim.scenario_limits`: steps, sweep grid, episodes, actors, coordinates, size) is refused
before any scene is built.

The package splits along the seams of the file format: :mod:`~sim.scenario.schema` (the pydantic
models), :mod:`~sim.scenario.yaml_doc` (YAML with line numbers, field paths),
:mod:`~sim.scenario.context` (scene context, library actors, model -> spec),
:mod:`~sim.scenario.semantic` (checks against registries and the map) and
:mod:`~sim.scenario.episodes` (validation, loading, sweeps, episodes).
"""

from __future__ import annotations

# names used elsewhere (private helpers too) stay importable from sim.scenario
from sim.scenario.context import SceneContext, _resolve_log, library_root, scene_context, scene_for  # noqa: F401
from sim.scenario.episodes import (  # noqa: F401
    Episode,
    expand,
    expand_paths,
    expand_with_seeds,
    load_scenario,
    scenario_files,
    spec_from_plain,
    spec_to_plain,
    to_builtin,
    validate_file,
    validate_paths,
)
from sim.scenario.schema import DEFAULT_SIZES, EGO_SIZE, SCHEMA_VERSION, ScenarioModel, json_schema  # noqa: F401
from sim.scenario.yaml_doc import _set_path, _split_path, read_yaml, sweep_points  # noqa: F401

__all__ = [
    "SCHEMA_VERSION",
    "Episode",
    "ScenarioModel",
    "SceneContext",
    "expand",
    "expand_paths",
    "expand_with_seeds",
    "json_schema",
    "library_root",
    "load_scenario",
    "read_yaml",
    "scenario_files",
    "scene_context",
    "scene_for",
    "validate_file",
    "validate_paths",
]
