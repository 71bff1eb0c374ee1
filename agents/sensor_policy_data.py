"""What ``sensor_policy`` sees and learns from: the LiDAR bird's-eye raster, the expert's waypoint
labels, and the shards written from closed-loop roll-outs (expert and DAgger).

**Sensor raster** (:class:`SensorRaster`, (H, W, C) uint8, ego heading up, x forward / y left in
the vehicle frame; ``res_m`` metres per pixel; the ego sits ``behind_m`` metres above the bottom
edge, so the raster sees ``size * res_m - behind_m`` metres ahead and ``size * res_m / 2`` to each
side). Channels, all from the ``lidar`` range image (:mod:`sim.observations`) except the last:

0. obstacle occupancy: returns 0.3-3.0 m above the ground per cell (255 = 4 or more);
1. obstacle height: highest such return in the cell / 3 m;
2. intensity: mean return intensity of every return in the cell;
3. ground: returns below 0.3 m (255 = 2 or more) -- free space the sensor saw;
4. route: the ego's route from the map (:class:`~sim.planning.PlannerInit`, lane-wide band), not
   privileged.

**Labels**: the expert's (``pdm_closed``) plan at the visited state -- its chosen proposal
(lateral offset, desired speed) rolled forward with its own forecast
(:func:`agents.planners.common.forecast`) -- sampled at ``t_k = k * WAYPOINT_DT_S`` (k = 1..K) in the
ego frame. ``WAYPOINT_DT_S = 2/3 s`` makes the engine's trajectory controller
(:class:`sim.controller.TrajectoryController`, speed target = mean speed over the first two
points, gain 1.5 /s) command the plan's own acceleration.

**Shards** (one ``.npz`` per episode, written atomically, read with ``allow_pickle=False``):
``raster`` (T, H, W, C) uint8, ``ego`` (T, 3) float32 speed m/s / accel m/s² / steer rad
(:func:`sim.planning.observe.ego_features`), ``waypoints`` (T, K, 2) float32 ego-frame metres,
``action`` (T, 2) float32 the expert's control (accel m/s², steer rad), optional ``weight`` (T,).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

from agents.planners.common import EgoView, RouteRef, ego_from_obs, forecast
from sim.errors import ScenarioError
from sim.planning import Control, Observation, ObservationSpec, Planner, PlannerInit, PlannerOutput
from sim.planning.observe import ego_features
from sim.planning.training import EpisodeRunner, collect_shards
from sim.sensors import LidarSpec, default_rig

__all__ = [
    "RASTER_CHANNELS",
    "WAYPOINT_DT_S",
    "LabellingDriver",
    "RasterGeometry",
    "SensorRaster",
    "collect_sensor_episodes",
    "expert_waypoints",
    "load_sensor_shards",
]

log = logging.getLogger(__name__)

#: seconds between waypoints (see the module docstring)
WAYPOINT_DT_S = 2.0 / 3.0
RASTER_CHANNELS = ("occupancy", "height", "intensity", "ground", "route")
_OBST_Z = (0.3, 3.0)  # m above the ground: obstacle returns
_ROUTE_RES = 0.5  # m per pixel of the world-frame route raster


@dataclass(frozen=True)
class RasterGeometry:
    """Raster size (pixels per side), resolution (m per pixel) and metres behind the ego."""

    size: int = 64
    res_m: float = 0.75
    behind_m: float = 7.5

    @property
    def origin_row(self) -> float:
        """Row coordinate (continuous) of the ego's position."""
        return self.size - self.behind_m / self.res_m

    def pixel_centres(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Ego-frame (x forward, y left) metres of every pixel centre, each (size*size,)."""
        n = self.size
        rows, cols = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        fwd = (self.origin_row - rows - 0.5) * self.res_m
        left = (n / 2 - cols - 0.5) * self.res_m
        return fwd.ravel(), left.ravel()

    def cell_of(self, x: NDArray[np.floating[Any]], y: NDArray[np.floating[Any]]) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
        """Flat cell index of ego-frame points (m) and whether they fall inside the raster."""
        n = self.size
        r = np.floor(self.origin_row - x / self.res_m).astype(np.int64)
        c = np.floor(n / 2 - y / self.res_m).astype(np.int64)
        inside = (r >= 0) & (r < n) & (c >= 0) & (c < n)
        return np.where(inside, r * n + c, 0), inside


_NO_ROUTE = np.zeros((1, 1), np.bool_)
_NO_INPUT = np.zeros((len(RASTER_CHANNELS), 0), np.float32)


@numba.njit(cache=True, nogil=True)
def _quantise(x):  # type: ignore[no-untyped-def]
    """``np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)`` of one float32 (half to even; NaN -> 0)."""
    if not x >= 0:  # negative or NaN
        return np.uint8(0)
    q = min(x, np.float32(1.0)) * np.float32(255.0)
    f = np.floor(q)
    d = q - f
    if d > 0.5 or (d == 0.5 and np.int64(f) % 2 == 1):
        f += 1
    return np.uint8(f)


@numba.njit(cache=True, nogil=True)
def _raster_nb(rays, dirs, mount, res, origin_row, half, route, has_route, fwd, left, ex, ey, c, s, rx0, ry0, route_res, out, x):  # type: ignore[no-untyped-def]
    """The sensor raster (module docstring) in one pass over the rays: ``rays`` (N, 2) range (m) /
    intensity, ``dirs`` (N, 3) float32 unit rays and ``mount`` (3,) float32 metres in the vehicle
    frame; ``res`` (m / pixel), ``origin_row``, ``half`` (= size / 2) float32; ``route`` the
    world-frame route mask (``route_res`` m / pixel, lower-left corner ``rx0``, ``ry0`` m), used
    when ``has_route``; ``fwd`` / ``left`` (size*size,) pixel centres (m, ego frame); the ego pose
    ``ex``, ``ey`` (m) and ``c``, ``s`` (cos / sin of its yaw). Writes ``out`` (size*size, 5)
    uint8 and, when ``x`` has size*size columns, the network's input ``x`` (5, size*size) float32
    = ``out.T / 255`` (what :meth:`agents.sensor_policy.SensorPolicyPlanner.infer` computes). Every operation, its precision (float32 points, float64 intensity sums) and its order
    are those of :meth:`SensorRaster.reference`, so the two agree byte for byte."""
    n2 = out.shape[0]
    nch = out.shape[1]
    n = np.int64(np.sqrt(n2) + 0.5)
    cnt = np.zeros((n2, 3), np.int32)  # every return, obstacle, ground
    zmax = np.zeros(n2, np.float32)
    isum = np.zeros(n2, np.float64)
    z_lo = np.float32(0.3)
    z_hi = np.float32(3.0)
    nf = np.float32(n)
    # consecutive rays often land in the same cell: that cell's sums are kept in registers and
    # written back when the cell changes (the same additions in the same order)
    cur = -1
    c_all = c_obst = c_gnd = 0
    zm = np.float32(0.0)
    sm = 0.0
    for i in range(rays.shape[0]):
        r = rays[i, 0]
        if not r > 0:
            continue
        px = dirs[i, 0] * r + mount[0]
        py = dirs[i, 1] * r + mount[1]
        vr = origin_row - px / res
        vc = half - py / res
        # floor(v) is in [0, n) exactly when v is (no floor needed, NaN and inf fail too)
        if not (0 <= vr < nf and 0 <= vc < nf):
            continue
        k = np.int64(vr) * n + np.int64(vc)
        if k != cur:
            if cur >= 0:
                cnt[cur, 0] = c_all
                cnt[cur, 1] = c_obst
                cnt[cur, 2] = c_gnd
                zmax[cur] = zm
                isum[cur] = sm
            cur = k
            c_all, c_obst, c_gnd, zm, sm = cnt[k, 0], cnt[k, 1], cnt[k, 2], zmax[k], isum[k]
        pz = dirs[i, 2] * r + mount[2]
        c_all += 1
        sm += np.float64(rays[i, 1])
        if pz >= z_lo and pz <= z_hi:
            c_obst += 1
            zr = pz / z_hi
            if zr > zm:
                zm = zr
        elif pz < z_lo:
            c_gnd += 1
    if cur >= 0:
        cnt[cur, 0] = c_all
        cnt[cur, 1] = c_obst
        cnt[cur, 2] = c_gnd
        zmax[cur] = zm
        isum[cur] = sm
    occ = np.empty(5, np.uint8)  # the quantised occupancy of 0..4+ and ground of 0..2+ returns
    gnd = np.empty(3, np.uint8)
    for j in range(5):
        occ[j] = _quantise(np.float32(min(j / 4.0, 1.0)))
    for j in range(3):
        gnd[j] = _quantise(np.float32(min(j / 2.0, 1.0)))
    h = route.shape[0]
    w = route.shape[1]
    for k in range(n2):
        m = cnt[k, 0]
        if m == 0:
            out[k, 0] = out[k, 1] = out[k, 2] = out[k, 3] = 0
        else:
            out[k, 0] = occ[min(cnt[k, 1], 4)]
            out[k, 1] = _quantise(zmax[k])
            out[k, 2] = _quantise(np.float32(isum[k] / m))
            out[k, 3] = gnd[min(cnt[k, 2], 2)]
        out[k, 4] = 0
        if has_route:
            wx = ex + c * fwd[k] - s * left[k]
            wy = ey + s * fwd[k] + c * left[k]
            cc = np.floor((wx - rx0) / route_res)
            rr = np.floor((wy - ry0) / route_res)
            if 0 <= cc < w and 0 <= rr < h and route[np.int64(rr), np.int64(cc)]:
                out[k, 4] = 255
    if x.shape[1] == n2:
        lut = np.empty(256, np.float32)  # the 256 values u8 / 255 can take, each divided once
        for j in range(256):
            lut[j] = np.float32(j) / np.float32(255.0)
        for k in range(n2):
            for ch in range(nch):
                x[ch, k] = lut[out[k, ch]]


class SensorRaster:
    """Builds the sensor raster (module docstring) from a ``lidar`` range image and the ego pose.
    :meth:`reset` once per episode with the map and route (the route channel)."""

    def __init__(self, geometry: RasterGeometry = RasterGeometry(), lidar: LidarSpec | None = None) -> None:
        self.geom = geometry
        self.lidar = lidar or default_rig().lidar
        assert self.lidar is not None
        self._dirs_v = self._vehicle_rays(self.lidar)
        self._fwd, self._left = geometry.pixel_centres()
        self._route: NDArray[np.bool_] | None = None
        self._rx0 = self._ry0 = 0.0

    @staticmethod
    def _vehicle_rays(spec: LidarSpec) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        m = spec.vehicle_from_lidar
        d = spec.ray_directions().reshape(-1, 3) @ m[:3, :3].T
        return d.astype(np.float32), m[:3, 3].astype(np.float32)  # float32: centimetre-exact at 80 m, twice as fast

    def reset(self, init: PlannerInit | None) -> None:
        """Rasterise the route of ``init`` (None: no route channel) and adopt its rig's LiDAR."""
        if init is not None and init.rig is not None and init.rig.lidar is not None and init.rig.lidar != self.lidar:
            self.lidar = init.rig.lidar
            self._dirs_v = self._vehicle_rays(self.lidar)
        self._route = None
        if init is None or not init.route:
            return
        from PIL import Image, ImageDraw

        ref = RouteRef(init.lane_map, init.route)
        pts = np.asarray(ref.polyline.points, np.float64)
        lo = pts.min(axis=0) - 20.0
        hi = pts.max(axis=0) + 20.0
        w, h = (np.ceil((hi - lo) / _ROUTE_RES).astype(int) + 1).tolist()
        img = Image.new("L", (w, h), 0)
        widths = [float(init.lane_map.lanes[r].width) for r in init.route]
        dr = ImageDraw.Draw(img)
        dr.line([((px - lo[0]) / _ROUTE_RES, (py - lo[1]) / _ROUTE_RES) for px, py in pts], fill=255,
                width=max(1, round(float(np.median(widths)) / _ROUTE_RES)))  # fmt: skip
        self._route = np.asarray(img) > 0
        self._rx0, self._ry0 = float(lo[0]), float(lo[1])

    def __call__(self, lidar_obs: Any, ego: EgoView, net_input: NDArray[np.float32] | None = None) -> NDArray[np.uint8]:
        """(size, size, 5) uint8 raster of one sweep (``lidar_obs``: (beams, azimuth, 2) range
        image, metres / intensity) seen from ``ego`` (world pose for the route channel): one
        compiled pass over the rays (:func:`_raster_nb`), equal byte for byte to
        :meth:`reference`. ``net_input`` (C-contiguous, 5 * size * size float32, e.g. (1, 5, size,
        size)), when given, is filled with the network's input, the raster channels-first / 255."""
        g = self.geom
        a = np.ascontiguousarray(lidar_obs, dtype=np.float32)
        spec = self.lidar
        assert spec is not None
        if a.shape != (spec.beams, spec.azimuth_steps, 2):
            raise ValueError(f"expected a ({spec.beams}, {spec.azimuth_steps}, 2) LiDAR range image, got {a.shape}")
        dirs, mount = self._dirs_v
        out = np.empty((g.size * g.size, len(RASTER_CHANNELS)), np.uint8)
        route = self._route if self._route is not None else _NO_ROUTE
        x = _NO_INPUT
        if net_input is not None:
            if not (net_input.dtype == np.float32 and net_input.flags.c_contiguous and net_input.size == out.size):
                raise ValueError(f"expected a C-contiguous float32 network input of {out.size} values, got {net_input.dtype} {net_input.shape}")
            x = net_input.reshape(len(RASTER_CHANNELS), -1)
        _raster_nb(a.reshape(-1, 2), dirs, mount, np.float32(g.res_m), np.float32(g.origin_row), np.float32(g.size / 2),
                   route, self._route is not None, self._fwd, self._left, float(ego.x), float(ego.y), math.cos(ego.yaw),
                   math.sin(ego.yaw), self._rx0, self._ry0, _ROUTE_RES, out, x)  # fmt: skip
        return out.reshape(g.size, g.size, -1)

    def reference(self, lidar_obs: Any, ego: EgoView) -> NDArray[np.uint8]:
        """The raster of :meth:`__call__` by the original numpy implementation (the definition the
        shipped weights were trained on; about 10x slower). Kept as the slow path the compiled
        kernel is tested against (equal byte for byte)."""
        g = self.geom
        n2 = g.size * g.size
        out = np.zeros((n2, len(RASTER_CHANNELS)), np.float32)
        a = np.asarray(lidar_obs, np.float32)
        spec = self.lidar
        assert spec is not None
        if a.shape != (spec.beams, spec.azimuth_steps, 2):
            raise ValueError(f"expected a ({spec.beams}, {spec.azimuth_steps}, 2) LiDAR range image, got {a.shape}")
        r = a[..., 0].reshape(-1)
        hit = r > 0
        dirs, mount = self._dirs_v
        p = dirs[hit] * r[hit, None] + mount
        inten = a[..., 1].reshape(-1)[hit]
        cell, inside = g.cell_of(p[:, 0], p[:, 1])
        z = p[:, 2]
        obst = inside & (z >= _OBST_Z[0]) & (z <= _OBST_Z[1])
        ground = inside & (z < _OBST_Z[0])
        out[:, 0] = np.minimum(np.bincount(cell[obst], minlength=n2) / 4.0, 1.0)
        zmax = np.zeros(n2, np.float32)
        np.maximum.at(zmax, cell[obst], z[obst] / _OBST_Z[1])
        out[:, 1] = zmax
        cnt = np.bincount(cell[inside], minlength=n2)
        out[:, 2] = np.bincount(cell[inside], weights=inten[inside], minlength=n2) / np.maximum(cnt, 1)
        out[:, 3] = np.minimum(np.bincount(cell[ground], minlength=n2) / 2.0, 1.0)
        if self._route is not None:
            c, s = math.cos(ego.yaw), math.sin(ego.yaw)
            wx = ego.x + c * self._fwd - s * self._left
            wy = ego.y + s * self._fwd + c * self._left
            cc = np.floor((wx - self._rx0) / _ROUTE_RES).astype(np.int64)
            rr = np.floor((wy - self._ry0) / _ROUTE_RES).astype(np.int64)
            h, w = self._route.shape
            ok = (cc >= 0) & (cc < w) & (rr >= 0) & (rr < h)
            out[:, 4] = ok & self._route[np.clip(rr, 0, h - 1), np.clip(cc, 0, w - 1)]
        return np.round(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8).reshape(g.size, g.size, -1)


def expert_waypoints(expert: Any, obs: Observation, k: int) -> NDArray[np.float32]:
    """(k, 2) ego-frame waypoints (m) of ``expert``'s (a ``pdm_closed`` planner that just planned on
    ``obs``) chosen proposal at ``t = WAYPOINT_DT_S * (1..k)``: its own forecast, sub-stepped at a
    third of the waypoint spacing."""
    ego = ego_from_obs(obs)
    actors = expert.actors(obs, ego)
    _, d_cur = expert.route.polyline.project(ego.xy)
    sub = 2
    f = forecast(
        ego, expert.route, actors, np.array([expert.target_d]), np.array([expert.target_frac]), steps=k * sub,
        dt_s=WAYPOINT_DT_S / sub, bicycle=expert.bicycle, params=expert.idm, ego_size=expert.ego_size,
        d_start=float(d_cur),
    )  # fmt: skip
    f = expert._freeze_at_route_end(f)
    xy = np.stack([f.x[0, sub::sub], f.y[0, sub::sub]], axis=-1)
    return ego.to_ego_frame(xy).astype(np.float32)


class LabellingDriver(Planner):
    """A wrapper planner for data collection: on every step the expert (``pdm_closed``) plans on
    the privileged observation and its plan is recorded as the label beside the sensor raster;
    the ``driver`` (None: the expert itself; else e.g. a ``sensor_policy`` for DAgger) is what the
    engine executes. Records in :attr:`rows`."""

    name = "sensor_policy_labeller"

    def __init__(self, expert: Any, driver: Any = None, *, k: int, geometry: RasterGeometry) -> None:
        super().__init__()
        self.expert = expert
        self.driver = driver
        self.k = k
        self.raster = SensorRaster(geometry)
        self.rows: dict[str, list[Any]] = {"raster": [], "ego": [], "waypoints": [], "action": []}

    def observation_spec(self) -> ObservationSpec:
        return ObservationSpec(kinds=("ego", "lidar", "objects"))

    def reset(self, init: PlannerInit, *, seed: int | None = None) -> None:
        self.expert.reset(init, seed=seed)
        self.raster.reset(init)
        if self.driver is not None:
            self.driver.reset(init, seed=seed)

    def plan(self, obs: Observation) -> PlannerOutput:
        ex = self.expert.plan({k: obs[k] for k in self.expert.observation_spec().kinds})
        ego = ego_from_obs(obs)
        ras = self.raster(obs["lidar"], ego)
        self.rows["raster"].append(ras)
        self.rows["ego"].append(ego_features(obs["ego"]))
        self.rows["waypoints"].append(expert_waypoints(self.expert, obs, self.k))
        self.rows["action"].append(np.array([ex.accel, ex.steer], np.float32) if isinstance(ex, Control) else np.zeros(2, np.float32))
        if self.driver is None:
            return ex
        if hasattr(self.driver, "plan_raster"):
            return self.driver.plan_raster(ras, obs["ego"])
        return self.driver.plan({k: obs[k] for k in self.driver.observation_spec().kinds})


def collect_sensor_episodes(
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    run_episode: EpisodeRunner,
    k: int,
    geometry: RasterGeometry = RasterGeometry(),
    seeds: Sequence[int] | None = None,
    driver: Callable[[], Any] | None = None,
    tag: str = "expert",
    sensors: str = "scenario",
    max_steps: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Drive every episode under ``paths`` (with ``seeds`` instead of the files' own) with the
    expert (``driver`` None) or with ``driver()`` (DAgger: the learned policy drives, the expert
    labels), LiDAR rendered by ``sensors`` (``scenario``: each file's ``scene.renderer``, mesh for
    the library; ``mesh``, ``neural``; ``box``: the analytic box LiDAR, no scenery); write one shard
    per episode ``<tag>_<episode_id>.npz`` into ``out`` (existing shards are kept: an interrupted
    collection resumes). Episodes that fail to run are skipped with a warning; collisions are kept.
    ``run_episode`` drives one episode (:class:`sim.planning.training.EpisodeRunner`)."""
    from sim.planning import make_planner
    from sim.scenario import expand_with_seeds


    def drive(ep: Any) -> dict[str, NDArray[Any]] | None:
        lab = LabellingDriver(make_planner("pdm_closed"), None if driver is None else driver(), k=k, geometry=geometry)
        res = run_episode(
            ep.spec, lab, ep.seed, observation=("ego", "lidar", "objects"), max_steps=max_steps,
            renderer=None if sensors == "box" else sensors,
        )  # fmt: skip
        if res.status != "ok" or len(lab.rows["raster"]) == 0:
            log.warning("episode %s failed (%s); skipped", ep.episode_id, res.error)
            return None
        return {key: np.stack(v) for key, v in lab.rows.items()}

    return collect_shards(expand_with_seeds(paths, seeds), out, drive, tag=tag, progress=progress)


def load_sensor_shards(paths: Iterable[str | os.PathLike[str]]) -> tuple[NDArray[np.uint8], NDArray[np.float32], NDArray[np.float32], NDArray[np.int64], NDArray[np.float32], list[str]]:
    """Arrays of sensor shards (files or folders of ``*.npz``, sorted by name): raster, ego,
    waypoints, episode index, weight, shard names. :class:`ScenarioError` names the file for a
    missing key or inconsistent shapes, or when there is no sample at all."""
    from sim.fsutil import check_input_file

    files: list[Path] = []
    for p in paths:
        pp = Path(p)
        files += sorted(pp.glob("*.npz")) if pp.is_dir() else [pp]
    if not files:
        raise ScenarioError("expected sensor_policy shards (*.npz)", file=", ".join(str(p) for p in paths), field="episodes")
    cols: dict[str, list[Any]] = {"raster": [], "ego": [], "waypoints": [], "weight": [], "episode": []}
    for e, f in enumerate(files):
        check_input_file(f, error=ScenarioError, max_bytes=2 << 30, what="a sensor_policy shard (.npz)", field="episodes")
        try:
            with np.load(f, allow_pickle=False) as z:
                r, g, w = z["raster"], z["ego"], z["waypoints"]
                wt = z["weight"] if "weight" in z.files else np.ones(len(r), np.float32)
        except (OSError, ValueError, KeyError) as exc:
            raise ScenarioError(f"expected a sensor_policy shard with raster, ego and waypoints arrays ({exc})", file=f) from None
        if not (r.ndim == 4 and r.dtype == np.uint8 and g.shape == (len(r), 3) and w.ndim == 3 and w.shape[0] == len(r) and w.shape[2] == 2 and wt.shape == (len(r),)):
            raise ScenarioError(f"inconsistent shapes raster {r.shape} {r.dtype}, ego {g.shape}, waypoints {w.shape}", file=f, field="waypoints")
        if len(r) == 0:
            continue
        for key, v in (("raster", r), ("ego", g.astype(np.float32)), ("waypoints", w.astype(np.float32)), ("weight", wt.astype(np.float32))):
            cols[key].append(v)
        cols["episode"].append(np.full(len(r), e, np.int64))
    if not cols["raster"]:
        raise ScenarioError("every sensor_policy shard is empty", field="episodes")
    shapes = {a.shape[1:] for a in cols["raster"]}
    kshapes = {a.shape[1:] for a in cols["waypoints"]}
    if len(shapes) > 1 or len(kshapes) > 1:
        raise ScenarioError(f"shards disagree on raster / waypoint shapes ({sorted(shapes)}, {sorted(kshapes)})", field="episodes")
    cat = {k: np.concatenate(v) for k, v in cols.items()}
    return cat["raster"], cat["ego"], cat["waypoints"], cat["episode"], cat["weight"], [f.name for f in files]
