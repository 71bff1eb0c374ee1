"""The render-backend contract: ``render(world, rig) -> SensorFrame``.

A backend turns the current world (ego + actor boxes at their *simulated* poses) into sensor data
for a rig. Backends are registered by name in :data:`RENDERERS` (``mesh``, ``neural``,
``composite``) and constructed with the scene they render (a drive log or a scene bundle).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np
from numpy.typing import NDArray

from sim.registry import Registry
from sim.sensors import SensorRig

__all__ = ["RENDERERS", "ArrayWorld", "CameraImage", "LidarScan", "RenderBackend", "SensorFrame", "WorldLike"]


class WorldLike(Protocol):
    """What a renderer reads of a world: row 0 is the ego (``ids[0] == "ego"``).

    Arrays have one entry per actor slot; ``valid`` masks the slots that exist. Poses are world
    frame: (x, y) box centre on the ground, z the box bottom, yaw radians; sizes in metres.
    ``cls`` holds class names (see :data:`sim.log.ACTOR_CLASSES`).
    """

    t_us: int
    ids: tuple[str, ...]
    cls: tuple[str, ...]
    x: NDArray[np.float64]
    y: NDArray[np.float64]
    z: NDArray[np.float64]
    yaw: NDArray[np.float64]
    length: NDArray[np.float64]
    width: NDArray[np.float64]
    height: NDArray[np.float64]
    valid: NDArray[np.bool_]



@dataclass(frozen=True)
class ArrayWorld:
    """A concrete :class:`WorldLike` from arrays (row 0 the ego, never drawn): world snapshots built
    outside the engine (synthetic scenes, exported episodes, the render server, benchmarks, tests).
    Poses are world frame: (x, y) box centre on the ground, z the box bottom (m), yaw (rad)."""

    t_us: int
    ids: tuple[str, ...]
    cls: tuple[str, ...]
    x: NDArray[np.float64]
    y: NDArray[np.float64]
    z: NDArray[np.float64]
    yaw: NDArray[np.float64]
    length: NDArray[np.float64]
    width: NDArray[np.float64]
    height: NDArray[np.float64]
    valid: NDArray[np.bool_]

    @staticmethod
    def of(world: WorldLike) -> ArrayWorld:
        """A copy of any world (arrays copied, so they can be edited)."""
        return ArrayWorld(int(world.t_us), tuple(world.ids), tuple(world.cls), *(np.array(getattr(world, k), dtype=np.float64) for k in
                          ("x", "y", "z", "yaw", "length", "width", "height")), np.array(world.valid, dtype=bool))

    def with_row(self, actor_id: str, cls: str, pose: tuple[float, float, float, float], size: tuple[float, float, float]) -> ArrayWorld:
        """A copy with one more (valid) actor row: pose (x, y, z bottom, yaw), size (l, w, h)."""
        def cat(a: NDArray[np.float64], v: float) -> NDArray[np.float64]:
            return np.concatenate([a, [v]])

        return ArrayWorld(self.t_us, (*self.ids, actor_id), (*self.cls, cls), cat(self.x, pose[0]), cat(self.y, pose[1]), cat(self.z, pose[2]),
                          cat(self.yaw, pose[3]), cat(self.length, size[0]), cat(self.width, size[1]), cat(self.height, size[2]),
                          np.concatenate([self.valid, [True]]))

@dataclass(frozen=True)
class CameraImage:
    """One rendered camera.

    Attributes:
        rgb: (H, W, 3) uint8.
        depth: (H, W) float32 z-depth along the optical axis in metres; ``inf`` where nothing was hit
            (sky).
        c2w: 4x4 camera-to-world with OpenGL camera axes.
        K: 3x3 intrinsics.
    """

    rgb: NDArray[np.uint8]
    depth: NDArray[np.float32]
    c2w: NDArray[np.float64]
    K: NDArray[np.float64]


@dataclass(frozen=True)
class LidarScan:
    """One LiDAR sweep.

    Attributes:
        points: (N, 3) float32 returns in the **sensor** frame (x forward, y left, z up), metres.
        intensity: (N,) float32 in [0, 1].
        sensor_to_world: 4x4 pose of the sensor.
        ray_index: (N,) int32 flat index ``beam * azimuth_steps + column`` of each return, so
            dropped rays are the indices absent from it.
        actor_id: (N,) int32 world slot of the actor hit, -1 for the static scene (ground truth
            labels; a neural backend fills its best estimate).
    """

    points: NDArray[np.float32]
    intensity: NDArray[np.float32]
    sensor_to_world: NDArray[np.float64]
    ray_index: NDArray[np.int32]
    actor_id: NDArray[np.int32]

    def world_points(self) -> NDArray[np.float64]:
        """(N, 3) returns in the world frame."""
        m = self.sensor_to_world
        return self.points.astype(np.float64) @ m[:3, :3].T + m[:3, 3]


@dataclass(frozen=True)
class SensorFrame:
    """Everything a rig sees at one instant."""

    t_us: int
    cameras: dict[str, CameraImage] = field(default_factory=dict)
    lidar: LidarScan | None = None


class RenderBackend(ABC):
    """A sensor model. Subclasses set ``name`` and are registered in :data:`RENDERERS`.

    Implementations cache everything pose-independent at construction and must not keep
    per-episode state: the same world renders the same frame, whatever was rendered before.
    """

    name: ClassVar[str]

    @abstractmethod
    def render(self, world: WorldLike, rig: SensorRig) -> SensorFrame:
        """Render every camera and the LiDAR of ``rig`` mounted on the ego (row 0 of ``world``)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release GPU/GL resources (optional)."""


#: name -> factory ``(scene, **options) -> RenderBackend``; third parties use the
#: ``loopdrive.renderers`` entry-point group.
RENDERERS: Registry[type[RenderBackend]] = Registry("renderer", "loopdrive.renderers")
