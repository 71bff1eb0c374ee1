"""A tiny analytic drive log for the reconstructor's tests and plumbing (pure numpy ray casting).

A textured ground plane (asphalt checker, lane stripes), a row of textured buildings on both
sides, one moving car and one parked car, seen by a front camera and a spinning LiDAR of a
straight ego drive along +x. Everything is exact (no mesh renderer needed), so tests can check
that a moved box moves its pixels. The synthetic town (``sim.synth``) is the realistic source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sim.geometry import vehicle_pose_se3
from sim.log import LogWriter, Track
from sim.sensors import CameraSpec, LidarSpec, SensorRig

__all__ = ["POLE", "ToyBox", "render_toy", "toy_boxes_at", "write_toy_scene"]

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


#: the optional static pole of :func:`write_toy_scene` (``pole=True``): a 0.3 m square post, 4 m tall
POLE = ToyBox(10.0, 4.0, 0.0, 0.0, (0.3, 0.3, 4.0), (0.9, 0.85, 0.2), "facade", 0.9)


def _toy_rig(width: int, height: int, beams: int, azimuth: int, cameras: int, spin: bool) -> SensorRig:
    """The front camera (and with ``cameras`` = 2 a left camera of other intrinsics and size) and
    the LiDAR (instant, or spinning clockwise at 10 Hz with ``spin``)."""
    cams = [CameraSpec(width=width, height=height, hfov_deg=90.0)]
    if cameras >= 2:
        w2, h2 = width - width // 6, height
        cams.append(CameraSpec("left", w2, h2, 80.0, (1.0, 0.8, 1.5), np.pi / 2, 0.0, 0.0,
                               (w2 / 2 / np.tan(np.radians(40.0)) * 1.05, w2 / 2 / np.tan(np.radians(40.0)), w2 / 2 + 1.5, h2 / 2 - 1.0)))
    lid = LidarSpec(beams=beams, azimuth_steps=azimuth, max_range_m=60.0, firing="spin_cw" if spin else "instant", rate_hz=10.0)
    return SensorRig(tuple(cams), lid)


def _ego_se3(ego_pose: NDArray[np.float64], t_us: NDArray[np.int64], tq: NDArray[np.float64]) -> NDArray[np.float64]:
    """(N, 4, 4) world-from-vehicle of the toy's straight ego drive at times ``tq`` (us)."""
    x = np.interp(tq, t_us.astype(np.float64), ego_pose[:, 0])
    out = np.tile(np.eye(4), (len(tq), 1, 1))
    out[:, 0, 3], out[:, 1, 3] = x, ego_pose[0, 1]
    return out


def _toy_sweep(lid: LidarSpec, ego_pose: NDArray[np.float64], t: NDArray[np.int64], i: int, boxes_at: Any) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float32] | None]:
    """Sweep ``i``: the stamped sensor pose, world points (N, 4) and, for a spinning LiDAR, the
    per-point (dt_us, ring) -- every column fired from the sensor (and the boxes) at its own time."""
    s2w = vehicle_pose_se3(ego_pose[i, 0], ego_pose[i, 1], ego_pose[i, 3]) @ lid.vehicle_from_lidar
    ds = lid.ray_directions()  # (B, Az, 3)
    if lid.firing == "instant":
        dw = ds.reshape(-1, 3) @ s2w[:3, :3].T
        _, dist, inten = render_toy(np.broadcast_to(s2w[:3, 3], dw.shape), dw, boxes_at(float(t[i]) / 1e6))
        ok = dist < lid.max_range_m
        return s2w, np.concatenate([s2w[:3, 3] + dw[ok] * dist[ok, None], inten[ok, None]], 1), None
    col_dt = lid.column_time_offsets_us()
    B, Az = lid.beams, lid.azimuth_steps
    sc = _ego_se3(ego_pose, t, (t[i] + col_dt).astype(np.float64)) @ lid.vehicle_from_lidar  # (Az, 4, 4) per column
    dw = np.einsum("bcj,cij->bci", ds, sc[:, :3, :3]).reshape(-1, 3)
    o = np.broadcast_to(sc[None, :, :3, 3], (B, Az, 3)).reshape(-1, 3)
    dt = np.broadcast_to(col_dt[None].astype(np.float64), (B, Az)).reshape(-1)
    rings = np.broadcast_to(lid.rings()[:, None], (B, Az)).reshape(-1)
    dist = np.full(len(dw), np.inf)
    inten = np.zeros(len(dw))
    chunk = max(Az // 32, 1)  # columns sharing one time for the (moving) boxes: at most 3 ms apart
    for c0 in range(0, Az, chunk):
        m = ((np.arange(B * Az) % Az) >= c0) & ((np.arange(B * Az) % Az) < c0 + chunk)
        tc = float(t[i] + col_dt[c0 : c0 + chunk].mean())
        _, dist[m], inten[m] = render_toy(o[m], dw[m], boxes_at(tc / 1e6))
    ok = dist < lid.max_range_m
    pts = np.concatenate([o[ok] + dw[ok] * dist[ok, None], inten[ok, None]], 1)
    return s2w, pts, np.stack([dt[ok], rings[ok]], 1).astype(np.float32)


def write_toy_scene(out: str | Path, frames: int = 20, width: int = 96, height: int = 64, beams: int = 16, azimuth: int = 256, overwrite: bool = False,
                    *, cameras: int = 1, gains: NDArray[np.floating] | None = None, spin_lidar: bool = False, pole: bool = False,
                    car_track_error: NDArray[np.floating] | None = None, ego_error: NDArray[np.floating] | None = None,
                    camera_time_error_us: tuple[int, ...] | None = None) -> Path:
    """Write the toy drive log to ``out`` (10 Hz camera and LiDAR, ego at 8 m/s along +x).

    Options (all off by default: the plain one-camera toy):
        cameras: 2 adds a ``left`` camera (other intrinsics and image size, 30 ms after the front).
        gains: (frames, 3) RGB gain of each time step's images (exposure / white-balance drift;
            depth maps and LiDAR stay exact).
        spin_lidar: a spinning LiDAR (each column fired at its own time while the ego moves;
            per-point ``dt_us`` and ring in ``lidar/<i>.extra.npy``).
        pole: add the static :data:`POLE` beside the road.
        car_track_error: (frames, 3) dx, dy (m), dyaw (rad) added to the moving car's **logged**
            track (label noise; images and LiDAR show the true car).
        ego_error: (frames, 4) dx, dy, dz (m), dyaw (rad) added to the **logged** ego pose of each
            step (localisation error): the logged camera and LiDAR poses and the LiDAR's world
            points move rigidly with it (as a log built from that pose would place them), while
            the images and ranges are measured from the true pose. One camera, instant LiDAR.
        camera_time_error_us: per camera, an error (us) added to its **logged** time stamps (a
            camera-LiDAR synchronisation error): the logged pose is the ego's at the logged time,
            the image is taken at the true time.
    """
    rig = _toy_rig(width, height, beams, azimuth, cameras, spin_lidar)
    lid = rig.lidar
    assert lid is not None
    # with sensors firing after a step's time stamp (a second camera, a spinning sweep stamped at
    # its end) the tracks run one step longer, so every capture lies inside them
    n = frames + 1 if cameras >= 2 or spin_lidar else frames
    t = np.arange(n, dtype=np.int64) * 100_000
    ts = t / 1e6
    ego_pose = np.stack([8.0 * ts, np.full(n, -1.75), np.zeros(n), np.zeros(n)], 1)
    car_pose = np.stack([_car_pose(x)[:4] for x in ts])
    logged_car = car_pose.copy()
    if car_track_error is not None:
        err = np.asarray(car_track_error, dtype=np.float64).reshape(frames, 3)
        logged_car[:frames, 0] += err[:, 0]
        logged_car[:frames, 1] += err[:, 1]
        logged_car[:frames, 3] += err[:, 2]
    park_pose = np.tile(np.array([_PARKED[:4]]), (n, 1))
    car = Track("car1", "car", _CAR_SIZE, t, logged_car)
    parked = Track("park1", "car", _PARKED_SIZE, t, park_pose, static=True)
    logged_ego = ego_pose.copy()
    if ego_error is not None:
        if cameras != 1 or spin_lidar:
            raise ValueError("ego_error: one camera and an instant LiDAR only (every capture at a step's time)")
        logged_ego[:frames] += np.asarray(ego_error, dtype=np.float64).reshape(frames, 4)

    def logged_from_true(i: int) -> NDArray[np.float64]:  # world transform: true capture -> where the log puts it
        return vehicle_pose_se3(*logged_ego[i, [0, 1, 3]], z=logged_ego[i, 2]) @ np.linalg.inv(vehicle_pose_se3(*ego_pose[i, [0, 1, 3]], z=ego_pose[i, 2]))

    ego = Track("ego", "car", (4.6, 1.9, 1.6), t, logged_ego)
    meta = {"name": "toy-recon", "source": "sim.recon.toyscene", "rates": {"camera_hz": 10.0, "lidar_hz": 10.0},
            "rig": rig.to_meta(), "ego": {"size": [4.6, 1.9, 1.6]}}

    def boxes_at(t_s: float) -> list[ToyBox]:
        return [*toy_boxes_at(t_s), POLE] if pole else toy_boxes_at(t_s)

    with LogWriter(out, meta, overwrite=overwrite) as w:
        for i in range(frames):
            for k, cam in enumerate(rig.cameras):
                tc = int(t[i]) + 30_000 * k
                veh = _ego_se3(ego_pose, t, np.array([float(tc)]))[0]
                c2w = veh @ cam.vehicle_from_camera
                tl = tc + (int(camera_time_error_us[k]) if camera_time_error_us else 0)  # the logged stamp
                c2w_log = _ego_se3(ego_pose, t, np.array([float(tl)]))[0] @ cam.vehicle_from_camera if tl != tc else c2w
                K = cam.K
                vv, uu = np.mgrid[0 : cam.height, 0 : cam.width]
                dc = np.stack([(uu + 0.5 - K[0, 2]) / K[0, 0], -(vv + 0.5 - K[1, 2]) / K[1, 1], -np.ones_like(uu, float)], -1).reshape(-1, 3)
                zfac = 1.0 / np.linalg.norm(dc, axis=1)
                dw = (dc * zfac[:, None]) @ c2w[:3, :3].T
                rgb, dist, _ = render_toy(np.broadcast_to(c2w[:3, 3], dw.shape), dw, boxes_at(tc / 1e6))
                if gains is not None:
                    rgb = np.clip(rgb * np.asarray(gains, dtype=np.float64).reshape(frames, 3)[i], 0, 1)
                depth = np.where(np.isfinite(dist), dist * zfac, 0.0).reshape(cam.height, cam.width)
                w.add_frame(cam.name, tl, logged_from_true(i) @ c2w_log if ego_error is not None else c2w_log, K,
                            (rgb.reshape(cam.height, cam.width, 3) * 255).round().astype(np.uint8), depth)
            j = i + 1 if spin_lidar else i  # a spinning sweep covers [t_i, t_i + 100 ms], stamped at its end
            s2w, pts, extra = _toy_sweep(lid, ego_pose, t, j, boxes_at)
            if ego_error is not None:
                m = logged_from_true(j)
                s2w, pts = m @ s2w, np.concatenate([pts[:, :3] @ m[:3, :3].T + m[:3, 3], pts[:, 3:]], 1)
            w.add_sweep(int(t[j]), s2w, pts, extra)
        w.set_tracks(ego, [car, parked])
        w.set_map(_MAP)
    return Path(out)
