"""Actor behaviours: log replay, IDM along a lane route, IDM + MOBIL lane changes, constant velocity.

Behaviours are looked up by name in :data:`BEHAVIORS` (third parties add more through the
``loopdrive.behaviors`` entry-point group). Each declares its parameters with units and defaults
(:attr:`Behavior.defaults`); a scenario sets them in ``BehaviorSpec.params``.

Path-following behaviours (``idm``, ``mobil``) move actors along **paths**: lane routes resampled
every ``ds`` metres into a :class:`PathTable` shared by all actors and all batched worlds. An actor on
a path is (path id, arc length ``s``, lateral offset ``d``); a lane change switches to the
neighbour lane's path and lets ``d`` decay to zero. Everything is vectorised over (batch, actor)
arrays; the engine calls each behaviour once per step with the mask of its rows.

Interaction rules (all vectorised):

* **Car following** (:func:`path_neighbours`): the leader of an actor is the nearest other actor
  (the ego included) whose box lies on the actor's path ahead, within ``window * ds`` metres.
  IDM (Treiber, Hennecke and Helbing 2000) then never lets a follower drive through it. During
  a lane change the watched corridor spans from the new lane's path to the actor's current
  lateral offset, so a car still partly in its old lane keeps following the car ahead there.
* **Intersections** (conflict points, :func:`lane_conflicts`): where two lanes' centrelines cross
  or merge, actors approaching the point on different lanes are ordered first-come-first-served by
  their time of arrival (``distance / max(speed, 1 m/s)``; an actor already inside the conflict
  zone comes first); every later actor stops ``l/2 + 4 m`` before the point until it is clear.
  An actor that can no longer stop before its stop line is committed and keeps going; of two
  committed actors, the later one brakes for the conflict point itself. Centrelines passing
  within 2 m of each other without crossing (opposing left turns) meet at a conflict point too.
* **Scripted braking**: every behaviour accepts ``brake_at_s`` (s after the episode start),
  ``brake_decel`` (m/s^2) and ``brake_to_speed`` (m/s) for "lead vehicle brakes hard" scenarios.
"""

from __future__ import annotations

import functools
import math
from abc import ABC
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import shapely
import shapely.ops
from numpy.typing import NDArray
from shapely.geometry import LineString

from sim.errors import ScenarioError
from sim.kernels import conflict_stops_nb, path_neighbours_nb, project_nb
from sim.map import LaneMap, Polyline
from sim.registry import Registry

__all__ = [
    "BEHAVIORS",
    "IDM",
    "Behavior",
    "ConstantVelocity",
    "LogReplay",
    "Mobil",
    "PathTable",
    "Static",
    "build_path_table",
    "idm_accel",
    "lane_conflicts",
    "path_neighbours",
    "straight_continuation",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


def fclip(a, lo, hi):  # type: ignore[no-untyped-def]
    """``np.clip`` without its dispatch overhead (same values for finite inputs)."""
    return np.minimum(np.maximum(a, lo), hi)

#: shared scripted-brake parameters (every behaviour accepts them)
BRAKE_DEFAULTS: dict[str, float] = {
    "brake_at_s": math.inf,  # s after episode start at which the actor starts braking
    "brake_decel": 6.0,  # m/s^2 deceleration of the scripted brake
    "brake_to_speed": 0.0,  # m/s speed held after the brake
}


# =============================================================================== behaviour classes
class Behavior(ABC):
    """A behaviour type. Subclasses set ``name``, ``defaults`` (parameter -> default, SI units) and
    flags; the engine implements the vectorised motion of the built-in kinds:

    * ``kind = "replay"``: poses read from the log (non-reactive);
    * ``kind = "static"``: does not move;
    * ``kind = "constant_velocity"``: straight along the current heading at constant speed;
    * ``kind = "path"``: along a lane path with longitudinal acceleration from :meth:`accel`
      (IDM by default), lane changes when ``changes_lanes``.
    """

    name: ClassVar[str]
    kind: ClassVar[str] = "path"
    changes_lanes: ClassVar[bool] = False
    defaults: ClassVar[Mapping[str, float]] = {}

    @classmethod
    def validate(cls, params: Mapping[str, Any], where: str = "behavior.params") -> dict[str, float]:
        """Parameters merged over the defaults; unknown names or non-numbers raise ScenarioError."""
        out = dict(cls.defaults)
        for k, v in params.items():
            if k not in cls.defaults:
                raise ScenarioError(f"unknown parameter {k!r} of behaviour {cls.name!r}; known: {', '.join(sorted(cls.defaults))}", field=f"{where}.{k}")
            try:
                fv = float(v)
            except (TypeError, ValueError):
                raise ScenarioError(f"expected a number, got {v!r}", field=f"{where}.{k}") from None
            if math.isnan(fv):
                raise ScenarioError("expected a number, got NaN", field=f"{where}.{k}")
            out[k] = fv
        return out


IDM_DEFAULTS: dict[str, float] = {
    "a_max": 2.0,  # m/s^2 maximum (comfortable) acceleration a
    "b_comf": 3.0,  # m/s^2 comfortable deceleration b
    "s0": 2.0,  # m minimum bumper-to-bumper gap
    "T": 1.5,  # s desired time headway
    "delta": 4.0,  # acceleration exponent
    "v0": math.nan,  # m/s desired speed; NaN = the lane's speed limit
    "v0_jitter": 0.0,  # fraction: v0 scaled by U(1 - j, 1 + j) drawn from the episode rng
    "decel_max": 8.0,  # m/s^2 physical braking limit of the actor
    "lane_change_time": 3.0,  # s to move one lane width sideways (route lane changes, MOBIL)
    "lane_change_after_s": 0.0,  # s to wait before a route's first lane change starts
    **BRAKE_DEFAULTS,
}


class IDM(Behavior):
    """Intelligent Driver Model along a lane route (Treiber et al. 2000), constants in SI units:
    ``a_max`` 2.0 m/s^2, ``b_comf`` 3.0 m/s^2, ``s0`` 2.0 m, ``T`` 1.5 s, ``delta`` 4, ``v0`` the
    lane speed limit; accelerations are clipped to [-``decel_max``, ``a_max``]."""

    name = "idm"
    defaults: ClassVar[Mapping[str, float]] = IDM_DEFAULTS


class Mobil(Behavior):
    """IDM plus MOBIL lane changes (Kesting, Treiber and Helbing 2007): change when
    ``gain + politeness * (followers' gain) > threshold`` and the new follower brakes less than
    ``b_safe``. ``politeness`` 0.3, ``threshold`` 0.2 m/s^2, ``b_safe`` 4.0 m/s^2, at most one change
    every ``lc_cooldown`` 3.0 s, decisions every ``lc_check_s`` 0.5 s."""

    name = "mobil"
    changes_lanes = True
    defaults: ClassVar[Mapping[str, float]] = {**IDM_DEFAULTS, "politeness": 0.3, "threshold": 0.2, "b_safe": 4.0, "lc_cooldown": 3.0, "lc_check_s": 0.5}


class ConstantVelocity(Behavior):
    """Straight ahead along the initial heading; ``speed`` (m/s, NaN = initial speed)."""

    name = "constant_velocity"
    kind = "constant_velocity"
    defaults: ClassVar[Mapping[str, float]] = {"speed": math.nan, **BRAKE_DEFAULTS}


class LogReplay(Behavior):
    """The logged poses, exactly (non-reactive); absent outside the track's time span."""

    name = "log_replay"
    kind = "replay"
    defaults: ClassVar[Mapping[str, float]] = {}


class Static(Behavior):
    """Stays where it is (parked cars, stopped obstacles)."""

    name = "static"
    kind = "static"
    defaults: ClassVar[Mapping[str, float]] = {}


#: name -> behaviour class; third parties use the ``loopdrive.behaviors`` entry-point group
BEHAVIORS: Registry[type[Behavior]] = Registry("behaviour", "loopdrive.behaviors")
for _b in (LogReplay, IDM, Mobil, ConstantVelocity, Static):
    BEHAVIORS.register(_b.name, _b)


def idm_accel(v: F64, v_lead: F64, gap: F64, p: Mapping[str, F64], v0: F64) -> F64:
    """IDM acceleration (m/s^2) for speed ``v``, leader speed ``v_lead`` and bumper gap ``gap`` (m;
    ``inf`` = free road), clipped to [-decel_max, a_max]."""
    a, b = p["a_max"], p["b_comf"]
    dv = v - v_lead
    s_star = p["s0"] + np.maximum(0.0, v * p["T"] + v * dv / (2.0 * np.sqrt(a * b)))
    free = 1.0 - (np.maximum(v, 0.0) / np.maximum(v0, 0.1)) ** p["delta"]
    inter = (s_star / np.maximum(gap, 0.1)) ** 2
    acc = a * (free - inter)
    # a desired speed of zero means "stop": no creeping forward
    acc = np.where(v0 <= 0.05, np.minimum(acc, -b * (v > 0.01)), acc)
    return fclip(acc, -p["decel_max"], a)


# ====================================================================================== paths
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
            sa, _ = a.polyline.project([px, py])
            sb, _ = b.polyline.project([px, py])
            sa, sb = float(sa), float(sb)
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


def _route_points(lane_map: LaneMap, route: Sequence[str], blend: float = 25.0) -> tuple[F64, list[float], list[str]]:
    """Polyline points of a lane route and the arc length where each lane starts. A same-direction
    neighbour step (a lane change) is blended smoothly over the first ``blend`` metres of the pair."""
    pts: list[F64] = []
    starts: list[float] = []
    names: list[str] = []
    s_total = 0.0
    i = 0
    r = list(route)
    while i < len(r):
        ln = lane_map.lanes[r[i]]
        c = ln.centerline
        if i + 1 < len(r) and r[i + 1] in (ln.left, ln.right):
            nb = lane_map.lanes[r[i + 1]]
            pa, pb = ln.polyline, nb.polyline
            L = min(blend, 0.8 * pa.length)
            ss = np.linspace(0.0, L, 12)
            xa, _ = pa.interpolate(ss)
            xb, _ = pb.interpolate(pb.project(xa)[0])
            w = 0.5 - 0.5 * np.cos(np.pi * ss / L)
            c = (1 - w[:, None]) * xa + w[:, None] * xb
            sb_end = float(pb.project(xb[-1])[0])
            rest = nb.centerline[1:][pb.s[1:] > sb_end + 1e-6]
            c = np.concatenate([c, rest], axis=0)
            names.append(nb.id)
            i += 2
        else:
            names.append(ln.id)
            i += 1
        if pts:
            starts.append(s_total + float(np.linalg.norm(c[0] - pts[-1][-1])))
            if np.linalg.norm(pts[-1][-1] - c[0]) < 1e-6:
                c = c[1:]
        else:
            starts.append(0.0)
        seg = np.concatenate([pts[-1][-1:], c], axis=0) if pts else c
        s_total += float(np.sum(np.linalg.norm(np.diff(seg, axis=0), axis=1)))
        pts.append(c if len(c) else pts[-1][-1:])
    return np.concatenate(pts, axis=0), starts, names


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
        pts, starts, names = _route_points(lane_map, r)
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
    C = max(1, max(len(c) for c in per_path_conf))
    conf_s = np.full((Q, C), np.inf)
    conf_id = np.full((Q, C), -1, dtype=np.int64)
    conf_lane = np.full((Q, C), -1, dtype=np.int64)
    for q, cs in enumerate(per_path_conf):
        for k, (sc, cid, ln) in enumerate(cs):
            conf_s[q, k], conf_id[q, k], conf_lane[q, k] = sc, cid, ln
    n_routes = len(routes)
    lane_path = np.arange(n_routes, n_routes + len(ids), dtype=np.int64)
    left = np.array([lidx.get(lane_map.lanes[i].left or "", -1) for i in ids], dtype=np.int64)
    right = np.array([lidx.get(lane_map.lanes[i].right or "", -1) for i in ids], dtype=np.int64)
    for a in (xy, heading, lane, lane_s, speed, end_s, conf_s, conf_id, conf_lane, lane_path, left, right):
        a.setflags(write=False)
    return PathTable(
        ds=ds,
        xy=xy,
        heading=heading,
        lane=lane,
        lane_s=lane_s,
        speed_limit=speed,
        end_s=end_s,
        conf_s=conf_s,
        conf_id=conf_id,
        conf_lane=conf_lane,
        lane_path=lane_path,
        left=left,
        right=right,
        lane_length=np.array([lane_map.lanes[i].length for i in ids]),
        lane_ids=ids,
        routes=tuple(out_routes),
    )


def project_on_paths(paths: PathTable, path_id: I64, s_guess: F64, x: F64, y: F64, back: int = 6, ahead: int = 24) -> tuple[F64, F64]:
    """Arc length and signed lateral offset (left positive) of points (x, y) on their paths,
    searched in a window of vertices around ``s_guess``."""
    if project_nb is not None and np.shape(path_id) == np.shape(s_guess) == np.shape(x) == np.shape(y):
        shp = np.shape(s_guess)
        so, do = project_nb(paths.xy, paths.heading, paths.ds, np.ravel(path_id), np.ravel(s_guess), np.ravel(x), np.ravel(y), back, ahead)
        return so.reshape(shp), do.reshape(shp)
    k0 = paths.vertex(path_id, s_guess)
    offs = np.arange(-back, ahead + 1)
    idx = fclip(k0[..., None] + offs, 0, paths.num_vertices - 2)
    pid = path_id[..., None]
    vx = paths.xy[pid, idx]
    dx = x[..., None] - vx[..., 0]
    dy = y[..., None] - vx[..., 1]
    j = np.argmin(dx * dx + dy * dy, axis=-1)
    k = _pick(idx, j)
    h = paths.heading[path_id, k]
    ddx = _pick(dx, j)
    ddy = _pick(dy, j)
    c, s = np.cos(h), np.sin(h)
    return k * paths.ds + c * ddx + s * ddy, -s * ddx + c * ddy


def _pick(a: NDArray[Any], j: I64) -> NDArray[Any]:
    """``a[..., j]`` with one index per leading position: ``a`` (*lead, X), ``j`` (*lead,) -> (*lead,)."""
    X = a.shape[-1]
    flat = a.reshape(-1, X)
    return flat[np.arange(flat.shape[0]), j.reshape(-1)].reshape(j.shape)


def _gather(a: NDArray[Any], idx: I64) -> NDArray[Any]:
    """``a[..., idx]`` per leading row: ``a`` (R, X, *rest) and ``idx`` (R, *sel) -> (R, *sel, *rest)."""
    R, X = a.shape[0], a.shape[1]
    flat = idx.reshape(R, -1) + (np.arange(R) * X)[:, None]
    return a.reshape((R * X, *a.shape[2:]))[flat.reshape(idx.shape)]


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
    k_nearest: int = 8,
    offset: F64 | None = None,
) -> tuple[F64, F64, I64]:
    """The nearest actor on a path ahead (or behind, with ``backward``) of each query.

    Queries (B, M): a point at arc length ``s`` on path ``path_id`` with width ``width_q`` (m).
    Actors: ``props`` (B, N, 6) columns x, y, yaw, v, length, width; ``allowed`` (B, M, N) which
    actors each query may see (present and not itself). An actor counts when its box reaches the
    path's swept width (centre within ``width_q/2`` + its lateral half extent + 0.3 m of the path)
    and its centre lies ahead along the path within ``window * stride * ds`` metres; the ``k_nearest``
    actors by straight-line distance are examined. ``offset`` (B, M), m: the query's own lateral
    offset from the path (a lane change in progress); the corridor then spans from the path to it.

    Returns the gap (m) from the query point to the actor's nearest bumper along the path (``inf``
    if none; callers subtract their own half length), the actor's speed along the path (m/s) and
    its slot (-1 if none).
    """
    B, M = s.shape
    if path_neighbours_nb is not None:
        wq = width_q if width_q.ndim == 2 else np.reshape(width_q, (1, -1))
        off = _NO_OFFSET if offset is None else offset
        return path_neighbours_nb(paths.xy, paths.heading, paths.ds, path_id, s, wq, props, allowed, window, stride, backward, off)
    N = props.shape[1]
    qx, qy, _ = paths.sample(path_id, s)
    ax, ay = props[..., 0], props[..., 1]
    d2 = (ax[:, None, :] - qx[..., None]) ** 2 + (ay[:, None, :] - qy[..., None]) ** 2
    d2 = np.where(allowed, d2, np.inf)
    # small problems (a single world) skip the candidate preselection: fewer numpy calls
    kk = N if B * M * N * (window + 1) <= 100_000 else min(k_nearest, N)
    if kk < N:
        cand = np.argpartition(d2, kk - 1, axis=-1)[..., :kk]  # (B, M, K)
        cd2 = _gather(d2.reshape(B * M, N), cand.reshape(B * M, kk)).reshape(B, M, kk)
        G = _gather(props, cand.reshape(B, M * kk)).reshape(B, M, kk, 6)
    else:
        cand = np.broadcast_to(np.arange(N), (B, M, N))
        cd2 = d2
        G = props[:, None]  # (B, 1, N, 6), broadcast against the queries
    offs = (np.arange(-window, 1) if backward else np.arange(0, window + 1)) * stride
    k0 = (s / paths.ds).astype(np.int64)
    idx = fclip(k0[..., None] + offs, 0, paths.num_vertices - 1)  # (B, M, W)
    pq = path_id[..., None]
    wv = paths.xy[pq, idx]  # (B, M, W, 2)
    gx, gy = G[..., 0], G[..., 1]
    # nearest window vertex per candidate (float32 is plenty for picking the vertex)
    wx, wy = wv[..., 0].astype(np.float32)[..., None, :], wv[..., 1].astype(np.float32)[..., None, :]  # (B, M, 1, W)
    ex = gx.astype(np.float32)[..., None] - wx  # (B, M, K, W)
    ey = gy.astype(np.float32)[..., None] - wy
    ex *= ex
    ey *= ey
    ex += ey
    j = ex.argmin(axis=-1)  # (B, M, K)
    W = idx.shape[-1]
    kv = _gather(idx.reshape(B * M, W), j.reshape(B * M, -1)).reshape(j.shape)
    h = paths.heading[pq, kv]
    vx = paths.xy[pq, kv]
    ch, sh = np.cos(h), np.sin(h)
    rx, ry = gx - vx[..., 0], gy - vx[..., 1]
    s_proj = kv * paths.ds + ch * rx + sh * ry
    lat = ch * ry - sh * rx
    rel = G[..., 2] - h
    cr, sr = np.abs(np.cos(rel)), np.abs(np.sin(rel))
    cl, cw = G[..., 4], G[..., 5]
    sq = s[..., None]
    if backward:
        gap = sq - s_proj - 0.5 * (cl * cr + cw * sr)
        ok = s_proj < sq
    else:
        gap = s_proj - sq - 0.5 * (cl * cr + cw * sr)
        ok = s_proj > sq
    if offset is None:
        ok &= np.abs(lat) < 0.5 * (width_q[..., None] + cl * sr + cw * cr) + 0.3
    else:
        off = offset[..., None]
        ok &= np.abs(lat - 0.5 * off) < 0.5 * (width_q[..., None] + np.abs(off) + cl * sr + cw * cr) + 0.3
    ok &= cd2 < np.inf
    gap = np.where(ok, gap, np.inf)
    best = np.argmin(gap, axis=-1)
    g = _pick(gap, best)
    found = g < np.inf
    vel = np.where(found, _pick(G[..., 3] * np.cos(rel), best), 0.0)
    who = np.where(found, _pick(np.ascontiguousarray(cand), best), -1)
    return g, vel, who


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
    may be told to stop (the ego takes part but never yields). Of two actors that are both
    committed, the later one is told to stop ``l/2 + 2 m`` before the conflict point itself while
    that is still ahead."""
    B, N = s.shape
    if conflict_stops_nb is not None:
        ln2 = length if length.ndim == 2 else np.reshape(length, (1, -1))
        cy2 = can_yield if can_yield.ndim == 2 else np.reshape(can_yield, (1, -1))
        return conflict_stops_nb(
            paths.conf_s, paths.conf_id, paths.conf_lane, path_id, s, v, ln2, active, cy2,
            lookahead, stop_margin, n_next, decel_commit, cluster_m, paths.n_conflicts,
        )  # fmt: skip
    cs_all = paths.conf_s[path_id]  # (B, N, C)
    C = cs_all.shape[-1]
    n_next = min(n_next, C)
    clear = 0.5 * length + 2.0
    first = np.sum(cs_all < (s - clear)[..., None], axis=-1)  # conflicts fully passed
    take = first[..., None] + np.arange(n_next)
    inside = take < C
    take = np.minimum(take, C - 1)
    flat = (take + (path_id * C)[..., None]).reshape(B, N * n_next)
    cs = paths.conf_s.reshape(-1)[flat]
    cid = paths.conf_id.reshape(-1)[flat]
    cln = paths.conf_lane.reshape(-1)[flat]
    dist = cs - np.repeat(s, n_next, axis=1)
    rel = inside.reshape(B, -1) & (cid >= 0) & np.repeat(active, n_next, axis=1) & (dist < lookahead) & (dist > -np.repeat(clear, n_next, axis=1))
    if not rel.any():
        return np.full((B, N), np.inf)
    # conflicts come in clusters (a junction): the stop line of every conflict in the cluster is
    # the one before the cluster's first conflict, so an actor never waits inside a junction
    R = rel.reshape(B, N, n_next)
    CS = cs.reshape(B, N, n_next)
    fi = np.argmax(R, axis=-1)
    first_s = np.where(R.any(axis=-1), _pick(CS, fi), np.inf)
    in_cluster = R & (first_s[..., None] + cluster_m >= CS)
    own_line = dist.reshape(B, N, n_next) - (0.5 * length + stop_margin)[..., None]
    line = np.where(in_cluster, (first_s - s - 0.5 * length - stop_margin)[..., None], own_line).reshape(B, -1)
    # committed: can no longer stop before the stop line (or is past it): never yields, goes first
    committed = rel & (line < np.repeat(np.square(v) / (2.0 * decel_commit), n_next, axis=1) - 0.5)
    # priority: time of arrival at the junction (its first conflict), one key per actor so the
    # order is total (no four-way deadlock); committed actors first (among themselves by arrival
    # too); ties by slot (lower first)
    t_arr = np.maximum(first_s - s, 0.0) / np.maximum(v, 1.0) - np.where(committed.reshape(B, N, n_next).any(axis=-1), 1e3, 0.0)
    eta = np.repeat(t_arr + 1e-6 * np.arange(N)[None, :], n_next, axis=1)
    # per (world, conflict): the earliest relevant arrival and the earliest on another lane than
    # that one (sorting the relevant entries; a conflict joins exactly two lanes)
    idx = np.flatnonzero(rel.ravel())
    M = int(paths.conf_id.max()) + 1
    g = (idx // (N * n_next)) * M + cid.ravel()[idx]
    key = eta.ravel()[idx]
    ln = cln.ravel()[idx]
    order = np.lexsort((key, g))
    gs, ks, ls = g[order], key[order], ln[order]
    head = np.concatenate([[True], gs[1:] != gs[:-1]])
    best_key = np.full(B * M, np.inf)
    best_lane = np.full(B * M, -1, dtype=np.int64)
    best_key[gs[head]] = ks[head]
    best_lane[gs[head]] = ls[head]
    m2 = ls != best_lane[gs]
    g2, k2 = gs[m2], ks[m2]
    head2 = np.concatenate([[True], g2[1:] != g2[:-1]]) if len(g2) else np.zeros(0, dtype=bool)
    other_key = np.full(B * M, np.inf)
    other_key[g2[head2]] = k2[head2]
    comp = np.where(ln == best_lane[g], other_key[g], best_key[g])
    earlier = np.zeros(B * N * n_next, dtype=bool)
    earlier[idx] = comp < key
    # two committed actors (spawned or arriving too close to stop at the line): the later one
    # brakes for the conflict point itself while it is still ahead
    at_point = dist - np.repeat(0.5 * length + 2.0, n_next, axis=1)
    must = earlier.reshape(B, -1) & np.repeat(can_yield, n_next, axis=1) & (~committed | (at_point > 0.0))
    stop_at = np.where(committed, at_point, line)
    return np.min(np.where(must, stop_at, np.inf).reshape(B, N, n_next), axis=-1)
