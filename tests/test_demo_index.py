"""``loopdrive demo --recon``: index.html shows the neural results (a formatted table, the neural
episode video, the contact sheet), and the command draws a training progress bar."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

import sim.demo
from sim.cli import app
from sim.demo import DemoResult, _write_index, recon_rows

RECON: dict[str, Any] = {
    "train": {"iterations": 4500, "configured_iterations": 4500, "train_seconds": 213.4, "bundle": "b"},
    "eval": {"heldout": {"psnr": 25.2012, "ssim": 0.7713}, "lane_shift": {"psnr": {"1m": 24.07, "2m": 23.6, "3m": None}},
             "actor_removed": {"psnr": 24.22, "views": 3}, "actor_moved": {"skipped": "no GL"},
             "lidar": {"median_abs_range_err_m": 0.0604, "ray_drop_accuracy": 0.9931}},
    "neural_mode": "surface",
    "episode_neural": {"termination": "horizon", "steps": 60, "score": 0.91234},
}


def test_recon_rows_format_every_number() -> None:
    rows = dict(recon_rows(RECON))
    assert rows["training (preset quick)"] == "4500 of 4500 iterations in 213 s"
    assert rows["held-out frames: PSNR / SSIM"] == "25.20 dB / 0.771"
    assert rows["ego shifted 2 m sideways: PSNR"] == "23.60 dB" and rows["ego shifted 3 m sideways: PSNR"] == "-"
    assert rows["actor moved: PSNR"] == "skipped (no GL)"
    assert rows["LiDAR: median |range error| / ray-drop accuracy"] == "0.060 m / 0.993"
    assert rows["closed loop on neural sensors (surface mode)"] == "horizon after 60 steps, score 0.912"
    # a log without mesh truth (not synthetic): the novel views say why they were skipped
    skipped = dict(recon_rows({**RECON, "eval": {**RECON["eval"], "lane_shift": {"skipped": "not a synth log"}}}))
    assert skipped["ego shifted sideways: PSNR"] == "skipped (not a synth log)" and "ego shifted 2 m sideways: PSNR" not in skipped


def test_index_links_the_neural_video_and_contact_sheet(tmp_path: Path) -> None:
    files = {"episode_neural": tmp_path / "episode_neural.mp4", "contact_sheet": tmp_path / "eval" / "contact_sheet_volume.png",
             "eval": tmp_path / "eval" / "eval_volume.json"}
    for p in files.values():
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x")
    res = DemoResult(tmp_path, files=dict(files), recon=RECON)
    _write_index(res, ())
    page = (tmp_path / "index.html").read_text()
    section = page.split("<h2>4. Neural scene</h2>")[1]
    assert '<video src="episode_neural.mp4"' in section and '<a href="episode_neural.mp4">' in section
    assert '<img src="eval/contact_sheet_volume.png"' in section and 'href="eval/eval_volume.json"' in section
    assert "<td>25.20 dB / 0.771</td>" in section
    assert "<pre>" not in section and '"heldout"' not in section  # no raw JSON dump
    # every local link of the page points at a file that exists
    for ref in re.findall(r'(?:src|href)="([^"]+)"', section):
        assert (tmp_path / ref).exists(), ref
    # without --recon the section says how to get it
    res = DemoResult(tmp_path)
    _write_index(res, ())
    assert "skipped" in (tmp_path / "index.html").read_text().split("<h2>4. Neural scene</h2>")[1]


def test_demo_command_draws_the_training_bar(monkeypatch: Any, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def fake_run_demo(out: Path, *, progress: Any, train_progress: Any, **kw: Any) -> DemoResult:
        seen.update(kw)
        progress("4/4 training the neural scene")
        for step in range(1, 8):
            train_progress(step, 7)
        progress("   evaluating")
        progress("   driving")
        return DemoResult(Path(out))

    monkeypatch.setattr(sim.demo, "run_demo", fake_run_demo)
    res = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d"), "--recon"])
    assert res.exit_code == 0, res.output
    assert seen["recon"] is True
    out = res.output
    assert "training" in out and "7/7" in out and out.index("7/7") < out.index("evaluating")
    assert "\n\n" not in out  # the bar is closed once (a stopped bar stopped again prints blank lines)
