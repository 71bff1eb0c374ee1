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
      lidar.json         per sweep: file_path, t_us, sensor_to_world (4x4)
      tracks.json        ego track and actor tracks: id, class, size [l, w, h] (m), and per
                         ``t_us`` a pose x, y, z (box bottom centre, world m) and yaw (rad)
      map.json           lanes (id, centerline [[x, y], ...], width, successors, predecessors,
                         left/right same-direction neighbours, speed_limit m/s) and crosswalks

Times are int64 microseconds from the start of the log. :class:`LogWriter` writes into a temporary
folder beside the target and renames it into place only after it validates, so a crash never
leaves a half-written log. :func:`read_log` refuses an unknown ``format_version``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from sim.errors import LogFormatError
from sim.fsutil import atomic_write_text, make_temp_dir

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
        """RGB image (H, W, 3) uint8 of frame ``i``."""
        with Image.open(self.root / self.frames[i].image_path) as im:
            return np.asarray(im.convert("RGB"))

    def depth(self, i: int) -> NDArray[np.float32] | None:
        """Metric z-depth (H, W) float32 of frame ``i`` (metres, 0 = no return), or None."""
        p = self.frames[i].depth_path
        if p is None:
            return None
        return decode_depth_png(self.root / p)

    def lidar(self, j: int) -> NDArray[np.float32]:
        """(N, 4) float32 points of sweep ``j``: world x, y, z (m) and intensity."""
        return np.load(self.root / self.sweeps[j].path, allow_pickle=False)

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
    """Read a 16-bit millimetre depth PNG back to metres (float32, 0 = invalid)."""
    with Image.open(path) as im:
        a = np.asarray(im).astype(np.float32)
    return a / 1000.0


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, dumps_json(obj))


def _round_floats(a: NDArray[np.floating], decimals: int = 6) -> list[Any]:
    return np.round(np.asarray(a, dtype=np.float64), decimals).tolist()


# ---------------------------------------------------------------------------------- validation
class _V:
    """Field-path aware checks that raise :class:`LogFormatError`."""

    def __init__(self, file: Path) -> None:
        self.file = file

    def fail(self, path: str, expected: str, got: Any = None) -> None:
        msg = f"expected {expected}"
        if got is not None:
            g = repr(got)
            msg += f", got {g[:60] + '...' if len(g) > 60 else g}"
        raise LogFormatError(msg, file=self.file, field=path or None)

    def obj(self, v: Any, path: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            self.fail(path, "an object", type(v).__name__)
        return v

    def key(self, d: Mapping[str, Any], k: str, path: str) -> Any:
        if k not in d:
            self.fail(f"{path}.{k}" if path else k, "this field to be present")
        return d[k]

    def lst(self, v: Any, path: str, min_len: int = 0) -> list[Any]:
        if not isinstance(v, list):
            self.fail(path, "a list", type(v).__name__)
        if len(v) < min_len:
            self.fail(path, f"a list of at least {min_len} item(s)", f"{len(v)} item(s)")
        return v

    def string(self, v: Any, path: str) -> str:
        if not isinstance(v, str) or not v:
            self.fail(path, "a non-empty string", v)
        return v

    def integer(self, v: Any, path: str, lo: int | None = None) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(path, "an integer", v)
        if lo is not None and v < lo:
            self.fail(path, f"an integer >= {lo}", v)
        return v

    def number(self, v: Any, path: str, positive: bool = False) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            self.fail(path, "a finite number", v)
        if positive and v <= 0:
            self.fail(path, "a positive number", v)
        return float(v)

    def numbers(self, v: Any, path: str, n: int | None = None, positive: bool = False) -> list[float]:
        self.lst(v, path)
        if n is not None and len(v) != n:
            self.fail(path, f"a list of {n} numbers", f"{len(v)} item(s)")
        return [self.number(x, f"{path}[{i}]", positive) for i, x in enumerate(v)]

    def matrix4(self, v: Any, path: str) -> NDArray[np.float64]:
        self.lst(v, path)
        if len(v) != 4 or not all(isinstance(r, list) and len(r) == 4 for r in v):
            self.fail(path, "a 4x4 matrix (list of 4 rows of 4 numbers)", v)
        for i, r in enumerate(v):
            self.numbers(r, f"{path}[{i}]", 4)
        m = np.asarray(v, dtype=np.float64)
        if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
            self.fail(f"{path}[3]", "last row [0, 0, 0, 1]", v[3])
        r = m[:3, :3]
        if not np.allclose(r @ r.T, np.eye(3), atol=1e-4) or np.linalg.det(r) < 0:
            self.fail(path, "a rigid transform (orthonormal rotation, det +1)")
        return m

    def file_in(self, root: Path, rel: Any, path: str) -> str:
        rel = self.string(rel, path)
        p = (root / rel).resolve()
        if root.resolve() not in p.parents:
            self.fail(path, "a path inside the log folder", rel)
        if not p.is_file():
            self.fail(path, "an existing file", rel)
        return rel


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise LogFormatError("expected this file to exist", file=path)
    try:
        with path.open() as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LogFormatError(f"expected valid JSON ({exc})", file=path) from None


def _parse_meta(root: Path) -> dict[str, Any]:
    p = root / "meta.json"
    v = _V(p)
    meta = v.obj(_load_json(p), "")
    ver = v.key(meta, "format_version", "")
    if ver not in SUPPORTED_VERSIONS:
        v.fail("format_version", f"one of the supported versions {list(SUPPORTED_VERSIONS)}", ver)
    v.string(v.key(meta, "source", ""), "source")
    rates = v.obj(v.key(meta, "rates", ""), "rates")
    for k in ("camera_hz", "lidar_hz"):
        v.number(v.key(rates, k, "rates"), f"rates.{k}", positive=True)
    rig = v.obj(v.key(meta, "rig", ""), "rig")
    cams = v.lst(v.key(rig, "cameras", "rig"), "rig.cameras", 1)
    names = set()
    for i, c in enumerate(cams):
        pth = f"rig.cameras[{i}]"
        v.obj(c, pth)
        n = v.string(v.key(c, "name", pth), f"{pth}.name")
        if n in names:
            v.fail(f"{pth}.name", "a unique camera name", n)
        names.add(n)
        v.integer(v.key(c, "width", pth), f"{pth}.width", 1)
        v.integer(v.key(c, "height", pth), f"{pth}.height", 1)
        for k in ("fx", "fy"):
            v.number(v.key(c, k, pth), f"{pth}.{k}", positive=True)
        for k in ("cx", "cy"):
            v.number(v.key(c, k, pth), f"{pth}.{k}")
        v.matrix4(v.key(c, "vehicle_from_camera", pth), f"{pth}.vehicle_from_camera")
    if "lidar" in rig and rig["lidar"] is not None:
        li = v.obj(rig["lidar"], "rig.lidar")
        v.integer(v.key(li, "beams", "rig.lidar"), "rig.lidar.beams", 1)
        v.integer(v.key(li, "azimuth_steps", "rig.lidar"), "rig.lidar.azimuth_steps", 1)
        fov = v.numbers(v.key(li, "vertical_fov_deg", "rig.lidar"), "rig.lidar.vertical_fov_deg", 2)
        if not fov[0] < fov[1]:
            v.fail("rig.lidar.vertical_fov_deg", "[lower, upper] with lower < upper", fov)
        v.number(v.key(li, "max_range_m", "rig.lidar"), "rig.lidar.max_range_m", positive=True)
        v.matrix4(v.key(li, "vehicle_from_lidar", "rig.lidar"), "rig.lidar.vehicle_from_lidar")
    ego = v.obj(v.key(meta, "ego", ""), "ego")
    v.numbers(v.key(ego, "size", "ego"), "ego.size", 3, positive=True)
    df = v.key(meta, "depth_format", "")
    if df != DEPTH_FORMAT:
        v.fail("depth_format", f"{DEPTH_FORMAT!r}", df)
    return meta


def _parse_transforms(root: Path, meta: dict[str, Any]) -> tuple[dict[str, Any], tuple[CameraFrame, ...]]:
    p = root / "transforms.json"
    v = _V(p)
    tj = v.obj(_load_json(p), "")
    frames_raw = v.lst(v.key(tj, "frames", ""), "frames", 1)
    cams = {c["name"]: c for c in meta["rig"]["cameras"]}
    frames: list[CameraFrame] = []
    for i, fr in enumerate(frames_raw):
        pth = f"frames[{i}]"
        v.obj(fr, pth)
        cam = v.string(v.key(fr, "camera", pth), f"{pth}.camera")
        if cam not in cams:
            v.fail(f"{pth}.camera", f"one of the rig's cameras {sorted(cams)}", cam)
        t = v.integer(v.key(fr, "t_us", pth), f"{pth}.t_us", 0)
        c2w = v.matrix4(v.key(fr, "transform_matrix", pth), f"{pth}.transform_matrix")
        intr = {}
        for k in ("fl_x", "fl_y"):
            intr[k] = v.number(fr.get(k, tj.get(k)), f"{pth}.{k}", positive=True)
        for k in ("cx", "cy"):
            intr[k] = v.number(fr.get(k, tj.get(k)), f"{pth}.{k}")
        w = v.integer(fr.get("w", tj.get("w")), f"{pth}.w", 1)
        h = v.integer(fr.get("h", tj.get("h")), f"{pth}.h", 1)
        img = v.file_in(root, v.key(fr, "file_path", pth), f"{pth}.file_path")
        dep = fr.get("depth_file_path")
        if dep is not None:
            dep = v.file_in(root, dep, f"{pth}.depth_file_path")
        frames.append(
            CameraFrame(i, cam, t, c2w, intr["fl_x"], intr["fl_y"], intr["cx"], intr["cy"], w, h, img, dep)
        )
    return tj, tuple(frames)


def _parse_lidar(root: Path) -> tuple[LidarSweep, ...]:
    p = root / "lidar.json"
    if not p.exists():
        return ()
    v = _V(p)
    lj = v.obj(_load_json(p), "")
    out = []
    for i, s in enumerate(v.lst(v.key(lj, "sweeps", ""), "sweeps")):
        pth = f"sweeps[{i}]"
        v.obj(s, pth)
        t = v.integer(v.key(s, "t_us", pth), f"{pth}.t_us", 0)
        m = v.matrix4(v.key(s, "sensor_to_world", pth), f"{pth}.sensor_to_world")
        f = v.file_in(root, v.key(s, "file_path", pth), f"{pth}.file_path")
        out.append(LidarSweep(i, t, m, f))
    return tuple(out)


def _parse_track(v: _V, d: Any, pth: str) -> Track:
    v.obj(d, pth)
    tid = v.string(v.key(d, "id", pth), f"{pth}.id")
    cls = v.key(d, "class", pth)
    if cls not in ACTOR_CLASSES:
        v.fail(f"{pth}.class", f"one of {list(ACTOR_CLASSES)}", cls)
    size = v.numbers(v.key(d, "size", pth), f"{pth}.size", 3, positive=True)
    t = v.lst(v.key(d, "t_us", pth), f"{pth}.t_us", 1)
    for i, x in enumerate(t):
        v.integer(x, f"{pth}.t_us[{i}]", 0)
    ta = np.asarray(t, dtype=np.int64)
    if np.any(np.diff(ta) <= 0):
        k = int(np.argmax(np.diff(ta) <= 0)) + 1
        v.fail(f"{pth}.t_us[{k}]", "strictly increasing times", int(ta[k]))
    cols = []
    for k in ("x", "y", "z", "yaw"):
        cols.append(v.numbers(v.key(d, k, pth), f"{pth}.{k}", len(t)))
    static = d.get("static", False)
    if not isinstance(static, bool):
        v.fail(f"{pth}.static", "true or false", static)
    return Track(tid, cls, (size[0], size[1], size[2]), ta, np.asarray(cols, dtype=np.float64).T.copy(), static)


def _parse_tracks(root: Path) -> tuple[Track, tuple[Track, ...]]:
    p = root / "tracks.json"
    v = _V(p)
    tj = v.obj(_load_json(p), "")
    ego = _parse_track(v, v.key(tj, "ego", ""), "ego")
    tracks = []
    seen: set[str] = {"ego"}
    for i, d in enumerate(v.lst(v.key(tj, "tracks", ""), "tracks")):
        tr = _parse_track(v, d, f"tracks[{i}]")
        if tr.id in seen:
            v.fail(f"tracks[{i}].id", "a unique actor id (not 'ego')", tr.id)
        seen.add(tr.id)
        tracks.append(tr)
    return ego, tuple(tracks)


def _parse_map(root: Path) -> dict[str, Any]:
    p = root / "map.json"
    v = _V(p)
    m = v.obj(_load_json(p), "")
    lanes = v.lst(v.key(m, "lanes", ""), "lanes", 1)
    ids: list[str] = []
    for i, ln in enumerate(lanes):
        pth = f"lanes[{i}]"
        v.obj(ln, pth)
        lid = v.string(v.key(ln, "id", pth), f"{pth}.id")
        if lid in ids:
            v.fail(f"{pth}.id", "a unique lane id", lid)
        ids.append(lid)
        cl = v.lst(v.key(ln, "centerline", pth), f"{pth}.centerline", 2)
        for j, pt in enumerate(cl):
            v.numbers(pt, f"{pth}.centerline[{j}]", 2)
        v.number(v.key(ln, "width", pth), f"{pth}.width", positive=True)
        v.number(v.key(ln, "speed_limit", pth), f"{pth}.speed_limit", positive=True)
        for k in ("successors", "predecessors"):
            for j, s in enumerate(v.lst(v.key(ln, k, pth), f"{pth}.{k}")):
                v.string(s, f"{pth}.{k}[{j}]")
        for k in ("left", "right"):
            x = ln.get(k)
            if x is not None:
                v.string(x, f"{pth}.{k}")
    known = set(ids)
    for i, ln in enumerate(lanes):
        pth = f"lanes[{i}]"
        for k in ("successors", "predecessors"):
            for j, s in enumerate(ln[k]):
                if s not in known:
                    v.fail(f"{pth}.{k}[{j}]", "the id of a lane in this map", s)
        for k in ("left", "right"):
            if ln.get(k) is not None and ln[k] not in known:
                v.fail(f"{pth}.{k}", "the id of a lane in this map or null", ln[k])
    for i, cw in enumerate(m.get("crosswalks", []) or []):
        pth = f"crosswalks[{i}]"
        v.obj(cw, pth)
        poly = v.lst(v.key(cw, "polygon", pth), f"{pth}.polygon", 3)
        for j, pt in enumerate(poly):
            v.numbers(pt, f"{pth}.polygon[{j}]", 2)
    return m


def read_log(path: str | os.PathLike[str]) -> DriveLog:
    """Read and validate a drive log folder.

    Raises:
        LogFormatError: naming the file, the field path and what was expected, for a missing
            folder or file, malformed JSON, a bad field, or an unknown ``format_version``.
    """
    root = Path(path)
    if not root.is_dir():
        raise LogFormatError("expected a drive-log folder", file=root)
    meta = _parse_meta(root)
    transforms, frames = _parse_transforms(root, meta)
    sweeps = _parse_lidar(root)
    ego, tracks = _parse_tracks(root)
    lane_map = _parse_map(root)
    return DriveLog(root, meta, frames, sweeps, ego, tracks, lane_map, transforms)


def validate_log(path: str | os.PathLike[str], *, check_payloads: bool = True) -> DriveLog:
    """Validate a log fully: everything :func:`read_log` checks plus the payloads (image sizes match
    intrinsics, depth PNGs are 16-bit, LiDAR arrays are finite float (N, 4)). Returns the log."""
    dl = read_log(path)
    if not check_payloads:
        return dl
    for fr in dl.frames:
        v = _V(dl.root / fr.image_path)
        try:
            with Image.open(dl.root / fr.image_path) as im:
                size = im.size
        except Exception as exc:
            v.fail("", f"a readable image ({exc})")
        if size != (fr.width, fr.height):
            v.fail("", f"an image of {fr.width}x{fr.height} as transforms.json says", f"{size[0]}x{size[1]}")
        if fr.depth_path is not None:
            vd = _V(dl.root / fr.depth_path)
            try:
                with Image.open(dl.root / fr.depth_path) as im:
                    mode, dsize = im.mode, im.size
            except Exception as exc:
                vd.fail("", f"a readable 16-bit PNG ({exc})")
            if mode not in ("I;16", "I") or dsize != (fr.width, fr.height):
                vd.fail("", f"a 16-bit PNG of {fr.width}x{fr.height}", f"mode {mode} {dsize}")
    for sw in dl.sweeps:
        vl = _V(dl.root / sw.path)
        try:
            a = np.load(dl.root / sw.path, allow_pickle=False)
        except Exception as exc:
            vl.fail("", f"a .npy array ({exc})")
        if a.ndim != 2 or a.shape[1] != 4 or a.dtype.kind != "f":
            vl.fail("", "a float array of shape (N, 4)", f"{a.dtype} {a.shape}")
        if not np.all(np.isfinite(a)):
            vl.fail("", "finite values only")
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

    def add_sweep(self, t_us: int, sensor_to_world: NDArray[np.floating], points: NDArray[np.floating]) -> None:
        """Add one LiDAR sweep: (N, 4) world-frame x, y, z, intensity and the sensor pose."""
        idx = len(self._sweeps)
        rel = f"lidar/{idx:06d}.npy"
        (self.tmp / "lidar").mkdir(exist_ok=True)
        np.save(self.tmp / rel, np.ascontiguousarray(points, dtype=np.float32), allow_pickle=False)
        self._sweeps.append(
            {"file_path": rel, "t_us": int(t_us), "sensor_to_world": _round_floats(sensor_to_world, 9)}
        )

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
        if self.out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old-", dir=self.out.resolve().parent))
            os.replace(self.out, trash / "old")
            os.replace(tmp, self.out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, self.out)
        self._tmp = None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self._finish()
        finally:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None


def copy_log(src: DriveLog, out: str | os.PathLike[str], *, overwrite: bool = False) -> DriveLog:
    """Write ``src`` to ``out`` through :class:`LogWriter` (a round trip of every field)."""
    cams = {c["name"]: c for c in src.meta["rig"]["cameras"]}
    meta = {k: v for k, v in src.meta.items() if k not in ("format_version", "depth_format")}
    del cams
    with LogWriter(out, meta, overwrite=overwrite) as w:
        for i, fr in enumerate(src.frames):
            w.add_frame(fr.camera, fr.t_us, fr.c2w, fr.K, src.image(i), src.depth(i))
        for j, sw in enumerate(src.sweeps):
            w.add_sweep(sw.t_us, sw.sensor_to_world, src.lidar(j))
        w.set_tracks(src.ego, src.tracks)
        w.set_map(src.map)
    return read_log(out)


def iter_frames(dl: DriveLog, camera: str | None = None) -> Iterator[tuple[CameraFrame, NDArray[np.uint8]]]:
    """Yield (frame, rgb) for all frames (of one camera when given)."""
    for i, fr in enumerate(dl.frames):
        if camera is None or fr.camera == camera:
            yield fr, dl.image(i)
