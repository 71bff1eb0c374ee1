"""Ground-truth traffic of the synthetic town: lane-following vehicles with IDM car following and an
intersection reservation rule (stop signs on the minor roads, first come first served, the ego has
priority), a cyclist riding at the right edge of its lane and pedestrians walking the sidewalk and
crossing at a zebra (vehicles treat them as obstacles; they wait while a vehicle is close).

Everything is simulated along dense 1 m path polylines in the world frame (metres, seconds, m/s,
radians) with a fixed step and written out as :class:`sim.log.Track` samples at the frame times.
This is a *log generator*, not the simulator's behaviour model (that is :mod:`sim.behavior`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely
from numpy.typing import NDArray

from sim.log import Track
from sim.synth.network import KERB_H, SIDEWALK_W, TownNetwork

__all__ = ["Agent", "PathLine", "build_path", "simulate_traffic"]

F64 = NDArray[np.float64]

A_LAT = 2.2  # m/s^2, comfortable lateral acceleration
B_COMF = 1.6  # m/s^2, comfortable deceleration for the speed profile


@dataclass(frozen=True)
class Entry:
    """Passing through an intersection connector along a path: arc lengths on the path (m)."""

    conn: str
    s_enter: float
    s_exit: float
    stop: bool
    conflicts: frozenset[str]


@dataclass
class PathLine:
    """A dense polyline (about 1 m spacing) with heading, speed profile and lane labels."""

    pts: F64
    s: F64
    yaw: F64  # unwrapped, per vertex
    vmax: F64  # m/s, curvature- and limit-aware profile (with comfortable braking ahead of curves)
    lanes: tuple[str, ...]  # lane id per vertex
    entries: tuple[Entry, ...] = ()

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def at(self, s: float, lateral: float = 0.0) -> tuple[float, float, float]:
        """(x, y, yaw) at arc length ``s`` with a lateral offset (positive = left)."""
        s = min(max(s, 0.0), self.length)
        x = float(np.interp(s, self.s, self.pts[:, 0]))
        y = float(np.interp(s, self.s, self.pts[:, 1]))
        yaw = float(np.interp(s, self.s, self.yaw))
        if lateral:
            x -= math.sin(yaw) * lateral
            y += math.cos(yaw) * lateral
        return x, y, yaw

    def project(self, xy: F64, s_lo: float, s_hi: float) -> tuple[F64, F64]:
        """Arc length and signed lateral offset of points (M, 2) against the part [s_lo, s_hi]."""
        i0 = max(0, int(np.searchsorted(self.s, s_lo)) - 1)
        i1 = min(len(self.s) - 1, int(np.searchsorted(self.s, s_hi)) + 1)
        if i1 <= i0:
            i1 = min(i0 + 1, len(self.s) - 1)
            i0 = i1 - 1
        a = self.pts[i0:i1]
        b = self.pts[i0 + 1:i1 + 1]
        seg = b - a
        ln = np.linalg.norm(seg, axis=1)
        d = seg / np.maximum(ln, 1e-9)[:, None]
        rel = xy[:, None, :] - a[None]
        t = np.clip(np.einsum("msk,sk->ms", rel, d), 0.0, ln[None])
        foot = a[None] + t[..., None] * d[None]
        dist2 = np.sum((xy[:, None, :] - foot) ** 2, axis=-1)
        j = np.argmin(dist2, axis=1)
        m = np.arange(len(xy))
        s = self.s[i0 + j] + t[m, j]
        r = rel[m, j]
        lat = d[j, 0] * r[:, 1] - d[j, 1] * r[:, 0]
        return s, lat


def _speed_profile(pts: F64, s: F64, limit: F64, factor: float) -> tuple[F64, F64]:
    d = np.diff(pts, axis=0)
    yaw_seg = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
    yaw = np.empty(len(pts))
    yaw[0] = yaw_seg[0]
    yaw[-1] = yaw_seg[-1]
    if len(yaw_seg) > 1:
        yaw[1:-1] = 0.5 * (yaw_seg[1:] + yaw_seg[:-1])
    ds = np.maximum(np.diff(s), 1e-6)
    kappa = np.zeros(len(pts))
    if len(yaw_seg) > 1:
        kappa[1:-1] = np.abs(np.diff(yaw_seg)) / np.maximum(0.5 * (ds[1:] + ds[:-1]), 1e-6)
    # smooth curvature a little (Bezier samples are coarse)
    if len(kappa) > 4:
        kappa = np.convolve(np.pad(kappa, 2, mode="edge"), np.ones(5) / 5, mode="valid")
    v = np.minimum(limit * factor, np.sqrt(A_LAT / np.maximum(kappa, 1e-4)))
    for i in range(len(v) - 2, -1, -1):  # comfortable braking before curves
        v[i] = min(v[i], math.sqrt(v[i + 1] ** 2 + 2 * B_COMF * ds[i]))
    return yaw, v


def build_path(net: TownNetwork, route: Sequence[str], *, start_s: float = 0.0, factor: float = 1.0,
               lane_change_len: float = 25.0) -> PathLine:
    """Dense path along ``route`` (lane ids). Consecutive same-direction neighbours in the route are
    a lane change, blended with a smoothstep over ``lane_change_len`` metres; ``start_s`` is the
    arc length on the first lane where the path begins."""
    by_id = net.lane_by_id
    pts_all: list[F64] = []
    lim_all: list[F64] = []
    lab_all: list[str] = []
    entries_raw: list[tuple[str, int, int]] = []
    s_from = start_s
    i = 0
    while i < len(route):
        ln = by_id[route[i]]
        nxt = by_id[route[i + 1]] if i + 1 < len(route) else None
        cl = ln.pts
        seg = np.linalg.norm(np.diff(cl, axis=0), axis=1)
        cs = np.concatenate([[0.0], np.cumsum(seg)])
        length = float(cs[-1])
        if nxt is not None and nxt.id in (ln.left, ln.right):
            # lane change: blend from ln to nxt (parallel lanes: same arc-length parametrisation)
            s0 = max(s_from + 3.0, length - lane_change_len - 12.0)
            s1 = min(length - 2.0, s0 + lane_change_len)
            ss = np.arange(s_from, s1, 1.0)
            ss = np.append(ss, s1)
            cs2 = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(nxt.pts, axis=0), axis=1))])
            pa = np.stack([np.interp(ss, cs, cl[:, 0]), np.interp(ss, cs, cl[:, 1])], axis=1)
            pb = np.stack([np.interp(ss, cs2, nxt.pts[:, 0]), np.interp(ss, cs2, nxt.pts[:, 1])], axis=1)
            a = np.clip((ss - s0) / max(s1 - s0, 1e-6), 0.0, 1.0)
            a = a * a * (3 - 2 * a)
            p = pa * (1 - a[:, None]) + pb * a[:, None]
            labels = [ln.id if aa < 0.5 else nxt.id for aa in a]
            pts_all.append(p if not pts_all else p[1:])
            lim_all.append(np.full(len(p) - (1 if len(pts_all) > 1 else 0), ln.speed_limit))
            lab_all.extend(labels if len(pts_all) == 1 else labels[1:])
            s_from = s1
            i += 1
            continue
        ss = np.arange(s_from, length, 1.0 if ln.kind == "road" else 0.5)
        ss = np.append(ss, length)
        if len(ss) >= 2 and ss[-1] - ss[-2] < 0.2:
            ss = np.delete(ss, -2)
        p = np.stack([np.interp(ss, cs, cl[:, 0]), np.interp(ss, cs, cl[:, 1])], axis=1)
        first = not pts_all
        start_idx = sum(len(x) for x in pts_all)
        if not first:
            p = p[1:]
        pts_all.append(p)
        lim_all.append(np.full(len(p), ln.speed_limit))
        lab_all.extend([ln.id] * len(p))
        if ln.kind == "connector":
            entries_raw.append((ln.id, start_idx - (0 if first else 1), start_idx + len(p) - 1))
        s_from = 0.0
        i += 1
    pts = np.concatenate(pts_all, axis=0)
    keep = np.concatenate([[True], np.linalg.norm(np.diff(pts, axis=0), axis=1) > 1e-6])
    idx_map = np.cumsum(keep) - 1
    pts = pts[keep]
    lim = np.concatenate(lim_all)[keep]
    labels = tuple(lab for lab, k in zip(lab_all, keep, strict=True) if k)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    yaw, vmax = _speed_profile(pts, s, lim, factor)
    entries = []
    for cid, a_i, b_i in entries_raw:
        c = by_id[cid]
        pred = by_id[c.predecessors[0]]
        entries.append(Entry(cid, float(s[idx_map[max(a_i, 0)]]), float(s[idx_map[min(b_i, len(idx_map) - 1)]]),
                             pred.stop, frozenset(c.conflicts)))
    return PathLine(pts, s, yaw, vmax, labels, tuple(entries))


@dataclass
class Agent:
    """A moving participant during log generation."""

    id: str
    cls: str
    size: tuple[float, float, float]
    path: PathLine
    s: float
    v: float
    lateral: float = 0.0
    pedestrian: bool = False
    ego: bool = False
    a_max: float = 1.5
    crossing: tuple[float, float] | None = None  # pedestrians: path s range on the zebra
    crosswalk: object | None = None  # shapely polygon of that zebra
    cw_index: int = -1  # pedestrians: index of that zebra in the network
    cw_spans: list[tuple[int, float]] = field(default_factory=list)  # vehicles: (zebra, path s where it starts)
    alive: bool = True
    entry_i: int = 0
    reserved: str | None = None
    stopped_for: set[str] = field(default_factory=set)
    first_t: int = 0
    samples: list[tuple[float, float, float, float]] = field(default_factory=list)
    sample_t: list[int] = field(default_factory=list)


def _idm(v: float, v0: float, gap: float, dv: float, a_max: float, b: float = 2.0, s0: float = 2.0, T: float = 1.2) -> float:
    v0 = max(v0, 0.1)
    free = 1.0 - (v / v0) ** 4
    if not math.isfinite(gap):
        return a_max * free
    s_star = s0 + max(0.0, v * T + v * dv / (2 * math.sqrt(a_max * b)))
    return a_max * (free - (s_star / max(gap, 0.05)) ** 2)


class _Traffic:
    """One run of the log generator's traffic: the agents, the network lookups and the
    intersection reservations (connector id -> id of the agent allowed through)."""

    def __init__(self, net: TownNetwork, agents: list[Agent]) -> None:
        self.net = net
        self.by_lane = net.lane_by_id
        self.agents = agents
        self.reservations: dict[str, str] = {}

    def conflicts_free(self, a: Agent, e: Entry) -> bool:
        """Whether no other agent holds a connector conflicting with (or merging into) ``e``'s."""
        for c, owner in self.reservations.items():
            if owner != a.id and (c in e.conflicts or (self.by_lane[c].successors == self.by_lane[e.conn].successors and c != e.conn)):
                return False
        return True

    def mark_zebra_spans(self) -> None:
        """Record where each vehicle's path enters each zebra (vehicles give way to pedestrians on it)."""
        cw_polys = [shapely.Polygon(q).buffer(0.6) for _cid, q in self.net.crosswalks]
        for a in self.agents:
            if a.pedestrian:
                continue
            for k, poly in enumerate(cw_polys):
                inside = shapely.contains_xy(poly, a.path.pts[:, 0], a.path.pts[:, 1])
                if inside.any():
                    i0 = int(np.argmax(inside))
                    a.cw_spans.append((k, float(a.path.s[max(i0 - 1, 0)])))

    def give_ego_priority(self) -> None:
        """Reserve the ego's first intersection for it."""
        for a in self.agents:
            if a.ego and a.path.entries:
                e = a.path.entries[0]
                self.reservations[e.conn] = a.id
                a.reserved = e.conn
                a.stopped_for.add(e.conn)

    def record(self, fi: int, t_us: int) -> None:
        """Append every live agent's pose (x, y, z = kerb height for pedestrians on the sidewalk,
        yaw) at frame ``fi``, time ``t_us``."""
        for a in self.agents:
            if not a.alive:
                continue
            x, y, yaw = a.path.at(a.s, a.lateral)
            z = KERB_H if a.pedestrian and shapely.contains_xy(self.net.sidewalk_area, x, y) else 0.0
            if not a.samples:
                a.first_t = fi
            a.samples.append((x, y, z, yaw))
            a.sample_t.append(t_us)

    def step(self, h: float) -> None:
        """Advance ``h`` seconds: every vehicle's acceleration from the positions at the start of
        the step (IDM on the nearest obstacle), then each agent moves in turn."""
        live = [a for a in self.agents if a.alive]
        xy = np.array([a.path.at(a.s, a.lateral)[:2] for a in live])
        yaws = np.array([a.path.at(a.s)[2] for a in live])
        acc = {a.id: self._vehicle_accel(i, live, xy, yaws) for i, a in enumerate(live) if not a.pedestrian}
        for a in live:
            if a.pedestrian:
                self._walk(a, live, h)
            else:
                self._drive(a, acc[a.id], h)

    # ------------------------------------------------------------------------------ vehicles
    def _vehicle_accel(self, i: int, live: list[Agent], xy: F64, yaws: F64) -> float:
        """IDM acceleration (m/s^2, at least -8) of vehicle ``live[i]`` towards its speed profile,
        behind the nearest of: the vehicle ahead, a zebra in use, an intersection it may not
        enter yet and (the ego) the end of its path."""
        a = live[i]
        v0 = float(np.interp(a.s, a.path.s, a.path.vmax))
        gap, dv = _lead_gap(i, live, xy, yaws)
        gap, dv = _zebra_gap(a, live, gap, dv)
        gap, dv = self._intersection_gap(a, gap, dv)
        if a.ego:  # end of the path: stop there (the ego) or drive off the map (others)
            g = a.path.length - a.s - a.size[0] / 2 - 1.0
            if g < gap:
                gap, dv = max(g, 0.05), a.v
        return max(-8.0, _idm(a.v, v0, gap, dv, a.a_max))

    def _intersection_gap(self, a: Agent, gap: float, dv: float) -> tuple[float, float]:
        """Stop before the next intersection entry unless reserved: reserve it when close, first
        in line, past the stop sign (if any) and free of conflicting reservations."""
        if a.entry_i >= len(a.path.entries):
            return gap, dv
        e = a.path.entries[a.entry_i]
        if a.reserved == e.conn:
            return gap, dv
        to_entry = e.s_enter - (a.s + a.size[0] / 2)
        if e.stop and e.conn not in a.stopped_for and to_entry < 3.0 and a.v < 0.3:
            a.stopped_for.add(e.conn)
        near = to_entry < max(25.0, a.v * a.v / 3.0 + 10.0)
        first = gap > to_entry - 0.5
        may = (not e.stop) or e.conn in a.stopped_for
        if near and first and may and self.conflicts_free(a, e):
            self.reservations[e.conn] = a.id
            a.reserved = e.conn
            return gap, dv
        g = max(to_entry + 0.3, 0.05)
        return (g, a.v) if g < gap else (gap, dv)

    def _drive(self, a: Agent, ac: float, h: float) -> None:
        """Move vehicle ``a`` with acceleration ``ac`` for ``h`` s; release an intersection it has
        left, and retire it (with its reservations) at the end of its path (except the ego)."""
        nv = max(0.0, a.v + ac * h)
        a.s += 0.5 * (a.v + nv) * h
        a.v = nv
        if a.entry_i < len(a.path.entries):
            e = a.path.entries[a.entry_i]
            if a.s - a.size[0] / 2 > e.s_exit + 0.5:
                if self.reservations.get(e.conn) == a.id:
                    del self.reservations[e.conn]
                a.reserved = None
                a.entry_i += 1
        if not a.ego and a.s > a.path.length - a.size[0] / 2 - 0.5:
            a.alive = False
            for c in [c for c, o in self.reservations.items() if o == a.id]:
                del self.reservations[c]

    # ------------------------------------------------------------------------------ pedestrians
    @staticmethod
    def _walk(a: Agent, live: list[Agent], h: float) -> None:
        """Walk pedestrian ``a`` on for ``h`` s, unless it is about to step onto a zebra that a
        vehicle occupies or approaches without being able to stop."""
        v = a.v if a.v > 0 else 1.3
        assert a.crossing is not None
        if a.s < a.crossing[0] and a.s + v * h >= a.crossing[0] - 0.3 and _zebra_busy(a, live):
            return
        a.s = min(a.s + v * h, a.path.length)


def _lead_gap(i: int, live: list[Agent], xy: F64, yaws: F64) -> tuple[float, float]:
    """Bumper gap (m) to the nearest agent ahead of vehicle ``live[i]`` within its lookahead and
    lateral reach, and the closing speed (m/s); (inf, 0) when there is none."""
    a = live[i]
    length, width = a.size[0], a.size[1]
    gap, dv = math.inf, 0.0
    lookahead = 12.0 + 4.0 * a.v + length
    d2 = np.sum((xy - xy[i]) ** 2, axis=1)
    others = [j for j in np.nonzero(d2 < (lookahead + 8.0) ** 2)[0].tolist() if j != i]
    if not others:
        return gap, dv
    s_o, d_o = a.path.project(xy[others], a.s - 1.0, a.s + lookahead)
    for k, j in enumerate(others):
        b = live[j]
        ds = s_o[k] - a.s
        if ds <= 0 or ds > lookahead:
            continue
        dyaw = yaws[j] - float(np.interp(s_o[k], a.path.s, a.path.yaw))
        half_ext = 0.5 * (b.size[0] * abs(math.cos(dyaw)) + b.size[1] * abs(math.sin(dyaw)))
        if abs(d_o[k] - a.lateral) > width / 2 + 0.5 * (b.size[0] * abs(math.sin(dyaw)) + b.size[1] * abs(math.cos(dyaw))) + 0.35:
            continue
        g = ds - length / 2 - half_ext
        if g < gap:
            gap, dv = g, a.v - b.v * math.cos(dyaw)
    return gap, dv


def _zebra_gap(a: Agent, live: list[Agent], gap: float, dv: float) -> tuple[float, float]:
    """Pedestrians on a zebra ahead: stop before it (unless already on it)."""
    for b in live:
        if b.pedestrian and b.crossing is not None and b.crossing[0] - 0.2 <= b.s <= b.crossing[1]:
            for k, s_in in a.cw_spans:
                if k == b.cw_index:
                    g = s_in - (a.s + a.size[0] / 2)
                    if -0.3 < g < gap:
                        gap, dv = max(g - 0.3, 0.05), a.v
    return gap, dv


def _zebra_busy(a: Agent, live: list[Agent]) -> bool:
    """Whether a vehicle is on pedestrian ``a``'s zebra, or coming without room to stop (cyclists
    standing still do not count)."""
    for b in live:
        if b.pedestrian or (b.cls == "cyclist" and b.v < 0.5):
            continue
        bx, by_, byaw = b.path.at(b.s, b.lateral)
        dist = shapely.distance(a.crosswalk, _box(bx, by_, byaw, b.size))
        if dist < 0.05 or (b.v > 0.5 and dist < 0.8 + 1.8 * b.v):
            return True
    return False


def simulate_traffic(net: TownNetwork, agents: list[Agent], t_us: NDArray[np.int64], dt_s: float, substeps: int = 1) -> None:
    """Advance ``agents`` in place over the frame times, recording a pose sample at each frame."""
    sim = _Traffic(net, agents)
    sim.mark_zebra_spans()
    sim.give_ego_priority()
    h = dt_s / substeps
    for fi in range(len(t_us)):
        sim.record(fi, int(t_us[fi]))
        if fi == len(t_us) - 1:
            break
        for _ in range(substeps):
            sim.step(h)


def _box(x: float, y: float, yaw: float, size: tuple[float, float, float]) -> shapely.Polygon:
    c, s_ = math.cos(yaw), math.sin(yaw)
    hl, hw = size[0] / 2, size[1] / 2
    pts = [(x + c * u - s_ * w, y + s_ * u + c * w) for u, w in ((hl, hw), (-hl, hw), (-hl, -hw), (hl, -hw))]
    return shapely.Polygon(pts)


def agent_track(a: Agent, static: bool = False) -> Track:
    """The recorded samples of ``a`` as a :class:`Track` (yaw wrapped to [-pi, pi))."""
    pose = np.asarray(a.samples, dtype=np.float64)
    pose[:, 3] = (pose[:, 3] + np.pi) % (2 * np.pi) - np.pi
    return Track(a.id, a.cls, tuple(float(round(v, 3)) for v in a.size), np.asarray(a.sample_t, dtype=np.int64), pose, static)  # type: ignore[arg-type]


def pedestrian_path(net: TownNetwork, cw_index: int, forward: bool, lead_m: float, tail_m: float,
                    band_offset: float = 0.0) -> tuple[PathLine, tuple[float, float]]:
    """A walk along the sidewalk to zebra ``cw_index``, across it (``band_offset`` metres off the
    middle of the 3 m band, positive away from the intersection), and on along the far sidewalk.

    Returns the path and the arc-length range spent on the zebra.
    """
    _cid, q = net.crosswalks[cw_index]
    m_plus = 0.5 * (q[0] + q[1])
    m_minus = 0.5 * (q[2] + q[3])
    across = (m_minus - m_plus) / np.linalg.norm(m_minus - m_plus)
    along_out = (q[1] - q[0]) / np.linalg.norm(q[1] - q[0])  # away from the intersection
    m_plus = m_plus + along_out * band_offset
    m_minus = m_minus + along_out * band_offset
    a_side, b_side = (m_plus, m_minus) if forward else (m_minus, m_plus)
    sgn = 1.0 if forward else -1.0
    b = a_side - sgn * across * (SIDEWALK_W / 2)
    c = b_side + sgn * across * (SIDEWALK_W / 2)
    a = b + along_out * lead_m
    d = c + along_out * tail_m
    corners = [a, b, c, d]
    pts = [corners[0]]
    for p0, p1 in itertools.pairwise(corners):
        n = max(2, math.ceil(float(np.linalg.norm(p1 - p0)) / 0.5) + 1)
        t = np.linspace(0, 1, n)[1:, None]
        pts.extend(list(p0 * (1 - t) + p1 * t))
    pts_a = np.asarray(pts)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts_a, axis=0), axis=1))])
    d_ = np.diff(pts_a, axis=0)
    yaw_seg = np.unwrap(np.arctan2(d_[:, 1], d_[:, 0]))
    yaw = np.concatenate([yaw_seg, yaw_seg[-1:]])
    s_b = float(np.linalg.norm(b - a))
    s_c = s_b + float(np.linalg.norm(c - b))
    path = PathLine(pts_a, s, yaw, np.full(len(s), 1.4), tuple(["sidewalk"] * len(s)))
    # the zebra proper starts where the kerb is
    return path, (s_b + SIDEWALK_W / 2 - 0.3, s_c - SIDEWALK_W / 2 + 0.3)
