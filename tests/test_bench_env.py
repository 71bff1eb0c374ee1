"""``loopdrive bench env``: random per-world actions drawn up front, resets counted, the labelled
fixed-action rows, a simulator that cannot start reported unavailable, and the JSON / markdown."""

from __future__ import annotations

import json
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
from typer.testing import CliRunner

from sim.bench.env import FIXED_LABEL, THREADS_LABEL, bench_scenario
from sim.bench.env_report import env_table_markdown
from sim.bench.env_worker import (
    METADRIVE_STUB_FILE,
    action_pool,
    loopdrive_systems,
    metadrive_stub,
    worlds_distinct,
)
from sim.cli import app


def _fake_python(tmp_path: Path) -> Path:
    """An 'interpreter' that fails the way a Python without MetaDrive would."""
    p = tmp_path / "nopython"
    p.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'metadrive'\" >&2\nexit 1\n")
    p.chmod(0o755)
    return p


def test_fast_run_writes_the_schema_with_random_and_labelled_fixed_rows(tmp_path: Path) -> None:
    out = tmp_path / "res" / "env.json"
    args = ["bench", "env", "--out", str(out), "--seconds", "0.2", "--rounds", "2", "--batch-sizes", "3", "--no-sb3",
            "--simulators", "metadrive,loopdrive", "--metadrive-python", str(_fake_python(tmp_path))]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["benchmark"] == "env" and res["schema_version"] == 2 and res["rounds"] == 2 and res["dt_s"] == 0.1
    assert res["actions"]["kind"] == "random" and res["actions"]["seed"] == 0
    # a simulator that cannot start is unavailable with its reason; one not asked for says so
    assert res["metadrive"]["available"] is False and "No module named 'metadrive'" in res["metadrive"]["reason"]
    assert res["highway_env"] == {"available": False, "reason": "not requested"}
    assert res["ratios"] == {}
    assert res["loopdrive"]["available"] is True and res["loopdrive"]["vehicles"] == 20
    single, (b3,) = res["loopdrive_single"], res["loopdrive_batched"]
    fixed = {f["name"]: f for f in res["fixed_action"]["rows"]}
    assert set(fixed) == {"loopdrive_single_fixed", "loopdrive_B3_fixed"} and res["fixed_action"]["label"] == FIXED_LABEL
    for row in (single, b3, *fixed.values()):
        assert len(row["slices_steps_per_s"]) == 2 and row["steps_per_s"] > 0
        assert row["world_steps"] == row["env_steps"] * row["num_envs"] and row["env_steps"] >= 10
        assert isinstance(row["resets"], int) and row["resets"] >= 0 and row["reset_ms"] > 0
    assert single["actions"] == b3["actions"] == "random" and "fixed" not in single["label"] + b3["label"]
    assert b3["num_envs"] == 3 and b3["worlds_distinct_actions"] is True
    assert all(f["actions"] == "fixed" and f["label"] == FIXED_LABEL for f in fixed.values())
    assert fixed["loopdrive_B3_fixed"]["worlds_distinct_actions"] is False
    assert set(res["random_vs_fixed"]) == set(fixed)
    # the threaded row (default --threads 2) is labelled and kept out of the per-core rows
    (thr,) = res["loopdrive_threaded"]["rows"]
    assert res["loopdrive_threaded"]["label"] == THREADS_LABEL
    assert thr["name"] == "loopdrive_B3_threads2" and thr["threads"] == 2 and thr["num_envs"] == 3 and thr["steps_per_s"] > 0
    assert b3["threads"] == 1 and single["threads"] == 1
    md = out.with_suffix(".md").read_text()
    assert "| loopdrive vector env, B = 3 | random |" in md and "| loopdrive vector env, B = 3 | **fixed** (see below) |" in md
    assert "| loopdrive vector env, B = 3, **2 threads** (see below) | random |" in md and THREADS_LABEL in md
    assert "MetaDrive: unavailable" in md and FIXED_LABEL in md


def test_actions_differ_across_worlds_and_resets_are_counted_as_episodes_end() -> None:
    systems, _ = loopdrive_systems({"batch_sizes": [4], "fixed": True, "pool_steps": 64, "seed": 3})
    by = {s.name: s for s in systems}
    rnd, fix = by["loopdrive_B4"], by["loopdrive_B4_fixed"]
    assert rnd.pool.shape == (64, 4, 2) and worlds_distinct(rnd.pool) and rnd.pool.min() >= -1 and rnd.pool.max() <= 1
    assert fix.pool.shape == (1, 4, 2) and not worlds_distinct(fix.pool) and not np.any(fix.pool)
    # the single env's resets are the episodes a plain loop over the same actions sees end
    single = by["loopdrive_single"]
    got = single.run_steps(150)
    spec, scene = bench_scenario()
    env = gym.make("loopdrive/ClosedLoop-v0", scenario=spec, scene=scene)
    env.reset(seed=3)
    ends = 0
    for i in range(150):
        _, _, te, tr, _ = env.step(single.pool[i % 64, 0])
        if te or tr:
            ends += 1
            env.reset()
    assert got == {"steps": 150, "resets": ends} and ends >= 1  # random actions end episodes
    # the vector env counts every world's ending
    assert rnd.run_steps(100)["resets"] >= 4
    for s in systems:
        s.close()
    env.close()


def test_action_pool_is_seeded_and_metadrive_stub_has_what_its_check_opens(tmp_path: Path) -> None:
    lo, hi = np.array([-1.0, -2.0]), np.array([1.0, 2.0])
    a, b = action_pool("random", lo, hi, 5, 10, 7), action_pool("random", lo, hi, 5, 10, 7)
    assert np.array_equal(a, b) and not np.array_equal(a, action_pool("random", lo, hi, 5, 10, 8))
    assert np.all(np.abs(a[..., 1]) <= 2) and np.abs(a[..., 1]).max() > 1
    root = metadrive_stub(tmp_path / "assets")
    assert (root / "version.txt").read_text().strip() == "0.4.3"
    assert root.joinpath(*METADRIVE_STUB_FILE).is_file()


def test_markdown_ratios_against_both_references() -> None:
    row = {"num_envs": 1, "actions": "random", "steps_per_s": 2000.0, "resets_per_1000_world_steps": 20.0, "reset_ms": 0.3, "reset_ms_per_world": 0.3}
    res = {
        "dt_s": 0.1, "rounds": 5, "machine": {"cpus": 2}, "method": {"slice_s": 2.0},
        "highway_env": {"available": True, "version": "1.12.1", "config": {"vehicles_count": 20, "simulation_frequency": 10}, "steps_per_s": 100.0,
                        "resets_per_1000_world_steps": 25.0, "reset_ms": 11.0},
        "metadrive": {"available": True, "version": "0.4.3", "config": {"traffic_mode": "respawn"}, "steps_per_s": 50.0, "traffic_vehicles_median": 21.0,
                      "resets_per_1000_world_steps": 0.0, "reset_ms": 107.0},
        "loopdrive_single": row, "loopdrive_batched": [], "fixed_action": {"rows": [{**row, "actions": "fixed", "steps_per_s": 3000.0}]},
    }
    md = env_table_markdown(res)
    assert "| loopdrive single env | random | 2,000 | 20.0 | 40.0 | 20.0 | 0.30 |" in md
    assert "| loopdrive single env | **fixed** (see below) | 3,000 | 30.0 | 60.0 |" in md
    assert "MetaDrive 0.4.3 headless, respawn traffic" in md and "21 traffic vehicles" in md


def test_a_python_that_is_not_executable_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "python"
    p.write_text("")
    os.chmod(p, 0o644)
    r = CliRunner().invoke(app, ["bench", "env", "--metadrive-python", str(p), "--out", str(tmp_path / "e.json")])
    assert r.exit_code == 2 and "expected an executable Python interpreter" in r.output
    r = CliRunner().invoke(app, ["bench", "env", "--simulators", "carla", "--out", str(tmp_path / "e.json")])
    assert r.exit_code == 2 and "expected names among" in r.output
    assert not (tmp_path / "e.json").exists()


def test_a_worker_that_hangs_is_killed_with_a_reason(tmp_path: Path) -> None:
    import pytest

    from sim.bench.env import _Worker

    p = tmp_path / "hangs"
    p.write_text("#!/bin/sh\necho 'downloading assets.zip' >&2\nexec sleep 60\n")
    p.chmod(0o755)
    w = _Worker("metadrive", str(p), {})
    with pytest.raises(RuntimeError, match=r"did not answer within 3 s: downloading assets.zip"):
        w.reply(timeout_s=3.0)
    assert w.proc.poll() is not None  # killed, not left running
    w.close()


def test_bench_all_summary_has_the_metadrive_and_vector_rows() -> None:
    """``bench all``'s summary reads MetaDrive's figure, the single env's ratio to it and the
    vector env's B = 256 rate from ``bench env``'s JSON (n/a when MetaDrive did not run)."""
    from sim.bench.all import summary_rows

    env = {
        "loopdrive_single": {"steps_per_s": 9000.0}, "highway_env": {"steps_per_s": 90.0}, "metadrive": {"steps_per_s": 60.0},
        "loopdrive_batched": [{"num_envs": 16, "steps_per_s": 30000.0}, {"num_envs": 256, "steps_per_s": 55000.0}],
        "ratios": {"single_vs_highway_env": 100.0, "single_vs_metadrive": 150.0, "batched_best_vs_metadrive": 916.7},
    }  # fmt: skip
    rows = {r[1]: (r[2], r[3]) for r in summary_rows({"env": env})}
    assert rows["MetaDrive steps/s (same run)"] == (60.0, "")
    assert rows["single env vs MetaDrive (sim s per wall s)"] == (150.0, ">= 120x")
    assert rows["batched best vs MetaDrive"][0] == 916.7
    assert rows["vector env B = 256 world-steps/s (random per-world actions)"] == (55000.0, ">= 60000")
    empty = {r[1]: r[2] for r in summary_rows({"env": {"metadrive": {"available": False}}})}
    assert empty["MetaDrive steps/s (same run)"] is None and empty["vector env B = 256 world-steps/s (random per-world actions)"] is None
