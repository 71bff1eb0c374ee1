"""Pictures of what the simulator sees: bird's-eye-view plots (matplotlib) and preview videos
(camera with LiDAR points overlaid, side by side with a BEV panel; mp4 through imageio-ffmpeg).

World frame: metres, z up; BEV images have +x to the right and +y up.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sim.fsutil import atomic_path
from sim.geometry import project_points
from sim.log import DriveLog, Track, read_log

__all__ = ["CLASS_COLOURS", "plot_bev", "render_bev_frame", "save_figure_atomic", "write_preview_video"]

log = logging.getLogger(__name__)

#: RGB in [0, 1] per actor class (ego drawn in red).
CLASS_COLOURS: dict[str, tuple[float, float, float]] = {
    "car": (0.17, 0.45, 0.80),
    "truck": (0.55, 0.35, 0.75),
    "bus": (0.85, 0.55, 0.10),
    "cyclist": (0.10, 0.65, 0.35),
    "motorcycle": (0.10, 0.65, 0.35),
    "pedestrian": (0.95, 0.75, 0.10),
    "other": (0.5, 0.5, 0.5),
    "parked": (0.62, 0.62, 0.66),
    "ego": (0.86, 0.12, 0.12),
}


def _box_corners(x: float, y: float, yaw: float, length: float, width: float) -> NDArray[np.float64]:
    c, s = np.cos(yaw), np.sin(yaw)
    pts = np.array([[length / 2, width / 2], [-length / 2, width / 2], [-length / 2, -width / 2], [length / 2, -width / 2]])
    return np.column_stack([x + c * pts[:, 0] - s * pts[:, 1], y + s * pts[:, 0] + c * pts[:, 1]])


def _map_dict(lane_map: Any) -> dict[str, Any]:
    if isinstance(lane_map, dict):
        return lane_map
    if hasattr(lane_map, "to_dict"):
        return lane_map.to_dict()
    raise TypeError("expected a map.json dictionary or a sim.map.LaneMap")


def _boxes(tracks_or_world: Any, t_us: int) -> list[tuple[str, str, bool, NDArray[np.float64]]]:
    """(id, class, static, corners) of every actor present at ``t_us``."""
    out = []
    if tracks_or_world is None:
        return out
    if hasattr(tracks_or_world, "ids") and hasattr(tracks_or_world, "valid"):
        w = tracks_or_world
        for i in range(len(w.ids)):
            if not bool(w.valid[i]) or w.ids[i] == "ego":
                continue
            out.append((w.ids[i], w.cls[i], False, _box_corners(w.x[i], w.y[i], w.yaw[i], w.length[i], w.width[i])))
        return out
    for tr in tracks_or_world:
        p = tr.pose_at(int(t_us))
        if p is None:
            continue
        out.append((tr.id, tr.cls, tr.static, _box_corners(p[0], p[1], p[3], tr.size[0], tr.size[1])))
    return out


def plot_bev(
    lane_map: Any,
    tracks: Sequence[Track] | Any = (),
    ego: Track | None = None,
    t_us: int = 0,
    ax: Any = None,
    *,
    extent: tuple[float, float, float, float] | None = None,
    trails: bool = True,
    title: str | None = None,
) -> Any:
    """Plot lanes, crosswalks, actor boxes at ``t_us`` and the ego's path on a matplotlib axes.

    Args:
        lane_map: the ``map.json`` dictionary or a :class:`sim.map.LaneMap`.
        tracks: actor tracks, or a world snapshot (``WorldLike``; row 0, the ego, is skipped).
        ego: the ego track (its whole path is drawn, its box at ``t_us``).
        t_us: time of the boxes, microseconds.
        ax: axes to draw on (a new figure when None).
        extent: (xmin, xmax, ymin, ymax) in metres (default: the map's bounds).
        trails: draw each moving track's past path.

    Returns:
        The axes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon as MplPolygon
    from shapely.geometry import LineString

    m = _map_dict(lane_map)
    if ax is None:
        _fig, ax = plt.subplots(figsize=(8, 8))
    ax.set_facecolor((0.93, 0.95, 0.92))
    for ln in m["lanes"]:
        cl = np.asarray(ln["centerline"], dtype=np.float64)
        poly = LineString(cl).buffer(ln["width"] / 2, cap_style="flat")
        if poly.geom_type == "Polygon" and not poly.is_empty:
            conn = ln.get("kind") == "connector"
            ax.add_patch(MplPolygon(np.asarray(poly.exterior.coords), closed=True, facecolor=(0.78, 0.78, 0.80) if not conn else (0.84, 0.84, 0.86),
                                    edgecolor="none", zorder=1))
    for ln in m["lanes"]:
        cl = np.asarray(ln["centerline"], dtype=np.float64)
        conn = ln.get("kind") == "connector"
        ax.plot(cl[:, 0], cl[:, 1], color=(0.55, 0.55, 0.6) if conn else (0.35, 0.35, 0.4), lw=0.5 if conn else 0.8,
                ls=":" if conn else "-", zorder=2)
        if not conn and len(cl) >= 2:
            mid = len(cl) // 2
            a, b = cl[max(mid - 1, 0)], cl[min(mid + 1, len(cl) - 1)]
            ax.annotate("", xy=b, xytext=a, arrowprops={"arrowstyle": "->", "color": (0.35, 0.35, 0.4), "lw": 0.8}, zorder=2)
    for cw in m.get("crosswalks", []) or []:
        ax.add_patch(MplPolygon(np.asarray(cw["polygon"]), closed=True, facecolor="white", edgecolor=(0.4, 0.4, 0.4),
                                hatch="////", lw=0.4, zorder=2))
    if trails and tracks is not None and not hasattr(tracks, "ids"):
        for tr in tracks:
            if tr.static:
                continue
            past = tr.t_us <= t_us
            if past.sum() >= 2:
                ax.plot(tr.pose[past, 0], tr.pose[past, 1], color=CLASS_COLOURS.get(tr.cls, (0.5, 0.5, 0.5)), lw=1.0, alpha=0.6, zorder=3)
    for _aid, cls, static, corners in _boxes(tracks, t_us):
        col = CLASS_COLOURS["parked"] if static else CLASS_COLOURS.get(cls, CLASS_COLOURS["other"])
        ax.add_patch(MplPolygon(corners, closed=True, facecolor=col, edgecolor="black", lw=0.5, zorder=4))
    if ego is not None:
        ax.plot(ego.pose[:, 0], ego.pose[:, 1], color=CLASS_COLOURS["ego"], lw=1.6, ls="--", zorder=5, label="ego path")
        p = ego.pose_at(int(t_us))
        if p is not None:
            ax.add_patch(MplPolygon(_box_corners(p[0], p[1], p[3], ego.size[0], ego.size[1]), closed=True,
                                    facecolor=CLASS_COLOURS["ego"], edgecolor="black", lw=0.8, zorder=6))
    if extent is None:
        pts = np.concatenate([np.asarray(ln["centerline"], dtype=np.float64) for ln in m["lanes"]])
        pad = 5.0
        extent = (pts[:, 0].min() - pad, pts[:, 0].max() + pad, pts[:, 1].min() - pad, pts[:, 1].max() + pad)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    if title:
        ax.set_title(title)
    return ax


def save_figure_atomic(fig: Any, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """``fig.savefig`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, **kwargs)
    return path


# ----------------------------------------------------------------------------------- video panels
class _BevCanvas:
    """A static BEV background (lanes, crosswalks) rasterised once; per-frame boxes drawn with PIL."""

    def __init__(self, lane_map: dict[str, Any], m_per_px: float = 0.15) -> None:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        pts = np.concatenate([np.asarray(ln["centerline"], dtype=np.float64) for ln in lane_map["lanes"]])
        pad = 60.0
        self.x0, self.x1 = float(pts[:, 0].min() - pad), float(pts[:, 0].max() + pad)
        self.y0, self.y1 = float(pts[:, 1].min() - pad), float(pts[:, 1].max() + pad)
        self.mpp = m_per_px
        w = int(np.ceil((self.x1 - self.x0) / m_per_px))
        h = int(np.ceil((self.y1 - self.y0) / m_per_px))
        dpi = 100
        fig = plt.figure(figsize=(w / dpi, h / dpi), dpi=dpi)
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        plot_bev(lane_map, (), None, 0, ax=ax, extent=(self.x0, self.x1, self.y0, self.y1), trails=False)
        ax.set_axis_off()
        fig.canvas.draw()
        self.bg = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        plt.close(fig)
        self.h, self.w = self.bg.shape[:2]

    def to_px(self, xy: NDArray[np.float64]) -> NDArray[np.float64]:
        xy = np.asarray(xy, dtype=np.float64)
        return np.column_stack([(xy[:, 0] - self.x0) / (self.x1 - self.x0) * self.w, (self.y1 - xy[:, 1]) / (self.y1 - self.y0) * self.h])


def render_bev_frame(canvas: Any, dl: DriveLog, t_us: int, size_px: int = 384, window_m: float = 80.0,
                     lidar_xyz: NDArray[np.float64] | None = None) -> NDArray[np.uint8]:
    """A BEV image (size_px square, uint8 RGB) centred on the ego at ``t_us``: lanes, actor boxes,
    the ego's path and (optionally) LiDAR points."""
    from PIL import Image, ImageDraw

    arr = canvas.bg.copy()
    if lidar_xyz is not None and len(lidar_xyz):
        px = canvas.to_px(lidar_xyz[:, :2]).astype(np.int64)
        ok = (px[:, 0] >= 0) & (px[:, 0] < canvas.w) & (px[:, 1] >= 0) & (px[:, 1] < canvas.h)
        high = lidar_xyz[ok, 2] > 0.3
        arr[px[ok, 1], px[ok, 0]] = np.where(high[:, None], np.array([20, 110, 200], np.uint8), np.array([70, 70, 70], np.uint8))
    im = Image.fromarray(arr)
    dr = ImageDraw.Draw(im, "RGBA")
    ego_p = dl.ego.pose_at(int(t_us))
    assert ego_p is not None
    path = canvas.to_px(dl.ego.pose[:, :2])
    dr.line([tuple(p) for p in path], fill=(220, 30, 30, 150), width=2)
    for _aid, cls, static, corners in _boxes(dl.tracks, t_us):
        col = CLASS_COLOURS["parked"] if static else CLASS_COLOURS.get(cls, CLASS_COLOURS["other"])
        dr.polygon([tuple(p) for p in canvas.to_px(corners)], fill=(*tuple(int(255 * c) for c in col), 255), outline=(0, 0, 0, 255))
    ec = _box_corners(ego_p[0], ego_p[1], ego_p[3], dl.ego.size[0], dl.ego.size[1])
    dr.polygon([tuple(p) for p in canvas.to_px(ec)], fill=(220, 30, 30, 255), outline=(0, 0, 0, 255))
    c = canvas.to_px(ego_p[None, :2])[0]
    half = window_m / 2 / canvas.mpp
    box = (int(c[0] - half), int(c[1] - half), int(c[0] + half), int(c[1] + half))
    return np.asarray(im.crop(box).resize((size_px, size_px), Image.BILINEAR))


def _turbo(x: NDArray[np.float64]) -> NDArray[np.uint8]:
    import matplotlib

    cmap = matplotlib.colormaps["turbo"]
    return (cmap(np.clip(x, 0.0, 1.0))[:, :3] * 255).astype(np.uint8)


def overlay_lidar(rgb: NDArray[np.uint8], points_world: NDArray[np.float64], c2w: NDArray[np.float64], K: NDArray[np.float64],
                  scale: int = 2, max_range: float = 50.0, origin: NDArray[np.float64] | None = None) -> NDArray[np.uint8]:
    """The camera image upscaled by ``scale`` with LiDAR points drawn on it, coloured by range (turbo
    colour map, blue = near, red = ``max_range``)."""
    img = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1).copy()
    if len(points_world) == 0:
        return img
    uv, z = project_points(points_world[:, :3], c2w, K)
    h, w = rgb.shape[:2]
    ok = (z > 0.5) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    o = origin if origin is not None else c2w[:3, 3]
    rng = np.linalg.norm(points_world[ok, :3] - o, axis=1)
    col = _turbo(rng / max_range)
    u = (uv[ok, 0] * scale).astype(np.int64)
    v = (uv[ok, 1] * scale).astype(np.int64)
    order = np.argsort(-rng)  # far first, near on top
    for du in (0, 1):
        for dv in (0, 1):
            uu = np.clip(u[order] + du, 0, w * scale - 1)
            vv = np.clip(v[order] + dv, 0, h * scale - 1)
            img[vv, uu] = col[order]
    return img


def write_preview_video(log_dir: str | os.PathLike[str], out_mp4: str | os.PathLike[str], *, camera: str | None = None,
                        fps: float | None = None, max_frames: int | None = None,
                        progress: Callable[[int, int], None] | None = None) -> Path:
    """Write an mp4: the camera (upscaled 2x) with the LiDAR sweep of the same instant overlaid,
    coloured by range, beside a BEV panel following the ego. Written atomically.

    Args:
        log_dir: a drive log.
        out_mp4: output path (.mp4).
        camera: camera name (default: the rig's first camera).
        fps: frame rate (default: the log's camera rate).
        max_frames: only the first N frames.
        progress: called as ``progress(done, total)``.
    """
    import imageio.v2 as imageio

    dl = read_log(log_dir)
    camera = camera or dl.cameras[0]
    frames = [(i, fr) for i, fr in enumerate(dl.frames) if fr.camera == camera]
    if max_frames is not None:
        frames = frames[:max_frames]
    sweeps = {sw.t_us: j for j, sw in enumerate(dl.sweeps)}
    fps = fps or float(dl.meta["rates"]["camera_hz"])
    canvas = _BevCanvas(dl.map)
    out = Path(out_mp4)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix=".mp4") as tmp:
        writer = imageio.get_writer(str(tmp), fps=fps, codec="libx264", quality=7, macro_block_size=16,
                                    ffmpeg_log_level="error", pixelformat="yuv420p")
        try:
            for k, (i, fr) in enumerate(frames):
                rgb = dl.image(i)
                j = sweeps.get(fr.t_us)
                pts = dl.lidar(j).astype(np.float64) if j is not None else np.zeros((0, 4))
                origin = dl.sweeps[j].sensor_to_world[:3, 3] if j is not None else None
                cam_panel = overlay_lidar(rgb, pts, fr.c2w, fr.K, scale=2, origin=origin)
                bev = render_bev_frame(canvas, dl, fr.t_us, size_px=cam_panel.shape[0], lidar_xyz=pts[:, :3] if len(pts) else None)
                frame = np.concatenate([cam_panel, bev], axis=1)
                pad_h = (-frame.shape[0]) % 16
                pad_w = (-frame.shape[1]) % 16
                if pad_h or pad_w:
                    frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)))
                writer.append_data(frame)
                if progress is not None:
                    progress(k + 1, len(frames))
        finally:
            writer.close()
    return out


def lidar_range_panel(range_image: NDArray[np.floating], width: int, max_range: float = 50.0) -> NDArray[np.uint8]:
    """A LiDAR range image (beams x azimuth x >=1, channel 0 = range m, 0 = no return) coloured by
    range (turbo; black = no return), rolled so the forward direction is in the middle, resized to
    ``width`` pixels wide (nearest neighbour, rows stretched to keep it readable)."""
    r = np.asarray(range_image, dtype=np.float64)[..., 0]
    beams, az = r.shape
    r = np.roll(r[:, ::-1], az // 2, axis=1)  # azimuth counter-clockwise -> left to right, forward centred
    img = _turbo((r / max_range).ravel()).reshape(beams, az, 3)
    img[r <= 0] = 0
    rows = max(1, (width // 8) // beams)
    cols = np.linspace(0, az - 1, width).astype(np.int64)
    return np.repeat(img[:, cols], rows, axis=0)


def _text(img: NDArray[np.uint8], lines: list[str]) -> NDArray[np.uint8]:
    from PIL import Image, ImageDraw

    im = Image.fromarray(img)
    d = ImageDraw.Draw(im)
    for k, line in enumerate(lines):
        d.text((6 + 1, 4 + 12 * k + 1), line, fill=(0, 0, 0))
        d.text((6, 4 + 12 * k), line, fill=(255, 255, 255))
    return np.asarray(im)


def episode_frame(obs: dict[str, Any], overlay: list[str], bev_px: int | None = None) -> NDArray[np.uint8]:
    """One video frame of an episode step: camera (top left) over the LiDAR range image, the BEV
    raster on the right, ``overlay`` text lines (metrics) drawn on the camera. Any of the
    ``camera`` / ``lidar`` / ``bev`` observations may be missing."""
    from sim.observations import bev_rgb

    left: list[NDArray[np.uint8]] = []
    cam = obs.get("camera")
    if cam is not None:
        left.append(np.asarray(cam, dtype=np.uint8))
    width = left[0].shape[1] if left else 320
    if obs.get("lidar") is not None:
        left.append(lidar_range_panel(obs["lidar"], width))
    col = np.concatenate(left, axis=0) if left else np.zeros((192, width, 3), np.uint8)
    col = _text(col, overlay)
    if obs.get("bev") is not None:
        bev = bev_rgb(np.asarray(obs["bev"]))
        h = col.shape[0]
        idx = np.linspace(0, bev.shape[0] - 1, h).astype(np.int64)
        bev = bev[idx][:, np.linspace(0, bev.shape[1] - 1, h).astype(np.int64)]
        col = np.concatenate([col, bev], axis=1)
    # even sizes for H.264
    h, w = col.shape[:2]
    return np.pad(col, ((0, h % 2), (0, w % 2), (0, 0)))


def write_episode_video(observations: list[dict[str, Any]], out_mp4: str | os.PathLike[str], *, dt_s: float = 0.1,
                        speeds: NDArray[np.floating] | None = None, title: str = "") -> Path:
    """Write an episode video (camera + LiDAR + BEV panels with a metrics overlay: time, speed) as
    H.264 mp4, atomically. ``observations`` are per-step observation dicts (as recorded by
    ``sim.rollout.run_planner_episode(..., record_observations=True)``)."""
    import imageio.v2 as imageio

    out = Path(out_mp4)
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        atomic_path(out, suffix=".mp4") as tmp,
        imageio.get_writer(str(tmp), fps=1.0 / dt_s, codec="libx264", quality=7, macro_block_size=2, ffmpeg_log_level="error") as w,
    ):
        for k, obs in enumerate(observations):
            lines = [title] if title else []
            lines.append(f"t = {k * dt_s:4.1f} s")
            if speeds is not None and k < len(speeds):
                lines.append(f"speed {float(speeds[k]):4.1f} m/s")
            w.append_data(episode_frame(obs, lines))
    return out
