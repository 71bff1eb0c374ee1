"""``loopdrive bench batch``: batch-run throughput (episodes per minute) on the scenario library,
with 1 and 2 workers, on the local process pool and on a local Ray instance.

Every configuration runs the same episodes (every seed and sweep point of the library, at the
files' horizons unless ``horizon_s`` cuts them) into a fresh temporary folder; the figure is
episodes / wall minute including worker start-up, as a user would see it. The machine's load
average is recorded with the figures: on a shared machine they depend on it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sim.batch import run_batch
from sim.errors import LoopdriveError, ScenarioError
from sim.fsutil import atomic_write_text
from sim.machine import load_average, machine_info
from sim.scenario import Episode, expand_paths

__all__ = ["bench_episodes", "run_bench"]


def bench_episodes(
    scenarios: str | os.PathLike[str], horizon_s: float | None = None, *, one_per_file: bool = False
) -> list[Episode]:
    """The library's episodes (every seed and sweep point, or the first of each file), optionally
    cut to ``horizon_s``."""
    seen: set[str] = set()
    out = []
    for ep in expand_paths([scenarios]):
        if one_per_file and ep.scenario in seen:
            continue
        seen.add(ep.scenario)
        out.append(ep.with_horizon(horizon_s) if horizon_s else ep)
    return out


def run_bench(
    scenarios: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    horizon_s: float | None = None,
    planner: str | None = None,
    configs: tuple[tuple[str, int], ...] = (("local", 1), ("local", 2), ("ray", 1), ("ray", 2)),
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark and write the JSON result to ``out`` (atomically); returns it."""
    eps = bench_episodes(scenarios, horizon_s)
    machine = machine_info()  # its load_average: at the start
    if not eps:
        raise ScenarioError("expected scenario files, found none", file=str(scenarios))
    runs = []
    for executor, workers in configs:
        with tempfile.TemporaryDirectory(prefix="loopdrive-bench-") as tmp:
            t0 = time.perf_counter()
            try:
                s = run_batch(
                    episodes=eps,
                    out=Path(tmp) / "run",
                    planner=planner,
                    workers=workers,
                    executor=executor,  # type: ignore[arg-type]
                )
            except LoopdriveError as exc:  # e.g. Ray cannot start on this machine: record it, go on
                runs.append(
                    {"executor": executor, "workers": workers, "episodes": len(eps), "error": exc.one_line()}
                )
                if log is not None:
                    log(f"{executor} x{workers}: failed: {exc.one_line()}")
                continue
            wall = time.perf_counter() - t0
        r = {
            "executor": executor,
            "workers": workers,
            "episodes": len(eps),
            "failed": s.failed,
            "wall_s": round(wall, 3),
            "episodes_per_min": round(60.0 * len(eps) / wall, 2),
        }
        runs.append(r)
        if log is not None:
            log(
                f"{executor} x{workers}: {r['episodes_per_min']} episodes/min ({wall:.1f} s, {s.failed} failed)"
            )
    res = {
        "benchmark": "batch",
        "episodes": len(eps),
        "horizon_s": horizon_s,
        "planner": planner or "(per scenario)",
        "machine": {**machine, "load_average_at_end": load_average()},
        "runs": runs,
    }
    outp = Path(out)
    outp.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(outp, json.dumps(res, indent=2))
    return res
