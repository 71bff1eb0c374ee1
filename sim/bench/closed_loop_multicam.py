"""``loopdrive bench closed-loop-multicam``: the closed loop on a multi-camera log (an imported
nuScenes log and its bundle), every camera and the LiDAR rendered from the neural scene at every step.

Written to its results JSON (``closed_loop_multicam.json``):

* ``rig``: the log's cameras (name, size, intrinsics) and LiDAR (beams x azimuth steps).
* ``speed``: env steps/s of :class:`sim.env.ClosedLoopEnv` on the log's drive with the scenario
  ``scene: {renderer: neural, neural_mode: surface, rig: log}`` and ``camera`` + ``lidar``
  observations (the env renders every camera of the rig and the LiDAR at every step), constant
  action; the wall time and the process CPU time per step; the machine's load before and after.
  Target: >= 5 steps/s on a quiet 2-core machine.
* ``render``: the same worlds rendered by :class:`~sim.render.neural.NeuralRenderer` in each
  configuration of :data:`CONFIGS` (``serial``: every sensor one after another in the calling
  thread; ``previous_default``: the LiDAR in a worker thread beside the cameras, one at a time;
  ``parallel``: the default, the sensors spread over worker threads, cameras in batches),
  interleaved per world so that the load hits them alike, ms per step (min / median) and CPU ms;
  ``per_sensor_ms``: each camera and the LiDAR rendered alone (serial, median over the worlds);
  ``identical``: whether every configuration gave the same pixels and points as ``serial``.
* ``quality``: held-out PSNR (dB) of the surface mode's camera renders (the loop's: the log's mean
  appearance) against truth images (``truth_log``: the native synthetic log the bundle's log was
  imported from, frame for frame; else the log's own images), per camera and the mean.
* ``planner_gap``: ``lidar_stack`` driven on the log's rig (every camera and the LiDAR rendered at
  every step) with ``neural`` sensors and with ``mesh`` sensors (the native town of ``truth_log``,
  moved into the imported log's frame), on the logged drive and with a stopped car inserted ahead:
  score per renderer and the gap (mesh - neural).
* ``scenario_file``: a scenario YAML of the loop that ``loopdrive run`` runs as it is.

Lane map: the nuScenes importer writes one lane along the ego's path (the lane graph lives in
nuScenes' map expansion, which it does not read); with ``truth_log`` the loop runs on a copy of
the log (files hard-linked) carrying the truth's lane map moved into the log's frame
(:func:`log_with_truth_map`, ``loop_log`` in the JSON).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sim.bench.closed_loop import _gap_row, _load, _psnr
from sim.log import read_log, write_json_atomic
from sim.machine import machine_info

__all__ = ["CONFIGS", "heldout_psnr", "multicam_scenario", "run_multicam_bench", "scenario_yaml"]

log = logging.getLogger(__name__)

#: renderer configurations compared on the same worlds: name -> NeuralRenderer options
#: (``previous_default``: the render before the sensors became worker tasks -- the LiDAR in one
#: worker thread, the cameras one at a time in the calling thread -- see :func:`_previous_render`)
CONFIGS: dict[str, dict[str, Any]] = {
    "serial": {"parallel": False, "camera_batch": 1},
    "previous_default": {"parallel": False, "camera_batch": 1},
    "parallel": {},
}


def _previous_render(r: Any, pool: Any, world: Any, rig: Any) -> Any:
    """The neural backend's ``render`` as it was before the sensors became worker tasks: the LiDAR
    in one worker thread while the cameras render one at a time in the calling thread."""
    import torch

    from sim.render.base import SensorFrame
    from sim.render.neural import _in_thread

    plan = r.plan(world)
    fut = pool.submit(_in_thread, torch.get_num_threads(), r.render_lidar, world, rig.lidar, plan) if rig.lidar is not None else None
    cams = {c.name: r.render_camera(world, c, plan) for c in rig.cameras}
    return SensorFrame(int(world.t_us), cams, fut.result() if fut is not None else None)


def multicam_scenario(log_dir: Path, bundle: Path, *, horizon_s: float, name: str = "multicam_logged_drive", actors: tuple[Any, ...] = (),
                      neural_mode: str = "surface") -> Any:
    """The log's drive as a :class:`~sim.spec.ScenarioSpec`: neural sensors of ``bundle`` in
    ``neural_mode`` on the log's own rig (``scene.rig: log``), ``actors`` edits, ``horizon_s`` s."""
    from sim.spec import ScenarioSpec, SceneSpec

    scene = SceneSpec(log=Path(log_dir), bundle=Path(bundle), renderer="neural", neural_mode=neural_mode, rig="log")
    return ScenarioSpec(name=name, scene=scene, actors=tuple(actors), horizon_s=round(horizon_s, 3), dt_s=0.1, max_actors=64)


def scenario_yaml(log_dir: Path, bundle: Path, *, horizon_s: float = 6.0, planner: str = "lidar_stack") -> str:
    """A scenario file (YAML text) of the loop: the log's drive with ``renderer: neural``,
    ``neural_mode: surface`` and ``rig: log`` (every camera and the LiDAR rendered at every step),
    driven by ``planner`` (absolute paths, so ``loopdrive run FILE`` works from anywhere)."""
    return (
        "version: 1\n"
        "name: multicam_logged_drive\n"
        "description: >\n"
        "  The log's drive closed loop on neural sensors: every camera of the log's rig and its LiDAR\n"
        f"  rendered from the scene bundle at every step; {planner} drives from the LiDAR.\n"
        f"scene: {{log: {Path(log_dir).resolve()}, bundle: {Path(bundle).resolve()}, renderer: neural, neural_mode: surface, rig: log}}\n"
        f"planner: {{name: {planner}}}\n"
        "observation: [ego, lidar]\n"
        f"horizon_s: {horizon_s}\n"
        "seeds: [0]\n"
    )


def _worlds(spec: Any, n: int) -> list[Any]:
    """The first ``n`` worlds of ``spec``'s episode driven with a constant zero action (copies)."""
    from sim import engine
    from sim.batch import episode_scene
    from sim.render.base import ArrayWorld

    c = engine.compile_scenario(spec, episode_scene(spec))
    rng = np.random.default_rng(0)
    state = engine.reset(c, rng)
    out = []
    for _ in range(n):
        out.append(ArrayWorld.of(state.world(0)))
        state = engine.step(state, np.zeros(2), rng)
        if bool(state.done[0]):
            break
    return out


def _env_speed(spec: Any, steps: int) -> dict[str, Any]:
    """Env steps/s (wall and process CPU per step) with camera + lidar observations."""
    from sim.env import ClosedLoopEnv

    env = ClosedLoopEnv(scenario=spec, observation=["camera", "lidar"], renderer="neural")
    load0 = _load()
    try:
        env.reset(seed=0)
        r = env.core.renderer()
        _, _, term, trunc, _ = env.step(np.zeros(2, np.float32))  # warm-up: caches, worker threads
        if term or trunc:
            env.reset(seed=0)
        t0, c0, n, resets = time.perf_counter(), time.process_time(), 0, 0
        for _ in range(steps - 1):
            _, _, term, trunc, _ = env.step(np.zeros(2, np.float32))
            n += 1
            if term or trunc:  # a reset renders too: part of the loop's cost
                env.reset(seed=0)
                resets += 1
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        cfg = {"mode": getattr(r, "mode", None), "workers": getattr(r, "workers", None), "camera_batch": getattr(r, "camera_batch", None),
               "parallel": getattr(r, "parallel", None)}
    finally:
        env.close()
    return {"steps": n, "resets": resets, "seconds": round(dt, 3), "steps_per_s": round(n / dt, 3), "ms_per_step": round(1000 * dt / n, 1),
            "cpu_ms_per_step": round(1000 * cpu / n, 1), "renderer": cfg, "load_1m_before": load0, "load_1m_after": _load()}


def _same(a: Any, b: Any) -> bool:
    cams = a.cameras.keys() == b.cameras.keys() and all(
        np.array_equal(a.cameras[k].rgb, b.cameras[k].rgb) and np.array_equal(a.cameras[k].depth, b.cameras[k].depth) for k in a.cameras)
    lid = (a.lidar is None) == (b.lidar is None) and (a.lidar is None or (np.array_equal(a.lidar.points, b.lidar.points)
                                                                          and np.array_equal(a.lidar.ray_index, b.lidar.ray_index)))
    return bool(cams and lid)


def _render_configs(b: Any, worlds: list[Any], rig: Any, mode: str) -> dict[str, Any]:
    """ms per step of each of :data:`CONFIGS` on ``worlds`` (interleaved), per-sensor serial ms,
    and whether every configuration rendered what ``serial`` did."""
    from concurrent.futures import ThreadPoolExecutor

    from sim.render.neural import NeuralRenderer

    rs = {k: NeuralRenderer(bundle=b, library=False, mode=mode, **v) for k, v in CONFIGS.items()}
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loopdrive-previous-lidar")

    def render(k: str, w: Any) -> Any:
        return _previous_render(rs[k], pool, w, rig) if k == "previous_default" else rs[k].render(w, rig)

    wall: dict[str, list[float]] = {k: [] for k in rs}
    cpu: dict[str, list[float]] = {k: [] for k in rs}
    sensors: dict[str, list[float]] = {c.name: [] for c in rig.cameras}
    if rig.lidar is not None:
        sensors["lidar"] = []
    identical = True
    try:
        for k in rs:
            render(k, worlds[0])  # warm-up
        for w in worlds[1:]:
            ref = None
            for k in rs:
                t0, c0 = time.perf_counter(), time.process_time()
                f = render(k, w)
                wall[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
                if ref is None:
                    ref = f
                else:
                    identical = identical and _same(ref, f)
            s = rs["serial"]
            plan = s.plan(w)
            for cam in rig.cameras:
                t0 = time.perf_counter()
                s.render_camera(w, cam, plan)
                sensors[cam.name].append(time.perf_counter() - t0)
            if rig.lidar is not None:
                t0 = time.perf_counter()
                s.render_lidar(w, rig.lidar, plan)
                sensors["lidar"].append(time.perf_counter() - t0)
    finally:
        pool.shutdown(wait=True)
        for r in rs.values():
            r.close()

    def ms(v: list[float], f: Callable[[list[float]], float]) -> float | None:
        return round(1000 * f(v), 1) if v else None

    out = {k: {"options": CONFIGS[k], "ms_min": ms(wall[k], min), "ms_median": ms(wall[k], lambda v: float(np.median(v))),
               "cpu_ms_median": ms(cpu[k], lambda v: float(np.median(v))),
               "steps_per_s_median": round(1.0 / float(np.median(wall[k])), 2) if wall[k] else None} for k in rs}
    per = {k: ms(v, lambda v: float(np.median(v))) for k, v in sensors.items()}
    cams = [v for k, v in per.items() if k != "lidar" and v is not None]
    return {"configs": out, "worlds": len(worlds) - 1, "per_sensor_ms": per, "cameras_ms_sum": round(sum(cams), 1) if cams else None,
            "identical": identical, "load_1m_after": _load()}


def heldout_psnr(renderer: Any, dl: Any, truth: Any = None, *, frames: int = 4, eval_every: int = 10) -> dict[str, Any]:
    """Held-out PSNR (dB) of ``renderer``'s camera renders (the pose of each held-out frame of each
    camera of log ``dl``, the logged actors at its time) against ``truth`` images (a log with the
    same frames in the same order: the native log the imported ``dl`` came from; default ``dl``
    itself); at most ``frames`` per camera (frame ``k`` of a camera is held out when ``k %
    eval_every == 0``). Per camera, the mean over cameras and the frames scored."""
    from sim.recon.split import split_frames
    from sim.render.base import ArrayWorld
    from sim.sensors import SensorRig
    from sim.synth import world_from_tracks

    truth = truth or dl
    if len(truth.frames) != len(dl.frames) or any(a.camera != b.camera for a, b in zip(truth.frames, dl.frames, strict=True)):
        raise ValueError(f"the truth log {truth.root} does not have the frames of {dl.root} in the same order")
    rig = SensorRig.from_meta(dl.meta["rig"])
    per: dict[str, Any] = {}
    for cam in rig.cameras:
        _, held = split_frames(dl, [cam.name], eval_every)
        vals = []
        for i in held[:frames]:
            f = dl.frames[i]
            world = ArrayWorld.of(world_from_tracks(dl.ego, dl.tracks, int(f.t_us)))
            img = renderer.render_camera(world, cam, c2w=f.c2w).rgb
            vals.append(_psnr(img, truth.image(i)))
        per[cam.name] = {"psnr": round(float(np.mean(vals)), 3) if vals else None, "frames": [int(i) for i in held[:frames]]}
    means = [v["psnr"] for v in per.values() if v["psnr"] is not None]
    return {"per_camera": per, "mean_over_cameras": round(float(np.mean(means)), 3) if means else None,
            "truth": str(truth.root), "eval_every": eval_every}


class ShiftedRenderer:
    """A render backend seen from another world frame: worlds are moved by ``shift_m`` (the
    truth frame minus this frame, m) before ``inner`` renders them and the sensor poses moved
    back (points stay in the sensor frame). Lets the native town's mesh truth render the worlds
    of a log imported with a map offset."""

    def __init__(self, inner: Any, shift_m: Any) -> None:
        self.inner = inner
        self.shift = np.asarray(shift_m, dtype=np.float64)

    def render(self, world: Any, rig: Any) -> Any:
        from sim.render.base import ArrayWorld, CameraImage, SensorFrame

        w = ArrayWorld.of(world)
        w = dataclasses.replace(w, x=w.x + self.shift[0], y=w.y + self.shift[1], z=w.z + self.shift[2])
        f = self.inner.render(w, rig)

        def back(m: Any) -> Any:
            m = np.array(m, dtype=np.float64)
            m[:3, 3] -= self.shift
            return m

        cams = {k: CameraImage(c.rgb, c.depth, back(c.c2w), c.K) for k, c in f.cameras.items()}
        lidar = dataclasses.replace(f.lidar, sensor_to_world=back(f.lidar.sensor_to_world)) if f.lidar is not None else None
        return SensorFrame(f.t_us, cams, lidar)

    def close(self) -> None:
        self.inner.close()


def _shifted(obj: Any, d: Any) -> Any:
    """A lane-map JSON value with every point (``centerline``, ``polygon``, ``center``) moved by
    ``d`` (2,) m."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in ("centerline", "polygon") and isinstance(v, list):
                out[k] = [[round(float(p[0]) + d[0], 6), round(float(p[1]) + d[1], 6), *p[2:]] for p in v]
            elif k == "center" and isinstance(v, list) and len(v) >= 2:
                out[k] = [round(float(v[0]) + d[0], 6), round(float(v[1]) + d[1], 6), *v[2:]]
            else:
                out[k] = _shifted(v, d)
        return out
    if isinstance(obj, list):
        return [_shifted(v, d) for v in obj]
    return obj


def log_with_truth_map(log_dir: Path, truth_log: Path, out: Path) -> Path:
    """A copy of drive log ``log_dir`` (files hard-linked where the file system allows) whose lane map is
    the truth log's moved into its frame (:func:`frame_shift`): the nuScenes importer writes one
    lane along the ego's path (the lane graph lives in the map expansion, which it does not read),
    too little for lidar_stack's routing and road margins. Rebuilt when it exists."""
    import json
    import shutil

    from sim.fsutil import atomic_write_text

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:  # another file system
            shutil.copy2(a, b)

    src, dst = Path(log_dir).resolve(), Path(out)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, copy_function=link, ignore=lambda d, names: ["map.json"] if Path(d) == src else [])
    truth = read_log(truth_log)
    d = -frame_shift(truth, read_log(src))
    doc = json.loads((Path(truth_log) / "map.json").read_text())
    atomic_write_text(dst / "map.json", json.dumps(_shifted(doc, d[:2])))
    return dst


def frame_shift(truth: Any, dl: Any) -> Any:
    """(3,) m: the truth log's world minus ``dl``'s (median over frames of the camera positions'
    difference; the same frames in the same order)."""
    d = [a.c2w[:3, 3] - b.c2w[:3, 3] for a, b in zip(truth.frames, dl.frames, strict=False)]
    return np.median(np.asarray(d), axis=0)


def lidar_vs_mesh(neural: Any, mesh: Any, worlds: list[Any], spec: Any) -> dict[str, Any]:
    """Per-ray agreement of ``neural`` and ``mesh`` LiDAR sweeps (``spec``) on ``worlds``: the
    fraction of rays with a return in both / either, and the median and 90th percentile of
    |range difference| (m) on rays returned by both."""
    both, either, diffs = 0, 0, []
    n = spec.beams * spec.azimuth_steps
    for w in worlds:
        rng = []
        for r in (neural, mesh):
            s = r.render(w, _lidar_only(spec))
            a = np.full(n, np.nan)
            a[s.lidar.ray_index] = np.linalg.norm(s.lidar.points.astype(np.float64), axis=1)
            rng.append(a)
        ok_a, ok_b = np.isfinite(rng[0]), np.isfinite(rng[1])
        both += int((ok_a & ok_b).sum())
        either += int((ok_a | ok_b).sum())
        diffs.append(np.abs(rng[0] - rng[1])[ok_a & ok_b])
    d = np.concatenate(diffs) if diffs else np.zeros(0)
    return {"worlds": len(worlds), "rays_returned_by_both_of_either": round(both / max(either, 1), 4),
            "median_abs_range_diff_m": round(float(np.median(d)), 4) if len(d) else None,
            "p90_abs_range_diff_m": round(float(np.percentile(d, 90)), 4) if len(d) else None}


def _lidar_only(spec: Any) -> Any:
    from sim.sensors import SensorRig

    return SensorRig((), spec)


def _gap_specs(dl: Any, log_dir: Path, bundle: Path, horizon_s: float, car: Any) -> list[Any]:
    """The logged drive, and the same with ``car`` (a library actor) standing 30 m ahead of the
    ego's start on its route lane (centred on the lane, heading along it)."""
    from sim import engine
    from sim.batch import episode_scene
    from sim.spec import BehaviorSpec, InsertOp, SpawnSpec

    specs = [multicam_scenario(log_dir, bundle, horizon_s=horizon_s, name="logged_drive")]
    if car is not None:
        c = engine.compile_scenario(specs[0], episode_scene(specs[0]))
        line = c.lane_map.route_polyline(list(c.ego_route))
        s0, _ = line.project(np.array([[float(c.world0.x[0]), float(c.world0.y[0])]]))
        p, heading = line.interpolate(np.array([float(np.ravel(s0)[0]) + 30.0]))
        x, y, yaw = float(p[0, 0]), float(p[0, 1]), float(np.ravel(heading)[0])
        op = InsertOp(id="stopped_car", cls=car.cls, size=tuple(car.size), spawn=SpawnSpec(pose=(x, y, yaw), speed=0.0),
                      behavior=BehaviorSpec(type="static"), asset=car.key)
        specs.append(multicam_scenario(log_dir, bundle, horizon_s=horizon_s, name="stopped_car_ahead", actors=(op,)))
    return specs


def multicam_planner_gap(b: Any, bundle: Path, log_dir: Path, truth_log: Path, *, horizon_s: float, seeds: tuple[int, ...] = (0,),
                         progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``lidar_stack`` on neural vs mesh sensors of the log's full rig (see the module docstring)."""
    from sim import engine
    from sim.actor_library import ActorLibrary
    from sim.batch import episode_scene, scenario_rig
    from sim.render.mesh import MeshRenderer
    from sim.render.neural import NeuralRenderer

    dl, truth = read_log(log_dir), read_log(truth_log)
    shift = frame_shift(truth, dl)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="loopdrive-lib-") as tmp:
        lib = ActorLibrary(Path(tmp) / "lib")
        cars = [a for a in lib.add_bundle(b) if a.cls == "car"]
        mesh = ShiftedRenderer(MeshRenderer.from_log(truth), shift)
        neural = NeuralRenderer(bundle=b, library=lib, mode="surface")
        try:
            spec0 = multicam_scenario(log_dir, bundle, horizon_s=horizon_s)
            lid = scenario_rig(spec0).lidar
            agree = lidar_vs_mesh(neural, mesh, _worlds(spec0, 60)[::10], lid) if lid is not None else None
            if progress is not None and agree is not None:
                progress(f"LiDAR neural vs mesh: {agree}")
            for spec in _gap_specs(dl, log_dir, bundle, horizon_s, cars[0] if cars else None):
                c = engine.compile_scenario(spec, episode_scene(spec))
                rig = scenario_rig(spec, c.scene)
                for seed in seeds:
                    row = _gap_row(spec, "lidar_stack", seed, c, (("mesh", mesh), ("neural", neural)), rig)
                    row["ms_per_step_neural"] = round(1000 * row["wall_s_neural"] / max(row["steps_neural"], 1), 1)
                    rows.append(row)
                    if progress is not None:
                        progress(f"planner gap {spec.name} seed {seed}: mesh {row['score_mesh']:.3f}, neural {row['score_neural']:.3f} "
                                 f"({row['steps_neural']} steps, {row['ms_per_step_neural']:.0f} ms/step neural)")
        finally:
            mesh.close()
            neural.close()
    gap = [r["gap"] for r in rows]
    return {"planner": "lidar_stack", "rig": "log (every camera + LiDAR rendered at every step)", "horizon_s": horizon_s,
            "seeds": list(seeds), "mesh_truth": str(truth_log), "shift_m": [round(float(v), 3) for v in shift],
            "lidar_neural_vs_mesh_logged_drive": agree, "logged_actors": "log replay (they do not react to the ego)", "scenarios": rows,
            "mean_score_mesh": float(np.mean([r["score_mesh"] for r in rows])) if rows else None,
            "mean_score_neural": float(np.mean([r["score_neural"] for r in rows])) if rows else None,
            "mean_gap": float(np.mean(gap)) if gap else None}


def run_multicam_bench(
    bundle: str | os.PathLike[str],
    log_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    truth_log: str | os.PathLike[str] | None = None,
    steps: int = 30,
    render_worlds: int = 8,
    threads: int = 1,
    heldout_frames: int = 4,
    gap_horizon_s: float | None = 6.0,
    progress: Callable[[str], None] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Run the benchmark (see the module docstring) and write the JSON to ``out`` (when given).
    ``gap_horizon_s`` None skips the planner gap (it needs ``truth_log``); ``command``: the command
    line that ran it (recorded)."""
    import torch

    from sim.recon.bundle import load_bundle
    from sim.render.neural import NeuralRenderer
    from sim.sensors import SensorRig

    torch.set_num_threads(threads)
    bundle, log_dir = Path(bundle), Path(log_dir)

    def note(m: str) -> None:
        log.info(m)
        if progress is not None:
            progress(m)

    t_start = time.perf_counter()
    work = Path(out).parent if out is not None else Path(tempfile.mkdtemp(prefix="loopdrive-multicam-"))
    imported = log_dir
    if truth_log is not None:  # the loop needs a lane map (see log_with_truth_map)
        log_dir = log_with_truth_map(log_dir, Path(truth_log), work / "log-with-truth-map")
    dl = read_log(log_dir)
    rig = SensorRig.from_meta(dl.meta["rig"])
    b = load_bundle(bundle)
    machine = machine_info(torch_threads=torch.get_num_threads(), git_paths=("sim/render", "sim/recon", "sim/bench"))
    res: dict[str, Any] = {"benchmark": "closed_loop_multicam", "command": command, "bundle": str(bundle), "log": str(imported),
                           "loop_log": str(log_dir), "truth_log": None if truth_log is None else str(truth_log), "machine": machine,
                           "rig": {"cameras": [{"name": c.name, "size": [c.width, c.height], "fx_fy_cx_cy": [round(v, 3) for v in (c.fx, c.fy, c.cx, c.cy)]}
                                               for c in rig.cameras],
                                   "lidar": f"{rig.lidar.beams}x{rig.lidar.azimuth_steps}" if rig.lidar is not None else None},
                           "lane_map": "the truth log's, moved into the log's frame (log_with_truth_map)" if truth_log is not None else "the log's",
                           "target_steps_per_s": 5.0}
    proxy = b.surface()
    res["surface"] = {"triangles": proxy.triangles, "level": proxy.level, "calibration_median_rel_depth_diff": proxy.calib_rel_err}
    spec = multicam_scenario(log_dir, bundle, horizon_s=(steps + 2) * 0.1)
    res["speed"] = _env_speed(spec, steps)
    note(f"env: {res['speed']['steps_per_s']:.2f} steps/s ({len(rig.cameras)} cameras + LiDAR, surface), "
         f"{res['speed']['cpu_ms_per_step']:.0f} CPU ms/step, load {_load():.1f}")
    res["render"] = _render_configs(b, _worlds(spec, render_worlds + 1), rig, "surface")
    note("render ms/step: " + ", ".join(f"{k} {v['ms_median']}" for k, v in res["render"]["configs"].items())
         + f"; identical {res['render']['identical']}; per sensor {res['render']['per_sensor_ms']}")
    truth = read_log(truth_log) if truth_log is not None else None
    r = NeuralRenderer(bundle=b, library=False, mode="surface")
    try:
        res["quality"] = heldout_psnr(r, dl, truth, frames=heldout_frames, eval_every=int(b.info.get("eval_every", 10)))
    finally:
        r.close()
    note(f"held-out PSNR (surface, mean appearance) {res['quality']['mean_over_cameras']} dB over {len(rig.cameras)} cameras")
    if gap_horizon_s is not None and truth_log is not None:
        res["planner_gap"] = multicam_planner_gap(b, bundle, log_dir, Path(truth_log), horizon_s=gap_horizon_s, progress=progress)
        g = res["planner_gap"]["mean_gap"]
        note(f"planner gap (mean score mesh - neural): {'n/a' if g is None else format(g, '+.3f')}")
    res["wall_s"] = round(time.perf_counter() - t_start, 1)
    res["load_1m_after"] = _load()
    if out is not None:
        dest = Path(out)
        res["scenario_file"] = str(dest.with_name("multicam_logged_drive.yaml"))
        from sim.fsutil import atomic_write_text

        atomic_write_text(dest.with_name("multicam_logged_drive.yaml"), scenario_yaml(log_dir, bundle), parents=True)
        write_json_atomic(dest, res)
    return res
