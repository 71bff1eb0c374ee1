"""The synthetic town scene: road network, lane map, ego drive and actor tracks from a seed.

:func:`make_scene` is render-free and fast (well under a second for ``tiny``); the static town
meshes are built lazily by :meth:`SynthScene.static_town` (see :mod:`sim.synth.town_mesh`).

Randomness: one :class:`numpy.random.SeedSequence` per scene is split into independent streams
(network, props, traffic, textures), so the same ``(preset, seed)`` gives the same town whatever the
number of frames, and the town's static part never depends on ``frames``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from sim.errors import ScenarioError
from sim.log import Track
from sim.render.base import ArrayWorld
from sim.synth.network import TownNetwork, build_network
from sim.synth.presets import TownPreset, get_preset
from sim.synth.traffic import Agent, agent_track, build_path, pedestrian_path, simulate_traffic

if TYPE_CHECKING:
    from sim.synth.town_mesh import StaticTown

__all__ = ["EGO_SIZE", "SynthScene", "make_scene"]

EGO_SIZE = (4.6, 1.9, 1.6)

# stream indices of the scene's SeedSequence
_S_NETWORK, _S_PROPS, _S_TRAFFIC, _S_TEXTURES = range(4)


def world_from_tracks(ego: Track, tracks: tuple[Track, ...], t_us: int) -> ArrayWorld:
    """Snapshot of the ego and every track at ``t_us`` (tracks not alive then are invalid rows)."""
    all_tracks = (ego, *tracks)
    n = len(all_tracks)
    pose = np.zeros((n, 4))
    valid = np.zeros(n, dtype=bool)
    for i, tr in enumerate(all_tracks):
        p = tr.pose_at(int(t_us))
        if p is not None:
            pose[i] = p
            valid[i] = True
    size = np.array([tr.size for tr in all_tracks], dtype=np.float64)
    return ArrayWorld(
        int(t_us),
        tuple(tr.id for tr in all_tracks),
        tuple(tr.cls for tr in all_tracks),
        pose[:, 0].copy(), pose[:, 1].copy(), pose[:, 2].copy(), pose[:, 3].copy(),
        size[:, 0].copy(), size[:, 1].copy(), size[:, 2].copy(),
        valid,
    )


@dataclass(frozen=True, eq=False)
class SynthScene:
    """A procedural town with its ground-truth drive.

    Attributes:
        preset, seed: what made it (``make_scene(preset, seed)`` rebuilds the same static town).
        dt_s: frame period, seconds.
        t_us: (T,) int64 frame times, microseconds from 0.
        map: the ``map.json`` dictionary (lanes, crosswalks, intersections).
        ego: the ego track (id ``"ego"``, class ``car``), one sample per frame.
        tracks: actor tracks: moving vehicles, cyclists, pedestrians and parked cars
            (``static=True``); a vehicle that drives off the map ends early.
        ego_route: lane ids the ego follows (includes a turn; consecutive neighbours = lane change).
        routes: actor id -> lane ids it follows (moving vehicles and cyclists only).
        network: the road geometry the meshes and props are built from.
    """

    preset: str
    seed: int
    dt_s: float
    t_us: NDArray[np.int64]
    map: dict[str, Any]
    ego: Track
    tracks: tuple[Track, ...]
    ego_route: tuple[str, ...]
    routes: Mapping[str, tuple[str, ...]]
    network: TownNetwork = field(repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def frames(self) -> int:
        return len(self.t_us)

    @property
    def town(self) -> TownPreset:
        return get_preset(self.preset)

    def seed_stream(self, which: int) -> np.random.Generator:
        """A fresh generator of one of the scene's independent random streams."""
        return np.random.default_rng(np.random.SeedSequence(self.seed).spawn(4)[which])

    def static_town(self) -> StaticTown:
        """The static town meshes (roads, markings, sidewalks, grass, buildings, props), built once
        per scene and cached; depends only on ``(preset, seed)``."""
        if "static" not in self._cache:
            from sim.synth.town_mesh import build_static_town

            self._cache["static"] = build_static_town(self.network, self.town, self.seed_stream(_S_PROPS), self.seed_stream(_S_TEXTURES))
        return self._cache["static"]

    def world_at(self, t_us: int) -> ArrayWorld:
        """The logged world at ``t_us`` (row 0 the ego)."""
        return world_from_tracks(self.ego, self.tracks, t_us)

    def lane_map(self) -> Any:
        """The lane map as a :class:`sim.map.LaneMap`."""
        from sim.map import LaneMap

        return LaneMap.from_dict(self.map)


def _vehicle_kind(rng: np.random.Generator) -> tuple[str, tuple[float, float, float]]:
    u = rng.uniform()
    if u < 0.78:
        return "car", (round(rng.uniform(4.1, 4.9), 2), round(rng.uniform(1.75, 1.95), 2), round(rng.uniform(1.42, 1.7), 2))
    if u < 0.92:
        return "truck", (round(rng.uniform(6.0, 8.0), 2), round(rng.uniform(2.2, 2.45), 2), round(rng.uniform(2.6, 3.3), 2))
    return "bus", (round(rng.uniform(10.0, 12.0), 2), round(rng.uniform(2.45, 2.55), 2), round(rng.uniform(2.9, 3.2), 2))


def _extend(net: TownNetwork, route: list[str], min_len: float, rng: np.random.Generator) -> list[str]:
    by_id = net.lane_by_id
    total = sum(_lane_len(by_id[r].pts) for r in route)
    while total < min_len:
        succ = by_id[route[-1]].successors
        if not succ:
            break
        nxt = succ[int(rng.integers(len(succ)))]
        route.append(nxt)
        total += _lane_len(by_id[nxt].pts)
    return route


def _lane_len(pts: NDArray[np.float64]) -> float:
    return float(np.sum(np.linalg.norm(np.diff(pts, axis=0), axis=1)))


def _check_scene_args(frames: Any, dt_s: Any, seed: Any) -> None:
    """Refuse a non-positive frame count or frame period and a negative or non-integer seed."""
    if isinstance(frames, bool) or not isinstance(frames, int | np.integer) or frames < 1:
        raise ScenarioError(f"expected a positive number of frames, got {frames!r}", field="frames")
    if not (isinstance(dt_s, int | float) and math.isfinite(dt_s) and dt_s > 0):
        raise ScenarioError(f"expected a positive frame period in seconds, got {dt_s!r}", field="dt_s")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ScenarioError(f"expected a non-negative integer seed, got {seed!r}", field="seed")


def _ego_agent(net: TownNetwork, town: TownPreset, rng: np.random.Generator, duration: float) -> tuple[Agent, list[str]]:
    """The ego: eastbound on the main road's west arm, turning (left or right, drawn) at the first
    intersection, with a lane change first when the preset asks for one. Returns it and its route."""
    by_id = net.lane_by_id
    main_row = town.grid[1] // 2
    west = next(r for r in net.roads if r.main and r.node_a is None and r.node_b == main_row * town.grid[0])
    fwd = [ln for ln in net.lanes if ln.kind == "road" and ln.road == west.id and ln.pts[-1][0] > ln.pts[0][0]]
    fwd.sort(key=lambda ln: -ln.pts[0][1])  # inner (northmost) first for eastbound traffic
    turn = "left" if rng.uniform() < 0.5 else "right"
    turn_lane = fwd[0] if turn == "left" else fwd[-1]
    other = fwd[-1] if turn == "left" else fwd[0]
    conn = next(by_id[c] for c in turn_lane.successors if by_id[c].turn == turn)
    route = [turn_lane.id, conn.id]
    start_lane = turn_lane
    if town.ego_lane_change and other.id != turn_lane.id:
        route = [other.id, *route]
        start_lane = other
    ego_speed0 = 5.0 if town.name == "tiny" else 8.0
    route = _extend(net, route, town.ego_start_m + ego_speed0 * duration * 1.6 + 60.0, rng)
    start_s = max(0.0, _lane_len(start_lane.pts) - town.ego_start_m)
    ego_path = build_path(net, route, start_s=start_s, factor=0.92)
    return Agent("ego", "car", EGO_SIZE, ego_path, 0.0, ego_speed0, ego=True, a_max=1.3), route


class _Cast:
    """The agents placed so far (the ego first), their routes and the next free actor id."""

    def __init__(self, ego: Agent) -> None:
        self.ego = ego
        self.agents: list[Agent] = [ego]
        self.routes: dict[str, tuple[str, ...]] = {}
        self.next_id = 1

    def new_id(self) -> str:
        """The next actor id ("1", "2", ...)."""
        aid = str(self.next_id)
        self.next_id += 1
        return aid

    def add(self, agent: Agent, route: list[str] | None = None) -> None:
        """Place ``agent`` (with the lane ids it follows, for vehicles and cyclists)."""
        self.agents.append(agent)
        if route is not None:
            self.routes[agent.id] = tuple(route)

    def clear_of(self, xy: NDArray[np.float64], min_d: float) -> bool:
        """Whether ``xy`` (m) is at least ``min_d`` from every placed agent and off the road right
        in front of the ego (kept free at the start)."""
        for a in self.agents:
            x, y, _ = a.path.at(a.s, a.lateral)
            if math.hypot(xy[0] - x, xy[1] - y) < min_d:
                return False
        s_e, d_e = self.ego.path.project(np.asarray(xy, dtype=np.float64)[None], 0.0, 35.0)
        return not (-8.0 < s_e[0] < 35.0 and abs(d_e[0]) < 2.5)


def _place_vehicles(net: TownNetwork, town: TownPreset, rng: np.random.Generator, duration: float, cast: _Cast) -> None:
    """Moving vehicles on random road lanes, placed so they reach an intersection during the log
    (at most 200 attempts for ``town.moving_cars``)."""
    road_lanes = [ln for ln in net.lanes if ln.kind == "road" and ln.successors]
    tries = placed = 0
    while placed < town.moving_cars and tries < 200:
        tries += 1
        ln = road_lanes[int(rng.integers(len(road_lanes)))]
        length = _lane_len(ln.pts)
        cls, size = _vehicle_kind(rng)
        factor = float(rng.uniform(0.8, 1.0))
        v0 = ln.speed_limit * factor * float(rng.uniform(0.6, 1.0))
        lo = max(size[0] / 2 + 1.0, length - v0 * duration * 0.8 - 10.0)
        hi = length - size[0] / 2 - 2.0
        if hi <= lo:
            continue
        s0 = float(rng.uniform(lo, hi))
        x, y, _ = build_path(net, [ln.id]).at(s0)
        if not cast.clear_of(np.array([x, y]), 9.0 + size[0] / 2):
            continue
        r = _extend(net, [ln.id], s0 + v0 * duration * 1.5 + 40.0, rng)
        path = build_path(net, r, start_s=s0, factor=factor)
        cast.add(Agent(cast.new_id(), cls, size, path, 0.0, v0, a_max=float(rng.uniform(1.2, 2.0))), r)
        placed += 1


def _place_cyclists(net: TownNetwork, town: TownPreset, rng: np.random.Generator, duration: float, cast: _Cast) -> None:
    """Cyclists at the right edge of a rightmost lane (50 attempts each)."""
    right_lanes = [ln for ln in net.lanes if ln.kind == "road" and ln.successors and ln.right is None]
    for _ in range(town.cyclists):
        for _try in range(50):
            ln = right_lanes[int(rng.integers(len(right_lanes)))]
            length = _lane_len(ln.pts)
            v0 = float(rng.uniform(3.8, 5.2))
            lo, hi = max(2.0, length - v0 * duration - 15.0), length - 3.0
            if hi <= lo:
                continue
            s0 = float(rng.uniform(lo, hi))
            lateral = -(ln.width / 2 - 0.6)
            x, y, _ = build_path(net, [ln.id]).at(s0, lateral)
            if not cast.clear_of(np.array([x, y]), 8.0):
                continue
            r = _extend(net, [ln.id], s0 + v0 * duration * 1.5 + 40.0, rng)
            path = build_path(net, r, start_s=s0, factor=1.0)
            path.vmax[:] = np.minimum(path.vmax, v0)
            cast.add(Agent(cast.new_id(), "cyclist", (1.8, 0.65, 1.75), path, 0.0, v0, lateral=lateral, a_max=1.0), r)
            break


def _place_pedestrians(net: TownNetwork, town: TownPreset, rng: np.random.Generator, duration: float, cast: _Cast) -> None:
    """Pedestrians that walk to a zebra, cross it and walk on: different zebras first; those
    sharing one keep apart (0.8 m either side of the band's middle)."""
    from shapely.geometry import Polygon

    n_cw = len(net.crosswalks)
    cw_order = rng.permutation(n_cw)
    for k in range(town.pedestrians):
        v = float(rng.uniform(1.2, 1.5))
        cw = int(cw_order[k % n_cw])
        lead = max(1.0, v * duration * float(rng.uniform(0.1, 0.45)))
        offset = (-0.8, 0.8)[(k // n_cw) % 2] if k >= n_cw else 0.0
        path, crossing = pedestrian_path(net, cw, bool(rng.uniform() < 0.5), lead, 12.0, offset)
        path.vmax[:] = v
        aid = cast.new_id()
        size = (round(float(rng.uniform(0.45, 0.6)), 2), round(float(rng.uniform(0.5, 0.65)), 2), round(float(rng.uniform(1.6, 1.9)), 2))
        cast.add(Agent(aid, "pedestrian", size, path, 0.0, v, pedestrian=True, crossing=crossing,
                       crosswalk=Polygon(net.crosswalks[cw][1]), cw_index=cw))


def _parked_tracks(net: TownNetwork, town: TownPreset, rng: np.random.Generator, t_us: NDArray[np.int64], cast: _Cast) -> list[Track]:
    """Static tracks of the cars (and a few vans) parked in a ``town.parked_fraction`` of the slots."""
    parked: list[Track] = []
    for slot in net.parking:
        if rng.uniform() >= town.parked_fraction:
            continue
        cls, size = ("car", (round(rng.uniform(4.0, 4.8), 2), round(rng.uniform(1.72, 1.9), 2), round(rng.uniform(1.4, 1.65), 2)))
        if rng.uniform() < 0.12:
            cls, size = "truck", (round(rng.uniform(5.2, 5.8), 2), round(rng.uniform(2.0, 2.1), 2), round(rng.uniform(2.2, 2.6), 2))
        yaw = slot.yaw + float(rng.normal(0.0, 0.02))
        pose = np.tile([slot.x + rng.normal(0, 0.1), slot.y + rng.normal(0, 0.1), 0.0, yaw], (len(t_us), 1))
        parked.append(Track(cast.new_id(), cls, size, t_us.copy(), pose, static=True))
    return parked


def make_scene(preset: str = "tiny", seed: int = 0, frames: int | None = None, dt_s: float = 0.1) -> SynthScene:
    """Build a synthetic town and its ground-truth drive (no rendering).

    Args:
        preset: ``tiny`` (tests: one intersection, short roads, 30 frames), ``small`` (demo: one
            intersection, longer roads, 120 frames) or ``large`` (2x2 intersections, 300 frames).
        seed: the town and traffic seed; the same ``(preset, seed, frames, dt_s)`` gives an
            identical scene.
        frames: number of frames (default: the preset's).
        dt_s: frame period in seconds (0.1 = 10 Hz).

    Raises:
        ScenarioError: unknown preset (naming the known ones), ``frames`` < 1, ``dt_s`` <= 0.
    """
    town = get_preset(preset)
    frames = town.frames if frames is None else frames
    _check_scene_args(frames, dt_s, seed)
    frames, seed = int(frames), int(seed)
    streams = np.random.SeedSequence(seed).spawn(4)
    net = build_network(town, np.random.default_rng(streams[_S_NETWORK]))
    rng = np.random.default_rng(streams[_S_TRAFFIC])
    t_us = np.arange(frames, dtype=np.int64) * round(dt_s * 1e6)
    duration = (frames - 1) * dt_s
    ego, route = _ego_agent(net, town, rng, duration)
    cast = _Cast(ego)
    _place_vehicles(net, town, rng, duration, cast)
    _place_cyclists(net, town, rng, duration, cast)
    _place_pedestrians(net, town, rng, duration, cast)
    simulate_traffic(net, cast.agents, t_us, dt_s)
    parked = _parked_tracks(net, town, rng, t_us, cast)
    tracks = tuple(agent_track(a) for a in cast.agents[1:]) + tuple(parked)
    return SynthScene(
        preset=town.name,
        seed=seed,
        dt_s=float(dt_s),
        t_us=t_us,
        map=net.map_dict(),
        ego=agent_track(ego),
        tracks=tracks,
        ego_route=tuple(route),
        routes=MappingProxyType(cast.routes),
        network=net,
    )
