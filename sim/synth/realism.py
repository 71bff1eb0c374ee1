"""Sensor and label imperfections of real logs, applied to a clean synthetic drive log.

:func:`apply_realism` reads a clean log (the exact truth written by :func:`sim.synth.write_synth_log`)
and writes a copy whose *logged* sensors and labels carry the imperfections of real data; the
clean log stays untouched and remains the truth that evaluation scores against (the mesh town
itself is rebuilt from ``synth.preset`` / ``synth.seed`` and never changes). Every knob is a
standard deviation (or a fixed amount) with a unit in its name; 0 turns it off, and a knob that is
off leaves its quantity byte-identical. Each knob draws from its own random stream of
``SeedSequence(seed)``, so turning one knob on or off never changes what another one draws, and
the same config + seed gives byte-identical output.

Photometric knobs (per image, in this order; exposure, white balance and vignetting act on linear
light, ``(v / 255) ** 2.2``):

* ``exposure_camera_stops``: per-camera exposure offset, N(0, sigma) stops (gain ``2 ** e``);
* ``exposure_frame_stops``: per-frame exposure drift of each camera, an AR(1) process over the
  camera's frames (correlation 0.9 frame to frame) with stationary sigma in stops;
* ``wb_camera``: per-camera red and blue gains relative to green, ``1 + N(0, sigma)``;
* ``wb_frame``: per-frame red / blue drift, AR(1) like the exposure drift, sigma relative;
* ``vignetting``: brightness lost at the image corners, ``1 - v * (r / r_corner) ** 2`` with
  ``v`` drawn per camera in [0.5, 1.5] x the knob (fraction);
* ``motion_blur_ms``: exposure time (ms) over which the image is averaged: 7 sub-exposures warped
  with the flow the ego's motion gives each pixel (its logged depth, the ego track's poses
  before and after; sky pixels move by the rotation only). Moving actors' own motion is not
  blurred (documented limitation);
* ``noise_read`` / ``noise_shot``: sensor noise in 8-bit levels: Gaussian with variance
  ``read ** 2 + shot ** 2 * v / 255`` at pixel value ``v`` (``shot``: sigma at full scale).

Geometric and label knobs:

* ``lidar_time_offset_ms`` + ``lidar_time_jitter_ms``: each LiDAR sweep is stamped this much
  later (a constant offset plus N(0, jitter) per sweep) than when it was measured; its logged pose
  is the (logged) ego pose at the wrong stamp, and its points, measured in the sensor frame, are
  placed in the world with that pose. Per-point firing offsets are kept relative to the stamp;
* ``ego_position_m`` / ``ego_yaw_deg``: a smooth localisation error (AR(1) over the ego track's
  samples, correlation time 1 s) added to the ego track; every camera pose and LiDAR pose and
  every LiDAR point moves with the ego pose error at its time (z error: half the position sigma);
* ``box_position_m`` / ``box_yaw_deg``: independent errors of every box annotation sample
  (x, y; z with half the sigma; yaw); ``box_size_frac``: one relative error per track and
  dimension.

``REALISM_PRESETS`` has ``clean`` (all off) and ``real_like``, magnitudes chosen from what the
nuScenes data shows (auto-exposure steps of a few tenths of a stop between neighbouring cameras,
visible vignetting, a few 8-bit levels of noise, few-ms exposures, a camera--LiDAR sync within a
few ms, box annotations within ~10 cm / ~1 deg, and localisation errors of a few cm).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sim.errors import ScenarioError
from sim.log import DriveLog, LogWriter, Track, read_log

__all__ = ["REALISM_PRESETS", "RealismConfig", "apply_realism", "get_realism", "vehicle_matrix"]

log = logging.getLogger(__name__)

# one independent stream per knob group (never reorder: it would change every draw)
_EXPOSURE, _WB, _VIGNETTE, _NOISE, _LIDAR_T, _EGO, _BOX_POSE, _BOX_SIZE = range(8)
_N_STREAMS = 8
_GAMMA = 2.2
_BLUR_SAMPLES = 7
_AR_FRAME = 0.9  # frame-to-frame correlation of the exposure / white-balance drift


@dataclass(frozen=True)
class RealismConfig:
    """Magnitudes of the imperfections (see the module docstring; 0 = off). Units in the names:
    stops, fractions, 8-bit levels, milliseconds, metres, degrees."""

    exposure_camera_stops: float = 0.0
    exposure_frame_stops: float = 0.0
    wb_camera: float = 0.0
    wb_frame: float = 0.0
    vignetting: float = 0.0
    motion_blur_ms: float = 0.0
    noise_read: float = 0.0
    noise_shot: float = 0.0
    lidar_time_offset_ms: float = 0.0
    lidar_time_jitter_ms: float = 0.0
    ego_position_m: float = 0.0
    ego_yaw_deg: float = 0.0
    box_position_m: float = 0.0
    box_yaw_deg: float = 0.0
    box_size_frac: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "seed":
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise ScenarioError(f"expected a non-negative integer seed, got {v!r}", field="realism.seed")
            elif isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ScenarioError(f"expected a finite non-negative number, got {v!r}", field=f"realism.{f.name}")
        if self.vignetting >= 0.6:
            raise ScenarioError(f"expected a vignetting fraction below 0.6, got {self.vignetting!r}", field="realism.vignetting")
        if self.motion_blur_ms > 100:
            raise ScenarioError(f"expected an exposure of at most 100 ms, got {self.motion_blur_ms!r}", field="realism.motion_blur_ms")

    @property
    def photometric(self) -> bool:
        return any((self.exposure_camera_stops, self.exposure_frame_stops, self.wb_camera, self.wb_frame, self.vignetting))

    @property
    def is_clean(self) -> bool:
        return all(getattr(self, f.name) == 0 for f in dataclasses.fields(self) if f.name != "seed")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: named levels of ``loopdrive synth --realism``
REALISM_PRESETS: dict[str, RealismConfig] = {
    "clean": RealismConfig(),
    "real_like": RealismConfig(
        exposure_camera_stops=0.25, exposure_frame_stops=0.08, wb_camera=0.05, wb_frame=0.015, vignetting=0.25,
        motion_blur_ms=8.0, noise_read=1.5, noise_shot=3.0, lidar_time_offset_ms=4.0, lidar_time_jitter_ms=0.5,
        ego_position_m=0.03, ego_yaw_deg=0.1, box_position_m=0.08, box_yaw_deg=1.0, box_size_frac=0.03,
    ),
}


def get_realism(name: str, seed: int = 0) -> RealismConfig:
    """The preset ``name`` with ``seed``; :class:`ScenarioError` naming the known presets otherwise."""
    if name not in REALISM_PRESETS:
        raise ScenarioError(f"unknown realism level {name!r}; known: {', '.join(REALISM_PRESETS)}", field="realism")
    return dataclasses.replace(REALISM_PRESETS[name], seed=seed)


def vehicle_matrix(pose: NDArray[np.floating]) -> NDArray[np.float64]:
    """4x4 world-from-vehicle of a track pose (x, y, z, yaw)."""
    c, s = math.cos(float(pose[3])), math.sin(float(pose[3]))
    return np.array([[c, -s, 0.0, pose[0]], [s, c, 0.0, pose[1]], [0.0, 0.0, 1.0, pose[2]], [0.0, 0.0, 0.0, 1.0]], dtype=np.float64)


def _inv_rigid(m: NDArray[np.float64]) -> NDArray[np.float64]:
    """Inverse of a 4x4 rigid transform (rotation + translation)."""
    out = np.eye(4)
    out[:3, :3] = m[:3, :3].T
    out[:3, 3] = -m[:3, :3].T @ m[:3, 3]
    return out


def _streams(seed: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(_N_STREAMS)]


def _ar1(rng: np.random.Generator, n: int, sigma: float, rho: float, dims: int = 1) -> NDArray[np.float64]:
    """(n, dims) stationary AR(1) samples with marginal std ``sigma`` and lag-1 correlation ``rho``."""
    z = rng.standard_normal((n, dims))
    out = np.empty((n, dims))
    if n:
        out[0] = z[0]
        k = math.sqrt(1.0 - rho * rho)
        for i in range(1, n):
            out[i] = rho * out[i - 1] + k * z[i]
    return sigma * out


# ------------------------------------------------------------------------------------ labels
def _noisy_ego(ego: Track, cfg: RealismConfig, rng: np.random.Generator) -> Track:
    if cfg.ego_position_m == 0 and cfg.ego_yaw_deg == 0:
        return ego
    n = len(ego.t_us)
    dt_s = float(np.median(np.diff(ego.t_us))) * 1e-6 if n > 1 else 0.1
    rho = math.exp(-dt_s / 1.0)  # correlation time 1 s
    e = _ar1(rng, n, 1.0, rho, 4)
    pose = ego.pose.copy()
    pose[:, 0:2] += cfg.ego_position_m * e[:, 0:2]
    pose[:, 2] += 0.5 * cfg.ego_position_m * e[:, 2]
    pose[:, 3] += math.radians(cfg.ego_yaw_deg) * e[:, 3]
    return dataclasses.replace(ego, pose=pose)


def _noisy_tracks(tracks: tuple[Track, ...], cfg: RealismConfig, rng_pose: np.random.Generator,
                  rng_size: np.random.Generator) -> list[Track]:
    out = []
    for tr in tracks:
        pose, size = tr.pose, tr.size
        if cfg.box_position_m or cfg.box_yaw_deg:
            z = rng_pose.standard_normal((len(tr.t_us), 4))
            pose = pose.copy()
            pose[:, 0:2] += cfg.box_position_m * z[:, 0:2]
            pose[:, 2] += 0.5 * cfg.box_position_m * z[:, 2]
            pose[:, 3] += math.radians(cfg.box_yaw_deg) * z[:, 3]
        if cfg.box_size_frac:
            f = 1.0 + cfg.box_size_frac * rng_size.standard_normal(3)
            size = tuple(round(float(s * max(k, 0.5)), 4) for s, k in zip(tr.size, f, strict=True))  # type: ignore[assignment]
        out.append(dataclasses.replace(tr, pose=pose, size=size))
    return out


def _pose_error(ego: Track, noisy: Track, t_true: int, t_logged: int) -> NDArray[np.float64]:
    """World transform taking what was measured at ``t_true`` (true ego pose) to where the log puts
    it (the noisy ego pose at the logged stamp ``t_logged``)."""
    p0, p1 = ego.pose_at(t_true), noisy.pose_at(t_logged)
    if p0 is None:
        raise ValueError(f"ego pose undefined at {t_true} us")
    if p1 is None:  # a stamp shifted past the track's end: hold the last pose
        p1 = noisy.pose[-1] if t_logged > noisy.t_us[-1] else noisy.pose[0]
    return vehicle_matrix(p1) @ _inv_rigid(vehicle_matrix(p0))


# ------------------------------------------------------------------------------------ images
class _Photometric:
    """Per-camera and per-frame photometric draws (each knob its own stream)."""

    def __init__(self, dl: DriveLog, cfg: RealismConfig, streams: list[np.random.Generator]) -> None:
        self.cfg = cfg
        cams = dl.cameras
        ex, wb, vg = streams[_EXPOSURE], streams[_WB], streams[_VIGNETTE]
        n_of = {c: len(dl.frames_of(c)) for c in cams}
        self.exp_cam = {c: cfg.exposure_camera_stops * float(ex.standard_normal()) for c in cams}
        self.exp_frame = {c: _ar1(ex, n_of[c], cfg.exposure_frame_stops, _AR_FRAME)[:, 0] for c in cams}
        self.wb_cam = {c: 1.0 + cfg.wb_camera * wb.standard_normal(2) for c in cams}
        self.wb_frame = {c: _ar1(wb, n_of[c], cfg.wb_frame, _AR_FRAME, 2) for c in cams}
        self.vig = {c: cfg.vignetting * float(vg.uniform(0.5, 1.5)) for c in cams}

    def gains(self, camera: str, k: int) -> NDArray[np.float64]:
        """RGB gains of the ``k``-th frame of ``camera`` (linear light)."""
        g = 2.0 ** (self.exp_cam[camera] + self.exp_frame[camera][k])
        rb = self.wb_cam[camera] * (1.0 + self.wb_frame[camera][k])
        return g * np.array([rb[0], 1.0, rb[1]])

    def apply(self, rgb: NDArray[np.uint8], camera: str, k: int, K: NDArray[np.float64]) -> NDArray[np.uint8]:
        lin = (rgb.astype(np.float64) / 255.0) ** _GAMMA
        lin = lin * self.gains(camera, k)
        if self.vig[camera]:
            h, w = rgb.shape[:2]
            v, u = np.mgrid[0:h, 0:w]
            r2 = ((u + 0.5 - K[0, 2]) / K[0, 0]) ** 2 + ((v + 0.5 - K[1, 2]) / K[1, 1]) ** 2
            corner = max(((x - K[0, 2]) / K[0, 0]) ** 2 + ((y - K[1, 2]) / K[1, 1]) ** 2 for x in (0, w) for y in (0, h))
            lin = lin * (1.0 - self.vig[camera] * r2 / corner)[..., None]
        return np.clip(np.rint(np.clip(lin, 0.0, 1.0) ** (1.0 / _GAMMA) * 255.0), 0, 255).astype(np.uint8)


def add_sensor_noise(rgb: NDArray[np.uint8], read: float, shot: float, rng: np.random.Generator) -> NDArray[np.uint8]:
    """Gaussian sensor noise (8-bit levels): variance ``read ** 2 + shot ** 2 * v / 255``."""
    v = rgb.astype(np.float64)
    sigma = np.sqrt(read * read + shot * shot * v / 255.0)
    return np.clip(np.rint(v + sigma * rng.standard_normal(v.shape)), 0, 255).astype(np.uint8)


def motion_blur(rgb: NDArray[np.uint8], depth: NDArray[np.floating] | None, K: NDArray[np.float64], c2w: NDArray[np.float64],
                ego: Track, t_us: int, exposure_ms: float) -> NDArray[np.uint8]:
    """``rgb`` averaged over ``exposure_ms`` centred on ``t_us``: each sub-exposure backward-warps the
    image with the flow the ego's motion gives each pixel (depth 0 / None: at infinity)."""
    from scipy.ndimage import map_coordinates

    e0 = ego.pose_at(int(t_us))
    if e0 is None or exposure_ms <= 0:
        return rgb
    h, w = rgb.shape[:2]
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    x = (u + 0.5 - K[0, 2]) / K[0, 0]
    y = (v + 0.5 - K[1, 2]) / K[1, 1]
    cv = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV <-> OpenGL camera axes
    c2w_cv = c2w @ cv
    d = np.zeros((h, w)) if depth is None else np.asarray(depth, dtype=np.float64)
    far = d <= 0
    dd = np.where(far, 1.0, d)
    pc = np.stack([x * dd, y * dd, dd, np.where(far, 0.0, 1.0)], -1)  # homogeneous; w = 0: a direction
    pw = pc @ c2w_cv.T
    acc = np.zeros((h, w, 3))
    v_from_c = _inv_rigid(vehicle_matrix(e0)) @ c2w_cv
    for s in np.linspace(-0.5, 0.5, _BLUR_SAMPLES):
        es = ego.pose_at(int(t_us + round(s * exposure_ms * 1000)))
        es = e0 if es is None else es
        w2c = _inv_rigid(vehicle_matrix(es) @ v_from_c)
        q = pw @ w2c.T
        z = np.where(np.abs(q[..., 2]) > 1e-6, q[..., 2], 1e-6)
        uu = q[..., 0] / z * K[0, 0] + K[0, 2] - 0.5
        vv = q[..., 1] / z * K[1, 1] + K[1, 2] - 0.5
        # backward warp: the sub-exposure sees at pixel p what the frame shows at p - flow(p)
        su, sv = 2 * u - uu, 2 * v - vv
        for ch in range(3):
            acc[..., ch] += map_coordinates(rgb[..., ch].astype(np.float64), [sv, su], order=1, mode="nearest")
    return np.clip(np.rint(acc / _BLUR_SAMPLES), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------ the log
def apply_realism(
    src: str | os.PathLike[str] | DriveLog,
    out: str | os.PathLike[str],
    cfg: RealismConfig,
    *,
    overwrite: bool = False,
    name: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write to ``out`` a copy of the clean log ``src`` with the imperfections of ``cfg`` applied to
    its logged images, camera and LiDAR poses, LiDAR points and stamps, ego track and actor boxes
    (see the module docstring). ``meta.json`` records ``synth.realism`` (every knob and the seed)
    and ``synth.truth`` (the clean log's name). Depth images (synthetic truth, absent from real
    logs) and the map are copied unchanged. Same ``src`` + ``cfg`` -> byte-identical files.

    Raises:
        LogFormatError: ``src`` unreadable or ``out`` not writable. ScenarioError: a bad knob.
    """
    dl = src if isinstance(src, DriveLog) else read_log(Path(src))
    st = _streams(cfg.seed)
    ego = dl.ego
    noisy_ego = _noisy_ego(ego, cfg, st[_EGO])
    tracks = _noisy_tracks(dl.tracks, cfg, st[_BOX_POSE], st[_BOX_SIZE])
    photo = _Photometric(dl, cfg, st) if cfg.photometric else None
    meta = {**dl.meta, "name": name or Path(out).name}
    meta["synth"] = {**dl.meta.get("synth", {}), "realism": cfg.to_dict(), "truth": dl.name}
    geo = cfg.ego_position_m or cfg.ego_yaw_deg
    total = len(dl.frames) + len(dl.sweeps)
    seen: dict[str, int] = {}
    with LogWriter(out, meta, overwrite=overwrite) as w:
        for i, f in enumerate(dl.frames):
            k = seen.get(f.camera, 0)
            seen[f.camera] = k + 1
            rgb = dl.image(f.index)
            depth = dl.depth(f.index)
            if cfg.motion_blur_ms:
                rgb = motion_blur(rgb, depth, f.K, f.c2w, ego, f.t_us, cfg.motion_blur_ms)
            if photo is not None:
                rgb = photo.apply(rgb, f.camera, k, f.K)
            if cfg.noise_read or cfg.noise_shot:
                rgb = add_sensor_noise(rgb, cfg.noise_read, cfg.noise_shot, st[_NOISE])
            c2w = _pose_error(ego, noisy_ego, f.t_us, f.t_us) @ f.c2w if geo else f.c2w
            w.add_frame(f.camera, f.t_us, c2w, f.K, rgb, depth)
            if progress is not None:
                progress(i + 1, total)
        lt = st[_LIDAR_T]
        for j, sw in enumerate(dl.sweeps):
            dt_ms = cfg.lidar_time_offset_ms + (cfg.lidar_time_jitter_ms * float(lt.standard_normal()) if cfg.lidar_time_jitter_ms else 0.0)
            t_log = sw.t_us + round(dt_ms * 1000)
            pts, extra = dl.lidar(sw.index), dl.lidar_extra(sw.index)
            s2w = sw.sensor_to_world
            if geo or t_log != sw.t_us:
                m = _pose_error(ego, noisy_ego, sw.t_us, t_log)
                s2w = m @ s2w
                xyz = pts[:, :3].astype(np.float64) @ m[:3, :3].T + m[:3, 3]
                pts = np.column_stack([xyz, pts[:, 3]]).astype(np.float32)
            w.add_sweep(t_log, s2w, pts, extra)
            if progress is not None:
                progress(len(dl.frames) + j + 1, total)
        w.set_tracks(noisy_ego, tracks)
        w.set_map(dl.map)
    log.info("wrote %s: %s with realism %s", out, dl.name, {k: v for k, v in cfg.to_dict().items() if v})
    return Path(out)
