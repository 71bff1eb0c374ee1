"""Benchmarks of ``sensor_policy`` (figures under ``benchmarks/results/sensor_policy*.json``).

* ``gap``: the sim-to-real gap of the sensor model for ``sensor_policy`` (and, for comparison,
  ``lidar_stack``) -- the same episodes driven on ``mesh`` and on ``neural`` LiDAR of a scene
  bundle (:func:`sim.bench.closed_loop.planner_gap`); the policy is trained on mesh LiDAR, so
  this is the mesh -> neural cross test;
* ``summary``: one JSON from leaderboard folders of the three runtime forms (``loopdrive
  leaderboard scenarios/ --planners sensor_policy --planner-param runtime=... --out DIR``), the
  latency JSON (``python -m agents.sensor_policy_onnx bench``) and the gap JSON, with the machine
  load.

``python scripts/sensor_policy_bench.py gap --bundle B --log L --out J`` /
``python scripts/sensor_policy_bench.py summary --leaderboard torch=DIR ... --latency J --gap J --out J``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from sim.fsutil import atomic_write_text

__all__ = ["leaderboard_row", "run_gap", "summary"]


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def run_gap(bundle: str, log_dir: str, *, planners: tuple[str, ...] = ("sensor_policy", "lidar_stack"), horizon_s: float = 6.0,
            seeds: tuple[int, ...] = (0, 1), max_scenarios: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Mesh vs neural LiDAR scores of each of ``planners`` on the default gap scenarios."""
    import torch

    from sim.bench.closed_loop import planner_gap

    torch.set_num_threads(1)
    out: dict[str, Any] = {"bundle": bundle, "log": log_dir, "load_avg_1m_before": _load()}
    for p in planners:
        out[p] = planner_gap(bundle, log_dir, horizon_s=horizon_s, seeds=seeds, planner=p, max_scenarios=max_scenarios,
                             progress=lambda m: print(m, flush=True))  # fmt: skip
    out["load_avg_1m_after"] = _load()
    return out


def leaderboard_row(folder: str | os.PathLike[str], planner: str = "sensor_policy") -> dict[str, Any]:
    """The leaderboard row of ``planner`` in a leaderboard folder (its per-planner run), with the
    per-scenario scores."""
    from sim.leaderboard import leaderboard_tables

    rows, per = leaderboard_tables({planner: Path(folder) / planner})
    row = dict(rows[0])
    row["per_scenario"] = {k: v.get(planner) for k, v in per.items()} if per and isinstance(next(iter(per.values())), dict) else per
    return row


def summary(leaderboards: dict[str, str], latency: str | None, gap: str | None, reference: dict[str, float],
            others: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """The published figure set (see the module docstring); ``others``: planner -> leaderboard
    folder of reference planners run beside it (e.g. ``pdm_closed``), whose scores replace the
    README's in ``reference``."""
    out: dict[str, Any] = {"benchmark": "sensor_policy", "load_avg_1m": _load(), "reference_scores_readme": dict(reference)}
    lb = {form: leaderboard_row(d) for form, d in leaderboards.items()}
    out["leaderboard_mesh"] = lb
    if others:
        out["reference_runs"] = {p: leaderboard_row(d, p) for p, d in others.items()}
        reference = {**reference, **{p: r["score"] for p, r in out["reference_runs"].items()}}
    if "torch" in lb and "pdm_closed" in reference:
        out["ratio_to_pdm_closed"] = round(lb["torch"]["score"] / reference["pdm_closed"], 3)
    if "torch" in lb:
        out["score_diff_vs_torch"] = {f: round(r["score"] - lb["torch"]["score"], 4) for f, r in lb.items()}
    if latency:
        out["latency"] = json.loads(Path(latency).read_text(encoding="utf-8"))
    if gap:
        out["sensor_gap"] = json.loads(Path(gap).read_text(encoding="utf-8"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python scripts/sensor_policy_bench.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gap")
    g.add_argument("--bundle", required=True)
    g.add_argument("--log", required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--horizon", type=float, default=6.0)
    g.add_argument("--seeds", default="0,1")
    g.add_argument("--planners", default="sensor_policy,lidar_stack")
    g.add_argument("--max-scenarios", type=int, default=None)
    s = sub.add_parser("summary")
    s.add_argument("--leaderboard", action="append", default=[], help="FORM=DIR")
    s.add_argument("--latency")
    s.add_argument("--gap")
    s.add_argument("--run", action="append", default=[], help="PLANNER=DIR: a reference planner's leaderboard folder")
    s.add_argument("--reference", default='{"pdm_closed": 0.907, "lidar_stack": 0.670, "bc_policy": 0.762}')
    s.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.cmd == "gap":
        res = run_gap(a.bundle, a.log, planners=tuple(a.planners.split(",")), horizon_s=a.horizon,
                      seeds=tuple(int(x) for x in a.seeds.split(",")), max_scenarios=a.max_scenarios)  # fmt: skip
    else:
        res = summary(dict(x.split("=", 1) for x in a.leaderboard), a.latency, a.gap, json.loads(a.reference),
                      dict(x.split("=", 1) for x in a.run))  # fmt: skip
    atomic_write_text(Path(a.out), json.dumps(res, indent=1, default=str))
    print(json.dumps(res, indent=1, default=str)[:4000])
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
