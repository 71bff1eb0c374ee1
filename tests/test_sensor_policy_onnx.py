"""``sensor_policy`` on the car: ONNX export agrees with torch, the int8 form loads and plans, and
a broken ONNX file is refused with its name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.sensor_policy import (
    SensorPolicyConfig,
    SensorPolicyPlanner,
    build_network,
    onnx_paths,
    save_sensor_policy,
)
from agents.sensor_policy_onnx import calibration_data, export_onnx, open_session, quantize_int8
from sim.errors import BundleError
from sim.planning import PlannerInit, Trajectory


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    cfg = SensorPolicyConfig(width=4, hidden=16)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("sp") / "policy.safetensors"
    save_sensor_policy(build_network(cfg), cfg, out)
    return out


def _outputs(pl: SensorPolicyPlanner, r: np.ndarray, f: np.ndarray) -> np.ndarray:
    from agents.sensor_policy_onnx import _net

    return _net(pl, r, f)


def _planner(weights: Path, runtime: str) -> SensorPolicyPlanner:
    pl = SensorPolicyPlanner(weights=str(weights), runtime=runtime)
    pl.reset(PlannerInit(lane_map=None, route=(), dt_s=0.1, horizon_s=5.0))
    return pl


def test_onnx_outputs_agree_with_torch(policy: Path) -> None:
    fp32 = export_onnx(policy)
    assert fp32 == onnx_paths(policy)[0] and fp32.is_file()
    cfg = SensorPolicyConfig(width=4, hidden=16)
    r, f = calibration_data(cfg, None, n=16, seed=3)
    torch_out = _outputs(_planner(policy, "torch"), r, f)
    onnx_out = _outputs(_planner(policy, "onnx"), r, f)  # a batch of 16: the batch axis is dynamic
    assert onnx_out.shape == torch_out.shape == (16, 2 * cfg.k)
    np.testing.assert_allclose(onnx_out, torch_out, rtol=1e-4, atol=1e-5)


def test_int8_loads_and_plans_close_to_fp32(policy: Path) -> None:
    int8 = quantize_int8(policy)
    assert int8 == onnx_paths(policy)[1]
    assert int8.stat().st_size < onnx_paths(policy)[0].stat().st_size
    pl = _planner(policy, "onnx_int8")
    rng = np.random.default_rng(0)
    lidar = np.zeros((32, 1024, 2), np.float32)
    lidar[20:, :, 0] = rng.uniform(5.0, 30.0, (12, 1024))
    lidar[..., 1] = 0.3
    out = pl.plan({"lidar": lidar, "ego": np.array([0.0, 0.0, 0.0, 6.0, 0.0, 0.0])})
    assert isinstance(out, Trajectory) and out.is_finite() and len(out.t_s) == 6
    ref = _planner(policy, "onnx").plan({"lidar": lidar, "ego": np.array([0.0, 0.0, 0.0, 6.0, 0.0, 0.0])})
    # int8 rounding moves the waypoints by centimetres to decimetres, not metres
    assert float(np.abs(out.xy - ref.xy).max()) < 1.0


def test_a_broken_onnx_file_is_refused_with_its_name(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    with pytest.raises(BundleError, match=r"broken\.onnx.*ONNX model"):
        open_session(bad)
    with pytest.raises(BundleError, match=r"missing\.onnx.*does not exist"):
        open_session(tmp_path / "missing.onnx")
    with pytest.raises(BundleError, match=r"is a directory|not a regular file|expected"):
        open_session(tmp_path)


def test_an_onnx_form_of_other_weights_is_flagged(policy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The ONNX forms carry the SHA-256 of the weights they were made from: a planner given
    retrained weights beside stale ONNX files says so."""
    import logging
    import shutil

    import torch

    export_onnx(policy)
    other = tmp_path / "other.safetensors"
    torch.manual_seed(5)
    save_sensor_policy(build_network(SensorPolicyConfig(width=4, hidden=16)), SensorPolicyConfig(width=4, hidden=16), other)
    shutil.copyfile(onnx_paths(policy)[0], onnx_paths(other)[0])
    with caplog.at_level(logging.WARNING, logger="agents.sensor_policy"):
        _planner(policy, "onnx")
        assert not caplog.records
        _planner(other, "onnx")
    assert any("exported from other weights" in r.getMessage() for r in caplog.records)


def test_bench_latency_times_every_stage_of_the_three_forms_on_the_same_sweeps(policy: Path) -> None:
    from agents.sensor_policy_onnx import STAGES, bench_latency, plan_differences

    export_onnx(policy)
    quantize_int8(policy)
    rng = np.random.default_rng(1)
    sweeps = np.zeros((2, 32, 1024, 2), np.float32)
    sweeps[:, 16:, :, 0] = rng.uniform(3.0, 40.0, (2, 16, 1024))
    egos = np.array([[0.0, 0.0, 0.0, 6.0, 0.0, 0.0], [1.0, 0.0, 0.1, 7.0, 0.2, 0.0]])
    res = bench_latency(policy, sweeps, egos, rounds=1, per_round=3, tracker=lambda traj, obs: None)
    assert res["plans_per_form"] == 3 and res["sweeps"] == 2
    for form in ("torch", "onnx", "onnx_int8"):
        for key in ("plan", *STAGES, "plan_numpy_raster", "tracking", "network_alone"):
            assert 0 < res[form][key]["median"] <= res[form][key]["p95"] + 1e-9
    assert res["onnx"]["waypoint_diff_vs_torch_m"]["max"] < 1e-3 and res["onnx_int8"]["waypoint_diff_vs_torch_m"]["max"] < 1.0
    assert res["plan_speedup_int8_vs_torch_median"] > 0 and "load_avg_1m_before" in res["machine"]
    shard = policy.parent / "shard.npz"
    np.savez(shard, raster=(rng.random((5, 64, 64, 5)) < 0.05).astype(np.uint8) * 255, ego=rng.random((5, 3)).astype(np.float32),
             waypoints=rng.random((5, 6, 2)).astype(np.float32))  # fmt: skip
    diff = plan_differences(policy, [shard])
    assert diff["rasters"] == 5 and diff["onnx_vs_torch"]["max"] < 1e-3 and diff["onnx_int8_vs_onnx"]["max"] < 1.0
