"""The reference planners' observation kinds, registered in ``sim.observations.OBSERVATIONS`` (an
additive registration, so the Gymnasium env can offer them too):

* ``ego`` -- :class:`EgoObservation`: float64 (6,) ``[x, y, yaw, speed, accel, steer]``, the ego's
  own odometry/localisation in the world frame (m, rad, m/s, m/s², rad); not privileged.
* ``objects`` -- :class:`ObjectsObservation`: float64 (M, 8) rows ``[valid, x, y, yaw, speed,
  length, width, class code]`` of the other actors (world frame, SI; class codes
  :data:`agents.planners.common.CLASS_CODES`), M = the scenario's actor slots; privileged ground
  truth. :func:`agents.planners.common.actors_from_obs` reads this array or the dict of
  :func:`agents.planners.common.objects_observation`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from numpy.typing import NDArray

from agents.planners.common import CLASS_CODES
from sim.observations import OBSERVATIONS, ObservationKind

__all__ = ["EgoObservation", "ObjectsObservation"]

_BOUND = 1.0e6


class EgoObservation(ObservationKind):
    """The ego's pose, speed, last acceleration and steering (see the module docstring)."""

    name = "ego"

    def space(self) -> spaces.Box:
        return spaces.Box(-_BOUND, _BOUND, (6,), np.float64)

    def compute(self, state: Any, frames: Any = None) -> NDArray[np.float64]:
        return np.stack([state.x[:, 0], state.y[:, 0], state.yaw[:, 0], state.v[:, 0], state.accel[:, 0], state.steer], axis=-1)


class ObjectsObservation(ObservationKind):
    """Ground-truth boxes of the other actors (see the module docstring)."""

    name = "objects"

    def space(self) -> spaces.Box:
        return spaces.Box(-_BOUND, _BOUND, (self.compiled.num_slots - 1, 8), np.float64)

    def compute(self, state: Any, frames: Any = None) -> NDArray[np.float64]:
        c = self.compiled
        B, N = state.x.shape
        codes = np.array([CLASS_CODES.get(k, CLASS_CODES["other"]) for k in c.cls[1:]], np.float64)
        valid = state.valid[:, 1:].astype(np.float64)
        cols = [
            valid, state.x[:, 1:], state.y[:, 1:], state.yaw[:, 1:], state.v[:, 1:],
            np.broadcast_to(c.length[1:], (B, N - 1)), np.broadcast_to(c.width[1:], (B, N - 1)),
            np.broadcast_to(codes, (B, N - 1)),
        ]  # fmt: skip
        return np.stack(cols, axis=-1) * valid[..., None]


for _k in (EgoObservation, ObjectsObservation):
    if _k.name not in OBSERVATIONS:
        OBSERVATIONS.register(_k.name, _k)
