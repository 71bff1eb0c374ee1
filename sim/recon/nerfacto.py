"""nerfacto (nerfstudio's reference method, torch implementation, CPU) trained on a drive log and
rendered through the evaluator's API -- the non-decomposed baseline of ``loopdrive bench recon``.

This is the reconstructor's one door to nerfstudio's built-in methods: callers outside
:mod:`sim.recon` use :func:`train_nerfacto` and :class:`NerfactoScene`, never nerfstudio itself.
nerfacto reads the log through the ``loopdrive-log`` dataparser, so its world is the log's,
translated by ``-centre`` and scaled by ``scale`` (undone here: renders take metric world poses
and return metric depth). nerfacto's LPIPS metric is replaced by the offline-safe stand-in before
it is built (:func:`sim.recon.method.install_offline_lpips`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["NerfactoScene", "train_nerfacto"]


class NerfactoScene:
    """The evaluator's render API over a trained nerfacto pipeline (actors are baked in: edits
    are ignored, which is exactly what a non-decomposed method can do)."""

    def __init__(self, pipeline: Any, dl: Any, info: dict[str, Any]) -> None:
        self.pipeline = pipeline
        self.info = info
        meta = pipeline.datamanager.train_dataparser_outputs
        self.centre = np.asarray(meta.metadata["loopdrive"]["centre"], dtype=np.float64)
        self.scale = float(meta.dataparser_scale)
        self.actors = tuple(type("A", (), {"id": t.id})() for t in dl.tracks)

    def actors_at(self, t_us: int, **_: Any) -> None:
        return None

    @torch.no_grad()
    def render_camera(self, c2w: np.ndarray, K: np.ndarray, width: int, height: int, actors: Any) -> tuple[np.ndarray, np.ndarray]:
        from nerfstudio.cameras.cameras import Cameras, CameraType

        m = np.asarray(c2w, dtype=np.float64).copy()
        m[:3, 3] = (m[:3, 3] - self.centre) * self.scale
        cam = Cameras(camera_to_worlds=torch.from_numpy(m[None, :3, :4]).float(), fx=float(K[0, 0]), fy=float(K[1, 1]),
                      cx=float(K[0, 2]), cy=float(K[1, 2]), width=width, height=height, camera_type=CameraType.PERSPECTIVE)
        model = self.pipeline.model
        model.eval()
        out = model.get_outputs_for_camera(cam)
        rgb = (out["rgb"].clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
        return rgb, out["depth"][..., 0].cpu().numpy() / self.scale


def train_nerfacto(log_dir: Path, work: Path, seconds: float, rays: int = 1024, echo: Callable[[str], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """Train nerfacto (torch implementation, CPU, no mixed precision) on a drive log for a
    wall-clock budget; returns the pipeline and a summary."""
    from nerfstudio.configs.method_configs import method_configs
    from nerfstudio.engine.callbacks import TrainingCallbackLocation

    from sim.recon.method import install_offline_lpips
    from sim.recon.ns_dataparser import LoopdriveLogDataParserConfig

    install_offline_lpips()
    cfg = method_configs["nerfacto"]
    cfg.pipeline.datamanager.data = log_dir
    cfg.pipeline.datamanager.dataparser = LoopdriveLogDataParserConfig(data=log_dir)
    cfg.pipeline.datamanager.train_num_rays_per_batch = rays
    cfg.pipeline.datamanager.eval_num_rays_per_batch = rays
    cfg.pipeline.model.implementation = "torch"
    cfg.pipeline.model.eval_num_rays_per_chunk = 4096
    cfg.mixed_precision = False
    cfg.machine.device_type = "cpu"
    cfg.vis = "tensorboard"
    cfg.output_dir = work
    cfg.experiment_name = "nerfacto"
    cfg.timestamp = "run"
    cfg.logging.local_writer.enable = False
    cfg.logging.profiler = "none"
    cfg.max_num_iterations = 10**6
    if hasattr(cfg.pipeline.datamanager, "max_thread_workers"):
        cfg.pipeline.datamanager.max_thread_workers = 1
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    t0 = time.perf_counter()
    step = 0
    while time.perf_counter() - t0 < seconds:
        trainer.pipeline.train()
        for cb in trainer.callbacks:
            cb.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        trainer.train_iteration(step)
        for cb in trainer.callbacks:
            cb.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
        step += 1
        if echo and step % 50 == 0:
            echo(f"nerfacto step {step}, {time.perf_counter() - t0:.0f} s")
    return trainer.pipeline, {"iterations": step, "train_seconds": round(time.perf_counter() - t0, 1), "rays_per_batch": rays}
