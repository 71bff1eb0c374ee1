"""The baked background surface (sim.recon.surface) on an analytic field: a solid ground below
z = 0 and a solid block, with colour features that vary in space. Its geometry is known, so the
bake, the level calibration, the Embree hits and the surface-mode renders can be checked exactly
against it and against the volume renderer of the same field."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sim.recon.scene import ActorState, SceneConfig, SceneModel
from sim.recon.surface import SurfaceConfig, bake_surface

BLOCK = ((6.0, 10.0), (-2.0, 2.0), (0.0, 3.0))  # x, y, z ranges of the solid block (m)


class _Positions(nn.Module):
    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return p


class _Analytic(nn.Module):
    """Pre-activation density (large inside the solids, very negative outside) and features."""

    def __init__(self, feat_dim: int) -> None:
        super().__init__()
        self.feat_dim = feat_dim

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        inside = p[:, 2] < 0.0
        (x0, x1), (y0, y1), (z0, z1) = BLOCK
        inside |= (p[:, 0] > x0) & (p[:, 0] < x1) & (p[:, 1] > y0) & (p[:, 1] < y1) & (p[:, 2] > z0) & (p[:, 2] < z1)
        h = torch.where(inside, torch.full_like(p[:, 0], 6.0), torch.full_like(p[:, 0], -12.0))
        f = torch.stack([torch.sin(0.5 * p[:, 0] + k) + 0.1 * p[:, 1] for k in range(self.feat_dim)], 1)
        return torch.cat([h[:, None], f], 1)


def analytic_model() -> SceneModel:
    cfg = SceneConfig(aabb_min=(-20.0, -20.0, -2.0), aabb_max=(20.0, 20.0, 6.0), occ_voxel_m=0.3, occ_shape=(134, 134, 27), upsample=2)
    occ = torch.zeros(cfg.occ_shape, dtype=torch.bool)
    z = np.arange(cfg.occ_shape[2]) * cfg.occ_voxel_m + cfg.aabb_min[2] + 0.15
    x = np.arange(cfg.occ_shape[0]) * cfg.occ_voxel_m + cfg.aabb_min[0] + 0.15
    y = np.arange(cfg.occ_shape[1]) * cfg.occ_voxel_m + cfg.aabb_min[1] + 0.15
    occ[:, :, torch.from_numpy(np.abs(z) < 0.5)] = True  # the ground's skin
    X, Y, Z = np.meshgrid(x, y, z, indexing="ij")
    (x0, x1), (y0, y1), (z0, z1) = BLOCK
    near_block = (np.abs(X - (x0 + x1) / 2) < (x1 - x0) / 2 + 0.5) & (np.abs(Y - (y0 + y1) / 2) < (y1 - y0) / 2 + 0.5) & (np.abs(Z - (z0 + z1) / 2) < (z1 - z0) / 2 + 0.5)
    occ |= torch.from_numpy(near_block)
    m = SceneModel(cfg, occ)
    m.bg_grid = _Positions()
    m.bg_mlp = _Analytic(cfg.feat_dim)
    m.eval()
    return m


@pytest.fixture(scope="module")
def model() -> SceneModel:
    return analytic_model()


def _fan(origin: tuple[float, float, float], n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    el = rng.uniform(-0.5, 0.05, n)
    az = rng.uniform(-np.pi, np.pi, n)
    d = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], 1)
    return np.repeat(np.asarray(origin, float)[None], n, 0), d


def _truth(o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Exact distance to the ground plane or the block (slab test), inf on a miss."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(d[:, 2] < 0, -o[:, 2] / d[:, 2], np.inf)
        lo = np.array([b[0] for b in BLOCK])
        hi = np.array([b[1] for b in BLOCK])
        t1, t2 = (lo - o) / d, (hi - o) / d
    tmin = np.nanmax(np.minimum(t1, t2), 1)
    tmax = np.nanmin(np.maximum(t1, t2), 1)
    tb = np.where((tmax >= tmin) & (tmax > 0), np.maximum(tmin, 0), np.inf)
    return np.minimum(t, tb)


def _sdf(p: np.ndarray) -> np.ndarray:
    """Signed distance (m) to the solids (ground below z = 0 and the block), positive outside."""
    lo = np.array([b[0] for b in BLOCK])
    hi = np.array([b[1] for b in BLOCK])
    q = np.abs(p - (lo + hi) / 2) - (hi - lo) / 2
    box = np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(1), 0)
    return np.minimum(p[:, 2], box)


def test_calibrated_surface_hits_the_true_geometry(model):
    proxy = bake_surface(model, origins=np.array([[0.0, 0.0, 1.8], [3.0, 5.0, 1.8]]))
    assert proxy.triangles > 1000
    # a sharp field: the calibration finds a level whose surface agrees with volume rendering
    # (well enough for the renderer's ``auto`` mode to use it)
    from sim.render.neural import AUTO_SURFACE_MAX_REL_ERR

    assert proxy.calib_rel_err < AUTO_SURFACE_MAX_REL_ERR and proxy.calib_err_m < 0.3
    o, d = _fan((0.0, 0.0, 1.8))
    t, truth = proxy.first_hit(o, d), _truth(o, d)
    p_true = o + d * np.where(np.isfinite(truth), truth, 0.0)[:, None]
    both = np.isfinite(truth) & (np.abs(p_true[:, :2]) < 19.0).all(1)  # hits inside the modelled box
    assert np.isfinite(t[both]).mean() > 0.99
    assert not np.isfinite(t[~np.isfinite(truth)]).any()  # rays into the sky miss
    # hits lie on the true surfaces to within the 0.3 m bake grid (a step-function field)
    hits = o[both] + d[both] * t[both, None]
    dist = np.abs(_sdf(hits))
    assert np.median(dist) < 0.15 and np.percentile(dist, 90) < 0.3
    # and the same settings bake the same mesh (deterministic)
    again = bake_surface(model, origins=np.array([[0.0, 0.0, 1.8], [3.0, 5.0, 1.8]]))
    assert np.array_equal(again.faces, proxy.faces) and np.array_equal(again.vertices, proxy.vertices)


def test_surface_renders_agree_with_volume_renders(model):
    fixed = bake_surface(model, SurfaceConfig(level=5.0))  # a given level is used as is
    assert fixed.level == 5.0 and np.isnan(fixed.calib_err_m) and fixed.triangles > 1000
    proxy = bake_surface(model, origins=np.array([[0.0, 0.0, 1.8]]))
    c2w = torch.eye(4)
    # camera at (0, 0, 1.5) looking along +x (OpenGL: -z forward), slightly down
    R = torch.tensor([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    tilt = torch.tensor([[1.0, 0.0, 0.0], [0.0, np.cos(-0.2), -np.sin(-0.2)], [0.0, np.sin(-0.2), np.cos(-0.2)]], dtype=torch.float32)
    c2w[:3, :3] = R @ tilt
    c2w[:3, 3] = torch.tensor([0.0, 0.0, 1.5])
    K = torch.tensor([[40.0, 0.0, 32.0], [0.0, 40.0, 24.0], [0.0, 0.0, 1.0]])
    none = ActorState.empty()
    vol = model.render_camera(c2w, K, 64, 48, none)
    srf = model.render_camera(c2w, K, 64, 48, none, surface=proxy)
    both = (vol["acc"] > 0.99) & (srf["acc"] > 0.99)
    assert both.float().mean() > 0.5
    assert (srf["depth"][both] - vol["depth"][both]).abs().median() < 0.3
    assert (srf["rgb"] - vol["rgb"]).abs().median() < 0.03
    # the sky stays sky (they differ only on rays grazing the ground near the horizon)
    assert ((vol["acc"] < 0.01) == (srf["acc"] < 0.01)).float().mean() > 0.94
    # LiDAR: ranges along a fan
    dirs = torch.from_numpy(_fan((0.0, 0.0, 0.0), 1500, seed=1)[1]).to(torch.float32)
    s2w = torch.eye(4)
    s2w[2, 3] = 1.8
    lv = model.render_lidar(s2w, dirs, none)
    ls = model.render_lidar(s2w, dirs, none, surface=proxy)
    hit = lv["range"] < 30.0
    assert hit.float().mean() > 0.5
    assert (ls["range"][hit] - lv["range"][hit]).abs().median() < 0.3
    pts = (dirs[hit] * ls["range"][hit, None]).numpy() + np.array([0.0, 0.0, 1.8])
    assert np.median(np.abs(_sdf(pts))) < 0.15
    # the LiDAR values baked at the vertices match the field evaluated at each hit
    assert proxy.vertex_lidar is not None and proxy.vertex_lidar.shape == (len(proxy.vertices), 2)
    baked = proxy.vertex_lidar
    proxy.vertex_lidar = None
    evaluated = model.render_lidar(s2w, dirs, none, surface=proxy)
    proxy.vertex_lidar = baked
    assert torch.equal(evaluated["range"], ls["range"])
    assert (evaluated["intensity"][hit] - ls["intensity"][hit]).abs().median() < 0.02
    assert ((evaluated["drop_prob"] < 0.5) == (ls["drop_prob"] < 0.5)).float().mean() > 0.98


class _AnalyticWithPhantom(_Analytic):
    """The analytic field plus dense "phantom" matter just above the ground's occupied skin, in
    cells the occupancy grid leaves empty (where a trained field is never sampled, so anything
    can be there)."""

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        out = super().forward(p)
        ghost = (p[:, 2] > 0.45) & (p[:, 2] < 0.75) & (p[:, 0] > -15.0) & (p[:, 0] < -10.0) & (p[:, 1].abs() < 5.0)
        out[:, 0] = torch.where(ghost, torch.full_like(out[:, 0], 6.0), out[:, 0])
        return out


def test_bake_ignores_density_outside_occupied_cells() -> None:
    """The volume renderer samples occupied cells only; the bake must not turn density in the
    empty cells next to them (never trained) into a surface the renderer never shows."""
    m = analytic_model()
    m.bg_mlp = _AnalyticWithPhantom(m.cfg.feat_dim)
    ghost_pts = torch.tensor([[-12.5, 0.0, 0.6], [-11.0, 3.0, 0.5]])
    assert not m.occupied(ghost_pts).any()  # the phantom lies in empty cells only
    proxy = bake_surface(m, SurfaceConfig(level=1.0))
    xs, ys = np.meshgrid(np.linspace(-14.5, -10.5, 9), np.linspace(-4.5, 4.5, 9), indexing="ij")
    o = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, 3.0)], 1)
    d = np.tile([0.0, 0.0, -1.0], (len(o), 1))
    t = proxy.first_hit(o, d)
    assert np.isfinite(t).all()
    # rays straight down over the phantom hit the ground (z = 0), not the phantom at z 0.45-0.75
    assert np.abs(t - 3.0).max() < 0.3, np.round(t, 2)
    # and the volume renderer of the same field agrees: it never samples the empty cells
    r = m.render_rays(torch.from_numpy(o).float(), torch.from_numpy(d).float(), ActorState.empty())
    assert np.abs(r["depth"].numpy() - 3.0).max() < 0.3
