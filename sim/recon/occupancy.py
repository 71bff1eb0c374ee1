"""Where the neural scene's background is sampled: the occupancy grid of the static scene and the
ray-marching candidates tested against it.

The grid is a bool ``(nx, ny, nz)`` tensor of ``occ_voxel_m`` cells from ``aabb_min`` (world
frame, metres), built from the log's accumulated static LiDAR (and training depth). Along each
ray the candidate positions of a fixed, distance-proportional step (:func:`candidate_edges`) are
tested against the grid and the first ``occupied_candidates`` occupied ones are kept, of which
``samples_bg`` are evaluated (:func:`background_samples`). The per-ray test indexes a padded,
flattened copy of the grid with ``index_select`` (:class:`OccupancyIndex`), much faster on the
CPU than fancy indexing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sim.recon.config import SceneConfig

__all__ = [
    "OccupancyIndex", "background_samples", "candidate_edges", "extend_above_lidar", "fallback_candidates", "grow_top", "lidar_free_space",
    "occupied", "pack_occupancy", "prune_by_density", "unpack_occupancy",
]


def candidate_edges(cfg: SceneConfig) -> Tensor:
    """Edges (S + 1,) in metres of the ray-marching candidate intervals from near to far: the step
    is ``clamp(step_rel * t, step_min_m, step_max_m)`` so it follows the pixel footprint."""
    t, out = cfg.near_m, [cfg.near_m]
    while t < cfg.far_m:
        t = t + min(max(cfg.step_rel * t, cfg.step_min_m), cfg.step_max_m)
        out.append(min(t, cfg.far_m))
    return torch.tensor(out, dtype=torch.float32)


def occupied(occupancy: Tensor, aabb_min: Tensor, voxel: float, p: Tensor) -> Tensor:
    """(..., 3) world points -> (...) bool: inside an occupied cell of ``occupancy`` (cells of
    ``voxel`` metres from ``aabb_min``; points outside the grid are free)."""
    i = torch.floor((p - aabb_min) / voxel).long()
    nx, ny, nz = occupancy.shape
    inside = (i[..., 0] >= 0) & (i[..., 0] < nx) & (i[..., 1] >= 0) & (i[..., 1] < ny) & (i[..., 2] >= 0) & (i[..., 2] < nz)
    flat = (i[..., 0].clamp(0, nx - 1) * ny + i[..., 1].clamp(0, ny - 1)) * nz + i[..., 2].clamp(0, nz - 1)
    return inside & occupancy.reshape(-1)[flat]


class OccupancyIndex:
    """The occupancy grid padded by one empty cell on every side and flattened, for fast per-ray
    tests; rebuilt when the grid tensor is replaced or modified in place (one per scene model)."""

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._flat = torch.zeros(0, dtype=torch.bool)
        self._any = False

    def table(self, occupancy: Tensor) -> tuple[Tensor, bool]:
        """The padded, flattened grid of ``occupancy`` and whether any cell is occupied."""
        key = (occupancy.data_ptr(), occupancy._version, tuple(occupancy.shape))
        if self._key != key:
            self._flat = F.pad(occupancy.to(torch.uint8), (1, 1, 1, 1, 1, 1)).reshape(-1).to(torch.bool)
            self._any = bool(occupancy.any())
            self._key = key
        return self._flat, self._any

    def along(self, occupancy: Tensor, aabb_min: Tensor, voxel: float, o: Tensor, d: Tensor, t: Tensor) -> Tensor:
        """(R, S) bool: is the point ``o + d * t`` (rays (R, 3), distances (S,)) in an occupied
        cell. Same cells as :func:`occupied`, computed per axis in voxel units on the padded grid
        (out-of-grid points land in the empty border), int32 throughout."""
        table, any_occupied = self.table(occupancy)
        if not any_occupied:  # no background (e.g. an actor-library model)
            return torch.zeros(o.shape[0], t.shape[0], dtype=torch.bool)
        u0 = (o - aabb_min) / voxel + 1.0  # (R, 3) padded voxel coordinates
        du = d / voxel
        flat: Tensor | None = None
        for k, n in enumerate(occupancy.shape):
            c = torch.addcmul(u0[:, k : k + 1], du[:, k : k + 1], t[None])
            c.clamp_(0.0, float(n + 1))
            ik = c.to(torch.int32)  # truncation = floor on [0, n + 1]
            flat = ik if flat is None else flat.mul_(n + 2).add_(ik)
        assert flat is not None
        return table.index_select(0, flat.reshape(-1)).reshape(flat.shape)  # much faster than table[flat]


def fallback_candidates(edges: Tensor, from_m: float, k: int) -> tuple[Tensor, Tensor]:
    """``k`` candidate intervals spread evenly (in candidate index, so about evenly in log-distance
    up to the largest step) from the first one starting at ``from_m`` metres to the last, and how
    many intervals each stands for (up to the next): first indices (k,) and spans (k,), long."""
    S = edges.shape[0] - 1
    i0 = min(int(torch.searchsorted(edges, torch.tensor(float(from_m)))), S - 1)
    pos = torch.linspace(float(i0), float(S), k + 1)
    idx = pos[:-1].long().clamp(max=S - 1)
    return idx, (pos[1:].long() - idx).clamp(min=1)


def background_samples(cfg: SceneConfig, edges: Tensor, occ: Tensor, jitter: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Background samples of rays whose candidate intervals ``edges`` (S + 1,) are occupied where
    ``occ`` (R, S) is true: distances (R, K) m, interval lengths (R, K) m and validity (R, K).
    The first ``occupied_candidates`` occupied intervals are kept and ``samples_bg`` of them
    evaluated, each standing for ``stride`` intervals; a sample sits at fraction ``jitter``
    (R, K) of its interval (the middle without jitter). With ``cfg.fallback_from_m`` > 0, a ray
    through no occupied interval gets ``samples_bg`` samples spread from there to ``far_m``
    (:func:`fallback_candidates`) instead of none, so surfaces the LiDAR never hit (building tops
    above its field of view, far ground) can still be learned from the cameras."""
    S = occ.shape[1]
    M = min(cfg.occupied_candidates, S)
    score = occ.to(torch.int32) * (S - torch.arange(S, dtype=torch.int32))[None]
    top, idx = torch.topk(score, M, dim=1, sorted=True)  # earliest occupied first
    K = min(cfg.samples_bg, M)
    stride = max(M // K, 1)
    idx, top = idx[:, ::stride][:, :K], top[:, ::stride][:, :K]
    valid = top > 0
    n_int = torch.ones_like(idx)  # candidate intervals a sample is drawn in
    rep = torch.full(idx.shape, float(stride))  # and the intervals its weight stands for, per drawn one
    if cfg.fallback_from_m > 0:  # rays through no occupied cell: samples spread from fallback_from_m to far_m
        fb, fb_span = fallback_candidates(edges, cfg.fallback_from_m, K)
        miss = ~valid.any(1, keepdim=True)
        idx = torch.where(miss, fb[None], idx)
        n_int = torch.where(miss, fb_span[None], n_int)
        rep = torch.where(miss, 1.0, rep)
        valid = valid | miss
    lo, hi = edges.index_select(0, idx.reshape(-1)).reshape(idx.shape), edges.index_select(0, (idx + n_int).reshape(-1)).reshape(idx.shape)
    # an evaluated sample stands for `stride` candidate intervals (a fallback sample: the block it is drawn in)
    width = (hi - lo) * rep
    u = jitter if jitter is not None else torch.full_like(lo, 0.5)
    t = lo + u * (hi - lo)
    return t, width, valid


def pack_occupancy(occ: Tensor) -> np.ndarray:
    """Bool grid -> packed uint8 bytes (for compact storage)."""
    return np.packbits(occ.cpu().numpy().reshape(-1).astype(np.uint8))


def unpack_occupancy(packed: np.ndarray, shape: tuple[int, int, int]) -> Tensor:
    """Packed uint8 bytes (:func:`pack_occupancy`) -> bool grid of ``shape``."""
    n = int(np.prod(shape))
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8))[:n]
    return torch.from_numpy(bits.astype(bool).reshape(shape))


# ------------------------------------------------------------------------------------- the grid above the LiDAR's view
def lidar_free_space(shape: tuple[int, int, int], aabb_min: Tensor, voxel: float, origins: Tensor, dirs: Tensor, ranges: Tensor,
                     max_range_m: float, stop_before_m: float = 0.6, chunk: int = 65536) -> Tensor:
    """Bool ``shape`` grid of the cells LiDAR rays are known to have crossed: each ray (world
    ``origins`` / unit ``dirs`` (N, 3), measured ``ranges`` (N,) m, 0 = no return, taken as free up
    to ``max_range_m``) marks the cells of points every half cell from the sensor to
    ``stop_before_m`` short of its return (the grid's dilation around the return stays unknown)."""
    free = torch.zeros(int(np.prod(shape)), dtype=torch.bool)
    n = torch.tensor(shape)
    step = 0.5 * voxel
    t_all = torch.arange(step, max_range_m, step)
    for a in range(0, origins.shape[0], chunk):
        o, d, r = origins[a : a + chunk], dirs[a : a + chunk], ranges[a : a + chunk]
        stop = torch.where(r > 0, r - stop_before_m, torch.full_like(r, max_range_m))
        for b in range(0, t_all.shape[0], 64):  # bounded memory: 64 steps of a chunk at a time
            t = t_all[b : b + 64]
            keep = t[None] < stop[:, None]
            if not keep.any():
                break
            i = torch.floor((o[:, None] + d[:, None] * t[None, :, None] - aabb_min) / voxel).long()[keep]
            i = i[((i >= 0) & (i < n)).all(-1)]
            free[(i[:, 0] * shape[1] + i[:, 1]) * shape[2] + i[:, 2]] = True
    return free.reshape(shape)


def extend_above_lidar(occ: Tensor, free: Tensor, voxel: float, min_run_m: float = 2.0, max_height_m: float = 24.0) -> Tensor:
    """The cells to add above the LiDAR's view: bool grid, like ``occ`` (nx, ny, nz). A column whose
    top occupied run (contiguous cells ending at its highest occupied one) is at least
    ``min_run_m`` tall -- a facade, a pole, a tree -- continues upward through every cell no LiDAR
    ray crossed (``free`` false), up to the first crossed cell or ``max_height_m`` above the run's
    bottom. Surfaces the LiDAR's field of view never reached (building tops above its upper beam)
    can then be sampled and learned from the cameras; where the structure ends, the camera rays
    that see sky through those cells teach the field that they are empty (and
    :func:`prune_by_density` drops them)."""
    nz = occ.shape[2]
    z = torch.arange(nz)
    any_occ = occ.any(-1)
    top = torch.where(occ, z, -1).amax(-1)  # (nx, ny) highest occupied cell, -1: none
    # bottom of the top run: the highest empty cell below the top, plus one
    below = (~occ) & (z[None, None] < top[..., None])
    bottom = torch.where(below, z, -1).amax(-1) + 1
    run = (top - bottom + 1).clamp(min=0)
    tall = any_occ & (run * voxel >= min_run_m)
    limit = (bottom + round(max_height_m / voxel)).clamp(max=nz - 1)  # (nx, ny) highest cell it may reach
    above = (z[None, None] > top[..., None]) & (z[None, None] <= limit[..., None]) & tall[..., None]
    # stop at the first cell a LiDAR ray crossed: cumulative "a crossed cell at or below" along z
    blocked = torch.cumsum((free & above).to(torch.int32), -1) > 0
    return above & ~blocked


def grow_top(occ: Tensor, cells: int) -> Tensor:
    """``occ`` (nx, ny, nz) with ``cells`` empty cells appended above (the grid's extent raised)."""
    return F.pad(occ, (0, max(int(cells), 0))) if cells > 0 else occ


@torch.no_grad()
def prune_by_density(density: Callable[[Tensor], Tensor], occ: Tensor, candidates: Tensor, aabb_min: Tensor, voxel: float,
                     threshold: float, samples: int = 4, generator: torch.Generator | None = None, chunk: int = 65536) -> int:
    """Clear (in place) the cells of ``candidates`` (bool, like ``occ``; cells that may be pruned)
    that are occupied and whose largest density (1/m) over ``samples`` random points inside them is
    below ``threshold`` -- instant-NGP's occupancy update, restricted to cells the LiDAR did not
    mark. ``density``: (N, 3) world points -> (N,) densities. Returns the number of cells cleared."""
    idx = (occ & candidates).nonzero()
    if idx.shape[0] == 0:
        return 0
    dens = torch.empty(idx.shape[0])
    for a in range(0, idx.shape[0], chunk):
        ii = idx[a : a + chunk]
        u = torch.rand(ii.shape[0], samples, 3, generator=generator)
        p = aabb_min + (ii[:, None].float() + u) * voxel
        dens[a : a + chunk] = density(p.reshape(-1, 3)).reshape(-1, samples).amax(1)
    low = idx[dens < threshold]
    occ[low[:, 0], low[:, 1], low[:, 2]] = False
    return int(low.shape[0])
