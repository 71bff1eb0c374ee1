"""Realism evaluation of a scene bundle against its drive log (``loopdrive eval-recon``).

Measured (all on data never trained on):

* **held-out frames** (``index % eval_every == 0`` of the bundle's camera): PSNR (dB) and SSIM.
* **lane-shifted views**: the ego moved 1, 2 and 3 m to its left at the first half of the held-out
  frames' times (``lane_shift.frames``); truth rendered exactly by the mesh renderer
  (:class:`sim.render.mesh.MeshRenderer`, synth logs only).
* **actor-removed / actor-moved views**: the nearest visible actor removed, or moved 2 m to its
  left, against mesh truth of the same edit (synth logs only).
* **LiDAR** on held-out sweeps: median absolute range error (m) over rays with a true return, and
  ray-drop accuracy (predicted drop = ``drop_prob > 0.5`` vs no true return).

LPIPS is not reported: it needs downloaded weights. Writes ``eval_<mode>.json`` and
``contact_sheet_<mode>.png`` (rows of truth | render | error x4; mode ``volume`` or ``surface``, so
the two modes can share one output folder) into the output folder (:func:`eval_paths`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from sim.errors import BundleError
from sim.log import DriveLog, validate_log, write_json_atomic
from sim.recon.bundle import Bundle, load_bundle
from sim.recon.data import lidar_ray_grid
from sim.sensors import SensorRig

__all__ = ["SurfaceBundle", "eval_paths", "evaluate_bundle", "evaluate_scene", "psnr_u8", "ssim_u8"]

log = logging.getLogger(__name__)


def psnr_u8(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    """PSNR (dB) between two uint8 images."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)) / 255.0**2
    return 10.0 * math.log10(1.0 / max(mse, 1e-10))


def ssim_u8(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    """SSIM (torchmetrics, Gaussian window 11, data range 1) between two uint8 RGB images."""
    from torchmetrics.functional import structural_similarity_index_measure

    ta = torch.from_numpy(np.array(a)).float().permute(2, 0, 1)[None] / 255.0
    tb = torch.from_numpy(np.array(b)).float().permute(2, 0, 1)[None] / 255.0
    return float(structural_similarity_index_measure(ta, tb, data_range=1.0))  # type: ignore[arg-type]


def _error_image(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> NDArray[np.uint8]:
    e = np.abs(a.astype(np.float32) - b.astype(np.float32)).mean(-1) * 4
    return np.repeat(np.clip(e, 0, 255).astype(np.uint8)[..., None], 3, -1)


def _mesh_renderer(dl: DriveLog) -> tuple[Any, str | None]:
    try:
        from sim.render.mesh import MeshRenderer

        return MeshRenderer.from_log(dl), None
    except Exception as exc:  # not a synth log, or no GL: lane-shift/edit views are skipped
        return None, f"{type(exc).__name__}: {exc}"


def _world(dl: DriveLog, t_us: int) -> Any:
    from sim.synth import world_from_tracks

    return world_from_tracks(dl.ego, dl.tracks, t_us)


def _with(world: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(world, **changes)


def eval_paths(out: str | os.PathLike[str], mode: str) -> tuple[Path, Path]:
    """The results JSON and contact sheet :func:`evaluate_bundle` writes in ``out`` for ``mode``:
    ``eval_<mode>.json`` and ``contact_sheet_<mode>.png``."""
    return Path(out) / f"eval_{mode}.json", Path(out) / f"contact_sheet_{mode}.png"


def evaluate_bundle(
    bundle_dir: str | os.PathLike[str],
    log_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    max_frames: int = 12,
    max_sweeps: int = 6,
    shifts_m: tuple[float, ...] = (1.0, 2.0, 3.0),
    progress: Callable[[str], None] | None = None,
    mode: str = "volume",
) -> dict[str, Any]:
    """Evaluate a bundle on a log; write ``eval_<mode>.json`` and ``contact_sheet_<mode>.png`` to
    ``out`` (default: ``BUNDLE/eval``; :func:`eval_paths`). Returns the eval dict. ``mode`` ``surface`` scores the fast
    renderer's baked-surface background (:mod:`sim.recon.surface`) instead of volume rendering."""
    dl = validate_log(log_dir)  # the full check of the log (every payload) before the heavy work
    b: Bundle = load_bundle(bundle_dir)
    out = Path(out) if out is not None else Path(bundle_dir) / "eval"
    if mode not in ("volume", "surface"):
        raise BundleError(f"expected mode volume or surface, got {mode!r}", field="mode")
    scene: Any = SurfaceBundle(b) if mode == "surface" else b
    res_path, sheet_path = eval_paths(out, mode)
    res = evaluate_scene(scene, dl, out, max_frames=max_frames, max_sweeps=max_sweeps, shifts_m=shifts_m, progress=progress,
                         sheet_name=sheet_path.name)
    res["bundle"] = str(bundle_dir)
    res["mode"] = mode
    if mode == "surface":
        pr = b.surface()
        res["surface"] = {"level": pr.level, "triangles": pr.triangles, "calibration_median_depth_diff_m": pr.calib_err_m,
                          "calibration_median_rel_depth_diff": pr.calib_rel_err}
    write_json_atomic(res_path, res)
    return res


class SurfaceBundle:
    """A bundle whose renders draw the background from its baked surface."""

    def __init__(self, b: Bundle) -> None:
        self._b = b
        self._surface = b.surface()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._b, name)

    def render_camera(self, *args: Any, **kw: Any) -> Any:
        return self._b.render_camera(*args, surface=self._surface, **kw)

    def render_lidar(self, *args: Any, **kw: Any) -> Any:
        return self._b.render_lidar(*args, surface=self._surface, **kw)


def evaluate_scene(
    b: Any,
    dl: DriveLog,
    out: Path,
    *,
    max_frames: int = 12,
    max_sweeps: int = 6,
    shifts_m: tuple[float, ...] = (1.0, 2.0, 3.0),
    progress: Callable[[str], None] | None = None,
    sheet_name: str = "contact_sheet.png",
) -> dict[str, Any]:
    """Evaluate any scene with the :class:`~sim.recon.bundle.Bundle` render API (``info``,
    ``actors_at``, ``render_camera`` and optionally ``render_lidar``) on a log; writes
    the contact sheet ``sheet_name`` to ``out`` and returns the eval dict (the caller writes the JSON)."""
    out.mkdir(parents=True, exist_ok=True)
    every = int(b.info.get("eval_every", 10))
    cam_name = str(b.info.get("camera", dl.cameras[0]))
    rig = SensorRig.from_meta(dl.meta["rig"])
    cam = rig.camera(cam_name)
    frames = [f for f in dl.frames if f.camera == cam_name and f.index % every == 0][:max_frames]
    res: dict[str, Any] = {"log": str(dl.root), "eval_every": every, "camera": cam_name}
    sheet: list[NDArray[np.uint8]] = []

    def note(msg: str) -> None:
        if progress is not None:
            progress(msg)

    # ---- held-out frames
    ps, ss, times = [], [], []
    for f in frames:
        t0 = time.perf_counter()
        rgb, _ = b.render_camera(f.c2w, f.K, f.width, f.height, b.actors_at(f.t_us))
        times.append(time.perf_counter() - t0)
        gt = dl.image(f.index)
        ps.append(psnr_u8(rgb, gt))
        ss.append(ssim_u8(rgb, gt))
        if len(sheet) < 4:
            sheet.append(np.concatenate([gt, rgb, _error_image(gt, rgb)], 1))
    res["heldout"] = {"frames": [f.index for f in frames], "psnr": float(np.mean(ps)) if ps else None,
                      "ssim": float(np.mean(ss)) if ss else None, "render_ms_mean": 1000 * float(np.mean(times)) if times else None,
                      "psnr_per_frame": [round(float(p), 3) for p in ps]}
    note(f"held-out PSNR {res['heldout']['psnr']}")
    # ---- LiDAR
    if rig.lidar is not None and dl.sweeps and hasattr(b, "render_lidar"):
        sweeps = [j for j in range(len(dl.sweeps)) if j % every == 0][:max_sweeps]
        errs, accs, ltimes = [], [], []
        for j in sweeps:
            sw = dl.sweeps[j]
            dirs, rng, _ = lidar_ray_grid(rig.lidar, sw.sensor_to_world, dl.lidar(j))
            grid = rig.lidar.ray_directions().reshape(-1, 3)  # rays as the sensor fires them
            t0 = time.perf_counter()
            r = b.render_lidar(sw.sensor_to_world, grid, b.actors_at(sw.t_us))
            ltimes.append(time.perf_counter() - t0)
            hit = rng > 0
            errs.append(np.abs(r["range"][hit] - rng[hit]))
            accs.append(float(np.mean((r["drop_prob"] > 0.5) == ~hit)))
            del dirs
        e = np.concatenate(errs) if errs else np.zeros(0)
        res["lidar"] = {"sweeps": sweeps, "median_abs_range_err_m": float(np.median(e)) if len(e) else None,
                        "mean_abs_range_err_m": float(np.mean(e)) if len(e) else None,
                        "ray_drop_accuracy": float(np.mean(accs)) if accs else None,
                        "render_ms_mean": 1000 * float(np.mean(ltimes)) if ltimes else None}
        note(f"LiDAR median range error {res['lidar']['median_abs_range_err_m']}")
    # ---- novel views against mesh truth
    mesh, why = _mesh_renderer(dl)
    if mesh is None:
        res["lane_shift"] = res["actor_removed"] = res["actor_moved"] = {"skipped": why}
    else:
        try:
            _novel_views(b, dl, mesh, cam, frames[: max(1, max_frames // 2)], shifts_m, res, sheet)
        finally:
            mesh.close()
    if sheet:
        w = max(s.shape[1] for s in sheet)
        rows = [np.pad(s, ((0, 0), (0, w - s.shape[1]), (0, 0))) for s in sheet]
        Image.fromarray(np.concatenate(rows, 0)).save(out / sheet_name)
    return res


def _novel_views(b: Bundle, dl: DriveLog, mesh: Any, cam: Any, frames: list[Any], shifts: tuple[float, ...], res: dict[str, Any], sheet: list[NDArray[np.uint8]]) -> None:
    lane: dict[str, list[float]] = {f"{s:g}m": [] for s in shifts}
    removed, moved = [], []
    for f in frames:
        w0 = _world(dl, f.t_us)
        yaw = float(w0.yaw[0])
        left = np.array([-math.sin(yaw), math.cos(yaw)])
        for s in shifts:
            wx = w0.x.copy()
            wy = w0.y.copy()
            wx[0] += s * left[0]
            wy[0] += s * left[1]
            truth = mesh.render_camera(_with(w0, x=wx, y=wy), cam)
            c2w = truth.c2w
            pred, _ = b.render_camera(c2w, cam.K, cam.width, cam.height, b.actors_at(f.t_us))
            lane[f"{s:g}m"].append(psnr_u8(pred, truth.rgb))
            if s == 2.0 and len(sheet) < 6:
                sheet.append(np.concatenate([truth.rgb, pred, _error_image(truth.rgb, pred)], 1))
        # the nearest valid actor in front of the ego
        dx, dy = w0.x - w0.x[0], w0.y - w0.y[0]
        ahead = dx * math.cos(yaw) + dy * math.sin(yaw)
        dist = np.hypot(dx, dy)
        cand = [i for i in range(1, len(w0.ids)) if w0.valid[i] and ahead[i] > 3 and dist[i] < 35]
        if not cand:
            continue
        i = min(cand, key=lambda k: dist[k])
        aid = w0.ids[i]
        if aid not in {a.id for a in b.actors}:
            continue
        valid = w0.valid.copy()
        valid[i] = False
        truth = mesh.render_camera(_with(w0, valid=valid), cam)
        pred, _ = b.render_camera(truth.c2w, cam.K, cam.width, cam.height, b.actors_at(f.t_us, remove=(aid,)))
        removed.append(psnr_u8(pred, truth.rgb))
        ay = float(w0.yaw[i])
        mx, my = w0.x.copy(), w0.y.copy()
        mx[i] += 2.0 * -math.sin(ay)
        my[i] += 2.0 * math.cos(ay)
        truth = mesh.render_camera(_with(w0, x=mx, y=my), cam)
        pose = (float(mx[i]), float(my[i]), float(w0.z[i]), ay)
        pred, _ = b.render_camera(truth.c2w, cam.K, cam.width, cam.height, b.actors_at(f.t_us, moves={aid: pose}))
        moved.append(psnr_u8(pred, truth.rgb))
    res["lane_shift"] = {"frames": [f.index for f in frames], "psnr": {k: (float(np.mean(v)) if v else None) for k, v in lane.items()}}
    res["actor_removed"] = {"psnr": float(np.mean(removed)) if removed else None, "views": len(removed)}
    res["actor_moved"] = {"psnr": float(np.mean(moved)) if moved else None, "views": len(moved), "shift_m": 2.0}
