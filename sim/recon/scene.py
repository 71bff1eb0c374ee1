"""The decomposed neural scene (pure torch, no nerfstudio): UniSim-style background + actors + sky.

Frames and units: everything is in the drive log's **world** frame (metres, z up). Camera poses are
camera-to-world with OpenGL axes (x right, y up, z back) as in ``transforms.json``; LiDAR rays are
origins + unit directions in the world frame; actor poses are ``(x, y, z, yaw)`` with ``z`` the box
bottom and yaw in radians, box sizes ``(length, width, height)`` in metres.

Structure (see ``DESIGN.md``):

* **background**: a multi-resolution hash grid (pure torch, :class:`HashGrid`) + a tiny MLP giving
  density and a feature vector. Samples are taken only in cells of an occupancy grid built from
  the log's accumulated static LiDAR (and training depth): along each ray the candidate positions
  of a fixed, distance-proportional step are tested against the grid and the first
  ``occupied_candidates`` occupied ones are kept, of which ``samples_bg`` are evaluated. With
  ``footprint_rad`` > 0 the encoding is footprint-aware: hash levels finer than a sample's
  footprint (growing with its distance) are down-weighted, for reading and for training.
* **actors**: one small dense feature grid per tracked actor in its box frame (coordinates
  normalised to the box, so a field follows its box wherever it is put) and a per-actor latent
  code, decoded by one shared MLP. Actor samples exist only where a ray crosses a box (slab test).
* **sky**: an MLP on the ray direction, filling the transmittance left after the last sample.

Samples of all fields along a ray are merged by depth and volume-rendered together into a feature
vector, expected depth and opacity. A camera renders a low-resolution feature image (``1/upsample``
of the output) that a small CNN decodes to RGB at full resolution; a LiDAR head turns the feature
of a LiDAR ray into intensity and ray-drop probability, and the range is the expected depth.
Moving, removing or inserting an actor is a change of the actor poses given to
:meth:`SceneModel.render_rays`; nothing is retrained.

CPU speed: the hash-grid arithmetic runs level/corner-major in int32 with a ``bincount`` backward;
occupancy tests index a padded, flattened grid with ``index_select``. When rendering (no grad, no
jitter) two shortcuts apply, both bounded against the training path (tested): actor samples are
made only for rays passing through an actor's bounding sphere, and a ray's background samples
are evaluated in stages (4, 4, the rest), each only on rays whose transmittance is still above
``early_stop`` (1e-4). Volume renders run in chunks of 2048 rays so temporaries stay small and are
reused by the allocator; surface renders (a few samples per ray) run in chunks of 32768 rays,
a whole camera frame at once. On the shared 2-core machine one torch thread is much faster than two
under load (threads wait on each other).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from sim.recon.surface import SurfaceProxy

__all__ = ["ActorState", "HashGrid", "SceneConfig", "SceneModel"]

_PRIMES = (1, 2654435761, 805459861)
#: rays per render chunk: volume rendering (many samples per ray) and surface rendering (a few)
VOLUME_CHUNK, SURFACE_CHUNK = 2048, 32768
# the same primes as int32 (two's complement): equal low bits, so equal hashed indices
_PRIMES_I32 = tuple(p - (1 << 32) if p >= (1 << 31) else p for p in _PRIMES)


@dataclass(frozen=True)
class SceneConfig:
    """Hyper-parameters and scene extent of a :class:`SceneModel` (all lengths in metres).

    The scene-dependent fields (``aabb_*``, ``occ_shape``, ``n_actors``) are filled from the log by
    :func:`sim.recon.data.scene_config_for`.
    """

    aabb_min: tuple[float, float, float] = (-50.0, -50.0, -5.0)
    aabb_max: tuple[float, float, float] = (50.0, 50.0, 20.0)
    occ_voxel_m: float = 0.3
    occ_shape: tuple[int, int, int] = (1, 1, 1)  # (nx, ny, nz) cells
    n_actors: int = 0
    # background hash grid
    hash_levels: int = 8
    hash_features: int = 2
    hash_log2_size: int = 17
    hash_coarsest_m: float = 3.0
    hash_finest_m: float = 0.08
    #: footprint-aware encoding (0 = off): a background sample at distance ``t`` stands for a
    #: blob of standard deviation ``footprint_rad * t`` metres, and each hash level's features are
    #: scaled by ``erf(cell / (sqrt(8) * std))`` (Zip-NeRF's level down-weighting), so levels finer
    #: than what a ray resolves are neither read nor trained by it
    footprint_rad: float = 0.0
    #: distance (m) assumed for the footprint of field queries that are not along a ray (baking)
    footprint_ref_m: float = 5.0
    hidden: int = 32
    feat_dim: int = 16
    # actors
    actor_grid: tuple[int, int, int] = (8, 12, 24)  # cells along box (z, y, x)
    actor_channels: int = 8
    actor_latent: int = 8
    actor_margin: float = 1.1
    samples_actor: int = 8
    max_actors_per_ray: int = 2
    # ray marching
    near_m: float = 0.3
    far_m: float = 80.0
    step_min_m: float = 0.1
    step_rel: float = 0.024
    step_max_m: float = 1.5
    occupied_candidates: int = 16
    samples_bg: int = 16
    # image decoder
    upsample: int = 4
    cnn_hidden: int = 32
    cnn_layers: int = 2  # hidden 3x3 convolutions of the decoder

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SceneConfig:
        """Build from :meth:`to_json` output; unknown keys raise ``KeyError``, wrong types ``TypeError``."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k not in names:
                raise KeyError(k)
            default = names[k].default
            if isinstance(default, tuple):
                if not isinstance(v, list | tuple) or len(v) != len(default):
                    raise TypeError(f"{k}: expected a list of {len(default)}")
                v = tuple(type(default[0])(x) for x in v)
            elif isinstance(default, bool | int | float):
                if isinstance(v, bool) != isinstance(default, bool) or not isinstance(v, int | float):
                    raise TypeError(f"{k}: expected a number")
                v = type(default)(v)
            kw[k] = v
        return cls(**kw)


@dataclass(frozen=True)
class ActorState:
    """Where the actors are for one render (``A`` actor slots, bundle order).

    Attributes:
        slot: (A,) long, which learned actor field (latent + grid) each box uses.
        pose: (G, A, 4) float, per ray group: x, y, z (box bottom centre, world m), yaw (rad).
        size: (A, 3) float box length, width, height in metres (the field is stretched to it).
        valid: (G, A) bool, whether the actor exists in that group.
    """

    slot: Tensor
    pose: Tensor
    size: Tensor
    valid: Tensor

    @staticmethod
    def empty(groups: int = 1) -> ActorState:
        return ActorState(
            torch.zeros(0, dtype=torch.long),
            torch.zeros(groups, 0, 4),
            torch.zeros(0, 3),
            torch.zeros(groups, 0, dtype=torch.bool),
        )


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
        for c in range(8):
            cx, cy, cz = (c >> 2) & 1, (c >> 1) & 1, c & 1
            torch.mul(wxy[cx][cy], wz[cz], out=w[:, :, c])
            if nd > 0:
                torch.add(base, cx + cy * rx + cz * rxy, out=idx[:nd, :, c])
            if nd < L:
                h = hxs[cx] ^ hys[cy]
                h ^= hzs[cz]
                h &= self.size - 1
                torch.add(h, off[nd:], out=idx[nd:, :, c])
        if std is not None:
            lam = torch.erf(self.cell[:, None] / (math.sqrt(8.0) * std.to(x.dtype).clamp(min=1e-6))[None])  # (L, N)
            w.mul_(lam[:, :, None])
        out = _HashLookup.apply(self.table, idx.view(L * n, 8), w.view(L * n, 8).detach())
        return out.reshape(L, n, self.features).transpose(0, 1).reshape(n, L * self.features)


class _HashLookup(torch.autograd.Function):
    """Weighted gather ``out[i] = sum_k w[i, k] * table[idx[i, k]]`` whose backward is one weighted
    ``bincount`` per feature (a serial, deterministic scatter-add; much faster on the CPU than the
    sort-based embedding backward or ``index_add_``). No gradient flows to the weights (positions
    are not optimised)."""

    @staticmethod
    def forward(ctx: Any, table: Tensor, idx: Tensor, w: Tensor) -> Tensor:
        ctx.save_for_backward(idx, w)
        ctx.rows = table.shape[0]
        return F.embedding_bag(idx, table, per_sample_weights=w, mode="sum")

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        idx, w = ctx.saved_tensors
        flat = idx.reshape(-1)
        out = torch.empty(ctx.rows, grad.shape[-1], dtype=grad.dtype)
        for k in range(grad.shape[-1]):
            out[:, k] = torch.bincount(flat, weights=(w * grad[:, k : k + 1]).reshape(-1), minlength=ctx.rows)
        return out, None, None


def _trunc_exp(x: Tensor) -> Tensor:
    return torch.exp(torch.clamp(x, max=12.0))


def _dir_encoding(d: Tensor, freqs: int = 3) -> Tensor:
    out = [d]
    for k in range(freqs):
        out += [torch.sin((2.0**k) * math.pi * d), torch.cos((2.0**k) * math.pi * d)]
    return torch.cat(out, dim=-1)


def _merge_by_depth(
    ts: list[Tensor], ws: list[Tensor], sig: list[Tensor], feats: list[Tensor], acts: list[Tensor]
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Concatenate per-ray sample sets (each (R, k_i), features (R, k_i, C)) sorted by distance."""
    t = torch.cat(ts, 1)
    order = torch.argsort(t, dim=1)
    C = feats[0].shape[-1]
    return (
        torch.gather(t, 1, order), torch.gather(torch.cat(ws, 1), 1, order), torch.gather(torch.cat(sig, 1), 1, order),
        torch.gather(torch.cat(feats, 1), 1, order[..., None].expand(-1, -1, C)), torch.gather(torch.cat(acts, 1), 1, order),
    )


def candidate_edges(cfg: SceneConfig) -> Tensor:
    """Edges (S + 1,) in metres of the ray-marching candidate intervals from near to far: the step
    is ``clamp(step_rel * t, step_min_m, step_max_m)`` so it follows the pixel footprint."""
    t, out = cfg.near_m, [cfg.near_m]
    while t < cfg.far_m:
        t = t + min(max(cfg.step_rel * t, cfg.step_min_m), cfg.step_max_m)
        out.append(min(t, cfg.far_m))
    return torch.tensor(out, dtype=torch.float32)


class SceneModel(nn.Module):
    """The neural scene: fields, samplers, volume renderer, image decoder and LiDAR head.

    Args:
        cfg: hyper-parameters and extent.
        seed: seed of the weight initialisation.
        occupancy: (nx, ny, nz) bool occupancy of the static background (``cfg.occ_voxel_m`` cells
            from ``cfg.aabb_min``). Stored as a buffer (saved with the weights).
    """

    def __init__(self, cfg: SceneConfig, occupancy: Tensor | None = None, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # deterministic initialisation, global RNG untouched
            torch.manual_seed(seed)
            self._build(cfg, occupancy)

    def _build(self, cfg: SceneConfig, occupancy: Tensor | None) -> None:
        self.cfg = cfg
        if occupancy is None:
            occupancy = torch.zeros(cfg.occ_shape, dtype=torch.bool)
        if tuple(occupancy.shape) != tuple(cfg.occ_shape):
            raise ValueError(f"occupancy shape {tuple(occupancy.shape)} != config {cfg.occ_shape}")
        self.register_buffer("occupancy", occupancy.to(torch.bool))
        self._occ_key: tuple[Any, ...] | None = None
        #: rendering only: stop evaluating a ray's background samples once its transmittance is
        #: below this (0 = evaluate every sample, the reference path)
        self.early_stop = 1e-4
        self._occ_flat = torch.zeros(0, dtype=torch.bool)
        self._occ_any = False
        self.register_buffer("aabb_min", torch.tensor(cfg.aabb_min, dtype=torch.float32), persistent=False)
        self.register_buffer("edges", candidate_edges(cfg), persistent=False)
        C, H = cfg.feat_dim, cfg.hidden
        self.bg_grid = HashGrid(
            cfg.aabb_min, cfg.aabb_max, cfg.hash_levels, cfg.hash_features, cfg.hash_log2_size,
            cfg.hash_coarsest_m, cfg.hash_finest_m,
        )
        self.bg_mlp = nn.Sequential(nn.Linear(self.bg_grid.out_dim, H), nn.ReLU(), nn.Linear(H, 1 + C))
        A = max(cfg.n_actors, 1)
        gz, gy, gx = cfg.actor_grid
        g = torch.Generator().manual_seed(1)
        self.actor_grid = nn.Parameter(torch.randn(1, cfg.actor_channels, A * (gz + 2), gy, gx, generator=g) * 0.1)
        self.actor_latent = nn.Parameter(torch.randn(A, cfg.actor_latent, generator=g) * 0.1)
        self.actor_mlp = nn.Sequential(nn.Linear(cfg.actor_channels + cfg.actor_latent, H), nn.ReLU(), nn.Linear(H, 1 + C))
        self.sky_mlp = nn.Sequential(nn.Linear(3 * 7, H), nn.ReLU(), nn.Linear(H, C))
        self.lidar_head = nn.Sequential(nn.Linear(C + 1, H), nn.ReLU(), nn.Linear(H, 2))
        self.rgb_head = nn.Linear(C, 3)
        s, ch = cfg.upsample, cfg.cnn_hidden
        convs: list[nn.Module] = [nn.Conv2d(C, ch, 3, padding=1), nn.ReLU()]
        for _ in range(cfg.cnn_layers - 1):
            convs += [nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU()]
        self.decoder = nn.Sequential(*convs, nn.Conv2d(ch, 3 * s * s, 3, padding=1))
        with torch.no_grad():  # start the density near 1/m and the decoder near the aux head
            self.bg_mlp[-1].bias[0] = 0.0
            self.actor_mlp[-1].bias[0] = 0.0
            self.decoder[-1].weight.mul_(0.1)
            self.decoder[-1].bias.zero_()

    # ------------------------------------------------------------------------------ parameters
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters split into ``grids`` (feature tables, high LR) and ``networks`` (MLPs/CNN)."""
        grids = [self.bg_grid.table, self.actor_grid, self.actor_latent]
        ids = {id(p) for p in grids}
        return {"grids": grids, "networks": [p for p in self.parameters() if id(p) not in ids]}

    # ------------------------------------------------------------------------------ sampling
    def occupied(self, p: Tensor) -> Tensor:
        """(..., 3) world points -> (...) bool: inside an occupied background cell."""
        v = self.cfg.occ_voxel_m
        i = torch.floor((p - self.aabb_min) / v).long()
        nx, ny, nz = self.occupancy.shape
        inside = (i[..., 0] >= 0) & (i[..., 0] < nx) & (i[..., 1] >= 0) & (i[..., 1] < ny) & (i[..., 2] >= 0) & (i[..., 2] < nz)
        flat = (i[..., 0].clamp(0, nx - 1) * ny + i[..., 1].clamp(0, ny - 1)) * nz + i[..., 2].clamp(0, nz - 1)
        return inside & self.occupancy.reshape(-1)[flat]

    def _occ_table(self) -> Tensor:
        """The occupancy grid padded by one empty cell on every side, flattened (cached; rebuilt
        when the ``occupancy`` buffer is replaced or modified in place)."""
        key = (self.occupancy.data_ptr(), self.occupancy._version, tuple(self.occupancy.shape))
        if self._occ_key != key:
            self._occ_flat = F.pad(self.occupancy.to(torch.uint8), (1, 1, 1, 1, 1, 1)).reshape(-1).to(torch.bool)
            self._occ_any = bool(self.occupancy.any())
            self._occ_key = key
        return self._occ_flat

    def _occupied_along(self, o: Tensor, d: Tensor, t: Tensor) -> Tensor:
        """(R, S) bool: is the point ``o + d * t`` (rays (R, 3), distances (S,)) in an occupied
        background cell. Same cells as :meth:`occupied`, computed per axis in voxel units on the
        padded grid (out-of-grid points land in the empty border), int32 throughout."""
        table = self._occ_table()
        if not self._occ_any:  # no background (e.g. an actor-library model)
            return torch.zeros(o.shape[0], t.shape[0], dtype=torch.bool)
        v = self.cfg.occ_voxel_m
        u0 = (o - self.aabb_min) / v + 1.0  # (R, 3) padded voxel coordinates
        du = d / v
        flat: Tensor | None = None
        for k, n in enumerate(self.occupancy.shape):
            c = torch.addcmul(u0[:, k : k + 1], du[:, k : k + 1], t[None])
            c.clamp_(0.0, float(n + 1))
            ik = c.to(torch.int32)  # truncation = floor on [0, n + 1]
            flat = ik if flat is None else flat.mul_(n + 2).add_(ik)
        assert flat is not None
        return table.index_select(0, flat.reshape(-1)).reshape(flat.shape)  # much faster than table[flat]

    def _bg_samples(self, o: Tensor, d: Tensor, jitter: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Background sample distances (R, K), interval lengths (R, K) and validity (R, K)."""
        cfg = self.cfg
        e = self.edges
        mid = 0.5 * (e[1:] + e[:-1])
        S = mid.shape[0]
        occ = self._occupied_along(o, d, mid)  # (R, S)
        M = min(cfg.occupied_candidates, S)
        score = occ.to(torch.int32) * (S - torch.arange(S, dtype=torch.int32))[None]
        top, idx = torch.topk(score, M, dim=1, sorted=True)  # earliest occupied first
        K = min(cfg.samples_bg, M)
        stride = max(M // K, 1)
        idx, top = idx[:, ::stride][:, :K], top[:, ::stride][:, :K]
        valid = top > 0
        lo, hi = e.index_select(0, idx.reshape(-1)).reshape(idx.shape), e.index_select(0, (idx + 1).reshape(-1)).reshape(idx.shape)
        # an evaluated sample stands for `stride` candidate intervals
        width = (hi - lo) * stride
        u = jitter if jitter is not None else torch.full_like(lo, 0.5)
        t = lo + u * (hi - lo)
        return t, width, valid

    def _actor_samples(
        self, o: Tensor, d: Tensor, group: Tensor, actors: ActorState, jitter: Tensor | None, cand: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Actor samples: distances (R, M*Ka), interval lengths, validity and normalised box coords
        (R, M*Ka, 3) plus the slot per sample (R, M*Ka). ``cand`` (R, A) bool (one pose group only)
        limits the box tests to those ray-actor pairs (a superset of the hits, from
        :meth:`_cone_candidates`): same samples, computed for the pairs only."""
        cfg = self.cfg
        R = o.shape[0]
        A = actors.slot.shape[0]
        Ka, Mx = cfg.samples_actor, min(cfg.max_actors_per_ray, max(A, 1))
        if cand is not None and actors.pose.shape[0] == 1 and jitter is None:
            return self._actor_samples_pairs(o, d, actors, cand, Ka, Mx)
        pose = actors.pose[group]  # (R, A, 4)
        valid = actors.valid[group]  # (R, A)
        on, dn = self._box_frame(o[:, None, :], d[:, None, :].expand(R, A, 3), pose, actors.size[None])
        tmin, tmax = self._slab(on, dn)
        hit = valid & (tmax > tmin)
        key = torch.where(hit, tmin, torch.full_like(tmin, float("inf")))
        kt, ka = torch.topk(key, Mx, dim=1, largest=False)  # (R, Mx)
        on_k = torch.gather(on, 1, ka[..., None].expand(R, Mx, 3))
        dn_k = torch.gather(dn, 1, ka[..., None].expand(R, Mx, 3))
        slot = actors.slot[ka] if A > 0 else torch.zeros_like(ka)
        u = jitter if jitter is not None else torch.full((R, Mx, Ka), 0.5)
        return self._box_samples(torch.gather(tmin, 1, ka), torch.gather(tmax, 1, ka), torch.isfinite(kt), on_k, dn_k, slot, u)

    def _box_frame(self, o: Tensor, d: Tensor, pose: Tensor, size: Tensor) -> tuple[Tensor, Tensor]:
        """Ray origins/directions (..., 3) in normalised box coordinates of boxes ``pose`` (..., 4)
        and ``size`` (..., 3) (the box scaled by ``actor_margin`` is [-1, 1]^3)."""
        half = size * (0.5 * self.cfg.actor_margin)
        c, s = torch.cos(pose[..., 3]), torch.sin(pose[..., 3])
        rel = o - torch.stack([pose[..., 0], pose[..., 1], pose[..., 2] + size[..., 2] * 0.5], -1)

        def to_box(v: Tensor) -> Tensor:
            return torch.stack([c * v[..., 0] + s * v[..., 1], -s * v[..., 0] + c * v[..., 1], v[..., 2]], -1)

        return to_box(rel) / half, to_box(d) / half

    def _slab(self, on: Tensor, dn: Tensor) -> tuple[Tensor, Tensor]:
        """Entry and exit distances (...) of rays in box coordinates (:meth:`_box_frame`) through
        the unit box [-1, 1]^3, clamped to [``near_m``, ``far_m``] (a miss has exit <= entry)."""
        dn_safe = torch.where(dn.abs() < 1e-9, torch.full_like(dn, 1e-9), dn)
        t1, t2 = (-1 - on) / dn_safe, (1 - on) / dn_safe
        return torch.minimum(t1, t2).amax(-1).clamp(min=self.cfg.near_m), torch.maximum(t1, t2).amin(-1).clamp(max=self.cfg.far_m)

    @staticmethod
    def _box_samples(t0: Tensor, t1: Tensor, khit: Tensor, on_k: Tensor, dn_k: Tensor, slot: Tensor, u: Tensor) -> tuple[Tensor, ...]:
        """The samples of :meth:`_actor_samples` from the (R, Mx) chosen boxes of each ray: their
        entry/exit distances, hit flags, box-frame origins/directions (R, Mx, 3) and slots, with
        ``Ka`` samples per box at fractions ``(k + u) / Ka`` of the span (``u`` (R|1, Mx|1, Ka))."""
        R, Ka = t0.shape[0], u.shape[-1]
        frac = (torch.arange(Ka, dtype=t0.dtype)[None, None] + u) / Ka
        span = (t1 - t0).clamp(min=0)
        t = t0[..., None] + frac * span[..., None]  # (R, Mx, Ka)
        width = (span / Ka)[..., None].expand_as(t)
        pn = on_k[:, :, None, :] + dn_k[:, :, None, :] * t[..., None]  # (R, Mx, Ka, 3)
        ok = khit[..., None].expand_as(t)
        return (
            t.reshape(R, -1), width.reshape(R, -1), ok.reshape(R, -1),
            pn.reshape(R, -1, 3), slot[..., None].expand_as(t).reshape(R, -1),
        )

    def _actor_samples_pairs(self, o: Tensor, d: Tensor, actors: ActorState, cand: Tensor, Ka: int, Mx: int) -> tuple[Tensor, ...]:
        """:meth:`_actor_samples` (rendering, one pose group) with box tests only on the ``cand``
        ray-actor pairs."""
        R, A = cand.shape
        ri, ai = cand.nonzero(as_tuple=True)
        on, dn = self._box_frame(o[ri], d[ri], actors.pose[0][ai], actors.size[ai])
        tmin, tmax = self._slab(on, dn)
        hit = actors.valid[0][ai] & (tmax > tmin)
        key = torch.full((R, A), float("inf"))
        key[ri[hit], ai[hit]] = tmin[hit]
        kt, ka = torch.topk(key, Mx, dim=1, largest=False)  # (R, Mx)
        khit = torch.isfinite(kt)
        far = torch.full((R, A), float("-inf"))
        far[ri[hit], ai[hit]] = tmax[hit]
        t0 = torch.where(khit, kt, torch.zeros_like(kt))
        t1 = torch.where(khit, torch.gather(far, 1, ka), torch.zeros_like(kt))
        on_k, dn_k = self._box_frame(o[:, None, :], d[:, None, :].expand(R, Mx, 3), actors.pose[0][ka], actors.size[ka])
        return self._box_samples(t0, t1, khit, on_k, dn_k, actors.slot[ka], torch.full((1, 1, Ka), 0.5))

    # ------------------------------------------------------------------------------ fields
    def footprint(self, t: Tensor | None, n: int) -> Tensor | None:
        """Footprint std (m) of ``n`` background queries at ray distances ``t`` (N,) m (None:
        queries not along a ray, taken at ``footprint_ref_m``); None when the encoding is off."""
        cfg = self.cfg
        if cfg.footprint_rad <= 0:
            return None
        if t is None:
            return torch.full((n,), cfg.footprint_rad * cfg.footprint_ref_m)
        return cfg.footprint_rad * t.clamp(min=cfg.near_m)

    def encode(self, p: Tensor, t: Tensor | None = None) -> Tensor:
        """The background grid's encoding of (N, 3) world points at ray distances ``t`` (N,) m,
        footprint-aware when the config asks for it (see :meth:`footprint`)."""
        std = self.footprint(t, p.shape[0])
        return self.bg_grid(p) if std is None else self.bg_grid(p, std)

    def background(self, p: Tensor, t: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(N, 3) world points at ray distances ``t`` (N,) m (for the footprint-aware encoding;
        see :attr:`SceneConfig.footprint_rad`) -> density (N,) 1/m and features (N, C)."""
        h = self.bg_mlp(self.encode(p, t))
        return _trunc_exp(h[:, 0]), h[:, 1:]

    def actor(self, pn: Tensor, slot: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 3) points in normalised box coordinates ([-1, 1]^3 = box * margin) and actor slots
        (N,) -> density (N,) and features (N, C)."""
        gz = self.cfg.actor_grid[0]
        A = max(self.cfg.n_actors, 1)
        D = A * (gz + 2)
        zi = slot.to(pn.dtype) * (gz + 2) + 1 + (pn[:, 2].clamp(-1, 1) + 1) * 0.5 * (gz - 1)
        grid = torch.stack([pn[:, 0].clamp(-1, 1), pn[:, 1].clamp(-1, 1), zi / (D - 1) * 2 - 1], -1)
        f = F.grid_sample(self.actor_grid, grid[None, :, None, None, :], mode="bilinear", align_corners=True)
        f = f[0, :, :, 0, 0].T  # (N, Ca)
        h = self.actor_mlp(torch.cat([f, self.actor_latent[slot]], -1))
        return _trunc_exp(h[:, 0]), h[:, 1:]

    # ------------------------------------------------------------------------------ rendering
    def render_rays(
        self,
        origins: Tensor,
        dirs: Tensor,
        actors: ActorState,
        group: Tensor | None = None,
        generator: torch.Generator | None = None,
        surface: SurfaceProxy | None = None,
        surface_samples: int = 1,
        surface_t: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Volume-render rays (world frame, unit ``dirs``).

        Args:
            origins, dirs: (R, 3).
            actors: actor boxes per ray group; ``group`` (R,) long picks each ray's group
                (default: all group 0).
            generator: when given, sample positions are jittered inside their intervals (training).
            surface: a baked background surface (:mod:`sim.recon.surface`; rendering only): the
                background becomes opaque at the ray's first surface hit, its features the
                weighted mean of ``surface_samples`` field evaluations around the hit;
                ``surface_t`` (R,) are the rays' surface hit distances when already known.

        Returns:
            ``feat`` (R, C), ``depth`` (R,) expected distance along the ray with the remaining
            transmittance at ``far_m``, ``acc`` (R,) opacity, ``acc_actor`` (R,) opacity from actor
            fields, ``t``/``w`` (R, S) sorted sample distances and weights.
        """
        cfg = self.cfg
        R = origins.shape[0]
        if group is None:
            group = torch.zeros(R, dtype=torch.long)
        jb = ja = None
        if generator is not None:
            jb = torch.rand(R, cfg.samples_bg, generator=generator)
        rendering = generator is None and not torch.is_grad_enabled()
        if surface is not None and rendering:
            tb, wb, sig_b, feat_b, vb = self._surface_background(origins, dirs, surface, surface_samples, surface_t)
        else:
            tb, wb, sig_b, feat_b, vb = self._volume_background(origins, dirs, jb, rendering)
        C = cfg.feat_dim
        act_b = torch.zeros_like(vb)
        A = actors.slot.shape[0]
        rows: Tensor | None = None  # rays with actor samples (None: all rays)
        cand: Tensor | None = None  # their candidate actors (rendering from one origin)
        merged = None
        if A > 0:
            sub_o, sub_d, sub_g, sub_actors = origins, dirs, group, actors
            if generator is None and not torch.is_grad_enabled():
                # rendering: only rays passing near an actor box get actor samples
                rows, keep, cand = self._actor_candidates(origins, dirs, group, actors)
                if rows.numel() > 0:
                    sub_o, sub_d, sub_g = origins[rows], dirs[rows], group[rows]
                    sub_actors = ActorState(actors.slot[keep], actors.pose[:, keep], actors.size[keep], actors.valid[:, keep])
            if rows is None or rows.numel() > 0:
                Ra, A_ = sub_o.shape[0], sub_actors.slot.shape[0]
                Mx = min(cfg.max_actors_per_ray, A_)
                if generator is not None:
                    ja = torch.rand(Ra, Mx, cfg.samples_actor, generator=generator)
                ta, wa, va, pn, slot = self._actor_samples(sub_o, sub_d, sub_g, sub_actors, ja, cand=cand)
                if rows is not None:  # keep the candidate rays that really cross a box
                    hit_rows = va.any(1)
                    rows, ta, wa, va, pn, slot = rows[hit_rows], ta[hit_rows], wa[hit_rows], va[hit_rows], pn[hit_rows], slot[hit_rows]
                sig_a = torch.zeros_like(ta)
                feat_a = torch.zeros(*ta.shape, C)
                if va.any():
                    s_, f_ = self.actor(pn[va], slot[va])
                    sig_a = sig_a.masked_scatter(va, s_)
                    feat_a = feat_a.index_put((va,), f_)
                ta = torch.where(va, ta, torch.full_like(ta, cfg.far_m * 2))
                bsel = (lambda x: x) if rows is None else (lambda x: x[rows])
                if rows is None or rows.numel() > 0:
                    merged = _merge_by_depth(
                        [bsel(tb), ta], [bsel(wb), wa], [bsel(sig_b), sig_a], [bsel(feat_b), feat_a], [bsel(act_b), va]
                    )
        if merged is not None and rows is None:
            f_sum, acc, d_sum, acc_act, tc, w = self._composite(*merged)
        else:
            f_sum, acc, d_sum, acc_act, tc, w = self._composite(tb, wb, sig_b, feat_b, act_b)
            if merged is not None:
                # rays near actors: composite their merged samples and overwrite those rows (the
                # other rows keep their short background sample lists)
                assert rows is not None
                mf, macc, md, mact, mt, mw = self._composite(*merged)
                f_sum, acc, d_sum, acc_act = f_sum.index_copy(0, rows, mf), acc.index_copy(0, rows, macc), d_sum.index_copy(0, rows, md), acc_act.index_copy(0, rows, mact)
                extra = mt.shape[1] - tc.shape[1]
                tc = torch.cat([tc, tc.new_full((R, extra), cfg.far_m)], 1).index_copy_(0, rows, mt)
                w = torch.cat([w, w.new_zeros(R, extra)], 1).index_copy_(0, rows, mw)
        sky = self.sky_mlp(_dir_encoding(dirs))
        out_feat = f_sum + (1.0 - acc)[:, None] * sky
        depth = d_sum + (1.0 - acc) * cfg.far_m
        return {
            "feat": out_feat, "depth": depth, "acc": acc, "acc_actor": acc_act,
            "t": tc, "w": w,
        }

    def _composite(self, t: Tensor, width: Tensor, sigma: Tensor, feat: Tensor, act: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Alpha-composite depth-sorted samples (R, S): weighted feature sum (R, C), opacity (R,),
        weighted distance sum (R,), actor opacity (R,), distances clamped to ``far_m`` and weights (R, S)."""
        R = t.shape[0]
        alpha = 1.0 - torch.exp(-sigma * width)
        trans = torch.cumprod(torch.cat([torch.ones(R, 1), 1.0 - alpha + 1e-7], 1), 1)[:, :-1]
        w = alpha * trans
        tc = t.clamp(max=self.cfg.far_m)
        f = w * feat[:, 0] if w.shape[1] == 1 else torch.bmm(w[:, None, :], feat)[:, 0]  # bmm is slow on (R, 1) batches
        return f, w.sum(1), (w * tc).sum(1), (w * act).sum(1), tc, w

    def _volume_background(self, origins: Tensor, dirs: Tensor, jb: Tensor | None, rendering: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Background samples of the volume renderer: distances, interval lengths, densities,
        features (R, K[, C]) and validity (R, K)."""
        cfg = self.cfg
        tb, wb, vb = self._bg_samples(origins, dirs, jb[:, : min(cfg.samples_bg, cfg.occupied_candidates)] if jb is not None else None)
        C = cfg.feat_dim
        sig_b = torch.zeros_like(tb)
        feat_b = torch.zeros(*tb.shape, C)
        K = tb.shape[1]
        # early ray termination (rendering only): background samples are evaluated in stages
        # (4, 4, the rest); a stage runs only on rays whose transmittance after the previous stages
        # is above `early_stop` (the skipped samples carry at most that much weight)
        bounds = sorted({min(4, K), min(8, K), K}) if rendering and self.early_stop > 0 else [K]
        k0 = 0
        for k1 in bounds:
            v = vb[:, k0:k1]
            if k0 > 0:
                v = v & (torch.exp(-(sig_b[:, :k0] * wb[:, :k0]).sum(1)) > self.early_stop)[:, None]
            if v.any():
                pts = (origins[:, None, :] + dirs[:, None, :] * tb[:, k0:k1, None])[v]
                s_, f_ = self.background(pts, tb[:, k0:k1][v])
                sig_b[:, k0:k1] = sig_b[:, k0:k1].masked_scatter(v, s_)
                feat_b[:, k0:k1] = feat_b[:, k0:k1].index_put((v,), f_)
            k0 = k1
        return tb, wb, sig_b, feat_b, vb

    def _surface_background(self, origins: Tensor, dirs: Tensor, surface: SurfaceProxy, samples: int,
                            th: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Background of the surface proxy: one opaque sample per ray at its first surface hit
        (none on a miss), with the weighted mean features of ``samples`` field evaluations
        spread over ``[t - spread_m, t + spread_m]``. Same outputs as :meth:`_volume_background`."""
        cfg = self.cfg
        R, C = origins.shape[0], cfg.feat_dim
        if th is None:
            th = torch.from_numpy(surface.first_hit(origins.numpy(), dirs.numpy())).to(torch.float32)
        hit = torch.isfinite(th) & (th < cfg.far_m)
        feat = torch.zeros(R, C)
        rows = hit.nonzero().squeeze(1)
        if rows.numel():
            K = max(int(samples), 1)
            sp = float(surface.cfg.spread_m)
            offs = torch.linspace(-sp, sp, K) if K > 1 else torch.zeros(1)
            t = (th[rows, None] + offs[None]).clamp(min=cfg.near_m)  # (H, K)
            pts = origins[rows, None, :] + dirs[rows, None, :] * t[..., None]
            s_, f_ = self.background(pts.reshape(-1, 3), t.reshape(-1))
            f_ = f_.reshape(-1, K, C)
            if K > 1:
                alpha = 1.0 - torch.exp(-s_.reshape(-1, K) * (2.0 * sp / (K - 1)))
                trans = torch.cumprod(torch.cat([torch.ones(alpha.shape[0], 1), 1.0 - alpha + 1e-7], 1), 1)[:, :-1]
                w = alpha * trans
                w = torch.where(w.sum(1, keepdim=True) > 1e-6, w, torch.ones_like(w))
                feat[rows] = torch.bmm((w / w.sum(1, keepdim=True))[:, None, :], f_)[:, 0]
            else:
                feat[rows] = f_[:, 0]
        tb = torch.where(hit, th, torch.full_like(th, cfg.far_m * 2))[:, None]
        sig_b = torch.where(hit, torch.full_like(th, 1e4), torch.zeros_like(th))[:, None]
        return tb, torch.ones_like(tb), sig_b, feat[:, None, :], hit[:, None]

    def _cone_candidates(self, o: Tensor, d: Tensor, actors: ActorState) -> tuple[Tensor, Tensor]:
        """Rays (R, 3) from one origin ``o`` (3,) against the bounding spheres of the actors of pose
        group 0: (R, A) bool, the ray passes the sphere (its angle to the centre is within
        asin(radius / distance), every ray when the origin is inside the sphere; one matrix
        product), and (A,) the distance (m, >= 0) at which a ray enters each sphere at the earliest."""
        cfg = self.cfg
        pose, valid = actors.pose[0], actors.valid[0]
        ctr = torch.stack([pose[:, 0], pose[:, 1], pose[:, 2] + actors.size[:, 2] * 0.5], -1)
        rad = 0.5 * cfg.actor_margin * actors.size.norm(dim=-1)
        rel = ctr - o  # (A, 3)
        dist = rel.norm(dim=-1).clamp(min=1e-9)
        cos_lim = torch.sqrt((1.0 - (rad / dist) ** 2).clamp(min=0.0)) - 1e-4  # float32 slack: stay conservative
        cosang = d @ (rel / dist[:, None]).T  # (R, A)
        inside = dist <= rad
        reach = (dist - rad < cfg.far_m) & (dist + rad > cfg.near_m)
        hit = valid[None] & reach[None] & (inside[None] | ((cosang >= cos_lim[None]) & (cosang > 0)))
        return hit, (dist - rad).clamp(min=0.0)

    def _actor_candidates(self, o: Tensor, d: Tensor, group: Tensor, actors: ActorState) -> tuple[Tensor, Tensor, Tensor | None]:
        """Rays whose line passes through the bounding sphere of a valid actor box (scaled by the
        margin) between ``near_m`` and ``far_m`` (a superset of the rays hitting a box), as indices
        (Ra,), the actor indices (A',) hit by any of them, and for rays from one origin the
        (Ra, A') candidate pairs (else None)."""
        cfg = self.cfg
        pose = actors.pose[0][None] if actors.pose.shape[0] == 1 else actors.pose[group]  # (R|1, A, 4)
        valid = actors.valid[0][None] if actors.valid.shape[0] == 1 else actors.valid[group]
        ctr = torch.stack([pose[..., 0], pose[..., 1], pose[..., 2] + actors.size[None, :, 2] * 0.5], -1)
        rad = 0.5 * cfg.actor_margin * actors.size.norm(dim=-1)[None]  # (1, A)
        if ctr.shape[0] == 1 and bool((o == o[:1]).all()):
            hit, _ = self._cone_candidates(o[0], d, actors)
            rows, keep = hit.any(1).nonzero().squeeze(1), hit.any(0).nonzero().squeeze(1)
            return rows, keep, hit[rows][:, keep]
        if ctr.shape[0] == 1:  # one pose group: (R, A) products as matrix products
            c = ctr[0]
            proj = d @ c.T - (o * d).sum(-1, keepdim=True)
            dist2 = (c * c).sum(-1)[None] - 2.0 * (o @ c.T) + (o * o).sum(-1, keepdim=True) - proj * proj
            slack = 1e-3 * (1.0 + (c * c).sum(-1)[None])  # float32 cancellation; the test stays conservative
        else:
            rel = ctr - o[:, None, :]  # (R, A, 3)
            proj = (rel * d[:, None, :]).sum(-1)
            dist2 = (rel * rel).sum(-1) - proj * proj
            slack = torch.zeros(())
        hit = valid & (dist2 <= rad * rad + slack) & (proj + rad > cfg.near_m) & (proj - rad < cfg.far_m)
        return hit.any(1).nonzero().squeeze(1), hit.any(0).nonzero().squeeze(1), None

    def lidar_outputs(self, r: dict[str, Tensor]) -> dict[str, Tensor]:
        """LiDAR head on rendered rays: ``range`` (m), ``intensity`` [0, 1], ``drop_logit``."""
        h = self.lidar_head(torch.cat([r["feat"], r["acc"][:, None]], -1))
        return {"range": r["depth"], "intensity": torch.sigmoid(h[:, 0]), "drop_logit": h[:, 1]}

    def decode(self, feat_img: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, h, w) feature image -> RGB (B, 3, h*s, w*s) in [0, 1] and the low-res auxiliary
        RGB (B, 3, h, w)."""
        s = self.cfg.upsample
        aux = self.rgb_head(feat_img.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        base = F.interpolate(aux, scale_factor=s, mode="bilinear", align_corners=False)
        res = F.pixel_shuffle(self.decoder(feat_img), s)
        return torch.sigmoid(base + res), torch.sigmoid(aux)

    # ------------------------------------------------------------------------------ sensors
    @staticmethod
    def camera_rays(c2w: Tensor, K: Tensor, width: int, height: int, s: int) -> tuple[Tensor, Tensor, Tensor]:
        """World rays through the centres of ``s`` x ``s`` pixel blocks of a pinhole camera.

        Args:
            c2w: (4, 4) camera-to-world, OpenGL camera axes. K: (3, 3) intrinsics (full resolution).

        Returns:
            origins (h*w, 3), unit dirs (h*w, 3), and the cosine to the optical axis (h*w,),
            with ``h = ceil(height / s)``, ``w = ceil(width / s)``.
        """
        h, w = -(-height // s), -(-width // s)
        v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
        u = u * s + s * 0.5
        v = v * s + s * 0.5
        x = (u - K[0, 2]) / K[0, 0]
        y = (v - K[1, 2]) / K[1, 1]
        d_cam = torch.stack([x, -y, -torch.ones_like(x)], -1).reshape(-1, 3)  # OpenGL axes
        n = d_cam.norm(dim=-1, keepdim=True)
        d = (d_cam / n) @ c2w[:3, :3].T.to(torch.float32)
        o = c2w[:3, 3].to(torch.float32).expand_as(d)
        return o.contiguous(), d.contiguous(), (1.0 / n[:, 0])

    @torch.no_grad()
    def render_camera(
        self, c2w: Tensor, K: Tensor, width: int, height: int, actors: ActorState, chunk: int | None = None,
        surface: SurfaceProxy | None = None,
    ) -> dict[str, Tensor]:
        """Render a camera (see :meth:`camera_rays`): ``rgb`` (H, W, 3) float in [0, 1], ``depth``
        (H, W) z-depth along the optical axis (m, nearest-upsampled from the feature image),
        ``acc`` (H, W) opacity and ``acc_actor`` (H, W) actor opacity. With a ``surface`` proxy
        the background is its baked surface (:mod:`sim.recon.surface`)."""
        s = self.cfg.upsample
        h, w = -(-height // s), -(-width // s)
        o, d, cos = self.camera_rays(c2w, K, width, height, s)
        ks = surface.cfg.samples if surface is not None else 1
        chunk = chunk or (SURFACE_CHUNK if surface is not None else VOLUME_CHUNK)
        outs = [self.render_rays(o[i : i + chunk], d[i : i + chunk], actors, surface=surface, surface_samples=ks) for i in range(0, o.shape[0], chunk)]
        feat = torch.cat([r["feat"] for r in outs]).reshape(h, w, -1).permute(2, 0, 1)[None]
        rgb, _ = self.decode(feat)
        rgb = rgb[0].permute(1, 2, 0)[:height, :width]

        def up(x: Tensor) -> Tensor:
            return x.reshape(h, w).repeat_interleave(s, 0).repeat_interleave(s, 1)[:height, :width]

        depth = torch.cat([r["depth"] for r in outs]) * cos
        acc = torch.cat([r["acc"] for r in outs])
        depth = torch.where(acc > 0.5, depth, torch.full_like(depth, float("inf")))
        return {"rgb": rgb, "depth": up(depth), "acc": up(acc), "acc_actor": up(torch.cat([r["acc_actor"] for r in outs]))}

    def _lidar_from_surface(self, o: Tensor, d: Tensor, actors: ActorState, surface: SurfaceProxy) -> dict[str, Tensor]:
        """LiDAR on a baked surface with per-vertex LiDAR values: a ray that passes no actor box
        returns at its surface hit with the interpolated intensity / drop of the vertices (no field
        evaluation); rays near actors are rendered by :meth:`render_rays` (surface background +
        actor fields); a ray that misses the surface returns nothing (range ``far_m``, dropped)."""
        assert surface.vertex_lidar is not None
        R = o.shape[0]
        t, prim, u, v = surface.hits(o.numpy(), d.numpy())
        hit = np.isfinite(t) & (t < self.cfg.far_m)
        rng = np.where(hit, t, self.cfg.far_m).astype(np.float32)
        logits = np.zeros((R, 2), np.float32)
        logits[:, 1] = 20.0  # misses: dropped
        if hit.any():
            logits[hit] = surface.interpolate(surface.vertex_lidar, prim[hit], u[hit], v[hit])
        out = {"range": torch.from_numpy(rng), "intensity": torch.from_numpy(_sigmoid(logits[:, 0]).astype(np.float32)),
               "drop_prob": torch.from_numpy(_sigmoid(logits[:, 1]).astype(np.float32)), "acc_actor": torch.zeros(R)}
        if actors.slot.shape[0] > 0:
            near, entry = self._cone_candidates(o[0], d, actors)
            # rays near an actor whose background hit is not in front of that actor's sphere
            th = torch.from_numpy(np.where(hit, t, np.inf).astype(np.float32))
            rows = (near & (entry[None] < th[:, None])).any(1).nonzero().squeeze(1)
            if rows.numel():
                r = self.render_rays(o[rows], d[rows], actors, surface=surface, surface_samples=surface.cfg.lidar_samples,
                                     surface_t=th[rows])
                li = self.lidar_outputs(r)
                for k, val in (("range", li["range"]), ("intensity", li["intensity"]), ("drop_prob", torch.sigmoid(li["drop_logit"])),
                               ("acc_actor", r["acc_actor"])):
                    out[k] = out[k].index_copy(0, rows, val.to(out[k].dtype))
        return out

    @torch.no_grad()
    def render_lidar(
        self, sensor_to_world: Tensor, dirs_sensor: Tensor, actors: ActorState, chunk: int | None = None,
        surface: SurfaceProxy | None = None,
    ) -> dict[str, Tensor]:
        """Render LiDAR rays from a sensor pose (4x4) along (N, 3) unit directions in the sensor
        frame: ``range`` (N,) m, ``intensity`` (N,), ``drop_prob`` (N,), ``acc_actor`` (N,). With a
        ``surface`` proxy the background is its baked surface (:mod:`sim.recon.surface`)."""
        d = dirs_sensor.to(torch.float32) @ sensor_to_world[:3, :3].T.to(torch.float32)
        o = sensor_to_world[:3, 3].to(torch.float32).expand_as(d).contiguous()
        if surface is not None and surface.vertex_lidar is not None:
            return self._lidar_from_surface(o, d, actors, surface)
        ks = surface.cfg.lidar_samples if surface is not None else 1
        chunk = chunk or (SURFACE_CHUNK if surface is not None else VOLUME_CHUNK)
        outs = []
        for i in range(0, d.shape[0], chunk):
            r = self.render_rays(o[i : i + chunk], d[i : i + chunk], actors, surface=surface, surface_samples=ks)
            li = self.lidar_outputs(r)
            outs.append((li["range"], li["intensity"], torch.sigmoid(li["drop_logit"]), r["acc_actor"]))
        rng, inten, drop, aa = (torch.cat(x) for x in zip(*outs, strict=True))
        return {"range": rng, "intensity": inten, "drop_prob": drop, "acc_actor": aa}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def pack_occupancy(occ: Tensor) -> np.ndarray:
    """Bool grid -> packed uint8 bytes (for compact storage)."""
    return np.packbits(occ.cpu().numpy().reshape(-1).astype(np.uint8))


def unpack_occupancy(packed: np.ndarray, shape: tuple[int, int, int]) -> Tensor:
    n = int(np.prod(shape))
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8))[:n]
    return torch.from_numpy(bits.astype(bool).reshape(shape))
