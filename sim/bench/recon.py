"""``loopdrive bench recon``: the reconstructor's figures on a synthetic town, with nerfacto beside it.

Measured in one run on this machine: wall-clock of ``loopdrive recon`` (train + bundle), held-out
PSNR/SSIM, lane-shift PSNR (1/2/3 m), actor removed/moved PSNR, LiDAR median range error and
ray-drop accuracy (all by :func:`sim.recon.evaluate.evaluate_scene`), the render time of one
camera frame and one LiDAR sweep, and nerfacto (torch implementation, CPU) trained for the same
wall-clock on the same log through the ``loopdrive-log`` dataparser and scored by the same
evaluator (through :mod:`sim.recon.nerfacto`: nerfstudio is imported only inside ``sim.recon``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sim.errors import LogFormatError
from sim.log import read_log, write_json_atomic
from sim.machine import load_average, machine_info
from sim.recon.nerfacto import NerfactoScene, train_nerfacto

__all__ = ["TARGETS", "NerfactoScene", "psnr_lead", "render_times", "run_recon_bench", "run_render_bench", "train_nerfacto"]

#: the issue's figures to reach (seconds, dB, metres, milliseconds)
TARGETS = {"quick": {"wall_seconds_max": 600, "heldout_psnr_min": 25},
           "full": {"wall_seconds_max": 3600, "heldout_psnr_min": 30, "lane_shift_2m_psnr_min": 27, "lidar_median_range_err_max_m": 0.10},
           "vs_nerfacto_heldout_db_min": 1.5, "camera_ms_max": 66, "lidar_sweep_ms_max": 100}

log = logging.getLogger(__name__)


def load_nerfacto_result(path: Path, dl: Any) -> dict[str, Any]:
    """The ``nerfacto`` entry (training summary and ``eval``) of an earlier ``bench recon`` results
    file, checked to be scored on held-out frames of drive log ``dl`` (same frame count and camera
    resolution, frames within the log). Raises :class:`~sim.errors.ResultsError` naming the file
    and field otherwise."""
    from sim.errors import ResultsError

    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ResultsError("expected an earlier `loopdrive bench recon` results file; it does not exist", file=path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultsError(f"expected JSON ({e})", file=path) from None
    nf = doc.get("nerfacto") if isinstance(doc, dict) else None
    if not isinstance(nf, dict) or not isinstance(nf.get("eval"), dict):
        raise ResultsError("expected a nerfacto result with its evaluation (a run without --no-nerfacto)", file=path, field="nerfacto.eval")
    ev = nf["eval"]
    for key in ("heldout", "lane_shift", "actor_removed", "actor_moved"):
        if not isinstance(ev.get(key), dict):
            raise ResultsError("expected an evaluation entry", file=path, field=f"nerfacto.eval.{key}")
    frames = ev["heldout"].get("frames")
    if not isinstance(frames, list) or not frames or not all(isinstance(f, int) and 0 <= f < len(dl.frames) for f in frames):
        raise ResultsError(f"expected a list of frame indices of this log (0..{len(dl.frames) - 1})", file=path,
                           field="nerfacto.eval.heldout.frames")
    meta = doc.get("log") if isinstance(doc.get("log"), dict) else {}
    size = [dl.frames[0].width, dl.frames[0].height]
    if meta.get("frames") != len(dl.frames) or meta.get("resolution") != size:
        raise ResultsError(f"measured on another log: {meta.get('frames')} frames at {meta.get('resolution')}, this log has "
                           f"{len(dl.frames)} at {size}", file=path, field="log")
    return nf


def psnr_lead(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """PSNR differences (dB, ours - theirs) between two :func:`~sim.recon.evaluate.evaluate_scene`
    results scored on the same frames: held-out, each lane shift, actor removed and moved; and,
    when both have per-frame held-out PSNR, the held-out lead on just the frames the lane shifts
    were scored at (``heldout_db_on_lane_shift_frames``), the figure to compare the lane-shift lead with."""
    if ours["heldout"]["frames"] != theirs["heldout"]["frames"]:
        raise ValueError(f"scored on different frames: {ours['heldout']['frames']} vs {theirs['heldout']['frames']}")

    def d(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(a - b, 2)

    lane_a, lane_b = ours["lane_shift"].get("psnr", {}), theirs["lane_shift"].get("psnr", {})
    res = {"frames": ours["heldout"]["frames"], "heldout_db": d(ours["heldout"]["psnr"], theirs["heldout"]["psnr"]),
           "lane_shift_db": {k: d(lane_a[k], lane_b.get(k)) for k in lane_a},
           "actor_removed_db": d(ours["actor_removed"].get("psnr"), theirs["actor_removed"].get("psnr")),
           "actor_moved_db": d(ours["actor_moved"].get("psnr"), theirs["actor_moved"].get("psnr"))}
    # lane shifts are scored at the first half of the held-out frames: the like-for-like held-out
    # lead is the one on those frames (needs both sides' per-frame PSNR)
    lane_frames = ours["lane_shift"].get("frames")
    per_a, per_b = ours["heldout"].get("psnr_per_frame"), theirs["heldout"].get("psnr_per_frame")
    if lane_frames and per_a and per_b and lane_frames == theirs["lane_shift"].get("frames"):
        idx = [ours["heldout"]["frames"].index(f) for f in lane_frames]
        res["lane_shift_frames"] = lane_frames
        res["heldout_db_on_lane_shift_frames"] = d(float(np.mean([per_a[i] for i in idx])), float(np.mean([per_b[i] for i in idx])))
    return res


def render_times(b: Any, dl: Any, repeats: int = 5) -> dict[str, Any]:
    """Render times (ms; min and median of ``repeats`` after one warm-up) of one camera frame at
    the log's resolution and one LiDAR sweep of the log's rig, for the ``volume`` and ``surface``
    background modes of bundle ``b`` (actors at their logged poses)."""
    from sim.recon.evaluate import SurfaceBundle
    from sim.sensors import SensorRig

    rig = SensorRig.from_meta(dl.meta["rig"])
    f = dl.frames[len(dl.frames) // 2]
    sw = dl.sweeps[len(dl.sweeps) // 2] if dl.sweeps else None
    out: dict[str, Any] = {"camera": f"{f.width}x{f.height}", "lidar_rays": rig.lidar.beams * rig.lidar.azimuth_steps if rig.lidar else 0}
    for mode, scene in (("volume", b), ("surface", SurfaceBundle(b))):
        cam_t, lid_t = [], []
        for k in range(repeats + 1):
            t1 = time.perf_counter()
            scene.render_camera(f.c2w, f.K, f.width, f.height, b.actors_at(f.t_us))
            if k:
                cam_t.append(time.perf_counter() - t1)
            if rig.lidar is not None and sw is not None:
                t1 = time.perf_counter()
                scene.render_lidar(sw.sensor_to_world, rig.lidar.ray_directions().reshape(-1, 3), b.actors_at(sw.t_us))
                if k:
                    lid_t.append(time.perf_counter() - t1)
        out[mode] = {"camera_ms_min": round(1000 * min(cam_t), 1), "camera_ms_median": round(1000 * float(np.median(cam_t)), 1),
                     "lidar_sweep_ms_min": round(1000 * min(lid_t), 1) if lid_t else None,
                     "lidar_sweep_ms_median": round(1000 * float(np.median(lid_t)), 1) if lid_t else None}
    # the pre-mode keys (volume rendering)
    out["camera_ms_median"] = out["volume"]["camera_ms_median"]
    out["lidar_sweep_ms_median"] = out["volume"]["lidar_sweep_ms_median"]
    return out


def run_render_bench(bundle: str | os.PathLike[str], log_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
                     *, threads: int = 1, repeats: int = 5) -> dict[str, Any]:
    """Render speed of an existing bundle in both background modes (:func:`render_times`), with
    the machine (CPU count, torch threads, load average before and after); written to ``out``."""
    from sim.recon.bundle import load_bundle

    torch.set_num_threads(threads)
    b = load_bundle(bundle)
    proxy = b.surface()
    res: dict[str, Any] = {"benchmark": "render", "bundle": str(bundle), "log": str(log_dir),
                           "machine": machine_info(torch=torch.__version__, torch_threads=torch.get_num_threads()),
                           "surface": {"level": proxy.level, "triangles": proxy.triangles, "calibration_median_depth_diff_m": proxy.calib_err_m,
                                       "calibration_median_rel_depth_diff": proxy.calib_rel_err},
                           "render": render_times(b, read_log(log_dir), repeats), "targets": {"camera_ms_max": TARGETS["camera_ms_max"],
                                                                                              "lidar_sweep_ms_max": TARGETS["lidar_sweep_ms_max"]}}
    res["machine"]["load_average_at_end"] = load_average()
    if out is not None:
        write_json_atomic(Path(out), res)
    return res


def _check_inputs(log_dir: Path | None, town: str, frames: int, preset: str, nerfacto_from: Path | None) -> None:
    """Refuse bad arguments before the work folder is made: the preset and town names, the
    frame count, a given log (headers) and the nerfacto results file (a regular file)."""
    from sim.errors import BundleError, ResultsError, ScenarioError
    from sim.fsutil import check_input_file
    from sim.log import validate_log
    from sim.recon.presets import PRESETS
    from sim.synth import get_preset

    if preset not in PRESETS:
        raise BundleError(f"expected a preset in {sorted(PRESETS)}, got {preset!r}", field="preset")
    if log_dir is not None:
        validate_log(log_dir, check_payloads=False)
    else:
        get_preset(town)
        if frames < 10:
            raise ScenarioError(f"expected at least 10 frames, got {frames}", field="frames")
    if nerfacto_from is not None:
        check_input_file(nerfacto_from, error=ResultsError, what="an earlier `loopdrive bench recon` results file")


def _synth_log(work: Path, town: str, frames: int, say: Callable[[str], None], res: dict[str, Any]) -> Path:
    """The benchmark's synthetic log ``work/town-<town>-s0`` (made with ``loopdrive synth`` when
    absent; its wall-clock recorded as ``synth_seconds``)."""
    log_dir = work / f"town-{town}-s0"
    if not log_dir.exists():
        say(f"synthesising {town} town ({frames} frames)")
        t0 = time.perf_counter()
        exe = str(Path(sys.executable).parent / "loopdrive")
        done = subprocess.run([exe, "synth", "--town", town, "--seed", "0", "--frames", str(frames), "--out", str(log_dir)], check=False)
        if done.returncode != 0:
            raise LogFormatError(f"synthesising the {town} town failed (`loopdrive synth` exit code {done.returncode})", file=log_dir)
        res["synth_seconds"] = round(time.perf_counter() - t0, 1)
    return log_dir


def _train_and_evaluate(log_dir: Path, dl: Any, work: Path, preset: str, threads: int, say: Callable[[str], None]) -> tuple[Any, dict[str, Any]]:
    """Train loopdrive-recon (quick: a 9-minute cap; full: the preset's own 55-minute cap) and
    score the bundle in both background modes; returns the loaded bundle and the result entry."""
    from sim.recon.bundle import load_bundle
    from sim.recon.evaluate import SurfaceBundle, evaluate_scene
    from sim.recon.run import train_bundle

    bundle = work / f"bundle-{preset}"
    say(f"training loopdrive-recon ({preset})")
    t0 = time.perf_counter()
    summary = train_bundle(log_dir, bundle, preset=preset, overwrite=True, max_seconds=540 if preset == "quick" else None,
                           overrides={"num_threads": threads})
    torch.set_num_threads(threads)
    entry: dict[str, Any] = {"preset": preset, "wall_seconds": round(time.perf_counter() - t0, 1), **summary}
    b = load_bundle(bundle)
    say("evaluating")
    entry["eval"] = evaluate_scene(b, dl, work / f"eval-{preset}")
    say("evaluating the baked-surface render mode")
    entry["eval_surface"] = evaluate_scene(SurfaceBundle(b), dl, work / f"eval-{preset}-surface")
    return b, entry


def _nerfacto_entry(log_dir: Path, dl: Any, b: Any, work: Path, budget_s: float, say: Callable[[str], None],
                    save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Train nerfacto for ``budget_s`` wall seconds and score it; ``save`` gets the training
    summary before the (slow) scoring. nerfacto renders slowly on the CPU (minutes a frame):
    it is scored on the first 4 held-out frames (2 for novel views)."""
    from sim.recon.evaluate import evaluate_scene

    say(f"training nerfacto for {budget_s:.0f} s")
    pipe, entry = train_nerfacto(log_dir, work / "nerfacto", budget_s, echo=say)
    save(entry)
    entry["eval"] = evaluate_scene(NerfactoScene(pipe, dl, b.info), dl, work / "eval-nerfacto", max_frames=4)
    return entry


def _versus_nerfacto(res: dict[str, Any], b: Any, dl: Any, work: Path, preset: str) -> None:
    """Score loopdrive on the frames nerfacto was scored on and record the PSNR lead."""
    from sim.recon.evaluate import evaluate_scene

    n = len(res["nerfacto"]["eval"]["heldout"]["frames"])
    same = evaluate_scene(b, dl, work / f"eval-{preset}-{n}", max_frames=n, max_sweeps=1)
    res["loopdrive_recon"][f"eval_first_{n}_heldout_frames"] = {k: same[k] for k in ("heldout", "lane_shift", "actor_removed", "actor_moved")}
    res["vs_nerfacto"] = psnr_lead(same, res["nerfacto"]["eval"])


def run_recon_bench(
    *,
    log: Path | None,
    town: str = "small",
    frames: int = 120,
    preset: str = "quick",
    nerfacto: bool = True,
    out: Path,
    work: Path = Path("out/bench-recon"),
    echo: Callable[[str], None] | None = None,
    threads: int = 1,
    nerfacto_from: Path | None = None,
) -> dict[str, Any]:
    """Run the benchmark and write ``out`` (JSON). Targets are recorded beside the measurements.

    ``nerfacto_from``: reuse the nerfacto result of an earlier run of this benchmark on the same
    log (its ``nerfacto`` entry, see :func:`load_nerfacto_result`) instead of training nerfacto
    again; loopdrive is scored on the frames nerfacto was scored on and ``vs_nerfacto`` written.

    ``threads``: torch CPU threads for training and rendering. One is the default: on the shared
    2-core machine two threads wait on each other whenever other jobs run (measured 0.14 s/iter with
    one thread vs 1.57 s/iter with two at load ~10)."""
    say = echo or logging.getLogger(__name__).info  # (the parameter `log` shadows the module logger)
    _check_inputs(log, town, frames, preset, nerfacto_from)
    torch.set_num_threads(threads)
    work.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"machine": machine_info(torch=torch.__version__, torch_threads=threads)}
    log_dir = log if log is not None else _synth_log(work, town, frames, say, res)
    dl = read_log(log_dir)
    reused = load_nerfacto_result(nerfacto_from, dl) if nerfacto_from is not None else None  # refuse a bad file before training
    res["log"] = {"path": str(log_dir), "frames": len(dl.frames), "sweeps": len(dl.sweeps), "tracks": len(dl.tracks),
                  "resolution": [dl.frames[0].width, dl.frames[0].height]}
    b, res["loopdrive_recon"] = _train_and_evaluate(log_dir, dl, work, preset, threads, say)
    res["targets"] = TARGETS
    write_json_atomic(out, res)  # partial results survive an interrupted nerfacto stage
    res["render"] = render_times(b, dl)
    if reused is not None:
        res["nerfacto"] = {**reused, "reused_from": str(nerfacto_from)}
    elif nerfacto:
        def save(entry: dict[str, Any]) -> None:
            res["nerfacto"] = entry
            write_json_atomic(out, res)

        res["nerfacto"] = _nerfacto_entry(log_dir, dl, b, work, float(res["loopdrive_recon"]["train_seconds"]), say, save)
    if "nerfacto" in res:
        _versus_nerfacto(res, b, dl, work, preset)
    res["machine"]["load_average_at_end"] = load_average()
    write_json_atomic(out, res)
    return res
