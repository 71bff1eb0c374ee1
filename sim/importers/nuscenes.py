"""nuScenes importer: one scene of a nuScenes-format data root -> a loopdrive drive log.

Reads the JSON tables of ``DATAROOT/<version>/`` directly (``scene``, ``sample``, ``sample_data``,
``ego_pose``, ``calibrated_sensor``, ``sensor``, ``sample_annotation``, ``instance``, ``category``)
and the key-frame files under ``samples/``; the nuScenes devkit is not needed.

Conversions:

* nuScenes global frame (z up, metres) is the log's world frame, shifted so the first ego pose is
  the origin (large UTM-like coordinates lose float32 precision in LiDAR arrays).
* Cameras: ``calibrated_sensor`` gives sensor-to-ego with OpenCV camera axes; the log's
  ``transform_matrix`` is camera-to-world with OpenGL axes (:func:`sim.geometry.opencv_to_opengl_c2w`).
* LiDAR ``.pcd.bin`` files are float32 (N, 5): x, y, z, intensity (0..255), ring; points are moved
  to the world frame and intensity scaled to [0, 1].
* Boxes: nuScenes ``size`` is [width, length, height] and ``translation`` is the box centre; the
  log stores [length, width, height] and the box *bottom* centre.
* Classes: ``vehicle.car`` -> car, ``vehicle.truck``/``vehicle.trailer``/``vehicle.construction``
  -> truck, ``vehicle.bus.*`` -> bus, ``vehicle.bicycle`` -> cyclist, ``vehicle.motorcycle`` ->
  motorcycle, ``human.pedestrian.*`` -> pedestrian, anything else -> other.
* Lane map: the core nuScenes tables carry no lane graph (it lives in the separate map expansion,
  which this importer does not read). The log gets one lane along the ego's driven path
  (``attrs: {"source": "ego_path"}``), enough for routing the ego; say so when you use it.

Only key frames (``is_key_frame``) are imported. Images are re-encoded as PNG; no depth is written.

The data set is untrusted input: each table is read through the drive log's size- and
nesting-capped JSON reader (at most :data:`MAX_TABLE_BYTES`) and every record field the importer
uses is checked (:data:`FIELDS`) before any conversion; the files a record names must be regular
files inside the data root (images JPEG/PNG, LiDAR float32 (N, 5), both size-capped). A problem
raises :class:`~sim.errors.LogFormatError` naming the table (or file) and the field, before the
output folder is made.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from scipy.spatial.transform import Rotation

from sim.errors import LogFormatError
from sim.fsutil import check_input_file
from sim.geometry import opencv_to_opengl_c2w, se3_matrix
from sim.importers import IMPORTERS
from sim.log import LogWriter, Track
from sim.log_validate import MAX_IMAGE_BYTES, MAX_IMAGE_SIDE, MAX_LIDAR_BYTES, FieldChecker, load_json

__all__ = ["CLASS_MAP", "import_nuscenes"]

log = logging.getLogger(__name__)

CLASS_MAP = {
    "vehicle.car": "car",
    "vehicle.truck": "truck",
    "vehicle.trailer": "truck",
    "vehicle.construction": "truck",
    "vehicle.emergency.ambulance": "truck",
    "vehicle.emergency.police": "car",
    "vehicle.bicycle": "cyclist",
    "vehicle.motorcycle": "motorcycle",
}

_TABLES = ("scene", "sample", "sample_data", "ego_pose", "calibrated_sensor", "sensor", "sample_annotation", "instance", "category")


#: cap on one JSON table (bytes): the full data set's largest tables are a few hundred MB.
MAX_TABLE_BYTES = 2 * 1024**3

#: fields each table's records must have, with their kind: ``str`` (non-empty), ``link`` (a token
#: or "" for none), ``int`` (int64, e.g. timestamps in microseconds), ``bool``, ``vec3`` (3 finite
#: numbers, m), ``quat`` (w, x, y, z, non-zero), ``size`` (3 positive numbers, m), ``list``.
FIELDS: dict[str, dict[str, str]] = {
    "scene": {"token": "str", "name": "str", "first_sample_token": "str"},
    "sample": {"token": "str", "timestamp": "int", "next": "link"},
    "sample_data": {"token": "str", "sample_token": "str", "ego_pose_token": "str", "calibrated_sensor_token": "str",
                    "timestamp": "int", "filename": "str"},
    "ego_pose": {"token": "str", "rotation": "quat", "translation": "vec3"},
    "calibrated_sensor": {"token": "str", "sensor_token": "str", "rotation": "quat", "translation": "vec3", "camera_intrinsic": "list"},
    "sensor": {"token": "str", "channel": "str", "modality": "str"},
    "sample_annotation": {"token": "str", "sample_token": "str", "instance_token": "str", "translation": "vec3", "size": "size",
                          "rotation": "quat"},
    "instance": {"token": "str", "category_token": "str"},
    "category": {"token": "str", "name": "str"},
}


def _check_record(v: FieldChecker, r: Any, i: int, fields: dict[str, str]) -> None:
    pth = f"[{i}]"
    v.obj(r, pth)
    for name, kind in fields.items():
        f = f"{pth}.{name}"
        x = v.key(r, name, pth)
        if kind == "str":
            v.string(x, f)
        elif kind == "link":
            if not isinstance(x, str):
                v.fail(f, "a token string (empty for none)", x)
        elif kind == "int":
            v.integer(x, f, 0)
        elif kind == "list":
            v.lst(x, f)
        elif kind in ("vec3", "size"):
            v.numbers(x, f, 3, positive=kind == "size")
        elif kind == "quat" and not np.linalg.norm(v.numbers(x, f, 4)) > 1e-9:
            v.fail(f, "a non-zero quaternion [w, x, y, z]", x)
    if "is_key_frame" in r:
        v.boolean(r["is_key_frame"], f"{pth}.is_key_frame")


def _data_file(source: Path, rel: str, table: Path, where: str, max_bytes: int) -> Path:
    """``source / rel`` once it is a regular file inside the data root of at most ``max_bytes``."""
    FieldChecker(table).file_in(source, rel, where)
    return check_input_file(source / rel, error=LogFormatError, max_bytes=max_bytes, what="a data file of the data set")


def _read_rgb(path: Path) -> NDArray[np.uint8]:
    """(H, W, 3) uint8 of a JPEG or PNG camera image (LogFormatError naming it otherwise)."""
    try:
        with Image.open(path, formats=["JPEG", "PNG"]) as im:
            if max(im.size) > MAX_IMAGE_SIDE:
                raise LogFormatError(f"expected an image of at most {MAX_IMAGE_SIDE} pixels a side, got {im.size}", file=path)
            return np.asarray(im.convert("RGB"))
    except LogFormatError:
        raise
    except Exception as exc:  # any decoder failure of an untrusted file
        raise LogFormatError(f"expected a JPEG or PNG image ({type(exc).__name__}: {str(exc)[:80]})", file=path) from None


def _cls(name: str) -> str:
    if name in CLASS_MAP:
        return CLASS_MAP[name]
    if name.startswith("vehicle.bus"):
        return "bus"
    if name.startswith("human.pedestrian"):
        return "pedestrian"
    return "other"


def _pose(rotation_wxyz: list[float], translation: list[float]) -> NDArray[np.float64]:
    w, x, y, z = rotation_wxyz
    return se3_matrix(Rotation.from_quat([x, y, z, w]).as_matrix(), translation)


def _load_tables(root: Path, version: str) -> dict[str, dict[str, dict[str, Any]]]:
    tdir = root / version
    if not tdir.is_dir():
        raise LogFormatError(f"expected a nuScenes table folder {version}/", file=root)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for t in _TABLES:
        p = tdir / f"{t}.json"
        v = FieldChecker(p)
        rows = v.lst(load_json(p, max_bytes=MAX_TABLE_BYTES), "")
        for i, r in enumerate(rows):
            _check_record(v, r, i, FIELDS[t])
        out[t] = {r["token"]: r for r in rows}
        if len(out[t]) != len(rows):
            v.fail("token", "unique tokens", f"{len(rows) - len(out[t])} duplicate(s)")
    return out


def _get(tables: dict[str, dict[str, dict[str, Any]]], table: str, token: str, where: str, root: Path, version: str) -> dict[str, Any]:
    try:
        return tables[table][token]
    except KeyError:
        raise LogFormatError(f"expected a {table} record with token {token!r}", file=root / version / f"{table}.json", field=where) from None


def import_nuscenes(
    source: Path,
    out: Path,
    *,
    scene: str | None = None,
    version: str = "v1.0-mini",
    camera: str = "CAM_FRONT",
    lidar: str = "LIDAR_TOP",
    overwrite: bool = False,
) -> Path:
    """Import one nuScenes scene (by name; the first one when None) into a drive log at ``out``.

    Raises:
        LogFormatError: a missing table/file, a dangling token or a scene name that does not exist.
    """
    source, out = Path(source), Path(out)
    tables = _load_tables(source, version)
    scenes = sorted(tables["scene"].values(), key=lambda s: s.get("name", ""))
    if scene is not None:
        scenes = [s for s in scenes if s.get("name") == scene]
        if not scenes:
            names = sorted(s.get("name", "") for s in tables["scene"].values())
            raise LogFormatError(f"expected a scene named {scene!r} (have: {names})", file=source / version / "scene.json")
    if not scenes:
        raise LogFormatError("expected at least one scene", file=source / version / "scene.json")
    sc = scenes[0]

    # key-frame samples of the scene, in order
    samples: list[dict[str, Any]] = []
    tok = sc["first_sample_token"]
    while tok:
        s = _get(tables, "sample", tok, "first_sample_token/next", source, version)
        if samples and s["timestamp"] <= samples[-1]["timestamp"]:
            raise LogFormatError("expected samples linked by next in strictly increasing time (no cycle)",
                                 file=source / version / "sample.json", field=f"{samples[-1]['token']}.next")
        samples.append(s)
        tok = s["next"]
    channel_of = {}
    for cs in tables["calibrated_sensor"].values():
        sen = _get(tables, "sensor", cs["sensor_token"], f"{cs['token']}.sensor_token", source, version)
        channel_of[cs["token"]] = (sen["channel"], sen["modality"])
    by_sample: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for sd in tables["sample_data"].values():
        if sd.get("is_key_frame", True):
            ch, _ = channel_of.get(sd["calibrated_sensor_token"], (None, None))
            if ch is not None:
                by_sample[sd["sample_token"]][ch] = sd

    t0 = int(samples[0]["timestamp"])
    ego_poses = []
    origin: NDArray[np.float64] | None = None
    frames = []
    for k, s in enumerate(samples):
        sds = by_sample.get(s["token"], {})
        if camera not in sds or lidar not in sds:
            raise LogFormatError(f"expected {camera} and {lidar} key frames for sample {s['token']!r}", file=source / version / "sample_data.json")
        cam_sd, lid_sd = sds[camera], sds[lidar]
        ego = _get(tables, "ego_pose", cam_sd["ego_pose_token"], f"sample_data[{cam_sd['token']}].ego_pose_token", source, version)
        world_from_ego = _pose(ego["rotation"], ego["translation"])
        if origin is None:
            origin = world_from_ego[:3, 3].copy()
        ego_poses.append((int(s["timestamp"]) - t0, world_from_ego))
        frames.append((k, s, cam_sd, lid_sd))
    assert origin is not None
    shift = se3_matrix(np.eye(3), -origin)

    # the rig from the first key frame's calibration
    cam_cs = tables["calibrated_sensor"][frames[0][2]["calibrated_sensor_token"]]
    lid_cs = tables["calibrated_sensor"][frames[0][3]["calibrated_sensor_token"]]
    kv = FieldChecker(source / version / "calibrated_sensor.json")
    k_raw = kv.lst(cam_cs["camera_intrinsic"], f"{cam_cs['token']}.camera_intrinsic", 3)
    K = np.asarray([kv.numbers(r, f"{cam_cs['token']}.camera_intrinsic[{i}]", 3) for i, r in enumerate(k_raw[:3])])
    if K.shape != (3, 3) or not (K[0, 0] > 0 and K[1, 1] > 0):
        kv.fail(f"{cam_cs['token']}.camera_intrinsic", "a 3x3 matrix with positive focal lengths", k_raw)
    sample_table = source / version / "sample_data.json"
    for _, _s, cam_sd, lid_sd in frames:  # every file is checked before the output folder is made
        cam_sd["_path"] = _data_file(source, cam_sd["filename"], sample_table, f"{cam_sd['token']}.filename", MAX_IMAGE_BYTES)
        lid_sd["_path"] = _data_file(source, lid_sd["filename"], sample_table, f"{lid_sd['token']}.filename", MAX_LIDAR_BYTES)
    vehicle_from_cam = opencv_to_opengl_c2w(_pose(cam_cs["rotation"], cam_cs["translation"]))
    vehicle_from_lidar = _pose(lid_cs["rotation"], lid_cs["translation"])
    height, width = _read_rgb(frames[0][2]["_path"]).shape[:2]
    meta = {
        "name": sc.get("name", out.name),
        "source": "nuscenes",
        "nuscenes": {"version": version, "scene": sc.get("name"), "scene_token": sc["token"], "origin": origin.tolist()},
        "rates": {"camera_hz": 2.0, "lidar_hz": 2.0},
        "rig": {
            "cameras": [{"name": "front", "width": width, "height": height, "fx": float(K[0, 0]), "fy": float(K[1, 1]),
                         "cx": float(K[0, 2]), "cy": float(K[1, 2]), "vehicle_from_camera": np.round(vehicle_from_cam, 9).tolist()}],
            "lidar": None,
        },
        "ego": {"size": [4.08, 1.73, 1.56]},
    }

    # actor tracks from the scene's annotations
    per_inst: dict[str, list[tuple[int, list[float], list[float], list[float]]]] = defaultdict(list)
    sample_t = {s["token"]: int(s["timestamp"]) - t0 for s in samples}
    for ann in tables["sample_annotation"].values():
        if ann["sample_token"] in sample_t:
            per_inst[ann["instance_token"]].append((sample_t[ann["sample_token"]], ann["translation"], ann["size"], ann["rotation"]))
    tracks = []
    for n, (inst_tok, anns) in enumerate(sorted(per_inst.items())):
        inst = _get(tables, "instance", inst_tok, "sample_annotation.instance_token", source, version)
        cat = _get(tables, "category", inst["category_token"], f"instance[{inst_tok}].category_token", source, version)
        anns.sort(key=lambda a: a[0])
        w, length, h = anns[0][2]
        t = np.array([a[0] for a in anns], dtype=np.int64)
        if np.any(np.diff(t) <= 0):
            raise LogFormatError("expected at most one annotation per sample for each instance",
                                 file=source / version / "sample_annotation.json", field=f"instance_token {inst_tok}")
        pose = np.array(
            [[a[1][0] - origin[0], a[1][1] - origin[1], a[1][2] - origin[2] - a[2][2] / 2.0,
              Rotation.from_quat([a[3][1], a[3][2], a[3][3], a[3][0]]).as_euler("ZYX")[0]] for a in anns]
        )
        tracks.append(Track(str(n), _cls(cat["name"]), (float(length), float(w), float(h)), t, pose, static=bool(np.ptp(pose[:, :2], axis=0).max() < 0.2) if len(t) > 1 else False))

    ego_t = np.array([t for t, _ in ego_poses], dtype=np.int64)
    ego_pose = np.array([[m[0, 3] - origin[0], m[1, 3] - origin[1], m[2, 3] - origin[2],
                          float(np.arctan2(m[1, 0], m[0, 0]))] for _, m in ego_poses])
    ego_track = Track("ego", "car", tuple(meta["ego"]["size"]), ego_t, ego_pose)

    # one lane along the ego path (the core tables have no lane graph)
    path = ego_pose[:, :2]
    keep = np.concatenate([[True], np.linalg.norm(np.diff(path, axis=0), axis=1) > 0.5])
    pts = path[keep]
    if len(pts) < 2:
        pts = np.array([path[0], path[0] + 10.0 * np.array([np.cos(ego_pose[0, 3]), np.sin(ego_pose[0, 3])])])
    lane_map = {"lanes": [{"id": "ego_path", "centerline": np.round(pts, 6).tolist(), "width": 3.5, "speed_limit": 13.9,
                           "successors": [], "predecessors": [], "left": None, "right": None, "source": "ego_path"}],
                "crosswalks": []}

    with LogWriter(out, meta, overwrite=overwrite) as w:
        for (t_rel, world_from_ego), (_, _s, cam_sd, lid_sd) in zip(ego_poses, frames, strict=True):
            world = shift @ world_from_ego
            rgb = _read_rgb(cam_sd["_path"])
            if rgb.shape[:2] != (height, width):
                raise LogFormatError(f"expected an image of {width}x{height} like the first key frame, got {rgb.shape[1]}x{rgb.shape[0]}",
                                     file=cam_sd["_path"])
            w.add_frame("front", t_rel, world @ vehicle_from_cam, K, rgb)
            lid_ego = _get(tables, "ego_pose", lid_sd["ego_pose_token"], f"sample_data[{lid_sd['token']}].ego_pose_token", source, version)
            s2w = shift @ _pose(lid_ego["rotation"], lid_ego["translation"]) @ vehicle_from_lidar
            raw = np.fromfile(lid_sd["_path"], dtype=np.float32)
            if raw.size % 5 or not np.all(np.isfinite(raw)):
                raise LogFormatError("expected finite float32 (N, 5) points", file=lid_sd["_path"])
            pts5 = raw.reshape(-1, 5)
            xyz = pts5[:, :3].astype(np.float64) @ s2w[:3, :3].T + s2w[:3, 3]
            w.add_sweep(int(lid_sd["timestamp"]) - t0, s2w, np.concatenate([xyz, np.clip(pts5[:, 3:4] / 255.0, 0, 1)], axis=1))
        w.set_tracks(ego_track, tracks)
        w.set_map(lane_map)
    log.info("imported nuScenes scene %s (%d key frames, %d tracks) to %s", sc.get("name"), len(frames), len(tracks), out)
    return out


IMPORTERS.register("nuscenes", import_nuscenes)
