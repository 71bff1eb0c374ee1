"""``import_nuscenes``: one scene of a nuScenes data root -> a drive log (see the package docstring)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from sim.errors import LogFormatError
from sim.fsutil import check_input_file
from sim.geometry import opencv_to_opengl_c2w
from sim.importers.nuscenes.lidar import (
    EgoPath,
    Firing,
    estimate_firing,
    firing_frame,
    lidar_rig,
    read_pcd_bin,
    refine_cut,
)
from sim.importers.nuscenes.tables import Tables, load_tables, pose_matrix
from sim.importers.nuscenes.tracks import MAX_GAP_S, actor_tracks, ego_path_lane, ego_track
from sim.log import LogWriter, Track
from sim.log_validate import MAX_IMAGE_BYTES, MAX_IMAGE_SIDE, MAX_LIDAR_BYTES, FieldChecker

__all__ = ["EGO_SIZE", "import_nuscenes", "parse_cameras"]

log = logging.getLogger(__name__)

#: nuScenes' ego vehicle (a Renault Zoe): length, width, height (m)
EGO_SIZE = (4.084, 1.730, 1.562)


def parse_cameras(cameras: str | Sequence[str]) -> list[str] | None:
    """``"all"`` -> None (every camera); ``"CAM_FRONT,CAM_BACK"`` or a sequence -> the names (in
    order, once each)."""
    names = [c.strip() for c in cameras.split(",")] if isinstance(cameras, str) else [str(c).strip() for c in cameras]
    names = [c for c in names if c]
    if names == ["all"]:
        return None
    if not names or "all" in names:
        raise LogFormatError(f"expected 'all' or comma-separated camera channels such as CAM_FRONT,CAM_BACK, got {cameras!r}", field="cameras")
    return list(dict.fromkeys(names))


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


def _data_file(tb: Tables, sd: dict[str, Any], max_bytes: int) -> Path:
    """The file ``sd`` names once it is a regular file inside the data root of at most ``max_bytes``."""
    FieldChecker(tb.file("sample_data")).file_in(tb.root, sd["filename"], f"{sd['token']}.filename")
    return check_input_file(tb.root / sd["filename"], error=LogFormatError, max_bytes=max_bytes, what="a data file of the data set")


def _camera_channels(tb: Tables, by_ch: dict[str, list[dict[str, Any]]], cameras: str | Sequence[str]) -> list[str]:
    have = [ch for ch, sds in by_ch.items() if tb.channel(sds[0]["calibrated_sensor_token"], "")[1] == "camera"]
    order = ["CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"]
    have.sort(key=lambda c: (order.index(c) if c in order else len(order), c))
    want = parse_cameras(cameras)
    if want is None:
        if not have:
            raise LogFormatError("expected camera captures in the scene", file=tb.file("sample_data"))
        return have
    missing = [c for c in want if c not in have]
    if missing:
        raise LogFormatError(f"expected camera channels of the scene {have}, got {missing}", file=tb.file("sensor"), field="cameras")
    return want


def _one_calibration(tb: Tables, ch: str, sds: list[dict[str, Any]]) -> dict[str, Any]:
    """The channel's calibrated_sensor (one calibration per channel within a scene)."""
    cs = tb.calib(sds[0])
    for sd in sds[1:]:
        other = tb.calib(sd)
        if other is not cs and (not np.allclose(other["rotation"], cs["rotation"]) or not np.allclose(other["translation"], cs["translation"])
                                or other["camera_intrinsic"] != cs["camera_intrinsic"]):
            raise LogFormatError(f"expected one calibration of {ch} within the scene", file=tb.file("sample_data"),
                                 field=f"{sd['token']}.calibrated_sensor_token")
    return cs


def _median_period_us(sds: list[dict[str, Any]]) -> int | None:
    if len(sds) < 2:
        return None
    return round(float(np.median(np.diff([sd["timestamp"] for sd in sds]))))


def _firing(tb: Tables, by_ch: dict[str, list[dict[str, Any]]], lidar: str, mount: NDArray[np.float64]) -> Firing:
    """The LiDAR firing model fitted to every camera of the scene's key frames."""
    lid_key = {sd["sample_token"]: sd["timestamp"] for sd in by_ch[lidar] if sd["is_key_frame"]}
    offsets: dict[str, tuple[NDArray[np.float64], float]] = {}
    for ch, sds in by_ch.items():
        if ch == lidar or tb.channel(sds[0]["calibrated_sensor_token"], "")[1] != "camera":
            continue
        dts = [sd["timestamp"] - lid_key[sd["sample_token"]] for sd in sds if sd["is_key_frame"] and sd["sample_token"] in lid_key]
        if dts:
            cs = tb.calib(sds[0])
            offsets[ch] = (pose_matrix(cs["rotation"], cs["translation"])[:3, 2], float(np.median(dts)))
    return estimate_firing(_median_period_us(by_ch[lidar]), offsets, mount)


def _rate_hz(sds: list[dict[str, Any]]) -> float:
    p = _median_period_us(sds)
    return round(1e6 / p, 3) if p else 2.0


@dataclass
class _Selection:
    """What one import reads: the scene, its samples, every capture per channel and the chosen ones."""

    tb: Tables
    scene: dict[str, Any]
    samples: list[dict[str, Any]]
    by_ch: dict[str, list[dict[str, Any]]]
    cams: list[str]
    lidar: str
    chosen: dict[str, list[dict[str, Any]]]
    key_lidar: dict[str, dict[str, Any]]


def _select(tb: Tables, scene: str | None, cameras: str | Sequence[str], sweeps: bool, lidar: str) -> _Selection:
    """The scene's captures to import, every file they name checked (before the output is made)."""
    sc = tb.scene(scene)
    samples = tb.samples(sc)
    by_ch = tb.scene_data(samples)
    cams = _camera_channels(tb, by_ch, cameras)
    if lidar not in by_ch:
        raise LogFormatError(f"expected {lidar} captures in scene {sc['name']!r} (channels: {sorted(by_ch)})", file=tb.file("sample_data"))
    chosen = {ch: [sd for sd in by_ch[ch] if sweeps or sd["is_key_frame"]] for ch in [*cams, lidar]}
    for ch, sds in chosen.items():
        if not sds:
            raise LogFormatError(f"expected {ch} key frames in scene {sc['name']!r}", file=tb.file("sample_data"))
        for sd in sds:
            sd["_path"] = _data_file(tb, sd, MAX_LIDAR_BYTES if ch == lidar else MAX_IMAGE_BYTES)
    key_lidar = {sd["sample_token"]: sd for sd in by_ch[lidar] if sd["is_key_frame"]}
    if samples[0]["token"] not in key_lidar:
        raise LogFormatError(f"expected a {lidar} key frame of the first sample {samples[0]['token']!r}", file=tb.file("sample_data"))
    return _Selection(tb, sc, samples, by_ch, cams, lidar, chosen, key_lidar)


def _rig_cameras(sel: _Selection) -> tuple[list[dict[str, Any]], dict[str, NDArray[np.float64]]]:
    """``meta.rig.cameras`` (named by channel, size of the first image) and each camera's K."""
    tb = sel.tb
    rig_cams, rig_K = [], {}
    for ch in sel.cams:
        cs = _one_calibration(tb, ch, sel.chosen[ch])
        first = sel.chosen[ch][0]
        h, w = _read_rgb(first["_path"]).shape[:2]
        if (first["width"], first["height"]) not in ((w, h), (0, 0)):
            raise LogFormatError(f"expected the image size {first['width']}x{first['height']} of sample_data {first['token']}, got {w}x{h}",
                                 file=first["_path"])
        rig_K[ch] = K = tb.intrinsics(cs)
        c2e = opencv_to_opengl_c2w(pose_matrix(cs["rotation"], cs["translation"]))
        rig_cams.append({"name": ch, "width": int(w), "height": int(h), "fx": float(K[0, 0]), "fy": float(K[1, 1]), "cx": float(K[0, 2]),
                         "cy": float(K[1, 2]), "vehicle_from_camera": np.round(c2e, 9).tolist()})
    return rig_cams, rig_K


def _write(out: Path, overwrite: bool, meta: dict[str, Any], sel: _Selection, rig_K: dict[str, NDArray[np.float64]], lid: _LidarCtx,
           ego: Track, tracks: list[Track]) -> int:
    """Stream the chosen captures into the log (atomic); returns the number of camera frames."""
    tb, cams, t0, offset = sel.tb, sel.cams, lid.t0, lid.offset
    size = {c["name"]: (c["height"], c["width"]) for c in meta["rig"]["cameras"]}
    frames = sorted((sd["timestamp"], cams.index(ch), ch, sd) for ch in cams for sd in sel.chosen[ch])
    with LogWriter(out, meta, overwrite=overwrite) as wr:
        for ts, _, ch, sd in frames:
            rgb = _read_rgb(sd["_path"])
            if rgb.shape[:2] != size[ch]:
                raise LogFormatError(f"expected an image of {size[ch][1]}x{size[ch][0]} like the first {ch} frame, got {rgb.shape[1]}x{rgb.shape[0]}",
                                     file=sd["_path"])
            cs = tb.calib(sd)
            c2g = tb.ego(sd) @ pose_matrix(cs["rotation"], cs["translation"])
            c2g[:3, 3] -= offset
            wr.add_frame(ch, ts - t0, opencv_to_opengl_c2w(c2g), rig_K[ch], rgb)
        for sd in sel.chosen[sel.lidar]:
            pts5 = read_pcd_bin(sd["_path"])
            p_s = pts5[:, :3].astype(np.float64)
            dt, _ = firing_frame(p_s, sd["timestamp"], lid.firing, lid.ego_path, lid.mount)
            s2w = tb.ego(sd) @ lid.mount
            s2w[:3, 3] -= offset
            xyz = p_s @ s2w[:3, :3].T + s2w[:3, 3]
            wr.add_sweep(sd["timestamp"] - t0, s2w, np.column_stack([xyz, np.clip(pts5[:, 3] / 255.0, 0.0, 1.0)]),
                         np.column_stack([np.round(dt), pts5[:, 4]]))
        wr.set_tracks(ego, tracks)
        wr.set_map(ego_path_lane(ego))
    return len(frames)


@dataclass
class _LidarCtx:
    """The frames and the LiDAR model shared by the rig estimate and the writer."""

    t0: int
    offset: NDArray[np.float64]
    ego_path: EgoPath
    mount: NDArray[np.float64]
    firing: Firing


def _lidar_ctx(sel: _Selection) -> _LidarCtx:
    """World frame = global - the first key frame's ego position; t_us = time stamp - the earliest
    imported one; the scene's ego path over every capture; the LiDAR mount and firing model."""
    tb = sel.tb
    offset = tb.ego(sel.key_lidar[sel.samples[0]["token"]])[:3, 3].copy()
    t0 = int(min(min(sd["timestamp"] for sds in sel.chosen.values() for sd in sds), sel.samples[0]["timestamp"]))
    every = [sd for sds in sel.by_ch.values() for sd in sds]
    ego_path = EgoPath(np.array([sd["timestamp"] for sd in every], dtype=np.int64), np.array([tb.ego(sd) for sd in every]))
    cs = _one_calibration(tb, sel.lidar, sel.chosen[sel.lidar])
    mount = pose_matrix(cs["rotation"], cs["translation"])
    return _LidarCtx(t0, offset, ego_path, mount, _firing(tb, sel.by_ch, sel.lidar, mount))


def _cut_sweeps(key_raw: list[tuple[NDArray[np.float32], int]], lid: _LidarCtx, n_sweeps: int = 5, n_points: int = 2000
                ) -> list[tuple[NDArray[np.float64], NDArray[np.int64], int]]:
    """Up to ``n_sweeps`` key-frame sweeps (evenly spread) lying wholly inside the ego path, each
    thinned to about ``n_points`` returns (whole rings): the sample :func:`refine_cut` scans."""
    ok = [(p5, t) for p5, t in key_raw if len(p5) and t - lid.firing.period_us >= lid.ego_path.t[0] and t <= lid.ego_path.t[-1]]
    pick = [ok[i] for i in sorted({round(x) for x in np.linspace(0, len(ok) - 1, min(n_sweeps, len(ok)))})] if ok else []
    thin = []
    for p5, t in pick:  # whole rings (every m-th), so neighbours on a ring stay neighbours
        m = max(1, len(p5) // n_points)
        thin.append((p5[p5[:, 4].astype(np.int64) % m == 0] if m < int(p5[:, 4].max()) + 1 else p5, t))
    return [(p5[:, :3].astype(np.float64), p5[:, 4].astype(np.int64), t) for p5, t in thin]


def import_nuscenes(
    source: Path,
    out: Path,
    *,
    scene: str | None = None,
    version: str = "v1.0-mini",
    cameras: str | Sequence[str] = "all",
    sweeps: bool = False,
    lidar: str = "LIDAR_TOP",
    max_gap_s: float = MAX_GAP_S,
    overwrite: bool = False,
) -> Path:
    """Import one nuScenes scene into a drive log at ``out`` (see :mod:`sim.importers.nuscenes`).

    Args:
        source: the data root (holding ``<version>/``, ``samples/``, ``sweeps/``).
        scene: the scene's name (default: the first by name).
        version: the table folder.
        cameras: ``"all"`` or the camera channels to import (comma-separated or a sequence).
        sweeps: also import the captures between key frames (cameras 12 Hz, LiDAR 20 Hz).
        lidar: the LiDAR channel.
        max_gap_s: an instance unannotated for longer than this (s) starts a new track.
        overwrite: replace an existing non-empty ``out``.

    Raises:
        LogFormatError: a missing table or file, a bad field, a dangling token, a scene or camera
            that does not exist (naming the table file, the record and the field), before the
            output folder is made.
    """
    source, out = Path(source), Path(out)
    if not (np.isfinite(max_gap_s) and max_gap_s > 0):
        raise LogFormatError(f"expected a positive number of seconds, got {max_gap_s!r}", field="max_gap_s")
    if not version or "/" in version or "\\" in version or version in (".", ".."):
        raise LogFormatError(f"expected a version folder name like v1.0-mini, got {version!r}", field="version")
    tb = load_tables(source, version)
    sel = _select(tb, scene, cameras, sweeps, lidar)
    sc = sel.scene
    log_rec = tb.get("log", sc["log_token"], f"{sc['token']}.log_token")
    lid = _lidar_ctx(sel)
    key_raw = [(read_pcd_bin(sd["_path"]), int(sd["timestamp"])) for sd in sel.chosen[lidar] if sd["is_key_frame"]]
    key_pts = [(firing_frame(p5[:, :3].astype(np.float64), t, lid.firing, lid.ego_path, lid.mount)[1], p5[:, 4]) for p5, t in key_raw]
    lid.firing = refine_cut(lid.firing, _cut_sweeps(key_raw, lid), lid.ego_path, lid.mount)
    if lid.firing.camera_cut_deg is not None:
        key_pts = [(firing_frame(p5[:, :3].astype(np.float64), t, lid.firing, lid.ego_path, lid.mount)[1], p5[:, 4]) for p5, t in key_raw]
    del key_raw
    rig_cams, rig_K = _rig_cameras(sel)
    sample_t = {s["token"]: int(s["timestamp"]) - lid.t0 for s in sel.samples}
    tracks, records = actor_tracks(tb, sample_t, lid.offset, round(max_gap_s * 1e6))
    imported = [sd for sds in sel.chosen.values() for sd in sds]
    ego_m = np.array([tb.ego(sd) for sd in imported])
    ego_m[:, :3, 3] -= lid.offset
    ego = ego_track(np.array([sd["timestamp"] - lid.t0 for sd in imported], dtype=np.int64), ego_m, EGO_SIZE)
    offset = [float(v) for v in lid.offset]
    meta = {
        "name": sc["name"],
        "source": "nuscenes",
        "origin": {"global_offset_m": offset, "t0_us": lid.t0},
        "nuscenes": {"version": version, "scene": sc["name"], "scene_token": sc["token"], "location": log_rec["location"],
                     "date_captured": log_rec["date_captured"], "origin": offset, "cameras": sel.cams, "sweeps": bool(sweeps),
                     "max_gap_s": float(max_gap_s), "lidar_firing": {"model": lid.firing.model, "fit_deg": lid.firing.fit_deg,
                                                                "camera_cut_deg": lid.firing.camera_cut_deg},
                     "tracks": records},
        "rates": {"camera_hz": _rate_hz(sel.chosen[sel.cams[0]]), "lidar_hz": _rate_hz(sel.chosen[lidar])},
        "rig": {"cameras": rig_cams, "lidar": lidar_rig(key_pts, lid.mount, lid.firing)},
        "ego": {"size": list(EGO_SIZE)},
    }
    del key_pts
    n_frames = _write(out, overwrite, meta, sel, rig_K, lid, ego, tracks)
    log.info("imported nuScenes scene %s (%d camera frames of %s, %d LiDAR sweeps, %d tracks, firing %s) to %s", sc["name"], n_frames,
             ",".join(sel.cams), len(sel.chosen[lidar]), len(tracks), lid.firing.model, out)
    return out
