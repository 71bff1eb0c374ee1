"""``sensor_policy`` for the car: ONNX export, int8 quantisation and onnxruntime on the CPU.

* :func:`export_onnx` writes the torch network as ONNX (inputs ``raster`` (B, C, H, W) float32 in
  [0, 1] and ``feat`` (B, 3) scaled ego features; output ``waypoints`` (B, 2K) scaled);
* :func:`quantize_int8` writes its int8 form: static quantisation (QDQ, per-channel int8 weights,
  uint8 activations calibrated on rasters of the training shards when given, else on synthetic
  ones) through ``onnxruntime.quantization``, the MLP head left in float; its raster input is
  the uint8 raster itself (``raster_u8`` (B, H, W, C), :func:`uint8_raster_input`: the raster is
  8-bit by construction, so its quantisation is exact and the float input is never built);
* :func:`open_session` opens one in onnxruntime (CPU provider, one intra-op thread by default);
  an ONNX file is a graph of operators, loading it runs no user code;
* :func:`bench_latency` times a plan of each form (network alone and the whole plan with the
  raster) on the same inputs.

``python -m agents.sensor_policy_onnx export WEIGHTS [--shards DIR]`` writes ``<weights>.onnx``
and ``<weights>.int8.onnx`` beside the weights; ``... bench WEIGHTS --out JSON`` measures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agents.sensor_policy import onnx_paths
from sim.errors import BundleError
from sim.fsutil import (
    atomic_path,
    atomic_write_text,
    check_input_file,
    make_temp_dir,
    replace_dir,
    sha256_file,
)

__all__ = ["bench_latency", "export_forms", "export_onnx", "onnx_paths", "open_session", "plan_differences", "quantize_int8"]

log = logging.getLogger(__name__)
OPSET = 17
MAX_ONNX_BYTES = 256 << 20
#: rasters the int8 activations are calibrated on
CALIBRATION_SAMPLES = 2000


def _dummy_inputs(cfg: Any, batch: int = 1) -> tuple[Any, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    return (torch.rand(batch, cfg.channels, cfg.raster_size, cfg.raster_size, generator=g),
            torch.rand(batch, 3, generator=g))  # fmt: skip


def export_onnx(weights: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Export the policy ``weights`` (safetensors + .json) to ONNX at ``out`` (default beside the
    weights), atomically; batch size is dynamic."""
    import torch

    from agents.sensor_policy import load_sensor_policy

    net, cfg = load_sensor_policy(weights)
    dst = Path(out) if out is not None else onnx_paths(weights)[0]
    with atomic_path(dst, suffix=".onnx") as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter, chosen on purpose
        torch.onnx.export(
            net, _dummy_inputs(cfg), str(tmp), input_names=["raster", "feat"], output_names=["waypoints"],
            dynamic_axes={"raster": {0: "batch"}, "feat": {0: "batch"}, "waypoints": {0: "batch"}}, opset_version=OPSET,
            dynamo=False,
        )  # fmt: skip
        _stamp(Path(tmp), {"loopdrive.weights_sha256": sha256_file(weights), "loopdrive.form": "fp32"})
    return dst


class _Calibration:
    """onnxruntime's calibration reader over (raster, feat) float32 batches of one sample."""

    def __init__(self, rasters: NDArray[np.float32], feats: NDArray[np.float32]) -> None:
        self.items = iter([{"raster": rasters[i : i + 1], "feat": feats[i : i + 1]} for i in range(len(rasters))])

    def get_next(self) -> dict[str, NDArray[np.float32]] | None:
        return next(self.items, None)


def calibration_data(cfg: Any, shards: list[str | os.PathLike[str]] | None, n: int = 200, seed: int = 0) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """``n`` network inputs to calibrate the int8 activations: samples of ``shards`` (sensor
    shards, picked at random with ``seed``) or, without shards, sparse random rasters."""
    rng = np.random.default_rng(seed)
    if shards:
        from agents.sensor_policy import SensorDataset

        ds = SensorDataset.load(shards)
        idx = np.sort(rng.choice(len(ds), size=min(n, len(ds)), replace=False))
        r = (ds.bev_u8[idx].astype(np.float32) / 255.0).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(r), ds.feat[idx].astype(np.float32)
    r = (rng.random((n, cfg.channels, cfg.raster_size, cfg.raster_size)) < 0.05).astype(np.float32)
    return r, rng.uniform(0.0, 1.5, (n, 3)).astype(np.float32)


#: the exact quantisation of the raster input: the raster is uint8 / 255 by construction
RASTER_SCALE = np.float32(1.0 / 255.0)


def _output_nodes(path: str | os.PathLike[str]) -> list[str]:
    """Names of the nodes that make the output from the last hidden layer: the output layer and
    the constant-speed prior's Mul / Add. Kept in float: an 8-bit output would round every
    waypoint to 1/255 of the output range (decimetres at 40 m)."""
    import onnx

    g = onnx.load(str(path)).graph
    producer = {o: n for n in g.node for o in n.output}
    keep: list[str] = []
    todo = [o.name for o in g.output]
    while todo:
        n = producer.get(todo.pop())
        if n is None or n.name in keep or n.op_type in ("Relu", "Constant"):
            continue
        keep.append(n.name)
        if n.op_type in ("Add", "Mul", "Slice"):
            todo.extend(n.input)
    return keep


def _float_nodes(path: str | os.PathLike[str], keep_float: str) -> list[str]:
    """Nodes left in float: the output nodes (:func:`_output_nodes`) and, with ``keep_float ==
    "head"``, the whole MLP head (every Gemm / MatMul and the Concat of the conv features with the
    ego features). One uint8 scale for that Concat would serve the conv features (0 to ~5) and the
    scaled speed alike, rounding the speed to ~0.2 m/s; the head is 0.13 M of the 0.21 M weights
    but only ~3 % of the multiply-adds, so keeping it in float costs no time (mean waypoint error
    vs fp32 on the training rasters 0.084 -> 0.028 m)."""
    import onnx

    keep = _output_nodes(path)
    if keep_float == "head":
        keep += [n.name for n in onnx.load(str(path)).graph.node if n.op_type in ("Gemm", "MatMul", "Concat") and n.name not in keep]
    elif keep_float != "output":
        raise ValueError(f"expected keep_float 'head' or 'output', got {keep_float!r}")
    return keep


def _stamp(path: Path, meta: dict[str, str]) -> None:
    """Add ``meta`` to the ONNX file's ``metadata_props`` (in place: ``path`` is a temporary)."""
    import onnx

    m = onnx.load(str(path))
    old = {p.key: p.value for p in m.metadata_props}
    old.update(meta)
    del m.metadata_props[:]
    for k, v in sorted(old.items()):
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))


def quantize_int8(weights: str | os.PathLike[str], shards: list[str | os.PathLike[str]] | None = None,
                  fp32: str | os.PathLike[str] | None = None, out: str | os.PathLike[str] | None = None, *,
                  samples: int = CALIBRATION_SAMPLES, keep_float: str = "head", seed: int = 0, u8_input: bool = True) -> Path:  # fmt: skip
    """Write the int8 ONNX form of ``weights`` (from its fp32 ONNX ``fp32``, default beside the
    weights, exported first when missing) at ``out`` (default beside the weights): static QDQ
    quantisation of the conv trunk, per-channel int8 weights, uint8 activations calibrated
    (min / max) on ``samples`` rasters of ``shards`` (expert and DAgger roll-outs: the states
    the policy itself reaches; the raster input exactly, scale 1/255); ``keep_float``
    (:func:`_float_nodes`) the layers left in float; ``u8_input``: the model reads the uint8
    raster (:func:`uint8_raster_input`). The recipe and the weights' SHA-256 go into the file's
    metadata."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from agents.sensor_policy import read_config

    cfg, _ = read_config(weights)
    src = Path(fp32) if fp32 is not None else onnx_paths(weights)[0]
    if not src.is_file():
        export_onnx(weights, src)
    dst = Path(out) if out is not None else onnx_paths(weights)[1]
    r, f = calibration_data(cfg, shards, n=samples if shards else min(samples, 200), seed=seed)
    with atomic_path(dst, suffix=".onnx") as tmp, tempfile.TemporaryDirectory(prefix="sp-quant-") as work:
        pre = Path(work) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(tmp), _Calibration(r, f), quant_format=QuantFormat.QDQ, per_channel=True,
            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=_float_nodes(pre, keep_float),
            extra_options={"TensorQuantOverrides": {"raster": [{"scale": np.array(RASTER_SCALE, np.float32), "zero_point": np.array(0, np.uint8)}]}},
        )  # fmt: skip
        if u8_input:
            uint8_raster_input(Path(tmp))
        _stamp(Path(tmp), {"loopdrive.weights_sha256": sha256_file(weights), "loopdrive.form": "int8",
                           "loopdrive.int8_recipe": json.dumps({"calibration": "shards" if shards else "synthetic", "samples": len(r),
                                                                "method": "minmax", "per_channel": True, "keep_float": keep_float, "seed": seed,
                                                                "input": "raster_u8" if u8_input else "raster"})})  # fmt: skip
    return dst


def uint8_raster_input(path: str | os.PathLike[str]) -> None:
    """Make the int8 model at ``path`` (in place: a temporary) read the uint8 raster as the
    raster pass writes it, input ``raster_u8`` (B, H, W, C), instead of the float (B, C, H, W)
    raster / 255: its QuantizeLinear (scale 1/255, zero point 0, so ``round(x * 255)`` gives back
    the uint8 value exactly) becomes a Transpose of the uint8 input, which onnxruntime's NHWC
    int8 kernels then cancel. The same numbers, without building the float input.
    :class:`ValueError` when the input is not quantised exactly so."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    qs = [n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] == "raster"]
    users = [n for n in g.node if "raster" in n.input]
    if len(qs) != 1 or len(users) != 1:
        raise ValueError(f"expected the raster input to feed one QuantizeLinear, got {[n.op_type for n in users]}")
    q = qs[0]
    init = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    scale, zp = init.get(q.input[1]), init.get(q.input[2]) if len(q.input) > 2 else np.uint8(0)
    if scale is None or zp is None or float(scale) != float(RASTER_SCALE) or int(zp) != 0 or zp.dtype != np.uint8:
        raise ValueError(f"expected the raster quantised with scale 1/255 and uint8 zero point 0, got {scale} / {zp}")
    old = next(i for i in g.input if i.name == "raster")
    c, h, w = (d.dim_value for d in old.type.tensor_type.shape.dim[1:])
    at = list(g.node).index(q)
    g.node.remove(q)
    g.node.insert(at, helper.make_node("Transpose", ["raster_u8"], [q.output[0]], name="raster_u8_nhwc_to_nchw", perm=[0, 3, 1, 2]))
    g.input.remove(old)
    g.input.insert(0, helper.make_tensor_value_info("raster_u8", TensorProto.UINT8, ["batch", h, w, c]))
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def export_forms(weights: str | os.PathLike[str], out: str | os.PathLike[str], *, int8: bool = True,
                 calibration: list[str | os.PathLike[str]] | None = None, samples: int = CALIBRATION_SAMPLES,
                 keep_float: str = "head") -> dict[str, Path]:  # fmt: skip
    """The car's folder ``out`` for ``weights``: a copy of the weights and their JSON, the fp32
    ONNX form and (``int8``) the int8 form calibrated on ``calibration`` shards (synthetic rasters
    without), named so that ``runtime=onnx|onnx_int8`` with ``weights=out/<name>.safetensors``
    finds them, and ``export.json`` (SHA-256 of each file, the int8 recipe). Written in a
    temporary folder beside ``out`` and renamed into place: ``out`` is the old folder or the
    complete new one, never a mix. :class:`BundleError` for unusable weights (nothing written),
    :class:`sim.errors.ScenarioError` for unusable shards."""
    import shutil

    from agents.sensor_policy import load_sensor_policy, read_config

    w = Path(weights)
    load_sensor_policy(w)  # every tensor checked against its config before anything is written
    read_config(w)
    if calibration:
        from agents.sensor_policy import SensorDataset

        SensorDataset.load(calibration)  # shards checked before the export starts
    dst = Path(out)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(dst.parent, prefix=f".{dst.name}.tmp-")
    try:
        files = {"weights": tmp / w.name, "config": tmp / w.with_suffix(".json").name}
        shutil.copyfile(w, files["weights"])
        shutil.copyfile(w.with_suffix(".json"), files["config"])
        fp32, i8 = onnx_paths(files["weights"])
        files["onnx"] = export_onnx(files["weights"], fp32)
        if int8:
            files["onnx_int8"] = quantize_int8(files["weights"], calibration, fp32=fp32, out=i8, samples=samples, keep_float=keep_float)
        manifest = {"weights_source": str(w), "files": {k: {"name": p.name, "sha256": sha256_file(p), "bytes": p.stat().st_size} for k, p in files.items()},
                    "int8_recipe": ({"calibration": [str(c) for c in calibration] if calibration else "synthetic", "samples": samples,
                                     "keep_float": keep_float, "method": "minmax", "per_channel": True, "input": "raster_u8"} if int8 else None)}  # fmt: skip
        atomic_write_text(tmp / "export.json", json.dumps(manifest, indent=1) + "\n")
        replace_dir(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {k: dst / p.name for k, p in files.items()} | {"manifest": dst / "export.json"}


def open_session(path: str | os.PathLike[str], threads: int = 1) -> Any:
    """An onnxruntime CPU session of the ONNX file ``path`` (``threads`` intra-op threads);
    :class:`BundleError` naming the file when it is missing, not a regular file, too large or not
    a loadable ONNX model with inputs ``raster`` and ``feat``."""
    import onnxruntime as ort

    p = Path(path)
    check_input_file(p, error=BundleError, max_bytes=MAX_ONNX_BYTES, what="a sensor_policy ONNX model (python -m agents.sensor_policy_onnx export)", field="onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # the layout (NCHWc / NHWC int8) kernels
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(p), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / ... types
        raise BundleError(f"expected an ONNX model onnxruntime can load ({str(exc).splitlines()[0][:200]})", file=p, field="onnx") from None
    names = sorted(i.name for i in sess.get_inputs())
    if names not in (["feat", "raster"], ["feat", "raster_u8"]):
        raise BundleError(f"expected ONNX inputs raster (or raster_u8) and feat, got {names}", file=p, field="onnx.inputs")
    return sess


def _net(pl: Any, x: NDArray[np.float32], f: NDArray[np.float32]) -> NDArray[np.float32]:
    """The raw (scaled) network output of planner ``pl``'s runtime for a batch ``x`` (B, C, H, W)
    of float rasters in [0, 1] (k / 255) and ``f`` (B, 3) scaled ego features."""
    if pl.session is not None:
        if "raster_u8" in {i.name for i in pl.session.get_inputs()}:
            u8 = np.ascontiguousarray(np.round(np.asarray(x) * 255.0).astype(np.uint8).transpose(0, 2, 3, 1))
            return np.asarray(pl.session.run(None, {"raster_u8": u8, "feat": f})[0])
        return np.asarray(pl.session.run(None, {"raster": x, "feat": f})[0])
    import torch

    with torch.inference_mode():
        return pl.net(torch.from_numpy(x), torch.from_numpy(f)).numpy()


def _native(pl: Any, x: NDArray[Any], f: NDArray[np.float32]) -> NDArray[np.float32]:
    """The raw network output of planner ``pl``'s runtime for its own input form ``x``
    (:meth:`agents.sensor_policy.SensorPolicyPlanner.input_of`): what the network alone costs."""
    if pl.session is not None:
        return pl.session.run(None, {pl._input_name: x, "feat": f})[0]  # type: ignore[no-any-return]
    import torch

    with torch.inference_mode():
        return pl.net(torch.from_numpy(x), torch.from_numpy(f)).numpy()  # type: ignore[no-any-return]


FORMS = ("torch", "onnx", "onnx_int8")
#: the stages of a plan (:meth:`agents.sensor_policy.SensorPolicyPlanner.plan`), timed one by one
STAGES = ("ego_view", "raster", "features", "network", "trajectory")


def _stats(ts: list[float]) -> dict[str, float]:
    return {"mean": round(float(np.mean(ts)), 4), "median": round(float(np.median(ts)), 4), "p90": round(float(np.percentile(ts, 90)), 4),
            "p95": round(float(np.percentile(ts, 95)), 4)}


def bench_latency(weights: str | os.PathLike[str], sweeps: NDArray[np.float32] | None = None, egos: NDArray[np.float64] | None = None,
                  init: Any = None, *, rounds: int = 10, per_round: int = 30, tracker: Any = None) -> dict[str, Any]:  # fmt: skip
    """Per-plan latency (ms, one thread) of the torch, ONNX fp32 and ONNX int8 forms of
    ``weights`` (their ONNX forms beside them) on the same recorded ``sweeps`` (T, beams, azimuth,
    2) and ``egos`` (T, 6) (default: one box-LiDAR sweep), with ``init`` (its route: the route
    channel; None: no route). The forms take turns, ``per_round`` plans each for ``rounds``
    rounds, so a loaded machine loads them alike. Per form: the whole plan (``plan``), each of
    :data:`STAGES` timed separately on the same steps, the plan with the numpy reference raster
    (``plan_numpy_raster``, the path before the compiled raster), ``tracker(trajectory, obs)``
    when given (the controller tracking the plan: not part of the plan, the same for every form),
    and the network alone on one warm input (``network_alone``); mean, median and p95 of each,
    in wall time and (``cpu``) in the thread's CPU time, which a loaded machine does not inflate
    with the time the process waits for a core (a plan of 1-2 ms straddles a scheduler slice
    often enough there to move the wall-time median),
    the machine's load before and after, and the ONNX forms' waypoint distance to torch's plan
    on these sweeps (m; for every form the raster is the same)."""
    import torch

    from agents.planners.common import ego_from_obs
    from agents.sensor_policy import SensorPolicyPlanner, read_config
    from sim.planning import PlannerInit
    from sim.planning.observe import ego_features

    torch.set_num_threads(1)
    cfg, _ = read_config(weights)
    if sweeps is None or egos is None:
        from sim.render.box_lidar import simulate_lidar
        from sim.sensors import default_rig

        sweeps = _demo_sweep(simulate_lidar, default_rig().lidar)[None]
        egos = np.array([[0.0, 0.0, 0.0, 8.0, 0.0, 0.0]])
    init = init or PlannerInit(lane_map=None, route=(), dt_s=0.1, horizon_s=10.0)
    obs = [{"lidar": np.asarray(sw, np.float32), "ego": np.asarray(e, np.float64)} for sw, e in zip(sweeps, egos, strict=True)]
    fp32, int8 = onnx_paths(weights)
    pls = {}
    for rt in FORMS:
        pls[rt] = SensorPolicyPlanner(weights=str(weights), runtime=rt, onnx=str(fp32 if rt == "onnx" else int8))
        pls[rt].reset(init)
    plans = {rt: np.stack([pls[rt].plan(o).xy for o in obs]) for rt in FORMS}
    keys = ("plan", *STAGES, "plan_numpy_raster", "tracking", "network_alone")
    ts: dict[str, dict[str, list[float]]] = {rt: {k: [] for k in keys} for rt in FORMS}
    load0 = os.getloadavg()
    def clock() -> tuple[float, float]:
        return time.perf_counter(), time.thread_time()

    tcpu: dict[str, dict[str, list[float]]] = {rt: {k: [] for k in keys} for rt in FORMS}
    f1 = (ego_features(obs[0]["ego"]) / np.asarray(cfg.feat_scale, np.float32))[None].astype(np.float32)
    x1 = {}  # each form's own network input of the first sweep (the float raster, or the uint8 raster of a raster_u8 form)
    for rt in FORMS:
        x1[rt] = np.array(pls[rt].input_of(pls[rt].raster(obs[0]["lidar"], ego_from_obs(obs[0]), pls[rt]._x)), copy=True)
    for r in range(rounds + 1):  # round 0 warms up (compilation, caches, allocations) and is dropped
        for rt in FORMS:
            pl, t, tc = pls[rt], ts[rt], tcpu[rt]
            for i in range(per_round):
                o = obs[(r * per_round + i) % len(obs)]
                c0 = clock()
                traj = pl.plan(o)
                c1 = clock()
                ego = ego_from_obs(o)
                c2 = clock()
                ras = pl.raster(o["lidar"], ego, pl._x)
                c3 = clock()
                f = ego_features(o["ego"])
                c4 = clock()
                wp = pl.run_network(pl.input_of(ras), f)
                c5 = clock()
                pl.trajectory(wp)
                c6 = clock()
                with np.errstate(invalid="ignore"):
                    pl.plan_raster(pl.raster.reference(o["lidar"], ego_from_obs(o)), o["ego"])
                c7 = clock()
                if tracker is not None:
                    tracker(traj, o)
                c8 = clock()
                _native(pl, x1[rt], f1)
                c9 = clock()
                if r == 0:
                    continue
                for k, (u, v) in zip(keys, ((c0, c1), (c1, c2), (c2, c3), (c3, c4), (c4, c5), (c5, c6), (c6, c7), (c7, c8), (c8, c9)), strict=True):
                    t[k].append((v[0] - u[0]) * 1e3)
                    tc[k].append((v[1] - u[1]) * 1e3)
    load1 = os.getloadavg()
    out: dict[str, Any] = {"unit": "ms", "plans_per_form": rounds * per_round, "sweeps": len(obs), "route": bool(init.route)}
    for rt in FORMS:
        out[rt] = {k: _stats(v) for k, v in ts[rt].items() if k != "tracking" or tracker is not None}
        out[rt]["cpu"] = {k: _stats(v) for k, v in tcpu[rt].items() if k != "tracking" or tracker is not None}
        out[rt]["file_bytes"] = (Path(weights) if rt == "torch" else fp32 if rt == "onnx" else int8).stat().st_size
    for rt in ("onnx", "onnx_int8"):
        d = np.linalg.norm(plans[rt] - plans["torch"], axis=-1)
        out[rt]["waypoint_diff_vs_torch_m"] = {"mean": round(float(d.mean()), 5), "max": round(float(d.max()), 5)}
    for stat in ("median", "mean", "p90", "p95"):
        out[f"plan_speedup_int8_vs_torch_{stat}"] = round(out["torch"]["plan"][stat] / out["onnx_int8"]["plan"][stat], 2)
        out[f"plan_speedup_fp32_vs_torch_{stat}"] = round(out["torch"]["plan"][stat] / out["onnx"]["plan"][stat], 2)
        out[f"plan_cpu_speedup_int8_vs_torch_{stat}"] = round(out["torch"]["cpu"]["plan"][stat] / out["onnx_int8"]["cpu"]["plan"][stat], 2)
        out[f"plan_cpu_speedup_fp32_vs_torch_{stat}"] = round(out["torch"]["cpu"]["plan"][stat] / out["onnx"]["cpu"]["plan"][stat], 2)
    out["network_speedup_int8_vs_torch_median"] = round(out["torch"]["network_alone"]["median"] / out["onnx_int8"]["network_alone"]["median"], 2)
    out["raster_speedup_vs_numpy_median"] = round(
        (out["torch"]["plan_numpy_raster"]["median"] - out["torch"]["features"]["median"] - out["torch"]["network"]["median"]
         - out["torch"]["trajectory"]["median"]) / out["torch"]["raster"]["median"], 2)  # fmt: skip
    out["machine"] = {"cpu_count": os.cpu_count(), "load_avg_1m_before": round(load0[0], 2), "load_avg_1m_after": round(load1[0], 2),
                      "platform": platform.platform(), "torch_threads": torch.get_num_threads(), "ort_threads": 1}  # fmt: skip
    return out


def plan_differences(weights: str | os.PathLike[str], shards: list[str | os.PathLike[str]], batch: int = 512) -> dict[str, Any]:
    """Plan-level differences between the forms over every recorded raster of ``shards``: the
    waypoint distance (m, per waypoint) of ONNX fp32 vs torch and of int8 vs fp32 (mean, p99,
    max, and the mean of the first waypoint and of the last), on the network outputs the planner
    turns into its trajectory."""
    from agents.sensor_policy import SensorDataset, SensorPolicyPlanner
    from sim.planning import PlannerInit

    ds = SensorDataset.load(shards)
    fp32, int8 = onnx_paths(weights)
    ys = {}
    for rt in FORMS:
        pl = SensorPolicyPlanner(weights=str(weights), runtime=rt, onnx=str(fp32 if rt == "onnx" else int8))
        pl.reset(PlannerInit(lane_map=None, route=(), dt_s=0.1, horizon_s=10.0))
        assert pl.cfg is not None
        parts = []
        for i in range(0, len(ds), batch):
            x = np.ascontiguousarray((ds.bev_u8[i : i + batch].astype(np.float32) / 255.0).transpose(0, 3, 1, 2))
            parts.append(_net(pl, x, ds.feat[i : i + batch]))
        ys[rt] = np.concatenate(parts).reshape(len(ds), -1, 2) * np.asarray(pl.cfg.waypoint_scale, np.float32)
    out: dict[str, Any] = {"rasters": len(ds), "unit": "m"}
    for name, (a, b) in {"onnx_vs_torch": ("onnx", "torch"), "onnx_int8_vs_onnx": ("onnx_int8", "onnx"), "onnx_int8_vs_torch": ("onnx_int8", "torch")}.items():
        d = np.linalg.norm(ys[a] - ys[b], axis=-1)
        out[name] = {"mean": round(float(d.mean()), 5), "p99": round(float(np.percentile(d, 99)), 5), "max": round(float(d.max()), 5),
                     "mean_first_waypoint": round(float(d[:, 0].mean()), 5), "mean_last_waypoint": round(float(d[:, -1].mean()), 5)}  # fmt: skip
    return out


def _demo_sweep(simulate: Any, spec: Any) -> NDArray[np.float32]:
    """A sweep of the analytic box LiDAR: a car 20 m ahead in the ego's lane, one beside."""
    from types import SimpleNamespace

    w = SimpleNamespace(
        x=np.array([0.0, 20.0, 5.0]), y=np.array([0.0, 0.0, 3.5]), yaw=np.zeros(3), z=np.zeros(3),
        length=np.array([4.6, 4.6, 4.6]), width=np.array([1.9, 1.9, 1.9]), height=np.array([1.6, 1.6, 1.6]),
        valid=np.array([True, True, True]),
    )  # fmt: skip
    return np.asarray(simulate(w, spec), np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agents.sensor_policy_onnx", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="write <weights>.onnx and <weights>.int8.onnx")
    ex.add_argument("weights")
    ex.add_argument("--shards", nargs="*", default=None, help="sensor shards to calibrate the int8 activations on")
    be = sub.add_parser("bench", help="latency per plan of the three forms on a box-LiDAR sweep, as JSON (scripts/sensor_policy_bench.py latency: on mesh sweeps)")
    be.add_argument("weights")
    be.add_argument("--rounds", type=int, default=10)
    be.add_argument("--out", default=None, help="JSON file (default: print)")
    a = ap.parse_args(argv)
    if a.cmd == "export":
        print(export_onnx(a.weights), quantize_int8(a.weights, a.shards))
        return 0
    res = bench_latency(a.weights, rounds=a.rounds)
    text = json.dumps(res, indent=1)
    if a.out:
        atomic_write_text(Path(a.out), text)
    print(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
