"""The observation builders of the planning interface that need no sensor model: the ego's own
odometry (``ego``) and the other actors' ground-truth boxes (``objects``), as the episode driver
hands them to a planner; and :func:`ego_features`, the ego part of a behaviour-cloning shard.

Frames and units: world frame (x, y metres, yaw radians, z up), speeds m/s, accelerations m/s².

* ``ego`` -- the ego's own odometry and localisation, *not* privileged: float64 vector
  ``[x, y, yaw, speed, accel, steer]`` (world frame; accel/steer are the last applied controls).
* ``objects`` -- privileged ground truth of the other actors: a dict of fixed-shape arrays with a
  ``valid`` mask (see :func:`objects_observation`); the env's registered ``objects`` kind
  (:class:`sim.observations.ObjectsObservation`) is the same content as one (M, 8) array.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["CLASS_CODES", "CODE_CLASSES", "ego_features", "ego_observation", "objects_observation"]

#: class name -> integer code used in the ``objects`` observation (0 = free slot)
CLASS_CODES: dict[str, int] = {
    "": 0, "car": 1, "truck": 2, "bus": 3, "cyclist": 4, "pedestrian": 5, "motorcycle": 6, "other": 7,
}  # fmt: skip
#: integer code -> class name
CODE_CLASSES: dict[int, str] = {v: k for k, v in CLASS_CODES.items()}


def ego_observation(x: float, y: float, yaw: float, speed: float, accel: float = 0.0, steer: float = 0.0) -> NDArray[np.float64]:
    """The ``ego`` observation vector ``[x, y, yaw, speed, accel, steer]`` (world frame, SI)."""
    return np.array([x, y, yaw, speed, accel, steer], dtype=np.float64)


def objects_observation(world: Any, max_actors: int | None = None) -> dict[str, Any]:
    """The privileged ``objects`` observation of a ``sim.world.WorldState``-like world (row 0 is
    the ego and is left out): fixed-shape arrays over ``max_actors`` slots (default: the world's
    capacity - 1) -- ``xy`` (M, 2), ``yaw``, ``speed``, ``length``, ``width`` (M,) float64,
    ``cls`` (M,) int64 class codes (:data:`CLASS_CODES`), ``valid`` (M,) bool, and ``ids`` (a tuple
    of M strings, "" for free slots). World frame, SI units."""
    n = len(world.ids) - 1
    m = n if max_actors is None else max_actors
    k = min(n, m)
    out: dict[str, Any] = {
        "xy": np.zeros((m, 2)), "yaw": np.zeros(m), "speed": np.zeros(m), "length": np.zeros(m),
        "width": np.zeros(m), "cls": np.zeros(m, np.int64), "valid": np.zeros(m, bool),
    }  # fmt: skip
    sl = slice(1, 1 + k)
    out["xy"][:k, 0] = np.asarray(world.x)[sl]
    out["xy"][:k, 1] = np.asarray(world.y)[sl]
    out["yaw"][:k] = np.asarray(world.yaw)[sl]
    out["speed"][:k] = np.asarray(world.speed)[sl]
    out["length"][:k] = np.asarray(world.length)[sl]
    out["width"][:k] = np.asarray(world.width)[sl]
    out["valid"][:k] = np.asarray(world.valid)[sl]
    out["cls"][:k] = [CLASS_CODES.get(c, CLASS_CODES["other"]) for c in world.cls[1 : 1 + k]]
    ids = list(world.ids[1 : 1 + k]) + [""] * (m - k)
    out["ids"] = tuple(i if v else "" for i, v in zip(ids, list(out["valid"]), strict=True))
    return out


def ego_features(ego_obs: Any) -> NDArray[np.float32]:
    """(3,) speed (m/s), accel (m/s²), steer (rad) from an ``ego`` observation vector
    ``[x, y, yaw, speed, accel, steer]``: the ``ego`` array of a behaviour-cloning shard."""
    e = np.asarray(ego_obs, np.float64).reshape(-1)
    return np.array([e[3], e[4], e[5]], np.float32)
