"""Realism evaluation of a scene bundle against its drive log (``loopdrive eval-recon``).

Measured (all on data never trained on):

* **held-out frames** (frame ``k`` of each of the bundle's cameras with ``k % eval_every == 0``,
  :mod:`sim.recon.split`): PSNR (dB) and SSIM, per camera (``per_camera``), their mean over
  cameras (``mean_over_cameras``) and the first camera's at the top level.
* **appearance**: every view at a held-out frame's time (the frame itself, its lane shifts and
  actor edits) is rendered with the appearance embedding of the nearest training frame of the same
  camera and that camera's embedding (:mod:`sim.recon.split`).
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
from sim.recon.eval_sensors import appearance_rows, score_heldout, score_lidar
from sim.recon.split import split_frames
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


def _fig(v: Any, spec: str) -> str:
    """A figure for a progress line: ``v`` formatted with ``spec``, ``n/a`` when it is not a number."""
    return format(v, spec) if isinstance(v, int | float) and not isinstance(v, bool) else "n/a"


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
    cams = [str(c) for c in (b.info.get("cameras") or [b.info.get("camera", dl.cameras[0])]) if str(c) in dl.cameras] or [dl.cameras[0]]
    cam_name = cams[0]
    rig = SensorRig.from_meta(dl.meta["rig"])
    train_frames, _ = split_frames(dl, cams, every)
    held = {c: split_frames(dl, [c], every)[1][:max_frames] for c in cams}
    res: dict[str, Any] = {"log": str(dl.root), "eval_every": every, "camera": cam_name, "cameras": cams}
    sheet: list[NDArray[np.uint8]] = []

    def note(msg: str) -> None:
        if progress is not None:
            progress(msg)

    # ---- held-out frames, per camera (the first camera's also at the top level)
    per_cam: dict[str, dict[str, Any]] = {}
    for c in cams:
        per_cam[c] = {"heldout": score_heldout(b, dl, held[c], cams, train_frames, sheet, sheet_rows=4 if c == cam_name else len(sheet) + 1)}
        note(f"{c}: held-out PSNR {_fig(per_cam[c]['heldout']['psnr'], '.2f')} dB")
    res["heldout"] = per_cam[cam_name]["heldout"]
    # ---- LiDAR
    if rig.lidar is not None and dl.sweeps and hasattr(b, "render_lidar"):
        sweeps = [j for j in range(len(dl.sweeps)) if j % every == 0][:max_sweeps]
        res["lidar"] = score_lidar(b, dl, rig.lidar, sweeps)
        note(f"LiDAR median range error {_fig(res['lidar']['median_abs_range_err_m'], '.3f')} m")
    # ---- novel views against mesh truth
    mesh, why = _mesh_renderer(dl)
    if mesh is None:
        res["lane_shift"] = res["actor_removed"] = res["actor_moved"] = {"skipped": why}
    else:
        try:
            for c in cams:
                part: dict[str, Any] = res if c == cam_name else per_cam[c]
                frames = [dl.frames[i] for i in held[c]]
                _novel_views(b, dl, mesh, rig.camera(c), frames[: max(1, max_frames // 2)], shifts_m, part, sheet,
                             rows=lambda i: appearance_rows(b, dl, i, cams, train_frames))
                if c == cam_name:
                    per_cam[c].update({k: res[k] for k in ("lane_shift", "actor_removed", "actor_moved")})
        finally:
            mesh.close()
    res["per_camera"] = per_cam
    res["mean_over_cameras"] = _camera_means(per_cam)
    if sheet:
        w = max(s.shape[1] for s in sheet)
        rows = [np.pad(s, ((0, 0), (0, w - s.shape[1]), (0, 0))) for s in sheet]
        Image.fromarray(np.concatenate(rows, 0)).save(out / sheet_name)
    return res


def _camera_means(per_cam: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Means over cameras of the held-out PSNR / SSIM and of each lane-shift PSNR (cameras
    without a figure left out)."""

    def mean(vals: list[Any]) -> float | None:
        v = [float(x) for x in vals if x is not None]
        return float(np.mean(v)) if v else None

    out: dict[str, Any] = {"heldout_psnr": mean([p["heldout"]["psnr"] for p in per_cam.values()]),
                           "heldout_ssim": mean([p["heldout"]["ssim"] for p in per_cam.values()])}
    shifts = {k for p in per_cam.values() for k in (p.get("lane_shift", {}).get("psnr") or {})}
    out["lane_shift_psnr"] = {k: mean([(p.get("lane_shift", {}).get("psnr") or {}).get(k) for p in per_cam.values()]) for k in sorted(shifts)}
    return out


def _novel_views(b: Bundle, dl: DriveLog, mesh: Any, cam: Any, frames: list[Any], shifts: tuple[float, ...], res: dict[str, Any], sheet: list[NDArray[np.uint8]],
                 rows: Callable[[int], tuple[int, int] | None] | None = None) -> None:
    """Lane-shifted and actor-edited views at the times of ``frames`` against mesh truth; each view
    with the appearance embeddings ``rows(frame index)`` gives (the held-out protocol) or none."""
    lane: dict[str, list[float]] = {f"{s:g}m": [] for s in shifts}
    removed, moved = [], []
    for f in frames:
        r = rows(f.index) if rows is not None else None
        kw: dict[str, Any] = {"appearance": r} if r is not None else {}
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
            pred, _ = b.render_camera(c2w, cam.K, cam.width, cam.height, b.actors_at(f.t_us), **kw)
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
        pred, _ = b.render_camera(truth.c2w, cam.K, cam.width, cam.height, b.actors_at(f.t_us, remove=(aid,)), **kw)
        removed.append(psnr_u8(pred, truth.rgb))
        ay = float(w0.yaw[i])
        mx, my = w0.x.copy(), w0.y.copy()
        mx[i] += 2.0 * -math.sin(ay)
        my[i] += 2.0 * math.cos(ay)
        truth = mesh.render_camera(_with(w0, x=mx, y=my), cam)
        pose = (float(mx[i]), float(my[i]), float(w0.z[i]), ay)
        pred, _ = b.render_camera(truth.c2w, cam.K, cam.width, cam.height, b.actors_at(f.t_us, moves={aid: pose}), **kw)
        moved.append(psnr_u8(pred, truth.rgb))
    res["lane_shift"] = {"frames": [f.index for f in frames], "psnr": {k: (float(np.mean(v)) if v else None) for k, v in lane.items()}}
    res["actor_removed"] = {"psnr": float(np.mean(removed)) if removed else None, "views": len(removed)}
    res["actor_moved"] = {"psnr": float(np.mean(moved)) if moved else None, "views": len(moved), "shift_m": 2.0}
