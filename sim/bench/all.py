"""``loopdrive bench all``: run every benchmark and write one JSON + a markdown table.

Each benchmark runs in its own ``loopdrive bench NAME`` process (isolating GL contexts, torch
threads and Ray), writes its own JSON under the results folder, and is summarised here into
``all.json`` and ``all.md`` (the table the README's performance section shows). A benchmark that
fails is recorded with its error; the others still run.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sim.fsutil import atomic_write_text
from sim.log import write_json_atomic

__all__ = ["BENCHMARKS", "run_all", "summary_rows"]

log = logging.getLogger(__name__)

#: benchmark order (recon must precede closed-loop, which uses its bundle)
BENCHMARKS = ("synth", "env", "batch", "recon", "closed-loop")


def _args(name: str, results: Path, work: Path, quick: bool) -> list[str]:
    out = ["--out", str(results / f"{name.replace('-', '_')}.json")]
    if name == "synth":
        return out + (["--quick"] if quick else [])
    if name == "env":
        return out + (["--quick"] if quick else [])
    if name == "batch":
        return out + (["--horizon", "2.0"] if quick else [])
    if name == "recon":
        town = ["--town", "tiny", "--frames", "20", "--no-nerfacto"] if quick else ["--town", "small", "--frames", "120"]
        return [*out, *town, "--preset", "quick", "--work", str(work / "recon")]
    if name == "closed-loop":
        recon = json.loads((results / "recon.json").read_text())
        bundle = recon["loopdrive_recon"]["bundle"]
        log_dir = recon["log"]["path"]
        return [*out, "--bundle", str(bundle), "--log", str(log_dir), "--steps", "10" if quick else "20"]
    raise KeyError(name)


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def summary_rows(results: dict[str, Any]) -> list[tuple[str, str, Any, str]]:
    """(benchmark, figure, value, target) rows from the per-benchmark JSONs."""
    rows: list[tuple[str, str, Any, str]] = []
    s = results.get("synth") or {}
    rows += [
        ("synth", "camera frames/s (320x192, RGB + depth)", _get(s, "camera", "frames_per_s"), ""),
        ("synth", "LiDAR sweeps/s (32x1024, Embree)", _get(s, "lidar", "embree", "sweeps_per_s"), ""),
        ("synth", "LiDAR sweeps/s without Embree", _get(s, "lidar", "triangle", "sweeps_per_s"), ""),
    ]
    e = results.get("env") or {}
    rows += [
        ("env", "single env steps/s (20 vehicles, dt 0.1 s)", _get(e, "loopdrive_single", "steps_per_s"), ""),
        ("env", "single env vs highway-env (sim s per wall s)", _get(e, "ratios", "single_vs_highway_env"), ">= 20x"),
        ("env", "batched best vs highway-env", _get(e, "ratios", "batched_best_vs_highway_env"), ">= 100x"),
        ("env", "SB3 PPO env steps/s, batched adapter / DummyVecEnv (same B)", _pair(_get(e, "sb3_ppo", "loopdrive_sb3_adapter", "train_steps_per_s"),
                                                                                  _get(e, "sb3_ppo", "dummy_vec_env", "train_steps_per_s")), ""),
    ]
    b = results.get("batch") or {}
    for r in b.get("runs", []) if isinstance(b, dict) else []:
        rows.append(("batch", f"episodes/min, {r.get('executor')} x{r.get('workers')}", r.get("episodes_per_min", r.get("error", "")[:60]), ""))
    rc = results.get("recon") or {}
    rows += [
        ("recon", "train wall-clock s (quick preset)", _get(rc, "loopdrive_recon", "wall_seconds"), "<= 600"),
        ("recon", "held-out PSNR dB", _get(rc, "loopdrive_recon", "eval", "heldout", "psnr"), ">= 25 (quick), >= 30 (full)"),
        ("recon", "2 m lane-shift PSNR dB", _get(rc, "loopdrive_recon", "eval", "lane_shift", "psnr", "2m"), ">= 27 (full)"),
        ("recon", "LiDAR median range error m", _get(rc, "loopdrive_recon", "eval", "lidar", "median_abs_range_err_m"), "<= 0.10 (full)"),
        ("recon", "camera render ms, volume mode (evaluation mean)", _get(rc, "loopdrive_recon", "eval", "heldout", "render_ms_mean"), ""),
        ("recon", "held-out PSNR dB, baked-surface mode", _get(rc, "loopdrive_recon", "eval_surface", "heldout", "psnr"), ""),
        ("recon", "camera / LiDAR render ms, surface mode", f"{_get(rc, 'render', 'surface', 'camera_ms_median')} / "
         f"{_get(rc, 'render', 'surface', 'lidar_sweep_ms_median')}", "<= 66 / <= 100"),
        ("recon", "nerfacto held-out PSNR dB (same wall-clock)", _get(rc, "nerfacto", "eval", "heldout", "psnr"), "loopdrive +1.5 dB"),
    ]
    cl = results.get("closed-loop") or {}
    # the planner gap is part of the closed-loop results or measured alone (`bench planner-gap`)
    gap = _get(cl, "planner_gap") or _get(results.get("planner-gap") or {}, "planner_gap") or {}
    rows += [
        ("closed-loop", "env steps/s, neural camera + LiDAR", _get(cl, "speed", "neural", "steps_per_s"), ">= 10"),
        ("closed-loop", "env steps/s, neural (volume mode)", _get(cl, "speed", "neural_volume", "steps_per_s"), ""),
        ("closed-loop", "env steps/s, composite", _get(cl, "speed", "composite", "steps_per_s"), ""),
        ("closed-loop", "lidar_stack score mesh / neural", f"{_fmt(_get(gap, 'mean_score_mesh'))} / {_fmt(_get(gap, 'mean_score_neural'))}", "small gap"),
    ]
    return rows


def _pair(a: Any, b: Any) -> str | None:
    """``"a / b"`` when both figures exist, else None (n/a)."""
    return None if a is None or b is None else f"{_fmt(a)} / {_fmt(b)}"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return "n/a" if v is None else str(v)


def run_all(
    results: Path = Path("benchmarks/results"),
    *,
    quick: bool = False,
    only: tuple[str, ...] = BENCHMARKS,
    work: Path = Path("out/bench-all"),
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmarks in ``only`` (subprocesses), then write ``all.json`` and ``all.md``."""
    say = echo or log.info
    results.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    exe = str(Path(sys.executable).with_name("loopdrive"))
    status: dict[str, Any] = {}
    for name in only:
        t0 = time.perf_counter()
        try:
            args = _args(name, results, work, quick)
        except (OSError, KeyError, ValueError) as exc:
            status[name] = {"ok": False, "error": f"cannot start: {exc}"}
            continue
        say(f"bench {name} {' '.join(args)}")
        r = subprocess.run([exe, "bench", name, *args], capture_output=True, text=True)
        status[name] = {"ok": r.returncode == 0, "wall_s": round(time.perf_counter() - t0, 1)}
        if r.returncode != 0:
            status[name]["error"] = (r.stderr.strip().splitlines() or ["failed"])[-1][:300]
    loaded: dict[str, Any] = {}
    for name in (*BENCHMARKS, "planner-gap"):
        p = results / f"{name.replace('-', '_')}.json"
        if p.is_file():
            try:
                loaded[name] = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError) as exc:  # a corrupt result is reported, not a crash
                status.setdefault(name, {})
                status[name].update({"ok": False, "error": f"unreadable {p.name}: {exc}"})
    rows = summary_rows(loaded)
    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}
    doc = {"benchmark": "all", "quick": quick, "machine": machine, "status": status,
           "rows": [{"benchmark": b, "figure": f, "value": v, "target": t} for b, f, v, t in rows]}
    write_json_atomic(results / "all.json", doc)
    md = [f"Machine: {machine['cpu_count']} CPU cores, {machine['platform']}, Python {machine['python']}; "
          f"load average at the end {machine['load_average_at_end']}.", "",
          "| benchmark | figure | value | target |", "|---|---|---|---|"]
    md += [f"| {b} | {f} | {_fmt(v)} | {t} |" for b, f, v, t in rows]
    atomic_write_text(results / "all.md", "\n".join(md) + "\n")
    return doc
