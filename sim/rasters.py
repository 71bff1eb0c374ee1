"""Rasters of the lane map the engine tests the ego against every step: the drivable area
(:class:`DrivableRaster`, off-road) and the lanes' directions of travel (:class:`LaneDirectionRaster`,
wrong-way). Both are built once per compiled scenario and read-only; :func:`ego_flags` evaluates
them for B egos in one compiled call. Cells are square, ``res`` metres, world frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sim.geometry import fclip
from sim.kernels import ego_flags_nb
from sim.map import LaneMap

__all__ = ["LANE_SECTORS", "DrivableRaster", "LaneDirectionRaster", "ego_flags"]

B_ = NDArray[np.bool_]
F64 = NDArray[np.float64]


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


def ego_flags(raster: DrivableRaster, lane_dirs: LaneDirectionRaster, x: F64, y: F64, yaw: F64, corner_lon: F64, corner_lat: F64) -> tuple[B_, B_]:
    """Per ego (B,): off-road (a footprint corner -- ``corner_lon``/``corner_lat`` (4,) m in the
    ego frame -- outside ``raster``) and against the lanes (:meth:`LaneDirectionRaster.against` at
    the ego centre)."""
    ra, ld = raster, lane_dirs
    return ego_flags_nb(ra.mask, ra.x0, ra.y0, ra.res, ld.bits, ld.x0, ld.y0, ld.res, ld.ok_mask, LANE_SECTORS, x, y, yaw, corner_lon, corner_lat)
