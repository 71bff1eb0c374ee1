"""``loopdrive bench synth``: how fast the ground-truth renderer is.

Measures, on one synthetic town, camera frames per second (pyrender, RGB + depth; without
anti-aliasing, the renderer's default, and with the 3x3 supersampling that synth logs use) and LiDAR sweeps
per second (trimesh ray casting) with Embree and with trimesh's pure-numpy intersector, rendering
the logged world at successive frames (actors move, so the per-render actor work is included).
Static-scene construction is timed separately; warm-up renders are excluded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sim.log import write_json_atomic
from sim.machine import machine_info

__all__ = ["run_synth_bench"]


def _time_camera(scene: Any, worlds: list[Any], cam: Any, supersample: int, frames: int, say: Callable[[str], None]) -> dict[str, Any]:
    """Camera rates of a fresh renderer: the first frame (GL context, texture upload) timed
    apart, then ``frames`` frames of successive worlds."""
    from sim.render.mesh import MeshRenderer

    say(f"camera (supersample {supersample}): warming up (GL context, texture upload)")
    r = MeshRenderer(scene, lidar_engine="auto", supersample=supersample)
    t0 = time.perf_counter()
    r.render_camera(worlds[0], cam)
    t_first = time.perf_counter() - t0
    say(f"camera (supersample {supersample}): {frames} frames at {cam.width}x{cam.height}")
    t0 = time.perf_counter()
    for w in worlds[1:frames + 1]:
        r.render_camera(w, cam)
    dt = time.perf_counter() - t0
    r.close()
    return {
        "width": cam.width,
        "height": cam.height,
        "supersample": supersample,
        "frames": frames,
        "frames_per_s": round(frames / dt, 2),
        "ms_per_frame": round(1000 * dt / frames, 2),
        "first_frame_s": round(t_first, 3),
    }


def _time_lidar(scene: Any, worlds: list[Any], engine: str, spec: Any, sweeps: int, full_rays: int, say: Callable[[str], None],
                extrapolated: bool = False) -> dict[str, Any]:
    """LiDAR rates of ``engine`` on ``sweeps`` sweeps of ``spec`` (after a timed first sweep),
    scaled to a full sweep of ``full_rays`` rays (``extrapolated``: ``spec`` casts a fraction of
    its columns)."""
    from sim.render.mesh import MeshRenderer

    say(f"LiDAR ({engine}): {sweeps} sweeps of {spec.beams}x{spec.azimuth_steps}")
    rl = MeshRenderer(scene, lidar_engine=engine)
    t0 = time.perf_counter()
    rl.render_lidar(worlds[0], spec)
    t_setup = time.perf_counter() - t0
    npts = []
    t0 = time.perf_counter()
    for w in worlds[1:sweeps + 1]:
        npts.append(len(rl.render_lidar(w, spec).points))
    dt = time.perf_counter() - t0
    rays = spec.beams * spec.azimuth_steps
    return {
        "sweeps": sweeps,
        "timed_rays_per_sweep": rays,
        "rays_per_s": round(sweeps * rays / dt),
        "sweeps_per_s": round(sweeps * rays / dt / full_rays, 4),
        "ms_per_sweep": round(1000 * dt / sweeps * full_rays / rays, 1),
        "first_sweep_s": round(t_setup, 3),
        "mean_points": int(np.mean(npts) * full_rays / rays),
        "extrapolated": extrapolated,
    }


def run_synth_bench(
    *,
    town: str = "small",
    seed: int = 0,
    width: int = 320,
    height: int = 192,
    beams: int = 32,
    azimuth: int = 1024,
    camera_frames: int = 40,
    lidar_sweeps: int = 20,
    slow_sweeps: int = 2,
    slow_fraction: int = 32,
    out: str | os.PathLike[str] | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark and (when ``out`` is given) write the result JSON atomically.

    Args:
        town, seed: the synthetic town.
        width, height: camera resolution (pixels).
        beams, azimuth: LiDAR resolution.
        camera_frames, lidar_sweeps: timed renders per measurement (after one warm-up).
        slow_sweeps: timed sweeps with the pure-numpy intersector (it is slow).
        slow_fraction: the pure-numpy intersector casts every ``slow_fraction``-th column only; its
            rates are scaled to a full sweep (``extrapolated: true`` in the result).
        out: result path, or None to only return the result.

    Returns:
        The result dictionary (also written to ``out``).
    """
    import trimesh

    from sim.sensors import CameraSpec, LidarSpec
    from sim.synth import make_scene

    say = echo or (lambda _m: None)
    n_frames = max(camera_frames, lidar_sweeps) + 1
    t0 = time.perf_counter()
    scene = make_scene(town, seed, frames=max(n_frames, 2))
    t_scene = time.perf_counter() - t0
    t0 = time.perf_counter()
    town_meshes = scene.static_town()
    t_static = time.perf_counter() - t0
    cam = CameraSpec.named("front", width, height)
    worlds = [scene.world_at(int(t)) for t in scene.t_us]
    result: dict[str, Any] = {
        "benchmark": "synth",
        "machine": machine_info(),
        "town": town,
        "seed": seed,
        "static_faces": int(town_meshes.n_faces),
        "scene_build_s": round(t_scene, 4),
        "static_town_build_s": round(t_static, 4),
        "embree_available": bool(trimesh.ray.has_embree),
    }
    for ss, key in ((1, "camera"), (3, "camera_supersample3")):
        result[key] = _time_camera(scene, worlds, cam, ss, camera_frames, say)
    lid: dict[str, Any] = {"beams": beams, "azimuth_steps": azimuth}
    if trimesh.ray.has_embree:
        lid["embree"] = _time_lidar(scene, worlds, "embree", LidarSpec(beams=beams, azimuth_steps=azimuth), lidar_sweeps, beams * azimuth, say)
    # the pure-numpy intersector is two to three orders of magnitude slower: time it on every
    # ``slow_fraction``-th azimuth column and scale to a full sweep (rays are independent)
    slow = LidarSpec(beams=beams, azimuth_steps=max(1, azimuth // slow_fraction)) if slow_fraction != 1 else LidarSpec(beams=beams, azimuth_steps=azimuth)
    lid["triangle"] = _time_lidar(scene, worlds, "triangle", slow, slow_sweeps, beams * azimuth, say, extrapolated=slow_fraction != 1)
    if "embree" in lid and "triangle" in lid:
        lid["embree_speedup"] = round(lid["embree"]["sweeps_per_s"] / lid["triangle"]["sweeps_per_s"], 1)
    result["lidar"] = lid
    if out is not None:
        write_json_atomic(Path(out), result)
    return result
