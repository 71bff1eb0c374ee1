"""nerfstudio's ``ns-render interpolate`` on a tiny bundle written by ``loopdrive recon``: the
bundle's nerfstudio config is obtained through ``loopdrive ns-config`` (sha256-checked, see
docs/security.md) and the video is encoded by the ``ffmpeg`` on PATH (the system-deps script's)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from sim.cli import app
from sim.recon.toyscene import write_toy_scene


def test_ns_render_interpolate_writes_a_video_of_the_bundle(tmp_path: Path) -> None:
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg is not None, "nerfstudio's ns-render needs an ffmpeg on PATH (scripts/install-system-deps.sh installs it)"
    toy = write_toy_scene(tmp_path / "toy", frames=20)  # 96x64 images; every 10th frame is held out (eval)
    runner = CliRunner()
    res = runner.invoke(app, ["recon", str(toy), "--out", str(tmp_path / "bundle"), "--iterations", "2", "--upsample", "2"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["ns-config", str(tmp_path / "bundle")])
    assert res.exit_code == 0, res.output
    config = Path(res.stdout.strip())
    assert config.is_file() and config.is_relative_to(tmp_path / "bundle")
    video = tmp_path / "render" / "interp.mp4"
    p = subprocess.run([str(Path(sys.executable).with_name("ns-render")), "interpolate", "--load-config", str(config), "--output-path", str(video),
                        "--interpolation-steps", "2", "--frame-rate", "4"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    probe = subprocess.run([str(Path(ffmpeg).with_name("ffprobe")), "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=nb_read_frames,width,height", "-of", "json", str(video)], capture_output=True, text=True, check=True)
    stream = json.loads(probe.stdout)["streams"][0]
    assert (stream["width"], stream["height"]) == (96, 64) and int(stream["nb_read_frames"]) == 2  # 2 eval cameras x 2 steps, endpoints shared
    raw = subprocess.run([ffmpeg, "-v", "error", "-i", str(video), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, 64, 96, 3)
    assert len(frames) == 2 and frames.std() > 0  # decoded pictures, not an empty container
