"""Ground-truth annotation fields of the nuScenes exporter, computed from a drive log.

* ``num_lidar_pts``: LiDAR returns of the key-frame sweep inside the box **at each point's own
  firing time** (per-point ``dt_us`` of the log; the sweep's time stamp without it), the box grown
  by :data:`BOX_MARGIN_M` sideways and on top and its bottom raised by the same margin (ground
  returns under a box are not the object's);
* visibility: over the key-frame images of every camera, the share of the pixels whose ray passes
  through the box (posed at that camera's exposure time) and is not blocked in front of the box by
  something else (the image's z-depth is not nearer than where the ray enters the box, less
  :data:`OCCLUSION_TOLERANCE_M`), binned as nuScenes' visibility levels ``1`` (0-40 %), ``2``
  (40-60 %), ``3`` (60-80 %), ``4`` (80-100 %). A log without depth counts every pixel as visible;
* attributes: ``vehicle.parked`` (a static track), ``vehicle.moving`` / ``vehicle.stopped``
  (speed above / below :data:`MOVING_SPEED_MPS`), ``cycle.with_rider``, ``pedestrian.moving`` /
  ``pedestrian.standing``;
* the map mask: lanes and crosswalks of ``map.json`` painted 255 on a 0.1 m/pixel PNG whose pixel
  (0, height) is the global origin, as the devkit's ``MapMask`` reads it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from sim.geometry import OPENCV_FROM_OPENGL

__all__ = [
    "BOX_MARGIN_M",
    "MOVING_SPEED_MPS",
    "OCCLUSION_TOLERANCE_M",
    "attribute_names",
    "draw_map_mask",
    "points_in_box_at_times",
    "visibility_level",
    "visible_fraction",
]

BOX_MARGIN_M = 0.05
OCCLUSION_TOLERANCE_M = 0.1
MOVING_SPEED_MPS = 0.5
_PED_MOVING_MPS = 0.3
MAP_RESOLUTION_M = 0.1


def points_in_box_at_times(pts_world: NDArray[np.floating], t_us: NDArray[np.int64], track: Any) -> int:
    """How many of ``pts_world`` (N, 3) lie in ``track``'s box posed at each point's time ``t_us``
    (N,) (see the module docstring for the margins); points outside the track's span never count."""
    if len(pts_world) == 0:
        return 0
    from sim.synth.rigs import track_poses

    uniq, inv = np.unique(np.asarray(t_us, dtype=np.int64), return_inverse=True)
    pose, valid = track_poses((track,), uniq)
    p, ok = pose[inv, 0], valid[inv, 0]
    d = np.asarray(pts_world, dtype=np.float64)[:, :3] - p[:, :3]
    c, s = np.cos(p[:, 3]), np.sin(p[:, 3])
    lx, ly, lz = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]
    length, width, height = track.size
    m = BOX_MARGIN_M
    inside = ok & (np.abs(lx) <= length / 2 + m) & (np.abs(ly) <= width / 2 + m) & (lz > m) & (lz <= height + m)
    return int(inside.sum())


def visible_fraction(frames: list[tuple[Any, NDArray[np.float32] | None]], track: Any) -> tuple[int, int]:
    """(visible pixels, pixels the box covers) of ``track`` over camera ``frames`` -- pairs of a
    :class:`sim.log.CameraFrame` and its z-depth (metres, 0 = no return; None = no depth)."""
    seen = covered = 0
    length, width, height = track.size
    half = np.array([length / 2, width / 2, height / 2])
    for fr, depth in frames:
        p = track.pose_at(fr.t_us)
        if p is None:
            continue
        c2w = fr.c2w @ OPENCV_FROM_OPENGL
        c, s = np.cos(p[3]), np.sin(p[3])
        rb = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # world from box
        centre = np.array([p[0], p[1], p[2] + height / 2])
        # camera origin and per-pixel rays (OpenCV, z = 1: the ray parameter is the z-depth) in the box frame
        o = rb.T @ (c2w[:3, 3] - centre)
        if np.all(np.abs(o) <= half):
            continue  # the camera is inside the box
        u, v = np.meshgrid(np.arange(fr.width) + 0.5, np.arange(fr.height) + 0.5)
        d_cam = np.stack([(u - fr.cx) / fr.fx, (v - fr.cy) / fr.fy, np.ones_like(u)], -1).reshape(-1, 3)
        d = d_cam @ (rb.T @ c2w[:3, :3]).T
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / d
            t0, t1 = (-half - o) * inv, (half - o) * inv
        t_in = np.nanmax(np.minimum(t0, t1), axis=1)
        t_out = np.nanmin(np.maximum(t0, t1), axis=1)
        hit = (t_out >= np.maximum(t_in, 0.0)) & (t_in > 0)
        n = int(hit.sum())
        if n == 0:
            continue
        covered += n
        if depth is None:
            seen += n
            continue
        z = np.asarray(depth, dtype=np.float64).reshape(-1)[hit]
        seen += int(np.sum((z <= 0) | (z >= t_in[hit] - OCCLUSION_TOLERANCE_M)))
    return seen, covered


def visibility_level(seen: int, covered: int) -> str:
    """nuScenes visibility token ``1``..``4`` of a visible share (0-40, 40-60, 60-80, 80-100 %)."""
    f = seen / covered if covered else 0.0
    return "1" if f < 0.4 else "2" if f < 0.6 else "3" if f < 0.8 else "4"


def attribute_names(track: Any, t_us: int) -> list[str]:
    """nuScenes attribute names of ``track`` at ``t_us`` (speed from the track's neighbouring
    samples, m/s)."""
    t0, t1 = int(track.t_us[0]), int(track.t_us[-1])
    ta, tb = max(t_us - 50_000, t0), min(t_us + 50_000, t1)
    speed = 0.0
    if tb > ta:
        pa, pb = track.pose_at(ta), track.pose_at(tb)
        speed = float(np.hypot(pb[0] - pa[0], pb[1] - pa[1]) / ((tb - ta) * 1e-6))
    if track.cls == "pedestrian":
        return ["pedestrian.moving" if speed > _PED_MOVING_MPS else "pedestrian.standing"]
    if track.cls == "cyclist":
        return ["cycle.with_rider"]
    if track.cls == "other":
        return []
    if track.static:
        return ["vehicle.parked"]
    return ["vehicle.moving" if speed > MOVING_SPEED_MPS else "vehicle.stopped"]


def draw_map_mask(lane_map: dict[str, Any], offset: NDArray[np.float64], extent: tuple[float, float]) -> Any:
    """A PIL ``L`` image of ``extent`` = (x_max, y_max) global metres at 0.1 m/pixel, pixel
    (0, height) at the global origin, with the lanes (centre line grown by half the lane width) and
    crosswalks of ``lane_map`` (world coordinates + ``offset``) painted 255."""
    from PIL import Image, ImageDraw
    from shapely.geometry import LineString

    w = int(np.ceil(extent[0] / MAP_RESOLUTION_M))
    h = int(np.ceil(extent[1] / MAP_RESOLUTION_M))
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)

    def px(xy: NDArray[np.float64]) -> list[tuple[float, float]]:
        g = np.asarray(xy, dtype=np.float64)[:, :2] + offset[:2]
        return [(float(x / MAP_RESOLUTION_M), float(h - y / MAP_RESOLUTION_M)) for x, y in g]

    for ln in lane_map.get("lanes", []):
        poly = LineString(ln["centerline"]).buffer(float(ln["width"]) / 2.0, cap_style="flat")
        for part in getattr(poly, "geoms", [poly]):
            if not part.is_empty:
                draw.polygon(px(np.asarray(part.exterior.coords)), fill=255)
    for cw in lane_map.get("crosswalks", []) or []:
        draw.polygon(px(np.asarray(cw["polygon"])), fill=255)
    return img
