"""``loopdrive bench closed-loop --multicam`` end to end on tiny data, and ``loopdrive run`` of the
scenario file it writes: the loop on a log's own multi-camera rig with neural sensors.

Data: the session's tiny bundle on the tiny log; the log is copied with a rig declaring its front
camera plus two nuScenes cameras at a small scale and a small LiDAR (the rig plumbing and the
renderer read only the declaration), and the tiny log itself is the mesh truth."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sim.sensors import LidarSpec, SensorRig
from tests.test_render_backends import build_tiny_bundle


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_log: Path) -> Path:
    return build_tiny_bundle(tmp_path_factory, tiny_log)


@pytest.fixture(scope="module")
def multicam_log(tiny_log: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SensorRig]:
    from sim.synth.rigs import nuscenes_rig

    out = shutil.copytree(tiny_log, tmp_path_factory.mktemp("mc") / "log3")
    meta = json.loads((out / "meta.json").read_text())
    extra = nuscenes_rig(0.05, cameras=("CAM_FRONT_LEFT", "CAM_BACK")).cameras
    rig = SensorRig((*SensorRig.from_meta(meta["rig"]).cameras, *extra), LidarSpec(beams=8, azimuth_steps=128))
    meta["rig"] = rig.to_meta()
    (out / "meta.json").write_text(json.dumps(meta))
    return out, rig


def test_multicam_bench_reports_speed_sensors_quality_and_gap(tiny_bundle, tiny_log, multicam_log, tmp_path):
    from sim.cli import app

    log3, rig = multicam_log
    dest = tmp_path / "res" / "closed_loop_multicam.json"
    r = CliRunner().invoke(app, ["bench", "closed-loop", "--multicam", "--bundle", str(tiny_bundle), "--log", str(log3), "--truth", str(tiny_log),
                                 "--out", str(dest), "--steps", "3", "--worlds", "2", "--heldout-frames", "1", "--horizon", "0.5"])
    assert r.exit_code == 0, r.output
    res = json.loads(dest.read_text())
    assert [c["name"] for c in res["rig"]["cameras"]] == [c.name for c in rig.cameras] and res["rig"]["lidar"] == "8x128"
    assert res["loop_log"].endswith("log-with-truth-map") and res["speed"]["steps"] == 2 and res["speed"]["steps_per_s"] > 0 and res["speed"]["renderer"]["mode"] == "surface"
    assert res["machine"]["git_head"] and "load_average" in res["machine"] and "torch_threads" in res["machine"]
    cfg = res["render"]["configs"]
    assert set(cfg) == {"serial", "previous_default", "parallel"} and all(v["ms_median"] > 0 for v in cfg.values())
    assert res["render"]["identical"] is True
    assert set(res["render"]["per_sensor_ms"]) == {*(c.name for c in rig.cameras), "lidar"}
    q = res["quality"]
    assert q["per_camera"]["front"]["frames"] == [0] and 5.0 < q["per_camera"]["front"]["psnr"] < 60.0
    assert q["per_camera"]["CAM_BACK"]["psnr"] is None  # no frames of that camera in the log
    gap = res["planner_gap"]
    assert {row["scenario"] for row in gap["scenarios"]} == {"logged_drive", "stopped_car_ahead"}
    agree = gap["lidar_neural_vs_mesh_logged_drive"]
    assert agree["worlds"] >= 1 and 0.0 < agree["rays_returned_by_both_of_either"] <= 1.0 and agree["median_abs_range_diff_m"] >= 0.0
    assert gap["shift_m"] == [0.0, 0.0, 0.0] and gap["mean_gap"] == pytest.approx(gap["mean_score_mesh"] - gap["mean_score_neural"])
    for row in gap["scenarios"]:
        assert row["steps_neural"] >= 2 and 0.0 <= row["score_neural"] <= 1.0 and 0.0 <= row["score_mesh"] <= 1.0
    # the scenario file it wrote runs as it is with `loopdrive run`
    scen = Path(res["scenario_file"])
    assert "rig: log" in scen.read_text() and "renderer: neural" in scen.read_text()
    run = CliRunner().invoke(app, ["run", str(scen), "--out", str(tmp_path / "run"), "--horizon", "0.3"])
    assert run.exit_code == 0, run.output
    import pandas as pd

    df = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert list(df["status"]) == ["ok"] and df["planner"].iloc[0] == "lidar_stack" and int(df["steps"].iloc[0]) >= 2


def test_shifted_renderer_moves_worlds_into_the_truth_frame():
    from sim.bench.closed_loop_multicam import ShiftedRenderer
    from sim.render.base import ArrayWorld, CameraImage, LidarScan, SensorFrame

    seen = []

    class Inner:
        def render(self, world, rig):
            seen.append(world)
            m = np.eye(4)
            m[:3, 3] = [world.x[0], world.y[0], world.z[0]]
            z = np.zeros((1, 3), np.float32)
            return SensorFrame(world.t_us, {"c": CameraImage(np.zeros((1, 1, 3), np.uint8), np.ones((1, 1), np.float32), m, np.eye(3))},
                               LidarScan(z, np.zeros(1, np.float32), m, np.zeros(1, np.int32), np.zeros(1, np.int32)))

        def close(self):
            pass

    one = np.ones(2)
    w = ArrayWorld(5, ("ego", "a"), ("car", "car"), np.array([1.0, 2.0]), np.array([3.0, 4.0]), np.zeros(2), np.zeros(2), one, one, one,
                   np.ones(2, bool))
    f = ShiftedRenderer(Inner(), [10.0, -20.0, 0.5]).render(w, None)
    assert list(seen[0].x) == [11.0, 12.0] and list(seen[0].y) == [-17.0, -16.0] and list(seen[0].z) == [0.5, 0.5]
    np.testing.assert_allclose(f.cameras["c"].c2w[:3, 3], [1.0, 3.0, 0.0])
    np.testing.assert_allclose(f.lidar.sensor_to_world[:3, 3], [1.0, 3.0, 0.0])
    assert list(w.x) == [1.0, 2.0]  # the caller's world is untouched
