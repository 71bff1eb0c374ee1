"""Procedural road network: a grid of 4-way intersections joined by two-way multi-lane roads.

Right-hand traffic. World frame: metres, z up; the first intersection sits at the origin, the
main road runs east-west through the middle row of the grid with two lanes per direction, the
minor roads run north-south. Each road has a parking strip beside its outer lanes and a raised
sidewalk beyond that; every intersection arm has a zebra crosswalk and a stop line, and the minor
roads' incoming lanes carry a stop sign (``stop: true`` on the lane).

The lane map produced here is the ``map.json`` dictionary of the drive-log format (see
:mod:`sim.log`): lane ids are strings ``lane_<n>``; extra per-lane fields are ``kind`` (``road`` or
``connector``), ``road``, ``node``, ``turn`` (``straight``/``left``/``right`` for connectors),
``stop`` and ``conflicts`` (ids of connectors of the same intersection whose paths cross this one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import LineString, Polygon, box

from sim.synth.presets import TownPreset

__all__ = ["LaneRec", "Node", "Road", "TownNetwork", "build_network"]

F64 = NDArray[np.float64]

CROSSWALK_NEAR = 0.8  # m beyond the crossing road's edge where the zebra starts
CROSSWALK_FAR = 3.8
STOP_LINE_AT = 4.3  # centre of the stop line
STOP_LINE_W = 0.4
LANE_TRIM = 4.5  # lanes end/start this far beyond the crossing road's edge
PARKING_W = 2.4
SIDEWALK_W = 3.0
KERB_H = 0.15
CORNER_R = 5.0
ROAD_RUNOUT = 80.0  # road surface continues beyond the last lane end (towards the horizon)
CONFLICT_DIST = 3.2  # m: connectors whose centrelines come closer than this conflict
A_LAT = 2.2  # comfortable lateral acceleration for connector speed limits, m/s^2


@dataclass(frozen=True)
class Road:
    """A straight two-way road from ``a`` to ``b`` ("forward" = a -> b)."""

    id: str
    a: tuple[float, float]
    b: tuple[float, float]
    lanes: int
    lane_w: float
    speed_limit: float
    main: bool
    node_a: int | None
    node_b: int | None

    @property
    def u(self) -> F64:
        d = np.subtract(self.b, self.a)
        return d / np.linalg.norm(d)

    @property
    def n(self) -> F64:
        u = self.u
        return np.array([-u[1], u[0]])

    @property
    def length(self) -> float:
        return float(np.linalg.norm(np.subtract(self.b, self.a)))

    @property
    def lanes_half_w(self) -> float:
        return self.lanes * self.lane_w

    @property
    def half_w(self) -> float:
        return self.lanes * self.lane_w + PARKING_W


@dataclass(frozen=True)
class Node:
    """A 4-way intersection."""

    id: str
    index: int
    center: tuple[float, float]
    half_x: float  # half extent along x (= half width of the north-south road)
    half_y: float


@dataclass
class LaneRec:
    """A lane while the network is being built (converted to a ``map.json`` dict at the end)."""

    id: str
    pts: F64
    width: float
    speed_limit: float
    kind: str
    road: str | None = None
    node: str | None = None
    turn: str | None = None
    stop: bool = False
    successors: list[str] = field(default_factory=list)
    predecessors: list[str] = field(default_factory=list)
    left: str | None = None
    right: str | None = None
    conflicts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "centerline": np.round(self.pts, 4).tolist(),
            "width": round(float(self.width), 4),
            "speed_limit": round(float(self.speed_limit), 3),
            "successors": list(self.successors),
            "predecessors": list(self.predecessors),
            "left": self.left,
            "right": self.right,
            "kind": self.kind,
        }
        if self.road is not None:
            d["road"] = self.road
        if self.node is not None:
            d["node"] = self.node
        if self.turn is not None:
            d["turn"] = self.turn
        if self.stop:
            d["stop"] = True
        if self.conflicts:
            d["conflicts"] = sorted(self.conflicts)
        return d


@dataclass(frozen=True)
class ParkingSlot:
    """A parking place beside a road: centre (x, y) and heading (rad)."""

    x: float
    y: float
    yaw: float
    road: str


@dataclass(frozen=True)
class TownNetwork:
    """Everything geometric about the town's roads (no meshes).

    Attributes:
        roads, nodes: the grid.
        lanes: lane records in id order.
        crosswalks: (id, polygon (4, 2)) per intersection arm.
        stop_lines: (polygon (4, 2)) per incoming approach.
        stop_signs: (x, y, yaw facing traffic) of the minor roads' stop signs.
        parking: parking slots.
        road_area, sidewalk_area, town_area: shapely polygons (asphalt, sidewalk, whole town).
        lane_ends: per road lane id, the road id and whether it is the forward direction.
    """

    roads: tuple[Road, ...]
    nodes: tuple[Node, ...]
    lanes: tuple[LaneRec, ...]
    crosswalks: tuple[tuple[str, F64], ...]
    stop_lines: tuple[F64, ...]
    stop_signs: tuple[tuple[float, float, float], ...]
    parking: tuple[ParkingSlot, ...]
    road_area: Any
    sidewalk_area: Any
    town_area: Any

    def map_dict(self) -> dict[str, Any]:
        """The ``map.json`` dictionary (see :mod:`sim.log`)."""
        return {
            "lanes": [ln.to_dict() for ln in self.lanes],
            "crosswalks": [{"id": cid, "polygon": np.round(p, 4).tolist()} for cid, p in self.crosswalks],
            "intersections": [
                {
                    "id": n.id,
                    "center": [round(n.center[0], 4), round(n.center[1], 4)],
                    "polygon": np.round(_rect(n.center, n.half_x, n.half_y), 4).tolist(),
                }
                for n in self.nodes
            ],
        }

    @property
    def lane_by_id(self) -> dict[str, LaneRec]:
        return {ln.id: ln for ln in self.lanes}


def _rect(c: tuple[float, float], hx: float, hy: float) -> F64:
    x, y = c
    return np.array([[x - hx, y - hy], [x + hx, y - hy], [x + hx, y + hy], [x - hx, y + hy]])


def _sample_line(p0: F64, p1: F64, step: float = 5.0) -> F64:
    n = max(2, math.ceil(float(np.linalg.norm(p1 - p0)) / step) + 1)
    t = np.linspace(0.0, 1.0, n)[:, None]
    return p0[None] * (1 - t) + p1[None] * t


def _bezier_turn(p0: F64, t0: F64, p3: F64, t1: F64, step: float = 0.5) -> F64:
    """A cubic Bezier leaving p0 along t0 and arriving at p3 along t1 (close to a circular arc)."""
    # corner = intersection of the two tangent lines
    m = np.array([t0, t1]).T
    try:
        a, b = np.linalg.solve(m, p3 - p0)
    except np.linalg.LinAlgError:
        a = b = float(np.linalg.norm(p3 - p0)) / 2
    k = 0.5523
    p1 = p0 + k * a * t0
    p2 = p3 - k * b * t1
    approx = abs(a) + abs(b)
    n = max(8, math.ceil(approx / step) + 1)
    s = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - s) ** 3 * p0 + 3 * (1 - s) ** 2 * s * p1 + 3 * (1 - s) * s**2 * p2 + s**3 * p3


def _max_curvature(pts: F64) -> float:
    if len(pts) < 3:
        return 0.0
    d = np.diff(pts, axis=0)
    yaw = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
    ds = 0.5 * (np.linalg.norm(d[1:], axis=1) + np.linalg.norm(d[:-1], axis=1))
    return float(np.max(np.abs(np.diff(yaw)) / np.maximum(ds, 1e-6)))


@dataclass(frozen=True)
class _Layout:
    """The random sizes of a town's grid, drawn first from the network stream (in field order).

    Attributes:
        xs, ys: x of each intersection column and y of each row (m).
        lane_w: lane width (m); main_limit, minor_limit: speed limits (m/s) of the east-west and
            north-south roads.
        minor_lanes: lanes per direction of the north-south road of each column.
        arms: lengths (m) of the dead-end arms, consumed in the order the roads are laid.
    """

    xs: tuple[float, ...]
    ys: tuple[float, ...]
    lane_w: float
    main_limit: float
    minor_limit: float
    minor_lanes: tuple[int, ...]
    arms: tuple[float, ...]

    @property
    def j_main(self) -> int:
        """Row of the main (two-lane) east-west road: the middle one."""
        return len(self.ys) // 2

    def node(self, i: int, j: int) -> int:
        """Index of the intersection in column ``i``, row ``j``."""
        return i + len(self.xs) * j


def _draw_layout(preset: TownPreset, rng: np.random.Generator) -> _Layout:
    """Draw the grid's sizes from ``rng`` (the order of the draws fixes the town of a seed)."""
    nx_, ny_ = preset.grid
    lane_w = float(np.round(rng.uniform(3.2, 3.6), 2))
    main_limit = float(rng.choice([11.1, 12.5, 13.9]))
    minor_limit = float(rng.choice([8.3, 9.7, 11.1]))
    xs = [0.0]
    for _ in range(nx_ - 1):
        xs.append(xs[-1] + float(np.round(rng.uniform(*preset.block_m), 1)))
    ys = [0.0]
    for _ in range(ny_ - 1):
        ys.append(ys[-1] + float(np.round(rng.uniform(*preset.block_m), 1)))
    minor_lanes = [int(rng.choice(preset.minor_lanes)) for _ in range(nx_)]
    arms = [float(np.round(rng.uniform(*preset.arm_m), 1)) for _ in range(2 * (nx_ + ny_))]
    return _Layout(tuple(xs), tuple(ys), lane_w, main_limit, minor_limit, tuple(minor_lanes), tuple(arms))


def _grid_roads(lay: _Layout) -> list[Road]:
    """The roads (ids ``r0``, ``r1``, ... in this order): the east-west roads row by row, then the
    north-south roads column by column, each row and column with a dead-end arm at both ends."""
    roads: list[Road] = []
    arm = iter(lay.arms)
    xs, ys = lay.xs, lay.ys

    def add(a: tuple[float, float], b: tuple[float, float], horizontal: bool, row_or_col: int, na: int | None, nb: int | None) -> None:
        main = horizontal and row_or_col == lay.j_main
        lanes = 2 if horizontal else lay.minor_lanes[row_or_col]
        limit = lay.main_limit if horizontal else lay.minor_limit
        roads.append(Road(f"r{len(roads)}", a, b, lanes, lay.lane_w, limit, main, na, nb))

    for j, y in enumerate(ys):  # east-west roads
        add((xs[0] - next(arm), y), (xs[0], y), True, j, None, lay.node(0, j))
        for i in range(len(xs) - 1):
            add((xs[i], y), (xs[i + 1], y), True, j, lay.node(i, j), lay.node(i + 1, j))
        add((xs[-1], y), (xs[-1] + next(arm), y), True, j, lay.node(len(xs) - 1, j), None)
    for i, x in enumerate(xs):  # north-south roads
        add((x, ys[0] - next(arm)), (x, ys[0]), False, i, None, lay.node(i, 0))
        for j in range(len(ys) - 1):
            add((x, ys[j]), (x, ys[j + 1]), False, i, lay.node(i, j), lay.node(i, j + 1))
        add((x, ys[-1]), (x, ys[-1] + next(arm)), False, i, lay.node(i, len(ys) - 1), None)
    return roads


def _grid_nodes(lay: _Layout, roads: list[Road]) -> list[Node]:
    """The intersections row by row, each as wide as the roads meeting there (half widths, m)."""
    nodes: list[Node] = []
    for j, y in enumerate(lay.ys):
        for i, x in enumerate(lay.xs):
            k = lay.node(i, j)
            at = [r for r in roads if k in (r.node_a, r.node_b)]
            hx = max(r.half_w for r in at if abs(r.u[1]) > 0.5)  # north-south roads set the x extent
            hy = max(r.half_w for r in at if abs(r.u[0]) > 0.5)
            nodes.append(Node(f"n{k}", k, (x, y), hx, hy))
    return nodes


def _trim(road: Road, node: int | None, nodes_at: dict[int, Node]) -> float:
    """How far (m) from the centre of intersection ``node`` ``road``'s lanes end (0 at a dead
    end, ``node`` None)."""
    if node is None:
        return 0.0
    nd = nodes_at[node]
    perp = nd.half_x if abs(road.u[0]) > 0.5 else nd.half_y
    return perp + LANE_TRIM


class _LaneBook:
    """The lanes being laid out, ids ``lane_<n>`` in creation order, looked up by id."""

    def __init__(self) -> None:
        self.lanes: list[LaneRec] = []
        self.by_id: dict[str, LaneRec] = {}

    def new(self, pts: F64, width: float, speed_limit: float, kind: str, **fields: Any) -> LaneRec:
        """Create, register and return the next lane."""
        lane = LaneRec(f"lane_{len(self.lanes)}", pts, width, speed_limit, kind, **fields)
        self.lanes.append(lane)
        self.by_id[lane.id] = lane
        return lane


@dataclass(frozen=True)
class _RoadEnd:
    """A road where it meets an intersection: lane ids arriving and leaving (inner -> outer) and
    the unit direction pointing away from the intersection."""

    road: Road
    in_ids: list[str]
    out_ids: list[str]
    outward: F64


def _road_lanes(book: _LaneBook, roads: list[Road], nodes_at: dict[int, Node]) -> dict[tuple[int, str], _RoadEnd]:
    """Lay every road's lanes (forward a -> b first, then backward; inner to outer, with their
    left/right neighbours) and return the road ends by (intersection index, road id)."""
    ends: dict[tuple[int, str], _RoadEnd] = {}
    for r in roads:
        u, n = r.u, r.n
        a, b = np.asarray(r.a), np.asarray(r.b)
        ta, tb = _trim(r, r.node_a, nodes_at), _trim(r, r.node_b, nodes_at)
        fwd_ids, bwd_ids = [], []
        for k in range(r.lanes):
            off = (k + 0.5) * r.lane_w
            fwd_ids.append(book.new(_sample_line(a + u * ta - n * off, b - u * tb - n * off), r.lane_w, r.speed_limit, "road", road=r.id).id)
        for k in range(r.lanes):
            off = (k + 0.5) * r.lane_w
            bwd_ids.append(book.new(_sample_line(b - u * tb + n * off, a + u * ta + n * off), r.lane_w, r.speed_limit, "road", road=r.id).id)
        for group in (fwd_ids, bwd_ids):
            for k in range(len(group) - 1):
                book.by_id[group[k]].right = group[k + 1]
                book.by_id[group[k + 1]].left = group[k]
        if r.node_b is not None:
            ends[(r.node_b, r.id)] = _RoadEnd(r, fwd_ids, bwd_ids, -u)
        if r.node_a is not None:
            ends[(r.node_a, r.id)] = _RoadEnd(r, bwd_ids, fwd_ids, u)
    return ends


@dataclass
class _Markings:
    """What is painted and posted at the intersections (see :class:`TownNetwork`)."""

    crosswalks: list[tuple[str, F64]] = field(default_factory=list)
    stop_lines: list[F64] = field(default_factory=list)
    stop_signs: list[tuple[float, float, float]] = field(default_factory=list)


def _approach_markings(nd: Node, e: _RoadEnd, marks: _Markings) -> None:
    """The crosswalk over the whole road width (lanes + parking), the stop line across the incoming
    lanes and, on a minor road, the stop sign of one intersection arm."""
    road, o = e.road, e.outward
    travel = -o  # direction of incoming traffic
    perp = nd.half_x if abs(o[0]) > 0.5 else nd.half_y
    c = np.asarray(nd.center)
    side = np.array([-o[1], o[0]])  # left of outward
    hw = road.half_w
    q = [c + o * (perp + CROSSWALK_NEAR) + side * hw, c + o * (perp + CROSSWALK_FAR) + side * hw,
         c + o * (perp + CROSSWALK_FAR) - side * hw, c + o * (perp + CROSSWALK_NEAR) - side * hw]
    marks.crosswalks.append((f"cw_{nd.id}_{road.id}", np.array(q)))
    # stop line across the incoming lanes (on the right of incoming traffic = +side of outward)
    rs = np.array([-travel[1], travel[0]]) * -1.0  # right of travel
    s0, s1 = perp + STOP_LINE_AT - STOP_LINE_W / 2, perp + STOP_LINE_AT + STOP_LINE_W / 2
    w_in = road.lanes_half_w
    marks.stop_lines.append(np.array([c + o * s0, c + o * s1, c + o * s1 + rs * w_in, c + o * s0 + rs * w_in]))
    if not road.main:
        p = c + o * (perp + STOP_LINE_AT) + rs * (road.half_w + 0.6)
        marks.stop_signs.append((float(p[0]), float(p[1]), float(math.atan2(o[1], o[0]))))


def _exit_direction(turn: str, k: int, n_in: int, travel: F64) -> F64 | None:
    """Where a ``turn`` from incoming lane ``k`` (of ``n_in``, inner first) leads, or None when
    that lane may not make it (right turns from the outer lane only, left from the inner)."""
    if turn == "straight":
        return travel
    if turn == "right":
        return np.array([travel[1], -travel[0]]) if k == n_in - 1 else None
    return np.array([-travel[1], travel[0]]) if k == 0 else None


def _connector(book: _LaneBook, nd: Node, turn: str, lane_in: LaneRec, lane_out: LaneRec, travel: F64, exit_dir: F64) -> LaneRec:
    """A connector lane through ``nd`` from the end of ``lane_in`` to the start of ``lane_out``:
    a straight line, or a Bezier turn whose speed limit keeps the lateral acceleration at
    :data:`A_LAT`."""
    p0, p3 = lane_in.pts[-1], lane_out.pts[0]
    if turn == "straight":
        pts = _sample_line(p0, p3, 2.0)
        limit = min(lane_in.speed_limit, lane_out.speed_limit)
    else:
        pts = _bezier_turn(p0, travel, p3, exit_dir)
        kap = _max_curvature(pts)
        limit = min(lane_in.speed_limit, math.sqrt(A_LAT / max(kap, 1e-3)))
    conn = book.new(pts, min(lane_in.width, lane_out.width), round(limit, 2), "connector",
                    node=nd.id, turn=turn, successors=[lane_out.id], predecessors=[lane_in.id])
    lane_in.successors.append(conn.id)
    lane_out.predecessors.append(conn.id)
    return conn


def _arm_connectors(book: _LaneBook, nd: Node, e: _RoadEnd, ends: dict[tuple[int, str], _RoadEnd]) -> list[str]:
    """Connectors from each incoming lane of one intersection arm (straight, right, left where
    allowed); marks the incoming lanes of a minor road as stopping. Returns the connector ids."""
    travel = -e.outward
    ids: list[str] = []
    for k, lid in enumerate(e.in_ids):
        lane_in = book.by_id[lid]
        lane_in.stop = not e.road.main
        for turn in ("straight", "right", "left"):
            exit_dir = _exit_direction(turn, k, len(e.in_ids), travel)
            if exit_dir is None:
                continue
            ex = [e2 for (nid, _), e2 in ends.items() if nid == nd.index and np.dot(e2.outward, exit_dir) > 0.9]
            if not ex:
                continue
            out_ids = ex[0].out_ids
            kk = {"straight": min(k, len(out_ids) - 1), "right": len(out_ids) - 1, "left": 0}[turn]
            ids.append(_connector(book, nd, turn, lane_in, book.by_id[out_ids[kk]], travel, exit_dir).id)
    return ids


def _mark_conflicts(conn_ids: list[str], by_id: dict[str, LaneRec]) -> None:
    """Record as conflicting the connectors of one intersection that come from different lanes and
    merge into the same lane or pass closer than :data:`CONFLICT_DIST`."""
    geoms = {cid: LineString(by_id[cid].pts) for cid in conn_ids}
    for i1, c1 in enumerate(conn_ids):
        for c2 in conn_ids[i1 + 1:]:
            l1, l2 = by_id[c1], by_id[c2]
            if l1.predecessors == l2.predecessors:
                continue
            if l1.successors == l2.successors or geoms[c1].distance(geoms[c2]) < CONFLICT_DIST:
                l1.conflicts.append(c2)
                l2.conflicts.append(c1)


def _intersection(nd: Node, ends: dict[tuple[int, str], _RoadEnd], book: _LaneBook, marks: _Markings) -> None:
    """Markings, signs and connector lanes of one intersection, arm by arm counter-clockwise from
    east, then the conflicts between its connectors."""
    arms = [e for key, e in ends.items() if key[0] == nd.index]
    arms.sort(key=lambda e: math.atan2(e.outward[1], e.outward[0]) % (2 * math.pi))
    conn_ids: list[str] = []
    for e in arms:
        _approach_markings(nd, e, marks)
        conn_ids += _arm_connectors(book, nd, e, ends)
    _mark_conflicts(conn_ids, book.by_id)


def _areas(roads: list[Road], nodes: list[Node], lay: _Layout) -> tuple[Any, Any, Any]:
    """Shapely areas: asphalt (roads with run-outs at dead ends and intersections, rounded
    corners), the sidewalk ring around it and the whole town's box."""
    rects = []
    for r in roads:
        a, b = np.asarray(r.a), np.asarray(r.b)
        ext_a = ROAD_RUNOUT if r.node_a is None else 0.0
        ext_b = ROAD_RUNOUT if r.node_b is None else 0.0
        rects.append(LineString([a - r.u * ext_a, b + r.u * ext_b]).buffer(r.half_w, cap_style="flat"))
    for nd in nodes:
        rects.append(box(nd.center[0] - nd.half_x, nd.center[1] - nd.half_y, nd.center[0] + nd.half_x, nd.center[1] + nd.half_y))
    road_area = shapely.union_all(rects)
    road_area = road_area.buffer(CORNER_R, join_style="round").buffer(-CORNER_R, join_style="round")
    outer = road_area.buffer(SIDEWALK_W, join_style="round", cap_style="flat")
    sidewalk_area = outer.difference(road_area)
    xmin, xmax = min(lay.xs) - max(lay.arms), max(lay.xs) + max(lay.arms)
    ymin, ymax = min(lay.ys) - max(lay.arms), max(lay.ys) + max(lay.arms)
    return road_area, sidewalk_area, box(xmin, ymin, xmax, ymax)


def _parking(roads: list[Road], nodes_at: dict[int, Node]) -> list[ParkingSlot]:
    """Parking slots (6.5 m apart) along the outer edge of each road, away from the intersections."""
    parking: list[ParkingSlot] = []
    for r in roads:
        a = np.asarray(r.a)
        ta, tb = _trim(r, r.node_a, nodes_at) + 4.0, _trim(r, r.node_b, nodes_at) + 4.0
        usable = r.length - ta - tb
        if usable < 6.0:
            continue
        n_slots = int(usable // 6.5)
        yaw_f = math.atan2(r.u[1], r.u[0])
        for side_sign, yaw in ((-1.0, yaw_f), (1.0, yaw_f + math.pi)):
            for k in range(n_slots):
                s = ta + 3.25 + 6.5 * k
                p = a + r.u * s + side_sign * r.n * (r.lanes_half_w + PARKING_W / 2)
                parking.append(ParkingSlot(float(p[0]), float(p[1]), float((yaw + math.pi) % (2 * math.pi) - math.pi), r.id))
    return parking


def build_network(preset: TownPreset, rng: np.random.Generator) -> TownNetwork:
    """Lay out the road grid of ``preset`` with random sizes from ``rng``: roads, intersections,
    lanes (road lanes, then each intersection's connectors), markings, areas and parking."""
    lay = _draw_layout(preset, rng)
    roads = _grid_roads(lay)
    nodes = _grid_nodes(lay, roads)
    nodes_at = {nd.index: nd for nd in nodes}
    book = _LaneBook()
    ends = _road_lanes(book, roads, nodes_at)
    marks = _Markings()
    for nd in nodes:
        _intersection(nd, ends, book, marks)
    road_area, sidewalk_area, town_area = _areas(roads, nodes, lay)
    return TownNetwork(
        roads=tuple(roads),
        nodes=tuple(nodes),
        lanes=tuple(book.lanes),
        crosswalks=tuple(marks.crosswalks),
        stop_lines=tuple(marks.stop_lines),
        stop_signs=tuple(marks.stop_signs),
        parking=tuple(_parking(roads, nodes_at)),
        road_area=road_area,
        sidewalk_area=sidewalk_area,
        town_area=town_area,
    )


def road_edge_polygon(r: Road) -> Polygon:
    """The asphalt rectangle of one road between its ends (no run-out)."""
    return LineString([r.a, r.b]).buffer(r.half_w, cap_style="flat")
