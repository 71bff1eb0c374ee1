"""Compiling a scenario against its scene: everything about an episode that does not change while
it runs (:class:`Compiled`), built once by :func:`compile_scenario` and shared by every reset.

The steps: load the scene, build the world at the start time and apply the actor edits
(:mod:`sim.edits`), resolve the ego's route, validate each slot's behaviour and group the slots by
the :class:`~sim.motion.Motion` that moves them, resolve the path followers' routes into one
:class:`~sim.paths.PathTable`, precompute log replay, rasterise the lane map, and pick the ego's
:class:`~sim.dynamics.DynamicsModel`. Arrays are read-only; N = slots (ego in slot 0), H = the
horizon in steps; units SI.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sim.behavior import BEHAVIORS, IDM_DEFAULTS, Mobil
from sim.dynamics import DYNAMICS, DynamicsModel, KinematicBicycle
from sim.edits import insert, remove, reroute
from sim.engine_state import OFF_ROUTE_M
from sim.errors import ScenarioError
from sim.geometry import wrap_angle
from sim.idm import IdmArrays
from sim.kernels_ego import StepConsts, step_consts
from sim.kernels_path import path_step_args
from sim.map import LaneMap, Polyline
from sim.motion import Motion, PathMotion, ReplayMotion, StaticMotion
from sim.paths import PathTable, build_path_table, route_from_poses, route_points
from sim.rasters import LANE_SECTORS, DrivableRaster, LaneDirectionRaster
from sim.safety import TTC_SIGNAL_HORIZON_S
from sim.spec import InsertOp, RemoveOp, RerouteOp, ScenarioSpec
from sim.world import SceneLike, WorldState, track_speed, world_from_scene

__all__ = ["Compiled", "compile_scenario", "load_scene"]

log = logging.getLogger(__name__)

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B_ = NDArray[np.bool_]


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
class Compiled:
    """A scenario compiled against its scene (shared, read-only). N = slots (ego in slot 0), H =
    horizon in steps. See the field comments for units."""

    spec: ScenarioSpec
    scene: SceneLike
    lane_map: LaneMap
    world0: WorldState  # the world at t0 after all edits
    paths: PathTable
    raster: DrivableRaster
    lane_dirs: LaneDirectionRaster  # lane directions (wrong-way)
    dynamics: DynamicsModel  # moves the ego
    ids: tuple[str, ...]
    cls: tuple[str, ...]
    motions: tuple[tuple[type[Motion], B_], ...]  # each motion with its slots (1, N), slot order
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

    @property
    def num_slots(self) -> int:
        return len(self.ids)

    @property
    def bicycle(self) -> Any:
        """The ego's dynamics model (the name predates :class:`~sim.dynamics.DynamicsModel`;
        callers reading ``.limits`` / ``.wheelbase`` expect the kinematic bicycle)."""
        return self.dynamics


def _infer_ego_route(scene: SceneLike, lane_map: LaneMap, t0: int, t1: int) -> list[str]:
    """The lanes the logged ego drove between t0 and t1 (connected through the successor graph)."""
    tr = scene.ego
    m = (tr.t_us >= t0) & (tr.t_us <= t1)
    return route_from_poses(lane_map, tr.pose[m] if m.sum() >= 2 else tr.pose, end_lane=True)


def _start_world(spec: ScenarioSpec, scene: SceneLike, lane_map: LaneMap, t0: int, t_end: int) -> WorldState:
    """The world at ``t0`` (slots for ``spec.max_actors`` actors) with the ego's start and every
    actor edit of the scenario applied."""
    world = world_from_scene(scene, t0, spec.max_actors + 1, logged_behavior=spec.logged_behavior, t_end_us=t_end)
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
    return world


def _slot_behaviours(world: WorldState) -> tuple[list[type[Motion] | None], B_, dict[str, F64]]:
    """Per slot: the motion of its behaviour (None for the ego and free slots), whether it changes
    lanes (MOBIL), and the validated parameters as (N,) arrays (NaN where a behaviour lacks one)."""
    N = world.capacity
    motion: list[type[Motion] | None] = [None] * N
    changes = np.zeros(N, dtype=bool)
    keys: set[str] = set()
    validated: list[dict[str, float]] = []
    for i in range(N):
        b = world.behavior[i]
        if i == 0 or world.ids[i] == "":
            validated.append({})
            continue
        cls_ = BEHAVIORS.get(b.type)
        motion[i] = cls_.motion
        changes[i] = cls_.changes_lanes
        p = cls_.validate(b.params, where=f"behavior[{world.ids[i]}].params")
        validated.append(p)
        keys.update(p)
    base = {**Mobil.defaults, "speed": math.nan, **IDM_DEFAULTS}
    params = {k: np.array([v.get(k, base.get(k, math.nan)) for v in validated], dtype=np.float64) for k in sorted(keys | set(base))}
    return motion, changes, params


def _route_paths(world: WorldState, lane_map: LaneMap, on_path: B_, ego_route: list[str], path_len: float) -> tuple[PathTable, I64, F64, F64]:
    """The path table of the ego route (path 0) and of every path follower's route, and each
    slot's initial path, arc length and lateral offset on it (m)."""
    N = world.capacity
    routes: list[tuple[str, ...]] = [tuple(ego_route)]
    route_of: dict[int, int] = {0: 0}
    first_change: dict[int, bool] = {}
    for i in np.flatnonzero(on_path):
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
        route_of[int(i)] = routes.index(rt)
    paths = build_path_table(lane_map, routes, length=path_len)
    path0, s0, d0 = np.zeros(N, dtype=np.int64), np.zeros(N), np.zeros(N)
    for i, q in route_of.items():
        path0[i] = q
        s, d = Polyline(paths.xy[q]).project([float(world.x[i]), float(world.y[i])])
        s0[i], d0[i] = float(s), float(d)
        if i > 0 and abs(d0[i]) > 4.0 and not first_change.get(i):
            log.info("actor %s starts %.1f m beside its lane path", world.ids[i], d0[i])
    return paths, path0, s0, d0


def _replay_tables(scene: SceneLike, world: WorldState, motion: list[type[Motion] | None], t_steps: I64) -> tuple[F64, B_, F64]:
    """Pose (x, y, z, yaw), presence and speed of each replayed slot at each step (H+1, N); a
    replayed slot without a track in the log becomes static (``motion`` is updated)."""
    N = world.capacity
    rp, rv, rs = np.zeros((len(t_steps), N, 4)), np.zeros((len(t_steps), N), dtype=bool), np.zeros((len(t_steps), N))
    tracks = {t.id: t for t in scene.tracks}
    for i in range(1, N):
        if motion[i] is not ReplayMotion:
            continue
        if world.ids[i] not in tracks:  # an inserted actor replaying nothing stays put
            motion[i] = StaticMotion
            continue
        tr = tracks[world.ids[i]]
        tt, ts = tr.t_us.astype(np.float64), t_steps.astype(np.float64)
        for c in range(3):
            rp[:, i, c] = np.interp(ts, tt, tr.pose[:, c])
        rp[:, i, 3] = wrap_angle(np.interp(ts, tt, np.unwrap(tr.pose[:, 3])))
        exact = np.searchsorted(tr.t_us, t_steps)
        hit = (exact < len(tr.t_us)) & (tr.t_us[np.minimum(exact, len(tr.t_us) - 1)] == t_steps)
        rp[hit, i, :] = tr.pose[exact[hit]]  # bit-exact at the log's own samples
        rv[:, i] = (t_steps >= tr.t_us[0]) & (t_steps <= tr.t_us[-1])
        rs[:, i] = 0.0 if tr.static else track_speed(tr, t_steps)
    return rp, rv, rs


def _motion_groups(motion: list[type[Motion] | None]) -> tuple[tuple[type[Motion], B_], ...]:
    """Each motion with its slots as a (1, N) mask, in the order of their first slot."""
    order: list[type[Motion]] = []
    for m in motion:
        if m is not None and m not in order:
            order.append(m)
    groups = []
    for m in order:
        rows = np.array([x is m for x in motion])[None, :]
        rows.setflags(write=False)
        groups.append((m, rows))
    return tuple(groups)


def _row_constants(params: dict[str, F64], on_path: B_, changes: B_, lens: dict[str, F64], dt_s: float) -> dict[str, Any]:
    """(1, N) views of the per-slot constants the step reads (parameters ``p_<name>``, masks)."""
    is_ego = np.zeros_like(on_path)
    is_ego[0] = True
    return {
        **{f"p_{k}": v[None, :] for k, v in params.items()},
        "v0_nan": np.isnan(params["v0"])[None, :],
        "speed_nan": np.isnan(params["speed"])[None, :],
        "is_path": on_path[None, :],
        "path_or_ego": (on_path | is_ego)[None, :],
        "length": lens["length"][None, :],
        "width": lens["width"][None, :],
        "idm": IdmArrays(*(params[n][None, :] for n in ("a_max", "b_comf", "s0", "T", "delta", "decel_max"))),
        "lc_rate": (3.5 / params["lane_change_time"])[None, :],
        "mobil": changes[None, :],
        "lc_check_every": np.where(changes, np.maximum(np.round(params["lc_check_s"] / dt_s), 1), 1).astype(np.int64)[None, :],
    }


def _ego_move_args(model: DynamicsModel) -> tuple[float, ...] | None:
    """The limits and wheelbase :data:`sim.kernels_ego.ego_move_nb` takes when the ego's model is the
    compiled kinematic bicycle (None for any other model: the engine then calls the model)."""
    if type(model) is not KinematicBicycle or model.backend != "numba":
        return None
    lim = model.limits
    return (lim.decel_max, lim.accel_max, lim.jerk_max, lim.steer_max, lim.steer_rate_max, lim.speed_max, model.wheelbase)


def _fused_step(row: dict[str, Any], groups: tuple[tuple[type[Motion], B_], ...], rp: F64, rv: B_, rs: F64, spawn_step: I64, lens: dict[str, F64], t0: int, dt_us: int, H: int) -> StepConsts | None:
    """The packed constants of :data:`sim.kernels_ego.engine_step_nb` when a step can be that one
    call (the compiled kinematic bicycle, and only the path, replay and static motions), else None."""
    motions = {m: rows[0] for m, rows in groups}
    if row["ego_move"] is None or not set(motions) <= {PathMotion, ReplayMotion, StaticMotion}:
        return None
    none = np.zeros(len(spawn_step), dtype=bool)
    path_rows, replay_rows = motions.get(PathMotion, none), motions.get(ReplayMotion, none)
    return step_consts(
        row["ego_move"], row["path_step"], row["ego_metrics"], (rp, rv, rs, replay_rows), (spawn_step, lens["length"], lens["width"], path_rows),
        (dt_us * 1e-6, t0, dt_us, H, TTC_SIGNAL_HORIZON_S), (bool(path_rows.any()), bool(replay_rows.any())),
    )  # fmt: skip


def compile_scenario(spec: ScenarioSpec, scene: SceneLike | None = None, *, dynamics: DynamicsModel | str | None = None) -> Compiled:
    """Build everything static about an episode: load the scene (or use ``scene``), build the world
    at the start time, apply the actor edits, resolve routes into paths, precompute log replay.
    ``dynamics``: the ego's model, or a :data:`sim.dynamics.DYNAMICS` name (default the kinematic
    bicycle sized for the ego).

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
    world = _start_world(spec, scene, lane_map, t0, t0 + H * dt_us)
    if spec.ego.route is not None:
        ego_route = list(spec.ego.route)
        lane_map.check_route(ego_route, where="ego.route")
    else:
        ego_route = _infer_ego_route(scene, lane_map, t0, t0 + H * dt_us)
    route_length = Polyline(route_points(lane_map, ego_route).xy).length
    motion, changes, params = _slot_behaviours(world)
    on_path = np.array([m is PathMotion for m in motion])
    path_len = max(150.0, route_length + 20.0, 30.0 * spec.horizon_s + 60.0)
    paths, path0, s0, d0 = _route_paths(world, lane_map, on_path, ego_route, path_len)
    t_steps = t0 + np.arange(H + 1, dtype=np.int64) * dt_us
    rp, rv, rs = _replay_tables(scene, world, motion, t_steps)
    spawn_step = np.zeros(world.capacity, dtype=np.int64)
    for i in range(1, world.capacity):
        if world.ids[i]:
            spawn_step[i] = max(0, math.ceil((int(world.t_spawn_us[i]) - t0) / dt_us - 1e-9))
    el, ew = float(world.length[0]), float(world.width[0])
    corner_lon = np.array([0.5, -0.5, -0.5, 0.5]) * el
    corner_lat = np.array([0.5, 0.5, -0.5, -0.5]) * ew
    not_self = ~np.eye(world.capacity, dtype=bool)
    lens = {k: np.array(getattr(world, k)) for k in ("length", "width", "height", "z")}
    for a in (rp, rv, rs, on_path, changes, path0, s0, d0, spawn_step, corner_lon, corner_lat, not_self, *params.values(), *lens.values()):
        a.setflags(write=False)
    model = dynamics if dynamics is not None and not isinstance(dynamics, str) else DYNAMICS.get(dynamics or "kinematic_bicycle")(el)
    row = _row_constants(params, on_path, changes, lens, dt_us * 1e-6)
    row["path_step"] = path_step_args(paths, params, lens["length"], lens["width"], row)
    raster, lane_dirs = DrivableRaster.from_map(lane_map), LaneDirectionRaster.from_map(lane_map)
    row["ego_move"] = _ego_move_args(model)
    row["route_polyline"] = Polyline(paths.xy[0])  # the route (path 0), for placing the ego at a reset
    row["ego_metrics"] = (
        raster.mask, raster.x0, raster.y0, raster.res, lane_dirs.bits, lane_dirs.x0, lane_dirs.y0, lane_dirs.res, lane_dirs.ok_mask, LANE_SECTORS,
        corner_lon, corner_lat, np.ascontiguousarray(paths.heading[0]), paths.ds, OFF_ROUTE_M, route_length - 0.5 * lens["length"][0] - 1.0,
    )  # fmt: skip
    groups = _motion_groups(motion)
    row["engine_step"] = _fused_step(row, groups, rp, rv, rs, spawn_step, lens, t0, dt_us, H)
    return Compiled(
        spec=spec, scene=scene, lane_map=lane_map, world0=world, paths=paths,
        raster=raster, lane_dirs=lane_dirs, dynamics=model,
        ids=world.ids, cls=world.cls, motions=groups, behavior_names=world.behavior_names,
        changes_lanes=changes, params=params, length=lens["length"], width=lens["width"], height=lens["height"], z=lens["z"],
        spawn_step=spawn_step, path0=path0, s0=s0, d0=d0, replay_pose=rp, replay_valid=rv, replay_speed=rs,
        t0_us=t0, dt_s=dt_us * 1e-6, dt_us=dt_us, horizon_steps=H, ego_route=tuple(ego_route), route_length=route_length,
        speed_limit_default=float(np.median(paths.speed_limit)), corner_lon=corner_lon, corner_lat=corner_lat,
        not_self=not_self, row=row,
    )  # fmt: skip
