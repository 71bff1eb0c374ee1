"""Sensor render backends (``mesh``, ``neural``, ``composite``) behind one interface."""

# Built-in backends register themselves on import. ``mesh`` imports pyrender (and picks the headless
# GL platform) only when it first renders, so this stays cheap.
from sim.render import mesh as _mesh  # noqa: F401  (registers "mesh")
from sim.render.base import RENDERERS, CameraImage, LidarScan, RenderBackend, SensorFrame, WorldLike

__all__ = ["RENDERERS", "CameraImage", "LidarScan", "RenderBackend", "SensorFrame", "WorldLike"]
