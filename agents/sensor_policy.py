"""``sensor_policy``: a learned planner that drives from its sensors -- the LiDAR sweep as a
bird's-eye raster (occupancy / height / intensity / ground around the ego, plus the map's route)
and the ego's own speed, acceleration and steering -- to K future waypoints in the ego frame,
tracked by the engine's trajectory controller. It never reads other actors' state.

The network (:func:`build_network`) is a compact CNN: four strided 3x3/5x5 conv layers
(5 -> w -> 2w -> 4w -> 4w channels, 64 -> 4 pixels), the ego features concatenated, a two-layer
MLP to 2K numbers that are **added to a constant-speed prior** (x_k = v t_k, y_k = 0), then scaled
(x / 20 m, y / 4 m). Trained by imitation of ``pdm_closed``'s plans on closed-loop roll-outs with
rendered LiDAR, then DAgger rounds (:mod:`agents.sensor_policy_train`). Runtimes: torch, ONNX
fp32 or ONNX int8 through onnxruntime on the CPU (:mod:`agents.sensor_policy_onnx`).

Data, raster and labels: :mod:`agents.sensor_policy_data`. Weights: safetensors + a JSON config
with the training record (``agents/weights/sensor_policy.*``), loaded without executing anything.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from agents.bc import FEAT_SCALE, BCDataset, save_policy
from agents.planners.common import ego_from_obs
from agents.sensor_policy_data import (
    RASTER_CHANNELS,
    WAYPOINT_DT_S,
    RasterGeometry,
    SensorRaster,
    load_sensor_shards,
)
from sim.errors import BundleError
from sim.planning import Observation, ObservationSpec, Planner, PlannerInit, PlannerParams, Trajectory
from sim.planning.observe import ego_features

__all__ = [
    "SHIPPED_ONNX",
    "SHIPPED_ONNX_INT8",
    "SHIPPED_WEIGHTS",
    "SensorDataset",
    "SensorPolicyConfig",
    "SensorPolicyPlanner",
    "build_network",
    "load_sensor_policy",
    "onnx_paths",
    "save_sensor_policy",
]

log = logging.getLogger(__name__)

CONFIG_VERSION = 1
FORMAT = "loopdrive-sensor-policy"
WAYPOINT_SCALE = (20.0, 4.0)  # m: x (forward), y (left)
_WEIGHTS = Path(__file__).resolve().parent / "weights"
#: the shipped weights (safetensors + .json config with provenance) and their ONNX forms
SHIPPED_WEIGHTS = _WEIGHTS / "sensor_policy.safetensors"
SHIPPED_ONNX = _WEIGHTS / "sensor_policy.onnx"
SHIPPED_ONNX_INT8 = _WEIGHTS / "sensor_policy.int8.onnx"


@dataclass(frozen=True)
class SensorPolicyConfig:
    """Network, raster and training settings (saved as JSON next to the weights).

    Attributes:
        raster_size (pixels), raster_res_m (m / pixel), raster_behind_m (m): the sensor raster.
        channels: raster channels.  k: waypoints, ``waypoint_dt_s`` apart (s).
        width: channels of the first conv layer.  hidden: MLP width.
        epochs, batch_size, lr (Adam), weight_decay, val_fraction (episodes held out), seed.
    """

    raster_size: int = 64
    raster_res_m: float = 0.75
    raster_behind_m: float = 7.5
    channels: int = len(RASTER_CHANNELS)
    k: int = 6
    waypoint_dt_s: float = WAYPOINT_DT_S
    width: int = 16
    hidden: int = 128
    epochs: int = 12
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-5
    val_fraction: float = 0.2
    seed: int = 0
    version: int = CONFIG_VERSION
    feat_scale: tuple[float, ...] = field(default_factory=lambda: tuple(float(v) for v in FEAT_SCALE))
    waypoint_scale: tuple[float, float] = WAYPOINT_SCALE

    @property
    def geometry(self) -> RasterGeometry:
        return RasterGeometry(self.raster_size, self.raster_res_m, self.raster_behind_m)


def build_network(cfg: SensorPolicyConfig) -> Any:
    """The policy network (module docstring): ``net(raster (B, C, H, W) in [0, 1], feat (B, 3)
    scaled) -> (B, 2K)`` scaled waypoints ``[x1, y1, x2, y2, ...]``."""
    import torch
    from torch import nn

    t_k = torch.arange(1, cfg.k + 1, dtype=torch.float32) * cfg.waypoint_dt_s
    prior = torch.zeros(2 * cfg.k)
    prior[0::2] = t_k * float(cfg.feat_scale[0]) / float(cfg.waypoint_scale[0])  # x = v t, v = feat0 * scale

    n = cfg.raster_size
    for k, pad in ((5, 2), (3, 1), (3, 1), (3, 1)):
        n = (n + 2 * pad - k) // 2 + 1
    # the trunk of a 64-pixel raster ends at 4 x 4 already: the pool would copy its input (an
    # AveragePool of kernel 1 in ONNX), so it is an identity there (no weights: same state dict)
    pool = nn.Identity() if n == 4 else nn.AdaptiveAvgPool2d(4)

    class SensorNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = cfg.width
            self.conv = nn.Sequential(
                nn.Conv2d(cfg.channels, w, 5, stride=2, padding=2), nn.ReLU(),
                nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(4 * w, 4 * w, 3, stride=2, padding=1), nn.ReLU(),
                pool, nn.Flatten(),
            )  # fmt: skip
            self.head = nn.Sequential(nn.Linear(4 * w * 16 + 3, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(),
                                      nn.Linear(cfg.hidden, 2 * cfg.k))  # fmt: skip
            self.register_buffer("prior", prior)

        def forward(self, raster: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
            base = feat[:, 0:1] * self.prior[None, :]
            return base + self.head(torch.cat([self.conv(raster), feat], dim=1))

    return SensorNet()


# ------------------------------------------------------------------------------------ data
class SensorDataset(BCDataset):
    """Sensor shards in memory (:func:`agents.sensor_policy_data.load_sensor_shards`): the
    :class:`agents.bc.BCDataset` of rasters (``bev_u8``), scaled ego features and scaled,
    flattened waypoints (``action``, (N, 2K)); its split and tensors are bc's."""

    def __init__(self, raster: NDArray[np.uint8], ego: NDArray[np.float32], waypoints: NDArray[np.float32], episode: NDArray[np.int64],
                 weight: NDArray[np.float32] | None = None, names: tuple[str, ...] | list[str] = ()) -> None:  # fmt: skip
        self.bev_u8 = raster
        self.feat = (ego / FEAT_SCALE).astype(np.float32)
        self.waypoints = waypoints
        self.action = (waypoints / np.asarray(WAYPOINT_SCALE, np.float32)).reshape(len(waypoints), -1).astype(np.float32)
        self.episode = episode
        self.weight = np.ones(len(raster), np.float32) if weight is None else weight.astype(np.float32)
        self.names = tuple(names)

    @classmethod
    def load(cls, paths: Iterable[str | os.PathLike[str]]) -> SensorDataset:
        r, e, w, ep, wt, names = load_sensor_shards(paths)
        return cls(r, e, w, ep, wt, names)


# ---------------------------------------------------------------------------------- weights
def save_sensor_policy(net: Any, cfg: SensorPolicyConfig, out: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``out`` (safetensors) and its ``.json`` config atomically (:func:`agents.bc.save_policy`)."""
    return save_policy(net, cfg, out, extra, fmt=FORMAT, version=CONFIG_VERSION)


def read_config(path: str | os.PathLike[str]) -> tuple[SensorPolicyConfig, dict[str, Any]]:
    """The config (and the whole JSON) beside the weights ``path``; :class:`BundleError` names the
    file and field when it is missing or malformed."""
    from sim.fsutil import check_input_file

    cj = Path(path).with_suffix(".json")
    check_input_file(cj, error=BundleError, max_bytes=16 << 20, what="a sensor_policy config (.json beside the weights)", field="config")
    try:
        doc = json.loads(cj.read_text(encoding="utf-8"))
        raw = dict(doc["config"])
        if int(raw.get("version", -1)) != CONFIG_VERSION:
            raise BundleError(f"expected config version {CONFIG_VERSION}, got {raw.get('version')}", file=cj, field="config.version")
        raw["feat_scale"] = tuple(raw["feat_scale"])
        raw["waypoint_scale"] = tuple(raw["waypoint_scale"])
        cfg = SensorPolicyConfig(**raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"expected a sensor_policy config JSON ({exc})", file=cj, field="config") from None
    return cfg, doc


def load_sensor_policy(path: str | os.PathLike[str]) -> tuple[Any, SensorPolicyConfig]:
    """The torch network and config from ``path`` (safetensors) and its ``.json``; nothing in the
    files is executed. :class:`BundleError` for a missing, corrupt or mismatched pair."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from sim.fsutil import check_input_file

    p = Path(path)
    check_input_file(p, error=BundleError, max_bytes=256 << 20, what="sensor_policy weights (.safetensors; train with `loopdrive train sensor-policy`)", field="weights")
    cfg, _ = read_config(p)
    net = build_network(cfg)
    try:
        net.load_state_dict(load_file(str(p)), strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise BundleError(f"weights do not match the config ({str(exc).splitlines()[0]})", file=p, field="weights") from None
    net.eval()
    return net, cfg


def onnx_paths(weights: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The fp32 and int8 ONNX forms that belong beside ``weights`` (``x.safetensors`` ->
    ``x.onnx``, ``x.int8.onnx``; :mod:`agents.sensor_policy_onnx` writes them)."""
    w = Path(weights)
    return w.with_suffix(".onnx"), w.with_name(w.stem + ".int8.onnx")


# ------------------------------------------------------------------------------------ planner
class SensorPolicyParams(PlannerParams):
    """Parameters of ``sensor_policy`` a file may give."""

    weights: str | None = Field(None, min_length=1, description="safetensors weights (default: the shipped policy)")
    runtime: Literal["torch", "onnx", "onnx_int8"] = Field("torch", description="torch, or onnxruntime on the CPU with the fp32 / int8 ONNX form")
    onnx: str | None = Field(None, min_length=1, description="the ONNX file for an onnx runtime (default: beside the shipped weights)")
    safety_decel: float = Field(0.0, ge=0.0, le=10.0, description="geometric safety check of the plan against the LiDAR obstacle raster "
                                "(agents.sensor_policy_safety): cap the plan's speed so that braking at this many m/s² stops short of "
                                "an obstacle on its path; 0 = off (the default)")
    safety_predict_s: float = Field(0.0, ge=0.0, le=10.0, description="with safety_decel > 0: also track the LiDAR's obstacles "
                                    "(agents.perception, as lidar_stack) and brake for a moving one the plan would meet within this "
                                    "many seconds, predicted at constant velocity; 0 = off (the default)")


class SensorPolicyPlanner(Planner):
    """``sensor_policy``: LiDAR raster + route + ego odometry -> K waypoints (ego frame). Params
    (:class:`SensorPolicyParams`): ``weights``, ``runtime`` (``torch`` | ``onnx`` | ``onnx_int8``),
    ``onnx``, ``safety_decel`` (m/s², 0 = off), ``safety_predict_s`` (s, 0 = off); code may pass ``network`` + ``config`` (tests, training)."""

    name = "sensor_policy"
    Params = SensorPolicyParams
    code_params = frozenset({"network", "config"})
    input_files = frozenset({"weights"})  # checked before a run starts

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p: SensorPolicyParams = self.config  # type: ignore[assignment]
        self.net: Any = params.get("network")
        self.cfg: SensorPolicyConfig | None = params.get("config")
        self.weights = Path(p.weights) if p.weights else SHIPPED_WEIGHTS
        self.runtime = p.runtime
        self.safety_decel = float(p.safety_decel)
        self.safety_predict_s = float(p.safety_predict_s)
        self.perception: Any = None  # agents.perception.LidarPerception when safety_predict_s > 0
        self._ego_size = (4.6, 1.9)
        self.onnx_path = Path(p.onnx) if p.onnx else onnx_paths(self.weights)[0 if p.runtime == "onnx" else 1]
        self.session: Any = None
        self.raster: SensorRaster | None = None
        #: the last plan's raster (for inspection)
        self.last_raster: NDArray[np.uint8] | None = None
        self._x: NDArray[np.float32] | None = None  # the network input buffer (:meth:`_prepare`)
        self._input_name = "raster"
        self._prepared = False

    def observation_spec(self) -> ObservationSpec:
        return ObservationSpec(kinds=("ego", "lidar"))

    @classmethod
    def export_onnx(cls, weights: str | os.PathLike[str], out: str | os.PathLike[str], *, int8: bool = True,
                    calibration: list[str | os.PathLike[str]] | None = None, samples: int = 2000, keep_float: str = "head") -> dict[str, Path]:  # fmt: skip
        """The ONNX export hook ``loopdrive export-onnx`` finds through the planner registry:
        :func:`agents.sensor_policy_onnx.export_forms` (the folder for the car; returns its files)."""
        from agents.sensor_policy_onnx import export_forms

        return export_forms(weights, out, int8=int8, calibration=calibration, samples=samples, keep_float=keep_float)

    def reset(self, init: PlannerInit, *, seed: int | None = None) -> None:
        if self.runtime == "torch":
            if self.net is None:
                self.net, self.cfg = load_sensor_policy(self.weights)
        elif self.session is None:
            from agents.sensor_policy_onnx import open_session

            self.session = open_session(self.onnx_path)
            if self.cfg is None:
                self.cfg, _ = read_config(self.weights)
            made_from = self.session.get_modelmeta().custom_metadata_map.get("loopdrive.weights_sha256")
            if made_from is not None and self.weights.is_file():
                from sim.fsutil import sha256_file

                if made_from != sha256_file(self.weights):
                    log.warning("%s was exported from other weights than %s (re-export: loopdrive export-onnx --planner sensor_policy "
                                "--weights %s --out DIR)", self.onnx_path, self.weights, self.weights)  # fmt: skip
        if self.cfg is None:
            self.cfg = SensorPolicyConfig()
        if self.raster is None or self.raster.geom != self.cfg.geometry:
            self.raster = SensorRaster(self.cfg.geometry, init.rig.lidar if init.rig is not None else None)
        self.raster.reset(init)
        if self.safety_decel > 0 and self.safety_predict_s > 0 and self.raster.lidar is not None:
            from agents import sensor_policy_safety as sps
            from agents.perception import LidarPerception, MultiObjectTracker

            self.perception = LidarPerception(self.raster.lidar, init.lane_map, dt_s=init.dt_s, road_margin_m=sps.PREDICT_ROAD_MARGIN_M,
                                              max_range_m=sps.PREDICT_MAX_RANGE_M,
                                              tracker=MultiObjectTracker(min_hits=sps.PREDICT_MIN_HITS))  # fmt: skip
            self._ego_size = (float(init.ego_size[0]), float(init.ego_size[1]))
        self._prepare()

    def _prepare(self) -> None:
        """Per-episode constants of a plan (scales, times, the input buffer)."""
        assert self.cfg is not None
        c = self.cfg
        self._feat_scale = np.asarray(c.feat_scale, np.float32)
        self._wp_scale = np.asarray(c.waypoint_scale, np.float32)
        self._t = np.arange(1, c.k + 1) * c.waypoint_dt_s
        # an int8 ONNX form reads the uint8 raster as is (input raster_u8, agents.sensor_policy_onnx):
        # then the raster pass writes no float input (None)
        self._input_name = "raster_u8" if self.session is not None and "raster_u8" in {i.name for i in self.session.get_inputs()} else "raster"
        self._x = None if self._input_name == "raster_u8" else np.empty((1, c.channels, c.raster_size, c.raster_size), np.float32)
        self._prepared = True

    def input_of(self, raster: NDArray[np.uint8]) -> NDArray[Any]:
        """The network input of the raster (H, W, C) uint8 the last :meth:`plan` built: the float
        buffer that raster pass filled, or the raster itself (1, H, W, C) for a ``raster_u8`` form."""
        return raster[None] if self._x is None else self._x

    def net_input(self, raster: NDArray[np.uint8]) -> NDArray[np.float32]:
        """The network's (1, C, H, W) float32 input of a (H, W, C) uint8 raster (/ 255)."""
        return np.ascontiguousarray((raster.astype(np.float32) / 255.0).transpose(2, 0, 1)[None])

    def run_network(self, x: NDArray[np.float32], ego_feat: NDArray[np.float32]) -> NDArray[np.float32]:
        """(K, 2) ego-frame waypoints (m) from the network input ``x`` (:meth:`input_of`: (1, C, H, W)
        float32, or the (1, H, W, C) uint8 raster for an int8 ONNX form that reads it as is) and
        the (3,) ego features (speed m/s, accel m/s², steer rad), by the configured runtime."""
        f = (np.asarray(ego_feat, np.float32) / self._feat_scale)[None]
        if self.session is not None:
            y = self.session.run(None, {self._input_name: x, "feat": f})[0][0]
        else:
            import torch

            with torch.inference_mode():
                y = self.net(torch.from_numpy(x), torch.from_numpy(f))[0].numpy()
        return np.asarray(y, np.float32).reshape(-1, 2) * self._wp_scale

    def infer(self, raster: NDArray[np.uint8], ego_feat: NDArray[np.float32]) -> NDArray[np.float32]:
        """(K, 2) ego-frame waypoints (m) from one raster (H, W, C) uint8 and the (3,) ego features
        (speed m/s, accel m/s², steer rad), by the configured runtime."""
        assert self.cfg is not None, "reset() first"
        if not self._prepared:
            self._prepare()
        return self.run_network(np.ascontiguousarray(raster)[None] if self._x is None else self.net_input(raster), ego_feat)

    def trajectory(self, wp: NDArray[np.float32]) -> Trajectory:
        """The plan of (K, 2) network waypoints (m): x made non-decreasing (never backwards)."""
        xy = wp.astype(np.float64)
        xy[:, 0] = np.maximum.accumulate(np.maximum(xy[:, 0], 0.0))
        return Trajectory(t_s=self._t.copy(), xy=xy)

    def plan_raster(self, raster: NDArray[np.uint8], ego_obs: Any) -> Trajectory:
        """The plan for an already built raster and the ``ego`` observation."""
        assert self.cfg is not None, "reset() first"
        self.last_raster = raster
        feat = ego_features(ego_obs)
        return self.trajectory(self._checked(self.infer(raster, feat), raster))

    def _checked(self, wp: NDArray[np.float32], raster: NDArray[np.uint8], tracks: dict[str, Any] | None = None) -> NDArray[np.float32]:
        """The network's waypoints after the safety check (``safety_decel`` > 0; else unchanged),
        with the tracked obstacles (ego frame, :func:`agents.sensor_policy_safety.tracks_in_ego_frame`)
        predicted over ``safety_predict_s`` when given."""
        if self.safety_decel <= 0:
            return wp
        from agents.sensor_policy_safety import predicted_free_length, slow_for_obstacles

        assert self.cfg is not None
        cap = math.inf
        if tracks is not None and self.safety_predict_s > 0:
            cap = predicted_free_length(wp, self._t, tracks, horizon_s=self.safety_predict_s, ego_length=self._ego_size[0],
                                        ego_width=self._ego_size[1])  # fmt: skip
        return slow_for_obstacles(wp, self._t, raster, self.cfg.geometry, self.safety_decel, free_cap=cap).astype(np.float32)

    def _tracks(self, lidar: Any, ego: Any) -> dict[str, Any] | None:
        """The moving obstacles the LiDAR perception tracks in the sweep ``lidar`` seen from ``ego``
        (:func:`agents.planners.common.ego_from_obs`), in the ego frame (``safety_predict_s`` > 0),
        updated every plan."""
        if self.perception is None:
            return None
        from agents.sensor_policy_safety import tracks_in_ego_frame

        return tracks_in_ego_frame(self.perception(lidar, ego.xy, ego.yaw), ego.xy, ego.yaw)

    def plan(self, obs: Observation) -> Trajectory:
        """Raster and network input in one compiled pass (:class:`SensorRaster`), the network,
        the trajectory: the same numbers as :meth:`plan_raster` on the raster."""
        assert self.raster is not None, "reset() first"
        ego = ego_from_obs(obs)
        ras = self.raster(obs["lidar"], ego, self._x)
        self.last_raster = ras
        feat = ego_features(obs["ego"])
        return self.trajectory(self._checked(self.run_network(self.input_of(ras), feat), ras, self._tracks(obs["lidar"], ego)))
