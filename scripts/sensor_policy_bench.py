"""Benchmarks of ``sensor_policy`` (figures under ``benchmarks/results/sensor_policy*.json``).

* ``gap``: the sim-to-real gap of the sensor model for ``sensor_policy`` (and, for comparison,
  ``lidar_stack``) -- the same episodes driven on ``mesh`` and on ``neural`` LiDAR of a scene
  bundle (:func:`sim.bench.closed_loop.planner_gap`); the policy is trained on mesh LiDAR, so
  this is the mesh -> neural cross test;
* ``summary``: one JSON from leaderboard folders of the three runtime forms (``loopdrive
  leaderboard scenarios/ --planners sensor_policy --planner-param runtime=... --out DIR``), the
  latency JSON (``python -m agents.sensor_policy_onnx bench``) and the gap JSON, with the machine
  load.

* ``latency``: the three runtime forms' per-plan latency on mesh sweeps recorded on a library
  scenario (whole plan, each stage, the network alone; mean / median / p95 ms; the forms take
  turns in one run, the load is recorded);
* ``plan-diff``: the forms' waypoint differences over every recorded raster of the shards;
* ``paired`` / ``paired-scores``: the library at several seeds per form (resumable), then the
  paired per-episode score differences (same episode, same seed);
* ``publish``: merge those into ``benchmarks/results/sensor_policy.json``, keeping its other keys.

``python scripts/sensor_policy_bench.py gap --bundle B --log L --out J`` /
``python scripts/sensor_policy_bench.py summary --leaderboard torch=DIR ... --latency J --gap J --out J`` /
``python scripts/sensor_policy_bench.py latency --out J`` /
``python scripts/sensor_policy_bench.py plan-diff --out J`` /
``python scripts/sensor_policy_bench.py paired --form torch|onnx|onnx_int8 --seeds 0,1,2 --out DIR`` (one per form) /
``python scripts/sensor_policy_bench.py paired-scores --runs DIR --out J`` /
``python scripts/sensor_policy_bench.py publish --latency J --paired J --plan-diff J``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from sim.fsutil import atomic_write_text

__all__ = ["latency_table", "leaderboard_row", "paired_episodes", "paired_scores", "publish", "record_sweeps", "run_gap", "run_latency", "run_paired", "summary"]

FORMS = ("torch", "onnx", "onnx_int8")


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


# ---------------------------------------------------------------------------------- latency
def record_sweeps(scenario: str, steps: int, seed: int = 0) -> tuple[Any, Any, Any]:
    """``steps`` LiDAR sweeps (mesh, the file's ``scene.renderer``) and ego vectors of
    ``sensor_policy`` (torch) driving ``scenario``, and the episode's ``PlannerInit`` (its route):
    the inputs a plan meets on the road."""
    import numpy as np

    from agents.sensor_policy import SensorPolicyPlanner
    from sim.planning import ObservationSpec, Planner
    from sim.rollout import run_planner_episode
    from sim.scenario import expand_paths

    class Recorder(Planner):
        name = "sensor_policy_recorder"

        def __init__(self) -> None:
            super().__init__()
            self.inner, self.init, self.rows = SensorPolicyPlanner(), None, []

        def observation_spec(self) -> ObservationSpec:
            return ObservationSpec(kinds=("ego", "lidar"))

        def reset(self, init: Any, *, seed: int | None = None) -> None:
            self.init = init
            self.inner.reset(init, seed=seed)

        def plan(self, obs: Any) -> Any:
            self.rows.append((np.array(obs["lidar"], np.float32), np.array(obs["ego"], np.float64)))
            return self.inner.plan(obs)

    ep = expand_paths([scenario])[0]
    rec = Recorder()
    run_planner_episode(ep.spec, rec, seed, observation=("ego", "lidar"), renderer="scenario", max_steps=steps, raise_errors=True)
    return np.stack([r[0] for r in rec.rows]), np.stack([r[1] for r in rec.rows]), rec.init


def run_latency(weights: str, scenario: str = "scenarios/logged_drive.yaml", steps: int = 30, rounds: int = 20, per_round: int = 30) -> dict[str, Any]:
    """:func:`agents.sensor_policy_onnx.bench_latency` on mesh sweeps recorded on ``scenario``
    (with its route), the engine's trajectory controller timed as the tracking stage."""
    from agents.sensor_policy_onnx import bench_latency
    from sim.controller import TrajectoryController

    sweeps, egos, init = record_sweeps(scenario, steps)
    ctl = TrajectoryController(dt=2.0 / 3.0)

    def track(traj: Any, obs: Any) -> None:
        ctl(traj.xy, float(obs["ego"][3]), 0.0, 0.1)

    out = bench_latency(weights, sweeps, egos, init, rounds=rounds, per_round=per_round, tracker=track)
    out["scenario"] = scenario
    out["uptime"] = _uptime()
    return out


def _uptime() -> str:
    import subprocess

    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"load average {os.getloadavg()}"


# ------------------------------------------------------------------------ paired closed loop
def paired_episodes(paths: list[str], seeds: list[int]) -> list[Any]:
    """The library's episodes once per seed in ``seeds`` (seed-major: every episode at the first
    seed, then at the next, so an interrupted run still pairs whole seeds), duplicates (a file
    listing several seeds) dropped."""
    from sim.scenario import expand_with_seeds

    eps, seen = [], set()
    for s in seeds:
        for e in expand_with_seeds(paths, [s]):
            key = (e.file, json.dumps(dict(e.sweep), sort_keys=True, default=str), e.seed)
            if key not in seen:
                seen.add(key)
                eps.append(e)
    return eps


def run_paired(paths: list[str], seeds: list[int], out: str, form: str, weights: str | None = None) -> Path:
    """Drive every episode of :func:`paired_episodes` with ``sensor_policy`` in runtime ``form``
    (the leaderboard's roll-out: mesh LiDAR from each file's ``scene.renderer``) into
    ``out/<form>`` (resumable: run the same command again to continue)."""
    import torch

    from sim.batch import run_batch
    from sim.leaderboard import sensor_rollout

    torch.set_num_threads(1)
    params: dict[str, Any] = {"runtime": form, **({"weights": weights} if weights else {})}
    run_dir = Path(out) / form
    run_batch(None, run_dir, episodes=paired_episodes(paths, seeds), planner="sensor_policy", planner_params=params,
              resume=run_dir.exists(), rollout_fn=sensor_rollout, progress=lambda d, f, t: print(f"{form} {d}/{t} failed {f}", flush=True))  # fmt: skip
    return run_dir


def _episode_scores(run_dir: Path) -> dict[str, dict[str, Any]]:
    """episode id -> {score, scenario, seed, status} of every finished episode of a run folder."""
    out = {}
    for m in sorted((run_dir / "episodes").glob("*/metrics.json")):
        row = json.loads(m.read_text(encoding="utf-8")).get("row", {})
        if row:
            out[str(row["episode_id"])] = {"score": float(row["score"]) if row.get("status") == "ok" else 0.0,
                                           "scenario": row["scenario"], "seed": int(row["seed"]), "status": row.get("status")}  # fmt: skip
    return out


def paired_scores(out: str, forms: tuple[str, ...] = FORMS, base: str = "torch", tol: float = 0.01) -> dict[str, Any]:
    """Paired per-episode score differences of each form against ``base`` (and of int8 against
    fp32 ONNX) over the episodes every form finished (same episode, same seed): the mean
    difference with its standard error and a paired bootstrap 95 % interval, how many episodes
    differ by more than ``tol`` (which, and the mean difference of the others), and per seed the
    library score of every form. An episode whose seeds score alike in every form (the seed does
    not change it) counts once in the paired statistics."""
    import numpy as np

    runs = {f: _episode_scores(Path(out) / f) for f in forms if (Path(out) / f).is_dir()}
    common = sorted(set.intersection(*(set(r) for r in runs.values()))) if runs else []
    res: dict[str, Any] = {"episodes": len(common), "forms": list(runs), "base": base}
    if not common or base not in runs:
        return res
    seeds = sorted({runs[base][e]["seed"] for e in common})
    res["seeds"] = seeds
    res["score"] = {f: round(float(np.mean([r[e]["score"] for e in common])), 4) for f, r in runs.items()}
    res["score_per_seed"] = {f: {str(s): round(float(np.mean([r[e]["score"] for e in common if r[e]["seed"] == s])), 4) for s in seeds}
                             for f, r in runs.items()}  # fmt: skip
    # does the seed change an episode at all? (the library's episodes are deterministic: it does not)
    groups: dict[str, list[str]] = {}
    for e in common:
        groups.setdefault(e.rsplit("__x", 1)[0], []).append(e)
    multi = {g: es for g, es in groups.items() if len(es) > 1}
    res["distinct_episodes"] = len(groups)
    res["episodes_whose_seeds_all_score_alike"] = {f: sum(len({round(r[e]["score"], 9) for e in es}) == 1 for es in multi.values()) for f, r in runs.items()}
    res["episodes_run_at_several_seeds"] = len(multi)
    # an episode whose seeds all score alike in every form is one sample, not one per seed
    alike = {g for g, es in multi.items() if all(len({round(r[e]["score"], 9) for e in es}) == 1 for r in runs.values())}
    common = [e for g, es in groups.items() for e in (es[:1] if g in alike else es)]
    res["paired_samples"] = len(common)
    res["score_paired_samples"] = {f: round(float(np.mean([r[e]["score"] for e in common])), 4) for f, r in runs.items()}
    rng = np.random.default_rng(0)
    pairs = [(f, base) for f in runs if f != base] + [("onnx_int8", "onnx")] * ({"onnx_int8", "onnx"} <= set(runs) and base != "onnx")
    for f, b in pairs:
        d = np.array([runs[f][e]["score"] - runs[b][e]["score"] for e in common])
        boot = d[rng.integers(0, len(d), (2000, len(d)))].mean(axis=1)
        res[f"{f}_vs_{b}"] = {
            "mean_diff": round(float(d.mean()), 4), "stderr": round(float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0, 4),
            "bootstrap_95": [round(float(np.percentile(boot, 2.5)), 4), round(float(np.percentile(boot, 97.5)), 4)],
            "equal_episodes": int((np.abs(d) <= 1e-9).sum()), f"episodes_differing_over_{tol}": int((np.abs(d) > tol).sum()),
            "mean_diff_without_those": round(float(d[np.abs(d) <= tol].mean()), 4) if (np.abs(d) <= tol).any() else None,
            "differing": {e: round(float(x), 4) for e, x in zip(common, d, strict=True) if abs(x) > tol},
        }  # fmt: skip
    return res


# ---------------------------------------------------------------------------------- publish
def latency_table(lat: dict[str, Any]) -> str:
    """The latency JSON of :func:`run_latency` as a markdown table (ms: median / mean / p95)."""
    rows = ["| form | clock | network alone | ego view | raster (+ input) | features | network | trajectory | **whole plan** median / mean / p95 "
            "| plan with the numpy raster | tracking |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for f in FORMS:
        for clock, r in (("wall", lat[f]), ("cpu", lat[f]["cpu"])):
            med = {k: r[k]["median"] for k in ("network_alone", "ego_view", "raster", "features", "network", "trajectory", "plan_numpy_raster")}
            trk = f"{r['tracking']['median']:.3f}" if "tracking" in r else "-"
            rows.append(f"| {f} | {clock} | {med['network_alone']:.3f} | {med['ego_view']:.3f} | {med['raster']:.3f} | {med['features']:.3f} | "
                        f"{med['network']:.3f} | {med['trajectory']:.3f} | **{r['plan']['median']:.3f}** / {r['plan']['mean']:.3f} / "
                        f"{r['plan']['p95']:.3f} | {med['plan_numpy_raster']:.3f} | {trk} |")  # fmt: skip
    m = lat["machine"]
    rows.append(f"\nint8 vs torch, whole plan, CPU time: {lat['plan_cpu_speedup_int8_vs_torch_median']}x (median), "
                f"{lat['plan_cpu_speedup_int8_vs_torch_mean']}x (mean), {lat['plan_cpu_speedup_int8_vs_torch_p95']}x (p95); wall time: "
                f"{lat['plan_speedup_int8_vs_torch_median']}x / {lat['plan_speedup_int8_vs_torch_mean']}x / {lat['plan_speedup_int8_vs_torch_p95']}x; "
                f"network alone {lat['network_speedup_int8_vs_torch_median']}x; load {m['load_avg_1m_before']} -> {m['load_avg_1m_after']} "
                f"(1-min average, {m['cpu_count']} CPUs); ms")  # fmt: skip
    return "\n".join(rows)


def publish(into: str, latency: str | None, paired: str | None, plan_diff: str | None, perturbed: str | None = None,
            note: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Merge the new figures into the published JSON ``into``, keeping its other keys:
    ``latency`` (replaced), ``int8_parity`` (``plan_level``: :func:`plan_differences`;
    ``closed_loop_paired``: :func:`paired_scores` on the library; ``closed_loop_perturbed``: the
    same on perturbed copies of episodes; ``note``)."""
    doc = json.loads(Path(into).read_text(encoding="utf-8")) if Path(into).is_file() else {"benchmark": "sensor_policy"}
    if latency:
        doc["latency"] = json.loads(Path(latency).read_text(encoding="utf-8"))
    parity = dict(doc.get("int8_parity", {}))
    if plan_diff:
        parity["plan_level"] = json.loads(Path(plan_diff).read_text(encoding="utf-8"))
    if paired:
        parity["closed_loop_paired"] = json.loads(Path(paired).read_text(encoding="utf-8"))
    if perturbed:
        parity["closed_loop_perturbed"] = json.loads(Path(perturbed).read_text(encoding="utf-8"))
    if note:
        parity["note"] = note
    if parity:
        doc["int8_parity"] = parity
    doc["uptime_at_publish"] = _uptime()
    return doc


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
    pr = sub.add_parser("paired", help="drive the library at several seeds with one runtime form (resumable)")
    pr.add_argument("--form", required=True, choices=FORMS)
    pr.add_argument("--scenarios", default="scenarios")
    pr.add_argument("--seeds", default="0,1,2")
    pr.add_argument("--weights", default=None)
    pr.add_argument("--out", required=True, help="folder; the run goes to OUT/<form>")
    ps = sub.add_parser("paired-scores", help="paired per-episode differences of the forms run by `paired`")
    ps.add_argument("--runs", required=True, help="the OUT folder of `paired`")
    ps.add_argument("--out", required=True)
    la = sub.add_parser("latency", help="latency table of the three forms on recorded mesh sweeps (same run, load recorded)")
    la.add_argument("--weights", default="agents/weights/sensor_policy.safetensors")
    la.add_argument("--scenario", default="scenarios/logged_drive.yaml")
    la.add_argument("--steps", type=int, default=30)
    la.add_argument("--rounds", type=int, default=20)
    la.add_argument("--out", required=True)
    pd = sub.add_parser("plan-diff", help="waypoint differences between the forms over every recorded raster of shards")
    pd.add_argument("--weights", default="agents/weights/sensor_policy.safetensors")
    pd.add_argument("--shards", nargs="+", default=["out/sensor-policy-episodes"])
    pd.add_argument("--out", required=True)
    pb = sub.add_parser("publish", help="merge latency / paired / plan-diff JSONs into the published JSON (other keys kept)")
    pb.add_argument("--into", default="benchmarks/results/sensor_policy.json")
    pb.add_argument("--latency")
    pb.add_argument("--paired")
    pb.add_argument("--plan-diff")
    pb.add_argument("--perturbed", help="paired-scores JSON of perturbed copies of episodes")
    pb.add_argument("--note")
    s = sub.add_parser("summary")
    s.add_argument("--leaderboard", action="append", default=[], help="FORM=DIR")
    s.add_argument("--latency")
    s.add_argument("--gap")
    s.add_argument("--run", action="append", default=[], help="PLANNER=DIR: a reference planner's leaderboard folder")
    s.add_argument("--reference", default='{"pdm_closed": 0.907, "lidar_stack": 0.670, "bc_policy": 0.762}')
    s.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.cmd == "paired":
        print(run_paired([a.scenarios], [int(x) for x in a.seeds.split(",")], a.out, a.form, a.weights))
        return 0
    if a.cmd == "publish":
        res = publish(a.into, a.latency, a.paired, a.plan_diff, a.perturbed, a.note)
        atomic_write_text(Path(a.into), json.dumps(res, indent=1, default=str) + "\n")
        if a.latency:
            print(latency_table(res["latency"]))
        return 0
    if a.cmd == "paired-scores":
        res = paired_scores(a.runs)
    elif a.cmd == "latency":
        res = run_latency(a.weights, a.scenario, a.steps, a.rounds)
        print(latency_table(res))
    elif a.cmd == "plan-diff":
        from agents.sensor_policy_onnx import plan_differences

        res = plan_differences(a.weights, a.shards)
    elif a.cmd == "gap":
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
