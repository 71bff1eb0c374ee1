"""Lane map: lanes, successors and neighbours, routing, Frenet projection, drivable area.

Lanes are directed centrelines in the world frame (metres) with a width; ``left``/``right`` name the
adjacent lane driving in the *same* direction (for lane changes) or are None. Geometry queries use
shapely; routing uses networkx over the successor graph.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import networkx as nx
import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from shapely.geometry import LineString, Polygon
from shapely.strtree import STRtree

from sim.errors import ScenarioError

__all__ = ["Lane", "LaneMap", "Polyline"]


class Polyline:
    """An arc-length parametrised 2D polyline (metres) with vectorised lookup and projection."""

    def __init__(self, points: ArrayLike) -> None:
        p = np.asarray(points, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 2 or len(p) < 2:
            raise ValueError("a polyline needs (N>=2, 2) points")
        keep = np.concatenate([[True], np.linalg.norm(np.diff(p, axis=0), axis=1) > 1e-9])
        p = p[keep]
        if len(p) < 2:
            raise ValueError("a polyline needs two distinct points")
        self.points = p
        seg = np.diff(p, axis=0)
        self.seg_len = np.linalg.norm(seg, axis=1)
        self.seg_dir = seg / self.seg_len[:, None]
        self.seg_yaw = np.arctan2(seg[:, 1], seg[:, 0])
        self.s = np.concatenate([[0.0], np.cumsum(self.seg_len)])

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def interpolate(self, s: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Positions (..., 2) and headings (...) at arc lengths ``s`` (extrapolated linearly
        beyond the ends)."""
        s = np.asarray(s, dtype=np.float64)
        i = np.clip(np.searchsorted(self.s, s, side="right") - 1, 0, len(self.seg_len) - 1)
        ds = s - self.s[i]
        xy = self.points[i] + ds[..., None] * self.seg_dir[i]
        return xy, self.seg_yaw[i]

    def project(self, xy: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Frenet coordinates of points (..., 2): arc length ``s`` of the closest point and signed
        lateral offset ``d`` (positive = left of the direction of travel)."""
        q = np.asarray(xy, dtype=np.float64)
        shp = q.shape[:-1]
        q = q.reshape(-1, 2)
        a = self.points[:-1]
        rel = q[:, None, :] - a[None, :, :]  # (M, S, 2)
        # clip onto each segment, but extrapolate before the first and after the last one
        lo = np.zeros_like(self.seg_len)
        hi = self.seg_len.copy()
        lo[0], hi[-1] = -np.inf, np.inf
        t = np.clip(np.einsum("msk,sk->ms", rel, self.seg_dir), lo[None, :], hi[None, :])
        foot = a[None] + t[..., None] * self.seg_dir[None]
        dist2 = np.sum((q[:, None, :] - foot) ** 2, axis=-1)
        j = np.argmin(dist2, axis=1)
        m = np.arange(len(q))
        s = self.s[j] + t[m, j]
        r = rel[m, j]
        d = self.seg_dir[j, 0] * r[:, 1] - self.seg_dir[j, 1] * r[:, 0]
        return s.reshape(shp), d.reshape(shp)


@dataclass(frozen=True)
class Lane:
    """A directed lane. Units: metres, m/s."""

    id: str
    centerline: NDArray[np.float64]
    width: float
    speed_limit: float
    successors: tuple[str, ...] = ()
    predecessors: tuple[str, ...] = ()
    left: str | None = None
    right: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict, compare=False)

    @cached_property
    def polyline(self) -> Polyline:
        return Polyline(self.centerline)

    @property
    def length(self) -> float:
        return self.polyline.length

    @cached_property
    def polygon(self) -> Polygon:
        """The lane's area: the centreline buffered by half the width with flat ends."""
        return LineString(self.centerline).buffer(self.width / 2.0, cap_style="flat", join_style="round")


class LaneMap:
    """All lanes of a drive log plus crosswalks; built from the ``map.json`` dictionary."""

    def __init__(self, lanes: Sequence[Lane], crosswalks: Sequence[NDArray[np.float64]] = (), raw: dict[str, Any] | None = None) -> None:
        self.lanes: dict[str, Lane] = {ln.id: ln for ln in lanes}
        self.lane_ids: list[str] = [ln.id for ln in lanes]
        self.crosswalks = [np.asarray(c, dtype=np.float64) for c in crosswalks]
        self._raw = raw

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LaneMap:
        """Build from a (validated) ``map.json`` dictionary."""
        lanes = []
        for ln in d["lanes"]:
            extra = {k: v for k, v in ln.items() if k not in {"id", "centerline", "width", "speed_limit", "successors", "predecessors", "left", "right"}}
            lanes.append(
                Lane(
                    id=ln["id"],
                    centerline=np.asarray(ln["centerline"], dtype=np.float64),
                    width=float(ln["width"]),
                    speed_limit=float(ln["speed_limit"]),
                    successors=tuple(ln.get("successors", ())),
                    predecessors=tuple(ln.get("predecessors", ())),
                    left=ln.get("left"),
                    right=ln.get("right"),
                    attrs=extra,
                )
            )
        cws = [np.asarray(c["polygon"], dtype=np.float64) for c in d.get("crosswalks", []) or []]
        return cls(lanes, cws, raw=d)

    def to_dict(self) -> dict[str, Any]:
        if self._raw is not None:
            return self._raw
        return {
            "lanes": [
                {
                    "id": ln.id,
                    "centerline": np.round(ln.centerline, 6).tolist(),
                    "width": ln.width,
                    "speed_limit": ln.speed_limit,
                    "successors": list(ln.successors),
                    "predecessors": list(ln.predecessors),
                    "left": ln.left,
                    "right": ln.right,
                    **ln.attrs,
                }
                for ln in self.lanes.values()
            ],
            "crosswalks": [{"polygon": np.round(c, 6).tolist()} for c in self.crosswalks],
        }

    # ------------------------------------------------------------------------------ lookups
    def lane(self, lane_id: str, *, where: str = "lane") -> Lane:
        """The lane ``lane_id``; :class:`ScenarioError` (field ``where``) when unknown."""
        try:
            return self.lanes[lane_id]
        except KeyError:
            sample = ", ".join(self.lane_ids[:8]) + (", ..." if len(self.lane_ids) > 8 else "")
            raise ScenarioError(f"unknown lane {lane_id!r} (this map has {sample})", field=where) from None

    @cached_property
    def graph(self) -> nx.DiGraph:
        """Successor graph weighted by lane length."""
        g = nx.DiGraph()
        for ln in self.lanes.values():
            g.add_node(ln.id)
            for s in ln.successors:
                g.add_edge(ln.id, s, weight=ln.length)
        return g

    def check_route(self, route: Sequence[str], *, where: str = "route") -> None:
        """Raise :class:`ScenarioError` unless each lane is known and each follows the previous one
        as a successor or a same-direction neighbour (a lane change)."""
        if not route:
            raise ScenarioError("expected at least one lane id", field=where)
        for i, lid in enumerate(route):
            self.lane(lid, where=f"{where}[{i}]")
        for i, (a, b) in enumerate(itertools.pairwise(route)):
            la = self.lanes[a]
            if b not in la.successors and b not in (la.left, la.right):
                raise ScenarioError(
                    f"lane {b!r} does not follow {a!r} (successors of {a!r}: {list(la.successors) or 'none'})",
                    field=f"{where}[{i + 1}]",
                )

    def shortest_route(self, start: str, goal: str) -> list[str]:
        """Shortest successor-connected lane sequence from ``start`` to ``goal``."""
        self.lane(start)
        self.lane(goal)
        try:
            return list(nx.shortest_path(self.graph, start, goal, weight="weight"))
        except nx.NetworkXNoPath:
            raise ScenarioError(f"no lane route from {start!r} to {goal!r}", field="route") from None

    def extend_route(self, route: Sequence[str], min_length: float, rng: np.random.Generator | None = None) -> list[str]:
        """Append successors (first one, or a random one with ``rng``) until the route is at least
        ``min_length`` metres long or a dead end is reached."""
        out = list(route)
        total = sum(self.lanes[r].length for r in out)
        while total < min_length:
            succ = self.lanes[out[-1]].successors
            if not succ:
                break
            nxt = succ[int(rng.integers(len(succ)))] if rng is not None else succ[0]
            out.append(nxt)
            total += self.lanes[nxt].length
        return out

    def route_polyline(self, route: Sequence[str]) -> Polyline:
        """One polyline along the route's centrelines (lane changes joined straight)."""
        pts = [self.lanes[route[0]].centerline]
        for lid in route[1:]:
            c = self.lanes[lid].centerline
            if np.linalg.norm(pts[-1][-1] - c[0]) < 1e-6:
                c = c[1:]
            pts.append(c)
        return Polyline(np.concatenate(pts, axis=0))

    @cached_property
    def _tree(self) -> STRtree:
        return STRtree([self.lanes[i].polygon for i in self.lane_ids])

    @property
    def lane_tree(self) -> STRtree:
        """STRtree of the lane polygons, in :attr:`lane_ids` order (built once per map)."""
        return self._tree

    def lanes_at(self, x: float, y: float) -> list[str]:
        """Ids of lanes whose area contains the point."""
        idx = self._tree.query(shapely.Point(x, y), predicate="intersects")
        return [self.lane_ids[i] for i in sorted(idx)]

    def nearest_lane(self, x: float, y: float, yaw: float | None = None) -> tuple[str, float, float]:
        """The lane closest to (x, y) -- preferring lanes whose heading agrees with ``yaw`` within
        90 degrees -- and the Frenet (s, d) on it."""
        cands = self.lanes_at(x, y)
        if not cands:
            near = self._tree.query_nearest(shapely.Point(x, y), max_distance=50.0, all_matches=True)
            cands = [self.lane_ids[i] for i in np.atleast_1d(near)] or list(self.lane_ids)
        best: tuple[float, str, float, float] | None = None
        for lid in cands:
            pl = self.lanes[lid].polyline
            s_proj, d_proj = pl.project([x, y])
            s, d = float(s_proj), float(d_proj)
            cost = abs(d)
            if yaw is not None:
                _, h = pl.interpolate(np.clip(s, 0, pl.length))
                if np.cos(float(h) - yaw) < 0:
                    cost += 100.0
            if s < 0 or s > pl.length:
                cost += min(abs(s), abs(s - pl.length))
            if best is None or cost < best[0]:
                best = (cost, lid, s, d)
        assert best is not None
        return best[1], best[2], best[3]

    @cached_property
    def drivable_area(self) -> shapely.Geometry:
        """Union of all lane areas (shapely geometry)."""
        return shapely.union_all([ln.polygon for ln in self.lanes.values()]).buffer(0.05)

    @cached_property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of all centrelines, metres."""
        pts = np.concatenate([ln.centerline for ln in self.lanes.values()])
        return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())
