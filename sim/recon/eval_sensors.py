"""Held-out camera frames and LiDAR sweeps scored for ``eval-recon`` (:mod:`sim.recon.evaluate`).

Protocol (fixed; :mod:`sim.recon.split`): a camera's held-out frames are its frames ``k`` with
``k % eval_every == 0``; each is rendered at its own pose, intrinsics and time (actors at that
time) and, when the scene has appearance embeddings for this log, with the embedding of the
nearest training frame of the same camera plus that camera's own embedding (also used for the
lane-shifted and edited views at its time). When the bundle
refined the ego poses (``info.refine_ego``), a held-out frame's and sweep's pose is corrected by
the bundle's ego correction at its time (``E_bundle(t) E_log(t)^-1``, interpolated like every ego
pose). LiDAR: held-out sweeps (``j % eval_every == 0``); a log with per-point firing times is
scored ray by ray from the sensor's firing-time position with actors at each time slice
(:mod:`sim.recon.lidar_motion`), otherwise the rig's ray grid is rendered from the stamped pose.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sim.log import DriveLog
from sim.recon.data import lidar_ray_grid
from sim.recon.lidar_motion import bin_times_us, compensated_ray_grid, ego_se3_at, sensor_poses_at, time_bin
from sim.recon.split import nearest_training_frame
from sim.sensors import LidarSpec

__all__ = ["appearance_rows", "ego_correction", "score_heldout", "score_lidar"]


def ego_correction(b: Any, dl: DriveLog, t_us: int) -> NDArray[np.float64] | None:
    """The world-frame correction ``E_bundle(t) E_log(t)^-1`` (4x4) of a bundle that refined the
    ego poses, or None (no refinement, or the bundle's ego track is not this log's: other sample
    times, or more than 2 m away -- a bundle seen through another frame)."""
    ego = getattr(b, "ego", None)
    if not b.info.get("refine_ego") or ego is None or not np.array_equal(np.asarray(ego.t_us), np.asarray(dl.ego.t_us)):
        return None
    if np.abs(np.asarray(ego.pose)[:, :3] - np.asarray(dl.ego.pose)[:, :3]).max() > 2.0:
        return None
    e_b = ego_se3_at(b.ego, np.array([t_us]))[0]
    e_l = ego_se3_at(dl.ego, np.array([t_us]))[0]
    return e_b @ np.linalg.inv(e_l)


def appearance_rows(b: Any, dl: DriveLog, index: int, cameras: list[str], train_frames: list[int]) -> tuple[int, int] | None:
    """(frame row, camera row) of the embeddings a held-out frame ``index`` is rendered with: the
    nearest training frame of its camera and its camera's row (the order of the bundle's
    ``info.appearance_cameras``, else ``cameras``) (None: the scene has no embeddings for this
    log, or the camera was not trained on)."""
    scene = getattr(b, "scene", None)
    app = getattr(scene, "appearance", None)
    cam = dl.frames[index].camera
    rows = [str(c) for c in (b.info.get("appearance_cameras") or cameras)]
    if app is None or cam not in rows or app.frame_affine.shape[0] != len(dl.frames):
        return None
    near = nearest_training_frame(dl, index, train_frames)
    k = rows.index(cam)
    return (-1 if near is None else near, k if k < app.camera_affine.shape[0] else -1)


def score_heldout(b: Any, dl: DriveLog, frames: list[int], cameras: list[str], train_frames: list[int],
                  sheet: list[NDArray[np.uint8]], sheet_rows: int = 4) -> dict[str, Any]:
    """PSNR / SSIM (means and per frame) and render time of held-out ``frames`` (indices)."""
    from sim.recon.evaluate import _error_image, psnr_u8, ssim_u8

    ps, ss, times = [], [], []
    for i in frames:
        f = dl.frames[i]
        c2w = f.c2w
        fix = ego_correction(b, dl, f.t_us)
        if fix is not None:
            c2w = fix @ c2w
        rows = appearance_rows(b, dl, i, cameras, train_frames)
        kw = {"appearance": rows} if rows is not None else {}
        t0 = time.perf_counter()
        rgb, _ = b.render_camera(c2w, f.K, f.width, f.height, b.actors_at(f.t_us), **kw)
        times.append(time.perf_counter() - t0)
        gt = dl.image(i)
        ps.append(psnr_u8(rgb, gt))
        ss.append(ssim_u8(rgb, gt))
        if len(sheet) < sheet_rows:
            sheet.append(np.concatenate([gt, rgb, _error_image(gt, rgb)], 1))
    return {"frames": list(frames), "psnr": float(np.mean(ps)) if ps else None, "ssim": float(np.mean(ss)) if ss else None,
            "render_ms_mean": 1000 * float(np.mean(times)) if times else None, "psnr_per_frame": [round(float(p), 3) for p in ps]}


def _sweep_truth(dl: DriveLog, spec: LidarSpec, j: int) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32] | None, NDArray[np.uint8]]:
    """Directions (stamped sensor frame) to render, true ranges, origin offsets (None: all rays
    from the stamped pose) and time slices of sweep ``j``'s ray grid."""
    sw = dl.sweeps[j]
    pts = dl.lidar(j)
    extra = dl.lidar_extra(j)
    if extra is None or spec.firing == "instant" or not len(pts):
        _, rng, _ = lidar_ray_grid(spec, sw.sensor_to_world, pts)
        grid = spec.ray_directions().reshape(-1, 3).astype(np.float32)  # rays as the sensor fires them
        return grid, rng, None, np.zeros(len(rng), np.uint8)
    dt = extra[:, 0].astype(np.float64)
    poses = sensor_poses_at(dl.ego, sw.sensor_to_world, sw.t_us, sw.t_us + dt)
    dirs, rng, _, off, dt_grid = compensated_ray_grid(spec, sw.sensor_to_world, pts, poses, dt)
    return dirs, rng, off, time_bin(dt_grid, spec)


def score_lidar(b: Any, dl: DriveLog, spec: LidarSpec, sweeps: list[int]) -> dict[str, Any]:
    """Median / mean absolute range error (m) over rays with a true return, ray-drop accuracy and
    render time of held-out ``sweeps`` (see the module docstring)."""
    errs, accs, ltimes = [], [], []
    for j in sweeps:
        sw = dl.sweeps[j]
        dirs, rng, off, bins = _sweep_truth(dl, spec, j)
        s2w = sw.sensor_to_world
        fix = ego_correction(b, dl, sw.t_us)
        if fix is not None:
            s2w = fix @ s2w
        rr = np.zeros(len(rng), np.float32)
        drop = np.zeros(len(rng), np.float32)
        t0 = time.perf_counter()
        for k, t in enumerate(bin_times_us(sw.t_us, spec) if off is not None else [sw.t_us]):
            m = bins == k
            if not m.any():
                continue
            kw = {} if off is None else {"origin_offset": off[m]}
            r = b.render_lidar(s2w, dirs[m], b.actors_at(int(t)), **kw)
            rr[m], drop[m] = r["range"], r["drop_prob"]
        ltimes.append(time.perf_counter() - t0)
        hit = rng > 0
        errs.append(np.abs(rr[hit] - rng[hit]))
        accs.append(float(np.mean((drop > 0.5) == ~hit)))
    e = np.concatenate(errs) if errs else np.zeros(0)
    return {"sweeps": sweeps, "median_abs_range_err_m": float(np.median(e)) if len(e) else None,
            "mean_abs_range_err_m": float(np.mean(e)) if len(e) else None,
            "ray_drop_accuracy": float(np.mean(accs)) if accs else None,
            "render_ms_mean": 1000 * float(np.mean(ltimes)) if ltimes else None,
            "motion_compensated": any(dl.sweeps[j].extra_path is not None for j in sweeps) and spec.firing != "instant"}
