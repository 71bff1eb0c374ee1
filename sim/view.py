"""Rerun recordings of drive logs and episodes (``loopdrive view``).

:func:`write_recording` writes an ``.rrd`` file headless (no viewer needed); open it later with
``rerun FILE.rrd`` (the viewer ships with the ``rerun-sdk`` package). Entities:

* ``world/lanes`` (static): lane centrelines as 3D line strips on the ground;
* ``world/ego/path``: the ego's driven path;
* ``world/actors``: oriented 3D boxes of every valid actor, labelled ``id (class)``, per time step;
* ``world/ego/box``: the ego's box;
* drive logs only: ``world/lidar`` (world-frame points coloured by intensity) and
  ``world/camera/<name>`` (pinhole + pose, with the image);
* episodes only: ``metrics/<name>`` time series per step: ``speed`` (m/s), ``accel`` (m/s^2),
  ``jerk`` (m/s^3), ``nearest_actor_m`` (centre distance to the nearest valid actor, m).

The timeline ``time`` is the log / episode time in seconds.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sim.errors import LogFormatError, ScenarioError
from sim.fsutil import atomic_path

__all__ = ["write_recording"]

log = logging.getLogger(__name__)

_CLASS_COLOURS = {
    "car": (60, 120, 220),
    "truck": (150, 90, 200),
    "bus": (220, 150, 40),
    "cyclist": (40, 180, 90),
    "pedestrian": (230, 70, 70),
    "motorcycle": (40, 160, 170),
    "other": (150, 150, 150),
}


def _yaw_quat(yaw: NDArray[np.float64]) -> NDArray[np.float32]:
    """(N, 4) xyzw quaternions of rotations about z."""
    h = np.asarray(yaw, dtype=np.float64) / 2.0
    return np.stack([np.zeros_like(h), np.zeros_like(h), np.sin(h), np.cos(h)], axis=-1).astype(np.float32)


def _log_lanes(rr: Any, lane_map: dict[str, Any]) -> None:
    strips = [np.concatenate([np.asarray(ln["centerline"], float), np.full((len(ln["centerline"]), 1), 0.02)], axis=1) for ln in lane_map["lanes"]]
    rr.log("world/lanes", rr.LineStrips3D(strips, colors=[(200, 200, 200)], radii=0.08), static=True)


def _log_boxes(rr: Any, path: str, ids: list[str], cls: list[str], xyz: NDArray[np.float64], yaw: NDArray[np.float64], size: NDArray[np.float64]) -> None:
    centers = xyz.copy()
    centers[:, 2] = centers[:, 2] + size[:, 2] / 2.0
    rr.log(
        path,
        rr.Boxes3D(
            centers=centers.astype(np.float32),
            half_sizes=(size / 2.0).astype(np.float32),
            quaternions=_yaw_quat(yaw),
            colors=[_CLASS_COLOURS.get(c, _CLASS_COLOURS["other"]) for c in cls],
            labels=[f"{i} ({c})" for i, c in zip(ids, cls, strict=True)],
        ),
    )


def _record_log(rr: Any, root: Path, max_points: int) -> None:
    from sim.geometry import OPENCV_FROM_OPENGL
    from sim.log import read_log

    dl = read_log(root)
    _log_lanes(rr, dl.map)
    ego = dl.ego
    rr.log("world/ego/path", rr.LineStrips3D([np.c_[ego.pose[:, :2], np.full(len(ego.pose), 0.05)]], colors=[(230, 40, 40)], radii=0.12), static=True)
    times = sorted({int(t) for t in ego.t_us})
    sweeps = {s.t_us: j for j, s in enumerate(dl.sweeps)}
    frames_at: dict[int, list[int]] = {}
    for i, fr in enumerate(dl.frames):
        frames_at.setdefault(fr.t_us, []).append(i)
    for t in times:
        rr.set_time("time", duration=t / 1e6)
        ids, cls, xyz, yaw, size = [], [], [], [], []
        for tr in (ego, *dl.tracks):
            p = tr.pose_at(t)
            if p is None:
                continue
            ids.append(tr.id)
            cls.append(tr.cls)
            xyz.append(p[:3])
            yaw.append(p[3])
            size.append(tr.size)
        if ids:
            _log_boxes(rr, "world/actors", ids, cls, np.array(xyz), np.array(yaw), np.array(size, dtype=float))
        if t in sweeps:
            pts = dl.lidar(sweeps[t])
            if len(pts) > max_points:
                pts = pts[:: int(np.ceil(len(pts) / max_points))]
            inten = np.clip(pts[:, 3], 0, 1)
            colours = np.stack([255 * inten, 80 + 100 * inten, 255 * (1 - inten)], axis=1).astype(np.uint8)
            rr.log("world/lidar", rr.Points3D(pts[:, :3], colors=colours, radii=0.05))
        for i in frames_at.get(t, []):
            fr = dl.frames[i]
            c2w_cv = fr.c2w @ OPENCV_FROM_OPENGL
            base = f"world/camera/{fr.camera}"
            rr.log(base, rr.Transform3D(translation=c2w_cv[:3, 3], mat3x3=c2w_cv[:3, :3]))
            rr.log(base, rr.Pinhole(image_from_camera=fr.K, width=fr.width, height=fr.height))
            rr.log(base, rr.Image(dl.image(i)))


def _record_episode(rr: Any, root: Path) -> None:
    import json

    import polars as pl

    from sim.batch import scene_lane_map

    details = json.loads((root / "metrics.json").read_text())
    df = pl.read_parquet(root / "trajectory.parquet")
    try:
        lane_map = scene_lane_map(details).to_dict()
        _log_lanes(rr, lane_map)
    except Exception as exc:  # a missing log must not stop the recording of the trajectory
        log.warning("no lane map for %s: %s", root, exc)
    ego = df.filter(pl.col("actor_id") == "ego").sort("step")
    t = ego["t_s"].to_numpy()
    exy = np.c_[ego["x"].to_numpy(), ego["y"].to_numpy()]
    rr.log("world/ego/path", rr.LineStrips3D([np.c_[exy, np.full(len(exy), 0.05)]], colors=[(230, 40, 40)], radii=0.12), static=True)
    v = ego["speed"].to_numpy()
    dt = np.diff(t, prepend=t[0] - (t[1] - t[0] if len(t) > 1 else 0.1))
    dt[dt <= 0] = np.nan
    acc = np.nan_to_num(np.diff(v, prepend=v[0]) / dt)
    jerk = np.nan_to_num(np.diff(acc, prepend=acc[0]) / dt)
    heights = {"pedestrian": 1.75, "cyclist": 1.7, "truck": 3.2, "bus": 3.2}
    for k, step in enumerate(ego["step"].to_list()):
        rr.set_time("time", duration=float(t[k]))
        rows = df.filter((pl.col("step") == step) & pl.col("valid"))
        ids = rows["actor_id"].to_list()
        cls = rows["cls"].to_list()
        xyz = np.c_[rows["x"].to_numpy(), rows["y"].to_numpy(), np.zeros(len(ids))]
        size = np.c_[rows["length"].to_numpy(), rows["width"].to_numpy(), [heights.get(c, 1.6) for c in cls]]
        _log_boxes(rr, "world/actors", ids, cls, xyz, rows["yaw"].to_numpy(), size)
        others = np.array([i != "ego" for i in ids])
        near = float(np.min(np.linalg.norm(xyz[others, :2] - exy[k], axis=1))) if others.any() else float("nan")
        for name, val in (("speed", v[k]), ("accel", acc[k]), ("jerk", jerk[k]), ("nearest_actor_m", near)):
            rr.log(f"metrics/{name}", rr.Scalars(float(val)))


def write_recording(source: str | os.PathLike[str], out: str | os.PathLike[str], *, max_points: int = 20000) -> Path:
    """Write a rerun recording of a drive log folder or an episode folder (from ``loopdrive run``).

    Args:
        source: a drive log (has ``meta.json``) or an episode folder (has ``trajectory.parquet``).
        out: the ``.rrd`` file to write (atomically).
        max_points: LiDAR points per sweep kept in the recording (subsampled evenly).

    Raises:
        LogFormatError: ``source`` is neither kind of folder (or the log is invalid).
    """
    import rerun as rr

    src, out = Path(source), Path(out)
    is_log = (src / "meta.json").is_file()
    is_episode = (src / "trajectory.parquet").is_file() and (src / "metrics.json").is_file()
    if not (is_log or is_episode):
        raise LogFormatError("expected a drive-log folder (meta.json) or an episode folder (trajectory.parquet + metrics.json)", file=src)
    if out.suffix != ".rrd":
        raise ScenarioError(f"expected an output file ending in .rrd, got {out.name!r}", field="out")
    out.parent.mkdir(parents=True, exist_ok=True)
    rec = rr.RecordingStream("loopdrive", recording_id=f"loopdrive-{src.name}")
    with atomic_path(out, suffix=".rrd") as tmp, rec:
        rr.save(str(tmp))
        rr.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
        if is_log:
            _record_log(rr, src, max_points)
        else:
            _record_episode(rr, src)
        rr.disconnect()
    log.info("wrote rerun recording %s", out)
    return out
