"""Observation kinds of the closed-loop env, each with a fixed-shape Gymnasium space.

Kinds are registered by name in :data:`OBSERVATIONS` (third parties: the ``loopdrive.observations``
entry-point group). Each kind is built once per env from an :class:`ObservationConfig` and the
compiled scenario and computes **batched** arrays (leading axis B = worlds) from a
:class:`sim.engine.SimState`:

``state`` (float32, flat vector; :func:`state_layout` gives the slices)
    * ego (10): speed m/s, acceleration m/s^2, steer rad, lateral offset from the route m (left +),
      sin and cos of the heading error to the route, speed limit m/s, route left m, time left s,
      route progress m;
    * route (``route_points`` x 2): the next route centreline points every ``route_spacing_m``
      metres, (x, y) in the ego frame (x forward, y left, m);
    * actors (``n_actors`` x 9): the nearest actors, each ``present`` (1/0 mask), x, y (ego frame,
      m), cos and sin of the relative heading, vx, vy (ego frame, m/s), length, width (m); absent
      rows are zeros.

``bev`` (uint8, ``bev_size`` x ``bev_size`` x 4): a bird's-eye raster centred on the ego, ego
    heading up, ``bev_res_m`` metres per pixel; channels: drivable area, route, other actors, ego
    (255 = present).

``camera`` (uint8, H x W x 3): the rig camera ``camera`` from the render backend.

``lidar`` (float32, beams x azimuth_steps x 2): a range image from the render backend, channel 0
    range in metres (0 = no return), channel 1 intensity in [0, 1]; row 0 is the highest beam,
    column 0 looks forward, azimuth counter-clockwise.

``ego`` (float64, 6): the ego's own odometry, ``[x, y, yaw, speed, accel, steer]`` (world frame).

``objects`` (float64, slots x 8): the other actors' ground-truth boxes, rows ``[valid, x, y, yaw,
    speed, length, width, class code]`` (world frame; privileged).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from gymnasium import spaces
from numpy.typing import NDArray

from sim.behavior import fclip
from sim.kernels import state_obs_nb
from sim.planning.observe import CLASS_CODES
from sim.registry import Registry
from sim.sensors import CameraSpec, LidarSpec, SensorRig

if TYPE_CHECKING:
    from sim.engine import Compiled, SimState
    from sim.render.base import SensorFrame

__all__ = [
    "OBSERVATIONS",
    "BevObservation",
    "CameraObservation",
    "EgoObservation",
    "LidarObservation",
    "ObjectsObservation",
    "ObservationConfig",
    "ObservationKind",
    "StateObservation",
    "bev_rgb",
    "state_layout",
]

EGO_FEATURES = 10
ACTOR_FEATURES = 9
STATE_BOUND = 1.0e4


@dataclass(frozen=True)
class ObservationConfig:
    """Sizes of the observation kinds (SI units).

    Attributes:
        n_actors: actor rows in ``state``.
        route_points, route_spacing_m: route samples in ``state``.
        bev_size: pixels per side of ``bev``; bev_res_m: metres per pixel.
        rig: the sensor rig for ``camera`` / ``lidar`` (default: one front camera 320x192 and a
            32 x 1024 LiDAR).
        camera: the rig camera used by ``camera``.
    """

    n_actors: int = 8
    route_points: int = 10
    route_spacing_m: float = 4.0
    bev_size: int = 64
    bev_res_m: float = 0.5
    rig: SensorRig = field(default_factory=lambda: SensorRig((CameraSpec(),), LidarSpec()))
    camera: str = "front"


def state_layout(cfg: ObservationConfig) -> dict[str, slice]:
    """Slices of the flat ``state`` vector: ``ego``, ``route`` and ``actors`` (reshape route to
    (route_points, 2) and actors to (n_actors, 9))."""
    r0 = EGO_FEATURES
    a0 = r0 + 2 * cfg.route_points
    return {"ego": slice(0, r0), "route": slice(r0, a0), "actors": slice(a0, a0 + ACTOR_FEATURES * cfg.n_actors)}


class ObservationKind(ABC):
    """One observation kind; ``needs_render`` kinds receive the rendered sensor frames."""

    name: ClassVar[str]
    needs_render: ClassVar[bool] = False

    def __init__(self, cfg: ObservationConfig, compiled: Compiled) -> None:
        self.cfg = cfg
        self.compiled = compiled

    @abstractmethod
    def space(self) -> spaces.Space[Any]:
        """The fixed-shape space of one world's observation."""

    @abstractmethod
    def compute(self, state: SimState, frames: list[SensorFrame] | None = None) -> NDArray[Any]:
        """Observations of all B worlds, shape (B, *space.shape)."""


class StateObservation(ObservationKind):
    """Ego + route + nearest actors, route-relative (see the module docstring)."""

    name = "state"

    def __init__(self, cfg: ObservationConfig, compiled: Compiled) -> None:
        super().__init__(cfg, compiled)
        self.size = EGO_FEATURES + 2 * cfg.route_points + ACTOR_FEATURES * cfg.n_actors
        self._route_ds = (np.arange(cfg.route_points) + 1.0) * cfg.route_spacing_m

    def space(self) -> spaces.Box:
        return spaces.Box(-STATE_BOUND, STATE_BOUND, (self.size,), np.float32)

    def compute(self, state: SimState, frames: list[SensorFrame] | None = None) -> NDArray[np.float32]:
        c = self.compiled
        paths = c.paths
        # the one implementation is the compiled kernel (sim.kernels.state_obs_nb)
        return state_obs_nb(
            paths.xy[0], paths.heading[0], paths.speed_limit[0], paths.ds, c.route_length, c.horizon_steps, c.dt_s, self._route_ds,
            state.x, state.y, state.yaw, state.v, state.accel, state.steer, state.ego_lat, state.step_index, state.s[:, 0], state.valid,
            c.length, c.width, self.cfg.n_actors, ACTOR_FEATURES, EGO_FEATURES, STATE_BOUND,
        )  # fmt: skip


def _route_raster(compiled: Compiled, res: float) -> tuple[NDArray[np.bool_], float, float]:
    """The ego route rasterised in the world frame at ``res`` m/px (with the drivable raster's origin)."""
    from PIL import Image, ImageDraw

    r = compiled.raster
    scale = r.res / res
    h, w = math.ceil(r.mask.shape[0] * scale), math.ceil(r.mask.shape[1] * scale)
    img = Image.new("L", (w, h), 0)
    dr = ImageDraw.Draw(img)
    n = max(2, math.ceil(compiled.route_length / compiled.paths.ds) + 1)
    pts = compiled.paths.xy[0, :n]
    dr.line([((px - r.x0) / res, (py - r.y0) / res) for px, py in pts], fill=255, width=max(1, round(1.5 / res)))
    m = np.asarray(img) > 0
    return m, r.x0, r.y0


class BevObservation(ObservationKind):
    """Bird's-eye raster around the ego (see the module docstring)."""

    name = "bev"

    def __init__(self, cfg: ObservationConfig, compiled: Compiled) -> None:
        super().__init__(cfg, compiled)
        n, res = cfg.bev_size, cfg.bev_res_m
        rows, cols = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        self._fwd = ((n / 2 - rows - 0.5) * res).ravel()  # ego x (up in the image)
        self._left = ((n / 2 - cols - 0.5) * res).ravel()  # ego y (left in the image)
        self._route, self._rx0, self._ry0 = _route_raster(compiled, res)
        self._res = res

    def space(self) -> spaces.Box:
        n = self.cfg.bev_size
        return spaces.Box(0, 255, (n, n, 4), np.uint8)

    def compute(self, state: SimState, frames: list[SensorFrame] | None = None) -> NDArray[np.uint8]:
        c = self.compiled
        B = state.x.shape[0]
        n = self.cfg.bev_size
        ex, ey, eyaw = state.x[:, 0:1], state.y[:, 0:1], state.yaw[:, 0:1]
        ce, se = np.cos(eyaw), np.sin(eyaw)
        wx = ex + ce * self._fwd - se * self._left  # (B, P)
        wy = ey + se * self._fwd + ce * self._left
        out = np.zeros((B, n * n, 4), dtype=np.uint8)
        out[..., 0] = c.raster.lookup(wx, wy) * 255
        rc = np.floor((wx - self._rx0) / self._res).astype(np.int64)
        rr = np.floor((wy - self._ry0) / self._res).astype(np.int64)
        h, w = self._route.shape
        inside = (rc >= 0) & (rc < w) & (rr >= 0) & (rr < h)
        out[..., 1] = (inside & self._route[fclip(rr, 0, h - 1), fclip(rc, 0, w - 1)]) * 255
        # actor boxes: pixel centres in each actor's frame
        px = wx[:, None, :] - state.x[:, :, None]
        py = wy[:, None, :] - state.y[:, :, None]
        ca, sa = np.cos(state.yaw)[..., None], np.sin(state.yaw)[..., None]
        lon = ca * px + sa * py
        lat = -sa * px + ca * py
        inb = (np.abs(lon) <= 0.5 * c.length[None, :, None]) & (np.abs(lat) <= 0.5 * c.width[None, :, None])
        others = state.valid.copy()
        others[:, 0] = False
        out[..., 2] = (inb & others[..., None]).any(axis=1) * 255
        out[..., 3] = inb[:, 0] * 255
        return out.reshape(B, n, n, 4)


def bev_rgb(bev: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Colour a (H, W, 4) ``bev`` observation for display: road grey, route green, actors blue,
    ego red."""
    h, w, _ = bev.shape
    img = np.full((h, w, 3), 30, dtype=np.uint8)
    img[bev[..., 0] > 0] = (90, 90, 90)
    img[bev[..., 1] > 0] = (60, 160, 60)
    img[bev[..., 2] > 0] = (70, 130, 230)
    img[bev[..., 3] > 0] = (230, 60, 50)
    return img


class CameraObservation(ObservationKind):
    """RGB of one rig camera from the render backend."""

    name = "camera"
    needs_render = True

    def space(self) -> spaces.Box:
        cam = self.cfg.rig.camera(self.cfg.camera)
        return spaces.Box(0, 255, (cam.height, cam.width, 3), np.uint8)

    def compute(self, state: SimState, frames: list[SensorFrame] | None = None) -> NDArray[np.uint8]:
        assert frames is not None
        return np.stack([f.cameras[self.cfg.camera].rgb for f in frames]).astype(np.uint8)


class LidarObservation(ObservationKind):
    """LiDAR range image from the render backend."""

    name = "lidar"
    needs_render = True

    def space(self) -> spaces.Box:
        li = self.cfg.rig.lidar
        if li is None:
            raise ValueError("the lidar observation needs a rig with a LiDAR")
        return spaces.Box(0.0, float(li.max_range_m), (li.beams, li.azimuth_steps, 2), np.float32)

    def compute(self, state: SimState, frames: list[SensorFrame] | None = None) -> NDArray[np.float32]:
        assert frames is not None
        li = self.cfg.rig.lidar
        assert li is not None
        out = np.zeros((len(frames), li.beams * li.azimuth_steps, 2), dtype=np.float32)
        for b, f in enumerate(frames):
            if f.lidar is None or len(f.lidar.ray_index) == 0:
                continue
            rng_ = np.linalg.norm(f.lidar.points.astype(np.float64), axis=1)
            out[b, f.lidar.ray_index, 0] = fclip(rng_, 0.0, li.max_range_m)
            out[b, f.lidar.ray_index, 1] = fclip(f.lidar.intensity, 0.0, 1.0)
        return out.reshape(len(frames), li.beams, li.azimuth_steps, 2)


_BOUND = 1.0e6


class EgoObservation(ObservationKind):
    """``ego``: float64 (6,) ``[x, y, yaw, speed, accel, steer]``, the ego's own odometry and
    localisation in the world frame (m, rad, m/s, m/s², rad; accel and steer are the last applied
    controls); not privileged. The episode driver's builder is
    :func:`sim.planning.observe.ego_observation`."""

    name = "ego"

    def space(self) -> spaces.Box:
        return spaces.Box(-_BOUND, _BOUND, (6,), np.float64)

    def compute(self, state: SimState, frames: list[SensorFrame] | None = None) -> NDArray[np.float64]:
        return np.stack([state.x[:, 0], state.y[:, 0], state.yaw[:, 0], state.v[:, 0], state.accel[:, 0], state.steer], axis=-1)


class ObjectsObservation(ObservationKind):
    """``objects``: float64 (M, 8) rows ``[valid, x, y, yaw, speed, length, width, class code]``
    of the other actors (world frame, SI; class codes :data:`sim.planning.observe.CLASS_CODES`),
    M = the scenario's actor slots; privileged ground truth (the array form of
    :func:`sim.planning.observe.objects_observation`)."""

    name = "objects"

    def space(self) -> spaces.Box:
        return spaces.Box(-_BOUND, _BOUND, (self.compiled.num_slots - 1, 8), np.float64)

    def compute(self, state: SimState, frames: list[SensorFrame] | None = None) -> NDArray[np.float64]:
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


#: name -> observation kind class (plug-ins: the ``loopdrive.observations`` entry-point group)
OBSERVATIONS: Registry[type[ObservationKind]] = Registry("observation", "loopdrive.observations")
for _k in (StateObservation, BevObservation, CameraObservation, LidarObservation, EgoObservation, ObjectsObservation):
    OBSERVATIONS.register(_k.name, _k)
