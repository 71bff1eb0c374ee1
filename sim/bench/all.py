"""``loopdrive bench all``: run every benchmark and write one JSON + a markdown table.

Every ``loopdrive bench`` command except ``all`` itself runs (:data:`BENCHMARKS`, in that order),
each in its own ``loopdrive bench NAME`` process (isolating GL contexts, torch threads and Ray),
writing its own JSON into the run's results folder (by default ``runs/bench/<UTC time>/``); this
module summarises them into ``all.json`` and ``all.md`` (the table the README's performance
section shows). ``render``, ``closed-loop`` and ``planner-gap`` use the bundle and log that
``recon`` made in the same run. A benchmark that fails is recorded with its error; the others
still run (one that needs a failed one's bundle fails as "cannot start").
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sim.fsutil import atomic_write_text
from sim.log import write_json_atomic
from sim.machine import machine_info

__all__ = ["BENCHMARKS", "result_name", "run_all", "summary_rows"]

log = logging.getLogger(__name__)

#: every benchmark, in the order they run (recon precedes render, closed-loop and planner-gap,
#: which use its bundle)
BENCHMARKS = ("synth", "env", "neighbours", "batch", "recon", "render", "closed-loop", "planner-gap", "loop", "nuscenes-roundtrip",
              "recon-roundtrip")


#: the benchmarks that run on the bundle and log of the run's ``recon`` benchmark
_NEEDS_RECON = ("render", "closed-loop", "planner-gap")


def result_name(name: str) -> str:
    """The JSON file a benchmark writes in the results folder (``closed-loop`` -> ``closed_loop.json``)."""
    return f"{name.replace('-', '_')}.json"


def _recon_outputs(results: Path) -> list[str]:
    """``--bundle B --log L`` of the bundle the run's ``recon`` benchmark trained."""
    recon = json.loads((results / "recon.json").read_text())
    return ["--bundle", str(recon["loopdrive_recon"]["bundle"]), "--log", str(recon["log"]["path"])]


def _args(name: str, results: Path, work: Path, quick: bool) -> list[str]:
    out = ["--out", str(results / result_name(name))]
    if name in ("synth", "env"):
        return out + (["--quick"] if quick else [])
    if name == "neighbours":
        return out + (["--sizes", "20,64", "--seconds", "0.5", "--rounds", "1", "--worlds", "4"] if quick else [])
    if name == "batch":
        return out + (["--horizon", "2.0"] if quick else [])
    if name == "recon":
        town = ["--town", "tiny", "--frames", "20", "--no-nerfacto"] if quick else ["--town", "small", "--frames", "120"]
        return [*out, *town, "--preset", "quick", "--work", str(work / "recon")]
    if name == "render":
        return [*out, *_recon_outputs(results), "--repeats", "2" if quick else "5"]
    if name == "closed-loop":
        return [*out, *_recon_outputs(results), "--steps", "10" if quick else "20"]
    if name == "planner-gap":
        sizes = ["--max-scenarios", "1", "--horizon", "1.0"] if quick else ["--max-scenarios", "4", "--seeds", "0,1", "--horizon", "6.0"]
        return [*out, *_recon_outputs(results), *sizes]
    if name == "loop":
        return [*out, "--work", str(work / "loop"), *(["--quick"] if quick else [])]
    if name == "nuscenes-roundtrip":
        return [*out, "--work", str(work / "nuscenes-roundtrip")]
    if name == "recon-roundtrip":
        return [*out, "--work", str(work / "recon-roundtrip"), "--budget", "smoke" if quick else "quick"]
    raise KeyError(name)


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _batched_rate(env: dict[str, Any], b: int) -> Any:
    """The vector env's per-world steps/s at batch size ``b`` in ``bench env``'s JSON (None when absent)."""
    rows = env.get("loopdrive_batched")
    for r in rows if isinstance(rows, list) else []:
        if isinstance(r, dict) and r.get("num_envs") == b:
            return r.get("steps_per_s")
    return None


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
        ("env", "vector env B = 256 world-steps/s (random per-world actions)", _batched_rate(e, 256), ">= 60000"),
        ("env", "highway-env steps/s (same run)", _get(e, "highway_env", "steps_per_s"), ""),
        ("env", "MetaDrive steps/s (same run)", _get(e, "metadrive", "steps_per_s"), ""),
        ("neighbours", "leader query us, every actor / grid, at the most actors", _neighbour_pair(results.get("neighbours") or {}), "grid flat in N"),
        ("env", "single env vs MetaDrive (sim s per wall s)", _get(e, "ratios", "single_vs_metadrive"), ">= 120x"),
        ("env", "batched best vs MetaDrive", _get(e, "ratios", "batched_best_vs_metadrive"), ""),
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
    rd = results.get("render") or {}
    rows += [
        ("render", "camera ms (median), surface / volume mode", _pair(_get(rd, "render", "surface", "camera_ms_median"),
                                                                      _get(rd, "render", "volume", "camera_ms_median")), "<= 66"),
        ("render", "LiDAR sweep ms (median), surface / volume mode", _pair(_get(rd, "render", "surface", "lidar_sweep_ms_median"),
                                                                           _get(rd, "render", "volume", "lidar_sweep_ms_median")), "<= 100"),
    ]
    cl = results.get("closed-loop") or {}
    rows += [
        ("closed-loop", "env steps/s, neural camera + LiDAR", _get(cl, "speed", "neural", "steps_per_s"), ">= 10"),
        ("closed-loop", "env steps/s, neural (volume mode)", _get(cl, "speed", "neural_volume", "steps_per_s"), ""),
        ("closed-loop", "env steps/s, composite", _get(cl, "speed", "composite", "steps_per_s"), ""),
    ]
    # the planner gap is measured alone (`bench planner-gap`) or within closed-loop (given --scenario)
    gap = _get(results.get("planner-gap") or {}, "planner_gap") or _get(cl, "planner_gap") or {}
    rows.append(("planner-gap", "lidar_stack score mesh / neural", _pair(_get(gap, "mean_score_mesh"), _get(gap, "mean_score_neural")),
                 "small gap"))
    lp = results.get("loop") or {}
    for planner, t in sorted((_get(lp, "totals") or {}).items()):
        rows.append(("loop", f"CEM vs random solvable failures at equal budget, {planner} (distinct)",
                     _pair(t.get("ratio"), t.get("ratio_distinct")), ">= 5x"))
    rounds = _get(lp, "loop", "report", "rounds") or []
    rates = [_get(r, "heldout", "failure_rate") for r in rounds]
    rows.append(("loop", "held-out failure rate per loop round", " -> ".join(_fmt(v) for v in rates) if rounds else None, "halved"))
    nu = results.get("nuscenes-roundtrip") or {}
    rows += [
        ("nuscenes-roundtrip", "max camera position error m (imported vs native)", _get(nu, "max_errors", "camera_position_m"), ""),
        ("nuscenes-roundtrip", "max LiDAR point error m", _get(nu, "max_errors", "lidar_point_m"), ""),
        ("nuscenes-roundtrip", "max devkit vs loopdrive projection px", _get(nu, "max_errors", "devkit_vs_loopdrive_px"), ""),
    ]
    return rows


def _neighbour_pair(nb: dict[str, Any]) -> str | None:
    """``bench neighbours``' largest size: "N actors: every-actor us / grid us" (None when absent)."""
    rows = nb.get("rows") or []
    if not rows:
        return None
    r = max(rows, key=lambda x: x.get("actors", 0))
    return f"{r['actors']} actors: {r['us_per_query_every_actor']} / {r['us_per_query_grid']}"


def _pair(a: Any, b: Any) -> str | None:
    """``"a / b"`` when both figures exist, else None (n/a)."""
    return None if a is None or b is None else f"{_fmt(a)} / {_fmt(b)}"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return "n/a" if v is None else str(v)


def run_all(
    results: Path,
    *,
    quick: bool = False,
    only: tuple[str, ...] = BENCHMARKS,
    work: Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmarks in ``only`` (subprocesses) with their results in the folder ``results``,
    then write ``all.json`` and ``all.md`` there from every result file the folder holds. Scratch
    files (logs, bundles, loop runs) go to ``work`` (default ``results/work``)."""
    say = echo or log.info
    work = work if work is not None else results / "work"
    results.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    exe = str(Path(sys.executable).with_name("loopdrive"))
    status: dict[str, Any] = {}
    for name in only:
        t0 = time.perf_counter()
        if name in _NEEDS_RECON and status.get("recon", {}).get("ok") is False:
            status[name] = {"ok": False, "error": "cannot start: the recon benchmark of this run failed (its bundle is needed)"}
            continue
        try:
            args = _args(name, results, work, quick)
        except (OSError, KeyError, ValueError) as exc:
            status[name] = {"ok": False, "error": f"cannot start: {type(exc).__name__}: {exc}"}
            continue
        say(f"bench {name} {' '.join(args)}")
        r = subprocess.run([exe, "bench", name, *args], capture_output=True, text=True)
        status[name] = {"ok": r.returncode == 0, "wall_s": round(time.perf_counter() - t0, 1)}
        if r.returncode != 0:
            status[name]["error"] = (r.stderr.strip().splitlines() or ["failed"])[-1][:300]
    loaded: dict[str, Any] = {}
    for name in BENCHMARKS:
        p = results / result_name(name)
        if p.is_file():
            try:
                loaded[name] = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError) as exc:  # a corrupt result is reported, not a crash
                status.setdefault(name, {})
                status[name].update({"ok": False, "error": f"unreadable {p.name}: {exc}"})
    rows = summary_rows(loaded)
    machine = machine_info()  # at the end
    doc = {"benchmark": "all", "quick": quick, "machine": machine, "status": status,
           "rows": [{"benchmark": b, "figure": f, "value": v, "target": t} for b, f, v, t in rows]}
    write_json_atomic(results / "all.json", doc)
    md = [f"Machine: {machine['cpu_count']} CPU cores, {machine['platform']}, Python {machine['python']}; "
          f"load average at the end {machine['load_average']}.", "",
          "| benchmark | figure | value | target |", "|---|---|---|---|"]
    md += [f"| {b} | {f} | {_fmt(v)} | {t} |" for b, f, v, t in rows]
    atomic_write_text(results / "all.md", "\n".join(md) + "\n")
    return doc
