"""``loopdrive bench all``: the summary table from the per-benchmark JSONs, and argument checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sim.bench.all import run_all


def test_summary_from_results(tmp_path: Path) -> None:
    (tmp_path / "env.json").write_text(json.dumps({"loopdrive_single": {"steps_per_s": 500.0},
                                                    "ratios": {"single_vs_highway_env": 25.0, "batched_best_vs_highway_env": 380.0}}))
    (tmp_path / "batch.json").write_text(json.dumps({"runs": [{"executor": "local", "workers": 1, "episodes_per_min": 80.0},
                                                               {"executor": "ray", "workers": 2, "error": "could not start"}]}))
    doc = run_all(tmp_path, only=(), work=tmp_path / "w")
    rows = {(r["benchmark"], r["figure"]): r["value"] for r in doc["rows"]}
    assert rows[("env", "single env vs highway-env (sim s per wall s)")] == 25.0
    assert rows[("batch", "episodes/min, local x1")] == 80.0
    assert rows[("batch", "episodes/min, ray x2")] == "could not start"
    assert rows[("synth", "camera frames/s (320x192, RGB + depth)")] is None  # not run: n/a, not invented
    md = (tmp_path / "all.md").read_text()
    assert "| env | single env vs highway-env (sim s per wall s) | 25 | >= 20x |" in md
    assert "| synth | camera frames/s (320x192, RGB + depth) | n/a |" in md
    assert json.loads((tmp_path / "all.json").read_text())["rows"] == doc["rows"]


def test_unknown_benchmark_is_refused(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("loopdrive")
    r = subprocess.run([str(exe), "bench", "all", "--only", "synth,warp", "--results", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "warp" in r.stderr
    assert not list(tmp_path.iterdir())


def test_psnr_lead_compares_the_same_frames_only() -> None:
    import pytest

    from sim.bench.recon import psnr_lead

    def ev(frames: list[int], base: float) -> dict:
        return {"heldout": {"frames": frames, "psnr": base}, "lane_shift": {"psnr": {"1m": base - 1, "2m": base - 2}},
                "actor_removed": {"psnr": base - 0.5, "views": 2}, "actor_moved": {"psnr": None, "views": 0}}

    lead = psnr_lead(ev([0, 10], 24.0), ev([0, 10], 20.5))
    assert lead == {"frames": [0, 10], "heldout_db": 3.5, "lane_shift_db": {"1m": 3.5, "2m": 3.5}, "actor_removed_db": 3.5, "actor_moved_db": None}
    with pytest.raises(ValueError, match="different frames"):
        psnr_lead(ev([0, 10], 24.0), ev([0, 10, 20], 20.0))
