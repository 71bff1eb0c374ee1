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


def build_network(preset: TownPreset, rng: np.random.Generator) -> TownNetwork:
    """Lay out the road grid of ``preset`` with random sizes from ``rng``."""
    nx_, ny_ = preset.grid
    lane_w = float(np.round(rng.uniform(3.2, 3.6), 2))
    main_limit = float(rng.choice([11.1, 12.5, 13.9]))
    minor_limit = float(rng.choice([8.3, 9.7, 11.1]))
    # grid coordinates
    xs = [0.0]
    for _ in range(nx_ - 1):
        xs.append(xs[-1] + float(np.round(rng.uniform(*preset.block_m), 1)))
    ys = [0.0]
    for _ in range(ny_ - 1):
        ys.append(ys[-1] + float(np.round(rng.uniform(*preset.block_m), 1)))
    j_main = ny_ // 2
    minor_lanes_col = [int(rng.choice(preset.minor_lanes)) for _ in range(nx_)]
    arm = [float(np.round(rng.uniform(*preset.arm_m), 1)) for _ in range(2 * (nx_ + ny_))]
    arm_i = iter(arm)

    node_index = {(i, j): i + nx_ * j for j in range(ny_) for i in range(nx_)}
    roads: list[Road] = []

    def add_road(a: tuple[float, float], b: tuple[float, float], horizontal: bool, row_or_col: int, na: int | None, nb: int | None) -> None:
        main = horizontal and row_or_col == j_main
        lanes = 2 if horizontal and main else (2 if horizontal else minor_lanes_col[row_or_col])
        limit = main_limit if horizontal else minor_limit
        roads.append(Road(f"r{len(roads)}", a, b, lanes, lane_w, limit, main, na, nb))

    for j in range(ny_):  # east-west roads
        y = ys[j]
        add_road((xs[0] - next(arm_i), y), (xs[0], y), True, j, None, node_index[(0, j)])
        for i in range(nx_ - 1):
            add_road((xs[i], y), (xs[i + 1], y), True, j, node_index[(i, j)], node_index[(i + 1, j)])
        add_road((xs[-1], y), (xs[-1] + next(arm_i), y), True, j, node_index[(nx_ - 1, j)], None)
    for i in range(nx_):  # north-south roads
        x = xs[i]
        add_road((x, ys[0] - next(arm_i)), (x, ys[0]), False, i, None, node_index[(i, 0)])
        for j in range(ny_ - 1):
            add_road((x, ys[j]), (x, ys[j + 1]), False, i, node_index[(i, j)], node_index[(i, j + 1)])
        add_road((x, ys[-1]), (x, ys[-1] + next(arm_i)), False, i, node_index[(i, ny_ - 1)], None)

    nodes: list[Node] = []
    for j in range(ny_):
        for i in range(nx_):
            k = node_index[(i, j)]
            at = [r for r in roads if k in (r.node_a, r.node_b)]
            hx = max(r.half_w for r in at if abs(r.u[1]) > 0.5)  # north-south roads set the x extent
            hy = max(r.half_w for r in at if abs(r.u[0]) > 0.5)
            nodes.append(Node(f"n{k}", k, (xs[i], ys[j]), hx, hy))
    node_by_index = {n.index: n for n in nodes}

    def trim(road: Road, node: int | None) -> float:
        if node is None:
            return 0.0
        nd = node_by_index[node]
        perp = nd.half_x if abs(road.u[0]) > 0.5 else nd.half_y
        return perp + LANE_TRIM

    lanes: list[LaneRec] = []
    counter = [0]

    def new_id() -> str:
        lid = f"lane_{counter[0]}"
        counter[0] += 1
        return lid

    # per road end: incoming and outgoing lane ids at a node, ordered inner -> outer
    ends: dict[tuple[int, str], dict[str, Any]] = {}
    for r in roads:
        u, n = r.u, r.n
        a, b = np.asarray(r.a), np.asarray(r.b)
        ta, tb = trim(r, r.node_a), trim(r, r.node_b)
        fwd_ids, bwd_ids = [], []
        for k in range(r.lanes):
            off = (k + 0.5) * r.lane_w
            p0 = a + u * ta - n * off
            p1 = b - u * tb - n * off
            fid = new_id()
            lanes.append(LaneRec(fid, _sample_line(p0, p1), r.lane_w, r.speed_limit, "road", road=r.id))
            fwd_ids.append(fid)
        for k in range(r.lanes):
            off = (k + 0.5) * r.lane_w
            p0 = b - u * tb + n * off
            p1 = a + u * ta + n * off
            bid = new_id()
            lanes.append(LaneRec(bid, _sample_line(p0, p1), r.lane_w, r.speed_limit, "road", road=r.id))
            bwd_ids.append(bid)
        by_id = {ln.id: ln for ln in lanes}
        for group in (fwd_ids, bwd_ids):
            for k in range(len(group) - 1):
                by_id[group[k]].right = group[k + 1]
                by_id[group[k + 1]].left = group[k]
        if r.node_b is not None:
            ends[(r.node_b, r.id)] = {"road": r, "in": fwd_ids, "out": bwd_ids, "outward": -u}
        if r.node_a is not None:
            ends[(r.node_a, r.id)] = {"road": r, "in": bwd_ids, "out": fwd_ids, "outward": u}

    by_id = {ln.id: ln for ln in lanes}
    crosswalks: list[tuple[str, F64]] = []
    stop_lines: list[F64] = []
    stop_signs: list[tuple[float, float, float]] = []
    for nd in nodes:
        arms = [(key[1], e) for key, e in ends.items() if key[0] == nd.index]
        arms.sort(key=lambda a: math.atan2(a[1]["outward"][1], a[1]["outward"][0]) % (2 * math.pi))
        conn_ids: list[str] = []
        for _rid, e in arms:
            road: Road = e["road"]
            o = e["outward"]
            travel = -o  # direction of incoming traffic
            perp = nd.half_x if abs(o[0]) > 0.5 else nd.half_y
            c = np.asarray(nd.center)
            side = np.array([-o[1], o[0]])  # left of outward
            # crosswalk over the whole road width (lanes + parking)
            hw = road.half_w
            q = [c + o * (perp + CROSSWALK_NEAR) + side * hw, c + o * (perp + CROSSWALK_FAR) + side * hw,
                 c + o * (perp + CROSSWALK_FAR) - side * hw, c + o * (perp + CROSSWALK_NEAR) - side * hw]
            crosswalks.append((f"cw_{nd.id}_{road.id}", np.array(q)))
            # stop line across the incoming lanes (on the right of incoming traffic = +side of outward)
            rs = np.array([-travel[1], travel[0]]) * -1.0  # right of travel
            s0, s1 = perp + STOP_LINE_AT - STOP_LINE_W / 2, perp + STOP_LINE_AT + STOP_LINE_W / 2
            w_in = road.lanes_half_w
            stop_lines.append(np.array([c + o * s0, c + o * s1, c + o * s1 + rs * w_in, c + o * s0 + rs * w_in]))
            minor = not road.main
            if minor:
                p = c + o * (perp + STOP_LINE_AT) + rs * (road.half_w + 0.6)
                stop_signs.append((float(p[0]), float(p[1]), float(math.atan2(o[1], o[0]))))
            # connectors from each incoming lane
            in_ids = e["in"]
            for k, lid in enumerate(in_ids):
                lane_in = by_id[lid]
                lane_in.stop = minor
                for turn in ("straight", "right", "left"):
                    if turn == "straight":
                        exit_dir = travel
                    elif turn == "right":
                        if k != len(in_ids) - 1:
                            continue
                        exit_dir = np.array([travel[1], -travel[0]])
                    else:
                        if k != 0:
                            continue
                        exit_dir = np.array([-travel[1], travel[0]])
                    ex = [e2 for (nid, _), e2 in ends.items() if nid == nd.index and np.dot(e2["outward"], exit_dir) > 0.9]
                    if not ex:
                        continue
                    out_ids = ex[0]["out"]
                    kk = {"straight": min(k, len(out_ids) - 1), "right": len(out_ids) - 1, "left": 0}[turn]
                    lane_out = by_id[out_ids[kk]]
                    p0, p3 = lane_in.pts[-1], lane_out.pts[0]
                    if turn == "straight":
                        pts = _sample_line(p0, p3, 2.0)
                        limit = min(lane_in.speed_limit, lane_out.speed_limit)
                    else:
                        pts = _bezier_turn(p0, travel, p3, exit_dir)
                        kap = _max_curvature(pts)
                        limit = min(lane_in.speed_limit, math.sqrt(A_LAT / max(kap, 1e-3)))
                    cid = new_id()
                    conn = LaneRec(cid, pts, min(lane_in.width, lane_out.width), round(limit, 2), "connector",
                                   node=nd.id, turn=turn, successors=[lane_out.id], predecessors=[lane_in.id])
                    lane_in.successors.append(cid)
                    lane_out.predecessors.append(cid)
                    lanes.append(conn)
                    by_id[cid] = conn
                    conn_ids.append(cid)
        # conflicts between connectors of this node that come from different lanes
        geoms = {cid: LineString(by_id[cid].pts) for cid in conn_ids}
        for i1, c1 in enumerate(conn_ids):
            for c2 in conn_ids[i1 + 1:]:
                l1, l2 = by_id[c1], by_id[c2]
                if l1.predecessors == l2.predecessors:
                    continue
                if l1.successors == l2.successors or geoms[c1].distance(geoms[c2]) < CONFLICT_DIST:
                    l1.conflicts.append(c2)
                    l2.conflicts.append(c1)

    # areas
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
    xmin, xmax = min(xs) - max(arm), max(xs) + max(arm)
    ymin, ymax = min(ys) - max(arm), max(ys) + max(arm)
    town_area = box(xmin, ymin, xmax, ymax)

    # parking slots along the outer edge of each road, away from the intersections
    parking: list[ParkingSlot] = []
    for r in roads:
        a, b = np.asarray(r.a), np.asarray(r.b)
        ta, tb = trim(r, r.node_a) + 4.0, trim(r, r.node_b) + 4.0
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

    return TownNetwork(
        roads=tuple(roads),
        nodes=tuple(nodes),
        lanes=tuple(lanes),
        crosswalks=tuple(crosswalks),
        stop_lines=tuple(stop_lines),
        stop_signs=tuple(stop_signs),
        parking=tuple(parking),
        road_area=road_area,
        sidewalk_area=sidewalk_area,
        town_area=town_area,
    )


def road_edge_polygon(r: Road) -> Polygon:
    """The asphalt rectangle of one road between its ends (no run-out)."""
    return LineString([r.a, r.b]).buffer(r.half_w, cap_style="flat")
