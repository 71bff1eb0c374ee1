"""``loopdrive export-onnx``: the planner's exporter reached through the registry writes a folder
the onnx runtimes plan from, and bad input is one typed line on stderr with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from agents.sensor_policy import SensorPolicyConfig, SensorPolicyPlanner, build_network, save_sensor_policy
from sim.cli import app
from sim.planning import PlannerInit


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    cfg = SensorPolicyConfig(width=4, hidden=16)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_sensor_policy(build_network(cfg), cfg, out)
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    np.savez(d / "a.npz", raster=(rng.random((12, 64, 64, 5)) < 0.05).astype(np.uint8) * 255, ego=rng.random((12, 3)).astype(np.float32),
             waypoints=rng.random((12, 6, 2)).astype(np.float32))  # fmt: skip
    return d


def _invoke(*args: str) -> object:
    return CliRunner().invoke(app, ["export-onnx", *args])


def test_export_writes_a_folder_the_onnx_runtimes_plan_from(tiny: Path, shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "car"
    res = _invoke("--planner", "sensor_policy", "--weights", str(tiny), "--out", str(out), "--calibration", str(shards), "--samples", "10")
    assert res.exit_code == 0, res.stderr + res.stdout
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "tiny.int8.onnx", "tiny.json", "tiny.onnx", "tiny.safetensors"]
    man = json.loads((out / "export.json").read_text())
    assert man["int8_recipe"]["samples"] == 10 and man["int8_recipe"]["calibration"] == [str(shards)]
    assert man["files"]["weights"]["sha256"] == __import__("sim.fsutil", fromlist=["x"]).sha256_file(tiny)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    lidar = np.zeros((32, 1024, 2), np.float32)
    lidar[20:, :, 0] = 12.0
    plans = {}
    for rt in ("torch", "onnx", "onnx_int8"):
        pl = SensorPolicyPlanner(weights=str(out / "tiny.safetensors"), runtime=rt)
        pl.reset(PlannerInit(lane_map=None, route=(), dt_s=0.1, horizon_s=5.0))
        plans[rt] = pl.plan({"lidar": lidar, "ego": np.array([0.0, 0.0, 0.0, 6.0, 0.0, 0.0])}).xy
    np.testing.assert_allclose(plans["onnx"], plans["torch"], atol=1e-4)
    assert np.abs(plans["onnx_int8"] - plans["onnx"]).max() < 1.0
    # a second export needs --overwrite, then replaces the folder whole (here without the int8 form)
    res = _invoke("--planner", "sensor_policy", "--weights", str(tiny), "--out", str(out), "--no-int8")
    assert res.exit_code == 2 and "--overwrite" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = _invoke("--planner", "sensor_policy", "--weights", str(tiny), "--out", str(out), "--no-int8", "--overwrite")
    assert res.exit_code == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "tiny.json", "tiny.onnx", "tiny.safetensors"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--planner", "idm"], r"idm has no ONNX export \(planners with one: .*sensor_policy"),
        (["--planner", "no_such_planner"], r"no_such_planner"),
        (["--planner", "sensor_policy", "--keep-float", "all"], r"--keep-float: expected head or output"),
        (["--planner", "sensor_policy", "--no-int8", "--calibration", "x"], r"--calibration: only the int8 form"),
    ],
)
def test_bad_options_are_one_line_and_write_nothing(tiny: Path, tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "car"
    res = _invoke("--weights", str(tiny), "--out", str(out), *args)
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1 and __import__("re").search(message, res.stderr), res.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


def test_bad_weights_and_shards_are_refused_naming_the_file(tiny: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    bad.with_suffix(".json").write_text(tiny.with_suffix(".json").read_text())
    res = _invoke("--planner", "sensor_policy", "--weights", str(bad), "--out", str(tmp_path / "o1"))
    assert res.exit_code == 2 and "bad.safetensors" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = _invoke("--planner", "sensor_policy", "--weights", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "o2"))
    assert res.exit_code == 2 and "missing" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"garbage")
    res = _invoke("--planner", "sensor_policy", "--weights", str(tiny), "--out", str(tmp_path / "o3"), "--calibration", str(broken))
    assert res.exit_code == 2 and "broken.npz" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not any((tmp_path / n).exists() for n in ("o1", "o2", "o3"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
