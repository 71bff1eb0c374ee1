"""Episode video panels: camera + LiDAR range image + BEV, written as mp4."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np

from sim.viz import episode_frame, lidar_range_panel, write_episode_video


def _obs(k: int) -> dict:
    cam = np.full((192, 320, 3), 40 + k, np.uint8)
    lidar = np.zeros((32, 1024, 2), np.float32)
    lidar[:, 0, 0] = 10.0  # returns straight ahead only
    bev = np.zeros((128, 128, 4), np.uint8)
    bev[60:68, 60:68, 3] = 255  # the ego
    return {"camera": cam, "lidar": lidar, "bev": bev}


def test_lidar_panel_puts_forward_in_the_middle() -> None:
    r = np.zeros((4, 64, 1))
    r[:, 0, 0] = 5.0
    img = lidar_range_panel(r, width=64)
    lit = np.nonzero(img.sum(axis=(0, 2)))[0]
    assert len(lit) and abs(lit.mean() - 32) <= 1.5  # forward column centred
    assert img[:, :5].sum() == 0  # no return = black


def test_frame_layout_and_video(tmp_path: Path) -> None:
    f = episode_frame(_obs(0), ["hello"])
    assert f.shape[0] % 2 == 0 and f.shape[1] % 2 == 0
    assert f.shape == (192 + 32, 320 + 192 + 32, 3)  # camera over a 32-row range image, then a square BEV
    # the ego square is drawn red in the BEV panel
    bev_part = f[:, 320:]
    assert (bev_part[..., 0] > 200).any() and (bev_part[..., 1] < 100).any()
    out = write_episode_video([_obs(k) for k in range(6)], tmp_path / "ep.mp4", dt_s=0.1, speeds=np.arange(6.0), title="t")
    frames = iio.imread(out, plugin="pyav")
    assert frames.shape[0] == 6 and frames.shape[1:3] == f.shape[:2]
    assert not list(tmp_path.glob(".ep.mp4.*"))  # no temp file left
