"""The functional core: ``reset(spec, rng) -> SimState`` and ``step(state, ego_action, rng) -> SimState``.

The env, the batch runner and notebooks all drive episodes through these functions. A
:class:`SimState` is immutable and always **batched**: every per-world array has a leading axis of B
independent worlds (B = 1 from :func:`reset`; :func:`reset_batch` makes more), so :func:`step` moves
B worlds with one set of numpy operations and no Python loop over actors or worlds.

What does not change during an episode (lane map, paths, log-replay poses, per-actor behaviour
parameters, the drivable-area raster) lives in a shared :class:`Compiled` scenario, built once by
:func:`compile_scenario` and reused across resets.

Per step (``dt_s`` seconds): the ego moves by the kinematic bicycle under the clipped action
[accel m/s^2, steer rad]; then every actor moves by its behaviour (see :mod:`sim.behavior`); then the
metrics of the step are computed for the ego: collision (oriented-box overlap) and the partner's id,
off-road (a footprint corner outside the lane areas), wrong-way (heading more than 90 degrees
from the route while within ``OFF_ROUTE_M`` of it, or from every lane under the ego's centre; see
:class:`LaneDirectionRaster`), off-route (``metrics()["off_route"]``: more than ``OFF_ROUTE_M``
beside the route),
route progress (m along the route), minimum time-to-collision (constant-velocity extrapolation
0.3..3.0 s, ``inf`` when none) and jerk (m/s^3). The episode terminates on a collision, off-road or
route completion and is truncated at the horizon.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sim.behavior import (
    BEHAVIORS,
    PathTable,
    _route_points,
    build_path_table,
    conflict_stops,
    fclip,
    idm_accel,
    path_neighbours,
    project_on_paths,
)
from sim.dynamics import BicycleState, KinematicBicycle
from sim.edits import insert, remove, reroute
from sim.errors import EpisodeStateError, ScenarioError
from sim.geometry import wrap_angle
from sim.kernels import ego_bicycle_nb, ego_flags_nb, path_motion_nb, time_to_contact_nb
from sim.map import LaneMap, Polyline
from sim.spec import InsertOp, RemoveOp, RerouteOp, ScenarioSpec
from sim.world import SceneLike, WorldState, track_speed, world_from_scene

__all__ = [
    "Compiled",
    "DrivableRaster",
    "LaneDirectionRaster",
    "SimState",
    "compile_scenario",
    "load_scene",
    "merge_rows",
    "reset",
    "reset_batch",
    "step",
]

log = logging.getLogger(__name__)

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B_ = NDArray[np.bool_]

#: behaviour kind codes used in the hot path
K_EGO, K_NONE, K_REPLAY, K_STATIC, K_CV, K_PATH = 0, 1, 2, 3, 4, 5
_KIND_CODE = {"replay": K_REPLAY, "static": K_STATIC, "constant_velocity": K_CV, "path": K_PATH}
TTC_HORIZON_S = 10.0  # s: time-to-collision beyond this is reported as inf


# ================================================================================= scene loading
def load_scene(spec: ScenarioSpec) -> SceneLike:
    """The world source of ``spec.scene``: the drive log, or (``log`` None) the synthetic town
    ``scene.town`` / ``scene.seed`` made in memory.

    The town is made at least as long as its preset's log (``loopdrive synth --town T --seed S``
    without ``--frames``: 120 frames of 0.1 s for ``small``), so every scenario whose start time
    plus horizon fits in that length runs in the same world as that log, whatever its horizon.
    Only a longer scenario gets a longer drive, whose traffic is placed for its length."""
    from sim.synth import make_scene
    from sim.synth.presets import get_preset

    sc = spec.scene
    if sc.log is not None:
        from sim.log import read_log

        return read_log(sc.log)
    default_s = (get_preset(sc.town).frames - 1) * 0.1  # the preset's frames are 10 Hz frames
    needed = round((spec.ego.start_t_s + spec.horizon_s) / spec.dt_s) + 2
    frames = max(needed, round(default_s / spec.dt_s) + 1, 2)
    return make_scene(preset=sc.town, seed=sc.seed, frames=frames, dt_s=spec.dt_s)


@dataclass(frozen=True, eq=False)
class DrivableRaster:
    """Lane areas, grown by the metrics' drivable tolerance, rasterised: ``mask[row, col]`` True
    on the road; cell (row, col) covers x in [x0 + col*res, ...), y in [y0 + row*res, ...). Metres.

    The growth (``sim.metrics.DRIVABLE_TOLERANCE_M``, 0.3 m, nuPlan's) makes the engine's off-road
    termination agree with the ``offroad`` metric: an episode is only ended for a footprint corner
    the metric also counts as off the drivable area (cells crossed by the boundary count as road,
    so the engine may end such an episode up to one cell later, never earlier)."""

    mask: B_
    x0: float
    y0: float
    res: float

    @classmethod
    def from_map(cls, lane_map: LaneMap, res: float = 0.25, margin: float = 10.0, tolerance: float | None = None) -> DrivableRaster:
        from PIL import Image, ImageDraw

        from sim.metrics import DRIVABLE_TOLERANCE_M

        tol = DRIVABLE_TOLERANCE_M if tolerance is None else float(tolerance)

        xmin, ymin, xmax, ymax = lane_map.bounds
        x0, y0 = xmin - margin, ymin - margin
        w = math.ceil((xmax - xmin + 2 * margin) / res)
        h = math.ceil((ymax - ymin + 2 * margin) / res)
        img = Image.new("L", (w, h), 0)
        dr = ImageDraw.Draw(img)
        for ln in lane_map.lanes.values():
            poly = ln.polygon.buffer(tol, join_style="mitre") if tol > 0 else ln.polygon
            for g in getattr(poly, "geoms", [poly]):
                pts = np.asarray(g.exterior.coords)
                dr.polygon([((px - x0) / res, (py - y0) / res) for px, py in pts], fill=255, outline=255)
        m = np.asarray(img) > 0
        m.setflags(write=False)
        return cls(m, x0, y0, res)

    def lookup(self, x: ArrayLike, y: ArrayLike) -> B_:
        """True where (x, y) is on the road (outside the raster = off-road)."""
        c = np.floor((np.asarray(x) - self.x0) / self.res).astype(np.int64)
        r = np.floor((np.asarray(y) - self.y0) / self.res).astype(np.int64)
        h, w = self.mask.shape
        inside = (c >= 0) & (c < w) & (r >= 0) & (r < h)
        return inside & self.mask[fclip(r, 0, h - 1), fclip(c, 0, w - 1)]


LANE_SECTORS = 16  # heading sectors of the lane-direction raster (22.5 degrees each)
OFF_ROUTE_M = 4.0  # m: the ego is off its route beyond this lateral distance from the route
#: fraction of the lane-change lateral rate kept at standstill (the rate scales with speed / 5 m/s
#: above it): a lane change blocked by a stopped car in its old lane still completes
LC_CREEP = 0.2


@dataclass(frozen=True, eq=False)
class LaneDirectionRaster:
    """Directions of travel of the lanes covering each cell: ``bits[row, col]`` has bit k set when a
    lane whose heading lies in sector k (``[k, k+1) * 2 pi / LANE_SECTORS`` rad) covers the cell
    (0 = no lane). Cells as in :class:`DrivableRaster`, metres."""

    bits: NDArray[np.uint16]
    x0: float
    y0: float
    res: float
    ok_mask: NDArray[np.uint16]  # (LANE_SECTORS,) sectors within 90 degrees of each sector

    @classmethod
    def from_map(cls, lane_map: LaneMap, res: float = 1.0, margin: float = 10.0, step: float = 0.25) -> LaneDirectionRaster:
        xmin, ymin, xmax, ymax = lane_map.bounds
        x0, y0 = xmin - margin, ymin - margin
        w = math.ceil((xmax - xmin + 2 * margin) / res)
        h = math.ceil((ymax - ymin + 2 * margin) / res)
        bits = np.zeros(h * w, dtype=np.uint16)
        for ln in lane_map.lanes.values():
            pl = ln.polyline
            if pl.length <= 0:
                continue
            ss = np.arange(0.0, pl.length + step, step)
            p, hd = pl.interpolate(np.minimum(ss, pl.length))
            offs = np.arange(-0.5 * ln.width + 0.5 * step, 0.5 * ln.width, step)
            nx, ny = -np.sin(hd), np.cos(hd)
            px = (p[:, 0:1] + offs[None, :] * nx[:, None]).ravel()
            py = (p[:, 1:2] + offs[None, :] * ny[:, None]).ravel()
            sec = np.floor(np.mod(hd, 2 * np.pi) / (2 * np.pi / LANE_SECTORS)).astype(np.int64) % LANE_SECTORS
            sec = np.repeat(sec, len(offs))
            c = np.floor((px - x0) / res).astype(np.int64)
            r = np.floor((py - y0) / res).astype(np.int64)
            ok = (c >= 0) & (c < w) & (r >= 0) & (r < h)
            np.bitwise_or.at(bits, r[ok] * w + c[ok], (np.uint16(1) << sec[ok].astype(np.uint16)))
        bits = bits.reshape(h, w)
        k = np.arange(LANE_SECTORS)
        dist = np.abs(k[:, None] - k[None, :])
        dist = np.minimum(dist, LANE_SECTORS - dist)
        ok_mask = ((dist <= LANE_SECTORS // 4).astype(np.uint16) << k[None, :].astype(np.uint16)).sum(axis=1).astype(np.uint16)
        bits.setflags(write=False)
        ok_mask.setflags(write=False)
        return cls(bits, x0, y0, res, ok_mask)

    def against(self, x: ArrayLike, y: ArrayLike, yaw: ArrayLike) -> B_:
        """True where (x, y) lies on lanes and heading ``yaw`` (rad) is more than 90 degrees (to the
        sector resolution) from every covering lane's direction of travel."""
        xa, ya = np.asarray(x), np.asarray(y)
        c = np.floor((xa - self.x0) / self.res).astype(np.int64)
        r = np.floor((ya - self.y0) / self.res).astype(np.int64)
        h, w = self.bits.shape
        inside = (c >= 0) & (c < w) & (r >= 0) & (r < h)
        b = np.where(inside, self.bits[fclip(r, 0, h - 1), fclip(c, 0, w - 1)], 0)
        sec = np.floor(np.mod(yaw, 2 * np.pi) / (2 * np.pi / LANE_SECTORS)).astype(np.int64) % LANE_SECTORS
        return (b != 0) & ((b & self.ok_mask[sec]) == 0)


# ==================================================================================== compiled
@dataclass(frozen=True, eq=False)
class Compiled:
    """A scenario compiled against its scene (shared, read-only). N = slots (ego in slot 0), H =
    horizon in steps. See the field comments for units."""

    spec: ScenarioSpec
    scene: SceneLike
    lane_map: LaneMap
    world0: WorldState  # the world at t0 after all edits
    paths: PathTable
    raster: DrivableRaster
    bicycle: KinematicBicycle
    ids: tuple[str, ...]
    cls: tuple[str, ...]
    kind: NDArray[np.int8]  # (N,) behaviour kind code
    behavior_names: tuple[str, ...]
    changes_lanes: B_  # (N,) MOBIL rows
    params: dict[str, F64]  # name -> (N,) behaviour parameters (SI units)
    length: F64
    width: F64
    height: F64
    z: F64
    spawn_step: I64  # (N,) first step at which the slot exists
    path0: I64  # (N,) initial path (ego: its route path)
    s0: F64  # (N,) initial arc length on it
    d0: F64  # (N,) initial lateral offset (m, left positive)
    replay_pose: F64  # (H+1, N, 4) x, y, z, yaw of replayed slots at each step
    replay_valid: B_  # (H+1, N)
    replay_speed: F64  # (H+1, N)
    t0_us: int
    dt_s: float
    dt_us: int
    horizon_steps: int
    ego_route: tuple[str, ...]
    route_length: float  # m along the ego route
    speed_limit_default: float
    corner_lon: F64  # (4,) ego footprint corners in the ego frame, m
    corner_lat: F64
    not_self: B_  # (N, N) ~identity
    row: dict[str, Any]  # (1, N) views of per-slot constants for the hot path
    lane_dirs: LaneDirectionRaster | None = None  # lane directions (wrong-way); None = route only

    @property
    def num_slots(self) -> int:
        return len(self.ids)


def _infer_ego_route(scene: SceneLike, lane_map: LaneMap, t0: int, t1: int) -> list[str]:
    """The lanes the logged ego drove between t0 and t1 (connected through the successor graph)."""
    tr = scene.ego
    m = (tr.t_us >= t0) & (tr.t_us <= t1)
    poses = tr.pose[m] if m.sum() >= 2 else tr.pose
    seq: list[str] = []
    for p in poses[:: max(1, len(poses) // 60)]:
        lid, _, _ = lane_map.nearest_lane(float(p[0]), float(p[1]), float(p[3]))
        if not seq or seq[-1] != lid:
            seq.append(lid)
    lid, _, _ = lane_map.nearest_lane(float(poses[-1][0]), float(poses[-1][1]), float(poses[-1][3]))
    if seq[-1] != lid:
        seq.append(lid)
    route = [seq[0]]
    for lid in seq[1:]:
        if lid == route[-1] or lid in route:
            continue
        prev = lane_map.lanes[route[-1]]
        if lid in prev.successors or lid in (prev.left, prev.right):
            route.append(lid)
            continue
        try:
            route.extend(lane_map.shortest_route(route[-1], lid)[1:])
        except ScenarioError:
            continue
    return route


def compile_scenario(spec: ScenarioSpec, scene: SceneLike | None = None, *, bicycle: KinematicBicycle | None = None) -> Compiled:
    """Build everything static about an episode: load the scene (or use ``scene``), build the world
    at the start time, apply the actor edits, resolve routes into paths, precompute log replay.

    Raises:
        ScenarioError: a bad edit, route, behaviour or time (field paths as in the scenario YAML).
    """
    if not (spec.dt_s > 0 and spec.horizon_s > 0):
        raise ScenarioError(f"expected dt_s > 0 and horizon_s > 0, got {spec.dt_s}, {spec.horizon_s}", field="dt_s")
    scene = scene if scene is not None else load_scene(spec)
    lane_map = LaneMap.from_dict(scene.map)
    dt_us = round(spec.dt_s * 1e6)
    H = round(spec.horizon_s / spec.dt_s)
    t_first = int(scene.ego.t_us[0])
    t0 = t_first + round(spec.ego.start_t_s * 1e6)
    if not (t_first <= t0 <= int(scene.ego.t_us[-1])):
        raise ScenarioError(
            f"expected a start time within the log (0 .. {(scene.ego.t_us[-1] - t_first) / 1e6:.1f} s), got {spec.ego.start_t_s}",
            field="ego.start.t_s",
        )
    cap = spec.max_actors + 1
    world = world_from_scene(scene, t0, cap, logged_behavior=spec.logged_behavior, t_end_us=t0 + H * dt_us)
    if spec.ego.start_pose is not None:
        x, y, yaw = spec.ego.start_pose
        world = world.set_slot(0, x=x, y=y, yaw=yaw)
    if spec.ego.start_speed is not None:
        world = world.set_slot(0, speed=spec.ego.start_speed)
    for i, op in enumerate(spec.actors):
        where = f"actors[{i}]"
        if isinstance(op, InsertOp):
            world = insert(world, op, lane_map, where=where)
        elif isinstance(op, RemoveOp):
            world = remove(world, op.id, where=where)
        elif isinstance(op, RerouteOp):
            world = reroute(world, op.id, op.route, op.behavior, lane_map=lane_map, where=where)
        else:
            raise ScenarioError(f"expected an insert, remove or reroute op, got {type(op).__name__}", field=where)
    # ---------------------------------------------------------------- ego route
    if spec.ego.route is not None:
        ego_route = list(spec.ego.route)
        lane_map.check_route(ego_route, where="ego.route")
    else:
        ego_route = _infer_ego_route(scene, lane_map, t0, t0 + H * dt_us)
    pts, _, _ = _route_points(lane_map, ego_route)
    route_length = Polyline(pts).length
    # ---------------------------------------------------------------- per-slot behaviour
    N = cap
    kind = np.full(N, K_NONE, dtype=np.int8)
    kind[0] = K_EGO
    names: list[str] = []
    changes = np.zeros(N, dtype=bool)
    keys: set[str] = set()
    validated: list[dict[str, float]] = []
    for i in range(N):
        b = world.behavior[i]
        names.append(b.type)
        if i == 0 or world.ids[i] == "":
            validated.append({})
            continue
        cls_ = BEHAVIORS.get(b.type)
        kind[i] = _KIND_CODE.get(cls_.kind, K_PATH)
        changes[i] = cls_.changes_lanes
        p = cls_.validate(b.params, where=f"behavior[{world.ids[i]}].params")
        validated.append(p)
        keys.update(p)
    from sim.behavior import IDM_DEFAULTS, Mobil

    base = {**Mobil.defaults, "speed": math.nan, **IDM_DEFAULTS}
    params = {k: np.array([v.get(k, base.get(k, math.nan)) for v in validated], dtype=np.float64) for k in sorted(keys | set(base))}
    # ---------------------------------------------------------------- routes -> paths
    routes: list[tuple[str, ...]] = [tuple(ego_route)]
    route_of: dict[int, int] = {0: 0}
    first_change: dict[int, bool] = {}
    for i in range(1, N):
        if kind[i] != K_PATH:
            continue
        b = world.behavior[i]
        if b.route:
            r = list(b.route)
            if len(r) >= 2 and r[1] in (lane_map.lanes[r[0]].left, lane_map.lanes[r[0]].right):
                r = r[1:]  # a first-lane change: drive the target lane with a decaying lateral offset
                first_change[i] = True
            rt = tuple(r)
        else:
            lid, _, _ = lane_map.nearest_lane(float(world.x[i]), float(world.y[i]), float(world.yaw[i]))
            rt = (lid,)
        if rt not in routes:
            routes.append(rt)
        route_of[i] = routes.index(rt)
    path_len = max(150.0, route_length + 20.0, 30.0 * spec.horizon_s + 60.0)
    paths = build_path_table(lane_map, routes, length=path_len)
    path0 = np.zeros(N, dtype=np.int64)
    s0 = np.zeros(N)
    d0 = np.zeros(N)
    for i, q in route_of.items():
        path0[i] = q
        pl = Polyline(paths.xy[q])
        s, d = pl.project([float(world.x[i]), float(world.y[i])])
        s0[i], d0[i] = float(s), float(d)
        if i > 0 and abs(d0[i]) > 4.0 and not first_change.get(i):
            log.info("actor %s starts %.1f m beside its lane path", world.ids[i], d0[i])
    # ---------------------------------------------------------------- spawn times, log replay
    spawn_step = np.zeros(N, dtype=np.int64)
    for i in range(1, N):
        if world.ids[i]:
            spawn_step[i] = max(0, math.ceil((int(world.t_spawn_us[i]) - t0) / dt_us - 1e-9))
    t_steps = t0 + np.arange(H + 1, dtype=np.int64) * dt_us
    rp = np.zeros((H + 1, N, 4))
    rv = np.zeros((H + 1, N), dtype=bool)
    rs = np.zeros((H + 1, N))
    tracks = {t.id: t for t in scene.tracks}
    for i in range(1, N):
        if kind[i] != K_REPLAY or world.ids[i] not in tracks:
            if kind[i] == K_REPLAY:  # an inserted actor replaying nothing stays put
                kind[i] = K_STATIC
            continue
        tr = tracks[world.ids[i]]
        tt = tr.t_us.astype(np.float64)
        ts = t_steps.astype(np.float64)
        yaw_u = np.unwrap(tr.pose[:, 3])
        for c in range(3):
            rp[:, i, c] = np.interp(ts, tt, tr.pose[:, c])
        rp[:, i, 3] = wrap_angle(np.interp(ts, tt, yaw_u))
        exact = np.searchsorted(tr.t_us, t_steps)
        hit = (exact < len(tr.t_us)) & (tr.t_us[np.minimum(exact, len(tr.t_us) - 1)] == t_steps)
        rp[hit, i, :] = tr.pose[exact[hit]]  # bit-exact at the log's own samples
        rv[:, i] = (t_steps >= tr.t_us[0]) & (t_steps <= tr.t_us[-1])
        rs[:, i] = 0.0 if tr.static else track_speed(tr, t_steps)
    el, ew = float(world.length[0]), float(world.width[0])
    corner_lon = np.array([0.5, -0.5, -0.5, 0.5]) * el
    corner_lat = np.array([0.5, 0.5, -0.5, -0.5]) * ew
    not_self = ~np.eye(N, dtype=bool)
    for a in (rp, rv, rs, kind, changes, path0, s0, d0, spawn_step, corner_lon, corner_lat, not_self):
        a.setflags(write=False)
    lens = {k: np.array(getattr(world, k)) for k in ("length", "width", "height", "z")}
    return Compiled(
        spec=spec,
        scene=scene,
        lane_map=lane_map,
        world0=world,
        paths=paths,
        raster=DrivableRaster.from_map(lane_map),
        lane_dirs=LaneDirectionRaster.from_map(lane_map),
        bicycle=bicycle or KinematicBicycle(wheelbase=max(1.5, 0.6 * float(world.length[0]))),
        ids=world.ids,
        cls=world.cls,
        kind=kind,
        behavior_names=tuple(names),
        changes_lanes=changes,
        params=params,
        length=lens["length"],
        width=lens["width"],
        height=lens["height"],
        z=lens["z"],
        spawn_step=spawn_step,
        path0=path0,
        s0=s0,
        d0=d0,
        replay_pose=rp,
        replay_valid=rv,
        replay_speed=rs,
        t0_us=t0,
        dt_s=dt_us * 1e-6,
        dt_us=dt_us,
        horizon_steps=H,
        ego_route=tuple(ego_route),
        route_length=route_length,
        speed_limit_default=float(np.median(paths.speed_limit)),
        corner_lon=corner_lon,
        corner_lat=corner_lat,
        not_self=not_self,
        row={
            **{f"p_{k}": v[None, :] for k, v in params.items()},
            "v0_nan": np.isnan(params["v0"])[None, :],
            "speed_nan": np.isnan(params["speed"])[None, :],
            "is_path": (kind == K_PATH)[None, :],
            "is_cv": (kind == K_CV)[None, :],
            "is_rep": (kind == K_REPLAY)[None, :],
            "path_or_ego": ((kind == K_PATH) | (kind == K_EGO))[None, :],
            "length": lens["length"][None, :],
            "width": lens["width"][None, :],
            "idm": {n: params[n][None, :] for n in ("a_max", "b_comf", "s0", "T", "delta", "decel_max")},
            "lc_rate": (3.5 / params["lane_change_time"])[None, :],
            "mobil": changes[None, :],
            "lc_check_every": np.where(changes, np.maximum(np.round(params["lc_check_s"] / (dt_us * 1e-6)), 1), 1).astype(np.int64)[None, :],
        },
    )


# ==================================================================================== sim state
@dataclass(frozen=True, eq=False)
class SimState:
    """B independent worlds at one step (arrays (B,) or (B, N), N slots with the ego in slot 0).

    Units: m, rad, m/s, m/s^2; ``t_us`` int64 microseconds. The per-step metrics describe the step
    that produced this state (zeros / ``inf`` after a reset).
    """

    compiled: Compiled
    step_index: I64  # (B,)
    t_us: I64  # (B,)
    x: F64
    y: F64
    yaw: F64
    v: F64
    accel: F64  # (B, N) acceleration of the last step
    valid: B_  # (B, N)
    alive: B_  # (B, N) False once an actor has left the map
    path_id: I64  # (B, N) path of path-following actors (ego: its route)
    s: F64  # (B, N) arc length on it (ego: route progress)
    d: F64  # (B, N) lateral offset from it, left positive
    lc_timer: F64  # (B, N) s until the next MOBIL lane change may start
    lc_hold: F64  # (B, N) s before a pending lane change starts moving sideways
    v0_scale: F64  # (B, N) seeded desired-speed factor
    steer: F64  # (B,) ego front-wheel angle
    ego_lat: F64  # (B,) ego lateral offset from the route, m
    terminated: B_
    truncated: B_
    collision: B_
    collision_partner: I64  # (B,) slot, -1 = none
    offroad: B_
    wrong_way: B_
    route_complete: B_
    progress: F64  # (B,) m along the route in the last step
    min_ttc: F64  # (B,) s
    jerk: F64  # (B,) m/s^3
    action_clipped: B_  # (B,) the last action was outside the limits

    @property
    def batch_size(self) -> int:
        return int(self.step_index.shape[0])

    @property
    def done(self) -> B_:
        return self.terminated | self.truncated

    def partner_id(self, b: int = 0) -> str | None:
        """Id of the actor the ego collided with in world ``b`` (None when no collision)."""
        j = int(self.collision_partner[b])
        return self.compiled.ids[j] if j >= 0 else None

    def world(self, b: int = 0) -> WorldState:
        """World ``b`` as a :class:`WorldState` (satisfies the renderer's ``WorldLike``)."""
        c = self.compiled
        return WorldState(
            t_us=int(self.t_us[b]),
            ids=c.ids,
            cls=c.cls,
            x=self.x[b],
            y=self.y[b],
            z=c.z,
            yaw=self.yaw[b],
            speed=self.v[b],
            length=c.length,
            width=c.width,
            height=c.height,
            valid=self.valid[b],
            t_spawn_us=c.world0.t_spawn_us,
            behavior=c.world0.behavior,
            static=c.world0.static,
        )

    def metrics(self, b: int = 0) -> dict[str, Any]:
        """The per-step metrics of world ``b`` as plain Python values."""
        return {
            "t_s": float((int(self.t_us[b]) - self.compiled.t0_us) * 1e-6),
            "collision": bool(self.collision[b]),
            "collision_partner": self.partner_id(b),
            "offroad": bool(self.offroad[b]),
            "wrong_way": bool(self.wrong_way[b]),
            "route_complete": bool(self.route_complete[b]),
            "progress_m": float(self.progress[b]),
            "route_progress_m": float(self.s[b, 0]),
            "min_ttc_s": float(self.min_ttc[b]),
            "jerk_mps3": float(self.jerk[b]),
            "speed_mps": float(self.v[b, 0]),
            "accel_mps2": float(self.accel[b, 0]),
            "lateral_offset_m": float(self.ego_lat[b]),
            "off_route": bool(abs(self.ego_lat[b]) > OFF_ROUTE_M),
        }


_ROW_FIELDS = tuple(f.name for f in dataclasses.fields(SimState) if f.name != "compiled")


def merge_rows(state: SimState, rows: B_, other: SimState) -> SimState:
    """A state whose worlds ``rows`` (B,) come from ``other`` (same compiled scenario and B)."""
    if other.compiled is not state.compiled:
        raise ValueError("merge_rows needs states of the same compiled scenario")
    ch = {}
    for name in _ROW_FIELDS:
        a, o = getattr(state, name), getattr(other, name)
        m = rows.reshape((-1,) + (1,) * (a.ndim - 1))
        ch[name] = np.where(m, o, a)
    return dataclasses.replace(state, **ch)


# ==================================================================================== reset/step
def reset_batch(compiled: Compiled, rngs: Sequence[np.random.Generator]) -> SimState:
    """B worlds at the start of the episode, world b seeded by ``rngs[b]``."""
    c = compiled
    B, N = len(rngs), c.num_slots
    w = c.world0
    paths = c.paths
    jit = c.params["v0_jitter"]
    v0s = np.stack([1.0 + jit * (2.0 * r.random(N) - 1.0) for r in rngs]) if B else np.zeros((0, N))
    x = np.tile(w.x, (B, 1))
    y = np.tile(w.y, (B, 1))
    yaw = np.tile(w.yaw, (B, 1))
    v = np.tile(w.speed, (B, 1))
    is_path = c.kind == K_PATH
    if is_path.any():
        px, py, h = paths.sample(c.path0, c.s0)
        # path followers start exactly on their path (plus the lateral offset of a pending lane change)
        d = np.where(np.abs(c.d0) > 0.75, c.d0, 0.0)
        xx = px - d * np.sin(h)
        yy = py + d * np.cos(h)
        x[:, is_path] = xx[is_path]
        y[:, is_path] = yy[is_path]
        yaw[:, is_path] = h[is_path]
    else:
        d = np.zeros(N)
    rep = c.kind == K_REPLAY
    x[:, rep] = c.replay_pose[0, rep, 0]
    y[:, rep] = c.replay_pose[0, rep, 1]
    yaw[:, rep] = c.replay_pose[0, rep, 3]
    v[:, rep] = c.replay_speed[0, rep]
    v[:, c.kind == K_STATIC] = 0.0
    valid = np.tile(w.valid & (c.spawn_step <= 0), (B, 1))
    valid[:, rep] &= c.replay_valid[0, rep]
    s = np.tile(c.s0, (B, 1))
    ego_s, ego_lat = Polyline(paths.xy[0]).project(np.stack([x[:, 0], y[:, 0]], axis=-1))
    s[:, 0] = ego_s
    hold = np.where(is_path & (np.abs(d) > 0), c.params["lane_change_after_s"], 0.0)
    zb = np.zeros(B)
    return SimState(
        compiled=c,
        step_index=np.zeros(B, dtype=np.int64),
        t_us=np.full(B, c.t0_us, dtype=np.int64),
        x=x,
        y=y,
        yaw=yaw,
        v=v,
        accel=np.zeros((B, N)),
        valid=valid,
        alive=np.tile((np.asarray([bool(i) for i in c.ids])), (B, 1)),
        path_id=np.tile(c.path0, (B, 1)),
        s=s,
        d=np.tile(d, (B, 1)),
        lc_timer=np.zeros((B, N)),
        lc_hold=np.tile(hold, (B, 1)),
        v0_scale=v0s,
        steer=zb.copy(),
        ego_lat=np.asarray(ego_lat, dtype=np.float64),
        terminated=np.zeros(B, dtype=bool),
        truncated=np.zeros(B, dtype=bool),
        collision=np.zeros(B, dtype=bool),
        collision_partner=np.full(B, -1, dtype=np.int64),
        offroad=np.zeros(B, dtype=bool),
        wrong_way=np.zeros(B, dtype=bool),
        route_complete=np.zeros(B, dtype=bool),
        progress=zb.copy(),
        min_ttc=np.full(B, np.inf),
        jerk=zb.copy(),
        action_clipped=np.zeros(B, dtype=bool),
    )


def reset(spec: ScenarioSpec | Compiled, rng: np.random.Generator, *, scene: SceneLike | None = None) -> SimState:
    """One world (B = 1) at the start of the episode described by ``spec`` (a ScenarioSpec, compiled
    on the fly, or an already :class:`Compiled` one, which is much faster)."""
    c = spec if isinstance(spec, Compiled) else compile_scenario(spec, scene)
    return reset_batch(c, [rng])


def _time_to_contact(ex: F64, ey: F64, eyaw: F64, ev: F64, el: float, ew: float, x: F64, y: F64, yaw: F64, v: F64, ln: F64, wd: F64) -> F64:
    """Earliest time t >= 0 (s) at which the ego box (B,) meets each actor box (B, N) when both keep
    their velocity (along their headings); 0 when they overlap now, ``inf`` when never.

    Exact for constant velocities: on each of the four separating axes (ego forward/left, actor
    forward/left) the projected distance is linear in t, so the boxes overlap on the intersection
    of four time intervals."""
    ce, se = np.cos(eyaw)[:, None], np.sin(eyaw)[:, None]
    ca, sa = np.cos(yaw), np.sin(yaw)
    dx, dy = x - ex[:, None], y - ey[:, None]
    evx, evy = (ev[:, None] * ce), (ev[:, None] * se)
    dvx, dvy = v * ca - evx, v * sa - evy
    cd = np.abs(ca * ce + sa * se)  # |cos(yaw - eyaw)|
    sd = np.abs(sa * ce - ca * se)  # |sin(yaw - eyaw)|
    hl, hw = 0.5 * ln, 0.5 * wd
    p0 = np.stack([dx * ce + dy * se, dy * ce - dx * se, dx * ca + dy * sa, dy * ca - dx * sa])
    pv = np.stack([dvx * ce + dvy * se, dvy * ce - dvx * se, dvx * ca + dvy * sa, dvy * ca - dvx * sa])
    r = np.stack([0.5 * el + hl * cd + hw * sd, 0.5 * ew + hl * sd + hw * cd, hl + 0.5 * el * cd + 0.5 * ew * sd, hw + 0.5 * el * sd + 0.5 * ew * cd])
    still = np.abs(pv) < 1e-9
    inv = 1.0 / np.where(still, 1.0, pv)
    t1 = (-r - p0) * inv
    t2 = (r - p0) * inv
    inside_now = np.abs(p0) <= r
    lo = np.where(still, np.where(inside_now, -np.inf, np.inf), np.minimum(t1, t2))
    hi = np.where(still, np.where(inside_now, np.inf, -np.inf), np.maximum(t1, t2))
    tlo = lo.max(axis=0)
    thi = hi.min(axis=0)
    return np.where((tlo <= thi) & (thi >= 0.0), np.maximum(tlo, 0.0), np.inf)


def step(state: SimState, ego_action: ArrayLike, rng: np.random.Generator | None = None) -> SimState:
    """Advance every world by ``dt_s``.

    Args:
        state: B worlds, none of them done.
        ego_action: (2,) or (B, 2) [accel m/s^2, steer rad]; clipped to the bicycle limits
            (``action_clipped`` says when).
        rng: the episode generator (reserved for stochastic behaviours; the built-ins are
            deterministic given the reset).

    Raises:
        EpisodeStateError: a non-finite action, or a world that is already done.
    """
    c = state.compiled
    B, N = state.x.shape
    a = np.asarray(ego_action, dtype=np.float64)
    if a.shape == (2,):
        a = np.broadcast_to(a, (B, 2))
    if a.shape != (B, 2):
        raise EpisodeStateError(f"expected an ego action of shape (2,) or ({B}, 2), got {a.shape}", field="action")
    if not np.all(np.isfinite(a)):
        raise EpisodeStateError(f"the ego action must be finite, got {a.tolist() if a.size <= 8 else 'non-finite values'}", field="action")
    if state.done.any():
        raise EpisodeStateError("the episode is over (terminated or truncated); reset before stepping again")
    dt = c.dt_s
    paths = c.paths
    k = state.step_index + 1
    kk = np.minimum(k, c.horizon_steps)
    # ------------------------------------------------------------------ ego: kinematic bicycle
    bk = c.bicycle
    if ego_bicycle_nb is not None and type(bk) is KinematicBicycle:
        lm = bk.limits
        o, clipped = ego_bicycle_nb(
            state.x[:, 0], state.y[:, 0], state.yaw[:, 0], state.v[:, 0], state.accel[:, 0], state.steer, a, dt,
            lm.decel_max, lm.accel_max, lm.jerk_max, lm.steer_max, lm.steer_rate_max, lm.speed_max, bk.wheelbase,
        )  # fmt: skip
        e1 = BicycleState(o[0], o[1], o[2], o[3], o[4], o[5])
    else:
        bs = BicycleState(state.x[:, 0], state.y[:, 0], state.yaw[:, 0], state.v[:, 0], state.accel[:, 0], state.steer)
        applied = bk.clip_action(bs, a, dt)
        clipped = np.any(np.abs(applied - a) > 1e-9, axis=-1)
        e1 = bk.forward(bs, applied, dt, clip=False)
    x = state.x.copy()
    y = state.y.copy()
    yaw = state.yaw.copy()
    v = state.v.copy()
    acc = state.accel.copy()
    x[:, 0], y[:, 0], yaw[:, 0], v[:, 0], acc[:, 0] = e1.x, e1.y, e1.yaw, e1.v, e1.accel
    jerk = (e1.accel - state.accel[:, 0]) / dt
    ego_s, ego_lat = project_on_paths(paths, np.zeros(B, dtype=np.int64), state.s[:, 0], e1.x, e1.y)
    # ------------------------------------------------------------------ actors
    spawned = (c.spawn_step[None, :] <= k[:, None]) & state.alive
    R = c.row
    path_id = state.path_id.copy()
    s = state.s.copy()
    s[:, 0] = ego_s
    d = state.d.copy()
    lc_timer = np.maximum(state.lc_timer - dt, 0.0)
    lc_hold = np.maximum(state.lc_hold - dt, 0.0)
    alive = state.alive.copy()
    t_ep = k * dt
    braking = t_ep[:, None] >= R["p_brake_at_s"]
    is_path = R["is_path"] & spawned
    if is_path.any():
        present = state.valid.copy()
        present[:, 0] = True
        props = np.empty((B, N, 6))
        props[..., 0], props[..., 1], props[..., 2], props[..., 3], props[..., 4], props[..., 5] = x, y, yaw, v, c.length, c.width
        allowed = present[:, None, :] & c.not_self[None]
        # a lane change in progress (d != 0) watches the corridor from its lane path to where it is
        gap, v_lead, _ = path_neighbours(paths, path_id, s, R["width"], props, allowed, offset=d)
        gap = gap - 0.5 * R["length"]
        stop = conflict_stops(paths, path_id, s, v, R["length"], active=present & R["path_or_ego"], can_yield=R["is_path"])
        use_stop = stop < gap
        g = np.where(use_stop, stop, gap)
        vl = np.where(use_stop, 0.0, v_lead)
        k_v = paths.vertex(path_id, s)
        lim = paths.speed_limit[path_id, k_v]
        v0 = np.where(R["v0_nan"], lim, R["p_v0"]) * state.v0_scale
        a_idm = idm_accel(v, vl, g, R["idm"], v0)
        if braking.any():  # scripted brake: brake_decel down to brake_to_speed, then hold it
            a_brake = np.where(v > R["p_brake_to_speed"] + 1e-6, -R["p_brake_decel"], 0.0)
            a_brake = np.maximum(a_brake, (R["p_brake_to_speed"] - v) / dt)
            a_idm = np.where(braking, np.minimum(a_idm, a_brake), a_idm)
        if c.changes_lanes.any():
            path_id, s, d, lc_timer = _mobil(c, state, k, path_id, s, d, lc_timer, x, y, v, props, allowed, gap, v_lead, a_idm, is_path)
        if path_motion_nb is not None:  # in place on this step's own arrays
            path_motion_nb(paths.xy, paths.heading, paths.ds, paths.end_s, path_id, is_path, a_idm, dt, R["lc_rate"][0], LC_CREEP, x, y, yaw, v, acc, s, d, lc_hold, alive)
        else:
            v1 = np.maximum(v + a_idm * dt, 0.0)
            ds_ = 0.5 * (v + v1) * dt
            s1 = s + ds_
            if d.any():
                rate = R["lc_rate"] * dt * fclip(v / 5.0, LC_CREEP, 1.0)
                d1 = np.where(lc_hold > 0, d, d - np.sign(d) * np.minimum(np.abs(d), rate))
            else:
                d1 = d
            px, py, h = paths.sample(path_id, s1)
            nx_ = px - d1 * np.sin(h)
            ny_ = py + d1 * np.cos(h)
            nyaw = wrap_angle(h + np.arctan2((d1 - d) / dt, np.maximum(v1, 1.0)))
            m = is_path
            x = np.where(m, nx_, x)
            y = np.where(m, ny_, y)
            yaw = np.where(m, nyaw, yaw)
            v = np.where(m, v1, v)
            acc = np.where(m, a_idm, acc)
            s = np.where(m, s1, s)
            d = np.where(m, d1, d)
            gone = m & (s1 > paths.end_s[path_id])
            alive &= ~gone
    is_cv = R["is_cv"] & spawned
    if is_cv.any():
        vt = np.where(R["speed_nan"], v, R["p_speed"])
        vt = np.where(braking, np.minimum(vt, R["p_brake_to_speed"]), vt)
        a_cv = fclip((vt - v) / dt, -R["p_brake_decel"], R["p_a_max"])
        v1 = np.maximum(v + a_cv * dt, 0.0)
        vm = 0.5 * (v + v1)
        x = np.where(is_cv, x + vm * np.cos(yaw) * dt, x)
        y = np.where(is_cv, y + vm * np.sin(yaw) * dt, y)
        acc = np.where(is_cv, a_cv, acc)
        v = np.where(is_cv, v1, v)
    rep = R["is_rep"]
    if rep.any():
        rp = c.replay_pose[kk]  # (B, N, 4)
        x = np.where(rep, rp[..., 0], x)
        y = np.where(rep, rp[..., 1], y)
        yaw = np.where(rep, rp[..., 3], yaw)
        v_new = c.replay_speed[kk]
        acc = np.where(rep, (v_new - v) / dt, acc)
        v = np.where(rep, v_new, v)
    valid = spawned & alive
    valid &= ~rep | c.replay_valid[kk]
    valid[:, 0] = True
    # ------------------------------------------------------------------ metrics
    others = valid.copy()
    others[:, 0] = False
    el, ew = c.length[0], c.width[0]
    if time_to_contact_nb is not None:
        t_hit = time_to_contact_nb(e1.x, e1.y, e1.yaw, e1.v, el, ew, x, y, yaw, v, c.length, c.width, others)
    else:
        t_hit = _time_to_contact(e1.x, e1.y, e1.yaw, e1.v, el, ew, x, y, yaw, v, c.length, c.width)
        t_hit = np.where(others, t_hit, np.inf)
    hit = t_hit <= 0.0
    collision = hit.any(axis=1)
    partner = np.where(collision, np.argmax(hit, axis=1), -1)
    ld = c.lane_dirs
    if ego_flags_nb is not None and ld is not None:
        ra = c.raster
        offroad, against = ego_flags_nb(ra.mask, ra.x0, ra.y0, ra.res, ld.bits, ld.x0, ld.y0, ld.res, ld.ok_mask, LANE_SECTORS, e1.x, e1.y, e1.yaw, c.corner_lon, c.corner_lat)
    else:
        ce, se = np.cos(e1.yaw), np.sin(e1.yaw)
        cx_ = e1.x[:, None] + ce[:, None] * c.corner_lon - se[:, None] * c.corner_lat
        cy_ = e1.y[:, None] + se[:, None] * c.corner_lon + ce[:, None] * c.corner_lat
        offroad = ~c.raster.lookup(cx_, cy_).all(axis=-1)
        against = ld.against(e1.x, e1.y, e1.yaw) if ld is not None else np.zeros(B, dtype=bool)
    _, _, hr = paths.sample(np.zeros(B, dtype=np.int64), ego_s)
    # against the route (while near it) or against every lane under the ego's centre
    wrong = (np.cos(e1.yaw - hr) < 0.0) & (np.abs(ego_lat) <= OFF_ROUTE_M)
    wrong |= against
    wrong &= e1.v > 0.5
    progress = ego_s - state.s[:, 0]
    complete = ego_s >= c.route_length - 0.5 * el - 1.0  # the front bumper reached the end
    ttc = t_hit.min(axis=1)
    ttc = np.where(ttc <= TTC_HORIZON_S, ttc, np.inf)
    terminated = collision | offroad | complete
    truncated = (k >= c.horizon_steps) & ~terminated
    return SimState(
        compiled=c,
        step_index=k,
        t_us=c.t0_us + k * c.dt_us,
        x=x,
        y=y,
        yaw=yaw,
        v=v,
        accel=acc,
        valid=valid,
        alive=alive,
        path_id=path_id,
        s=s,
        d=d,
        lc_timer=lc_timer,
        lc_hold=lc_hold,
        v0_scale=state.v0_scale,
        steer=e1.steer,
        ego_lat=ego_lat,
        terminated=terminated,
        truncated=truncated,
        collision=collision,
        collision_partner=partner,
        offroad=offroad,
        wrong_way=wrong,
        route_complete=complete,
        progress=progress,
        min_ttc=ttc,
        jerk=jerk,
        action_clipped=clipped,
    )


def _mobil(
    c: Compiled,
    state: SimState,
    k: I64,
    path_id: I64,
    s: F64,
    d: F64,
    lc_timer: F64,
    x: F64,
    y: F64,
    v: F64,
    props: F64,
    allowed: B_,
    gap: F64,
    v_lead: F64,
    a_cur: F64,
    is_path: B_,
) -> tuple[I64, F64, F64, F64]:
    """MOBIL lane-change decisions (vectorised over all rows; applied to the MOBIL rows due a check)."""
    P = c.params
    paths = c.paths
    B = s.shape[0]
    due = ((k[:, None] % c.row["lc_check_every"]) == 0) & c.row["mobil"]  # all MOBIL actors decide on the same steps
    if not due.any():
        return path_id, s, d, lc_timer
    due &= is_path & (lc_timer <= 0) & (np.abs(d) < 0.05)
    if not due.any():
        return path_id, s, d, lc_timer
    # evaluate only the slots (columns) due a decision in some world
    cols = np.flatnonzero(due.any(axis=0))
    due_c = due[:, cols]
    pid, sc, vc = path_id[:, cols], s[:, cols], v[:, cols]
    alw = allowed[:, cols]
    gap_c, vl_c, acur_c = gap[:, cols], v_lead[:, cols], a_cur[:, cols]
    kv = paths.vertex(pid, sc)
    lane = paths.lane[pid, kv]
    lane_s = paths.lane_s[pid, kv]
    L = np.repeat(c.length[cols][None], B, axis=0)
    W = np.repeat(c.width[cols][None], B, axis=0)
    Pc = {n: P[n][cols][None, :] for n in ("a_max", "b_comf", "s0", "T", "delta", "decel_max", "v0", "b_safe", "politeness", "threshold", "lc_cooldown")}
    scale = state.v0_scale[:, cols]
    lim_now = paths.speed_limit[pid, kv]
    v0 = np.where(np.isnan(Pc["v0"]), lim_now, Pc["v0"]) * scale
    # old follower: behind me on my path
    g_of, v_of, who_of = path_neighbours(paths, pid, sc, W, props, alw, backward=True)
    g_of = g_of - 0.5 * L
    has_of = who_of >= 0
    v_o = np.where(has_of, v_of, 0.0)
    a_o = np.where(has_of, idm_accel(v_o, vc, g_of, Pc, v0), 0.0)
    a_o_new = np.where(has_of, idm_accel(v_o, vl_c, g_of + L + gap_c, Pc, v0), 0.0)
    m = len(cols)
    best_gain = np.full((B, m), -np.inf)
    best_q = pid.copy()
    best_s = sc.copy()
    for side in (paths.left, paths.right):
        tgt = side[lane]
        ok = due_c & (tgt >= 0) & (lane_s < paths.lane_length[lane] - 15.0)
        if not ok.any():
            continue
        tl = np.maximum(tgt, 0)
        q = paths.lane_path[tl]
        ratio = paths.lane_length[tl] / np.maximum(paths.lane_length[lane], 1e-6)
        s_t = lane_s * ratio
        g_nl, v_nl, _ = path_neighbours(paths, q, s_t, W, props, alw)
        g_nl = g_nl - 0.5 * L
        g_nf, v_nf, who_nf = path_neighbours(paths, q, s_t, W, props, alw, backward=True)
        g_nf = g_nf - 0.5 * L
        lim_t = paths.speed_limit[q, paths.vertex(q, s_t)]
        v0_t = np.where(np.isnan(Pc["v0"]), lim_t, Pc["v0"]) * scale
        a_c_new = idm_accel(vc, v_nl, g_nl, Pc, v0_t)
        has_nf = who_nf >= 0
        v_n = np.where(has_nf, v_nf, 0.0)
        a_n = np.where(has_nf, idm_accel(v_n, v_nl, g_nf + L + g_nl, Pc, v0_t), 0.0)
        a_n_new = np.where(has_nf, idm_accel(v_n, vc, g_nf, Pc, v0_t), 0.0)
        safe = (a_n_new >= -Pc["b_safe"]) & (a_c_new >= -Pc["b_safe"]) & (g_nf > 0.5) & (g_nl > 0.5)
        gain = a_c_new - acur_c + Pc["politeness"] * ((a_n_new - a_n) + (a_o_new - a_o))
        take = ok & safe & (gain > Pc["threshold"]) & (gain > best_gain)
        best_gain = np.where(take, gain, best_gain)
        best_q = np.where(take, q, best_q)
        best_s = np.where(take, s_t, best_s)
    changed = np.isfinite(best_gain)
    if not changed.any():
        return path_id, s, d, lc_timer
    # lateral offset of the current position from the new path
    _, d_new = project_on_paths(paths, best_q, best_s, x[:, cols], y[:, cols])
    path_id, s, d, lc_timer = path_id.copy(), s.copy(), d.copy(), lc_timer.copy()
    path_id[:, cols] = np.where(changed, best_q, pid)
    s[:, cols] = np.where(changed, best_s, sc)
    d[:, cols] = np.where(changed, d_new, d[:, cols])
    lc_timer[:, cols] = np.where(changed, Pc["lc_cooldown"], lc_timer[:, cols])
    return path_id, s, d, lc_timer


def compile_from(scenario: ScenarioSpec | str | Path, scene: SceneLike | None = None) -> Compiled:
    """Compile a ScenarioSpec or a scenario YAML path (loaded with ``sim.scenario.load_scenario``)."""
    if isinstance(scenario, str | Path):
        from sim.scenario import load_scenario

        scenario = load_scenario(scenario)
    return compile_scenario(scenario, scene)

