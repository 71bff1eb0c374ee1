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
    (tmp_path / "planner_gap.json").write_text(json.dumps({"planner_gap": {"mean_score_mesh": 0.71234, "mean_score_neural": 0.68}}))
    doc = run_all(tmp_path, only=(), work=tmp_path / "w")
    rows = {(r["benchmark"], r["figure"]): r["value"] for r in doc["rows"]}
    assert rows[("env", "single env vs highway-env (sim s per wall s)")] == 25.0
    assert rows[("batch", "episodes/min, local x1")] == 80.0
    assert rows[("batch", "episodes/min, ray x2")] == "could not start"
    assert rows[("synth", "camera frames/s (320x192, RGB + depth)")] is None  # not run: n/a, not invented
    assert rows[("planner-gap", "lidar_stack score mesh / neural")] == "0.712 / 0.68"  # from the planner-gap file
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
    # with per-frame PSNR and the lane-shift frames, the held-out lead on just those frames
    ours, theirs = ev([0, 10, 20, 30], 24.0), ev([0, 10, 20, 30], 20.0)
    ours["heldout"]["psnr_per_frame"] = [22.0, 23.0, 25.0, 26.0]
    theirs["heldout"]["psnr_per_frame"] = [20.5, 19.5, 20.0, 20.0]
    ours["lane_shift"]["frames"] = theirs["lane_shift"]["frames"] = [0, 10]
    lead = psnr_lead(ours, theirs)
    assert lead["heldout_db"] == 4.0 and lead["lane_shift_frames"] == [0, 10]
    assert lead["heldout_db_on_lane_shift_frames"] == 2.5  # (22.5 - 20.0)


def _nerfacto_doc(frames: list[int], n_log_frames: int = 20, size: tuple[int, int] = (64, 48)) -> dict:
    ev = {"heldout": {"frames": frames, "psnr": 20.0}, "lane_shift": {"psnr": {"2m": 19.0}},
          "actor_removed": {"psnr": 19.5, "views": 1}, "actor_moved": {"psnr": 19.4, "views": 1}}
    return {"log": {"frames": n_log_frames, "resolution": list(size)}, "nerfacto": {"iterations": 12, "eval": ev}}


def test_a_reused_nerfacto_result_is_checked_against_the_log(tmp_path: Path) -> None:
    import pytest

    from sim.bench.recon import load_nerfacto_result
    from sim.errors import ResultsError

    class _F:
        width, height = 64, 48

    class _Log:
        frames = [_F()] * 20

    good = tmp_path / "good.json"
    good.write_text(json.dumps(_nerfacto_doc([0, 10])))
    assert load_nerfacto_result(good, _Log())["eval"]["heldout"]["frames"] == [0, 10]
    cases = {
        "missing.json": (None, "does not exist"),
        "bad.json": ("{not json", "expected JSON"),
        "no_eval.json": (json.dumps({"log": {}, "nerfacto": {"iterations": 3}}), "nerfacto.eval"),
        "frames.json": (json.dumps(_nerfacto_doc([0, 25])), "nerfacto.eval.heldout.frames"),
        "other_log.json": (json.dumps(_nerfacto_doc([0, 10], n_log_frames=120)), "log: measured on another log"),
        "other_size.json": (json.dumps(_nerfacto_doc([0, 10], size=(320, 192))), "another log"),
    }
    for name, (text, msg) in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(ResultsError, match=msg) as ei:
            load_nerfacto_result(tmp_path / name, _Log())
        assert name in str(ei.value)


def test_bench_recon_refuses_a_bad_nerfacto_result_before_training(tmp_path: Path) -> None:
    from sim.recon.toyscene import write_toy_scene

    log = write_toy_scene(tmp_path / "toy", frames=6)
    (tmp_path / "old.json").write_text(json.dumps(_nerfacto_doc([0], n_log_frames=99)))
    exe = Path(sys.executable).with_name("loopdrive")
    out, work = tmp_path / "r.json", tmp_path / "work"
    r = subprocess.run([str(exe), "bench", "recon", "--log", str(log), "--nerfacto-from", str(tmp_path / "old.json"),
                        "--out", str(out), "--work", str(work)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "old.json: log: measured on another log" in r.stderr, r.stderr[-2000:]
    assert not out.exists() and not (work / "bundle-quick").exists()
