"""A drive log turned into training tensors for :class:`sim.recon.scene.SceneModel` (no nerfstudio).

Cameras: every camera selected (``camera``: one name, a comma-separated list or ``all``), each
frame with its own intrinsics, image size, pose and time stamp; actors are placed at each frame's
and each LiDAR ray's own time. Held-out data (never trained on): frame ``k`` of each camera with
``k % eval_every == 0`` and LiDAR sweeps with ``index % eval_every == 0`` (:mod:`sim.recon.split`).
Everything is in the log's world frame (metres).

LiDAR rays: the log stores only returns; the full ray grid of each sweep is rebuilt from the rig
(``meta.json`` ``rig.lidar``: beams, azimuth steps, vertical FOV, the same ordering as
:meth:`sim.sensors.LidarSpec.ray_directions`). Each return is assigned to its (beam, column) cell;
cells without a return are dropped rays (range 0). With per-point firing times
(``lidar/<i>.extra.npy``) each return's ray starts where the sensor was when it fired
(:mod:`sim.recon.lidar_motion`; ``motion_compensation``), for the rays and the static points of
the occupancy grid alike.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from sim.errors import LogFormatError
from sim.log import DriveLog, Track
from sim.recon.config import ActorState, SceneConfig
from sim.recon.lidar_motion import bin_times_us, compensated_ray_grid, sensor_poses_at, time_bin
from sim.recon.split import select_cameras, split_frames
from sim.sensors import LidarSpec, SensorRig

__all__ = ["ReconData", "actor_poses_at", "build_occupancy", "check_trainable", "extend_tracks_to_log", "lidar_ray_grid", "scene_config_for"]

log = logging.getLogger(__name__)


def check_trainable(dl: DriveLog, camera: str | None, eval_every: int) -> None:
    """Refuse a log the reconstructor cannot train on with ``camera`` (a name, a comma-separated
    list, ``all`` or None for the first; :func:`sim.recon.split.select_cameras`): a camera not in
    the rig, or a selected camera without a training frame (every frame held out: see
    :mod:`sim.recon.split`)."""
    cams = select_cameras(dl, camera)
    train, _ = split_frames(dl, cams, eval_every)
    have = {dl.frames[i].camera for i in train}
    for c in cams:
        if c not in have:
            raise LogFormatError(f"expected at least one training frame of camera {c!r} (frames k of a camera with k % {eval_every} != 0; "
                                 f"the others are held out)", file=dl.root / "transforms.json", field="frames")


def actor_poses_at(dl: DriveLog, t_us: int) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Poses (A, 4) x, y, z (box bottom), yaw of every track at ``t_us`` and their validity (A,)."""
    A = len(dl.tracks)
    pose = np.zeros((A, 4))
    valid = np.zeros(A, dtype=bool)
    for a, tr in enumerate(dl.tracks):
        p = tr.pose_at(int(t_us))
        if p is not None:
            pose[a], valid[a] = p, True
    return pose, valid


def _extrapolate(tr: Track, t_us: int, end: bool) -> Track:
    """``tr`` with one more sample at ``t_us`` before its first (``end`` False) or after its last
    sample: constant velocity from its two outermost samples (x, y, z and yaw; held when it has
    one sample or is static)."""
    i0, i1 = (-2, -1) if end else (1, 0)
    p = tr.pose[i1].copy()
    if len(tr.t_us) > 1 and not tr.static:
        dt = float(tr.t_us[i1] - tr.t_us[i0])
        dyaw = (tr.pose[i1, 3] - tr.pose[i0, 3] + np.pi) % (2 * np.pi) - np.pi
        v = np.r_[tr.pose[i1, :3] - tr.pose[i0, :3], dyaw] / dt
        p = p + v * float(t_us - tr.t_us[i1])
    t = np.r_[tr.t_us, t_us] if end else np.r_[t_us, tr.t_us]
    pose = np.vstack([tr.pose, p]) if end else np.vstack([p, tr.pose])
    return dataclasses.replace(tr, t_us=t.astype(np.int64), pose=pose)


def extend_tracks_to_log(dl: DriveLog, max_us: int = 1_000_000) -> DriveLog:
    """``dl`` with the tracks annotated at its first (last) annotated time extended back (forward)
    to its first (last) camera frame or LiDAR sweep, at constant velocity, when that gap is at most
    ``max_us``. A real log's boxes exist only at its keyframes (nuScenes: 2 Hz, the first one at the
    first LiDAR sweep), while its cameras start before and run past them: without this, the frames
    outside the keyframe span show actors the scene has no box for (they are learned as background
    or rendered missing). Tracks that start or end inside the span are left alone (the actor
    really appears or leaves); a log whose tracks span its sensors (synthetic) is returned as is."""
    if not dl.tracks:
        return dl
    ts = [int(f.t_us) for f in dl.frames] + [int(s.t_us) for s in dl.sweeps]
    if not ts:
        return dl
    lo, hi = min(ts), max(ts)
    a_lo = min(int(t.t_us[0]) for t in dl.tracks if len(t.t_us))
    a_hi = max(int(t.t_us[-1]) for t in dl.tracks if len(t.t_us))
    out, n = [], 0
    for tr in dl.tracks:
        if len(tr.t_us):
            if lo < a_lo <= lo + max_us and int(tr.t_us[0]) == a_lo:
                tr, n = _extrapolate(tr, lo, end=False), n + 1
            if hi - max_us <= a_hi < hi and int(tr.t_us[-1]) == a_hi:
                tr, n = _extrapolate(tr, hi, end=True), n + 1
        out.append(tr)
    if n:
        log.info("extended %d track ends to the log's sensor span [%d, %d] us (annotated [%d, %d])", n, lo, hi, a_lo, a_hi)
    return dataclasses.replace(dl, tracks=tuple(out)) if n else dl


def points_in_boxes(pts: NDArray[np.floating], pose: NDArray[np.float64], size: NDArray[np.float64], valid: NDArray[np.bool_], margin: float) -> NDArray[np.bool_]:
    """(N,) mask of points (N, 3) inside any valid box (poses (A, 4), sizes (A, 3), scaled by margin)."""
    inside = np.zeros(len(pts), dtype=bool)
    for a in np.flatnonzero(valid):
        x, y, z, yaw = pose[a]
        c, s = np.cos(yaw), np.sin(yaw)
        dx, dy = pts[:, 0] - x, pts[:, 1] - y
        lx, ly = c * dx + s * dy, -s * dx + c * dy
        lz = pts[:, 2] - (z + size[a, 2] / 2)
        h = size[a] * margin / 2
        inside |= (np.abs(lx) <= h[0]) & (np.abs(ly) <= h[1]) & (np.abs(lz) <= h[2])
    return inside


def lidar_ray_grid(spec: LidarSpec, sensor_to_world: NDArray[np.float64], pts_world: NDArray[np.floating]) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """Rebuild the full ray grid of one sweep, every ray from the stamped pose (no motion
    compensation; :func:`sim.recon.lidar_motion.compensated_ray_grid` is the general form).

    Returns:
        dirs (B*Az, 3) unit directions in the sensor frame (the exact return direction where there
        is a return), range (B*Az,) metres (0 = dropped), intensity (B*Az,).
    """
    dirs, rng, inten, _, _ = compensated_ray_grid(spec, sensor_to_world, pts_world)
    return dirs, rng, inten


def build_occupancy(
    points: NDArray[np.floating], aabb_min: NDArray[np.float64], shape: tuple[int, int, int], voxel: float, dilate: int = 1
) -> torch.Tensor:
    """Bool (nx, ny, nz) grid marking voxels that contain a point, dilated by ``dilate`` voxels."""
    occ = torch.zeros(shape, dtype=torch.bool)
    if len(points):
        i = np.floor((points[:, :3] - aabb_min) / voxel).astype(np.int64)
        ok = np.all((i >= 0) & (i < np.asarray(shape)), axis=1)
        i = torch.from_numpy(i[ok])
        occ[i[:, 0], i[:, 1], i[:, 2]] = True
    if dilate > 0:
        k = 2 * dilate + 1
        occ = torch.nn.functional.max_pool3d(occ[None, None].float(), k, stride=1, padding=dilate)[0, 0] > 0
    return occ


def scene_config_for(base: SceneConfig, aabb_min: NDArray[np.float64], aabb_max: NDArray[np.float64], n_actors: int) -> SceneConfig:
    """``base`` with the extent, occupancy shape and actor count of a scene filled in."""
    shape = tuple(int(x) for x in np.ceil((aabb_max - aabb_min) / base.occ_voxel_m).astype(int))
    return dataclasses.replace(
        base,
        aabb_min=tuple(float(x) for x in aabb_min),
        aabb_max=tuple(float(x) for x in aabb_max),
        occ_shape=shape,  # type: ignore[arg-type]
        n_actors=n_actors,
    )


def _camera_arrays(dl: DriveLog, frames: list[Any]) -> tuple[NDArray[np.float64], ...]:
    """Per frame index of the log (identity / zeros for frames of other cameras): camera-to-world
    (N, 4, 4), intrinsics (N, 3, 3), and the actors' poses (N, A, 4) and validity (N, A) at each
    of ``frames``' own times."""
    n, A = len(dl.frames), len(dl.tracks)
    c2w = np.tile(np.eye(4), (n, 1, 1))
    Ks = np.tile(np.eye(3), (n, 1, 1))
    cam_pose = np.zeros((n, A, 4))
    cam_valid = np.zeros((n, A), dtype=bool)
    for f in frames:
        c2w[f.index], Ks[f.index] = f.c2w, f.K
        cam_pose[f.index], cam_valid[f.index] = actor_poses_at(dl, f.t_us)
    return c2w, Ks, cam_pose, cam_valid


def _sweep_rays(dl: DriveLog, spec: LidarSpec, j: int, compensate: bool) -> tuple[NDArray[np.float32], ...]:
    """Points (N, 4) of sweep ``j`` and its compensated ray grid (:func:`compensated_ray_grid`:
    dirs, range, intensity, origin offset, dt_us) plus each point's firing offset dt_us (N,)."""
    sw = dl.sweeps[j]
    pts = dl.lidar(j)
    extra = dl.lidar_extra(j) if compensate else None
    if extra is None or spec.firing == "instant" or not len(pts):
        grid = compensated_ray_grid(spec, sw.sensor_to_world, pts)
        return (pts, *grid, np.zeros(len(pts), np.float32))
    dt = extra[:, 0].astype(np.float64)
    poses = sensor_poses_at(dl.ego, sw.sensor_to_world, sw.t_us, sw.t_us + dt)
    grid = compensated_ray_grid(spec, sw.sensor_to_world, pts, poses, dt)
    return (pts, *grid, dt.astype(np.float32))


def _lidar_arrays(dl: DriveLog, spec: LidarSpec, train_sweeps: list[int], size: NDArray[np.float64], margin: float, compensate: bool = True
                  ) -> tuple[dict[str, Any], list[NDArray[np.floating]]]:
    """Every sweep's full ray grid (motion-compensated when the log has per-point times), sensor
    pose, the actor poses at its stamp and at each of its time slices as the :class:`ReconData`
    LiDAR fields, and the static points of the training sweeps (returns inside actor boxes scaled
    by ``margin`` at their slice's time dropped)."""
    S, A, B = len(dl.sweeps), len(dl.tracks), spec.beams * spec.azimuth_steps
    nb = len(bin_times_us(0, spec))
    dirs = np.zeros((S, B, 3), np.float32)
    rngs = np.zeros((S, B), np.float32)
    inten = np.zeros((S, B), np.float32)
    offs = np.zeros((S, B, 3), np.float16)
    bins = np.zeros((S, B), np.uint8)
    lp = np.zeros((S, A, 4))
    lv = np.zeros((S, A), dtype=bool)
    bp = np.zeros((S, nb, A, 4))
    bv = np.zeros((S, nb, A), dtype=bool)
    bt = np.zeros((S, nb), np.int64)
    s2w = np.zeros((S, 4, 4))
    static: list[NDArray[np.floating]] = []
    for j, sw in enumerate(dl.sweeps):
        pts, dirs[j], rngs[j], inten[j], off, dt_grid, dt_pts = _sweep_rays(dl, spec, j, compensate)
        offs[j] = off.astype(np.float16)
        bins[j] = time_bin(dt_grid, spec)
        s2w[j] = sw.sensor_to_world
        lp[j], lv[j] = actor_poses_at(dl, sw.t_us)
        bt[j] = bin_times_us(sw.t_us, spec)
        for b in range(nb):
            bp[j, b], bv[j, b] = actor_poses_at(dl, int(bt[j, b]))
        if j in train_sweeps:
            pb = time_bin(dt_pts, spec)
            keep = np.ones(len(pts), dtype=bool)
            for b in range(nb):
                m = pb == b
                keep[m] = ~points_in_boxes(pts[m], bp[j, b], size, bv[j, b], margin)
            static.append(pts[keep, :3])
    lidar = {
        "s2w": torch.from_numpy(s2w).float(), "lidar_pose": torch.from_numpy(lp).float(),
        "lidar_valid": torch.from_numpy(lv), "lidar_dirs": torch.from_numpy(dirs),
        "lidar_range": torch.from_numpy(rngs), "lidar_intensity": torch.from_numpy(inten),
        "lidar_origin_off": torch.from_numpy(offs) if np.any(offs) else None,
        "lidar_bin": torch.from_numpy(bins), "lidar_pose_bins": torch.from_numpy(bp).float(),
        "lidar_valid_bins": torch.from_numpy(bv), "lidar_bin_t_us": torch.from_numpy(bt),
    }
    return lidar, static


def _depth_points(dl: DriveLog, train_frames: list[int], cam_pose: NDArray[np.float64], cam_valid: NDArray[np.bool_],
                  size: NDArray[np.float64], margin: float) -> list[NDArray[np.floating]]:
    """World points of the training frames' depth maps -- every second pixel of each
    axis, every ``2 * ceil(sqrt(n / 200))``-th for ``n`` > 200 frames (a six-camera log stays
    within the points of 200 frames, kept as float32) -- those inside actor boxes (scaled by ``margin``) dropped;
    frames without depth add nothing."""
    out: list[NDArray[np.floating]] = []
    step = 2 * max(1, int(np.ceil(np.sqrt(len(train_frames) / 200.0))))
    for i in train_frames:
        dep = dl.depth(i)
        if dep is None:
            continue
        f = dl.frames[i]
        vv, uu = np.mgrid[0 : f.height : step, 0 : f.width : step]
        z = dep[vv, uu]
        ok = z > 0
        x = (uu[ok] + 0.5 - f.cx) / f.fx * z[ok]
        y = (vv[ok] + 0.5 - f.cy) / f.fy * z[ok]
        pc = np.stack([x, -y, -z[ok]], 1)  # OpenGL camera axes
        pw = pc @ f.c2w[:3, :3].T + f.c2w[:3, 3]
        keep = ~points_in_boxes(pw, cam_pose[i], size, cam_valid[i], margin)
        out.append(pw[keep] if step == 2 else pw[keep].astype(np.float32))
    return out


def _ground_under_actors(dl: DriveLog) -> list[NDArray[np.floating]]:
    """Points 5 cm below each actor box's bottom on a 0.2 m grid, at up to ~20 of its samples, so
    removing an actor shows road, not sky."""
    out: list[NDArray[np.floating]] = []
    for tr in dl.tracks:
        l_, w_, _ = tr.size
        gx, gy = np.meshgrid(np.linspace(-l_ / 2, l_ / 2, max(int(l_ / 0.2), 2)), np.linspace(-w_ / 2, w_ / 2, max(int(w_ / 0.2), 2)))
        for p in tr.pose[:: max(len(tr.pose) // 20, 1)]:
            c, s = np.cos(p[3]), np.sin(p[3])
            out.append(np.stack([p[0] + c * gx.ravel() - s * gy.ravel(), p[1] + s * gx.ravel() + c * gy.ravel(), np.full(gx.size, p[2] - 0.05)], 1))
    return out


def _extent(pts: NDArray[np.floating], cams: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Scene box (m) of the static points and training camera centres: their 0.1 / 99.9
    percentiles grown by 2 m (a 20 m cube around the origin when there is nothing)."""
    ext = np.concatenate([pts, cams], 0) if len(pts) else cams
    lo = np.percentile(ext, 0.1, axis=0) - 2.0 if len(ext) else np.full(3, -10.0)
    hi = np.percentile(ext, 99.9, axis=0) + 2.0 if len(ext) else np.full(3, 10.0)
    return lo, hi


@dataclass
class ReconData:
    """Training/evaluation tensors of one drive log (world frame, metres).

    Camera arrays are indexed by frame index (all frames of ``transforms.json``); ``images`` holds
    uint8 (N, H, W, 3) for the frames loaded (training frames, plus held-out ones when asked).
    """

    log: DriveLog
    cfg: SceneConfig
    occupancy: torch.Tensor
    actor_ids: list[str]
    actor_cls: list[str]
    actor_size: torch.Tensor  # (A, 3)
    c2w: torch.Tensor  # (N, 4, 4)
    K: torch.Tensor  # (N, 3, 3)
    width: int
    height: int
    cam_pose: torch.Tensor  # (N, A, 4)
    cam_valid: torch.Tensor  # (N, A)
    train_frames: list[int]
    eval_frames: list[int]
    images: dict[int, torch.Tensor] = field(default_factory=dict)
    # LiDAR (train + eval sweeps)
    lidar_spec: LidarSpec | None = None
    s2w: torch.Tensor | None = None  # (S, 4, 4)
    lidar_pose: torch.Tensor | None = None  # (S, A, 4)
    lidar_valid: torch.Tensor | None = None
    lidar_dirs: torch.Tensor | None = None  # (S, B*Az, 3) sensor frame
    lidar_range: torch.Tensor | None = None  # (S, B*Az)
    lidar_intensity: torch.Tensor | None = None
    train_sweeps: list[int] = field(default_factory=list)
    eval_sweeps: list[int] = field(default_factory=list)
    #: (S, B*Az, 3) float16 world offset (m) of each ray's firing-time origin from ``s2w`` (None: none)
    lidar_origin_off: torch.Tensor | None = None
    lidar_bin: torch.Tensor | None = None  # (S, B*Az) uint8 time slice of each ray
    lidar_pose_bins: torch.Tensor | None = None  # (S, nb, A, 4) actor poses at each slice's time
    lidar_valid_bins: torch.Tensor | None = None  # (S, nb, A)
    lidar_bin_t_us: torch.Tensor | None = None  # (S, nb) int64 slice times
    # multi-camera
    cameras: list[str] = field(default_factory=list)
    #: (N,) long: position in ``cameras`` of each frame's camera (-1: a camera not trained on)
    frame_camera: torch.Tensor | None = None
    frame_t_us: torch.Tensor | None = None  # (N,) int64 capture times
    widths: torch.Tensor | None = None  # (N,) long image sizes per frame
    heights: torch.Tensor | None = None

    @classmethod
    def from_log(
        cls,
        dl: DriveLog,
        base: SceneConfig,
        *,
        eval_every: int = 10,
        load_images: bool = True,
        use_camera_depth: bool = True,
        camera: str | None = None,
        motion_compensation: bool = True,
    ) -> ReconData:
        """Read a log (its tracks extended to its sensors' time span, :func:`extend_tracks_to_log`;
        ``log`` holds them): actors, the static occupancy grid (from training LiDAR sweeps, and from the
        training frames' depth maps when ``use_camera_depth``; points inside actor boxes are
        excluded; the ground under each actor box is marked so a removed actor leaves road), the
        frames of ``camera`` (a name, a comma-separated list or ``all``; default the rig's first)
        and the LiDAR ray grids (motion-compensated when ``motion_compensation`` and the log has
        per-point firing times)."""
        dl = extend_tracks_to_log(dl)
        cams = select_cameras(dl, camera)
        check_trainable(dl, ",".join(cams), eval_every)
        frames = [f for f in dl.frames if f.camera in set(cams)]
        A = len(dl.tracks)
        size = np.array([t.size for t in dl.tracks], dtype=np.float64).reshape(A, 3)
        train_frames, eval_frames = split_frames(dl, cams, eval_every)
        c2w, Ks, cam_pose, cam_valid = _camera_arrays(dl, frames)
        spec = SensorRig.from_meta(dl.meta["rig"]).lidar
        S = len(dl.sweeps)
        train_sweeps = [j for j in range(S) if j % eval_every != 0]
        eval_sweeps = [j for j in range(S) if j % eval_every == 0]
        lidar, pts_all = (_lidar_arrays(dl, spec, train_sweeps, size, base.actor_margin, motion_compensation)
                          if spec is not None and S else ({}, []))
        if use_camera_depth:
            pts_all += _depth_points(dl, train_frames, cam_pose, cam_valid, size, base.actor_margin)
        pts_all += _ground_under_actors(dl)
        pts = np.concatenate(pts_all, 0) if pts_all else np.zeros((0, 3))
        lo, hi = _extent(pts, c2w[train_frames, :3, 3] if train_frames else np.zeros((0, 3)))
        cfg = scene_config_for(base, lo, hi, A)
        occ = build_occupancy(pts, lo, cfg.occ_shape, cfg.occ_voxel_m, dilate=1)
        log.info("occupancy %s voxels of %.2f m: %.2f%% occupied", cfg.occ_shape, cfg.occ_voxel_m, 100 * occ.float().mean().item())
        pos = {c: k for k, c in enumerate(cams)}
        n = len(dl.frames)
        data = cls(
            log=dl, cfg=cfg, occupancy=occ,
            actor_ids=[t.id for t in dl.tracks], actor_cls=[t.cls for t in dl.tracks],
            actor_size=torch.from_numpy(size).float(),
            c2w=torch.from_numpy(c2w).float(), K=torch.from_numpy(Ks).float(),
            width=frames[0].width, height=frames[0].height,
            cam_pose=torch.from_numpy(cam_pose).float(), cam_valid=torch.from_numpy(cam_valid),
            train_frames=train_frames, eval_frames=eval_frames,
            lidar_spec=spec, train_sweeps=train_sweeps, eval_sweeps=eval_sweeps, **lidar,
            cameras=cams, frame_camera=torch.tensor([pos.get(f.camera, -1) for f in dl.frames], dtype=torch.long).reshape(n),
            frame_t_us=torch.tensor([int(f.t_us) for f in dl.frames], dtype=torch.int64).reshape(n),
            widths=torch.tensor([f.width for f in dl.frames], dtype=torch.long).reshape(n),
            heights=torch.tensor([f.height for f in dl.frames], dtype=torch.long).reshape(n),
        )
        if load_images:
            data.load_images(train_frames)
        return data

    def load_images(self, indices: list[int]) -> None:
        for i in indices:
            if i not in self.images:
                self.images[i] = torch.from_numpy(self.log.image(i).copy())

    def image_float(self, i: int) -> torch.Tensor:
        """(H, W, 3) float in [0, 1] of frame ``i``."""
        self.load_images([i])
        return self.images[i].float() / 255.0

    def actors_for_frames(self, frames: list[int]) -> ActorState:
        A = self.actor_size.shape[0]
        return ActorState(torch.arange(A), self.cam_pose[frames], self.actor_size, self.cam_valid[frames])

    def actors_for_sweeps(self, sweeps: list[int]) -> ActorState:
        A = self.actor_size.shape[0]
        assert self.lidar_pose is not None and self.lidar_valid is not None
        return ActorState(torch.arange(A), self.lidar_pose[sweeps], self.actor_size, self.lidar_valid[sweeps])
