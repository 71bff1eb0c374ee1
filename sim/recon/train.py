"""Batches, losses and a plain training loop for :class:`~sim.recon.scene.SceneModel` (no nerfstudio).

The nerfstudio method (:mod:`sim.recon.method`) uses :func:`sample_batch`, :func:`forward_batch`
and :func:`compute_losses` from here, so ``ns-train`` and :func:`fit` optimise the same objective.

A batch holds ``patches`` camera patches of ``patch`` x ``patch`` low-resolution rays (the CNN
decoder sees them as small images, ``patch * upsample`` full-resolution pixels each) and
``lidar_rays`` LiDAR rays from ``lidar_sweeps`` random training sweeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from sim.recon.data import ReconData
from sim.recon.scene import ActorState, SceneModel

__all__ = ["BatchSpec", "LossWeights", "compute_losses", "fit", "forward_batch", "psnr", "sample_batch"]


@dataclass(frozen=True)
class BatchSpec:
    """Batch sizes: camera patches (count and low-res edge) and LiDAR rays (count, sweeps)."""

    patches: int = 4
    patch: int = 12
    lidar_rays: int = 1024
    lidar_sweeps: int = 4


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (RGB MSE is weighted 1)."""

    rgb_aux: float = 0.5
    depth: float = 0.02
    line_of_sight: float = 0.05
    intensity: float = 0.05
    drop: float = 0.01


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR in dB of images in [0, 1]."""
    mse = F.mse_loss(a, b).item()
    return 10.0 * math.log10(1.0 / max(mse, 1e-10))


def sample_batch(data: ReconData, spec: BatchSpec, gen: torch.Generator, frames: list[int] | None = None, sweeps: list[int] | None = None) -> dict[str, Tensor]:
    """Draw a training batch (defaults: the training frames and sweeps of ``data``)."""
    s = data.cfg.upsample
    frames = data.train_frames if frames is None else frames
    sweeps = data.train_sweeps if sweeps is None else sweeps
    H, W, p = data.height, data.width, spec.patch
    hmax, wmax = H // s - p, W // s - p
    if hmax < 0 or wmax < 0:
        raise ValueError(f"patch {p} x upsample {s} does not fit a {W}x{H} image")
    fi = torch.randint(len(frames), (spec.patches,), generator=gen)
    ys = torch.randint(hmax + 1, (spec.patches,), generator=gen)
    xs = torch.randint(wmax + 1, (spec.patches,), generator=gen)
    origins, dirs, gts, fr_list = [], [], [], []
    jj, ii = torch.meshgrid(torch.arange(p, dtype=torch.float32), torch.arange(p, dtype=torch.float32), indexing="xy")
    for k in range(spec.patches):
        f = frames[int(fi[k])]
        fr_list.append(f)
        c2w, K = data.c2w[f], data.K[f]
        u = (xs[k] + jj) * s + s * 0.5
        v = (ys[k] + ii) * s + s * 0.5
        d = torch.stack([(u - K[0, 2]) / K[0, 0], -(v - K[1, 2]) / K[1, 1], -torch.ones_like(u)], -1).reshape(-1, 3)
        d = F.normalize(d, dim=-1) @ c2w[:3, :3].T
        dirs.append(d)
        origins.append(c2w[:3, 3].expand_as(d))
        y0, x0 = int(ys[k]) * s, int(xs[k]) * s
        gts.append(data.image_float(f)[y0 : y0 + p * s, x0 : x0 + p * s])
    batch: dict[str, Tensor] = {
        "cam_origins": torch.cat(origins), "cam_dirs": torch.cat(dirs),
        "cam_rgb": torch.stack(gts),  # (P, p*s, p*s, 3)
        "cam_frames": torch.tensor(fr_list),
    }
    pose = [data.cam_pose[fr_list]]
    valid = [data.cam_valid[fr_list]]
    group = [torch.arange(spec.patches).repeat_interleave(p * p)]
    if spec.lidar_rays > 0 and data.lidar_range is not None and sweeps:
        assert data.s2w is not None and data.lidar_dirs is not None and data.lidar_intensity is not None
        assert data.lidar_pose is not None and data.lidar_valid is not None
        ns = min(spec.lidar_sweeps, len(sweeps))
        si = [sweeps[int(i)] for i in torch.randint(len(sweeps), (ns,), generator=gen)]
        per = spec.lidar_rays // ns
        lo, ld, lr, li = [], [], [], []
        for j in si:
            ri = torch.randint(data.lidar_dirs.shape[1], (per,), generator=gen)
            m = data.s2w[j]
            d = data.lidar_dirs[j, ri] @ m[:3, :3].T
            ld.append(d)
            lo.append(m[:3, 3].expand_as(d))
            lr.append(data.lidar_range[j, ri])
            li.append(data.lidar_intensity[j, ri])
        batch.update({"lidar_origins": torch.cat(lo), "lidar_dirs": torch.cat(ld), "lidar_range": torch.cat(lr), "lidar_intensity": torch.cat(li)})
        pose.append(data.lidar_pose[si])
        valid.append(data.lidar_valid[si])
        group.append(spec.patches + torch.arange(ns).repeat_interleave(per))
    A = data.actor_size.shape[0]
    batch["actor_pose"] = torch.cat(pose)
    batch["actor_valid"] = torch.cat(valid)
    batch["actor_size"] = data.actor_size
    batch["actor_slot"] = torch.arange(A)
    batch["group"] = torch.cat(group)
    batch["patch"] = torch.tensor(p)
    return batch


def forward_batch(scene: SceneModel, batch: dict[str, Tensor], gen: torch.Generator | None) -> dict[str, Tensor]:
    """Render a batch: camera patches through the CNN decoder, LiDAR rays through the LiDAR head."""
    o = [batch["cam_origins"]]
    d = [batch["cam_dirs"]]
    nc = batch["cam_origins"].shape[0]
    if "lidar_origins" in batch:
        o.append(batch["lidar_origins"])
        d.append(batch["lidar_dirs"])
    actors = ActorState(batch["actor_slot"], batch["actor_pose"], batch["actor_size"], batch["actor_valid"])
    r = scene.render_rays(torch.cat(o), torch.cat(d), actors, batch["group"], generator=gen)
    p = int(batch["patch"])
    P = nc // (p * p)
    feat = r["feat"][:nc].reshape(P, p, p, -1).permute(0, 3, 1, 2)
    rgb, aux = scene.decode(feat)
    out = {"rgb": rgb.permute(0, 2, 3, 1), "rgb_aux": aux.permute(0, 2, 3, 1), "acc_cam": r["acc"][:nc]}
    if "lidar_origins" in batch:
        li = {k: v[nc:] for k, v in r.items()}
        out.update({f"lidar_{k}": v for k, v in scene.lidar_outputs(li).items()})
        out["lidar_t"], out["lidar_w"] = li["t"], li["w"]
    return out


def compute_losses(scene: SceneModel, out: dict[str, Tensor], batch: dict[str, Tensor], w: LossWeights) -> dict[str, Tensor]:
    """Loss terms (each already weighted): ``rgb`` (MSE), ``rgb_aux`` (low-res MSE), ``depth`` (L1 m
    on LiDAR returns), ``line_of_sight`` (weight in front of the return), ``intensity`` (MSE),
    ``drop`` (BCE of the ray-drop logit)."""
    s = scene.cfg.upsample
    gt = batch["cam_rgb"]
    losses = {"rgb": F.mse_loss(out["rgb"], gt)}
    gt_lo = F.avg_pool2d(gt.permute(0, 3, 1, 2), s).permute(0, 2, 3, 1)
    losses["rgb_aux"] = w.rgb_aux * F.mse_loss(out["rgb_aux"], gt_lo)
    if "lidar_range" in out:
        r = batch["lidar_range"]
        hit = r > 0
        if hit.any():
            losses["depth"] = w.depth * (out["lidar_range"][hit] - r[hit]).abs().mean()
            eps = torch.clamp(0.02 * r[hit], min=0.2)
            front = out["lidar_t"][hit] < (r[hit] - eps)[:, None]
            losses["line_of_sight"] = w.line_of_sight * (out["lidar_w"][hit] * front).sum(1).mean()
            losses["intensity"] = w.intensity * F.mse_loss(out["lidar_intensity"][hit], batch["lidar_intensity"][hit])
        losses["drop"] = w.drop * F.binary_cross_entropy_with_logits(out["lidar_drop_logit"], (~hit).float())
    return losses


def make_optimizer(scene: SceneModel, lr_grid: float = 1e-2, lr_net: float = 3e-3) -> torch.optim.Optimizer:
    g = scene.param_groups()
    return torch.optim.Adam([{"params": g["grids"], "lr": lr_grid}, {"params": g["networks"], "lr": lr_net}], eps=1e-15, fused=True)


def fit(scene: SceneModel, data: ReconData, iters: int, spec: BatchSpec | None = None, weights: LossWeights | None = None, seed: int = 0) -> list[dict[str, float]]:
    """Train ``scene`` on ``data`` for ``iters`` steps (plain loop, deterministic for a seed).
    Returns per-step loss values."""
    spec = spec or BatchSpec()
    weights = weights or LossWeights()
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(scene)
    hist = []
    scene.train()
    for _ in range(iters):
        batch = sample_batch(data, spec, gen)
        out = forward_batch(scene, batch, gen)
        losses = compute_losses(scene, out, batch, weights)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        opt.step()
        hist.append({k: float(v.detach()) for k, v in losses.items()})
    scene.eval()
    return hist
