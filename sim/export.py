"""Export episodes (from any run, mined or generated) to training shards.

Every episode is re-simulated deterministically (same scenario, seed, planner and parameters as
when it was found), the expert (``pdm_closed`` by default) is queried on every state the planner
visited (DAgger-style relabelling: the label is what the expert would have done *there*), and one
shard is written per episode.

**Shard format** (version 1): ``OUT/<source>-<episode_id>.npz`` (numpy ``.npz``, written
atomically, readable with ``np.load(..., allow_pickle=False)``), T = steps, N = actor slots:

=================  ==========================  =================================================
key                shape, dtype                content
=================  ==========================  =================================================
``bev``            (T, H, W, C) uint8          ``bev`` observation (drivable, route, actors, ego)
``ego``            (T, 3) float32              speed (m/s), acceleration (m/s²), steering (rad)
``action``         (T, 2) float32              the **expert's** action: accel (m/s²), steer (rad)
``weight``         (T,) float32                per-sample weight (the miner's priority)
``planner_action`` (T, 2) float32              the action the planner under test applied
``state``          (T, D) float32              ``state`` observation (route-relative)
``t_s``            (T,) float64                time since the episode start, s
``ego_pose``       (T, 4) float64              ego x, y (m), yaw (rad), speed (m/s), world frame
``boxes``          (T, N, 7) float32           actors: x, y (m), yaw (rad), length, width,
                                               height (m), speed (m/s), world frame
``box_valid``      (T, N) bool                 which actor slots exist
``box_ids``        (N,) str                    actor ids
``box_cls``        (N,) str                    actor classes
``camera``         (T, K, H, W, 3) uint8       camera images (``camera`` in kinds), K cameras of
                                               the rig, **anonymised** (:mod:`sim.anonymize`)
``lidar``          (T, B, A, 2) float32        range (m, 0 = no return) and intensity per beam
                                               and azimuth column (``lidar`` in kinds)
``meta``           () str                      JSON: format, episode id, scenario, file, seed,
                                               planner, expert, trigger, metrics, cameras,
                                               anonymised region count
=================  ==========================  =================================================

``bev``, ``ego``, ``action`` and ``weight`` are exactly the keys of the behaviour-cloning shards of
:mod:`sim.planning.training`, so an imitation trainer (``loopdrive train bc --episodes OUT``) trains
on an export directly; :func:`load_training_set` loads several export folders. ``OUT/manifest.json`` lists
the shards. Camera images go through the anonymiser *before* anything is written: licence plates
and pedestrians' faces, located from the actors' boxes, are pixelated and blurred.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sim.errors import ScenarioError
from sim.fsutil import atomic_savez, atomic_write_text
from sim.render.base import ArrayWorld

__all__ = [
    "FORMAT_VERSION",
    "ExportItem",
    "export_episodes",
    "items_from_files",
    "items_from_mined",
    "load_shard",
    "load_training_set",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
KINDS = ("bev", "state", "camera", "lidar")


@dataclass(frozen=True)
class ExportItem:
    """One episode to export: the episode (``sim.scenario.Episode``), the planner that drove it,
    why it was selected (``trigger``), its priority ``weight``, its metrics, and a ``source`` label
    (``mined``, ``generated``, ...)."""

    episode: Any
    planner: str
    planner_params: Mapping[str, Any] = field(default_factory=dict)
    trigger: str = ""
    weight: float = 1.0
    metrics: Mapping[str, float] = field(default_factory=dict)
    source: str = "run"


def items_from_mined(mined: Iterable[Any], *, horizon_from_steps: bool = True) -> list[ExportItem]:
    """Export items of episodes selected by :func:`sim.mining.mine` (their scenario files must
    still exist)."""
    from sim.scenario import expand

    out = []
    for m in mined:
        if not m.file or not Path(m.file).is_file():
            log.warning("mined episode %s has no scenario file; skipped", m.episode_id)
            continue
        eps = [e for e in expand(m.file) if e.episode_id == m.episode_id] or [e for e in expand(m.file) if e.seed == m.seed]
        if not eps:
            continue
        ep = eps[0]
        if horizon_from_steps and m.steps > 0:
            ep = ep.with_horizon(m.steps * ep.spec.dt_s)
        out.append(ExportItem(ep, m.planner, dict(m.planner_params), ",".join(m.triggers), float(m.weight), dict(m.metrics), "mined"))
    return out


def items_from_files(files: Iterable[str | os.PathLike[str]], *, planner: str | None = None, planner_params: Mapping[str, Any] | None = None, trigger: str = "generated", source: str = "generated", weight: float = 1.0) -> list[ExportItem]:
    """Export items of scenario files (e.g. generated corner cases), one per episode, driven by
    their own planner unless ``planner`` is given; every step gets the training ``weight``."""
    from sim.scenario import expand

    out = []
    for f in files:
        for ep in expand(f):
            name = planner or ep.planner
            prm = dict(planner_params if planner_params is not None else (ep.planner_params if name == ep.planner else {}))
            out.append(ExportItem(ep, name, prm, trigger, float(weight), {}, source))
    return out


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)


def _worlds(rec: Any, compiled: Any) -> list[ArrayWorld]:
    T = len(rec.t_s)
    n = len(rec.actor_ids)
    ids = ("ego", *rec.actor_ids)
    cls = ("car", *rec.actor_cls)
    L = np.asarray(compiled.length[: n + 1], np.float64)
    W = np.asarray(compiled.width[: n + 1], np.float64)
    H = np.asarray(compiled.height[: n + 1], np.float64)
    out = []
    for i in range(T):
        out.append(ArrayWorld(
            t_us=int(compiled.t0_us + round(rec.t_s[i] * 1e6)), ids=ids, cls=cls,
            x=np.r_[rec.ego_xy[i, 0], rec.actor_xy[i, :, 0]], y=np.r_[rec.ego_xy[i, 1], rec.actor_xy[i, :, 1]],
            z=np.zeros(n + 1), yaw=np.r_[rec.ego_yaw[i], rec.actor_yaw[i]], length=L, width=W, height=H,
            valid=np.r_[True, rec.actor_valid[i]].astype(bool),
        ))  # fmt: skip
    return out


def _range_image(scan: Any, beams: int, az: int) -> NDArray[np.float32]:
    img = np.zeros((beams * az, 2), np.float32)
    if scan is not None and len(scan.ray_index):
        img[scan.ray_index, 0] = np.linalg.norm(scan.points, axis=1)
        img[scan.ray_index, 1] = scan.intensity
    return img.reshape(beams, az, 2)


def export_episodes(
    items: Sequence[ExportItem],
    out: str | os.PathLike[str],
    *,
    kinds: Sequence[str] = ("bev", "state"),
    expert: str = "pdm_closed",
    expert_params: Mapping[str, Any] | None = None,
    rig: Any = None,
    max_steps: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Write one shard per item into ``out`` (format in the module docstring); existing shards are
    kept, so an interrupted export resumes. Returns the shard paths (failed re-simulations are
    skipped with a warning).

    Args:
        kinds: observation kinds to store besides the labels: ``bev`` and ``state`` always come
            along (training needs them); ``camera`` and ``lidar`` are rendered by the scenario's
            render backend (``scene.renderer``, default ``mesh``) with ``rig``.
        expert: planner that relabels every step (``expert_params`` its parameters).
        rig: sensor rig for camera/LiDAR (default ``sim.sensors.default_rig()``).
    """
    from sim import engine
    from sim.anonymize import anonymize, project_boxes, sensitive_boxes
    from sim.batch import _load_scene
    from sim.planning import PLANNERS, make_planner
    from sim.rollout import run_planner_episode
    from sim.sensors import default_rig

    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ScenarioError(f"expected export kinds among {list(KINDS)}, got {bad}", field="kinds")
    if max_steps is not None and max_steps < 1:
        raise ScenarioError(f"expected a positive number of steps, got {max_steps}", field="max_steps")
    for name in dict.fromkeys([expert, *(it.planner for it in items)]):
        PLANNERS.get(name)  # an unknown name fails before the output folder is made
    rig = rig or default_rig()
    outp = Path(out)
    if outp.exists() and not outp.is_dir():
        raise ScenarioError("expected a folder for the training shards, got a file", file=outp)
    outp.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    renderers: dict[Any, Any] = {}
    for k, it in enumerate(items):
        ep = it.episode
        dst = outp / f"{_safe(it.source)}-{_safe(ep.episode_id)}.npz"
        if not dst.exists():
            compiled = engine.compile_scenario(ep.spec, _load_scene(engine, ep))
            pl = make_planner(it.planner, **dict(it.planner_params))
            pk = [x for x in pl.observation_spec().kinds]
            res = run_planner_episode(
                ep.spec, pl, ep.seed, observation=tuple(dict.fromkeys([*pk, "bev", "state"])), compiled=compiled,
                record_observations=True, extra_kinds=("bev", "state", "ego"), expert=make_planner(expert, **dict(expert_params or {})),
                max_steps=max_steps, rig=rig,
            )  # fmt: skip
            if res.record is None or not res.observations:
                log.warning("episode %s could not be re-simulated (%s); skipped", ep.episode_id, res.error)
            else:
                _write_shard(dst, it, res, compiled, kinds, rig, expert, renderers, anonymize, project_boxes, sensitive_boxes)
        if dst.exists():
            written.append(dst)
        if progress is not None:
            progress(k + 1, len(items))
    for r in renderers.values():
        r.close()
    _write_manifest(outp)
    return written


def _write_shard(dst: Path, it: ExportItem, res: Any, compiled: Any, kinds: Sequence[str], rig: Any, expert: str,
                 renderers: dict[Any, Any], anonymize: Any, project_boxes: Any, sensitive_boxes: Any) -> None:  # fmt: skip
    from sim.planning.observe import ego_features

    obs = res.observations
    T = len(obs)
    rec = res.record
    worlds = _worlds(rec, compiled)[:T]
    n = len(rec.actor_ids)
    arrays: dict[str, NDArray[Any]] = {
        "bev": np.stack([o["bev"] for o in obs]).astype(np.uint8),
        "ego": np.stack([ego_features(o["ego"]) for o in obs]).astype(np.float32),
        "action": np.stack([o["expert_action"] for o in obs]).astype(np.float32),
        "weight": np.full(T, float(it.weight), np.float32),
        "planner_action": res.actions[:T].astype(np.float32),
        "state": np.stack([np.asarray(o["state"], np.float32).reshape(-1) for o in obs]),
        "t_s": np.asarray(rec.t_s[:T], np.float64),
        "ego_pose": np.column_stack([rec.ego_xy[:T], rec.ego_yaw[:T], rec.ego_speed[:T]]).astype(np.float64),
        "boxes": np.concatenate([
            rec.actor_xy[:T], rec.actor_yaw[:T, :, None],
            np.broadcast_to(np.stack([compiled.length[1 : n + 1], compiled.width[1 : n + 1], compiled.height[1 : n + 1]], -1)[None], (T, n, 3)),
            rec.actor_speed[:T, :, None],
        ], axis=-1).astype(np.float32),
        "box_valid": np.asarray(rec.actor_valid[:T], bool),
        "box_ids": np.array([str(i) for i in rec.actor_ids], dtype=str),
        "box_cls": np.array([str(c) for c in rec.actor_cls], dtype=str),
    }
    n_regions = 0
    if "camera" in kinds or "lidar" in kinds:
        from sim.render.base import RENDERERS

        name = getattr(it.episode.spec.scene, "renderer", "mesh") or "mesh"
        key = (name, id(compiled.scene))
        if key not in renderers:
            renderers.clear()
            renderers[key] = RENDERERS.get(name)(compiled.scene)
        r = renderers[key]
        cams, lid = [], []
        for w in worlds:
            frame = r.render(w, rig)
            if "camera" in kinds:
                imgs = []
                for cam in rig.cameras:
                    ci = frame.cameras[cam.name]
                    rects = project_boxes(sensitive_boxes(w), ci.c2w, ci.K, cam.width, cam.height)
                    n_regions += len(rects)
                    imgs.append(anonymize(ci.rgb, rects))
                cams.append(np.stack(imgs))
            if "lidar" in kinds and rig.lidar is not None:
                lid.append(_range_image(frame.lidar, rig.lidar.beams, rig.lidar.azimuth_steps))
        if cams:
            arrays["camera"] = np.stack(cams).astype(np.uint8)
        if lid:
            arrays["lidar"] = np.stack(lid).astype(np.float32)
    ep = it.episode
    meta = {
        "format": FORMAT_VERSION, "episode_id": ep.episode_id, "scenario": ep.scenario, "file": ep.file, "seed": int(ep.seed),
        "planner": it.planner, "expert": expert, "trigger": it.trigger, "source": it.source, "weight": float(it.weight),
        "metrics": {k: (v if isinstance(v, float) and math.isfinite(v) else None) for k, v in dict(it.metrics).items()},
        "termination": res.termination, "steps": T, "cameras": [c.name for c in rig.cameras] if "camera" in kinds else [],
        "anonymised_regions": n_regions, "kinds": sorted(set(kinds) | {"bev", "state"}),
    }  # fmt: skip
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_savez(dst, arrays)


def _write_manifest(outp: Path) -> None:
    shards = []
    for p in sorted(outp.glob("*.npz")):
        try:
            meta = load_shard(p, arrays=False)["meta"]
        except ScenarioError:
            continue
        shards.append({"file": p.name, **{k: meta.get(k) for k in ("episode_id", "scenario", "trigger", "source", "steps", "termination")}})
    doc = {"format": FORMAT_VERSION, "shards": shards}
    atomic_write_text(outp / "manifest.json", json.dumps(doc, indent=1))


def load_shard(path: str | os.PathLike[str], *, arrays: bool = True) -> dict[str, Any]:
    """One shard as a dict of arrays plus ``meta`` (the parsed JSON); ``arrays=False`` reads only
    ``meta``. Raises :class:`ScenarioError` for a file that is not a version-1 shard."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            out: dict[str, Any] = {k: z[k] for k in z.files if k != "meta"} if arrays else {}
    except (OSError, ValueError, KeyError) as exc:
        raise ScenarioError(f"expected a loopdrive training shard ({exc})", file=p) from None
    if meta.get("format") != FORMAT_VERSION:
        raise ScenarioError(f"expected shard format {FORMAT_VERSION}, got {meta.get('format')!r}", file=p, field="meta.format")
    out["meta"] = meta
    return out


def load_training_set(paths: Iterable[str | os.PathLike[str]], *, trainer: str = "bc") -> Any:
    """The training set of the imitation ``trainer`` (:data:`sim.planning.training.TRAINERS`;
    ``bc``: ``agents.bc.BCDataset``) of shard files or folders (exports and ``sim.collect`` expert
    collections can be mixed: they share ``bev``/``ego``/``action``/``weight``)."""
    from sim.planning.training import ImitationTrainer, get_trainer

    return get_trainer(trainer, ImitationTrainer).load_dataset(list(paths))
