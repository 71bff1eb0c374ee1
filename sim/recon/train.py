"""Batches, losses and a plain training loop for :class:`~sim.recon.scene.SceneModel` (no nerfstudio).

The nerfstudio method (:mod:`sim.recon.method`) uses :func:`sample_batch`, :func:`forward_batch`
and :func:`compute_losses` from here, so ``ns-train`` and :func:`fit` optimise the same objective.

A batch holds ``patches`` camera patches of ``patch`` x ``patch`` low-resolution rays (the CNN
decoder sees them as small images, ``patch * upsample`` full-resolution pixels each) and
``lidar_rays`` LiDAR rays from ``lidar_sweeps`` random training sweeps, and optionally
``virtual_patches`` patches seen from **virtual cameras**: a training camera moved sideways by up
to ``virtual_shift_m`` (the views a lane change shows). Their target is the training image warped
into the virtual view through the scene's own (detached) depth, where the warped point is visible
from the training camera (:func:`virtual_view_targets`), so novel viewpoints are supervised by
real pixels only.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from sim.recon.appearance import radius2
from sim.recon.config import ActorState, SceneConfig
from sim.recon.data import ReconData
from sim.recon.occupancy import extend_above_lidar, grow_top, lidar_free_space
from sim.recon.pose_refine import PoseRefiner
from sim.recon.scene import SceneModel

__all__ = ["BatchSpec", "LossWeights", "compute_losses", "fit", "forward_batch", "occupancy_above_lidar", "psnr", "sample_batch",
           "virtual_view_targets"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchSpec:
    """Batch sizes: camera patches (count and low-res edge) and LiDAR rays (count, sweeps)."""

    patches: int = 4
    patch: int = 12
    lidar_rays: int = 1024
    lidar_sweeps: int = 4
    virtual_patches: int = 0
    virtual_shift_m: float = 3.0
    #: camera patches drawn from the first camera's frames this many times as often as from another
    #: camera's (several cameras; 1: every training frame equally likely)
    first_camera_weight: float = 1.0


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (RGB MSE is weighted 1)."""

    rgb_aux: float = 0.5
    depth: float = 0.02
    line_of_sight: float = 0.05
    intensity: float = 0.05
    drop: float = 0.01
    virtual: float = 0.5
    #: prior of the appearance embeddings (squared deviations from the identity, mean per row; Appearance.prior)
    appearance: float = 1e-3
    #: priors of the pose refinement (means over track samples of the squared corrections: m^2, rad^2; PoseRefiner.prior)
    actor_prior: float = 1e-3
    ego_prior: float = 1e-3
    #: prior of the cameras' time offsets (mean over cameras of the squared offset, ms^2; PoseRefiner.prior)
    time_prior: float = 1e-8


def occupancy_above_lidar(data: ReconData, max_height_m: float, min_run_m: float = 2.0, sweep_stride: int = 4,
                          max_range_m: float | None = None) -> tuple[Tensor, SceneConfig, Tensor]:
    """The static occupancy grid of ``data`` continued above the LiDAR's field of view, from what a
    real log has (LiDAR only): every column whose top occupied run is at least ``min_run_m`` tall
    continues upward through the cells no LiDAR ray crossed, up to ``max_height_m`` above the run's
    bottom (:func:`sim.recon.occupancy.extend_above_lidar`; the crossed cells come from the
    upward-looking rays of every ``sweep_stride``-th training sweep, a ray without a return taken as
    free to ``max_range_m``, default the LiDAR's maximum range). The grid and the scene extent grow
    upward as far as the added cells reach.

    Returns the grid, the scene config with the grown extent, and the added cells (bool, like the
    grid: the cells training may prune, :func:`sim.recon.occupancy.prune_by_density`)."""
    cfg, occ = data.cfg, data.occupancy
    if data.s2w is None or data.lidar_dirs is None or data.lidar_range is None or not data.train_sweeps or max_height_m <= 0:
        return occ, cfg, torch.zeros_like(occ)
    v = cfg.occ_voxel_m
    amin = torch.tensor(cfg.aabb_min, dtype=torch.float32)
    rng = float(max_range_m if max_range_m is not None else (data.lidar_spec.max_range_m if data.lidar_spec is not None else 80.0))
    big = grow_top(occ, math.ceil(max_height_m / v))
    o, d, r = [], [], []
    for j in data.train_sweeps[:: max(sweep_stride, 1)]:
        m = data.s2w[j]
        dw = data.lidar_dirs[j] @ m[:3, :3].T
        up = dw[:, 2] > -0.02  # rays that can pass above a structure's top
        oj = m[:3, 3].expand(int(up.sum()), 3)
        if data.lidar_origin_off is not None:
            oj = oj + data.lidar_origin_off[j][up].float()
        o.append(oj)
        d.append(dw[up])
        r.append(data.lidar_range[j][up])
    free = lidar_free_space(tuple(big.shape), amin, v, torch.cat(o), torch.cat(d), torch.cat(r), rng)  # type: ignore[arg-type]
    added = extend_above_lidar(big, free, v, min_run_m, max_height_m)
    zs = added.any(0).any(0).nonzero()
    nz = max(occ.shape[2], int(zs.max()) + 1 if zs.numel() else 0)
    big, added = big[..., :nz] | added[..., :nz], added[..., :nz]
    top = cfg.aabb_min[2] + nz * v
    cfg = dataclasses.replace(cfg, aabb_max=(cfg.aabb_max[0], cfg.aabb_max[1], max(cfg.aabb_max[2], top)), occ_shape=tuple(big.shape))
    log.info("occupancy above the LiDAR: %d cells added (%.1f%% more), grid top %.1f m", int(added.sum()),
             100.0 * float(added.sum()) / max(int(occ.sum()), 1), cfg.aabb_max[2])
    return big, cfg, added


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR in dB of images in [0, 1]."""
    mse = F.mse_loss(a, b).item()
    return 10.0 * math.log10(1.0 / max(mse, 1e-10))


def _camera_dirs(u: Tensor, v: Tensor, K: Tensor) -> Tensor:
    """Unit ray directions (..., 3) in the camera frame (x right, y up, -z ahead) through pixel
    coordinates ``u``, ``v`` (...) of intrinsics ``K`` (3, 3, or batched to broadcast with them)."""
    d = torch.stack([(u - K[..., 0, 2]) / K[..., 0, 0], -(v - K[..., 1, 2]) / K[..., 1, 1], -torch.ones_like(u)], -1)
    return F.normalize(d, dim=-1)


def _patch_rays(c2w: Tensor, K: Tensor, x: Tensor, y: Tensor, jj: Tensor, ii: Tensor, s: int) -> tuple[Tensor, Tensor]:
    """World-frame origins and unit directions (p*p, 3) of a patch's low-resolution rays: the
    centres of ``s`` x ``s`` pixel blocks from block (``x``, ``y``), camera ``c2w`` / ``K``."""
    d = _camera_dirs((x + jj) * s + s * 0.5, (y + ii) * s + s * 0.5, K).reshape(-1, 3) @ c2w[:3, :3].T
    return c2w[:3, 3].expand_as(d), d


@dataclass(frozen=True)
class _PatchGrid:
    """Where patches can go: ``p`` x ``p`` feature pixels of ``s`` x ``s`` output pixels each, top-left
    block at most (``wmax``, ``hmax``); ``jj``/``ii`` the (p, p) block offsets inside a patch."""

    s: int
    p: int
    hmax: int
    wmax: int
    jj: Tensor
    ii: Tensor


def _patch_origin(data: ReconData, frames: list[int], g: _PatchGrid, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random top-left blocks (ys, xs) of patches in ``frames``: inside each frame's own image
    (the same draws as for one image size when all frames share ``data``'s)."""
    n = len(frames)
    if data.heights is None or data.widths is None or all(
            int(data.heights[f]) == data.height and int(data.widths[f]) == data.width for f in frames):
        return torch.randint(g.hmax + 1, (n,), generator=gen), torch.randint(g.wmax + 1, (n,), generator=gen)
    hm = torch.tensor([int(data.heights[f]) // g.s - g.p for f in frames])
    wm = torch.tensor([int(data.widths[f]) // g.s - g.p for f in frames])
    if (hm < 0).any() or (wm < 0).any():
        raise ValueError(f"patch {g.p} x upsample {g.s} does not fit every training image")
    u, v = torch.rand(n, generator=gen), torch.rand(n, generator=gen)
    return (u * (hm + 1)).long().clamp(max=hm), (v * (wm + 1)).long().clamp(max=wm)


def _draw_frames(data: ReconData, spec: BatchSpec, gen: torch.Generator, frames: list[int]) -> Tensor:
    """Positions in ``frames`` of ``spec.patches`` random frames: uniform, or with the first camera's
    frames ``spec.first_camera_weight`` times as likely as another camera's."""
    if spec.first_camera_weight == 1.0 or data.frame_camera is None:
        return torch.randint(len(frames), (spec.patches,), generator=gen)
    first = data.frame_camera[torch.as_tensor(frames, dtype=torch.long)] == 0
    p = torch.where(first, spec.first_camera_weight, 1.0).double()
    return torch.multinomial(p, spec.patches, replacement=True, generator=gen)


def _camera_patches(data: ReconData, spec: BatchSpec, gen: torch.Generator, frames: list[int], g: _PatchGrid) -> tuple[dict[str, Tensor], list[int]]:
    """``spec.patches`` random patches of random training frames: their rays and ground-truth RGB
    (P, p*s, p*s, 3), and the frame of each patch (with its camera, intrinsics and the patch's
    full-resolution top-left pixel, for the appearance transform)."""
    fi = _draw_frames(data, spec, gen, frames)
    fr_list = [frames[int(i)] for i in fi]
    ys, xs = _patch_origin(data, fr_list, g, gen)
    origins, dirs, gts = [], [], []
    for k, f in enumerate(fr_list):
        o, d = _patch_rays(data.c2w[f], data.K[f], xs[k], ys[k], g.jj, g.ii, g.s)
        dirs.append(d)
        origins.append(o)
        y0, x0 = int(ys[k]) * g.s, int(xs[k]) * g.s
        gts.append(data.image_float(f)[y0 : y0 + g.p * g.s, x0 : x0 + g.p * g.s])
    fr = torch.tensor(fr_list)
    batch = {"cam_origins": torch.cat(origins), "cam_dirs": torch.cat(dirs), "cam_rgb": torch.stack(gts), "cam_frames": fr,
             "cam_K": data.K[fr], "cam_xy": torch.stack([xs, ys], -1) * g.s}
    if data.frame_camera is not None:
        batch["cam_cams"] = data.frame_camera[fr]
    return batch, fr_list


def _virtual_patches(data: ReconData, spec: BatchSpec, gen: torch.Generator, frames: list[int], g: _PatchGrid) -> tuple[dict[str, Tensor], list[int]]:
    """``spec.virtual_patches`` patches of cameras shifted sideways (level, up to
    ``virtual_shift_m``) from random training frames, with what the loss needs to warp the
    source frame into them; and the source frame of each."""
    V = spec.virtual_patches
    vf = [frames[int(i)] for i in torch.randint(len(frames), (V,), generator=gen)]
    shift = (torch.rand(V, generator=gen) * 2 - 1) * spec.virtual_shift_m
    vy, vx = _patch_origin(data, vf, g, gen)
    vo, vd, vc2w = [], [], []
    for k, f in enumerate(vf):
        c2w = data.c2w[f].clone()
        side = F.normalize(c2w[:3, 0] * torch.tensor([1.0, 1.0, 0.0]), dim=0)  # the camera's right, level
        c2w[:3, 3] = c2w[:3, 3] + shift[k] * side
        o, d = _patch_rays(c2w, data.K[f], vx[k], vy[k], g.jj, g.ii, g.s)
        vd.append(d)
        vo.append(o)
        vc2w.append(c2w)
    batch = {
        "virt_origins": torch.cat(vo), "virt_dirs": torch.cat(vd), "virt_c2w": torch.stack(vc2w),
        "virt_src_c2w": data.c2w[vf], "virt_K": data.K[vf], "virt_xy": torch.stack([vx, vy], -1) * g.s,
        "virt_src_rgb": torch.stack([data.image_float(f) for f in vf]),  # (V, H, W, 3)
        "virt_frames": torch.tensor(vf),
    }
    if data.frame_camera is not None:
        batch["virt_cams"] = data.frame_camera[vf]
    return batch, vf


def _lidar_rays(data: ReconData, spec: BatchSpec, gen: torch.Generator, sweeps: list[int]) -> tuple[dict[str, Tensor], list[int], int, Tensor]:
    """``spec.lidar_rays`` random rays spread over up to ``spec.lidar_sweeps`` random sweeps
    (world origins -- each ray's firing-time origin -- and directions, measured range (m, 0 =
    dropped) and intensity); the sweeps, the rays per sweep and each ray's time slice (R,)."""
    assert data.s2w is not None and data.lidar_dirs is not None and data.lidar_intensity is not None and data.lidar_range is not None
    ns = min(spec.lidar_sweeps, len(sweeps))
    si = [sweeps[int(i)] for i in torch.randint(len(sweeps), (ns,), generator=gen)]
    per = spec.lidar_rays // ns
    lo, ld, lr, li, lb = [], [], [], [], []
    for j in si:
        ri = torch.randint(data.lidar_dirs.shape[1], (per,), generator=gen)
        m = data.s2w[j]
        d = data.lidar_dirs[j, ri] @ m[:3, :3].T
        ld.append(d)
        o = m[:3, 3].expand_as(d)
        if data.lidar_origin_off is not None:
            o = o + data.lidar_origin_off[j, ri].float()
        lo.append(o)
        lr.append(data.lidar_range[j, ri])
        li.append(data.lidar_intensity[j, ri])
        lb.append(data.lidar_bin[j, ri].long() if data.lidar_bin is not None else torch.zeros(per, dtype=torch.long))
    batch = {"lidar_origins": torch.cat(lo), "lidar_dirs": torch.cat(ld), "lidar_range": torch.cat(lr), "lidar_intensity": torch.cat(li)}
    return batch, si, per, torch.cat(lb)


def sample_batch(data: ReconData, spec: BatchSpec, gen: torch.Generator, frames: list[int] | None = None, sweeps: list[int] | None = None) -> dict[str, Tensor]:
    """Draw a training batch (defaults: the training frames and sweeps of ``data``): camera
    patches, virtual (laterally shifted) patches and LiDAR rays, each ray group with the actor
    poses at its frame or sweep (``group`` indexes them)."""
    s = data.cfg.upsample
    frames = data.train_frames if frames is None else frames
    sweeps = data.train_sweeps if sweeps is None else sweeps
    H, W, p = data.height, data.width, spec.patch
    hmax, wmax = H // s - p, W // s - p
    if hmax < 0 or wmax < 0:
        raise ValueError(f"patch {p} x upsample {s} does not fit a {W}x{H} image")
    jj, ii = torch.meshgrid(torch.arange(p, dtype=torch.float32), torch.arange(p, dtype=torch.float32), indexing="xy")
    grid = _PatchGrid(s, p, hmax, wmax, jj, ii)
    batch, fr_list = _camera_patches(data, spec, gen, frames, grid)
    pose, valid = [data.cam_pose[fr_list]], [data.cam_valid[fr_list]]
    group = [torch.arange(spec.patches).repeat_interleave(p * p)]
    times = [_frame_times(data, fr_list)]
    if spec.virtual_patches > 0:
        virt, vf = _virtual_patches(data, spec, gen, frames, grid)
        batch.update(virt)
        pose.append(data.cam_pose[vf])
        valid.append(data.cam_valid[vf])
        group.append(spec.patches + torch.arange(spec.virtual_patches).repeat_interleave(p * p))
        times.append(_frame_times(data, vf))
    if spec.lidar_rays > 0 and data.lidar_range is not None and sweeps:
        assert data.lidar_pose_bins is not None and data.lidar_valid_bins is not None and data.lidar_bin_t_us is not None
        lid, si, per, bins = _lidar_rays(data, spec, gen, sweeps)
        batch.update(lid)
        nb = data.lidar_pose_bins.shape[1]
        A = data.lidar_pose_bins.shape[2]
        pose.append(data.lidar_pose_bins[si].reshape(len(si) * nb, A, 4))
        valid.append(data.lidar_valid_bins[si].reshape(len(si) * nb, A))
        group.append(spec.patches + spec.virtual_patches + torch.arange(len(si)).repeat_interleave(per) * nb + bins)
        times.append(data.lidar_bin_t_us[si].reshape(-1))
    batch.update({"actor_pose": torch.cat(pose), "actor_valid": torch.cat(valid), "actor_size": data.actor_size,
                  "actor_slot": torch.arange(data.actor_size.shape[0]), "group": torch.cat(group), "patch": torch.tensor(p),
                  "group_t_us": torch.cat(times)})
    return batch


def _frame_times(data: ReconData, frames: list[int]) -> Tensor:
    """(n,) int64 capture times of frame indices (zeros when unknown)."""
    if data.frame_t_us is None:
        return torch.zeros(len(frames), dtype=torch.int64)
    return data.frame_t_us[frames]


def _appearance(scene: SceneModel, batch: dict[str, Tensor], rgb: Tensor, aux: Tensor, prefix: str, frames: Tensor) -> tuple[Tensor, Tensor]:
    """Patches' RGB (P, S, S, 3) and low-resolution RGB (P, p, p, 3) through the scene's appearance
    transform of their frames (unchanged when the scene has none)."""
    app = scene.appearance
    if app is None:
        return rgb, aux
    s = scene.cfg.upsample
    K, xy = batch[f"{prefix}_K"], batch[f"{prefix}_xy"].float()
    cams = batch.get(f"{prefix}_cams")
    S, p = rgb.shape[1], aux.shape[1]
    jj, ii = torch.meshgrid(torch.arange(S, dtype=torch.float32), torch.arange(S, dtype=torch.float32), indexing="xy")
    u = xy[:, 0, None, None] + jj[None] + 0.5
    v = xy[:, 1, None, None] + ii[None] + 0.5
    Kb = K[:, None, None]
    r2 = radius2(u, v, Kb)
    r2_lo = radius2(u[:, s // 2 :: s, s // 2 :: s][:, :p, :p], v[:, s // 2 :: s, s // 2 :: s][:, :p, :p], Kb)
    return app(rgb, frames, cams, r2), app(aux, frames, cams, r2_lo)


def forward_batch(scene: SceneModel, batch: dict[str, Tensor], gen: torch.Generator | None, refiner: PoseRefiner | None = None) -> dict[str, Tensor]:
    """Render a batch: camera patches through the CNN decoder (and the scene's appearance
    transform of each patch's frame), LiDAR rays through the LiDAR head. With a ``refiner`` the
    actor boxes and the real cameras' and LiDAR's rays get their learned pose corrections."""
    o = [batch["cam_origins"]]
    d = [batch["cam_dirs"]]
    nreal = batch["cam_origins"].shape[0]
    if "virt_origins" in batch:
        o.append(batch["virt_origins"])
        d.append(batch["virt_dirs"])
    nc = sum(x.shape[0] for x in o)
    if "lidar_origins" in batch:
        o.append(batch["lidar_origins"])
        d.append(batch["lidar_dirs"])
    pose = batch["actor_pose"]
    origins, dirs = torch.cat(o), torch.cat(d)
    if refiner is not None and "group_t_us" in batch:
        extra = None
        if refiner.camera_dt is not None and "cam_cams" in batch:  # camera time offsets: the real patches' groups come first
            gcam = torch.full((batch["group_t_us"].shape[0],), -1, dtype=torch.long)
            gcam[: batch["cam_cams"].shape[0]] = batch["cam_cams"]
            extra, moved = refiner.time_shift(batch["group_t_us"], refiner.group_dt(gcam))
            pose = pose + moved[:, : pose.shape[1]]
        pose = refiner.refine_actors(pose, batch["group_t_us"])
        real = torch.ones(origins.shape[0], dtype=torch.bool)
        real[nreal:nc] = False  # virtual cameras are built from (uncorrected) training poses
        ro, rd = refiner.refine_rays(origins, dirs, batch["group"], batch["group_t_us"], extra)
        origins, dirs = torch.where(real[:, None], ro, origins), torch.where(real[:, None], rd, dirs)
    actors = ActorState(batch["actor_slot"], pose, batch["actor_size"], batch["actor_valid"])
    r = scene.render_rays(origins, dirs, actors, batch["group"], generator=gen)
    p = int(batch["patch"])
    P = nreal // (p * p)
    feat = r["feat"][:nc].reshape(nc // (p * p), p, p, -1).permute(0, 3, 1, 2)
    rgb, aux = scene.decode(feat)
    rgb, aux = rgb.permute(0, 2, 3, 1), aux.permute(0, 2, 3, 1)
    rgb_c, aux_c = rgb[:P], aux[:P]
    if "cam_K" in batch:
        rgb_c, aux_c = _appearance(scene, batch, rgb_c, aux_c, "cam", batch["cam_frames"])
    out = {"rgb": rgb_c, "rgb_aux": aux_c, "acc_cam": r["acc"][:nreal]}
    if nc > nreal:  # virtual-camera patches: their colours and (detached) depths for the warp
        vrgb = rgb[P:]
        if scene.appearance is not None:  # their target is the source frame's image: its appearance
            vrgb, _ = _appearance(scene, batch, vrgb, aux[P:], "virt", batch["virt_frames"])
        out["virt_rgb"] = vrgb
        out["virt_depth"] = r["depth"][nreal:nc].detach().reshape(-1, p, p)
        out["virt_acc"] = r["acc"][nreal:nc].detach().reshape(-1, p, p)
    if "lidar_origins" in batch:
        li = {k: v[nc:] for k, v in r.items()}
        out.update({f"lidar_{k}": v for k, v in scene.lidar_outputs(li).items()})
        out["lidar_t"], out["lidar_w"] = li["t"], li["w"]
    return out


def compute_losses(scene: SceneModel, out: dict[str, Tensor], batch: dict[str, Tensor], w: LossWeights,
                   refiner: PoseRefiner | None = None) -> dict[str, Tensor]:
    """Loss terms (each already weighted): ``rgb`` (MSE), ``rgb_aux`` (low-res MSE), ``depth`` (L1 m
    on LiDAR returns), ``line_of_sight`` (weight in front of the return), ``intensity`` (MSE),
    ``drop`` (BCE of the ray-drop logit), and the priors ``appearance`` (when the scene has
    embeddings) and ``pose_prior`` (with a ``refiner``)."""
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
    if "virt_rgb" in out and w.virtual > 0:
        target, mask = virtual_view_targets(scene, out, batch)
        n = mask.sum()
        err = ((out["virt_rgb"] - target) ** 2).sum(-1) / 3.0
        losses["virtual"] = w.virtual * (err * mask).sum() / n.clamp(min=1)
    if scene.appearance is not None and w.appearance > 0:
        losses["appearance"] = w.appearance * scene.appearance.prior()
    if refiner is not None and refiner.enabled:
        losses["pose_prior"] = refiner.prior(w.actor_prior, w.ego_prior, w.time_prior)
    return losses


@torch.no_grad()
def virtual_view_targets(scene: SceneModel, out: dict[str, Tensor], batch: dict[str, Tensor], edge_rel: float = 0.1,
                         source_depth: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]] | None = None) -> tuple[Tensor, Tensor]:
    """Targets for the virtual-camera patches of a batch (:class:`BatchSpec` ``virtual_patches``):
    each full-resolution pixel's point, at the scene's rendered distance (m, along the virtual
    ray; sky -- opacity below 0.5 -- at infinity), projected into the training camera the virtual
    one was moved from and that image sampled there (bilinear). Returns the targets (V, p*s, p*s,
    3) and a mask (V, p*s, p*s) of the pixels to supervise: the point projects inside the training
    image; the training camera sees it (its rendered distance towards the point reaches the point
    to within 0.3 m + 3 %, or, for sky, it sees sky); and it is off a depth edge (the second
    difference of the rendered inverse depth over the low-resolution 3x3 neighbourhood is below
    ``edge_rel`` of it: zero across any plane).

    ``source_depth(origins, dirs, group)``: distances (m) and opacities of rays from the training
    cameras (default: rendered by ``scene``, actors at the patch's frame)."""
    cfg = scene.cfg
    s = cfg.upsample
    depth, acc = out["virt_depth"], out["virt_acc"]  # (V, p, p)
    V, p = depth.shape[0], depth.shape[1]
    sky = acc < 0.5
    # visibility: per low-resolution ray, does the training camera see the rendered point
    X = batch["virt_origins"] + batch["virt_dirs"] * depth.reshape(-1, 1)  # (V*p*p, 3)
    src = batch["virt_src_c2w"][:, :3, 3].repeat_interleave(p * p, 0)
    seg = torch.where(sky.reshape(-1, 1), batch["virt_dirs"], X - src)
    dist = seg.norm(dim=-1).clamp(min=1e-6)
    n0 = batch["cam_origins"].shape[0]
    group = batch["group"][n0 : n0 + V * p * p]
    if source_depth is None:
        actors = ActorState(batch["actor_slot"], batch["actor_pose"], batch["actor_size"], batch["actor_valid"])

        def source_depth(o: Tensor, d: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
            r = scene.render_rays(o, d, actors, g)
            return r["depth"], r["acc"]

    t_src, acc_src = source_depth(src, seg / dist[:, None], group)
    seen = torch.where(sky.reshape(-1), acc_src < 0.5, t_src > dist - (0.3 + 0.03 * dist))
    blocked = ~seen.reshape(V, p, p)
    # depth edges: inverse depth is affine in the image across a plane, so a second difference of
    # it (along rows, columns and both diagonals) that is large relative to it marks a jump
    fwd = -batch["virt_c2w"][:, :3, 2]  # (V, 3) optical axes
    cos_lo = (batch["virt_dirs"].reshape(V, p * p, 3) * fwd[:, None]).sum(-1).reshape(V, p, p)
    inv_z = torch.where(sky, torch.zeros_like(depth), cos_lo / depth.clamp(min=cfg.near_m))  # 1 / z-depth
    q = F.pad(inv_z[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    c = q[:, 1:-1, 1:-1]
    curv = torch.stack([q[:, 1:-1, :-2] + q[:, 1:-1, 2:], q[:, :-2, 1:-1] + q[:, 2:, 1:-1],
                        q[:, :-2, :-2] + q[:, 2:, 2:], q[:, :-2, 2:] + q[:, 2:, :-2]]).sub(2 * c).abs().amax(0)
    edge = (curv > edge_rel * c) & ~sky
    keep_lo = ~(blocked | edge)
    # full-resolution pixels of each patch: rays of the virtual camera, points at the upsampled depth
    S = p * s
    K = batch["virt_K"]  # (V, 3, 3)
    jj, ii = torch.meshgrid(torch.arange(S, dtype=torch.float32), torch.arange(S, dtype=torch.float32), indexing="xy")
    u = batch["virt_xy"][:, 0, None, None].float() + jj[None] + 0.5
    v = batch["virt_xy"][:, 1, None, None].float() + ii[None] + 0.5
    vc2w = batch["virt_c2w"]
    dcn = _camera_dirs(u, v, K[:, None, None])  # (V, S, S, 3) unit rays in the camera frame
    dw = torch.einsum("vhwk,vjk->vhwj", dcn, vc2w[:, :3, :3])
    # inverse z-depth interpolates exactly across planes (sky: 0, a point at infinity)
    inv_z_hi = F.interpolate(inv_z[:, None], scale_factor=s, mode="bilinear", align_corners=False)[:, 0]
    sky_hi = F.interpolate(sky[:, None].float(), scale_factor=s, mode="nearest")[:, 0] > 0.5
    t_hi = torch.where(sky_hi, torch.full_like(inv_z_hi, 1e5), -dcn[..., 2] / inv_z_hi.clamp(min=1e-5))
    Xh = vc2w[:, None, None, :3, 3] + dw * t_hi[..., None]
    sc2w = batch["virt_src_c2w"]
    Xc = torch.einsum("vhwj,vjk->vhwk", Xh - sc2w[:, None, None, :3, 3], sc2w[:, :3, :3])  # camera frame (x right, y up, -z ahead)
    zc = -Xc[..., 2]
    us = K[:, 0, 0, None, None] * Xc[..., 0] / zc.clamp(min=1e-6) + K[:, 0, 2, None, None]
    vs = -K[:, 1, 1, None, None] * Xc[..., 1] / zc.clamp(min=1e-6) + K[:, 1, 2, None, None]
    img = batch["virt_src_rgb"]  # (V, H, W, 3)
    H, W = img.shape[1], img.shape[2]
    inside = (zc > cfg.near_m) & (us >= 0.5) & (us <= W - 0.5) & (vs >= 0.5) & (vs <= H - 0.5)
    grid = torch.stack([us / W * 2 - 1, vs / H * 2 - 1], -1)
    target = F.grid_sample(img.permute(0, 3, 1, 2), grid, mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    keep = F.interpolate(keep_lo[:, None].float(), scale_factor=s, mode="nearest")[:, 0] > 0.5
    return target, keep & inside


def make_optimizer(scene: SceneModel, lr_grid: float = 1e-2, lr_net: float = 3e-3, refiner: PoseRefiner | None = None,
                   lr_pose: float = 2e-3) -> torch.optim.Optimizer:
    g = scene.param_groups()
    groups = [{"params": g["grids"], "lr": lr_grid}, {"params": g["networks"], "lr": lr_net}]
    if refiner is not None and refiner.enabled:
        groups.append({"params": list(refiner.parameters()), "lr": lr_pose})
    return torch.optim.Adam(groups, eps=1e-15, fused=True)


def fit(scene: SceneModel, data: ReconData, iters: int, spec: BatchSpec | None = None, weights: LossWeights | None = None, seed: int = 0,
        refiner: PoseRefiner | None = None, lr_pose: float = 2e-3) -> list[dict[str, float]]:
    """Train ``scene`` (and the pose corrections of ``refiner``, learning rate ``lr_pose``) on
    ``data`` for ``iters`` steps (plain loop, deterministic for a seed). Returns per-step loss values."""
    spec = spec or BatchSpec()
    weights = weights or LossWeights()
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(scene, refiner=refiner, lr_pose=lr_pose)
    hist = []
    if scene.appearance is not None and data.frame_camera is not None:  # zero-mean gauge (sim.recon.appearance)
        scene.appearance.set_gauge(data.frame_camera, data.train_frames)
    scene.train()
    for _ in range(iters):
        batch = sample_batch(data, spec, gen)
        out = forward_batch(scene, batch, gen, refiner)
        losses = compute_losses(scene, out, batch, weights, refiner)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        opt.step()
        if scene.appearance is not None:
            scene.appearance.center_()
        hist.append({k: float(v.detach()) for k, v in losses.items()})
    scene.eval()
    return hist
