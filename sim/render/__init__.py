"""Sensor render backends (``mesh``, ``neural``, ``composite``) behind one interface."""

from sim.render.base import RENDERERS, CameraImage, LidarScan, RenderBackend, SensorFrame, WorldLike

__all__ = ["RENDERERS", "CameraImage", "LidarScan", "RenderBackend", "SensorFrame", "WorldLike"]
