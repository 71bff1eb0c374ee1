"""Render a synthetic town's drive with the mesh renderer and write it as a drive log."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import LogFormatError
from sim.log import LogWriter
from sim.sensors import SensorRig, default_rig
from sim.synth.rigs import SensorSchedule, lidar_motion
from sim.synth.scene import EGO_SIZE, SynthScene, make_scene

__all__ = ["check_out_dir", "synth_meta", "write_synth_log"]

log = logging.getLogger(__name__)


def check_out_dir(out: str | os.PathLike[str], overwrite: bool) -> Path:
    """Fail early (before any rendering) when ``out`` cannot be written: an existing non-empty folder
    without ``overwrite``, a file in the way, or a parent that cannot be created or written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LogFormatError("expected a folder path, found a file", file=out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise LogFormatError("expected an empty or new folder (pass --overwrite to replace it)", file=out)
    parent = out.resolve().parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise OSError(f"{probe} is not a folder")
        tempfile.TemporaryDirectory(prefix=".loopdrive-probe-", dir=probe).cleanup()
    except OSError as exc:
        raise LogFormatError(f"expected a writable location ({probe} is not writable: {exc.strerror or exc})", file=out) from None
    return out


def synth_meta(scene: SynthScene, rig: SensorRig, name: str, supersample: int = 1, schedule: SensorSchedule | None = None,
               rig_name: str | None = None) -> dict[str, Any]:
    """The ``meta.json`` content of a synth log (no timestamps: the log is reproducible)."""
    hz = 1.0 / scene.dt_s
    syn: dict[str, Any] = {"preset": scene.preset, "seed": scene.seed, "frames": scene.frames, "dt_s": scene.dt_s,
                           "supersample": supersample}
    if rig_name is not None:
        syn["rig"] = rig_name
    return {
        "name": name,
        "source": "synth",
        "synth": syn,
        "rates": {"camera_hz": schedule.camera_hz if schedule else hz, "lidar_hz": schedule.lidar_hz if schedule else hz},
        "rig": rig.to_meta(),
        "ego": {"size": list(EGO_SIZE)},
    }


def write_synth_log(
    scene_or_preset: SynthScene | str,
    seed: int = 0,
    frames: int | None = None,
    *,
    out: str | os.PathLike[str],
    rig: SensorRig | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    name: str | None = None,
    renderer: Any = None,
    supersample: int = 3,
    schedule: SensorSchedule | None = None,
    rig_name: str | None = None,
) -> Path:
    """Render every frame of a synthetic drive and write a drive log to ``out`` atomically.

    Args:
        scene_or_preset: a :class:`SynthScene`, or a preset name built with ``seed`` and ``frames``
            (both ignored when a scene is given).
        out: the log folder to create.
        rig: sensor rig (default: front camera 320x192, LiDAR 32x1024); cameras and LiDAR run at the
            scene's frame rate (10 Hz by default).
        overwrite: replace an existing non-empty ``out``.
        progress: called as ``progress(done, total)`` after each rendered frame.
        name: the log's name in ``meta.json`` (default: the folder name).
        renderer: an existing :class:`sim.render.mesh.MeshRenderer` of the same town (optional).
        supersample: camera anti-aliasing (odd; 3 = mean of 3x3 samples per pixel, depth at the
            pixel centre); recorded in ``meta.json`` so :meth:`MeshRenderer.from_log` matches it.
        schedule: when each sensor fires (:mod:`sim.synth.rigs`, e.g.
            :func:`~sim.synth.rigs.nuscenes_schedule`): every camera frame and LiDAR sweep is
            rendered from the world at its own time; a spinning LiDAR fires each column from the
            poses at its own time and the sweep gets per-point ``dt_us`` and ``ring``
            (``lidar/<i>.extra.npy``). None: every sensor at every scene frame.
        rig_name: recorded as ``synth.rig`` in ``meta.json`` (e.g. ``nuscenes``).

    Returns:
        The log folder. Same scene + rig -> byte-identical files.

    Raises:
        ScenarioError: bad preset, seed or frames. LogFormatError: ``out`` not writable, or exists
        and is not empty without ``overwrite``.
    """
    scene = scene_or_preset if isinstance(scene_or_preset, SynthScene) else make_scene(scene_or_preset, seed, frames)
    out_p = check_out_dir(out, overwrite)
    rig = rig or default_rig()
    if renderer is None:
        from sim.render.mesh import MeshRenderer

        renderer = MeshRenderer(scene, supersample=supersample)
    meta = synth_meta(scene, rig, name or out_p.name, getattr(renderer, "supersample", supersample), schedule, rig_name)
    if schedule is not None:
        with LogWriter(out_p, meta, overwrite=overwrite) as w:
            _write_scheduled(w, scene, rig, renderer, schedule, progress)
        log.info("wrote %s: %s", out_p, ", ".join(f"{len(t)} x {c}" for c, t in schedule.cameras.items()))
        return out_p
    n = scene.frames
    with LogWriter(out_p, meta, overwrite=overwrite) as w:
        for i, t in enumerate(scene.t_us):
            world = scene.world_at(int(t))
            frame = renderer.render(world, rig)
            for cam in rig.cameras:
                img = frame.cameras[cam.name]
                w.add_frame(cam.name, int(t), img.c2w, img.K, img.rgb, img.depth)
            if frame.lidar is not None:
                pts = frame.lidar.world_points()
                w.add_sweep(int(t), frame.lidar.sensor_to_world,
                            np.column_stack([pts, frame.lidar.intensity]).astype(np.float32))
            if progress is not None:
                progress(i + 1, n)
        w.set_tracks(scene.ego, scene.tracks)
        w.set_map(scene.map)
    log.info("wrote %s: %d frames x %d camera(s)", out_p, n, len(rig.cameras))
    return out_p


def _write_scheduled(w: LogWriter, scene: SynthScene, rig: SensorRig, renderer: Any, schedule: SensorSchedule,
                     progress: Callable[[int, int], None] | None) -> None:
    """Render every capture of ``schedule`` from the world at its own time into ``w``."""
    cams = {c.name: c for c in rig.cameras}
    events = schedule.events()
    for k, (t, _, name) in enumerate(events):
        world = scene.world_at(t)
        if name:
            img = renderer.render_camera(world, cams[name])
            w.add_frame(name, t, img.c2w, img.K, img.rgb, img.depth)
        elif rig.lidar is not None:
            spec = rig.lidar
            motion = None if spec.firing == "instant" else lidar_motion(scene.ego, scene.tracks, spec, t)
            scan = renderer.render_lidar(world, spec, motion) if motion is not None else renderer.render_lidar(world, spec)
            pts = scan.world_points()
            dt = getattr(scan, "time_us", None)
            ring = getattr(scan, "ring", None)
            if dt is None:
                dt = np.full(len(pts), t, np.int64)
                ring = spec.rings()[scan.ray_index // spec.azimuth_steps]
            extra = np.column_stack([np.asarray(dt, np.int64) - t, ring]).astype(np.float32)
            w.add_sweep(t, scan.sensor_to_world, np.column_stack([pts, scan.intensity]).astype(np.float32), extra)
        if progress is not None:
            progress(k + 1, len(events))
    w.set_tracks(scene.ego, scene.tracks)
    w.set_map(scene.map)
