"""A minimal hand-made drive log for format tests (independent of the synthetic town)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sim.geometry import vehicle_pose_se3
from sim.log import LogWriter, Track
from sim.sensors import CameraSpec, LidarSpec, SensorRig

RIG = SensorRig((CameraSpec(width=32, height=20),), LidarSpec(beams=4, azimuth_steps=16))

MAP = {
    "lanes": [
        {"id": "a", "centerline": [[0.0, 0.0], [50.0, 0.0]], "width": 3.5, "speed_limit": 13.9,
         "successors": ["b"], "predecessors": [], "left": None, "right": None},
        {"id": "b", "centerline": [[50.0, 0.0], [100.0, 0.0]], "width": 3.5, "speed_limit": 13.9,
         "successors": [], "predecessors": ["a"], "left": None, "right": None},
    ],
    "crosswalks": [{"polygon": [[60.0, -4.0], [63.0, -4.0], [63.0, 4.0], [60.0, 4.0]]}],
}


def write_toy_log(out: Path, n: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.int64) * 100_000
    ego_pose = np.stack([t / 1e5 * 1.0, np.zeros(n), np.zeros(n), np.zeros(n)], axis=1)
    ego = Track("ego", "car", (4.6, 1.9, 1.6), t, ego_pose)
    car = Track("7", "car", (4.5, 1.8, 1.5), t, ego_pose + np.array([10.0, 0.0, 0.0, 0.0]))
    meta = {"name": "toy", "source": "test", "rates": {"camera_hz": 10.0, "lidar_hz": 10.0}, "rig": RIG.to_meta(),
            "ego": {"size": [4.6, 1.9, 1.6]}}
    cam = RIG.cameras[0]
    with LogWriter(out, meta) as w:
        for i in range(n):
            veh = vehicle_pose_se3(*ego_pose[i, [0, 1]], ego_pose[i, 3])
            rgb = rng.integers(0, 255, (cam.height, cam.width, 3), dtype=np.uint8)
            depth = rng.uniform(1.0, 60.0, (cam.height, cam.width))
            depth[0, 0] = 80.0  # beyond the 16-bit millimetre range: stored as 0 (no return)
            w.add_frame(cam.name, int(t[i]), veh @ cam.vehicle_from_camera, cam.K, rgb, depth)
            pts = np.concatenate([rng.normal(size=(50, 3)) * 5, rng.uniform(0, 1, (50, 1))], axis=1)
            w.add_sweep(int(t[i]), veh @ RIG.lidar.vehicle_from_lidar, pts)
        w.set_tracks(ego, [car])
        w.set_map(MAP)
    return out
