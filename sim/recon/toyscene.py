"""A tiny analytic drive log for the reconstructor's tests and plumbing (pure numpy ray casting).

A textured ground plane (asphalt checker, lane stripes), a row of textured buildings on both
sides, one moving car and one parked car, seen by a front camera and a spinning LiDAR of a
straight ego drive along +x. Everything is exact (no mesh renderer needed), so tests can check
that a moved box moves its pixels. The synthetic town (``sim.synth``) is the realistic source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from sim.geometry import vehicle_pose_se3
from sim.log import LogWriter, Track
from sim.sensors import CameraSpec, LidarSpec, SensorRig

__all__ = ["ToyBox", "render_toy", "toy_boxes_at", "write_toy_scene"]

_MAP = {
    "lanes": [
        {"id": "east", "centerline": [[-10.0, -1.75], [80.0, -1.75]], "width": 3.5, "speed_limit": 13.9,
         "successors": [], "predecessors": [], "left": None, "right": None},
        {"id": "west", "centerline": [[80.0, 1.75], [-10.0, 1.75]], "width": 3.5, "speed_limit": 13.9,
         "successors": [], "predecessors": [], "left": None, "right": None},
    ],
}


@dataclass(frozen=True)
class ToyBox:
    """An oriented box: bottom-centre (x, y, z), yaw (rad), size (l, w, h) in metres, base colour
    RGB in [0, 1], texture kind (``facade`` or ``car``) and LiDAR intensity."""

    x: float
    y: float
    z: float
    yaw: float
    size: tuple[float, float, float]
    color: tuple[float, float, float]
    kind: str = "facade"
    intensity: float = 0.4


def _buildings() -> list[ToyBox]:
    out = []
    cols = [(0.75, 0.45, 0.35), (0.55, 0.6, 0.7), (0.8, 0.75, 0.55), (0.45, 0.55, 0.45)]
    for k in range(6):
        x = -5.0 + k * 14.0
        out.append(ToyBox(x, 11.0, 0.0, 0.0, (10.0, 6.0, 6.0 + 2 * (k % 3)), cols[k % 4]))
        out.append(ToyBox(x + 6.0, -11.0, 0.0, 0.0, (10.0, 6.0, 5.0 + 2 * ((k + 1) % 3)), cols[(k + 2) % 4]))
    return out


def _box_hits(o: NDArray[np.float64], d: NDArray[np.float64], b: ToyBox) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Distances (N,) to the box (inf = miss) and hit points in the box frame (N, 3)."""
    c, s = np.cos(b.yaw), np.sin(b.yaw)
    ctr = np.array([b.x, b.y, b.z + b.size[2] / 2])
    R = np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])
    ol = (o - ctr) @ R.T
    dl = d @ R.T
    h = np.asarray(b.size) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-h - ol) / dl, (h - ol) / dl
    tmin = np.nanmax(np.minimum(t1, t2), axis=1)
    tmax = np.nanmin(np.maximum(t1, t2), axis=1)
    hit = (tmax >= tmin) & (tmin > 1e-3)
    t = np.where(hit, tmin, np.inf)
    return t, ol + dl * np.where(hit, tmin, 0)[:, None]


def _facade(pl: NDArray[np.float64], b: ToyBox) -> NDArray[np.float64]:
    base = np.asarray(b.color)[None].repeat(len(pl), 0)
    if b.kind == "car":
        band = np.abs(pl[:, 2] - b.size[2] * 0.15) < b.size[2] * 0.12
        front = pl[:, 0] > b.size[0] * 0.3
        base[band] *= 0.35
        base[front & ~band] = base[front & ~band] * 0.6 + 0.4
        return base
    u = pl[:, 0] + pl[:, 1]
    win = (np.mod(u, 2.5) < 1.2) & (np.mod(pl[:, 2] + b.size[2] / 2, 2.0) > 0.8)
    base[win] = np.array([0.2, 0.25, 0.35])
    return base


def _ground(p: NDArray[np.float64]) -> NDArray[np.float64]:
    x, y = p[:, 0], p[:, 1]
    chk = ((np.floor(x / 1.0) + np.floor(y / 1.0)) % 2) * 0.06
    col = np.stack([0.32 + chk, 0.32 + chk, 0.34 + chk], 1)
    side = np.abs(y) > 7.0
    col[side] = np.array([0.35, 0.55, 0.3]) + chk[side, None]
    stripe = (np.abs(y) < 0.12) & (np.mod(x, 4.0) < 2.0)
    edge = np.abs(np.abs(y) - 6.8) < 0.15
    col[stripe | edge] = 0.92
    return col


def render_toy(o: NDArray[np.float64], d: NDArray[np.float64], boxes: list[ToyBox]) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Cast rays (N, 3) origins / unit directions: colour (N, 3), distance (N,) (inf = sky) and
    LiDAR intensity (N,)."""
    n = len(o)
    with np.errstate(divide="ignore", invalid="ignore"):
        tg = np.where(d[:, 2] < -1e-6, -o[:, 2] / d[:, 2], np.inf)
    best = tg.copy()
    col = np.zeros((n, 3))
    inten = np.where(np.isfinite(tg), 0.2, 0.0)
    which = np.full(n, -1)
    locs = []
    for k, b in enumerate(boxes):
        t, pl = _box_hits(o, d, b)
        m = t < best
        best[m] = t[m]
        which[m] = k
        locs.append(pl)
    g = which < 0
    hit_g = g & np.isfinite(best)
    col[hit_g] = _ground(o[hit_g] + d[hit_g] * best[hit_g, None])
    for k, b in enumerate(boxes):
        m = which == k
        if m.any():
            col[m] = _facade(locs[k][m], b)
            inten[m] = b.intensity
    sky = ~np.isfinite(best)
    el = np.clip(d[sky, 2], 0, 1)
    col[sky] = np.stack([0.55 + 0.3 * el, 0.7 + 0.2 * el, 0.95 + 0 * el], 1)
    return np.clip(col, 0, 1), best, inten


_CAR_SIZE = (4.4, 1.9, 1.5)
_PARKED_SIZE = (4.6, 1.9, 1.6)
_PARKED = (20.0, -5.2, 0.0, 0.1)


def _car_pose(t_s: float) -> tuple[float, float, float, float]:
    return (14.0 + 5.0 * t_s, 1.75, 0.0, 0.0)


def toy_boxes_at(t_s: float) -> list[ToyBox]:
    """Every box of the toy scene at time ``t_s`` (s): the buildings, the moving car and the
    parked car (what :func:`render_toy` casts against to render the log's frame at that time)."""
    return [
        *_buildings(),
        ToyBox(*_car_pose(t_s), _CAR_SIZE, (0.8, 0.1, 0.1), "car", 0.8),
        ToyBox(*_PARKED, _PARKED_SIZE, (0.1, 0.3, 0.8), "car", 0.7),
    ]


def write_toy_scene(out: str | Path, frames: int = 20, width: int = 96, height: int = 64, beams: int = 16, azimuth: int = 256, overwrite: bool = False) -> Path:
    """Write the toy drive log to ``out`` (10 Hz camera and LiDAR, ego at 8 m/s along +x)."""
    cam = CameraSpec(width=width, height=height, hfov_deg=90.0)
    lid = LidarSpec(beams=beams, azimuth_steps=azimuth, max_range_m=60.0)
    rig = SensorRig((cam,), lid)
    t = np.arange(frames, dtype=np.int64) * 100_000
    ts = t / 1e6
    ego_pose = np.stack([8.0 * ts, np.full(frames, -1.75), np.zeros(frames), np.zeros(frames)], 1)
    car_pose = np.stack([_car_pose(x)[:4] for x in ts])
    park_pose = np.tile(np.array([_PARKED[:4]]), (frames, 1))
    car = Track("car1", "car", _CAR_SIZE, t, car_pose)
    parked = Track("park1", "car", _PARKED_SIZE, t, park_pose, static=True)
    ego = Track("ego", "car", (4.6, 1.9, 1.6), t, ego_pose)
    meta = {"name": "toy-recon", "source": "sim.recon.toyscene", "rates": {"camera_hz": 10.0, "lidar_hz": 10.0},
            "rig": rig.to_meta(), "ego": {"size": [4.6, 1.9, 1.6]}}
    with LogWriter(out, meta, overwrite=overwrite) as w:
        for i in range(frames):
            veh = vehicle_pose_se3(ego_pose[i, 0], ego_pose[i, 1], ego_pose[i, 3])
            boxes = toy_boxes_at(float(ts[i]))
            c2w = veh @ cam.vehicle_from_camera
            K = cam.K
            vv, uu = np.mgrid[0:height, 0:width]
            dc = np.stack([(uu + 0.5 - K[0, 2]) / K[0, 0], -(vv + 0.5 - K[1, 2]) / K[1, 1], -np.ones_like(uu, float)], -1).reshape(-1, 3)
            zfac = 1.0 / np.linalg.norm(dc, axis=1)
            dw = (dc * zfac[:, None]) @ c2w[:3, :3].T
            rgb, dist, _ = render_toy(np.broadcast_to(c2w[:3, 3], dw.shape), dw, boxes)
            depth = np.where(np.isfinite(dist), dist * zfac, 0.0).reshape(height, width)
            w.add_frame(cam.name, int(t[i]), c2w, K, (rgb.reshape(height, width, 3) * 255).round().astype(np.uint8), depth)
            s2w = veh @ lid.vehicle_from_lidar
            ds = lid.ray_directions().reshape(-1, 3)
            dw = ds @ s2w[:3, :3].T
            _, dist, inten = render_toy(np.broadcast_to(s2w[:3, 3], dw.shape), dw, boxes)
            ok = dist < lid.max_range_m
            pts = np.concatenate([s2w[:3, 3] + dw[ok] * dist[ok, None], inten[ok, None]], 1)
            w.add_sweep(int(t[i]), s2w, pts)
        w.set_tracks(ego, [car, parked])
        w.set_map(_MAP)
    return Path(out)
