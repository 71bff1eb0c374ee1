"""Sensor-only perception for the ``lidar_stack`` planner: ground removal, clustering into
obstacles, tracking with constant-velocity prediction. (The analytic box LiDAR that simulates a
sweep without a render backend is a sensor: :func:`sim.render.box_lidar.simulate_lidar`.)

Frames: the LiDAR *sensor* frame is the vehicle frame (x forward, y left, z up) shifted by the
mount position (``LidarSpec.mount_xyz``); the vehicle frame's origin is the ego box's bottom centre,
so the ground is at z = 0 there. World frame z up. Metres, seconds, radians.

The ``lidar`` observation is the env's range image (``sim.observations.LidarObservation``):
float32 (beams, azimuth_steps, 2), channel 0 range in metres (0 = no return), channel 1 intensity;
rays as :meth:`sim.sensors.LidarSpec.ray_directions`. :func:`lidar_points` also accepts a mapping
with ``points`` (N, 3) in the sensor frame (optional ``valid`` mask), a bare (N, >=3) array or a
:class:`sim.render.base.LidarScan`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray

from agents.planners.common import ActorsView
from sim.sensors import LidarSpec

__all__ = ["Detection", "LidarPerception", "MultiObjectTracker", "cluster_obstacles", "lidar_points", "remove_ground"]

log = logging.getLogger(__name__)

F64 = NDArray[np.float64]


def lidar_points(obs: Any, spec: LidarSpec | None = None) -> F64:
    """(N, 3) returns in the sensor frame from a ``lidar`` observation (see the module docs; a
    range image needs the ``spec`` that made it)."""
    a = None if isinstance(obs, Mapping) or hasattr(obs, "points") else np.asarray(obs)
    if a is not None and a.ndim == 3 and a.shape[-1] == 2:
        if spec is None or a.shape[:2] != (spec.beams, spec.azimuth_steps):
            raise ValueError(f"a LiDAR range image of shape {a.shape} needs its LidarSpec")
        r = a[..., 0].astype(np.float64).reshape(-1)
        hit = r > 0
        return spec.ray_directions().reshape(-1, 3)[hit] * r[hit, None]
    if isinstance(obs, Mapping):
        p = np.asarray(obs["points"], np.float64)
        if "valid" in obs:
            p = p[np.asarray(obs["valid"], bool)]
    elif hasattr(obs, "points"):
        p = np.asarray(obs.points, np.float64)
    else:
        p = np.asarray(obs, np.float64)
    p = p.reshape(-1, p.shape[-1])[:, :3]
    return p[np.all(np.isfinite(p), axis=1)]


# ------------------------------------------------------------------------------- perception
def remove_ground(points_vehicle: F64, *, ground_tol: float = 0.25, max_height: float = 3.0) -> F64:
    """Non-ground points (vehicle frame, ground at z = 0): drop z < ``ground_tol`` and z >
    ``max_height`` (overhanging trees, signs). A RANSAC plane is unnecessary on the flat synthetic
    towns; a sloped road would need it."""
    z = points_vehicle[:, 2]
    return points_vehicle[(z >= ground_tol) & (z <= max_height)]


@dataclass(frozen=True)
class Detection:
    """An obstacle from one sweep: oriented box centre (world, m), yaw (rad), length/width (m) and
    the number of points."""

    x: float
    y: float
    yaw: float
    length: float
    width: float
    n_points: int


def cluster_obstacles(
    xy: F64,
    *,
    eps: float = 1.0,
    min_samples: int = 3,
    lane_map: Any = None,
    heading: float | None = None,
    along_scale: float = 1.0,
    z: F64 | None = None,
    min_z_extent: float = 0.3,
) -> list[Detection]:
    """DBSCAN (scikit-learn) over world-frame points (N, 2) -> oriented boxes (minimum rotated
    rectangle, shapely). With ``heading`` (rad), distances along that direction are multiplied by
    ``along_scale`` first (< 1 joins a vehicle's rear face and the LiDAR ring on its roof, which lie
    a metre or two apart along the road). The yaw of a box is its long side, flipped to agree with
    the nearest lane when a lane map is given. Boxes smaller than 0.3 m are widened to 0.3 m. With
    point heights ``z`` (m), clusters thinner than ``min_z_extent`` vertically are dropped: a flat
    ring of returns is one beam grazing a roof or an overhang, not an obstacle's face."""
    if len(xy) < min_samples:
        return []
    from sklearn.cluster import DBSCAN  # heavy import: only when a sweep is clustered

    feat = xy
    if heading is not None and along_scale != 1.0:
        c, s = math.cos(heading), math.sin(heading)
        feat = np.stack([along_scale * (c * xy[:, 0] + s * xy[:, 1]), -s * xy[:, 0] + c * xy[:, 1]], axis=-1)
    labels = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(feat)
    out: list[Detection] = []
    for lab in sorted(set(labels.tolist()) - {-1}):
        sel = labels == lab
        p = xy[sel]
        if z is not None and float(np.ptp(z[sel])) < min_z_extent:
            continue
        rect = shapely.MultiPoint(p).minimum_rotated_rectangle
        if rect.geom_type == "Polygon":
            cs = np.asarray(rect.exterior.coords)[:4]
            e1, e2 = cs[1] - cs[0], cs[2] - cs[1]
            l1, l2 = float(np.hypot(*e1)), float(np.hypot(*e2))
            axis = e1 if l1 >= l2 else e2
            length, width = max(l1, l2), min(l1, l2)
            cx, cy = cs.mean(axis=0)
        else:  # a segment or a point
            lo, hi = p.min(axis=0), p.max(axis=0)
            axis = hi - lo if np.hypot(*(hi - lo)) > 1e-6 else np.array([1.0, 0.0])
            length, width = float(np.hypot(*(hi - lo))), 0.0
            cx, cy = (lo + hi) / 2
        yaw = math.atan2(axis[1], axis[0])
        if lane_map is not None:
            try:
                lid, s, _ = lane_map.nearest_lane(float(cx), float(cy))
                pl = lane_map.lanes[lid].polyline
                _, h = pl.interpolate(np.clip(s, 0, pl.length))
                if math.cos(float(h) - yaw) < 0:
                    yaw += math.pi
            except Exception:
                pass
        out.append(Detection(float(cx), float(cy), math.remainder(yaw, 2 * math.pi), max(length, 0.3), max(width, 0.3), len(p)))
    return out


@dataclass
class _Track:
    id: int
    xy: F64
    vel: F64
    yaw: float
    length: float
    width: float
    hits: int = 1
    misses: int = 0


@dataclass
class MultiObjectTracker:
    """Nearest-neighbour (Hungarian) tracker with an alpha-beta filter on the box centre.

    Attributes:
        gate_m: largest association distance (m) from the predicted position.
        alpha, beta: position and velocity gains of the filter.
        max_misses: sweeps a track survives without a detection.
        min_hits: detections before a track is reported.
    """

    gate_m: float = 2.5
    alpha: float = 0.6
    beta: float = 0.25
    max_misses: int = 3
    min_hits: int = 2
    tracks: list[_Track] = field(default_factory=list)
    _next: int = 0

    def reset(self) -> None:
        self.tracks = []
        self._next = 0

    def update(self, dets: list[Detection], dt_s: float) -> list[_Track]:
        """Predict every track by ``dt_s`` at constant velocity, associate, correct; returns the
        confirmed tracks."""
        for t in self.tracks:
            t.xy = t.xy + t.vel * dt_s
        z = np.array([[d.x, d.y] for d in dets]).reshape(-1, 2)
        matched_t: set[int] = set()
        matched_d: set[int] = set()
        if self.tracks and len(dets):
            from scipy.optimize import linear_sum_assignment

            pred = np.array([t.xy for t in self.tracks])
            cost = np.linalg.norm(pred[:, None, :] - z[None, :, :], axis=-1)
            ri, ci = linear_sum_assignment(np.where(cost <= self.gate_m, cost, 1e6))
            for r, cidx in zip(ri, ci, strict=True):
                if cost[r, cidx] > self.gate_m:
                    continue
                t, d = self.tracks[r], dets[cidx]
                res = z[cidx] - t.xy
                t.xy = t.xy + self.alpha * res
                t.vel = t.vel + self.beta * res / max(dt_s, 1e-3)
                t.length = max(0.7 * t.length + 0.3 * d.length, d.length)
                t.width = max(0.7 * t.width + 0.3 * d.width, d.width)
                t.yaw = d.yaw
                t.hits += 1
                t.misses = 0
                matched_t.add(r)
                matched_d.add(cidx)
        for i, t in enumerate(self.tracks):
            if i not in matched_t:
                t.misses += 1
        self.tracks = [t for t in self.tracks if t.misses <= self.max_misses]
        for j, d in enumerate(dets):
            if j not in matched_d:
                self.tracks.append(_Track(self._next, np.array([d.x, d.y]), np.zeros(2), d.yaw, d.length, d.width))
                self._next += 1
        return [t for t in self.tracks if t.hits >= self.min_hits]


@dataclass
class LidarPerception:
    """LiDAR sweep -> tracked obstacles (:class:`ActorsView`, world frame).

    Pipeline: sensor -> vehicle frame (mount offset), ground removal, world frame, keep points on
    or within ``road_margin_m`` of the drivable area (buildings and poles are not obstacles to a
    lane-following planner) and within ``max_range_m``, DBSCAN clustering (distances along the ego's
    heading scaled by ``along_scale``), oriented boxes, tracking.
    """

    lidar: LidarSpec
    lane_map: Any = None
    dt_s: float = 0.1
    road_margin_m: float = 0.5
    max_range_m: float = 60.0
    eps: float = 1.0
    along_scale: float = 1.0
    min_samples: int = 3
    tracker: MultiObjectTracker = field(default_factory=MultiObjectTracker)

    def __post_init__(self) -> None:
        self._area = None
        if self.lane_map is not None:
            self._area = self.lane_map.drivable_area.buffer(self.road_margin_m)
            shapely.prepare(self._area)

    def reset(self) -> None:
        self.tracker.reset()

    def detect(self, lidar_obs: Any, ego_xy: F64, ego_yaw: float) -> list[Detection]:
        """Obstacles of one sweep (no tracking)."""
        p = lidar_points(lidar_obs, self.lidar) + np.asarray(self.lidar.mount_xyz)[None, :]
        p = remove_ground(p)
        p = p[np.hypot(p[:, 0], p[:, 1]) <= self.max_range_m]
        c, s = math.cos(ego_yaw), math.sin(ego_yaw)
        xy = np.stack([ego_xy[0] + c * p[:, 0] - s * p[:, 1], ego_xy[1] + s * p[:, 0] + c * p[:, 1]], axis=-1)
        z = p[:, 2]
        if self._area is not None and len(xy):
            keep = shapely.contains_xy(self._area, xy[:, 0], xy[:, 1])
            xy, z = xy[keep], z[keep]
        return cluster_obstacles(
            xy, eps=self.eps, min_samples=self.min_samples, lane_map=self.lane_map, heading=ego_yaw,
            along_scale=self.along_scale, z=z,
        )  # fmt: skip

    def __call__(self, lidar_obs: Any, ego_xy: F64, ego_yaw: float) -> ActorsView:
        """Detect, track, and return the tracked obstacles with their velocities."""
        tracks = self.tracker.update(self.detect(lidar_obs, ego_xy, ego_yaw), self.dt_s)
        if not tracks:
            return ActorsView.empty()
        vel = np.array([t.vel for t in tracks])
        spd = np.hypot(vel[:, 0], vel[:, 1])
        yaw = np.array([math.atan2(t.vel[1], t.vel[0]) if sp > 1.0 else t.yaw for t, sp in zip(tracks, spd, strict=True)])
        return ActorsView(
            xy=np.array([t.xy for t in tracks]),
            yaw=yaw,
            speed=spd,
            length=np.array([t.length for t in tracks]),
            width=np.array([t.width for t in tracks]),
            cls=("car",) * len(tracks),
            ids=tuple(f"trk{t.id}" for t in tracks),
            velocity=vel,
        )
