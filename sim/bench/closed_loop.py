"""``loopdrive bench closed-loop``: the neural scene inside the loop, measured.

Writes its results JSON (``closed_loop.json`` of the run folder, see ``loopdrive bench closed-loop --help``) with:

* ``speed``: env steps/s of :class:`sim.env.ClosedLoopEnv` with ``camera`` (320x192) + ``lidar``
  (32x1024) observations on the ``neural`` backend (default ``auto`` mode: the baked background
  surface when its calibration holds; ``neural_volume``: full volume rendering) and ``composite``
  (and ``mesh`` for reference), same scenario (the log's drive), same number of steps, constant
  action. Target: neural >= 10.
* ``realism``: camera PSNR (dB) of neural renders against mesh truth (exact synthetic town) along a
  closed-loop episode whose ego is steered away from its logged path by a lateral-offset controller
  (target offset ramping 0 -> ``max_offset_m``), binned by lateral deviation; and at logged times with
  the nearest actor ahead removed, and with one library actor (of the same bundle) inserted 12 m
  ahead (whole-image PSNR and PSNR inside the inserted actor's truth silhouette).
* ``planner_gap``: the score of the sensor-only planner ``lidar_stack`` on ``mesh`` vs ``neural``
  LiDAR on scenario files of the bundle's town (the sim-to-real gap of the sensor model).

:func:`run_planner_gap_bench` measures only the planner gap (scenario count, horizon, seeds and
LiDAR resolution as parameters) into ``planner_gap.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import LoopdriveError
from sim.log import read_log, write_json_atomic
from sim.machine import machine_info

__all__ = ["DEFAULT_GAP_SCENARIOS", "planner_gap", "run_closed_loop_bench", "run_planner_gap_bench"]

log = logging.getLogger(__name__)


def _psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    x = a.astype(np.float64)
    y = b.astype(np.float64)
    if mask is not None:
        if not mask.any():
            return math.nan
        x, y = x[mask], y[mask]
    mse = float(np.mean((x - y) ** 2)) / 255.0**2
    return 10.0 * math.log10(1.0 / max(mse, 1e-10))


def _speed(bundle: Path, log_dir: Path, renderer: str, steps: int, neural_mode: str = "auto") -> dict[str, Any]:
    from sim.env import ClosedLoopEnv
    from sim.spec import ScenarioSpec, SceneSpec

    spec = ScenarioSpec(name="closed_loop_bench", scene=SceneSpec(log=log_dir, bundle=bundle, renderer=renderer, neural_mode=neural_mode),
                        horizon_s=round((steps + 2) * 0.1, 3), dt_s=0.1)
    env = ClosedLoopEnv(scenario=spec, observation=["camera", "lidar"], renderer=renderer)
    try:
        env.reset(seed=0)
        mode = getattr(env.core.renderer(), "mode", None) or getattr(getattr(env.core.renderer(), "background", None), "mode", None)
        env.step(np.zeros(2, np.float32))  # first render builds caches / GL context
        t0 = time.perf_counter()
        n = 0
        for _ in range(steps - 1):
            _, _, term, trunc, _ = env.step(np.zeros(2, np.float32))
            n += 1
            if term or trunc:
                env.reset(seed=0)
        dt = time.perf_counter() - t0
    finally:
        env.close()
    return {"steps": n, "seconds": round(dt, 3), "steps_per_s": n / dt, "camera": "320x192", "lidar": "32x1024",
            "neural_mode": mode, "load_1m_after": _load()}


def _deviation_episode(bundle: Path, log_dir: Path, neural: Any, mesh: Any, *, steps: int, max_offset_m: float) -> dict[str, Any]:
    """Steer the ego away from its logged path and score neural camera renders against mesh truth."""
    from sim import engine
    from sim.spec import ScenarioSpec, SceneSpec
    from sim.world import track_speed

    dl = read_log(log_dir)
    dur = (int(dl.ego.t_us[-1]) - int(dl.ego.t_us[0])) / 1e6
    n = max(2, min(steps, int(dur / 0.1) - 2))
    spec = ScenarioSpec(name="deviation", scene=SceneSpec(log=log_dir, bundle=bundle, renderer="neural"), horizon_s=round(n * 0.1 + 0.1, 3))
    c = engine.compile_scenario(spec)
    rng = np.random.default_rng(0)
    state = engine.reset(c, rng)
    cam = _rig().cameras[0]
    v_log = track_speed(dl.ego)
    rows = []
    for k in range(n):
        world = state.world(0)
        t = int(world.t_us)
        p = dl.ego.pose_at(t)
        if p is None:
            break
        xl, yl, _, yawl = (float(v) for v in p)
        lat = -(float(world.x[0]) - xl) * math.sin(yawl) + (float(world.y[0]) - yl) * math.cos(yawl)
        pred = neural.render_camera(world, cam)
        truth = mesh.render_camera(world, cam)
        rows.append({"t_us": t, "lateral_m": lat, "psnr": _psnr(pred.rgb, truth.rgb)})
        target = max_offset_m * min(1.0, k / max(n * 0.6, 1))
        head = math.remainder(float(world.yaw[0]) - yawl, 2 * math.pi)
        steer = float(np.clip(0.06 * (target - lat) - 0.6 * head, -0.25, 0.25))
        i = int(np.clip(np.searchsorted(dl.ego.t_us, t), 0, len(v_log) - 1))
        accel = float(np.clip(1.0 * (float(v_log[i]) - float(state.v[0, 0])), -3.0, 2.0))
        state = engine.step(state, np.array([accel, steer]), rng)
        if bool(state.done[0]):
            break
    bins = [(0.0, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 99.0)]
    binned = []
    for lo, hi in bins:
        v = [r["psnr"] for r in rows if lo <= abs(r["lateral_m"]) < hi]
        if v:
            binned.append({"lateral_m": (lo + min(hi, max_offset_m + 1)) / 2, "range_m": [lo, hi], "psnr": float(np.mean(v)), "frames": len(v)})
    return {"per_step": rows, "binned": binned}


def _rig() -> Any:
    from sim.sensors import default_rig

    return default_rig()


def _edits(bundle: Path, log_dir: Path, neural_cls: Any, mesh: Any, *, frames: int) -> dict[str, Any]:
    """Actor removed / inserted at logged times against mesh truth of the same edit."""
    from sim.actor_library import ActorLibrary
    from sim.render.base import ArrayWorld
    from sim.synth import world_from_tracks

    dl = read_log(log_dir)
    cam = _rig().cameras[0]
    times = [int(t) for t in dl.ego.t_us[:: max(1, len(dl.ego.t_us) // max(frames, 1))]][:frames]
    removed, inserted, inserted_box = [], [], []
    with tempfile.TemporaryDirectory(prefix="loopdrive-lib-") as tmp:
        lib = ActorLibrary(Path(tmp) / "lib")
        entries = lib.add_bundle(bundle)
        cars = [a for a in entries if a.cls == "car"]
        neural = neural_cls(bundle=bundle, library=lib)
        for t in times:
            w0 = ArrayWorld.of(world_from_tracks(dl.ego, dl.tracks, t))
            yaw = float(w0.yaw[0])
            fwd = np.array([math.cos(yaw), math.sin(yaw)])
            dx, dy = w0.x - w0.x[0], w0.y - w0.y[0]
            ahead = dx * fwd[0] + dy * fwd[1]
            dist = np.hypot(dx, dy)
            cand = [i for i in range(1, len(w0.ids)) if w0.valid[i] and ahead[i] > 3 and dist[i] < 35 and w0.ids[i] in neural.slot_of]
            if cand:
                i = min(cand, key=lambda k: dist[k])
                valid = w0.valid.copy()
                valid[i] = False
                w = dataclasses.replace(w0, valid=valid)
                removed.append(_psnr(neural.render_camera(w, cam).rgb, mesh.render_camera(w, cam).rgb))
            if cars:
                src = cars[0]
                valid = w0.valid.copy()
                for j in range(1, len(w0.ids)):
                    if w0.ids[j] == src.id:
                        valid[j] = False
                base = dataclasses.replace(w0, valid=valid)
                pose = (float(w0.x[0] + 12 * fwd[0]), float(w0.y[0] + 12 * fwd[1]), float(w0.z[0]), yaw)
                neural.assets["inserted"] = src.key
                w_pred = base.with_row("inserted", src.cls, pose, src.size)
                w_true = base.with_row(src.id, src.cls, pose, src.size)  # same model colours as the source actor
                truth = mesh.render_camera(w_true, cam)
                truth0 = mesh.render_camera(base, cam)
                pred = neural.render_camera(w_pred, cam)
                inserted.append(_psnr(pred.rgb, truth.rgb))
                inserted_box.append(_psnr(pred.rgb, truth.rgb, truth.depth < truth0.depth))

    def mean(v: list[float]) -> float | None:
        v = [x for x in v if not math.isnan(x)]
        return float(np.mean(v)) if v else None

    return {"actor_removed": {"psnr": mean(removed), "views": len(removed)},
            "actor_inserted": {"psnr": mean(inserted), "psnr_in_silhouette": mean(inserted_box), "views": len(inserted),
                               "asset": cars[0].key if cars else None, "distance_ahead_m": 12.0}}


#: scenario files (``scenarios/<name>.yaml``) of the planner gap when none are given: a stopped car,
#: a braking lead, a cyclist and the logged drive -- situations a LiDAR-only planner must see
DEFAULT_GAP_SCENARIOS = ("stopped_vehicle", "lead_brake_hard", "cyclist_in_lane", "logged_drive")
SCENARIO_LIBRARY = Path(__file__).resolve().parents[2] / "scenarios"


def _num(v: Any, spec: str = ".2f") -> str:
    """A figure for a progress line: ``v`` formatted with ``spec``, ``n/a`` when it is missing."""
    return format(v, spec) if isinstance(v, int | float) and not isinstance(v, bool) else "n/a"


def _load() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _not_on_bundle_town(path: Path, spec: Any, syn: dict[str, Any], log_dir: Path) -> dict[str, str] | None:
    """Why scenario file ``path`` cannot be driven on the bundle of ``log_dir`` (another synthetic
    town, ``syn`` = the log's synth preset/seed, or another log), or None when it can."""
    sc = spec.scene
    if sc.log is None and (sc.town, sc.seed) != (syn.get("preset"), syn.get("seed")):
        return {"scenario": str(path), "reason": f"town {sc.town}/{sc.seed} is not the bundle's {syn.get('preset')}/{syn.get('seed')}"}
    if sc.log is not None and Path(sc.log).resolve() != log_dir.resolve():
        return {"scenario": str(path), "reason": f"log {sc.log} is not the bundle's {log_dir}"}
    return None


def _gap_row(spec: Any, planner: str, seed: int, compiled: Any, renderers: tuple[tuple[str, Any], ...], rig: Any) -> dict[str, Any]:
    """One scenario and seed driven with each of ``renderers`` ((name, renderer) pairs: mesh and
    neural): score, how it ended, steps, wall seconds and load per renderer, the score ``gap``
    (mesh - neural) and the largest |accel, steer| difference of the applied actions."""
    from sim.batch import drive_episode
    from sim.metrics import compute_metrics

    row: dict[str, Any] = {"scenario": spec.name, "seed": seed, "horizon_s": spec.horizon_s}
    acts = {}
    for name, r in renderers:
        t0 = time.perf_counter()
        res = drive_episode(spec, planner, seed, compiled=compiled, renderer=r, rig=rig, observation=("ego", "lidar"))
        wall = time.perf_counter() - t0
        acts[name] = res.actions
        score = float(compute_metrics(res.record)[1]) if res.record is not None and res.status == "ok" else 0.0
        row.update({f"score_{name}": score, f"end_{name}": res.termination if res.status == "ok" else res.error,
                    f"steps_{name}": res.steps, f"wall_s_{name}": round(wall, 2), f"load_1m_{name}": _load()})
    row["gap"] = row["score_mesh"] - row["score_neural"]
    n = min(len(acts["mesh"]), len(acts["neural"]))
    # did the sensor model change the planner's behaviour at all? (max |accel, steer| difference)
    row["max_action_diff"] = [float(v) for v in np.abs(acts["mesh"][:n] - acts["neural"][:n]).max(0)] if n else None
    return row


def _gap_summary(planner: str, lidar: tuple[int, int], horizon_s: float, seeds: tuple[int, ...], rows: list[dict[str, Any]],
                 skipped: list[dict[str, str]]) -> dict[str, Any]:
    """The planner-gap result: every row, the skipped scenarios, mean scores and gap, and the
    neural renderer's wall seconds per step."""
    gap = [r["gap"] for r in rows]
    steps = sum(r["steps_neural"] for r in rows)
    return {"planner": planner, "lidar": f"{lidar[0]}x{lidar[1]}", "horizon_s": horizon_s, "seeds": list(seeds),
            "scenarios": rows, "skipped": skipped,
            "mean_score_mesh": float(np.mean([r["score_mesh"] for r in rows])) if rows else None,
            "mean_score_neural": float(np.mean([r["score_neural"] for r in rows])) if rows else None,
            "mean_gap": float(np.mean(gap)) if gap else None,
            "neural_s_per_step": (sum(r["wall_s_neural"] for r in rows) / steps) if steps else None}


def planner_gap(
    bundle: str | os.PathLike[str],
    log_dir: str | os.PathLike[str],
    scenarios: list[Path] | None = None,
    *,
    horizon_s: float = 6.0,
    max_scenarios: int | None = None,
    seeds: tuple[int, ...] = (0,),
    lidar: tuple[int, int] = (32, 1024),
    planner: str = "lidar_stack",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The sim-to-real gap of the sensor model: ``planner`` (a LiDAR-only planner) driven closed
    loop on ``mesh`` (exact) and on ``neural`` (the bundle) LiDAR, same scenario, seed and horizon
    (``horizon_s`` cuts each file's, s); ``gap`` = score on mesh - score on neural (0 = the planner
    cannot tell the sensor models apart).

    Scenarios: files (default :data:`DEFAULT_GAP_SCENARIOS` of the scenario library), only those on
    the bundle's town (synthetic preset/seed of ``log_dir``, or the log itself), at most
    ``max_scenarios``. Inserted actors are rendered by the scenario's ``asset`` s when it has an
    actor library, else by the nearest reconstructed actor of their class of this very bundle.
    LiDAR: ``lidar`` = (beams, azimuth steps). Per episode: score, how it ended, steps and wall
    seconds (with the 1-min load average of the machine), and the largest difference of the applied
    [accel m/s², steer rad] between the two runs (0 = the sensor model did not change the drive)."""
    from sim import engine
    from sim.actor_library import ActorLibrary
    from sim.batch import episode_scene
    from sim.recon.bundle import load_bundle
    from sim.render.mesh import MeshRenderer
    from sim.render.neural import NeuralRenderer
    from sim.scenario import load_scenario
    from sim.sensors import LidarSpec, SensorRig

    bundle, log_dir = Path(bundle), Path(log_dir)
    if scenarios is None:
        scenarios = [SCENARIO_LIBRARY / f"{n}.yaml" for n in DEFAULT_GAP_SCENARIOS]
    syn = read_log(log_dir).meta.get("synth") or {}
    rig = SensorRig((), dataclasses.replace(LidarSpec(), beams=int(lidar[0]), azimuth_steps=int(lidar[1])))
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    b = load_bundle(bundle)
    with tempfile.TemporaryDirectory(prefix="loopdrive-lib-") as tmp:
        own_lib = ActorLibrary(Path(tmp) / "lib")
        own_lib.add_bundle(b)
        for path in scenarios:
            if max_scenarios is not None and len(rows) >= max_scenarios * len(seeds):
                break
            spec = load_scenario(path)
            why = _not_on_bundle_town(path, spec, syn, log_dir)
            if why is not None:
                skipped.append(why)
                continue
            sc = spec.scene
            spec = dataclasses.replace(spec, horizon_s=min(spec.horizon_s, horizon_s), scene=dataclasses.replace(sc, bundle=bundle, renderer="neural"))
            c = engine.compile_scenario(spec, episode_scene(spec))
            mesh = MeshRenderer(c.scene) if sc.log is None else MeshRenderer.from_log(sc.log)
            neural = NeuralRenderer.from_scenario(spec, c.scene, bundle=b, **({} if sc.actor_library is not None else {"library": own_lib}))
            try:
                neural.plan(engine.reset(c, np.random.default_rng(0)).world(0))
            except LoopdriveError as exc:  # an inserted actor without any reconstruction of its class
                skipped.append({"scenario": str(path), "reason": exc.one_line()})
                mesh.close()
                continue
            try:
                for seed in seeds:
                    row = _gap_row(spec, planner, seed, c, (("mesh", mesh), ("neural", neural)), rig)
                    rows.append(row)
                    if progress is not None:
                        progress(f"planner gap {spec.name} seed {seed}: mesh {row['score_mesh']:.3f}, neural {row['score_neural']:.3f} "
                                 f"({row['steps_neural']} steps, neural {row['wall_s_neural']:.0f} s)")
            finally:
                mesh.close()
    return _gap_summary(planner, lidar, horizon_s, seeds, rows, skipped)


def run_planner_gap_bench(
    bundle: str | os.PathLike[str],
    log_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    scenarios: list[Path] | None = None,
    max_scenarios: int | None = 3,
    horizon_s: float = 3.0,
    seeds: tuple[int, ...] = (0,),
    lidar: tuple[int, int] = (32, 1024),
    threads: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Only the sensor-only planner gap (:func:`planner_gap`), written to ``out`` (JSON) with the
    machine (CPU count, torch threads, load average before and after)."""
    import torch

    torch.set_num_threads(threads)
    machine = machine_info(torch_threads=torch.get_num_threads())
    t0 = time.perf_counter()
    gap = planner_gap(bundle, log_dir, scenarios, horizon_s=horizon_s, max_scenarios=max_scenarios, seeds=seeds, lidar=lidar,
                      progress=progress)
    res = {"benchmark": "planner_gap", "bundle": str(bundle), "log": str(log_dir), "machine": machine,
           "load_avg_1m_after": _load(), "wall_s": round(time.perf_counter() - t0, 1), "planner_gap": gap}
    if out is not None:
        write_json_atomic(Path(out), res)
    return res


def run_closed_loop_bench(
    bundle: str | os.PathLike[str],
    log_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    steps: int = 20,
    scenarios: list[Path] | None = None,
    horizon_s: float = 6.0,
    threads: int = 1,
    deviation_steps: int = 40,
    max_offset_m: float = 3.0,
    edit_frames: int = 4,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark (see the module docstring) and write the JSON to ``out`` (when given)."""
    import torch

    from sim.render.mesh import MeshRenderer
    from sim.render.neural import NeuralRenderer

    torch.set_num_threads(threads)
    bundle, log_dir = Path(bundle), Path(log_dir)

    def note(m: str) -> None:
        log.info(m)
        if progress is not None:
            progress(m)

    res: dict[str, Any] = {"bundle": str(bundle), "log": str(log_dir), "machine": machine_info(torch_threads=torch.get_num_threads()), "speed": {}, "realism": {}}
    for name, renderer, mode in (("neural", "neural", "auto"), ("neural_volume", "neural", "volume"), ("composite", "composite", "auto"),
                                 ("mesh", "mesh", "auto")):
        try:
            res["speed"][name] = _speed(bundle, log_dir, renderer, steps, mode)
            note(f"{name}: {res['speed'][name]['steps_per_s']:.2f} steps/s")
        except Exception as exc:  # a backend that cannot run here is recorded, the bench goes on
            res["speed"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            note(f"{name}: {exc}")
    res["speed"]["target_neural_steps_per_s"] = 10.0
    mesh = MeshRenderer.from_log(log_dir)
    try:
        neural = NeuralRenderer(bundle=bundle, library=False)
        dev = _deviation_episode(bundle, log_dir, neural, mesh, steps=deviation_steps, max_offset_m=max_offset_m)
        res["realism"]["lane_deviation"] = dev["binned"]
        res["realism"]["lane_deviation_per_step"] = dev["per_step"]
        note(f"deviation episode: {[(round(b['lateral_m'], 1), round(b['psnr'], 2)) for b in dev['binned']]}")
        res["realism"].update(_edits(bundle, log_dir, NeuralRenderer, mesh, frames=edit_frames))
        note("edits: PSNR with an actor removed {}, inserted {} dB".format(
            *(_num((res["realism"].get(k) or {}).get("psnr")) for k in ("actor_removed", "actor_inserted"))))
    finally:
        mesh.close()
    if scenarios:
        res["planner_gap"] = planner_gap(bundle, log_dir, [Path(s) for s in scenarios], horizon_s=horizon_s, progress=progress)
        note(f"planner gap (mean score mesh - neural): {_num(res['planner_gap']['mean_gap'], '+.3f')}")
    if out is not None:
        write_json_atomic(Path(out), res)
    return res
