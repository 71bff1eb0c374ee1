"""Every camera of a rig rendered from a scene model in one batched pass (surface mode's fast path).

:func:`sim.recon.sensor_render.render_camera` renders one camera: its low-resolution ray grid goes
through :meth:`~sim.recon.scene.SceneModel.render_rays` (surface hit, field samples, actor fields,
sky), the feature image through the decoder CNN, the RGB through the log's mean appearance. With
six cameras that is six passes of small tensors, each paying the per-call overheads again.
:func:`render_cameras` renders the same images with the rays of all cameras concatenated:

* one ray batch (chunks of :data:`sim.recon.sensor_render.SURFACE_CHUNK` rays) through
  ``render_rays``: one Embree call, one field evaluation, one actor-candidate test for every
  camera (the rays' origins differ, so the candidate test is the multi-origin one: the same rays
  get actor samples, the box test decides as before);
* one decoder call per group of cameras whose feature images have the same size;
* one mean-appearance transform per group of same-sized images (the same transform for every
  camera).

Every ray's result depends only on that ray, so the outputs equal the per-camera renders up to
floating-point summation order (``tests/test_render_multicam.py`` bounds the difference).
World frame, metres; ``c2w`` camera-to-world in OpenGL axes; ``K`` 3x3 full-resolution intrinsics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

__all__ = ["CameraView", "render_cameras"]


@dataclass(frozen=True)
class CameraView:
    """One camera to render: ``c2w`` (4, 4) camera-to-world (OpenGL axes, m), ``K`` (3, 3)
    intrinsics at the output resolution, output ``width`` x ``height`` pixels."""

    c2w: NDArray[np.float64]
    K: NDArray[np.float64]
    width: int
    height: int


@torch.no_grad()
def render_cameras(model: Any, views: Sequence[CameraView], actors: Any, surface: Any = None,
                   chunk: int | None = None) -> list[dict[str, Tensor]]:
    """Render ``views`` with ``model`` (a :class:`sim.recon.scene.SceneModel`) and the actor boxes
    ``actors`` (an :class:`~sim.recon.config.ActorState`, pose group 0 for every ray), background
    from the baked ``surface`` (or volume-rendered when None).

    Returns per view the outputs of :meth:`SceneModel.render_camera` without a frame's appearance
    (the log's mean appearance when the model has embeddings): ``rgb`` (H, W, 3) float in [0, 1],
    ``depth`` (H, W) z-depth (m, ``inf`` where the opacity is below 0.5), ``acc`` and
    ``acc_actor`` (H, W) opacities."""
    from sim.recon.sensor_render import SURFACE_CHUNK, VOLUME_CHUNK, camera_rays

    if not views:
        return []
    s = int(model.cfg.upsample)
    rays = [camera_rays(torch.as_tensor(v.c2w, dtype=torch.float32), torch.as_tensor(v.K, dtype=torch.float32), v.width, v.height, s)
            for v in views]
    counts = [int(r[0].shape[0]) for r in rays]
    o = torch.cat([r[0] for r in rays])
    d = torch.cat([r[1] for r in rays])
    cos = torch.cat([r[2] for r in rays])
    ks = surface.cfg.samples if surface is not None else 1
    chunk = chunk or (SURFACE_CHUNK if surface is not None else VOLUME_CHUNK)
    outs = [model.render_rays(o[i : i + chunk], d[i : i + chunk], actors, surface=surface, surface_samples=ks)
            for i in range(0, o.shape[0], chunk)]
    feat, acc, acc_a = (torch.cat([r[k] for r in outs]) for k in ("feat", "acc", "acc_actor"))
    depth = torch.cat([r["depth"] for r in outs]) * cos
    depth = torch.where(acc > 0.5, depth, torch.full_like(depth, float("inf")))
    starts = np.concatenate([[0], np.cumsum(counts)]).tolist()
    lowres = [(-(-v.height // s), -(-v.width // s)) for v in views]
    rgb: list[Tensor | None] = [None] * len(views)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, hw in enumerate(lowres):
        groups.setdefault(hw, []).append(i)
    for (h, w), idx in groups.items():
        img = torch.stack([feat[starts[i] : starts[i + 1]].reshape(h, w, -1).permute(2, 0, 1) for i in idx])
        dec, _ = model.decode(img)
        for j, i in enumerate(idx):
            rgb[i] = dec[j].permute(1, 2, 0)[: views[i].height, : views[i].width]
    app = getattr(model, "appearance", None)
    if app is not None:  # the log's mean appearance: one transform for all images of a size
        for idx in groups.values():
            same = {tuple(rgb[i].shape) for i in idx}  # type: ignore[union-attr]
            if len(same) == 1:
                out = app.apply_mean(torch.stack([rgb[i] for i in idx])).clamp(0, 1)  # type: ignore[misc]
                for j, i in enumerate(idx):
                    rgb[i] = out[j]
            else:
                for i in idx:
                    rgb[i] = app.apply_mean(rgb[i]).clamp(0, 1)
    res = []
    for i, v in enumerate(views):
        (h, w), a, b = lowres[i], starts[i], starts[i + 1]

        def up(x: Tensor, h: int = h, w: int = w, v: CameraView = v) -> Tensor:
            return x.reshape(h, w).repeat_interleave(s, 0).repeat_interleave(s, 1)[: v.height, : v.width]

        c = rgb[i]
        assert c is not None
        res.append({"rgb": c, "depth": up(depth[a:b]), "acc": up(acc[a:b]), "acc_actor": up(acc_a[a:b])})
    return res
