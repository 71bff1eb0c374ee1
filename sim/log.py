"""The versioned drive-log format: read, write, validate.

A drive log is a folder (``format_version`` 1)::

    LOG/
      meta.json          format_version, name, source, rates, sensor rig, ego size, depth format
      transforms.json    nerfstudio format: per frame file_path, transform_matrix (camera-to-world,
                         OpenGL axes), fl_x, fl_y, cx, cy, w, h; plus ``camera`` and ``t_us``;
                         ``depth_file_path`` points into depth/
      images/<camera>/<index>.png   8-bit RGB
      depth/<camera>/<index>.png    16-bit PNG, **millimetres** along the optical axis (z-depth),
                                    0 = no return (sky or beyond 65.535 m) -- nerfstudio's default
                                    depth convention (``depth_unit_scale_factor`` 1e-3)
      lidar/<index>.npy  float32 (N, 4): x, y, z in the **world** frame (m), intensity in [0, 1]
      lidar.json         per sweep: file_path, t_us, sensor_to_world (4x4); optional extra_path
      lidar/<index>.extra.npy  (optional) float32 (N, 2), one row per point of the sweep: ``dt_us``
                         firing time minus the sweep's ``t_us`` (microseconds, whole numbers; <= 0
                         for a spinning sweep stamped at its end) and ``ring`` (beam, 0 = lowest)
      tracks.json        ego track and actor tracks: id, class, size [l, w, h] (m), and per
                         ``t_us`` a pose x, y, z (box bottom centre, world m) and yaw (rad)
      map.json           lanes (id, centerline [[x, y], ...], width, successors, predecessors,
                         left/right same-direction neighbours, speed_limit m/s) and crosswalks

Times are int64 microseconds from the start of the log. :class:`LogWriter` writes into a temporary
folder beside the target and renames it into place only after it validates, so a crash never
leaves a half-written log. :func:`read_log` refuses an unknown ``format_version``.

A log is untrusted input: the checks live in :mod:`sim.log_schema` (the JSON files' schema) and
:mod:`sim.log_validate` (size and nesting caps, payload files); :func:`read_log` and
:func:`validate_log` are their entry points.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from sim.errors import LogFormatError
from sim.fsutil import atomic_write_text, make_temp_dir, replace_dir

__all__ = [
    "FORMAT_VERSION",
    "CameraFrame",
    "DriveLog",
    "LidarSweep",
    "LogWriter",
    "Track",
    "read_log",
    "validate_log",
    "write_json_atomic",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
DEPTH_FORMAT = "png16-mm"
ACTOR_CLASSES = ("car", "truck", "bus", "cyclist", "pedestrian", "motorcycle", "other")


# --------------------------------------------------------------------------------- data classes
@dataclass(frozen=True)
class CameraFrame:
    """One camera image of the log.

    Attributes:
        index: position in ``transforms.json`` frames.
        camera: camera name from the rig (``front``, ``left``, ...).
        t_us: capture time, microseconds from log start.
        c2w: 4x4 camera-to-world, OpenGL camera axes (x right, y up, z back), world z-up.
        fx, fy, cx, cy: pinhole intrinsics in pixels.
        width, height: image size in pixels.
        image_path, depth_path: paths relative to the log root (depth may be None).
    """

    index: int
    camera: str
    t_us: int
    c2w: NDArray[np.float64]
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    image_path: str
    depth_path: str | None = None

    @property
    def K(self) -> NDArray[np.float64]:
        """3x3 intrinsics matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class LidarSweep:
    """One LiDAR sweep: points are stored in the world frame; ``sensor_to_world`` is the sensor pose."""

    index: int
    t_us: int
    sensor_to_world: NDArray[np.float64]
    path: str
    #: per-point firing time offset and ring (``lidar/<index>.extra.npy``), or None
    extra_path: str | None = None


@dataclass(frozen=True)
class Track:
    """A tracked box over time (the ego or an actor).

    Attributes:
        id: actor id (string, unique in the log; the ego is ``"ego"``).
        cls: class name, one of :data:`ACTOR_CLASSES`.
        size: (length, width, height) in metres.
        t_us: (T,) int64 sample times, strictly increasing.
        pose: (T, 4) float64 columns x, y, z (world m, box bottom centre) and yaw (rad).
        static: True for parked / never-moving actors.
    """

    id: str
    cls: str
    size: tuple[float, float, float]
    t_us: NDArray[np.int64]
    pose: NDArray[np.float64]
    static: bool = False

    def pose_at(self, t_us: int) -> NDArray[np.float64] | None:
        """Pose (x, y, z, yaw) linearly interpolated at ``t_us`` (yaw on the circle), or None
        outside the track's time span."""
        t = self.t_us
        if len(t) == 0 or t_us < t[0] or t_us > t[-1]:
            return None
        i = int(np.searchsorted(t, t_us, side="right")) - 1
        if i >= len(t) - 1 or t[i] == t_us:
            return self.pose[min(i, len(t) - 1)].copy()
        a = (t_us - t[i]) / float(t[i + 1] - t[i])
        p0, p1 = self.pose[i], self.pose[i + 1]
        out = p0 + a * (p1 - p0)
        dyaw = (p1[3] - p0[3] + np.pi) % (2 * np.pi) - np.pi
        out[3] = p0[3] + a * dyaw
        return out


@dataclass(frozen=True)
class DriveLog:
    """A drive log read from disk. Sensor payloads are loaded lazily (``image(i)``, ``depth(i)``,
    ``lidar(j)``); metadata, tracks and map are in memory."""

    root: Path
    meta: dict[str, Any]
    frames: tuple[CameraFrame, ...]
    sweeps: tuple[LidarSweep, ...]
    ego: Track
    tracks: tuple[Track, ...]
    map: dict[str, Any]
    transforms: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.root.name))

    @property
    def cameras(self) -> list[str]:
        """Camera names of the rig in meta order."""
        return [c["name"] for c in self.meta["rig"]["cameras"]]

    def frames_of(self, camera: str) -> list[CameraFrame]:
        return [f for f in self.frames if f.camera == camera]

    def image(self, i: int) -> NDArray[np.uint8]:
        """RGB image (H, W, 3) uint8 of frame ``i`` (checked: a regular, complete 8-bit PNG of the
        declared size; :class:`LogFormatError` naming the file otherwise)."""
        from sim.log_validate import read_image

        fr = self.frames[i]
        return read_image(self.root / fr.image_path, (fr.width, fr.height))

    def depth(self, i: int) -> NDArray[np.float32] | None:
        """Metric z-depth (H, W) float32 of frame ``i`` (metres, 0 = no return), or None."""
        from sim.log_validate import read_depth

        fr = self.frames[i]
        if fr.depth_path is None:
            return None
        return read_depth(self.root / fr.depth_path, (fr.width, fr.height))

    def lidar(self, j: int) -> NDArray[np.float32]:
        """(N, 4) float32 points of sweep ``j``: world x, y, z (m) and intensity (checked header,
        length and finite values; never unpickled)."""
        from sim.log_validate import read_lidar

        return read_lidar(self.root / self.sweeps[j].path)

    def lidar_extra(self, j: int) -> NDArray[np.float32] | None:
        """(N, 2) float32 per-point ``dt_us`` (firing time minus the sweep's ``t_us``, microseconds)
        and ``ring`` (0 = lowest beam) of sweep ``j``, or None when the log has none."""
        from sim.log_validate import read_lidar

        p = self.sweeps[j].extra_path
        return None if p is None else read_lidar(self.root / p, columns=2)

    @cached_property
    def track_by_id(self) -> dict[str, Track]:
        return {t.id: t for t in self.tracks}

    @property
    def t_span_us(self) -> tuple[int, int]:
        return int(self.ego.t_us[0]), int(self.ego.t_us[-1])


# ------------------------------------------------------------------------------------- helpers
def encode_depth_png(depth_m: NDArray[np.floating], path: Path) -> None:
    """Write metric depth (H, W) as a 16-bit PNG in millimetres (0 = invalid/beyond 65.535 m)."""
    d = np.asarray(depth_m, dtype=np.float64)
    mm = np.round(d * 1000.0)
    mm[~np.isfinite(mm) | (mm <= 0) | (mm > 65535)] = 0
    Image.fromarray(mm.astype(np.uint16)).save(path, format="PNG")


def decode_depth_png(path: Path) -> NDArray[np.float32]:
    """Read a 16-bit millimetre depth PNG back to metres (float32, 0 = invalid); a file that is
    not one raises :class:`LogFormatError` naming it."""
    from sim.log_validate import read_depth

    return read_depth(Path(path))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps_json(obj: Any) -> str:
    """Deterministic JSON text (sorted keys, fixed separators, trailing newline)."""
    return json.dumps(obj, sort_keys=True, indent=1, default=_json_default, allow_nan=False) + "\n"


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file in the same folder and a rename."""
    atomic_write_text(path, dumps_json(obj), parents=True)


def _round_floats(a: NDArray[np.floating], decimals: int = 6) -> list[Any]:
    return np.round(np.asarray(a, dtype=np.float64), decimals).tolist()


# ---------------------------------------------------------------------------------- validation
def read_log(path: str | os.PathLike[str]) -> DriveLog:
    """Read and validate a drive log folder: every JSON file and field (strict types, int64
    times, size and nesting caps) and that every payload it names is a regular file inside the
    folder (payloads are not opened: see :func:`validate_log`).

    Raises:
        LogFormatError: naming the file, the field path and what was expected, for a missing
            folder or file, malformed JSON, a bad field, or an unknown ``format_version``.
    """
    from sim.log_schema import parse_lidar, parse_map, parse_meta, parse_tracks, parse_transforms

    root = Path(path)
    try:
        is_dir = stat.S_ISDIR(os.stat(root).st_mode)
    except (OSError, ValueError):
        is_dir = False
    if not is_dir:
        raise LogFormatError("expected a drive-log folder", file=root)
    meta = parse_meta(root)
    transforms, frames = parse_transforms(root, meta)
    sweeps = parse_lidar(root)
    ego, tracks = parse_tracks(root)
    lane_map = parse_map(root)
    return DriveLog(root, meta, frames, sweeps, ego, tracks, lane_map, transforms)


def validate_log(path: str | os.PathLike[str], *, check_payloads: bool = True, deep: bool = True) -> DriveLog:
    """Validate a log and return it: everything :func:`read_log` checks, then (``check_payloads``)
    no FIFO, device or socket in the folder and every payload's header (images 8-bit RGB PNGs and
    depth maps 16-bit PNGs, complete, of the declared size; LiDAR ``.npy`` float32 (N, 4) of the
    announced length, never unpickled); with ``deep`` (the default) every image and depth map is
    decoded and every LiDAR array loaded and checked finite. ``deep=False`` reads a few hundred
    bytes per file (what ``loopdrive info`` uses). See :mod:`sim.log_validate`."""
    from sim.log_validate import check_payloads as _check_payloads

    dl = read_log(path)
    if check_payloads:
        _check_payloads(dl, deep=deep)
    return dl


# ------------------------------------------------------------------------------------- writing
def track_to_json(tr: Track) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": tr.id,
        "class": tr.cls,
        "size": [round(float(s), 6) for s in tr.size],
        "t_us": [int(t) for t in tr.t_us],
    }
    for k, col in zip(("x", "y", "z", "yaw"), tr.pose.T, strict=True):
        d[k] = _round_floats(col)
    if tr.static:
        d["static"] = True
    return d


class LogWriter:
    """Write a drive log atomically.

    Use as a context manager; sensor data is streamed into a temporary folder next to ``out`` and
    the folder is renamed into place on a clean exit after :func:`validate_log` passes. On an
    exception the temporary folder is removed and ``out`` is untouched.

    Args:
        out: target folder.
        meta: the ``meta.json`` content (``format_version`` and ``depth_format`` are filled in).
        overwrite: replace an existing non-empty ``out``; otherwise that is an error.
    """

    def __init__(self, out: str | os.PathLike[str], meta: dict[str, Any], *, overwrite: bool = False) -> None:
        self.out = Path(out)
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())) and not overwrite:
            raise LogFormatError("expected an empty or new folder (pass overwrite to replace it)", file=self.out)
        self.meta = {**meta, "format_version": FORMAT_VERSION, "depth_format": DEPTH_FORMAT}
        self._frames: list[dict[str, Any]] = []
        self._sweeps: list[dict[str, Any]] = []
        self._tracks: dict[str, Any] | None = None
        self._map: dict[str, Any] | None = None
        self._tmp: Path | None = None
        self._counts: dict[str, int] = {}

    def __enter__(self) -> LogWriter:
        parent = self.out.resolve().parent
        #: parent folders this writer makes (innermost first), removed again if it fails
        self._made = [d for d in (parent, *parent.parents) if not os.path.lexists(d)]
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self._tmp = make_temp_dir(parent, prefix=f".{self.out.name}.tmp-")
        except OSError as exc:
            raise LogFormatError(f"expected a writable location ({exc.strerror})", file=self.out) from None
        return self

    @property
    def tmp(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("LogWriter must be used as a context manager")
        return self._tmp

    def add_frame(
        self,
        camera: str,
        t_us: int,
        c2w_opengl: NDArray[np.floating],
        K: NDArray[np.floating],
        rgb: NDArray[np.uint8],
        depth_m: NDArray[np.floating] | None = None,
    ) -> None:
        """Add one camera image (H, W, 3 uint8) with its pose, intrinsics and optional z-depth (m)."""
        idx = self._counts.get(camera, 0)
        self._counts[camera] = idx + 1
        img_rel = f"images/{camera}/{idx:06d}.png"
        (self.tmp / img_rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(self.tmp / img_rel, format="PNG")
        fr: dict[str, Any] = {
            "file_path": img_rel,
            "camera": camera,
            "t_us": int(t_us),
            "transform_matrix": _round_floats(c2w_opengl, 9),
            "fl_x": float(K[0, 0]),
            "fl_y": float(K[1, 1]),
            "cx": float(K[0, 2]),
            "cy": float(K[1, 2]),
            "w": int(rgb.shape[1]),
            "h": int(rgb.shape[0]),
        }
        if depth_m is not None:
            d_rel = f"depth/{camera}/{idx:06d}.png"
            (self.tmp / d_rel).parent.mkdir(parents=True, exist_ok=True)
            encode_depth_png(depth_m, self.tmp / d_rel)
            fr["depth_file_path"] = d_rel
        self._frames.append(fr)

    def add_sweep(self, t_us: int, sensor_to_world: NDArray[np.floating], points: NDArray[np.floating],
                  extra: NDArray[np.floating] | None = None) -> None:
        """Add one LiDAR sweep: (N, 4) world-frame x, y, z, intensity and the sensor pose; ``extra``
        (N, 2) per-point ``dt_us`` (firing time minus ``t_us``, microseconds) and ``ring``."""
        idx = len(self._sweeps)
        rel = f"lidar/{idx:06d}.npy"
        (self.tmp / "lidar").mkdir(exist_ok=True)
        np.save(self.tmp / rel, np.ascontiguousarray(points, dtype=np.float32), allow_pickle=False)
        sw: dict[str, Any] = {"file_path": rel, "t_us": int(t_us), "sensor_to_world": _round_floats(sensor_to_world, 9)}
        if extra is not None:
            extra = np.ascontiguousarray(extra, dtype=np.float32)
            if extra.shape != (len(points), 2):
                raise ValueError(f"extra must be (N, 2) like the {len(points)} points, got {extra.shape}")
            sw["extra_path"] = f"lidar/{idx:06d}.extra.npy"
            np.save(self.tmp / sw["extra_path"], extra, allow_pickle=False)
        self._sweeps.append(sw)

    def set_tracks(self, ego: Track, tracks: Sequence[Track]) -> None:
        self._tracks = {"ego": track_to_json(ego), "tracks": [track_to_json(t) for t in tracks]}

    def set_map(self, lane_map: dict[str, Any]) -> None:
        self._map = lane_map

    def _finish(self) -> None:
        if self._tracks is None or self._map is None:
            raise LogFormatError("expected tracks and map to be set before closing the writer", file=self.out)
        tmp = self.tmp
        cams = {c["name"]: c for c in self.meta["rig"]["cameras"]}
        first = cams[next(iter(cams))]
        transforms = {
            "camera_model": "OPENCV",
            "fl_x": first["fx"],
            "fl_y": first["fy"],
            "cx": first["cx"],
            "cy": first["cy"],
            "w": first["width"],
            "h": first["height"],
            "k1": 0.0,
            "k2": 0.0,
            "p1": 0.0,
            "p2": 0.0,
            "frames": self._frames,
        }
        (tmp / "transforms.json").write_text(dumps_json(transforms))
        (tmp / "lidar.json").write_text(dumps_json({"sweeps": self._sweeps}))
        (tmp / "tracks.json").write_text(dumps_json(self._tracks))
        (tmp / "map.json").write_text(dumps_json(self._map))
        (tmp / "meta.json").write_text(dumps_json(self.meta))
        validate_log(tmp)
        replace_dir(tmp, self.out)
        self._tmp = None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self._finish()
        finally:
            if self._tmp is not None:  # failed: nothing of this writer is left
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None
                for d in getattr(self, "_made", ()):
                    with contextlib.suppress(OSError):
                        d.rmdir()


def copy_log(src: DriveLog, out: str | os.PathLike[str], *, overwrite: bool = False) -> DriveLog:
    """Write ``src`` to ``out`` through :class:`LogWriter` (a round trip of every field)."""
    cams = {c["name"]: c for c in src.meta["rig"]["cameras"]}
    meta = {k: v for k, v in src.meta.items() if k not in ("format_version", "depth_format")}
    del cams
    with LogWriter(out, meta, overwrite=overwrite) as w:
        for i, fr in enumerate(src.frames):
            w.add_frame(fr.camera, fr.t_us, fr.c2w, fr.K, src.image(i), src.depth(i))
        for j, sw in enumerate(src.sweeps):
            w.add_sweep(sw.t_us, sw.sensor_to_world, src.lidar(j), src.lidar_extra(j))
        w.set_tracks(src.ego, src.tracks)
        w.set_map(src.map)
    return read_log(out)


def iter_frames(dl: DriveLog, camera: str | None = None) -> Iterator[tuple[CameraFrame, NDArray[np.uint8]]]:
    """Yield (frame, rgb) for all frames (of one camera when given)."""
    for i, fr in enumerate(dl.frames):
        if camera is None or fr.camera == camera:
            yield fr, dl.image(i)
