"""``loopdrive bench recon-roundtrip``: the reconstructor on a real-format log, scored against exact truth.

The chain, per realism level (``clean``, ``real_like``; :mod:`sim.synth.realism`):

1. synthesise the town with the nuScenes rig (six cameras at 12 Hz, spinning ``LIDAR_TOP`` at
   20 Hz) into a clean native log -- the truth; for a realism level, a copy of it with the
   imperfections applied to the logged sensors and labels (:func:`~sim.synth.realism.apply_realism`);
2. ``export-nuscenes`` that log, then ``import nuscenes`` it with every camera and every sweep;
3. ``recon`` on the imported log, once per variant (a variant = a realism level + a dict of
   reconstructor config overrides, e.g. an ablation switching off appearance embeddings or pose
   refinement; a variant whose switch the reconstructor does not have is recorded as skipped);
4. ``eval-recon`` per camera against the *clean native* log and the mesh town: held-out frames
   (the frames the reconstructor held out: frame ``k`` of each camera with ``k % eval_every == 0``; the imported log keeps
   the native frame order, checked), lane shifts 1/2/3 m, actor removed / moved (mesh truth), and
   held-out LiDAR sweeps (once, not per camera).

The bundle lives in the imported log's frame (world = global - ``origin.global_offset_m``, time
= absolute - ``origin.t0_us``; actor ids = per-segment nuScenes ids). Scoring happens in the
native frame through :class:`AlignedScene`, which moves every camera / LiDAR pose and actor pose
by the exporter's map offset and the importer's origin, shifts times by the two time origins and
maps native actor ids to the imported segments of the same nuScenes instance. The alignment is
checked on every frame pose and recorded (``alignment``).

Held-out appearance: held-out frames are rendered with whatever the bundle does when asked for a
camera pose and time (the reconstructor's documented protocol); truth is the clean image.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sim.errors import BundleError, LoopdriveError, ScenarioError
from sim.log import DriveLog, read_log, write_json_atomic
from sim.machine import load_average, machine_info

__all__ = ["BENCH_PRESETS", "DEFAULT_VARIANTS", "RUN_KEYS", "TARGETS", "VARIANTS", "AlignedScene", "BenchPreset", "Variant", "run_recon_roundtrip"]

log = logging.getLogger(__name__)

#: the issue's figures to reach (dB, metres, seconds)
TARGETS = {"quick": {"roundtrip_seconds_max": 1200, "mean_heldout_psnr_min": 24.0, "front_vs_native_single_camera_db_max": 1.0,
                     "lane_shift_2m_psnr_min": 23.0, "lidar_median_range_err_max_m": 0.10},
           "full": {"roundtrip_seconds_max": 5400, "mean_heldout_psnr_min": 28.0, "lane_shift_2m_psnr_min": 26.0},
           "realism_loss_heldout_db_max": 1.0}

#: the native single-camera quick figure on the same town (small, seed 0, front camera 320x192),
#: from ``benchmarks/results/recon.json`` (read at run time when present)
NATIVE_RESULT = Path("benchmarks/results/recon.json")


@dataclass(frozen=True)
class BenchPreset:
    """Sizes of one benchmark budget: the town, how many 50 ms steps, the image scale of
    1600x900, LiDAR columns, the reconstructor preset and iteration / wall-clock caps (s; None:
    the preset's own, which depends on how many cameras train), and how
    many held-out frames (per camera) and sweeps are scored."""

    town: str
    steps: int
    image_scale: float
    azimuth: int
    recon_preset: str
    iterations: int | None
    max_train_seconds: float | None
    eval_frames: int
    eval_sweeps: int
    cameras: tuple[str, ...] | None = None
    seed: int = 0


BENCH_PRESETS: dict[str, BenchPreset] = {
    # a plumbing check (tests): a few frames, a few iterations, two cameras
    "smoke": BenchPreset("tiny", 12, 0.1, 128, "quick", 4, None, 1, 1, ("CAM_FRONT", "CAM_BACK")),
    # the quick figure: the small town (12 s) at 320x180, the quick preset under its own cap
    # (on six cameras: 11000 iterations, 1/2-resolution decoder, a 14-minute cap; sim.recon.presets.PRESETS)
    "quick": BenchPreset("small", 240, 0.2, 1024, "quick", None, None, 12, 6),
    "full": BenchPreset("small", 240, 0.2, 1024, "full", None, None, 12, 6),
}


@dataclass(frozen=True)
class Variant:
    """A realism level and reconstructor config overrides (model / datamanager fields)."""

    realism: str
    overrides: dict[str, Any] = field(default_factory=dict)


#: the known variants (the switch names are the reconstructor's config fields); ``clean_upsample2``
#: is the clean log with the quick preset's decoder at 1/2 instead of 1/4 resolution (sharper,
#: slower per iteration and per render), run on request only
VARIANTS: dict[str, Variant] = {
    "clean": Variant("clean"),
    "real_like": Variant("real_like"),
    "real_like_no_appearance": Variant("real_like", {"appearance": False}),
    "real_like_no_pose_refinement": Variant("real_like", {"refine_actors": False, "refine_ego": False}),
    "clean_upsample2": Variant("clean", {"upsample": 2}),
}
#: the variants run by default, in order
DEFAULT_VARIANTS: tuple[str, ...] = ("clean", "real_like", "real_like_no_appearance", "real_like_no_pose_refinement")


class AlignedScene:
    """A bundle trained on the imported log, seen from the native log's frame (see the module
    docstring): ``shift_m`` = native world - imported world, ``dt_us`` = native time - imported
    time; ``ids`` native actor id -> imported ids (segments of its nuScenes instance)."""

    def __init__(self, b: Any, shift_m: NDArray[np.float64], dt_us: int, ids: dict[str, tuple[str, ...]], cameras: list[str],
                 eval_every: int, canonical: bool = False) -> None:
        self._b = b
        self._canonical = canonical
        self._d = np.asarray(shift_m, dtype=np.float64)
        self._dt = int(dt_us)
        have = {a.id for a in b.actors}
        self._ids = {n: tuple(i for i in v if i in have) for n, v in ids.items()}
        self._tracks = {t.id: t for t in getattr(b, "tracks", ())}
        self.info = {**b.info, "camera": cameras[0], "cameras": list(cameras), "eval_every": eval_every}
        self.actors = [SimpleNamespace(id=n) for n, v in self._ids.items() if v]
        ego = getattr(b, "ego", None)  # a refined ego track, moved into the native frame
        self.ego = None if ego is None else dataclasses.replace(ego, t_us=ego.t_us + self._dt, pose=ego.pose + np.r_[self._d, 0.0])

    def __getattr__(self, name: str) -> Any:  # anything else (no pose in it) from the bundle
        return getattr(self._b, name)

    def _pose(self, m: NDArray[np.floating]) -> NDArray[np.float64]:
        out = np.array(m, dtype=np.float64)
        out[:3, 3] -= self._d
        return out

    def actors_at(self, t_us: int, *, remove: tuple[str, ...] = (), moves: dict[str, tuple[float, float, float, float]] | None = None) -> Any:
        t = int(t_us) - self._dt
        rm = tuple(i for n in remove for i in self._ids.get(n, ()))
        mv: dict[str, tuple[float, float, float, float]] = {}
        for n, p in (moves or {}).items():
            for i in self._ids.get(n, ()):
                tr = self._tracks.get(i)
                if tr is None or tr.pose_at(t) is not None:  # only the segment alive then
                    mv[i] = (p[0] - self._d[0], p[1] - self._d[1], p[2] - self._d[2], p[3])
        return self._b.actors_at(t, remove=rm, moves=mv)

    def render_camera(self, c2w: NDArray[np.floating], *args: Any, **kw: Any) -> Any:
        if self._canonical:  # no appearance embedding: the scene's canonical colours
            kw.pop("appearance", None)
        return self._b.render_camera(self._pose(c2w), *args, **kw)

    def render_lidar(self, s2w: NDArray[np.floating], *args: Any, **kw: Any) -> Any:
        return self._b.render_lidar(self._pose(s2w), *args, **kw)


def alignment(native: DriveLog, imported: DriveLog, epoch_us: int, exported: DriveLog | None = None) -> tuple[NDArray[np.float64], int, dict[str, Any]]:
    """(native - imported world shift (m), native - imported time shift (us), the check): the
    exporter's map offset (of ``exported``, the log it exported: default ``native``) and the
    importer's origin; checked on every camera frame (same camera, time and pose in the same
    order; with realism the pose difference includes the logged ego-pose error)."""
    from sim.importers.nuscenes_export import DEFAULT_ORIGIN, _map_offset

    shift = np.asarray(imported.meta["origin"]["global_offset_m"], dtype=np.float64) - _map_offset(exported or native, DEFAULT_ORIGIN)
    dt = int(imported.meta["origin"]["t0_us"]) - int(epoch_us)
    same = len(native.frames) == len(imported.frames) and all(
        a.camera == b.camera and a.t_us == b.t_us + dt for a, b in zip(native.frames, imported.frames, strict=False))
    pos = max((float(np.abs(a.c2w[:3, 3] - b.c2w[:3, 3] - shift).max()) for a, b in zip(native.frames, imported.frames, strict=False)),
              default=0.0)
    return shift, dt, {"frame_order_same": bool(same), "frames": [len(native.frames), len(imported.frames)], "camera_position_max_m": pos,
                       "shift_m": [round(float(v), 6) for v in shift], "dt_us": dt}


def actor_id_map(native: DriveLog, imported: DriveLog) -> dict[str, tuple[str, ...]]:
    """Native actor id -> ids of the imported tracks (segments) of its nuScenes instance."""
    from sim.importers.nuscenes_export import instance_token

    scene = imported.meta["nuscenes"]["scene"]
    by_inst: dict[str, list[str]] = {}
    for r in imported.meta["nuscenes"]["tracks"]:
        by_inst.setdefault(r["instance_token"], []).append(r["id"])
    return {t.id: tuple(by_inst.get(instance_token(scene, t.id), ())) for t in native.tracks}


def _native_front() -> float | None:
    try:
        import json

        return float(json.loads(NATIVE_RESULT.read_text())["loopdrive_recon"]["eval"]["heldout"]["psnr"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _summary(per_cam: dict[str, Any], lidar: dict[str, Any] | None) -> dict[str, Any]:
    def mean(vals: list[float | None]) -> float | None:
        v = [x for x in vals if x is not None]
        return round(float(np.mean(v)), 3) if v else None

    cams = list(per_cam)
    lane = {k: mean([per_cam[c].get("lane_shift", {}).get("psnr", {}).get(k) for c in cams]) for k in ("1m", "2m", "3m")}
    front = per_cam.get("CAM_FRONT", {})
    return {"mean_heldout_psnr": mean([per_cam[c]["heldout"]["psnr"] for c in cams]),
            "mean_heldout_ssim": mean([per_cam[c]["heldout"]["ssim"] for c in cams]),
            "front_heldout_psnr": front.get("heldout", {}).get("psnr"),
            "front_lane_shift_psnr": front.get("lane_shift", {}).get("psnr"),
            "mean_lane_shift_psnr": lane,
            "mean_actor_removed_psnr": mean([per_cam[c].get("actor_removed", {}).get("psnr") for c in cams]),
            "mean_actor_moved_psnr": mean([per_cam[c].get("actor_moved", {}).get("psnr") for c in cams]),
            "lidar_median_range_err_m": (lidar or {}).get("median_abs_range_err_m"),
            "lidar_ray_drop_accuracy": (lidar or {}).get("ray_drop_accuracy")}


def evaluate_per_camera(b: Any, truth: DriveLog, imported: DriveLog, work: Path, p: BenchPreset, epoch_us: int,
                        say: Callable[[str], None], logged: DriveLog | None = None) -> dict[str, Any]:
    """Score bundle ``b`` (trained on ``imported``) on every camera of ``truth`` and its held-out
    sweeps (see the module docstring): one :func:`~sim.recon.evaluate.evaluate_scene` call over the
    bundle's cameras in its own order (appearance rows follow it), then any truth camera it lacks."""
    from sim.recon.evaluate import evaluate_scene

    shift, dt, check = alignment(truth, imported, epoch_us, logged)
    if not check["frame_order_same"]:
        raise LoopdriveError(f"the imported log's frames are not the native frames in order ({check['frames']}): held-out frames would not match")
    ids = actor_id_map(truth, imported)
    every = int(b.info.get("eval_every", 10))
    trained = [str(c) for c in (b.info.get("cameras") or [b.info.get("camera")]) if c]
    cams = [*trained, *(c for c in truth.cameras if c not in trained)]
    say(f"  eval {', '.join(cams)}")
    r = evaluate_scene(AlignedScene(b, shift, dt, ids, cams, every), truth, work, max_frames=p.eval_frames, max_sweeps=p.eval_sweeps)
    per_cam = {c: {k: v for k, v in r["per_camera"][c].items()} for c in cams if c in r.get("per_camera", {})}
    lidar = r.get("lidar")
    return {"alignment": check, "cameras_trained": trained, "per_camera": per_cam, "lidar": lidar,
            "mean_over_cameras": r.get("mean_over_cameras"), "summary": _summary(per_cam, lidar),
            "heldout_protocols": _heldout_protocols(b, truth, logged, shift, dt, ids, cams, every, p)}


def _heldout_protocols(b: Any, truth: DriveLog, logged: DriveLog | None, shift: NDArray[np.float64], dt: int, ids: dict[str, tuple[str, ...]],
                       cams: list[str], every: int, p: BenchPreset) -> dict[str, Any]:
    """Mean held-out PSNR over cameras under the other protocols: ``canonical_vs_clean`` (no
    appearance embedding, clean truth) and, for a realism level, ``nearest_embedding_vs_logged``
    (the reconstructor's protocol scored against the logged, imperfect images, as on real data).
    ``nearest_embedding_vs_clean`` is the main figure (``summary.mean_heldout_psnr``)."""
    from sim.recon.eval_sensors import score_heldout
    from sim.recon.split import split_frames

    out: dict[str, Any] = {}
    runs = [("canonical_vs_clean", truth, True)] + ([("nearest_embedding_vs_logged", logged, False)] if logged is not None else [])
    for name, dl, canonical in runs:
        scene = AlignedScene(b, shift, dt, ids, cams, every, canonical=canonical)
        train, _ = split_frames(dl, cams, every)
        per = {c: score_heldout(scene, dl, split_frames(dl, [c], every)[1][: p.eval_frames], cams, train, [], 0)["psnr"] for c in cams}
        vals = [v for v in per.values() if v is not None]
        out[name] = {"mean_heldout_psnr": round(float(np.mean(vals)), 3) if vals else None, "per_camera": per}
    return out


def _step_times(work: Path, update: dict[str, float] | None = None) -> dict[str, float]:
    """Wall-clock seconds of the data steps made in ``work`` (``timings.json``; kept so a run that
    reuses them still reports them), updated with ``update``."""
    import json

    f = work / "timings.json"
    try:
        t = json.loads(f.read_text()) if f.is_file() else {}
    except (OSError, ValueError):
        t = {}
    if update:
        t.update(update)
        write_json_atomic(f, t)
    return t


def _native_log(work: Path, p: BenchPreset, say: Callable[[str], None]) -> Path:
    from sim.synth import make_scene, write_synth_log
    from sim.synth.rigs import nuscenes_rig, nuscenes_schedule

    out = work / "native"
    if (out / "meta.json").exists():
        return out
    say(f"synth: {p.town} town, {p.steps} steps of 50 ms, nuScenes rig at scale {p.image_scale}")
    t = time.perf_counter()
    scene = make_scene(p.town, p.seed, frames=p.steps, dt_s=0.05)
    rig = nuscenes_rig(p.image_scale, cameras=p.cameras, azimuth_steps=p.azimuth)
    write_synth_log(scene, out=out, rig=rig, schedule=nuscenes_schedule(int(scene.t_us[-1]), rig), rig_name="nuscenes",
                    supersample=1, overwrite=True, name="native")
    _step_times(work, {"synth_s": round(time.perf_counter() - t, 1)})
    return out


def _imported(work: Path, native: Path, realism: str, seed: int, say: Callable[[str], None], timings: dict[str, float]) -> tuple[Path, Path]:
    """(the logged native log of a realism level, its nuScenes import), made once per level."""
    from sim.importers import import_log
    from sim.importers.nuscenes_export import export_nuscenes
    from sim.synth.realism import apply_realism, get_realism

    logged = native
    if realism != "clean":
        logged = work / f"native-{realism}"
        if not (logged / "meta.json").exists():
            say(f"realism {realism}")
            t = time.perf_counter()
            apply_realism(native, logged, get_realism(realism, seed), overwrite=True, name="native")
            _step_times(work, {f"realism_{realism}_s": round(time.perf_counter() - t, 1)})
    imp = work / f"imported-{realism}"
    if not (imp / "meta.json").exists():
        say(f"export-nuscenes + import nuscenes ({realism})")
        t = time.perf_counter()
        root = export_nuscenes(logged, work / f"root-{realism}", image_format="png", overwrite=True)
        import_log("nuscenes", root, imp, cameras="all", sweeps=True, overwrite=True)
        _step_times(work, {f"export_import_{realism}_s": round(time.perf_counter() - t, 1)})
    done = _step_times(work)
    timings.update({k: v for k, v in done.items() if k in (f"realism_{realism}_s", f"export_import_{realism}_s")})
    return logged, imp


def _run_variant(name: str, v: Variant, work: Path, native: Path, p: BenchPreset, threads: int, say: Callable[[str], None],
                 reuse_bundle: bool = False, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    from sim.recon.run import train_bundle

    timings: dict[str, float] = {}
    entry: dict[str, Any] = {"realism": v.realism, "overrides": v.overrides, "timings_s": timings}
    logged, imp = _imported(work, native, v.realism, p.seed, say, timings)
    if reuse_bundle and (work / f"bundle-{name}" / "bundle.json").is_file():
        say(f"re-scoring the existing bundle-{name}")
        if previous and previous.get("status") == "ok" and "recon" in previous:  # keep the training run's own record
            entry.update(recon=previous["recon"], rescored=True)
            timings.update({k: x for k, x in previous.get("timings_s", {}).items() if k != "eval_s"})
            entry["trained_at_git_head"] = previous.get("git_head")
        return _score(name, entry, work, native, logged, imp, p, say)
    say(f"recon {name} ({p.recon_preset}{', ' + str(v.overrides) if v.overrides else ''})")
    t = time.perf_counter()
    # every camera, where the reconstructor takes a camera selection (else its default: the first)
    cams = {"camera": "all"} if "camera" in inspect.signature(train_bundle).parameters else {}
    try:
        summary = train_bundle(imp, work / f"bundle-{name}", preset=p.recon_preset, iterations=p.iterations,
                               max_seconds=p.max_train_seconds, overwrite=True, overrides={"num_threads": threads, **v.overrides}, **cams)
    except BundleError as exc:
        if "overrides" not in str(exc):
            raise
        entry.update(status="skipped", reason=f"the reconstructor has no such switch: {exc}")
        return entry
    timings["recon_s"] = round(time.perf_counter() - t, 1)
    entry["recon"] = summary
    entry["iterations_run"] = summary.get("iterations")
    return _score(name, entry, work, native, logged, imp, p, say)


def _score(name: str, entry: dict[str, Any], work: Path, native: Path, logged: Path, imp: Path, p: BenchPreset,
           say: Callable[[str], None]) -> dict[str, Any]:
    from sim.importers.nuscenes_export import DEFAULT_EPOCH_US
    from sim.recon.bundle import load_bundle

    timings = entry["timings_s"]
    if "recon" not in entry:  # a reused bundle: its own record of the training
        entry["recon"] = {**load_bundle(work / f"bundle-{name}").info, "reused": True}
        entry["timings_s"]["recon_s"] = entry["recon"].get("train_seconds")
    entry["iterations_run"] = entry["recon"].get("iterations")
    say(f"eval-recon per camera ({name})")
    t = time.perf_counter()
    entry.update(evaluate_per_camera(load_bundle(work / f"bundle-{name}"), read_log(native), read_log(imp), work / f"eval-{name}", p,
                                     DEFAULT_EPOCH_US, say, logged=read_log(logged) if logged != native else None))
    timings["eval_s"] = round(time.perf_counter() - t, 1)
    entry["status"] = "ok"
    return entry


def _compare(res: dict[str, Any]) -> dict[str, Any]:
    v = res["variants"]

    def s(name: str, key: str) -> float | None:
        e = v.get(name, {})
        return e.get("summary", {}).get(key) if e.get("status") == "ok" else None

    def d(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(a - b, 3)

    def canon(name: str) -> float | None:
        e = v.get(name, {})
        return (e.get("heldout_protocols", {}).get("canonical_vs_clean") or {}).get("mean_heldout_psnr") if e.get("status") == "ok" else None

    out: dict[str, Any] = {"realism_loss_heldout_db": d(s("clean", "mean_heldout_psnr"), s("real_like", "mean_heldout_psnr")),
                           "realism_loss_heldout_db_canonical": d(canon("clean"), canon("real_like"))}
    for abl in ("real_like_no_appearance", "real_like_no_pose_refinement"):
        out[f"{abl}_vs_real_like_heldout_db"] = d(s(abl, "mean_heldout_psnr"), s("real_like", "mean_heldout_psnr"))
    same_town = res["settings"]["town"] == "small" and res["settings"]["seed"] == 0  # the town of the native figure
    nat = res.get("native_single_camera_front_heldout_psnr") if same_town else None
    out["front_vs_native_single_camera_db"] = d(s("clean", "front_heldout_psnr"), nat)
    out.update(_gains(v))
    return out


def _gains(v: dict[str, Any]) -> dict[str, Any]:
    """The realism loss (clean - real_like) and what each mechanism buys (real_like - its
    ablation) on three figures: mean held-out PSNR over cameras (dB), mean 2 m lane-shift PSNR
    (dB) and LiDAR median range error (m, ablation - real_like: positive = the mechanism helps);
    ``iterations_run`` per variant and whether they all match (the differences mean something only
    then)."""

    def fig(name: str) -> dict[str, float | None] | None:
        e = v.get(name, {})
        if e.get("status") != "ok":
            return None
        s = e.get("summary", {})
        return {"heldout_db": s.get("mean_heldout_psnr"), "lane_shift_2m_db": (s.get("mean_lane_shift_psnr") or {}).get("2m"),
                "lidar_median_m": s.get("lidar_median_range_err_m")}

    def diff(a: dict[str, float | None] | None, b: dict[str, float | None] | None) -> dict[str, float | None] | None:
        if a is None or b is None:
            return None
        return {k: None if a[k] is None or b[k] is None else round(float(a[k]) - float(b[k]), 3) * (-1 if k == "lidar_median_m" else 1)
                for k in a}

    its = {n: e.get("iterations_run") for n, e in v.items() if e.get("status") == "ok"}
    return {"realism_loss": diff(fig("clean"), fig("real_like")),
            "mechanism_gain": {"appearance": diff(fig("real_like"), fig("real_like_no_appearance")),
                               "pose_refinement": diff(fig("real_like"), fig("real_like_no_pose_refinement"))},
            "iterations_run": its, "iterations_matched": len(set(its.values())) == 1 and None not in its.values()}


#: the top-level keys a run writes; any other key of an existing ``--out`` is a named section
#: (a run with ``section=``, e.g. an iteration-matched ablation) and every run keeps it
RUN_KEYS = frozenset({"benchmark", "command", "settings", "variants", "machine", "machine_earlier", "native_single_camera_front_heldout_psnr",
                      "targets", "synth_s", "comparisons"})


def _read_doc(path: Path | None) -> dict[str, Any]:
    """The JSON object in ``path`` ({} when missing or not a JSON object: it is rewritten)."""
    import json

    if path is None or not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _write(out: Path, res: dict[str, Any], section: str | None, keep_from: tuple[Path, ...], mine: frozenset[str] | None = None) -> None:
    """Write ``res`` to ``out``: as section ``section`` of the file on disk (read again now, the
    rest left as it is), or as the whole file keeping every named section of ``out`` (else of the
    first of ``keep_from`` that has it: the published file a ``--publish`` run will replace).
    With ``mine`` (a merging run: the variants it ran), the variants of the same settings another
    run wrote to ``out`` meanwhile are kept too, so runs of different variants can share one file."""
    disk = _read_doc(out)
    if mine is not None:
        now = disk.get(section, {}) if section is not None else disk
        if isinstance(now, dict) and now.get("settings") == res["settings"] and isinstance(now.get("variants"), dict):
            res["variants"] = {**res["variants"], **{n: e for n, e in now["variants"].items() if n not in mine}}
            res["comparisons"] = _compare(res)
    if section is not None:
        doc = disk
        doc[section] = res
    else:
        doc = dict(res)
        for f in (out, *keep_from):
            for k, x in _read_doc(f).items():
                if k not in RUN_KEYS and k not in doc:
                    doc[k] = x
    write_json_atomic(out, doc)


def run_recon_roundtrip(
    *,
    work: str | os.PathLike[str],
    out: str | os.PathLike[str] | None,
    budget: str = "quick",
    variants: tuple[str, ...] = DEFAULT_VARIANTS,
    threads: int = 1,
    merge: bool = True,
    reuse_bundles: bool = False,
    iterations: int | None = None,
    section: str | None = None,
    keep_sections_from: tuple[str | os.PathLike[str], ...] = (),
    command: str | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark (see the module docstring) for ``variants`` under ``budget`` (a
    :data:`BENCH_PRESETS` name); write the JSON to ``out`` after each variant. With ``merge``, the
    variants of an existing ``out`` of the same settings are kept (so levels can run one at a time);
    with ``reuse_bundles`` a variant whose bundle is already in ``work`` is scored again, not retrained.

    ``iterations`` (iteration-matched runs): every variant trains exactly that many iterations, with
    no wall-clock cap (``settings.iterations`` = N, ``settings.max_train_seconds`` = 0 = no cap,
    ``settings.iterations_matched`` = true); each variant records ``iterations_run``.
    ``section``: the result goes under that top-level key of ``out`` (merged with what is there by
    the same rules) and the rest of the file is left alone. Any top-level key a run does not write
    itself (:data:`RUN_KEYS`) is such a section and is kept by every run, with or without ``merge``
    (also taken from ``keep_sections_from``, e.g. the published file a copy will replace).

    Raises:
        ScenarioError: an unknown budget or variant, an iteration count < 1, a bad section name.
    """
    if budget not in BENCH_PRESETS:
        raise ScenarioError(f"unknown budget {budget!r}; known: {', '.join(BENCH_PRESETS)}", field="budget")
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        raise ScenarioError(f"expected variants from {', '.join(VARIANTS)}, got {', '.join(variants) or 'none'}", field="variants")
    if iterations is not None and iterations < 1:
        raise ScenarioError(f"expected an iteration count >= 1, got {iterations}", field="iterations")
    if section is not None and (section in RUN_KEYS or not section.replace("_", "").isalnum() or not section.isascii()):
        raise ScenarioError(f"expected a section name of letters, digits and '_' other than {', '.join(sorted(RUN_KEYS))}, got {section!r}",
                            field="section")
    p = BENCH_PRESETS[budget]
    if iterations is not None:  # iteration-matched: N iterations, no wall-clock cap (train_bundle: 0 = none)
        p = dataclasses.replace(p, iterations=int(iterations), max_train_seconds=0.0)
    say = echo or log.info
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    settings = {"budget": budget, **dataclasses.asdict(p), "step_s": 0.05, "image_format": "png"}
    if iterations is not None:  # only then: the settings of a capped run stay what they were (--merge compares them)
        settings["iterations_matched"] = True
    settings = json.loads(json.dumps(settings))  # as the file will hold them (tuples -> lists), so --merge can compare
    res: dict[str, Any] = {"benchmark": "recon_roundtrip", "command": command, "settings": settings, "variants": {}}
    keep = tuple(Path(f) for f in keep_sections_from)
    if merge and out is not None:
        old = _read_doc(Path(out))
        old = old.get(section, {}) if section is not None else old
        if isinstance(old, dict) and old.get("settings") == settings and isinstance(old.get("variants"), dict):
            res["variants"] = old["variants"]
            res["machine_earlier"] = [*old.get("machine_earlier", []), old.get("machine")] if isinstance(old.get("machine_earlier"), list) \
                else [m for m in (old.get("machine_earlier"), old.get("machine")) if m]
    res["machine"] = machine_info(git_paths=("sim/recon",))
    res["native_single_camera_front_heldout_psnr"] = _native_front()
    res["targets"] = TARGETS
    native = _native_log(work, p, say)
    res["synth_s"] = _step_times(work).get("synth_s")
    for name in variants:
        t = time.perf_counter()
        start = machine_info(git_paths=("sim/recon",))  # per variant: runs merged into one file may come from different heads and loads
        entry = _run_variant(name, VARIANTS[name], work, native, p, threads, say, reuse_bundles, res["variants"].get(name))
        entry["wall_s"] = round(time.perf_counter() - t, 1)
        # the whole chain for this variant (data steps included even when reused from the work folder)
        entry["roundtrip_s"] = round((res["synth_s"] or 0.0) + sum(entry["timings_s"].values()), 1)
        entry["git_head"], entry["git_dirty_recon"] = start["git_head"], start["git_dirty"]
        entry["load_average_at_start"] = start["load_average"]
        entry["load_average_at_end"] = load_average()
        res["variants"][name] = entry
        res["comparisons"] = _compare(res)
        if out is not None:
            _write(Path(out), res, section, keep, frozenset(variants[: variants.index(name) + 1]) if merge else None)
    res["comparisons"] = _compare(res)
    if out is not None:
        _write(Path(out), res, section, keep, frozenset(variants) if merge else None)
    return res
