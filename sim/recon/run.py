"""Train a scene from a drive log with nerfstudio's trainer and write a bundle (``loopdrive recon``).

:func:`train_bundle` builds the same :class:`~nerfstudio.engine.trainer.TrainerConfig` that
``ns-train loopdrive-recon[-quick]`` uses, runs it in-process (nerfstudio outputs under
``OUT/nerfstudio/`` so ``ns-eval``/``ns-render`` also work on it) and saves the scene bundle to
``OUT``.

nerfstudio's ``config.yml`` is a YAML-serialised TrainerConfig that only PyYAML's unsafe loader
reads, so loopdrive never reads it back: the final file is dumped from the TrainerConfig still in
memory (its ``output_dir`` pointing into the bundle), written over whatever the staging folder
holds by then, and its sha256 is recorded in ``bundle.json`` (``nerfstudio_config``) for
:func:`sim.recon.bundle.nerfstudio_config` to check before anything hands it to nerfstudio.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sim.errors import BundleError
from sim.fsutil import atomic_write_text, replace_dir
from sim.log import DriveLog, validate_log

__all__ = ["train_bundle"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _own_event_writers() -> Iterator[None]:
    """nerfstudio keeps its event writers in a module-level list: close and drop those a training
    adds when it ends, or a second training in the same process also writes to the first one's
    (by then moved) folder."""
    from nerfstudio.utils import writer as ns_writer

    n = len(ns_writer.EVENT_WRITERS)
    try:
        yield
    finally:
        for w in ns_writer.EVENT_WRITERS[n:]:
            if hasattr(w, "tb_writer"):
                w.tb_writer.close()
        del ns_writer.EVENT_WRITERS[n:]
        ns_writer.EVENT_STORAGE.clear()


@contextlib.contextmanager
def _quiet_nerfstudio() -> Iterator[None]:
    """Silence nerfstudio's own console while it trains: it prints the staging folder's paths
    ("Saving config to", "Training Finished"), which no longer exist once the output is moved into
    the bundle; :func:`train_bundle` logs the final paths instead."""
    from nerfstudio.utils.rich_utils import CONSOLE

    was = CONSOLE.quiet
    CONSOLE.quiet = True
    try:
        yield
    finally:
        CONSOLE.quiet = was


def train_bundle(
    log_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    preset: str = "quick",
    iterations: int | None = None,
    max_seconds: float | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    overrides: dict[str, Any] | None = None,
    camera: str | None = None,
) -> dict[str, Any]:
    """Train ``preset`` (``quick``/``full``) on a drive log and write the bundle to ``out``.

    Args:
        iterations: override the preset's iteration count. max_seconds: wall-clock training budget
            in seconds (training stops early when it is spent); ``None`` keeps the preset's own cap
            (quick: 540 s, full: 3300 s), ``0`` trains every iteration.
        progress: called as ``progress(step, total)`` after each iteration (``total``: the
            iteration count, or under ``max_seconds`` the step the budget is expected to reach).
        overrides: model- or datamanager-config field overrides (e.g. ``{"upsample": 2}``,
            ``{"virtual_patches": 2}``, ``{"appearance": False}``, ``{"refine_ego": True}``).
        camera: the cameras to train on: one name, a comma-separated list or ``all`` (None: the
            rig's first; :mod:`sim.recon.split`).

    Returns:
        A summary: iterations run, training seconds, bundle path, nerfstudio config path.

    Raises:
        LogFormatError: the log fails the full check of :func:`sim.log.validate_log` (every file it
            will read), raised before any folder is made or nerfstudio is imported.
        BundleError: a bad preset, ``out`` or override. On any failure nothing is left behind:
            the staging folder ``.OUT.nerfstudio`` and any parent folder this call made are removed.
    """
    dl = validate_log(log_dir)  # full check of all it reads, before any folder or heavy import
    out = Path(out)
    made = _missing_parents(out)
    work = out.parent / f".{out.name}.nerfstudio"
    fresh = not os.path.lexists(work)
    try:
        return _train_bundle(dl, out, work, preset=preset, iterations=iterations, max_seconds=max_seconds, seed=seed,
                             overwrite=overwrite, progress=progress, overrides=overrides, camera=camera)
    except BaseException:
        if fresh and os.path.lexists(work):
            shutil.rmtree(work, ignore_errors=True)
        for d in made:  # innermost first; only folders still empty
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def _missing_parents(out: Path) -> list[Path]:
    """The ancestors of ``out`` that do not exist yet, innermost first."""
    missing = []
    for d in out.absolute().parents:
        if os.path.lexists(d):
            break
        missing.append(d)
    return missing


def _train_bundle(
    dl: DriveLog,
    out: Path,
    work: Path,
    *,
    preset: str,
    iterations: int | None,
    max_seconds: float | None,
    seed: int,
    overwrite: bool,
    progress: Callable[[int, int], None] | None,
    overrides: dict[str, Any] | None,
    camera: str | None = None,
) -> dict[str, Any]:
    """:func:`train_bundle` on a validated log, staging nerfstudio's output in ``work``."""
    from sim.recon.bundle import save_bundle
    from sim.recon.data import check_trainable
    from sim.recon.method import make_trainer_config
    from sim.recon.presets import PRESETS

    log_dir = dl.root
    if preset not in PRESETS:
        raise BundleError(f"expected a preset in {sorted(PRESETS)}, got {preset!r}", field="preset")
    if os.path.lexists(out) and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise BundleError("expected an empty or new folder (pass --overwrite to replace it)", file=out)
    from sim.recon.split import select_cameras

    cams = select_cameras(dl, camera or None)  # LogFormatError for a camera not in the rig, before any folder
    cfg = make_trainer_config(preset, data=Path(log_dir), iterations=iterations, multi_camera=len(cams) > 1)
    parser = cfg.pipeline.datamanager.dataparser
    if camera:
        parser.camera = camera
    check_trainable(dl, parser.camera or dl.cameras[0], parser.eval_every)  # before any folder is made
    cfg.pipeline.model.seed = seed
    cfg.pipeline.datamanager.seed = seed
    if max_seconds is not None:
        cfg.pipeline.model.max_train_seconds = float(max_seconds)
    for k, v in (overrides or {}).items():
        target = next((c for c in (cfg.pipeline.model, cfg.pipeline.datamanager) if hasattr(c, k)), None)
        if target is None or k in ("data", "dataparser"):
            raise BundleError(f"expected a model or datamanager setting, got {k!r}", field="overrides")
        setattr(target, k, v)
    cfg.output_dir = work
    cfg.experiment_name = "scene"
    cfg.timestamp = "run"
    cfg.logging.local_writer.enable = False
    cfg.logging.profiler = "none"
    with _quiet_nerfstudio():
        cfg.save_config()
    ns_text = _config_text(cfg, out / "nerfstudio")  # the final config.yml, from memory
    with _own_event_writers(), _quiet_nerfstudio():
        trainer = cfg.setup(local_rank=0, world_size=1)
        trainer.setup()
        model = trainer.pipeline.model
        total = cfg.max_num_iterations
        steps = [0]

        def hook(step: int) -> None:
            steps[0] = step + 1
            if progress is not None:
                progress(step + 1, model.fitted_decay_steps or total)

        model.progress_hook = hook
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    info = {"preset": preset, "multi_camera": len(cams) > 1, "iterations": steps[0], "train_seconds": round(seconds, 2), "seed": seed,
            "configured_iterations": total, "lr_decay_steps": model.fitted_decay_steps or total,
            "nerfstudio_config": str(out / "nerfstudio" / "scene" / cfg.method_name / "run" / "config.yml")}
    data = model.data
    camera = data.cameras[0] if data.cameras else dl.frames[data.train_frames[0]].camera
    info.update({"camera": camera, "cameras": list(data.cameras or [camera]), "eval_every": int(cfg.pipeline.datamanager.dataparser.eval_every),
                 "train_frames": len(data.train_frames), "train_sweeps": len(data.train_sweeps),
                 "appearance": model.scene.appearance is not None, "appearance_cameras": list(data.cameras),
                 "refine_actors": bool(model.config.refine_actors), "refine_ego": bool(model.config.refine_ego),
                 "refine_time": bool(model.config.refine_time),
                 "camera_time_offsets_ms": dict(zip(data.cameras, model.refiner.time_offsets_ms(), strict=False)) if model.refiner else {},
                 "lidar_motion_compensation": bool(cfg.pipeline.datamanager.lidar_motion_compensation)})
    dl = dataclasses.replace(dl, tracks=data.log.tracks)  # as trained: ends extended to the sensors (sim.recon.data)
    refiner = model.refiner
    if refiner is not None:  # the bundle's tracks are the refined ones (renders place actors there)
        dl = dataclasses.replace(dl, ego=refiner.refined_ego(dl.ego), tracks=tuple(refiner.refined_tracks(dl.tracks)))
    # the config nerfstudio will load (ns-eval / ns-render): written over the staged one (whatever
    # is there by now), never read back; its sha256 goes into bundle.json
    atomic_write_text(cfg.get_base_dir() / "config.yml", ns_text)
    ns_rel = (Path("nerfstudio") / "scene" / cfg.method_name / "run" / "config.yml").as_posix()
    ns_sha = hashlib.sha256(ns_text.encode("utf-8")).hexdigest()
    save_bundle(out, model.scene, dl, data.actor_ids, camera=camera, info=info, overwrite=overwrite, nerfstudio=(ns_rel, ns_sha))
    # keep nerfstudio's own output (config + checkpoint) inside the bundle folder for ns-eval/ns-render
    replace_dir(work, out / "nerfstudio")
    log.info("trained %d iterations in %.1f s -> %s", steps[0], seconds, out)
    return {**info, "bundle": str(out)}


def _config_text(cfg: Any, output_dir: Path) -> str:
    """nerfstudio's ``config.yml`` text for ``cfg`` (a TrainerConfig) with its ``output_dir`` set to
    ``output_dir`` (where the output is moved once trained), dumped as nerfstudio's ``save_config``
    does. Dumping only: the project never loads this format (it needs an unsafe YAML loader)."""
    import yaml

    staged = cfg.output_dir
    cfg.output_dir = output_dir
    try:
        return yaml.dump(cfg)
    finally:
        cfg.output_dir = staged
