"""scripts/reproduce_loop_rows.sh: its commands are the ones the README's loop rows record
(benchmarks/results/loop_rounds.json), and what it regenerates is deterministic."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from sim.cli import app

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "reproduce_loop_rows.sh"


def _options(cmd: str) -> dict[str, list[str]]:
    """``--option -> [values]`` of a ``loopdrive loop`` command line (repeatable options collected)."""
    toks = shlex.split(cmd)
    out: dict[str, list[str]] = {}
    key = ""
    for t in toks[toks.index("loop") + 1 :]:
        if t.startswith("--"):
            key = t
            out.setdefault(key, [])
        else:
            out[key].append(t)
    return out


def _dry_run(**env: str) -> list[str]:
    done = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env={**os.environ, "LOOPDRIVE": "echo", **env},
                          capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


def test_the_script_runs_the_recorded_commands() -> None:
    rec = json.loads((ROOT / "benchmarks" / "results" / "loop_rounds.json").read_text())
    step1, step2, step3 = _dry_run()
    readme = " ".join((ROOT / "README.md").read_text().replace("\\\n", " ").split())  # continuation lines joined
    assert "loopdrive " + " ".join(step1.split()) in readme  # the README's step 1 of the shipped policy
    v1 = _options(rec["aggregated_v1"]["command"])
    v1["--init-weights"] = ["models/bc-round0.safetensors"]  # "shipped" meant the round-0 policy then
    assert _options(step2) == v1
    assert _options(step3) == _options(rec["aggregated_v2_current_engine"]["command"])
    assert _options(_dry_run(STEPS="3", FAILURE_WEIGHT="1")[0]) == _options(rec["aggregated_v2_failure_weight_1"]["command"])
    # step 1 writes 200 of the shard names the shipped weights record (the loop's init-shards check)
    from sim.scenario import expand_paths

    eps = expand_paths([ROOT / "scenarios"])
    names = {f"{e.episode_id}__x{s}.npz" for e in eps for s in range(100, 106)} | {f"dagger1_{e.episode_id}__x{s}.npz" for e in eps for s in (106, 107)}
    shipped = set(json.loads((ROOT / "agents" / "weights" / "bc_policy.json").read_text())["shards"])
    assert len(names) == 200 and names <= shipped


def test_expert_and_dagger_shards_and_weights_regenerate_identically(tmp_path: Path) -> None:
    scen = tmp_path / "scen"
    scen.mkdir()
    (scen / "follow.yaml").write_text(
        "version: 1\nname: follow\ndescription: ego follows a slower car in the tiny town\nscene: {town: tiny, seed: 0}\n"
        "ego:\n  start: {lane: lane_1, s: 2.0, speed: 6.0}\n  route: [lane_1, lane_22, lane_9]\n"
        "actors:\n  - {op: insert, id: lead, class: car, spawn: {lane: lane_1, s: 16.0, speed: 4.0}, behavior: {type: idm, v0: 4.0}}\n"
        "planner: {name: idm}\nhorizon_s: 0.6\nseeds: [0]\n")
    for run in ("a", "b"):
        res = CliRunner().invoke(app, ["train", "bc", "--scenarios", str(scen), "--seeds", "100", "--dagger-rounds", "1", "--dagger-seeds", "101",
                                       "--episodes", str(tmp_path / run / "ep"), "--out", str(tmp_path / run / "bc.safetensors"),
                                       "--epochs", "1", "--batch-size", "4"])
        assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (tmp_path / "a" / "ep").glob("*.npz"))
    assert names == ["dagger1_follow__s0__x101.npz", "follow__s0__x100.npz"]
    for n in names:
        a, b = np.load(tmp_path / "a" / "ep" / n), np.load(tmp_path / "b" / "ep" / n)
        assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a), n
    from safetensors.numpy import load_file

    wa, wb = load_file(tmp_path / "a" / "bc.safetensors"), load_file(tmp_path / "b" / "bc.safetensors")
    assert sorted(wa) == sorted(wb) and all(np.array_equal(wa[k], wb[k]) for k in wa)
    # the weights record the shards they were trained on: the loop's init-shards check uses it
    assert sorted(json.loads((tmp_path / "a" / "bc.json").read_text())["shards"]) == names
