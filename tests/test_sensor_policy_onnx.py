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


def test_int8_form_reads_the_uint8_raster_exactly_as_the_float_input_form(policy: Path, tmp_path: Path) -> None:
    """The int8 model's raster input is the uint8 raster itself (raster_u8, NHWC): its
    quantisation (scale 1/255, zero point 0) is exact, so it gives the same numbers as the same
    int8 model fed the float raster / 255, and the planner feeds it the raster its pass built."""
    import onnx

    from agents.sensor_policy_onnx import RASTER_SCALE, open_session

    export_onnx(policy)
    u8 = quantize_int8(policy, out=tmp_path / "u8.onnx", samples=32)
    f32in = quantize_int8(policy, out=tmp_path / "f32in.onnx", samples=32, u8_input=False)
    s_u8, s_f = open_session(u8), open_session(f32in)
    assert [i.name for i in s_u8.get_inputs()] == ["raster_u8", "feat"] and s_u8.get_inputs()[0].type == "tensor(uint8)"
    assert [i.name for i in s_f.get_inputs()] == ["raster", "feat"]
    g = onnx.load(str(f32in)).graph
    q = next(n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] == "raster")
    scale = next(onnx.numpy_helper.to_array(i) for i in g.initializer if i.name == q.input[1])
    assert float(scale) == float(RASTER_SCALE)  # the override, whatever the calibration rasters hold
    rng = np.random.default_rng(4)
    raster = (rng.random((8, 64, 64, 5)) < 0.1).astype(np.uint8) * rng.integers(1, 256, (8, 64, 64, 5)).astype(np.uint8)
    feat = rng.random((8, 3)).astype(np.float32)
    x = np.ascontiguousarray((raster.astype(np.float32) / 255.0).transpose(0, 3, 1, 2))
    a = s_u8.run(None, {"raster_u8": raster, "feat": feat})[0]
    b = s_f.run(None, {"raster": x, "feat": feat})[0]
    np.testing.assert_array_equal(a, b)
    # the planner: plan() on a sweep (raster pass -> uint8 input) == plan_raster() on its raster
    pl = _planner(policy, "onnx_int8")
    assert pl._input_name == "raster_u8" and pl._x is None
    lidar = np.zeros((32, 1024, 2), np.float32)
    lidar[20:, :, 0] = rng.uniform(5.0, 30.0, (12, 1024))
    obs = {"lidar": lidar, "ego": np.array([0.0, 0.0, 0.0, 6.0, 0.0, 0.0])}
    t1 = pl.plan(obs)
    assert pl.last_raster is not None
    np.testing.assert_array_equal(t1.xy, pl.plan_raster(pl.last_raster.copy(), obs["ego"]).xy)


def test_uint8_input_refuses_an_inexact_raster_quantisation(policy: Path, tmp_path: Path) -> None:
    """The graph surgery checks the input quantisation it relies on instead of assuming it."""
    import onnx

    from agents.sensor_policy_onnx import uint8_raster_input

    export_onnx(policy)
    f32in = quantize_int8(policy, out=tmp_path / "f32in.onnx", samples=16, u8_input=False)
    m = onnx.load(str(f32in))
    q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "raster")
    init = next(i for i in m.graph.initializer if i.name == q.input[1])
    init.CopyFrom(onnx.numpy_helper.from_array(np.array(0.01, np.float32), init.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(m, str(bad))
    with pytest.raises(ValueError, match="scale 1/255"):
        uint8_raster_input(bad)


def test_calibration_rasters_come_from_the_shards_channels_first_in_k_over_255(tmp_path: Path) -> None:
    """Calibration data handling: rasters drawn (seeded, without replacement, capped at the
    shard's size) from roll-out shards, as the network sees them; synthetic ones without shards."""
    cfg = SensorPolicyConfig(width=4, hidden=16)
    rng = np.random.default_rng(2)
    raster = rng.integers(0, 256, (7, 64, 64, 5)).astype(np.uint8)
    shard = tmp_path / "s.npz"
    np.savez(shard, raster=raster, ego=rng.random((7, 3)).astype(np.float32), waypoints=rng.random((7, 6, 2)).astype(np.float32))
    r, f = calibration_data(cfg, [shard], n=5, seed=1)
    assert r.shape == (5, 5, 64, 64) and r.dtype == np.float32 and f.shape == (5, 3) and r.flags.c_contiguous
    np.testing.assert_array_equal(np.round(r * 255.0), np.round(r * 255.0).astype(np.uint8))  # exactly k / 255
    rows = {int(np.argmin([np.abs(raster[j].transpose(2, 0, 1) / 255.0 - r[i]).max() for j in range(7)])) for i in range(5)}
    assert len(rows) == 5  # 5 distinct shard rasters, none repeated
    r2, _ = calibration_data(cfg, [shard], n=50, seed=1)
    assert len(r2) == 7  # capped at the shard's size
    np.testing.assert_array_equal(calibration_data(cfg, [shard], n=5, seed=1)[0], r)
    rs, fs = calibration_data(cfg, None, n=4)
    assert rs.shape == (4, 5, 64, 64) and set(np.unique(rs)) <= {0.0, 1.0} and fs.shape == (4, 3)


def test_the_trunk_pool_is_an_identity_on_a_64_pixel_raster_and_not_exported(policy: Path) -> None:
    """A 64-pixel raster reaches the pool at 4 x 4 already: no pool op in torch nor in ONNX (the
    same state dict); another raster size keeps the adaptive pool."""
    import onnx
    import torch
    from torch import nn

    net = build_network(SensorPolicyConfig(width=4, hidden=16))
    assert isinstance(net.conv[8], nn.Identity)
    assert not any(n.op_type in ("AveragePool", "GlobalAveragePool") for n in onnx.load(str(export_onnx(policy))).graph.node)
    other = build_network(SensorPolicyConfig(width=4, hidden=16, raster_size=96))
    assert isinstance(other.conv[8], nn.AdaptiveAvgPool2d)
    assert list(net.state_dict()) == list(other.state_dict())
    with torch.inference_mode():
        out = other(torch.rand(2, 5, 96, 96), torch.rand(2, 3))
    assert out.shape == (2, 12)
