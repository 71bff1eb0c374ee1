"""The schema of a drive log's JSON files (``meta.json``, ``transforms.json``, ``lidar.json``,
``tracks.json``, ``map.json``): strict parsers behind :func:`sim.log.read_log`.

Each parser reads its file through :func:`sim.log_validate.load_json` (regular file, size and
nesting caps) and checks every field the project reads with :class:`~sim.log_validate.FieldChecker`:
types are strict (``true`` is not the integer 1), times are int64 microseconds >= 0, positions and
translations are finite and within :data:`~sim.log_validate.MAX_COORD_M` metres, sizes positive.
The tracks and map parsers also check a scene bundle's copies (with the bundle's error class).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import LogFormatError, LoopdriveError
from sim.log import ACTOR_CLASSES, DEPTH_FORMAT, SUPPORTED_VERSIONS, CameraFrame, LidarSweep, Track
from sim.log_validate import MAX_IMAGE_SIDE, MAX_LIDAR_RAYS, MAX_SIZE, FieldChecker, load_json

__all__ = ["parse_lidar", "parse_map", "parse_meta", "parse_track", "parse_tracks", "parse_transforms"]


def _optional_meta(v: FieldChecker, meta: dict[str, Any]) -> None:
    """Optional ``meta.json`` fields other modules read: ``name`` and the synth record."""
    if "name" in meta:
        v.string(meta["name"], "name")
    syn = meta.get("synth")
    if syn is not None:
        v.obj(syn, "synth")
        if "preset" in syn:
            v.string(syn["preset"], "synth.preset")
        if "seed" in syn:
            v.integer(syn["seed"], "synth.seed", 0)
        if "supersample" in syn:
            v.integer(syn["supersample"], "synth.supersample", 1, 16)


def _rig(v: FieldChecker, rig: dict[str, Any]) -> None:
    cams = v.lst(v.key(rig, "cameras", "rig"), "rig.cameras", 1)
    names = set()
    for i, c in enumerate(cams):
        pth = f"rig.cameras[{i}]"
        v.obj(c, pth)
        n = v.string(v.key(c, "name", pth), f"{pth}.name")
        if n in names:
            v.fail(f"{pth}.name", "a unique camera name", n)
        names.add(n)
        v.integer(v.key(c, "width", pth), f"{pth}.width", 1, MAX_IMAGE_SIDE)
        v.integer(v.key(c, "height", pth), f"{pth}.height", 1, MAX_IMAGE_SIDE)
        for k in ("fx", "fy"):
            v.number(v.key(c, k, pth), f"{pth}.{k}", positive=True, limit=MAX_SIZE)
        for k in ("cx", "cy"):
            v.number(v.key(c, k, pth), f"{pth}.{k}", limit=MAX_SIZE)
        v.matrix4(v.key(c, "vehicle_from_camera", pth), f"{pth}.vehicle_from_camera")
    if rig.get("lidar") is not None:
        li = v.obj(rig["lidar"], "rig.lidar")
        beams = v.integer(v.key(li, "beams", "rig.lidar"), "rig.lidar.beams", 1, MAX_LIDAR_RAYS)
        az = v.integer(v.key(li, "azimuth_steps", "rig.lidar"), "rig.lidar.azimuth_steps", 1, MAX_LIDAR_RAYS)
        if beams * az > MAX_LIDAR_RAYS:
            v.fail("rig.lidar.azimuth_steps", f"beams x azimuth_steps at most {MAX_LIDAR_RAYS}", beams * az)
        fov = v.numbers(v.key(li, "vertical_fov_deg", "rig.lidar"), "rig.lidar.vertical_fov_deg", 2, limit=90.0)
        if not fov[0] < fov[1]:
            v.fail("rig.lidar.vertical_fov_deg", "[lower, upper] with lower < upper", fov)
        v.number(v.key(li, "max_range_m", "rig.lidar"), "rig.lidar.max_range_m", positive=True, limit=MAX_SIZE)
        v.matrix4(v.key(li, "vehicle_from_lidar", "rig.lidar"), "rig.lidar.vehicle_from_lidar")


def parse_meta(root: Path) -> dict[str, Any]:
    """``meta.json``: format version, source, rates (Hz), sensor rig, ego size (m), depth format."""
    p = root / "meta.json"
    v = FieldChecker(p)
    meta = v.obj(load_json(p), "")
    ver = v.key(meta, "format_version", "")
    if isinstance(ver, bool) or not isinstance(ver, int) or ver not in SUPPORTED_VERSIONS:
        v.fail("format_version", f"one of the supported versions {list(SUPPORTED_VERSIONS)}", ver)
    v.string(v.key(meta, "source", ""), "source")
    rates = v.obj(v.key(meta, "rates", ""), "rates")
    for k in ("camera_hz", "lidar_hz"):
        v.number(v.key(rates, k, "rates"), f"rates.{k}", positive=True, limit=MAX_SIZE)
    _rig(v, v.obj(v.key(meta, "rig", ""), "rig"))
    ego = v.obj(v.key(meta, "ego", ""), "ego")
    v.numbers(v.key(ego, "size", "ego"), "ego.size", 3, positive=True, limit=MAX_SIZE)
    df = v.key(meta, "depth_format", "")
    if df != DEPTH_FORMAT:
        v.fail("depth_format", f"{DEPTH_FORMAT!r}", df)
    _optional_meta(v, meta)
    return meta


def parse_transforms(root: Path, meta: dict[str, Any]) -> tuple[dict[str, Any], tuple[CameraFrame, ...]]:
    """``transforms.json``: per frame camera, ``t_us``, camera-to-world, intrinsics and files."""
    p = root / "transforms.json"
    v = FieldChecker(p)
    tj = v.obj(load_json(p), "")
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
            intr[k] = v.number(fr.get(k, tj.get(k)), f"{pth}.{k}", positive=True, limit=MAX_SIZE)
        for k in ("cx", "cy"):
            intr[k] = v.number(fr.get(k, tj.get(k)), f"{pth}.{k}", limit=MAX_SIZE)
        wh = {}
        for k, rk in (("w", "width"), ("h", "height")):
            wh[k] = v.integer(fr.get(k, tj.get(k)), f"{pth}.{k}", 1, MAX_IMAGE_SIDE)
            if wh[k] != cams[cam][rk]:
                v.fail(f"{pth}.{k}", f"the {rk} of camera {cam!r} in meta.json ({cams[cam][rk]})", wh[k])
        img = v.file_in(root, v.key(fr, "file_path", pth), f"{pth}.file_path")
        dep = fr.get("depth_file_path")
        if dep is not None:
            dep = v.file_in(root, dep, f"{pth}.depth_file_path")
        frames.append(
            CameraFrame(i, cam, t, c2w, intr["fl_x"], intr["fl_y"], intr["cx"], intr["cy"], wh["w"], wh["h"], img, dep)
        )
    return tj, tuple(frames)


def parse_lidar(root: Path) -> tuple[LidarSweep, ...]:
    """``lidar.json`` (optional): per sweep ``t_us``, sensor-to-world, the ``.npy`` file and
    optionally the per-point ``extra_path`` file."""
    p = root / "lidar.json"
    if not os.path.lexists(p):
        return ()
    v = FieldChecker(p)
    lj = v.obj(load_json(p), "")
    out = []
    for i, s in enumerate(v.lst(v.key(lj, "sweeps", ""), "sweeps")):
        pth = f"sweeps[{i}]"
        v.obj(s, pth)
        t = v.integer(v.key(s, "t_us", pth), f"{pth}.t_us", 0)
        m = v.matrix4(v.key(s, "sensor_to_world", pth), f"{pth}.sensor_to_world")
        f = v.file_in(root, v.key(s, "file_path", pth), f"{pth}.file_path")
        x = s.get("extra_path")
        out.append(LidarSweep(i, t, m, f, None if x is None else v.file_in(root, x, f"{pth}.extra_path")))
    return tuple(out)


def parse_track(v: FieldChecker, d: Any, pth: str) -> Track:
    """One track: id, class, size (m), strictly increasing int64 ``t_us`` and x, y, z, yaw per time."""
    v.obj(d, pth)
    tid = v.string(v.key(d, "id", pth), f"{pth}.id")
    cls = v.key(d, "class", pth)
    if not isinstance(cls, str) or cls not in ACTOR_CLASSES:
        v.fail(f"{pth}.class", f"one of {list(ACTOR_CLASSES)}", cls)
    size = v.numbers(v.key(d, "size", pth), f"{pth}.size", 3, positive=True, limit=MAX_SIZE)
    t = v.lst(v.key(d, "t_us", pth), f"{pth}.t_us", 1)
    for i, x in enumerate(t):
        v.integer(x, f"{pth}.t_us[{i}]", 0)
    ta = np.asarray(t, dtype=np.int64)
    if np.any(np.diff(ta) <= 0):
        k = int(np.argmax(np.diff(ta) <= 0)) + 1
        v.fail(f"{pth}.t_us[{k}]", "strictly increasing times", int(ta[k]))
    cols = [v.numbers(v.key(d, k, pth), f"{pth}.{k}", len(t)) for k in ("x", "y", "z", "yaw")]
    static = v.boolean(d.get("static", False), f"{pth}.static")
    return Track(tid, cls, (size[0], size[1], size[2]), ta, np.asarray(cols, dtype=np.float64).T.copy(), static)


def parse_tracks(root: Path, error: type[LoopdriveError] = LogFormatError) -> tuple[Track, tuple[Track, ...]]:
    """``tracks.json``: the ego track and the actor tracks (unique ids, none ``ego``)."""
    p = root / "tracks.json"
    v = FieldChecker(p, error)
    tj = v.obj(load_json(p, error=error), "")
    ego = parse_track(v, v.key(tj, "ego", ""), "ego")
    tracks = []
    seen: set[str] = {"ego"}
    for i, d in enumerate(v.lst(v.key(tj, "tracks", ""), "tracks")):
        tr = parse_track(v, d, f"tracks[{i}]")
        if tr.id in seen:
            v.fail(f"tracks[{i}].id", "a unique actor id (not 'ego')", tr.id)
        seen.add(tr.id)
        tracks.append(tr)
    return ego, tuple(tracks)


def _lane(v: FieldChecker, ln: Any, pth: str) -> str:
    v.obj(ln, pth)
    lid = v.string(v.key(ln, "id", pth), f"{pth}.id")
    cl = v.lst(v.key(ln, "centerline", pth), f"{pth}.centerline", 2)
    pts = np.asarray([v.numbers(pt, f"{pth}.centerline[{j}]", 2) for j, pt in enumerate(cl)])
    if not np.any(np.linalg.norm(np.diff(pts, axis=0), axis=1) > 1e-9):
        v.fail(f"{pth}.centerline", "at least two distinct points")
    v.number(v.key(ln, "width", pth), f"{pth}.width", positive=True, limit=MAX_SIZE)
    v.number(v.key(ln, "speed_limit", pth), f"{pth}.speed_limit", positive=True, limit=MAX_SIZE)
    for k in ("successors", "predecessors"):
        for j, s in enumerate(v.lst(v.key(ln, k, pth), f"{pth}.{k}")):
            v.string(s, f"{pth}.{k}[{j}]")
    for k in ("left", "right"):
        if ln.get(k) is not None:
            v.string(ln[k], f"{pth}.{k}")
    return lid


def parse_map(root: Path, error: type[LoopdriveError] = LogFormatError) -> dict[str, Any]:
    """``map.json``: lanes (unique ids, centreline m, width m, speed limit m/s, links to lanes of
    this map) and optional crosswalks (polygons, m)."""
    p = root / "map.json"
    v = FieldChecker(p, error)
    m = v.obj(load_json(p, error=error), "")
    lanes = v.lst(v.key(m, "lanes", ""), "lanes", 1)
    ids: set[str] = set()
    for i, ln in enumerate(lanes):
        lid = _lane(v, ln, f"lanes[{i}]")
        if lid in ids:
            v.fail(f"lanes[{i}].id", "a unique lane id", lid)
        ids.add(lid)
    for i, ln in enumerate(lanes):
        pth = f"lanes[{i}]"
        for k in ("successors", "predecessors"):
            for j, s in enumerate(ln[k]):
                if s not in ids:
                    v.fail(f"{pth}.{k}[{j}]", "the id of a lane in this map", s)
        for k in ("left", "right"):
            if ln.get(k) is not None and ln[k] not in ids:
                v.fail(f"{pth}.{k}", "the id of a lane in this map or null", ln[k])
    cws = m.get("crosswalks")
    for i, cw in enumerate(v.lst(cws, "crosswalks") if cws is not None else []):
        pth = f"crosswalks[{i}]"
        v.obj(cw, pth)
        poly = v.lst(v.key(cw, "polygon", pth), f"{pth}.polygon", 3)
        for j, pt in enumerate(poly):
            v.numbers(pt, f"{pth}.polygon[{j}]", 2)
    return m
