"""The reference planners, registered through the ``loopdrive.planners`` entry-point group
(``pyproject.toml``; :data:`sim.planning.PLANNERS` finds them by name):

* ``log_replay`` -- oracle: drives the logged ego trajectory;
* ``idm`` -- route following + IDM on privileged state;
* ``pdm_closed`` -- PDM-Closed: proposals forecast and scored with the metric registry;
* ``lidar_stack`` -- sensor-only: LiDAR perception + tracking + IDM/PDM planning;
* ``bc_policy`` -- behaviour cloning from the BEV raster (``agents.bc``);
* ``sb3`` -- a stable-baselines3 policy saved as safetensors + JSON (``agents.sb3_planner``).
"""

from __future__ import annotations

from agents.planners.idm import IdmPlanner
from agents.planners.lidar_stack import LidarStackPlanner
from agents.planners.log_replay import LogReplayPlanner
from agents.planners.pdm_closed import PdmClosedPlanner

__all__ = ["IdmPlanner", "LidarStackPlanner", "LogReplayPlanner", "PdmClosedPlanner"]
