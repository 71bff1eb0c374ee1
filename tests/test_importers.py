"""The nuScenes importer on a small nuScenes-format fixture written by the test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from sim.errors import LogFormatError, RegistryError
from sim.geometry import VEHICLE_FROM_OPENCV, project_points
from sim.importers import IMPORTERS, import_log
from sim.log import validate_log

ORIGIN = np.array([400.0, 1100.0, 0.0])  # nuScenes global coordinates are large


def _q(r: np.ndarray) -> list[float]:
    x, y, z, w = Rotation.from_matrix(r).as_quat()
    return [float(w), float(x), float(y), float(z)]


def write_mini_nuscenes(root: Path, n: int = 3) -> Path:
    v = root / "v1.0-mini"
    v.mkdir(parents=True)
    (root / "samples" / "CAM_FRONT").mkdir(parents=True)
    (root / "samples" / "LIDAR_TOP").mkdir(parents=True)
    K = [[40.0, 0.0, 32.0], [0.0, 40.0, 20.0], [0.0, 0.0, 1.0]]
    sensor = [{"token": "s_cam", "channel": "CAM_FRONT", "modality": "camera"},
              {"token": "s_lid", "channel": "LIDAR_TOP", "modality": "lidar"}]
    calib = [{"token": "c_cam", "sensor_token": "s_cam", "translation": [1.5, 0.0, 1.5], "rotation": _q(VEHICLE_FROM_OPENCV), "camera_intrinsic": K},
             {"token": "c_lid", "sensor_token": "s_lid", "translation": [0.9, 0.0, 1.8], "rotation": [1.0, 0.0, 0.0, 0.0], "camera_intrinsic": []}]
    samples, sds, egos, anns = [], [], [], []
    yaw = 0.3
    rot = Rotation.from_euler("z", yaw).as_matrix()
    for k in range(n):
        ts = 1_500_000_000_000_000 + k * 500_000
        pos = ORIGIN + rot @ np.array([2.0 * k, 0.0, 0.0])
        egos.append({"token": f"e{k}", "timestamp": ts, "rotation": _q(rot), "translation": pos.tolist()})
        samples.append({"token": f"t{k}", "timestamp": ts, "scene_token": "sc", "prev": f"t{k - 1}" if k else "", "next": f"t{k + 1}" if k < n - 1 else ""})
        img = f"samples/CAM_FRONT/{k}.jpg"
        Image.fromarray(np.full((40, 64, 3), 100 + k, np.uint8)).save(root / img, quality=95)
        lid = f"samples/LIDAR_TOP/{k}.pcd.bin"
        # one point 10 m ahead of the sensor, intensity 255, ring 0
        np.array([[10.0, 0.0, 0.0, 255.0, 0.0], [0.0, 5.0, -1.0, 0.0, 3.0]], np.float32).tofile(root / lid)
        for ch, cs, f in (("cam", "c_cam", img), ("lid", "c_lid", lid)):
            sds.append({"token": f"sd_{ch}{k}", "sample_token": f"t{k}", "ego_pose_token": f"e{k}", "calibrated_sensor_token": cs,
                        "timestamp": ts, "is_key_frame": True, "filename": f, "fileformat": f.split(".")[-1]})
        # a car 20 m ahead of the ego's camera on the ego's heading, box centre 0.75 m up
        centre = pos + rot @ np.array([1.5 + 20.0, 0.0, 0.0]) + np.array([0.0, 0.0, 1.5])
        anns.append({"token": f"a{k}", "sample_token": f"t{k}", "instance_token": "i0", "translation": centre.tolist(),
                     "size": [1.9, 4.5, 1.6], "rotation": _q(rot)})
    tables = {
        "scene": [{"token": "sc", "name": "scene-0001", "first_sample_token": "t0", "last_sample_token": f"t{n - 1}", "nbr_samples": n}],
        "sample": samples, "sample_data": sds, "ego_pose": egos, "calibrated_sensor": calib, "sensor": sensor,
        "sample_annotation": anns, "instance": [{"token": "i0", "category_token": "cat_car"}],
        "category": [{"token": "cat_car", "name": "vehicle.car"}],
    }
    for name, rows in tables.items():
        (v / f"{name}.json").write_text(json.dumps(rows))
    return root


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    return write_mini_nuscenes(tmp_path / "nuscenes")


def test_import_geometry(mini: Path, tmp_path: Path) -> None:
    out = import_log("nuscenes", mini, tmp_path / "log")
    dl = validate_log(out)
    assert dl.meta["source"] == "nuscenes" and len(dl.frames) == 3 and len(dl.sweeps) == 3
    # the first ego pose is the origin; the heading is kept
    np.testing.assert_allclose(dl.ego.pose[0], [0.0, 0.0, 0.0, 0.3], atol=1e-6)
    np.testing.assert_allclose(dl.ego.pose[2, :2], 4.0 * np.array([np.cos(0.3), np.sin(0.3)]), atol=1e-6)
    car = dl.tracks[0]
    assert car.cls == "car" and car.size == pytest.approx((4.5, 1.9, 1.6))
    assert car.pose[0, 2] == pytest.approx(1.5 - 0.8)  # box bottom, not centre
    # the car's centre projects to the image centre column, 20 m in front of the camera
    for i, fr in enumerate(dl.frames):
        c = car.pose[i, :3] + np.array([0.0, 0.0, 0.8])
        uv, z = project_points(c[None], fr.c2w, fr.K)
        assert z[0] == pytest.approx(20.0, abs=1e-4)
        assert uv[0, 0] == pytest.approx(32.0, abs=1e-3)
    # LiDAR: the point 10 m ahead of the sensor lands 10.9 m ahead of the ego, 1.8 m up, intensity 1
    pts = dl.lidar(1)
    ahead = dl.ego.pose[1, :2] + 10.9 * np.array([np.cos(0.3), np.sin(0.3)])
    np.testing.assert_allclose(pts[0, :2], ahead, atol=1e-3)
    assert pts[0, 2] == pytest.approx(1.8, abs=1e-4) and pts[0, 3] == pytest.approx(1.0)
    assert dl.map["lanes"][0]["source"] == "ego_path"


def test_bad_sources(mini: Path, tmp_path: Path) -> None:
    with pytest.raises(LogFormatError, match="scene named 'nope'"):
        import_log("nuscenes", mini, tmp_path / "a", scene="nope")
    (mini / "v1.0-mini" / "ego_pose.json").write_text("[]")
    with pytest.raises(LogFormatError, match="ego_pose record") as ei:
        import_log("nuscenes", mini, tmp_path / "b")
    assert ei.value.file is not None and ei.value.file.endswith("ego_pose.json")
    assert not (tmp_path / "b").exists()
    with pytest.raises(RegistryError, match=r"known: .*nuscenes"):
        import_log("kitti", mini, tmp_path / "c")
    assert "nuscenes" in IMPORTERS


def test_cli_import(mini: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("loopdrive")
    r = subprocess.run([str(exe), "import", "nuscenes", str(mini), "--out", str(tmp_path / "log")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "log" / "meta.json").is_file()
    r = subprocess.run([str(exe), "import", "nuscenes", str(mini), "--out", str(tmp_path / "log")], capture_output=True, text=True)
    assert r.returncode == 2 and "empty or new folder" in r.stderr and len(r.stderr.strip().splitlines()) == 1
