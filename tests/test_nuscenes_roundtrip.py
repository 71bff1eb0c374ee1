"""Round trip against exact truth: a nuScenes-rig synth log -> ``export_nuscenes`` -> ``import
nuscenes`` (every camera, every sweep) -> compared with the native log, and the devkit's own
projections against loopdrive's (:mod:`sim.bench.nuscenes_roundtrip`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.bench.nuscenes_roundtrip import roundtrip_errors
from sim.cli import app
from sim.importers import import_log
from sim.importers.nuscenes_export import DEFAULT_EPOCH_US
from sim.log import read_log
from tests._nuscenes import ns_export


@pytest.fixture(scope="module")
def errors(tmp_path_factory: pytest.TempPathFactory) -> dict:
    log_dir, root = ns_export(tmp_path_factory)
    imported = import_log("nuscenes", root, tmp_path_factory.mktemp("rt") / "imported", sweeps=True)
    return roundtrip_errors(read_log(log_dir), root, read_log(imported), epoch_us=DEFAULT_EPOCH_US)


def test_every_capture_comes_back(errors: dict) -> None:
    native = 6 * 13 + 21  # 12 Hz x 1.05 s per camera (first and last frame inclusive) and 21 sweeps
    assert errors["camera_frames"] + errors["lidar_sweeps"] == native
    assert errors["lidar_sweeps"] == 21 and errors["boxes"] == 36 and errors["projected_boxes"] >= 5 and errors["lidar_points"] > 50_000


def test_cameras_and_ego_are_exact(errors: dict) -> None:
    assert errors["camera_position_m"] < 1e-7 and errors["camera_rotation_deg"] < 1e-5
    assert errors["camera_K_px"] == 0.0 and errors["rig_camera_K_px"] < 1e-9 and errors["image_max_abs"] == 0.0  # PNG export: pixel-identical
    assert errors["rig_camera_mount_m"] < 1e-8 and errors["rig_camera_rotation_deg"] < 1e-5  # roll included
    assert errors["ego_position_m"] < 2e-6 and errors["ego_yaw_rad"] < 2e-6


def test_boxes_and_projections_agree_with_the_devkit_and_the_truth(errors: dict) -> None:
    assert errors["box_corner_m"] < 2e-6
    assert errors["devkit_vs_loopdrive_px"] < 1e-4 and errors["loopdrive_vs_truth_px"] < 1e-4


def test_lidar_points_rings_times_and_rig(errors: dict) -> None:
    assert errors["lidar_point_m"] < 1e-4 and errors["lidar_intensity"] < 1e-6 and errors["lidar_ring_mismatches"] == 0
    # firing times are estimated (nuScenes files have none): exact to a microsecond but for returns at the sweep's seam
    assert errors["lidar_firing_time_us_p99"] <= 2.0 and errors["lidar_firing_time_over_1ms_share"] < 0.005
    assert errors["lidar_elevation_deg"] < 1e-3 and errors["lidar_vertical_fov_deg"] < 1e-3 and errors["lidar_cut_azimuth_deg"] < 0.1
    assert errors["lidar_beams"][0] == errors["lidar_beams"][1] and errors["lidar_azimuth_steps"][0] == errors["lidar_azimuth_steps"][1]
    assert errors["lidar_firing"] == ["spin_cw", "spin_cw"]


def test_bench_cli_writes_its_json_where_told(tmp_path: Path) -> None:
    out = tmp_path / "rt.json"
    res = CliRunner().invoke(app, ["bench", "nuscenes-roundtrip", "--frames", "12", "--image-scale", "0.03", "--azimuth", "128",
                                   "--key-frames-only", "--out", str(out), "--work", str(tmp_path / "work")])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "nuscenes_roundtrip" and doc["devkit"] and doc["machine"]["cpu_count"]
    assert doc["command"].startswith("loopdrive bench nuscenes-roundtrip") and "--key-frames-only" in doc["command"]
    n, e = doc["counts"], doc["max_errors"]
    assert n["camera_frames"] == 6 * 2 and n["lidar_sweeps"] == 2 and e["box_corner_m"] < 2e-6 and e["devkit_vs_loopdrive_px"] < 1e-4
    assert doc["rig_imported_vs_native"]["lidar_beams"] == [32, 32]
