"""Actor tracks, the ego track and the lane map of an imported nuScenes scene.

* **Track ids are instance tokens**: an ``instance``'s annotations become the track whose id is
  the instance token, so a closed-loop client addresses an actor by the token it knows from the
  data set (the bundle, ``loopdrive serve``'s actor API and its neurad protocol keep the id).
* **Visibility intervals are kept**: nuScenes annotates at key frames (2 Hz) only, and a drive log
  interpolates a track between its samples. Where an instance is missing from the annotations
  for longer than ``max_gap_us`` (:data:`MAX_GAP_S`: consecutive annotations more than 1.5 s
  apart, i.e. three or more key frames without it), no pose is invented across the gap: the
  annotations after it start a new track ``<instance token>-2`` (then ``-3``, ...), and the actor
  is absent in between. Shorter gaps (one or two missed key frames) are interpolated, as the
  devkit interpolates annotations for sweeps.
* Tracks are sampled at the annotation times (the key frames' LiDAR time stamps); every sensor
  sees them interpolated at its own time stamp (:meth:`sim.log.Track.pose_at`), which keeps a
  trajectory short (NeuroNCAP's ``update_actors`` sends whole trajectories).
* Boxes: nuScenes' ``size`` is [width, length, height] and ``translation`` the box centre; the
  log stores [length, width, height] and the box *bottom* centre; yaw is the heading of the box's
  x axis.
* Classes: ``vehicle.car`` -> car, ``vehicle.truck``/``vehicle.trailer``/``vehicle.construction``
  -> truck, ``vehicle.bus.*`` -> bus, ``vehicle.bicycle`` -> cyclist, ``vehicle.motorcycle`` ->
  motorcycle, ``human.pedestrian.*`` -> pedestrian, anything else -> other (the category name is
  kept in ``meta.nuscenes.tracks``).
* Lane map: the core nuScenes tables carry no lane graph (it lives in the separate map expansion,
  which the importer does not read). The log gets one lane along the ego's driven path
  (``"source": "ego_path"``), enough for routing the ego.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from sim.errors import LogFormatError
from sim.importers.nuscenes.tables import Tables
from sim.log import Track

__all__ = ["CLASS_MAP", "MAX_GAP_S", "actor_class", "actor_tracks", "ego_path_lane", "ego_track"]

#: longest gap (s) between two annotations of an instance that a track interpolates across
MAX_GAP_S = 1.5

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
#: a track that moves less than this (m) over its annotations is static (parked)
STATIC_MOTION_M = 0.2


def actor_class(category: str) -> str:
    """loopdrive actor class of a nuScenes category name."""
    if category in CLASS_MAP:
        return CLASS_MAP[category]
    if category.startswith("vehicle.bus"):
        return "bus"
    if category.startswith("human.pedestrian"):
        return "pedestrian"
    return "other"


def _yaw(rotation_wxyz: list[float]) -> float:
    w, x, y, z = rotation_wxyz
    r = Rotation.from_quat([x, y, z, w]).as_matrix()
    return float(np.arctan2(r[1, 0], r[0, 0]))


def actor_tracks(tb: Tables, sample_t: dict[str, int], offset: NDArray[np.float64], max_gap_us: int
                 ) -> tuple[list[Track], list[dict[str, Any]]]:
    """Tracks (world frame = global - ``offset``; times from ``sample_t``: sample token -> log
    ``t_us``) of the scene's annotations, and their ``meta.nuscenes.tracks`` records."""
    per_inst: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ann in tb.t["sample_annotation"].values():
        if ann["sample_token"] in sample_t:
            per_inst[ann["instance_token"]].append(ann)
    tracks: list[Track] = []
    records: list[dict[str, Any]] = []
    for inst_tok, anns in sorted(per_inst.items()):
        inst = tb.get("instance", inst_tok, f"{anns[0]['token']}.instance_token")
        cat = tb.get("category", inst["category_token"], f"{inst_tok}.category_token")["name"]
        anns.sort(key=lambda a: sample_t[a["sample_token"]])
        t = np.array([sample_t[a["sample_token"]] for a in anns], dtype=np.int64)
        if np.any(np.diff(t) <= 0):
            raise LogFormatError("expected at most one annotation per sample for each instance", file=tb.file("sample_annotation"),
                                 field=f"{anns[int(np.argmax(np.diff(t) <= 0)) + 1]['token']}.sample_token")
        w, length, h = (float(v) for v in np.median(np.array([a["size"] for a in anns]), axis=0))
        pose = np.array([[a["translation"][0] - offset[0], a["translation"][1] - offset[1],
                          a["translation"][2] - offset[2] - a["size"][2] / 2.0, _yaw(a["rotation"])] for a in anns])
        cuts = np.flatnonzero(np.diff(t) > max_gap_us) + 1
        for k, (lo, hi) in enumerate(zip([0, *cuts], [*cuts, len(t)], strict=True)):
            tid = inst_tok if k == 0 else f"{inst_tok}-{k + 1}"
            p = pose[lo:hi]
            static = bool(hi - lo > 1 and np.ptp(p[:, :2], axis=0).max() < STATIC_MOTION_M)
            tracks.append(Track(tid, actor_class(cat), (length, w, h), t[lo:hi], p, static=static))
            records.append({"id": tid, "instance_token": inst_tok, "category": cat, "segment": k + 1,
                            "first_annotation": anns[lo]["token"], "annotations": int(hi - lo)})
    return tracks, records


def ego_track(t_us: NDArray[np.int64], world_from_ego: NDArray[np.float64], size: tuple[float, float, float]) -> Track:
    """The ego track (x, y, z, yaw of the ego frame) at the imported captures' times (unique, sorted)."""
    order = np.argsort(t_us, kind="stable")
    t, m = np.asarray(t_us, dtype=np.int64)[order], np.asarray(world_from_ego)[order]
    keep = np.concatenate([[True], np.diff(t) > 0])
    t, m = t[keep], m[keep]
    pose = np.column_stack([m[:, 0, 3], m[:, 1, 3], m[:, 2, 3], np.arctan2(m[:, 1, 0], m[:, 0, 0])])
    return Track("ego", "car", size, t, pose)


def ego_path_lane(ego: Track) -> dict[str, Any]:
    """A lane map of one lane along the ego's driven path (points at least 0.5 m apart)."""
    path = ego.pose[:, :2]
    # each point is compared with the last one kept, not with its predecessor: ego poses come
    # every ~10 ms (a few cm apart), so a neighbour test would keep only the first point
    kept = [path[0]]
    for p in path[1:]:
        if np.hypot(*(p - kept[-1])) > 0.5:
            kept.append(p)
    if len(kept) > 1 and np.hypot(*(path[-1] - kept[-1])) > 1e-6:
        kept.append(path[-1])  # the lane reaches the end of the drive
    pts = np.asarray(kept)
    if len(pts) < 2:
        pts = np.array([path[0], path[0] + 10.0 * np.array([np.cos(ego.pose[0, 3]), np.sin(ego.pose[0, 3])])])
    return {"lanes": [{"id": "ego_path", "centerline": np.round(pts, 6).tolist(), "width": 3.5, "speed_limit": 13.9,
                       "successors": [], "predecessors": [], "left": None, "right": None, "source": "ego_path"}],
            "crosswalks": []}
