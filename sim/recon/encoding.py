"""Encodings of the neural scene's fields (pure torch): the multi-resolution hash grid of the
background (:class:`HashGrid`, Instant-NGP style, with Zip-NeRF's footprint-aware level
down-weighting), the direction encoding of the sky and the clamped exponential of densities.

CPU speed: the hash-grid arithmetic runs level/corner-major in int32 with a ``bincount`` backward.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HashGrid", "dir_encoding", "trunc_exp"]

_PRIMES = (1, 2654435761, 805459861)
# the same primes as int32 (two's complement): equal low bits, so equal hashed indices
_PRIMES_I32 = tuple(p - (1 << 32) if p >= (1 << 31) else p for p in _PRIMES)


class HashGrid(nn.Module):
    """Multi-resolution hash encoding (Instant-NGP) in pure torch over an axis-aligned box.

    Level ``l`` has cubic cells of edge ``coarsest * (finest / coarsest) ** (l / (L - 1))`` metres;
    levels whose grid fits the table are indexed densely, the others through a spatial hash. The
    trilinear interpolation is one fused ``embedding_bag`` call (gather + weighted sum).
    """

    def __init__(
        self,
        aabb_min: tuple[float, float, float],
        aabb_max: tuple[float, float, float],
        levels: int,
        features: int,
        log2_size: int,
        coarsest_m: float,
        finest_m: float,
    ) -> None:
        super().__init__()
        self.levels, self.features, self.size = levels, features, 2**log2_size
        lo = torch.tensor(aabb_min, dtype=torch.float32)
        ext = torch.tensor(aabb_max, dtype=torch.float32) - lo
        cells = [coarsest_m * (finest_m / coarsest_m) ** (l_ / max(levels - 1, 1)) for l_ in range(levels)]
        res = torch.stack([torch.ceil(ext / c).long() + 2 for c in cells])  # (L, 3) vertices per axis
        dense = res.prod(dim=1) <= self.size
        # levels are coarse to fine: the first ``n_dense`` fit the table and are indexed densely
        self.n_dense = int(dense.long().cumprod(0).sum())
        self.register_buffer("lo", lo, persistent=False)
        self.register_buffer("cell", torch.tensor(cells, dtype=torch.float32), persistent=False)
        self.register_buffer("res", res, persistent=False)
        self.register_buffer("offset", torch.arange(levels, dtype=torch.long) * self.size, persistent=False)
        g = torch.Generator().manual_seed(0)
        self.table = nn.Parameter((torch.rand(levels * self.size, features, generator=g) * 2 - 1) * 1e-4)

    @property
    def out_dim(self) -> int:
        return self.levels * self.features

    def forward(self, x: Tensor, std: Tensor | None = None) -> Tensor:
        """(N, 3) world points (m) -> (N, levels * features) features. With ``std`` (N,), the
        footprint of each point (m), level ``l``'s features are scaled by
        ``erf(cell_l / (sqrt(8) * std))``: about 1 for cells wider than the footprint, falling
        towards 0 for finer ones (Zip-NeRF's down-weighting; the gradient is scaled alike).

        Index and weight arithmetic runs per level and corner on contiguous runs of points
        (int32; the spatial hash keeps only the low ``log2_size`` bits, which int32 wrap-around
        products leave unchanged) and writes straight into the ``(L, N, 8)`` bag layout of the
        lookup (no transposing copy)."""
        n, L, nd = x.shape[0], self.levels, self.n_dense
        u = (x.T - self.lo[:, None])[None] / self.cell[:, None, None]  # (L, 3, N) in cells
        u = torch.clamp(u, min=torch.zeros((), dtype=u.dtype), max=(self.res - 2).to(u.dtype)[:, :, None])
        i0 = u.to(torch.int32)  # floor: u >= 0
        f = u - i0
        g = 1 - f
        idx = torch.empty(L, n, 8, dtype=torch.int32)  # bag-major: corner c of point i at [l, i, c]
        w = torch.empty(L, n, 8, dtype=x.dtype)
        wxy = [[g[:, 0] * g[:, 1], g[:, 0] * f[:, 1]], [f[:, 0] * g[:, 1], f[:, 0] * f[:, 1]]]
        wz = (g[:, 2], f[:, 2])
        off = self.offset.to(torch.int32)[:, None]
        if nd > 0:
            res = self.res[:nd].to(torch.int32)
            rx, rxy = res[:, 0:1], res[:, 0:1] * res[:, 1:2]
            base = i0[:nd, 0] + i0[:nd, 1] * rx + i0[:nd, 2] * rxy + off[:nd]
        if nd < L:
            hx = i0[nd:, 0] * _PRIMES_I32[0]
            hy = i0[nd:, 1] * _PRIMES_I32[1]
            hz = i0[nd:, 2] * _PRIMES_I32[2]
            hxs, hys, hzs = (hx, hx + _PRIMES_I32[0]), (hy, hy + _PRIMES_I32[1]), (hz, hz + _PRIMES_I32[2])
        pos_grad = torch.is_grad_enabled() and x.requires_grad  # positions optimised (pose refinement)
        for c in range(8):
            cx, cy, cz = (c >> 2) & 1, (c >> 1) & 1, c & 1
            if not pos_grad:
                torch.mul(wxy[cx][cy], wz[cz], out=w[:, :, c])
            if nd > 0:
                torch.add(base, cx + cy * rx + cz * rxy, out=idx[:nd, :, c])
            if nd < L:
                h = hxs[cx] ^ hys[cy]
                h ^= hzs[cz]
                h &= self.size - 1
                torch.add(h, off[nd:], out=idx[nd:, :, c])
        if pos_grad:
            w = torch.stack([wxy[(c >> 2) & 1][(c >> 1) & 1] * wz[c & 1] for c in range(8)], -1)
        if std is not None:
            lam = torch.erf(self.cell[:, None] / (math.sqrt(8.0) * std.to(x.dtype).clamp(min=1e-6))[None])  # (L, N)
            w = w * lam[:, :, None] if pos_grad else w.mul_(lam[:, :, None])
        out = _HashLookup.apply(self.table, idx.view(L * n, 8), w.reshape(L * n, 8) if pos_grad else w.view(L * n, 8).detach())
        return out.reshape(L, n, self.features).transpose(0, 1).reshape(n, L * self.features)


class _HashLookup(torch.autograd.Function):
    """Weighted gather ``out[i] = sum_k w[i, k] * table[idx[i, k]]`` whose backward is one weighted
    ``bincount`` per feature (a serial, deterministic scatter-add; much faster on the CPU than the
    sort-based embedding backward or ``index_add_``). The weights get a gradient only when they
    require one (sample positions optimised by pose refinement: ``grad_w[i, k] = grad[i] .
    table[idx[i, k]]``)."""

    @staticmethod
    def forward(ctx: Any, table: Tensor, idx: Tensor, w: Tensor) -> Tensor:
        ctx.save_for_backward(idx, w, table)
        ctx.rows = table.shape[0]
        return F.embedding_bag(idx, table, per_sample_weights=w.detach(), mode="sum")

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, Tensor | None]:
        idx, w, table = ctx.saved_tensors
        flat = idx.reshape(-1)
        out = torch.empty(ctx.rows, grad.shape[-1], dtype=grad.dtype)
        for k in range(grad.shape[-1]):
            out[:, k] = torch.bincount(flat, weights=(w * grad[:, k : k + 1]).reshape(-1), minlength=ctx.rows)
        gw = None
        if ctx.needs_input_grad[2]:
            gw = torch.einsum("nkf,nf->nk", table.detach()[idx.long()], grad)
        return out, None, gw


def trunc_exp(x: Tensor) -> Tensor:
    """``exp(x)`` with ``x`` clamped at 12 (densities stay finite)."""
    return torch.exp(torch.clamp(x, max=12.0))


def dir_encoding(d: Tensor, freqs: int = 3) -> Tensor:
    """Unit directions (N, 3) and their sines and cosines at ``freqs`` octaves: (N, 3 * (1 + 2 * freqs))."""
    out = [d]
    for k in range(freqs):
        out += [torch.sin((2.0**k) * math.pi * d), torch.cos((2.0**k) * math.pi * d)]
    return torch.cat(out, dim=-1)

