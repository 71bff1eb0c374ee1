"""nuScenes exporter: a drive log (the synth's ground truth) -> a data root the official
``nuscenes-devkit`` loads.

``export_nuscenes(LOG, ROOT)`` writes ``ROOT/<version>/`` with all 13 tables of the nuScenes schema
(attribute, calibrated_sensor, category, ego_pose, instance, log, map, sample, sample_annotation,
sample_data, scene, sensor, visibility) and every field of each, plus ``samples/`` (key frames),
``sweeps/`` (the other captures) and ``maps/`` (the map mask). One log is one scene.

Conventions (those of nuScenes):

* tokens are 32 hex digits, derived from the log name and the record (the same log exports to the
  same tokens); ``ego_pose.token`` equals its ``sample_data.token``;
* time stamps are microseconds since the Unix epoch: ``epoch_us`` + the log's ``t_us``;
* global frame = the log's world frame shifted by a map offset that puts the lower-left corner of
  the town at ``origin`` (metres), so coordinates are hundreds of metres as on a real nuScenes map
  (and float32 loses precision there, as it does on real data); the map mask PNG covers the map
  from the global origin at 0.1 m/pixel;
* key frames at ``keyframe_hz`` (2 Hz): every n-th LiDAR sweep (n = LiDAR rate / 2) is a sample
  stamped with the sweep's time; each camera's key frame is its capture inside that sweep (within one
  LiDAR period before the sweep's time stamp, the latest one); all other captures are sweeps
  (``is_key_frame`` false) whose ``sample_token`` is the next sample (the last one after it);
* every ``sample_data`` has its own time stamp and ``ego_pose``: the vehicle pose at that capture
  (the log's sensor pose times the inverse mount);
* ``calibrated_sensor``: the rig's mounts (cameras with OpenCV axes) and intrinsics; ``LIDAR_TOP``
  with the rig LiDAR's mount;
* ``.pcd.bin``: float32 (N, 5) x, y, z (m, in the LiDAR frame at the sweep's time stamp, i.e. the
  log's world points -- exact at each point's firing time -- expressed with the sweep's pose:
  ego-motion compensated as nuScenes' are), intensity 0..255 and ring (0 = lowest beam);
* annotations only at key frames: one per actor whose box holds a LiDAR return of the key sweep or
  shows in a key camera image (``num_lidar_pts``, visibility and attributes as
  :mod:`sim.importers.nuscenes_truth` computes them); box ``translation`` is the box centre,
  ``size`` is [width, length, height]; an instance per track (its token from the track id) with its
  annotations chained by ``prev`` / ``next``;
* camera images as JPEG (``image_format="jpg"``, as nuScenes) or lossless PNG.

The root is written into a temporary folder beside ``ROOT`` and renamed into place when complete.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import logging
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from scipy.spatial.transform import Rotation

from sim.errors import LogFormatError
from sim.fsutil import make_temp_dir, replace_dir
from sim.geometry import OPENCV_FROM_OPENGL, invert_se3
from sim.importers import nuscenes_truth as truth
from sim.log import DriveLog, read_log

__all__ = ["ATTRIBUTES", "CATEGORIES", "CATEGORY_OF", "DEFAULT_EPOCH_US", "DEFAULT_ORIGIN", "export_nuscenes", "instance_token"]

log = logging.getLogger(__name__)

#: nuScenes' categories (name, description) in the order of their lidarseg ``index``
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("noise", "Any lidar return that does not correspond to a physical object."),
    ("animal", "All animals, e.g. cats, rats, dogs, deer, birds."),
    ("human.pedestrian.adult", "Adult subcategory."),
    ("human.pedestrian.child", "Child subcategory."),
    ("human.pedestrian.construction_worker", "Construction worker"),
    ("human.pedestrian.personal_mobility", "A small electric or self-propelled vehicle."),
    ("human.pedestrian.police_officer", "Police officer."),
    ("human.pedestrian.stroller", "Strollers."),
    ("human.pedestrian.wheelchair", "Wheelchairs."),
    ("movable_object.barrier", "Temporary road barrier placed in the scene in order to redirect traffic."),
    ("movable_object.debris", "Movable object that is left on the driveable surface."),
    ("movable_object.pushable_pullable", "Objects that a pedestrian may push or pull."),
    ("movable_object.trafficcone", "All types of traffic cone."),
    ("static_object.bicycle_rack", "Area or device intended to park or secure the bicycles in a row."),
    ("vehicle.bicycle", "Human or electric powered 2-wheeled vehicle designed to travel at lower speeds."),
    ("vehicle.bus.bendy", "Bendy bus subcategory."),
    ("vehicle.bus.rigid", "Rigid bus subcategory."),
    ("vehicle.car", "Vehicle designed primarily for personal use, e.g. sedans, hatch-backs, wagons, vans, SUVs."),
    ("vehicle.construction", "Vehicles primarily designed for construction."),
    ("vehicle.emergency.ambulance", "All types of ambulances."),
    ("vehicle.emergency.police", "All types of police vehicles."),
    ("vehicle.motorcycle", "Gasoline or electric powered 2-wheeled vehicle designed to move rapidly."),
    ("vehicle.trailer", "Any vehicle trailer, both for trucks, cars and bikes."),
    ("vehicle.truck", "Vehicles primarily designed to haul cargo."),
    ("flat.driveable_surface", "All paved or unpaved surfaces that a car can drive on."),
    ("flat.other", "All other forms of horizontal ground-level structures."),
    ("flat.sidewalk", "Sidewalk, pedestrian walkways, bike paths, etc."),
    ("flat.terrain", "Natural horizontal surfaces such as ground level horizontal vegetation."),
    ("static.manmade", "Includes man-made structures but not limited to: buildings, walls, guard rails, fences, poles."),
    ("static.other", "Points in the background that are not distinguishable."),
    ("static.vegetation", "Any vegetation in the frame that is higher than the ground."),
    ("vehicle.ego", "The vehicle on which the cameras, radar and lidar are mounted."),
)
#: nuScenes' attributes (name, description)
ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("vehicle.moving", "Vehicle is moving."),
    ("vehicle.stopped", "Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move."),
    ("vehicle.parked", "Vehicle is stationary (usually for longer duration) with no immediate intent to move."),
    ("cycle.with_rider", "There is a rider on the bicycle or motorcycle."),
    ("cycle.without_rider", "There is NO rider on the bicycle or motorcycle."),
    ("pedestrian.sitting_lying_down", "The human is sitting or lying down."),
    ("pedestrian.standing", "The human is standing."),
    ("pedestrian.moving", "The human is moving."),
)
_VISIBILITY = (("1", "v0-40", "visibility of whole object is between 0 and 40%"),
               ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
               ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
               ("4", "v80-100", "visibility of whole object is between 80 and 100%"))
#: loopdrive actor class -> nuScenes category
CATEGORY_OF = {"car": "vehicle.car", "truck": "vehicle.truck", "bus": "vehicle.bus.rigid", "cyclist": "vehicle.bicycle",
               "pedestrian": "human.pedestrian.adult", "motorcycle": "vehicle.motorcycle", "other": "movable_object.pushable_pullable"}
#: default global position of the town's lower-left corner (m)
DEFAULT_ORIGIN = (300.0, 600.0)
#: default time of the log's t_us = 0: 2023-11-14 22:13:20 UTC, microseconds
DEFAULT_EPOCH_US = 1_700_000_000_000_000
_MAP_MARGIN_M = 20.0
_LIDAR = "LIDAR_TOP"


def _token(*parts: object) -> str:
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


def instance_token(scene_name: str, track_id: str) -> str:
    """The ``instance`` token the exporter gives track ``track_id`` of scene ``scene_name``."""
    return _token(f"loopdrive/{scene_name}", "instance", track_id)


def _quat(r: NDArray[np.floating]) -> list[float]:
    """[w, x, y, z] of a 3x3 rotation (w >= 0)."""
    x, y, z, w = Rotation.from_matrix(np.asarray(r, dtype=np.float64)).as_quat()
    q = np.array([w, x, y, z])
    return [float(v) for v in (q if w >= 0 else -q)]


def _channel(camera: str) -> str:
    return camera if camera.startswith("CAM_") else "CAM_" + camera.upper()


def _keyframes(dl: DriveLog, keyframe_hz: float) -> tuple[list[int], dict[str, list[int | None]]]:
    """Key sweep indices and, per camera, the frame index of its key frame in each of them."""
    if not dl.sweeps:
        raise LogFormatError("expected LiDAR sweeps (nuScenes key frames are LiDAR sweeps)", file=dl.root / "lidar.json")
    lidar_hz = float(dl.meta["rates"]["lidar_hz"])
    step = max(1, round(lidar_hz / keyframe_hz))
    period = round(1e6 / lidar_hz)
    keys = list(range(0, len(dl.sweeps), step))
    cams: dict[str, list[int | None]] = {}
    for cam in dl.cameras:
        idx = [f.index for f in dl.frames if f.camera == cam]
        ts = np.array([dl.frames[i].t_us for i in idx], dtype=np.int64)
        out: list[int | None] = []
        for k in keys:
            t = dl.sweeps[k].t_us
            ok = np.nonzero((ts >= t - period) & (ts <= t))[0]
            out.append(idx[int(ok[-1])] if len(ok) else None)
        cams[cam] = out
    return keys, cams


def _map_offset(dl: DriveLog, origin: tuple[float, float]) -> NDArray[np.float64]:
    pts = [np.asarray(ln["centerline"], dtype=np.float64) for ln in dl.map["lanes"]] + [dl.ego.pose[:, :2]]
    lo = np.floor(np.concatenate(pts, 0).min(0) * 10.0) / 10.0
    return np.array([origin[0] - lo[0], origin[1] - lo[1], 0.0])


class _Tables:
    """The 13 tables being built."""

    def __init__(self) -> None:
        self.t: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def add(self, table: str, **rec: Any) -> dict[str, Any]:
        self.t[table].append(rec)
        return rec

    def chain(self, recs: list[dict[str, Any]]) -> None:
        for a, b in itertools.pairwise(recs):
            a["next"], b["prev"] = b["token"], a["token"]


def export_nuscenes(
    log_path: str | os.PathLike[str] | DriveLog,
    out: str | os.PathLike[str],
    *,
    version: str = "v1.0-mini",
    scene_name: str | None = None,
    origin: tuple[float, float] = DEFAULT_ORIGIN,
    epoch_us: int = DEFAULT_EPOCH_US,
    keyframe_hz: float = 2.0,
    image_format: str = "jpg",
    overwrite: bool = False,
) -> Path:
    """Write drive log ``log_path`` as a nuScenes data root at ``out`` (see the module docstring).

    Args:
        version: the table folder (``NuScenes(version=...)``).
        scene_name: the scene's name (default: the log's name).
        origin: global x, y (m) of the town's lower-left corner.
        epoch_us: Unix time (microseconds) of the log's ``t_us = 0``.
        keyframe_hz: sample rate (nuScenes: 2 Hz).
        image_format: ``jpg`` (quality 95, as nuScenes) or ``png`` (lossless).
        overwrite: replace an existing non-empty ``out``.

    Returns:
        ``out``.

    Raises:
        LogFormatError: an invalid log, one without LiDAR sweeps, or an ``out`` that exists and
            is not empty (without ``overwrite``) or cannot be written.
    """
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    if not version or "/" in version or version in (".", ".."):
        raise LogFormatError(f"expected a version folder name like v1.0-mini, got {version!r}", field="version")
    dl = log_path if isinstance(log_path, DriveLog) else read_log(log_path)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise LogFormatError("expected an empty or new folder (pass --overwrite to replace it)", file=out)
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(parent, prefix=f".{out.name}.tmp-")
    except OSError as exc:
        raise LogFormatError(f"expected a writable location ({exc.strerror})", file=out) from None
    try:
        _write_root(dl, tmp, version, scene_name or dl.name, origin, epoch_us, keyframe_hz, image_format)
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


class _Export:
    """One export in progress: the log, the output folder, the tables and the shared lookups."""

    def __init__(self, dl: DriveLog, root: Path, name: str, origin: tuple[float, float], epoch_us: int) -> None:
        self.dl, self.root, self.name, self.epoch_us = dl, root, name, epoch_us
        self.ns = f"loopdrive/{name}"
        self.tb = _Tables()
        self.offset = _map_offset(dl, origin)
        self.rig = dl.meta["rig"]
        if not self.rig.get("lidar"):
            raise LogFormatError("expected a LiDAR in the rig (nuScenes' LIDAR_TOP)", file=dl.root / "meta.json", field="rig.lidar")
        self.lidar_mount = np.asarray(self.rig["lidar"]["vehicle_from_lidar"], dtype=np.float64)
        self.mounts: dict[str, NDArray[np.float64]] = {}
        self.calib: dict[str, str] = {}
        self.samples: list[dict[str, Any]] = []

    def static_tables(self) -> tuple[dict[str, str], dict[str, str]]:
        """category, attribute, visibility, sensor and calibrated_sensor; returns the category and
        attribute tokens by name."""
        tb, ns = self.tb, self.ns
        cat_tok = {n: _token("category", n) for n, _ in CATEGORIES}
        for i, (n, d) in enumerate(CATEGORIES):
            tb.add("category", token=cat_tok[n], name=n, description=d, index=i)
        att_tok = {n: _token("attribute", n) for n, _ in ATTRIBUTES}
        for n, d in ATTRIBUTES:
            tb.add("attribute", token=att_tok[n], name=n, description=d)
        for tok, level, d in _VISIBILITY:
            tb.add("visibility", token=tok, level=level, description=d)
        for c in self.rig["cameras"]:
            ch = _channel(c["name"])
            sen = tb.add("sensor", token=_token(ns, "sensor", ch), channel=ch, modality="camera")
            self.mounts[c["name"]] = np.asarray(c["vehicle_from_camera"], dtype=np.float64)
            m = self.mounts[c["name"]] @ OPENCV_FROM_OPENGL
            K = [[c["fx"], 0.0, c["cx"]], [0.0, c["fy"], c["cy"]], [0.0, 0.0, 1.0]]
            self.calib[ch] = tb.add("calibrated_sensor", token=_token(ns, "calibrated_sensor", ch), sensor_token=sen["token"],
                                    translation=[float(v) for v in m[:3, 3]], rotation=_quat(m[:3, :3]), camera_intrinsic=K)["token"]
        lm = self.lidar_mount
        sen = tb.add("sensor", token=_token(ns, "sensor", _LIDAR), channel=_LIDAR, modality="lidar")
        self.calib[_LIDAR] = tb.add("calibrated_sensor", token=_token(ns, "calibrated_sensor", _LIDAR), sensor_token=sen["token"],
                                    translation=[float(v) for v in lm[:3, 3]], rotation=_quat(lm[:3, :3]), camera_intrinsic=[])["token"]
        return cat_tok, att_tok

    def log_map_scene(self, keys: list[int]) -> None:
        """The log and map records (and the map mask PNG), the scene and its samples."""
        dl, tb, ns, offset = self.dl, self.tb, self.ns, self.offset
        log_tok = _token(ns, "log")
        syn = dl.meta.get("synth") or {}
        location = f"loopdrive-{syn['preset']}-s{syn['seed']}" if "preset" in syn else f"loopdrive-{dl.meta.get('source', 'log')}"
        date = datetime.datetime.fromtimestamp(self.epoch_us / 1e6, datetime.UTC).strftime("%Y-%m-%d")
        tb.add("log", token=log_tok, logfile=self.name, vehicle="loopdrive-ego", date_captured=date, location=location)
        map_rel = f"maps/{_token(ns, 'map')}.png"
        tb.add("map", token=_token(ns, "map"), log_tokens=[log_tok], category="semantic_prior", filename=map_rel)
        (self.root / "maps").mkdir(parents=True)
        hi = np.max(np.concatenate([np.asarray(ln["centerline"], dtype=np.float64) for ln in dl.map["lanes"]]), axis=0)
        extent = (float(offset[0] + hi[0] + _MAP_MARGIN_M), float(offset[1] + hi[1] + _MAP_MARGIN_M))
        truth.draw_map_mask(dl.map, offset, extent).save(self.root / map_rel, format="PNG")
        scene_tok = _token(ns, "scene")
        self.samples = [tb.add("sample", token=_token(ns, "sample", k), timestamp=self.epoch_us + dl.sweeps[k].t_us, prev="", next="",
                               scene_token=scene_tok) for k in keys]
        tb.chain(self.samples)
        where = f" ({syn['preset']} town, seed {syn['seed']})" if "preset" in syn else ""
        tb.add("scene", token=scene_tok, log_token=log_tok, nbr_samples=len(self.samples), first_sample_token=self.samples[0]["token"],
               last_sample_token=self.samples[-1]["token"], name=self.name,
               description=f"loopdrive {dl.meta.get('source', 'log')} log {dl.name}{where}")

    def sample_data(self, ch: str, key: int, t_us: int, world_from_ego: NDArray[np.float64], sample: str | None, ext: str,
                    w: int, h: int) -> dict[str, Any]:
        """A sample_data record and its ego_pose (same token); ``sample`` is the key frame's sample
        token, None for a sweep (then the next sample, or the last one)."""
        tok = _token(self.ns, "sample_data", ch, key)
        t_abs = self.epoch_us + t_us
        g = world_from_ego.copy()
        g[:3, 3] += self.offset
        self.tb.add("ego_pose", token=tok, timestamp=t_abs, rotation=_quat(g[:3, :3]), translation=[float(v) for v in g[:3, 3]])
        if sample is None:
            times = np.array([s["timestamp"] for s in self.samples], dtype=np.int64)
            sample = self.samples[min(int(np.searchsorted(times, t_abs, side="left")), len(self.samples) - 1)]["token"]
            folder = "sweeps"
        else:
            folder = "samples"
        return self.tb.add("sample_data", token=tok, sample_token=sample, ego_pose_token=tok, calibrated_sensor_token=self.calib[ch],
                           timestamp=t_abs, fileformat="pcd" if ext == "pcd.bin" else ext, is_key_frame=folder == "samples",
                           height=h, width=w, filename=f"{folder}/{ch}/{self.name}__{ch}__{t_abs}.{ext}", prev="", next="")

    def cameras(self, cam_keys: dict[str, list[int | None]], image_format: str) -> None:
        """Every camera capture: its sample_data, ego_pose and image file."""
        dl = self.dl
        key_frame_of = {i: s["token"] for idx in cam_keys.values() for s, i in zip(self.samples, idx, strict=True) if i is not None}
        for cam in dl.cameras:
            recs = []
            for f in sorted(dl.frames_of(cam), key=lambda f: f.t_us):
                sd = self.sample_data(_channel(cam), f.index, f.t_us, f.c2w @ invert_se3(self.mounts[cam]), key_frame_of.get(f.index),
                                      image_format, f.width, f.height)
                dest = self.root / sd["filename"]
                dest.parent.mkdir(parents=True, exist_ok=True)
                rgb = Image.fromarray(dl.image(f.index))
                if image_format == "jpg":
                    rgb.save(dest, format="JPEG", quality=95)
                else:
                    rgb.save(dest, format="PNG")
                recs.append(sd)
            self.tb.chain(recs)

    def lidar(self, keys: list[int]) -> None:
        """Every sweep: its sample_data, ego_pose and .pcd.bin (LiDAR frame at the sweep's time stamp)."""
        dl = self.dl
        spec_rings = _rings(self.rig["lidar"])
        key_sweeps = dict(zip(keys, self.samples, strict=True))
        recs = []
        for j, sw in enumerate(dl.sweeps):
            s = key_sweeps.get(j)
            sd = self.sample_data(_LIDAR, j, sw.t_us, sw.sensor_to_world @ invert_se3(self.lidar_mount), s["token"] if s else None,
                                  "pcd.bin", 0, 0)
            pts = dl.lidar(j).astype(np.float64)
            extra = dl.lidar_extra(j)
            p_s = (pts[:, :3] - sw.sensor_to_world[:3, 3]) @ sw.sensor_to_world[:3, :3]
            ring = extra[:, 1] if extra is not None else spec_rings(p_s)
            dest = self.root / sd["filename"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            np.column_stack([p_s, np.clip(pts[:, 3], 0.0, 1.0) * 255.0, ring]).astype(np.float32).tofile(dest)
            recs.append(sd)
        self.tb.chain(recs)

    def write_tables(self, version: str) -> None:
        tdir = self.root / version
        tdir.mkdir()
        for table in ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
                      "sample_annotation", "sample_data", "scene", "sensor", "visibility"):
            (tdir / f"{table}.json").write_text(json.dumps(self.tb.t.get(table, []), indent=0) + "\n")


def _write_root(dl: DriveLog, root: Path, version: str, name: str, origin: tuple[float, float], epoch_us: int,
                keyframe_hz: float, image_format: str) -> None:
    ex = _Export(dl, root, name, origin, epoch_us)
    keys, cam_keys = _keyframes(dl, keyframe_hz)
    cat_tok, att_tok = ex.static_tables()
    ex.log_map_scene(keys)
    ex.cameras(cam_keys, image_format)
    ex.lidar(keys)
    _annotate(dl, ex.tb, name, ex.samples, keys, cam_keys, ex.offset, cat_tok, att_tok)
    ex.write_tables(version)
    log.info("exported %s to %s: %d samples, %d sample_data, %d annotations", dl.name, root, len(ex.samples),
             len(ex.tb.t["sample_data"]), len(ex.tb.t["sample_annotation"]))


def _rings(lidar_meta: dict[str, Any]) -> Any:
    """Ring (0 = lowest beam) of sensor-frame points from their elevation, for logs without ``extra``."""
    lo, hi = (float(v) for v in lidar_meta["vertical_fov_deg"])
    beams = int(lidar_meta["beams"])

    def rings(p: NDArray[np.float64]) -> NDArray[np.float64]:
        el = np.degrees(np.arctan2(p[:, 2], np.hypot(p[:, 0], p[:, 1])))
        step = (hi - lo) / max(beams - 1, 1)
        return np.clip(np.round((el - lo) / step), 0, beams - 1)

    return rings


def _annotate(dl: DriveLog, tb: _Tables, name: str, samples: list[dict[str, Any]], keys: list[int], cam_keys: dict[str, list[int | None]],
              offset: NDArray[np.float64], cat_tok: dict[str, str], att_tok: dict[str, str]) -> None:
    ns = f"loopdrive/{name}"
    per_instance: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for n, (s, k) in enumerate(zip(samples, keys, strict=True)):
        sw = dl.sweeps[k]
        pts = dl.lidar(k)[:, :3]
        extra = dl.lidar_extra(k)
        t_pts = sw.t_us + (extra[:, 0].astype(np.int64) if extra is not None else np.zeros(len(pts), np.int64))
        frames = [(dl.frames[i], dl.depth(i)) for i in (idx[n] for idx in cam_keys.values()) if i is not None]
        for tr in dl.tracks:
            p = tr.pose_at(sw.t_us)
            if p is None:
                continue
            n_pts = truth.points_in_box_at_times(pts, t_pts, tr)
            seen, covered = truth.visible_fraction(frames, tr)
            if n_pts == 0 and seen == 0:
                continue
            length, width, height = tr.size
            c = np.array([p[0], p[1], p[2] + height / 2]) + offset
            rec = tb.add("sample_annotation", token=_token(ns, "sample_annotation", tr.id, k), sample_token=s["token"],
                         instance_token=instance_token(name, tr.id), visibility_token=truth.visibility_level(seen, covered),
                         attribute_tokens=[att_tok[a] for a in truth.attribute_names(tr, sw.t_us)],
                         translation=[float(v) for v in c], size=[float(width), float(length), float(height)],
                         rotation=_quat(Rotation.from_euler("z", p[3]).as_matrix()), prev="", next="",
                         num_lidar_pts=n_pts, num_radar_pts=0)
            per_instance[tr.id].append(rec)
    by_id = dl.track_by_id
    for tid, recs in per_instance.items():
        tb.chain(recs)
        tb.add("instance", token=instance_token(name, tid), category_token=cat_tok[CATEGORY_OF[by_id[tid].cls]],
               nbr_annotations=len(recs), first_annotation_token=recs[0]["token"], last_annotation_token=recs[-1]["token"])
