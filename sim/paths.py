"""Lane paths: the routes actors and the ego drive, resampled into one shared table, and the
vectorised queries on it (projection, the nearest actor ahead or behind, intersection yielding).

A **path** is a lane route extended straight on and resampled every ``ds`` metres into a
:class:`PathTable` shared by all actors and all batched worlds. An actor on a path is (path id, arc
length ``s``, lateral offset ``d``); a lane change switches to the neighbour lane's path and lets
``d`` decay to zero. :func:`route_points` is the one place where a route's lane changes are
blended into a drivable centreline (the engine's paths and the planners' reference line).

Interaction rules (all vectorised; compiled in :mod:`sim.kernels`):

* **Car following** (:func:`path_neighbours`): the leader of an actor is the nearest other actor
  (the ego included) whose box lies on the actor's path ahead: along the path's window of
  ``window + 1`` vertices, then straight on beyond it (:mod:`sim.kernels_neighbours`).
  IDM (:mod:`sim.idm`) then never lets a follower drive through it. During a lane change the
  watched corridor spans from the new lane's path to the actor's current lateral offset, so a car
  still partly in its old lane keeps following the car ahead there.
* **Intersections** (conflict points, :func:`lane_conflicts`): where two lanes' centrelines cross
  or merge, actors approaching the point on different lanes are ordered first-come-first-served by
  their time of arrival (``distance / max(speed, 1 m/s)``; an actor already inside the conflict
  zone comes first); every later actor stops ``l/2 + 4 m`` before the point until it is clear.
  An actor that can no longer stop before its stop line is committed and keeps going; of two
  committed actors, the later one brakes for the conflict point itself. Centrelines passing
  within 2 m of each other without crossing (opposing left turns) meet at a conflict point too.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
import shapely.ops
from numpy.typing import NDArray
from shapely.geometry import LineString

from sim.errors import ScenarioError
from sim.geometry import fclip
from sim.kernels import conflict_stops_nb, path_neighbours_nb, project_nb
from sim.kernels_neighbours import GRID_MIN_ACTORS
from sim.map import LaneMap, Polyline

__all__ = [
    "PathTable",
    "RoutePoints",
    "build_path_table",
    "conflict_stops",
    "lane_conflicts",
    "path_neighbours",
    "project_on_paths",
    "route_from_poses",
    "route_points",
    "straight_continuation",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

#: m over which the engine's paths blend a lane change (the planners' reference line uses 20 m)
PATH_BLEND_M = 25.0


def straight_continuation(lane_map: LaneMap, route: Sequence[str], min_length: float) -> list[str]:
    """Extend ``route`` with the straightest successor until it is ``min_length`` metres long or
    reaches a dead end."""
    out = list(route)
    total = sum(lane_map.lanes[r].length for r in out)
    while total < min_length:
        ln = lane_map.lanes[out[-1]]
        if not ln.successors:
            break
        h_end = float(ln.polyline.seg_yaw[-1])
        best = min(
            ln.successors,
            key=lambda s: (abs(math.remainder(float(lane_map.lanes[s].polyline.seg_yaw[-1]) - h_end, 2 * math.pi)), s),
        )
        out.append(best)
        total += lane_map.lanes[best].length
        if len(out) > 200:
            break
    return out


def route_from_poses(lane_map: LaneMap, poses: NDArray[np.float64], *, end_lane: bool = True) -> list[str]:
    """The lane route a logged drive took: the nearest lane (heading-aware) of about 60 of the poses
    (T, 4) (x, y, z, yaw), in order, joined through successors and same-direction neighbours (the
    shortest successor route bridges a gap; a lane that cannot be reached is skipped). With
    ``end_lane`` the last pose's lane is included too."""
    seq: list[str] = []
    for p in poses[:: max(1, len(poses) // 60)]:
        lid, _, _ = lane_map.nearest_lane(float(p[0]), float(p[1]), float(p[3]))
        if not seq or seq[-1] != lid:
            seq.append(lid)
    if end_lane:
        lid, _, _ = lane_map.nearest_lane(float(poses[-1][0]), float(poses[-1][1]), float(poses[-1][3]))
        if seq[-1] != lid:
            seq.append(lid)
    route = [seq[0]]
    for lid in seq[1:]:
        if lid in route:
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


def lane_conflicts(lane_map: LaneMap, near_m: float = 2.0) -> list[tuple[str, float, str, float]]:
    """Points where two lanes' centrelines cross or merge, or pass within ``near_m`` metres of each
    other away from their ends: ``(lane_a, s_a, lane_b, s_b)`` with arc lengths (m) on each.
    Diverging lanes (a shared start), consecutive lanes and same-direction neighbours do not
    conflict."""
    ids = lane_map.lane_ids
    lines = [LineString(lane_map.lanes[i].centerline) for i in ids]
    tree = shapely.STRtree(lines)
    out: list[tuple[str, float, str, float]] = []
    for ia, ib in zip(*tree.query(lines, predicate="intersects"), strict=True):
        if ia >= ib:
            continue
        a, b = lane_map.lanes[ids[ia]], lane_map.lanes[ids[ib]]
        if b.id in a.successors or a.id in b.successors or b.id in (a.left, a.right):
            continue
        inter = lines[ia].intersection(lines[ib])
        pts: list[tuple[float, float]] = []
        for g in getattr(inter, "geoms", [inter]):
            if g.is_empty:
                continue
            if g.geom_type == "Point":
                pts.append((g.x, g.y))
            else:  # overlapping collinear pieces: use their first point
                c = np.asarray(g.coords)
                pts.append((float(c[0, 0]), float(c[0, 1])))
        for px, py in pts:
            sa = float(a.polyline.project([px, py])[0])
            sb = float(b.polyline.project([px, py])[0])
            if sa < 0.5 and sb < 0.5:  # diverge: same start point
                continue
            out.append((a.id, sa, b.id, sb))
    # near misses: centrelines that pass closer than ``near_m`` without touching (e.g. opposing
    # left turns) put two cars side by side in one place; their closest approach is a conflict
    # point too (unless it is at an end of either lane: lanes meeting a junction's edge)
    for ia, ib in zip(*tree.query(lines, predicate="dwithin", distance=near_m), strict=True):
        if ia >= ib or lines[ia].intersects(lines[ib]):
            continue
        a, b = lane_map.lanes[ids[ia]], lane_map.lanes[ids[ib]]
        if b.id in a.successors or a.id in b.successors or b.id in (a.left, a.right):
            continue
        pa, pb = shapely.ops.nearest_points(lines[ia], lines[ib])
        sa = float(a.polyline.project([pa.x, pa.y])[0])
        sb = float(b.polyline.project([pb.x, pb.y])[0])
        if min(sa, a.length - sa, sb, b.length - sb) < 0.5:
            continue
        out.append((a.id, sa, b.id, sb))
    return out


@dataclass(frozen=True, eq=False)
class PathTable:
    """Lane paths resampled every ``ds`` metres (shared, read-only).

    Attributes:
        ds: vertex spacing, m.
        xy: (Q, P, 2) vertex positions, world m (extrapolated straight beyond ``end_s``).
        heading: (Q, P) direction of travel at each vertex, rad (unwrapped along the path).
        lane: (Q, P) index into ``lane_ids`` of the lane each vertex lies on.
        lane_s: (Q, P) arc length of the vertex within that lane, m.
        speed_limit: (Q, P) m/s.
        end_s: (Q,) length of the real path, m.
        conf_s, conf_id, conf_lane: (Q, C) conflict points along each path sorted by s
            (``inf`` / -1 padding), their global conflict id and the path's lane there.
        lane_path: (n_lanes,) path starting at each lane (its straight continuation), for lane changes.
        left, right: (n_lanes,) lane index of the same-direction neighbour, -1 if none.
        lane_length: (n_lanes,) m.
        routes: the lane ids of each path.
    """

    ds: float
    xy: F64
    heading: F64
    lane: I64
    lane_s: F64
    speed_limit: F64
    end_s: F64
    conf_s: F64
    conf_id: I64
    conf_lane: I64
    lane_path: I64
    left: I64
    right: I64
    lane_length: F64
    lane_ids: tuple[str, ...]
    routes: tuple[tuple[str, ...], ...]

    @property
    def num_vertices(self) -> int:
        return int(self.xy.shape[1])

    @functools.cached_property
    def n_conflicts(self) -> int:
        """Number of distinct conflict ids (max id + 1, at least 1)."""
        return max(1, int(self.conf_id.max()) + 1)

    def sample(self, path_id: I64, s: F64) -> tuple[F64, F64, F64]:
        """Position (x, y) and heading at arc length ``s`` on paths ``path_id`` (same shapes)."""
        u = fclip(s / self.ds, 0.0, self.num_vertices - 1.000001)
        k = u.astype(np.int64)
        f = u - k
        p0 = self.xy[path_id, k]
        p1 = self.xy[path_id, k + 1]
        h0 = self.heading[path_id, k]
        h1 = self.heading[path_id, k + 1]
        x = p0[..., 0] + f * (p1[..., 0] - p0[..., 0])
        y = p0[..., 1] + f * (p1[..., 1] - p0[..., 1])
        return x, y, h0 + f * (h1 - h0)

    def vertex(self, path_id: I64, s: F64) -> I64:
        """Index of the vertex at or before ``s``."""
        return fclip((s / self.ds).astype(np.int64), 0, self.num_vertices - 1)


@dataclass(frozen=True)
class RoutePoints:
    """A lane route as one polyline: ``xy`` (P, 2) world m, the speed limit (P,) m/s of the lane
    each point belongs to, and per lane piece the arc length where it starts (m) and its lane id
    (a blended lane change is one piece named after the target lane)."""

    xy: F64
    speed_limit: F64
    starts: list[float]
    names: list[str]


def route_points(lane_map: LaneMap, route: Sequence[str], blend: float = PATH_BLEND_M) -> RoutePoints:
    """The centreline of a lane route. A step to a same-direction neighbour (a lane change) is
    blended smoothly (raised cosine) over ``blend`` metres of the pair, starting where the route
    so far ended (projected on the old lane) and using at most 80 % of what is left of it."""
    pts: list[F64] = []
    lim: list[F64] = []
    starts: list[float] = []
    names: list[str] = []
    s_total = 0.0
    i = 0
    r = list(route)
    while i < len(r):
        ln = lane_map.lanes[r[i]]
        c = np.asarray(ln.centerline, np.float64)
        if i + 1 < len(r) and r[i + 1] in (ln.left, ln.right) and r[i + 1] not in ln.successors:
            nb = lane_map.lanes[r[i + 1]]
            c = _blend_change(ln.polyline, nb.polyline, nb.centerline, pts[-1][-1] if pts else None, blend)
            ln = nb
            i += 2
        else:
            i += 1
        names.append(ln.id)
        if pts:
            starts.append(s_total + float(np.linalg.norm(c[0] - pts[-1][-1])))
            if np.linalg.norm(pts[-1][-1] - c[0]) < 1e-6:
                c = c[1:]
        else:
            starts.append(0.0)
        seg = np.concatenate([pts[-1][-1:], c], axis=0) if pts else c
        s_total += float(np.sum(np.linalg.norm(np.diff(seg, axis=0), axis=1)))
        pts.append(c)
        lim.append(np.full(len(c), ln.speed_limit))
    return RoutePoints(np.concatenate(pts, axis=0), np.concatenate(lim), starts, names)


def _blend_change(pa: Polyline, pb: Polyline, b_centerline: F64, prev_end: F64 | None, blend: float) -> F64:
    """Points from lane ``pa`` over to its neighbour ``pb`` (raised-cosine weights over the blend
    length, from the projection of ``prev_end`` on ``pa`` or its start), then the rest of ``pb``."""
    s0 = float(pa.project(prev_end)[0]) if prev_end is not None else 0.0
    L = min(blend, max(1.0, 0.8 * (pa.length - s0)))
    ss = s0 + np.linspace(0.0, L, 12)
    xa, _ = pa.interpolate(ss)
    xb, _ = pb.interpolate(pb.project(xa)[0])
    w = 0.5 - 0.5 * np.cos(np.pi * (ss - s0) / L)
    c = (1 - w[:, None]) * xa + w[:, None] * xb
    sb_end = float(pb.project(xb[-1])[0])
    rest = b_centerline[1:][pb.s[1:] > sb_end + 1e-6]
    return np.concatenate([c, rest], axis=0)


def build_path_table(
    lane_map: LaneMap,
    routes: Sequence[Sequence[str]],
    *,
    length: float,
    ds: float = 1.0,
    conflicts: Sequence[tuple[str, float, str, float]] | None = None,
) -> PathTable:
    """Resample ``routes`` (lists of lane ids, each extended straight on to ``length`` metres) plus
    one straight continuation per lane (appended after ``routes``) into a :class:`PathTable`."""
    ids = tuple(lane_map.lane_ids)
    lidx = {lid: i for i, lid in enumerate(ids)}
    all_routes = [list(r) for r in routes] + [[lid] for lid in ids]
    P = math.ceil(length / ds) + 2
    Q = len(all_routes)
    xy = np.zeros((Q, P, 2))
    heading = np.zeros((Q, P))
    lane = np.zeros((Q, P), dtype=np.int64)
    lane_s = np.zeros((Q, P))
    speed = np.zeros((Q, P))
    end_s = np.zeros(Q)
    conf_by_lane: dict[str, list[tuple[float, int, str]]] = {lid: [] for lid in ids}
    for cid, (a, sa, b, sb) in enumerate(conflicts if conflicts is not None else lane_conflicts(lane_map)):
        conf_by_lane[a].append((sa, cid, a))
        conf_by_lane[b].append((sb, cid, b))
    per_path_conf: list[list[tuple[float, int, int]]] = []
    out_routes = []
    grid = np.arange(P) * ds
    for q, r in enumerate(all_routes):
        r = straight_continuation(lane_map, r, length)
        rp = route_points(lane_map, r)
        pts, starts, names = rp.xy, rp.starts, rp.names
        out_routes.append(tuple(names))
        pl = Polyline(pts)
        end_s[q] = pl.length
        p, _ = pl.interpolate(grid)
        xy[q] = p
        d = np.diff(p, axis=0)
        h = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
        hv = np.concatenate([h[:1], 0.5 * (h[1:] + h[:-1]), h[-1:]])
        heading[q] = hv
        st = np.asarray(starts)
        j = fclip(np.searchsorted(st, grid, side="right") - 1, 0, len(st) - 1)
        lane[q] = [lidx[names[k]] for k in j]
        lane_s[q] = grid - st[j]
        speed[q] = [lane_map.lanes[names[k]].speed_limit for k in j]
        confs = []
        for k, name in enumerate(names):
            for sc, cid, _ in conf_by_lane[name]:
                s_on = starts[k] + sc
                if s_on <= end_s[q]:
                    confs.append((s_on, cid, lidx[name]))
        per_path_conf.append(sorted(confs))
    conf_s, conf_id, conf_lane = _conflict_table(per_path_conf)
    n_routes = len(routes)
    lane_path = np.arange(n_routes, n_routes + len(ids), dtype=np.int64)
    left = np.array([lidx.get(lane_map.lanes[i].left or "", -1) for i in ids], dtype=np.int64)
    right = np.array([lidx.get(lane_map.lanes[i].right or "", -1) for i in ids], dtype=np.int64)
    for arr in (xy, heading, lane, lane_s, speed, end_s, conf_s, conf_id, conf_lane, lane_path, left, right):
        arr.setflags(write=False)
    return PathTable(
        ds=ds, xy=xy, heading=heading, lane=lane, lane_s=lane_s, speed_limit=speed, end_s=end_s,
        conf_s=conf_s, conf_id=conf_id, conf_lane=conf_lane, lane_path=lane_path, left=left, right=right,
        lane_length=np.array([lane_map.lanes[i].length for i in ids]), lane_ids=ids, routes=tuple(out_routes),
    )  # fmt: skip


def _conflict_table(per_path: list[list[tuple[float, int, int]]]) -> tuple[F64, I64, I64]:
    """Each path's conflict points (arc length m, conflict id, lane index), sorted by arc length,
    as (Q, C) arrays padded with ``inf`` / -1."""
    Q, C = len(per_path), max(1, max(len(c) for c in per_path))
    conf_s = np.full((Q, C), np.inf)
    conf_id = np.full((Q, C), -1, dtype=np.int64)
    conf_lane = np.full((Q, C), -1, dtype=np.int64)
    for q, cs in enumerate(per_path):
        for k, (sc, cid, ln) in enumerate(cs):
            conf_s[q, k], conf_id[q, k], conf_lane[q, k] = sc, cid, ln
    return conf_s, conf_id, conf_lane


def project_on_paths(paths: PathTable, path_id: I64, s_guess: F64, x: F64, y: F64, back: int = 6, ahead: int = 24) -> tuple[F64, F64]:
    """Arc length and signed lateral offset (left positive) of points (x, y) on their paths (m),
    searched in a window of vertices around ``s_guess`` (arrays broadcasting to one shape)."""
    shp = np.shape(s_guess)
    if not (np.shape(path_id) == shp == np.shape(x) == np.shape(y)):
        path_id, s_guess, x, y = np.broadcast_arrays(path_id, s_guess, x, y)
        shp = np.shape(s_guess)
    so, do = project_nb(paths.xy, paths.heading, paths.ds, np.ravel(path_id), np.ravel(s_guess), np.ravel(x), np.ravel(y), back, ahead)
    return so.reshape(shp), do.reshape(shp)


_NO_OFFSET = np.zeros((1, 1))
_NO_OFFSET.setflags(write=False)


def path_neighbours(
    paths: PathTable,
    path_id: I64,
    s: F64,
    width_q: F64,
    props: F64,
    allowed: NDArray[np.bool_],
    *,
    window: int = 12,
    stride: int = 4,
    backward: bool = False,
    offset: F64 | None = None,
    grid_min: int | None = GRID_MIN_ACTORS,
) -> tuple[F64, F64, I64]:
    """The nearest actor on a path ahead (or behind, with ``backward``) of each query.

    Queries (B, M): a point at arc length ``s`` on path ``path_id`` with width ``width_q`` (m).
    Actors: ``props`` (B, N, 6) columns x, y, yaw, v, length, width; ``allowed`` (B, M, N) which
    actors each query may see (present and not itself). An actor counts when its box reaches the
    path's swept width (centre within ``width_q/2`` + its lateral half extent + 0.3 m of the path)
    and its centre lies ahead along the path (each actor is placed at the nearest of the window's
    ``window + 1`` vertices, ``stride * ds`` metres apart, compared in float32, and projected on
    that vertex's tangent: beyond the last vertex the corridor runs straight on, unbounded). ``offset`` (B, M), m: the
    query's own lateral offset from the path (a lane change in progress); the corridor then spans
    from the path to it.

    Returns the gap (m) from the query point to the actor's nearest bumper along the path (``inf``
    if none; callers subtract their own half length), the actor's speed along the path (m/s) and
    its slot (-1 if none).

    The search is exact whichever way it runs: each world with at least ``grid_min`` actors
    present (None: never) bins them in a grid and tests only those near the path
    (:mod:`sim.kernels_neighbours`); the answer is the same bits.
    """
    wq = width_q if width_q.ndim == 2 else np.reshape(width_q, (1, -1))
    off = _NO_OFFSET if offset is None else offset
    return path_neighbours_nb(paths.xy, paths.heading, paths.ds, path_id, s, wq, props, allowed, window, stride, backward, off, grid_min, None)


def conflict_stops(
    paths: PathTable,
    path_id: I64,
    s: F64,
    v: F64,
    length: F64,
    active: NDArray[np.bool_],
    can_yield: NDArray[np.bool_],
    *,
    lookahead: float = 40.0,
    stop_margin: float = 4.0,
    n_next: int = 8,
    decel_commit: float = 6.0,
    cluster_m: float = 25.0,
) -> F64:
    """Distance (m, from the actor's centre) to the stop line of the nearest conflict point where
    the actor must yield, ``inf`` when it has the right of way (first-come-first-served by time of
    arrival; see the module docstring). Arrays (B, N); ``active`` rows take part, ``can_yield`` rows
    may be told to stop (the ego takes part but never yields).

    Of the next ``n_next`` conflicts within ``lookahead`` m, those within ``cluster_m`` of the first
    (a junction) share its stop line, ``stop_margin`` m + l/2 before it, so an actor never waits
    inside a junction; an actor that cannot stop there braking at ``decel_commit`` m/s^2 is
    committed and goes first. Of two committed actors, the later one is told to stop ``l/2 + 2 m``
    before the conflict point itself while that is still ahead."""
    ln2 = length if length.ndim == 2 else np.reshape(length, (1, -1))
    cy2 = can_yield if can_yield.ndim == 2 else np.reshape(can_yield, (1, -1))
    return conflict_stops_nb(
        paths.conf_s, paths.conf_id, paths.conf_lane, path_id, s, v, ln2, active, cy2,
        lookahead, stop_margin, n_next, decel_commit, cluster_m, paths.n_conflicts,
    )  # fmt: skip
