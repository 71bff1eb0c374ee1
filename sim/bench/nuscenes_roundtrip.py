"""``loopdrive bench nuscenes-roundtrip``: synth (nuScenes rig) -> ``export-nuscenes`` -> ``import
nuscenes`` -> compared with the native log, the exact truth it was made from.

:func:`roundtrip_errors` compares an imported log with the native log it was exported from and
reports the largest error of each quantity (units in the key names):

* ``camera_*``: every imported camera frame against the native frame of the same camera and time
  (position m, rotation deg, K px), and each rig camera through :class:`sim.sensors.SensorRig`
  (intrinsics px, mount position m and rotation deg, roll included);
* ``ego_*``: the ego track at the imported captures' times;
* ``box_corner_m``: the 8 corners of every imported actor box (at its annotation times) against
  the native track (matched through its instance token) at the same time;
* ``lidar_*``: every imported point against the native world point (after the exporter's motion
  compensation and the importer's placement with the sweep's own pose; m), intensity, ring, the
  importer's estimated per-point firing time against the true one (us), the rig LiDAR's elevation
  table (deg) and azimuth steps;
* ``devkit_vs_loopdrive_px``: box corners projected by the official devkit (``get_sample_data``
  boxes in every key camera, ``view_points``) against loopdrive's projection of the imported box
  with the imported camera pose and K; ``loopdrive_vs_truth_px``: that projection against the
  native truth box through the native camera;
* ``image_max_abs``: pixel differences (0 for a PNG export).

Global frame and time: the native log's world + the exporter's map offset (read back from the
export's first LiDAR ``ego_pose``) = the imported world + its ``origin.global_offset_m``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sim.errors import LoopdriveError
from sim.geometry import project_points
from sim.log import DriveLog, Track, read_log, write_json_atomic
from sim.machine import machine_info

__all__ = ["roundtrip_errors", "run_nuscenes_roundtrip"]


def _devkit() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        from nuscenes.nuscenes import NuScenes
    except ImportError as exc:
        raise LoopdriveError(f"expected the nuscenes-devkit package (a dev extra: pip install -e '.[dev]'): {exc}") from None
    return NuScenes


def _corners(track: Track, t_us: int, shift: NDArray[np.float64]) -> NDArray[np.float64] | None:
    """(8, 3) box corners of ``track`` at ``t_us`` (devkit ``Box.corners()`` order) + ``shift``."""
    p = track.pose_at(int(t_us))
    if p is None:
        return None
    length, width, height = track.size
    x = length / 2 * np.array([1, 1, 1, 1, -1, -1, -1, -1])
    y = width / 2 * np.array([1, -1, -1, 1, 1, -1, -1, 1])
    z = height / 2 * np.array([1, 1, -1, -1, 1, 1, -1, -1])
    c, s = np.cos(p[3]), np.sin(p[3])
    return np.stack([p[0] + c * x - s * y, p[1] + s * x + c * y, p[2] + height / 2 + z], 1) + shift


def _rot_deg(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    from scipy.spatial.transform import Rotation

    return float(np.degrees(Rotation.from_matrix(a[:3, :3].T @ b[:3, :3]).magnitude()))


def _cameras(native: DriveLog, imported: DriveLog, nat_off: NDArray[np.float64], imp_off: NDArray[np.float64], dt0: int) -> dict[str, Any]:
    from sim.sensors import SensorRig

    nat = {(f.camera, f.t_us): f for f in native.frames}
    pos = rot = k = img = 0.0
    for f in imported.frames:
        g = nat[(f.camera, f.t_us + dt0)]
        pos = max(pos, float(np.abs((f.c2w[:3, 3] + imp_off) - (g.c2w[:3, 3] + nat_off)).max()))
        rot = max(rot, _rot_deg(f.c2w, g.c2w))
        k = max(k, float(np.abs(f.K - g.K).max()))
        img = max(img, float(np.abs(imported.image(f.index).astype(np.int16) - native.image(g.index).astype(np.int16)).max()))
    rn, ri = SensorRig.from_meta(native.meta["rig"]), SensorRig.from_meta(imported.meta["rig"])
    rk = rm = rr = 0.0
    for c in ri.cameras:
        n = rn.camera(c.name)
        rk = max(rk, float(np.abs(c.K - n.K).max()))
        rm = max(rm, float(np.abs(c.vehicle_from_camera[:3, 3] - n.vehicle_from_camera[:3, 3]).max()))
        rr = max(rr, _rot_deg(c.vehicle_from_camera, n.vehicle_from_camera), abs(c.roll - n.roll) * 180 / np.pi)
    return {"camera_frames": len(imported.frames), "camera_position_m": pos, "camera_rotation_deg": rot, "camera_K_px": k,
            "rig_camera_K_px": rk, "rig_camera_mount_m": rm, "rig_camera_rotation_deg": rr, "image_max_abs": img}


def _lidar(native: DriveLog, imported: DriveLog, nat_off: NDArray[np.float64], imp_off: NDArray[np.float64], dt0: int) -> dict[str, Any]:
    nat = {s.t_us: s.index for s in native.sweeps}
    pt = inten = 0.0
    ring_bad = n_pts = 0
    dts: list[NDArray[np.float64]] = []
    for sw in imported.sweeps:
        j = nat[sw.t_us + dt0]
        a, b = imported.lidar(sw.index).astype(np.float64), native.lidar(j).astype(np.float64)
        if a.shape != b.shape:
            raise AssertionError(f"sweep {sw.index}: {len(a)} points imported, {len(b)} native")
        n_pts += len(a)
        pt = max(pt, float(np.abs((a[:, :3] + imp_off) - (b[:, :3] + nat_off)).max(initial=0.0)))
        inten = max(inten, float(np.abs(a[:, 3] - b[:, 3]).max(initial=0.0)))
        ea, eb = imported.lidar_extra(sw.index), native.lidar_extra(j)
        if ea is not None and eb is not None:
            ring_bad += int(np.sum(ea[:, 1] != eb[:, 1]))
            dts.append(np.abs(ea[:, 0].astype(np.float64) - eb[:, 0]))
    dt = np.concatenate(dts) if dts else np.zeros(1)
    li_i, li_n = imported.meta["rig"]["lidar"], native.meta["rig"]["lidar"]
    lo, hi = li_n["vertical_fov_deg"]
    truth_el = np.linspace(lo, hi, li_n["beams"])  # ring 0 = lowest
    el = np.asarray(li_i.get("elevation_deg", []), dtype=np.float64)
    return {"lidar_sweeps": len(imported.sweeps), "lidar_points": n_pts, "lidar_point_m": pt, "lidar_intensity": inten,
            "lidar_ring_mismatches": ring_bad, "lidar_firing_time_us": float(dt.max()), "lidar_firing_time_us_p99": float(np.percentile(dt, 99)),
            "lidar_firing_time_over_1ms_share": float(np.mean(dt > 1000.0)),
            "lidar_elevation_deg": float(np.abs(el - truth_el).max()) if el.shape == truth_el.shape else None,
            "lidar_vertical_fov_deg": float(np.abs(np.asarray(li_i["vertical_fov_deg"]) - [lo, hi]).max()),
            "lidar_beams": [li_i["beams"], li_n["beams"]], "lidar_max_range_m": [li_i["max_range_m"], li_n["max_range_m"]], "lidar_azimuth_steps": [li_i["azimuth_steps"], li_n["azimuth_steps"]],
            "lidar_firing": [li_i.get("firing", "instant"), li_n.get("firing", "instant")],
            "lidar_cut_azimuth_deg": abs(float(li_i.get("cut_azimuth_deg", 0.0)) - float(li_n.get("cut_azimuth_deg", 0.0)))}


def _boxes_and_projections(native: DriveLog, imported: DriveLog, nusc: Any, nat_off: NDArray[np.float64], imp_off: NDArray[np.float64],
                           dt0: int, epoch_us: int) -> dict[str, Any]:
    from nuscenes.utils.geometry_utils import BoxVisibility, view_points

    from sim.importers.nuscenes_export import instance_token

    scene = imported.meta["nuscenes"]["scene"]
    by_inst = {instance_token(scene, t.id): t for t in native.tracks}
    inst_of = {r["id"]: r["instance_token"] for r in imported.meta["nuscenes"]["tracks"]}
    corner = 0.0
    n_boxes = 0
    for tr in imported.tracks:
        truth = by_inst[inst_of[tr.id]]
        for t in tr.t_us:
            a, b = _corners(tr, int(t), imp_off), _corners(truth, int(t) + dt0, nat_off)
            assert a is not None and b is not None
            corner = max(corner, float(np.abs(a - b).max()))
            n_boxes += 1
    t0 = int(imported.meta["origin"]["t0_us"])
    frames = {(f.camera, f.t_us + t0): f for f in imported.frames}
    nat_frames = {(f.camera, f.t_us + epoch_us): f for f in native.frames}
    segs: dict[str, list[Track]] = {}
    for tr in imported.tracks:
        segs.setdefault(inst_of[tr.id], []).append(tr)
    dev = truth_px = 0.0
    n_proj = 0
    for s in nusc.sample:
        for ch in imported.cameras:
            sd = nusc.get("sample_data", s["data"][ch])
            fr, nf = frames[(ch, sd["timestamp"])], nat_frames[(ch, sd["timestamp"])]
            _, boxes, K = nusc.get_sample_data(sd["token"], box_vis_level=BoxVisibility.ANY)
            for b in boxes:
                if np.any(b.corners()[2] < 0.5):
                    continue
                tok = nusc.get("sample_annotation", b.token)["instance_token"]
                t_rel = s["timestamp"] - t0
                tr = next(x for x in segs[tok] if x.t_us[0] <= t_rel <= x.t_us[-1])
                ours, _ = project_points(_corners(tr, t_rel, np.zeros(3)), fr.c2w, fr.K)
                truth, _ = project_points(_corners(by_inst[tok], s["timestamp"] - epoch_us, np.zeros(3)), nf.c2w, nf.K)
                dev = max(dev, float(np.abs(view_points(b.corners(), K, normalize=True)[:2].T - ours).max()))
                truth_px = max(truth_px, float(np.abs(ours - truth).max()))
                n_proj += 1
    return {"boxes": n_boxes, "box_corner_m": corner, "projected_boxes": n_proj, "devkit_vs_loopdrive_px": dev, "loopdrive_vs_truth_px": truth_px}


def roundtrip_errors(native: DriveLog, root: Path, imported: DriveLog, *, version: str = "v1.0-mini", epoch_us: int | None = None) -> dict[str, Any]:
    """The largest errors of ``imported`` (imported from the export ``root`` of ``native``) against
    ``native`` (see the module docstring); ``epoch_us``: the export's time of native ``t_us = 0``
    (default: read from the export)."""
    nusc = _devkit()(version=version, dataroot=str(root), verbose=False)
    first = nusc.get("sample_data", nusc.sample[0]["data"]["LIDAR_TOP"])
    mount = np.asarray(native.meta["rig"]["lidar"]["vehicle_from_lidar"], dtype=np.float64)
    if epoch_us is None:  # the exporter's first sample is the first sweep
        epoch_us = int(nusc.sample[0]["timestamp"]) - native.sweeps[0].t_us
    j = next(s.index for s in native.sweeps if s.t_us + epoch_us == first["timestamp"])
    veh = native.sweeps[j].sensor_to_world @ np.linalg.inv(mount)
    nat_off = np.asarray(nusc.get("ego_pose", first["ego_pose_token"])["translation"]) - veh[:3, 3]
    imp_off = np.asarray(imported.meta["origin"]["global_offset_m"], dtype=np.float64)
    dt0 = int(imported.meta["origin"]["t0_us"]) - epoch_us
    res: dict[str, Any] = {}
    res.update(_cameras(native, imported, nat_off, imp_off, dt0))
    ego_pos = ego_yaw = 0.0
    for t, p in zip(imported.ego.t_us, imported.ego.pose, strict=True):
        q = native.ego.pose_at(int(t) + dt0)
        assert q is not None
        ego_pos = max(ego_pos, float(np.abs(p[:3] + imp_off - q[:3] - nat_off).max()))
        ego_yaw = max(ego_yaw, abs(float((p[3] - q[3] + np.pi) % (2 * np.pi) - np.pi)))
    res.update(ego_samples=len(imported.ego.t_us), ego_position_m=ego_pos, ego_yaw_rad=ego_yaw)
    res.update(_boxes_and_projections(native, imported, nusc, nat_off, imp_off, dt0, epoch_us))
    res.update(_lidar(native, imported, nat_off, imp_off, dt0))
    return res


#: keys of :func:`roundtrip_errors` that count what was compared, and those that pair [imported, native] values
_COUNTS = ("camera_frames", "ego_samples", "boxes", "projected_boxes", "lidar_sweeps", "lidar_points")
_PAIRS = ("lidar_beams", "lidar_azimuth_steps", "lidar_max_range_m", "lidar_firing")


def run_nuscenes_roundtrip(
    *,
    work: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    town: str = "tiny",
    seed: int = 0,
    frames: int = 44,
    image_scale: float = 0.1,
    azimuth: int = 1024,
    sweeps: bool = True,
    image_format: str = "png",
    command: str | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Synthesise ``town`` with the nuScenes rig (``frames`` steps of 50 ms, images at
    ``image_scale`` x 1600x900, ``azimuth`` LiDAR columns), export it to ``work/root``, import it
    to ``work/imported`` (every camera; with ``sweeps``, every capture) and compare
    (:func:`roundtrip_errors`); write the result JSON to ``out`` when given."""
    from sim.importers import import_log
    from sim.importers.nuscenes_export import DEFAULT_EPOCH_US, export_nuscenes
    from sim.synth import make_scene, write_synth_log
    from sim.synth.rigs import nuscenes_rig, nuscenes_schedule

    say = echo or (lambda m: None)
    _devkit()
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    say(f"synth: {town} town, {frames} steps of 50 ms, nuScenes rig at scale {image_scale}")
    scene = make_scene(town, seed, frames=frames, dt_s=0.05)
    rig = nuscenes_rig(image_scale, azimuth_steps=azimuth)
    log_dir = write_synth_log(scene, out=work / "native", rig=rig, schedule=nuscenes_schedule(int(scene.t_us[-1]), rig), rig_name="nuscenes",
                              supersample=1, overwrite=True)
    timings["synth_s"] = time.perf_counter() - t
    t = time.perf_counter()
    say("export-nuscenes")
    root = export_nuscenes(log_dir, work / "root", image_format=image_format, overwrite=True)
    timings["export_s"] = time.perf_counter() - t
    t = time.perf_counter()
    say("import nuscenes")
    imp = import_log("nuscenes", root, work / "imported", cameras="all", sweeps=sweeps, overwrite=True)
    timings["import_s"] = time.perf_counter() - t
    t = time.perf_counter()
    say("compare with the native log")
    errors = roundtrip_errors(read_log(log_dir), root, read_log(imp), epoch_us=DEFAULT_EPOCH_US)
    timings["compare_s"] = time.perf_counter() - t
    import nuscenes

    res = {
        "benchmark": "nuscenes_roundtrip",
        "command": command,
        "settings": {"town": town, "seed": seed, "frames": frames, "step_s": 0.05, "image_scale": image_scale, "azimuth_steps": azimuth,
                     "sweeps": sweeps, "image_format": image_format},
        "devkit": getattr(nuscenes, "__version__", None) or _dist_version("nuscenes-devkit"),
        "machine": machine_info(),
        "counts": {k: errors[k] for k in _COUNTS},
        "rig_imported_vs_native": {k: errors[k] for k in _PAIRS},
        "max_errors": {k: v for k, v in errors.items() if k not in _COUNTS and k not in _PAIRS},
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    if out is not None:
        write_json_atomic(out, res)
    return res


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None
