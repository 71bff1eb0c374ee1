"""A surface proxy of a scene's background field, for fast rendering in the loop.

The volume renderer (:meth:`sim.recon.scene.SceneModel.render_rays`) marches every ray through the
occupancy grid and evaluates the hash-grid field at up to ``samples_bg`` points: about 11 field
evaluations per ray, which is most of a render's time. The background is static, so its geometry
can be baked once per bundle:

1. the field's density is evaluated on the corners of the occupied cells (``subdivide`` x finer
   than the occupancy grid); everywhere else it is zero, as in the volume renderer, which samples
   occupied cells only (bake version 2; version 1 also evaluated the never-trained cells around
   them, where an untrained density could bake a phantom surface);
2. marching cubes (scikit-image) extracts the iso-surface at ``level`` (density, 1/m). By default
   the level is **calibrated**: calibration rays (LiDAR-like fans from given origins, e.g. points
   of the logged ego path) are volume-rendered, and of a geometric ladder of levels the one whose
   surface hits agree best with the rendered depths (median absolute difference) is kept -- an
   under-trained, diffuse field gets a low level, a sharp one a higher level;
3. Embree (``embreex``) intersects rays with that mesh.

A ray that hits the mesh at distance ``t`` then needs only ``samples`` field evaluations around
``t`` (the features are averaged with the volume-rendering weights of those samples and the
background is treated as opaque at ``t``); a ray that misses sees the sky. Actor fields are still
volume-rendered and merged by depth with that opaque background sample, so edited actors behave
as in the volume renderer. Colours and LiDAR intensities still come from the learned field and
decoders; only the background geometry is the extracted surface (thin, semi-transparent structure
finer than the bake resolution is lost; ``loopdrive bench neural-surface`` measures the
difference against the volume renderer and the mesh ground truth).

Everything here is pose-independent: the proxy is built once per model and reused by every render.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

__all__ = ["BAKE_VERSION", "SurfaceConfig", "SurfaceProxy", "bake_surface", "bake_vertex_lidar"]

#: version of :func:`bake_surface`'s procedure; a bundle's stored surface of another version is baked again
BAKE_VERSION = 2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SurfaceConfig:
    """Settings of the baked background surface.

    Attributes:
        level: iso-density of the surface (1/m); None calibrates it against volume-rendered
            depths (see the module docstring). Lower puts the surface in front of the volume
            renderer's expected depth, higher behind it.
        subdivide: grid points per occupancy cell edge (1: the occupancy resolution, 0.3 m).
        samples: field evaluations per camera ray around the hit.
        lidar_samples: field evaluations per LiDAR ray around the hit.
        spread_m: the samples span ``[t - spread_m, t + spread_m]`` around the hit distance.
        min_opacity, opacity_depth_m: faint density (a ghost of a moved actor, floaters of an
            under-trained field) can cross the iso-level without being opaque; a triangle is
            kept only where the opacity accumulated along the density gradient over
            ``opacity_depth_m`` behind the surface reaches ``min_opacity``.
    """

    level: float | None = None
    subdivide: int = 1
    samples: int = 3
    lidar_samples: int = 1
    spread_m: float = 0.15
    min_opacity: float = 0.5
    opacity_depth_m: float = 0.9


class SurfaceProxy:
    """The extracted background surface of a model and its Embree scene (world frame, metres)."""

    def __init__(self, vertices: NDArray[np.float32], faces: NDArray[np.int32], cfg: SurfaceConfig, level: float | None = None) -> None:
        from embreex import rtcore_scene
        from embreex.mesh_construction import TriangleMesh

        self.cfg = cfg
        #: the iso-density the surface was extracted at (1/m; ``cfg.level`` or the calibrated one)
        self.level = float(level if level is not None else (cfg.level if cfg.level is not None else float("nan")))
        #: calibration: median |surface hit - volume-rendered depth| (m) and relative to the depth
        #: on the calibration rays (nan when the level was given)
        self.calib_err_m = float("nan")
        self.calib_rel_err = float("nan")
        self.vertices = np.ascontiguousarray(vertices, dtype=np.float32)
        self.faces = np.ascontiguousarray(faces, dtype=np.int32)
        #: the LiDAR head's two outputs (intensity logit, drop logit) at each vertex, for an opaque
        #: hit (:func:`bake_vertex_lidar`); None until baked
        self.vertex_lidar: NDArray[np.float32] | None = None
        # Embree works in float32: shift to the mesh's own origin to keep precision
        self.origin = self.vertices.min(axis=0) if len(self.vertices) else np.zeros(3, np.float32)
        self._scene = rtcore_scene.EmbreeScene()
        if len(self.faces):
            TriangleMesh(scene=self._scene, vertices=self.vertices - self.origin, indices=self.faces)

    @property
    def triangles(self) -> int:
        return len(self.faces)

    def first_hit(self, origins: NDArray[np.floating], dirs: NDArray[np.floating]) -> NDArray[np.float64]:
        """Distance (m) along each unit ray (N, 3) to the first surface hit, ``inf`` on a miss
        (Embree's float32 ``tfar`` in a frame anchored at the mesh: sub-millimetre error)."""
        return self.hits(origins, dirs)[0]

    def hits(self, origins: NDArray[np.floating], dirs: NDArray[np.floating]) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.float32], NDArray[np.float32]]:
        """First hits of unit rays (N, 3): distance (m, ``inf`` on a miss), triangle index (-1 on a
        miss) and the barycentric coordinates ``u``, ``v`` of the hit in that triangle."""
        n = len(origins)
        if not len(self.faces) or not n:
            return np.full(n, np.inf), np.full(n, -1, np.int64), np.zeros(n, np.float32), np.zeros(n, np.float32)
        o = np.asarray(origins, dtype=np.float64)
        r = self._scene.run((o - self.origin).astype(np.float32), np.asarray(dirs, dtype=np.float32), output=1)
        hit = r["geomID"] >= 0
        t = np.where(hit, r["tfar"], np.inf).astype(np.float64)
        return t, np.where(hit, r["primID"], -1).astype(np.int64), r["u"].astype(np.float32), r["v"].astype(np.float32)

    def interpolate(self, values: NDArray[np.floating], prim: NDArray[np.int64], u: NDArray[np.float32], v: NDArray[np.float32]) -> NDArray[np.float32]:
        """Per-vertex ``values`` (V, K) interpolated at hits (triangle ``prim`` >= 0, barycentric
        ``u``, ``v``) -> (N, K)."""
        f = self.faces[prim]
        a, b, c = (np.asarray(values, np.float32)[f[:, k]] for k in range(3))
        return ((1.0 - u - v)[:, None] * a + u[:, None] * b + v[:, None] * c).astype(np.float32)


@torch.no_grad()
def bake_vertex_lidar(model: torch.nn.Module, proxy: SurfaceProxy, chunk: int = 65536) -> NDArray[np.float32]:
    """Evaluate the LiDAR head on the background field at every vertex of ``proxy`` as an
    opaque hit (opacity 1): (V, 2) intensity and drop logits; stored in ``proxy.vertex_lidar``."""
    out = []
    for i in range(0, len(proxy.vertices), chunk):
        _, feat = model.background(torch.from_numpy(proxy.vertices[i : i + chunk]))  # type: ignore[operator]
        out.append(model.lidar_head(torch.cat([feat, torch.ones(feat.shape[0], 1)], 1)))  # type: ignore[operator]
    proxy.vertex_lidar = (torch.cat(out).numpy() if out else np.zeros((0, 2))).astype(np.float32)
    return proxy.vertex_lidar


LEVELS = tuple(float(x) for x in np.geomspace(0.3, 60.0, 10))


def calibration_rays(origins: NDArray[np.floating], beams: int = 12, azimuths: int = 180) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """LiDAR-like fans of unit rays (elevation -25..+3 deg, full azimuth) from each of ``origins``
    (K, 3) world points: origins and directions (K * beams * azimuths, 3)."""
    el = np.deg2rad(np.linspace(-25.0, 3.0, beams))
    az = np.linspace(-np.pi, np.pi, azimuths, endpoint=False)
    e, a = np.meshgrid(el, az, indexing="ij")
    d = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], -1).reshape(-1, 3)
    o = np.repeat(np.asarray(origins, np.float64).reshape(-1, 3), len(d), 0)
    return o.astype(np.float32), np.tile(d, (len(np.asarray(origins).reshape(-1, 3)), 1)).astype(np.float32)


@torch.no_grad()
def bake_surface(model: torch.nn.Module, cfg: SurfaceConfig = SurfaceConfig(), chunk: int = 65536,
                 origins: NDArray[np.floating] | None = None) -> SurfaceProxy:
    """Extract the iso-surface of ``model``'s background density (see the module docstring).

    ``model`` is a :class:`sim.recon.scene.SceneModel`; the density is evaluated on the corners of
    occupied occupancy cells (elsewhere it is taken as zero, as the volume renderer does). ``origins`` (K, 3)
    world points (m) seed the calibration rays when ``cfg.level`` is None (default: the centres
    of 8 random occupied columns, 1.8 m above their lowest occupied cell)."""
    from skimage.measure import marching_cubes

    t0 = time.perf_counter()
    occ: Tensor = model.occupancy  # type: ignore[assignment]
    if not bool(occ.any()):
        return SurfaceProxy(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), cfg)
    sub = max(int(cfg.subdivide), 1)
    step = float(model.cfg.occ_voxel_m) / sub  # type: ignore[union-attr]
    # the volume renderer samples occupied cells only, so the field counts only there: it is
    # evaluated on the corners of occupied cells and taken as empty elsewhere (outside them it was
    # never trained, and an untrained density above the level would bake a phantom surface)
    cells = occ.repeat_interleave(sub, 0).repeat_interleave(sub, 1).repeat_interleave(sub, 2) if sub > 1 else occ
    gx, gy, gz = (int(s) + 1 for s in cells.shape)
    need = torch.zeros(gx, gy, gz, dtype=torch.bool)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                need[dx : dx + gx - 1, dy : dy + gy - 1, dz : dz + gz - 1] |= cells
    idx = need.nonzero()
    log_sigma = torch.full((gx, gy, gz), -30.0)
    vals = []
    amin = model.aabb_min  # type: ignore[union-attr]
    for i in range(0, idx.shape[0], chunk):
        p = amin + idx[i : i + chunk].to(torch.float32) * step
        vals.append(model.bg_mlp(model.encode(p))[:, 0])  # type: ignore[operator]
    log_sigma[need] = torch.cat(vals)
    grid = log_sigma.numpy()
    hmax = float(grid.max())

    def extract(level: float) -> SurfaceProxy:
        # the field's density is trunc_exp(h): the iso-surface sigma = level is h = log(level)
        if np.log(level) >= hmax:
            return SurfaceProxy(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), cfg, level)
        verts, faces, _, _ = marching_cubes(grid, level=float(np.log(level)), allow_degenerate=False)
        faces = faces[_opaque(grid, verts, faces, step, cfg)]
        return SurfaceProxy((verts * step + amin.numpy()).astype(np.float32), faces.astype(np.int32), cfg, level)

    if cfg.level is not None:
        proxy = extract(cfg.level)
    else:
        if origins is None:
            origins = _default_origins(occ, amin.numpy(), float(model.cfg.occ_voxel_m))  # type: ignore[union-attr]
        o, d = calibration_rays(origins)
        r = model.render_rays(torch.from_numpy(o), torch.from_numpy(d), _no_actors())  # type: ignore[operator]
        ok = (r["acc"] > 0.9).numpy()
        depth = r["depth"].numpy().astype(np.float64)[ok]
        # first crossing of each level along the rays, on the baked grid (all levels at once)
        t = np.arange(float(model.cfg.near_m), float(model.cfg.far_m), 0.5 * step)  # type: ignore[union-attr]
        from scipy.ndimage import map_coordinates

        oo, dd = (o[ok].astype(np.float64) - amin.numpy()) / step, d[ok].astype(np.float64) / step
        h = np.empty((len(oo), len(t)), np.float32)
        for i in range(0, len(oo), 1024):
            pts = oo[i : i + 1024, None, :] + dd[i : i + 1024, None, :] * t[None, :, None]
            h[i : i + 1024] = map_coordinates(grid, pts.reshape(-1, 3).T, order=1, mode="constant", cval=-30.0).reshape(pts.shape[:2])
        best: tuple[float, float, float] | None = None
        for level in LEVELS:
            above = h >= np.log(level)
            first = above.argmax(1)
            th = np.where(above.any(1), t[first], float(model.cfg.far_m))  # type: ignore[union-attr]
            diff = np.abs(th - depth)
            err = float(np.median(diff))
            log.debug("surface level %.2f: median depth difference %.3f m", level, err)
            if best is None or err < best[0]:
                best = (err, float(np.median(diff / np.maximum(depth, 1e-3))), level)
        assert best is not None
        proxy = extract(best[2])
        proxy.calib_err_m, proxy.calib_rel_err = best[0], best[1]
        log.info("calibrated the surface level to %.2f /m (median depth difference %.3f m on %d rays)", proxy.level, best[0], int(ok.sum()))
    bake_vertex_lidar(model, proxy)
    log.info("baked the background surface: %d field evaluations, %d triangles, %.1f s", idx.shape[0], proxy.triangles, time.perf_counter() - t0)
    return proxy


def _opaque(grid: NDArray[np.float32], verts: NDArray[np.floating], faces: NDArray[np.integer], step: float, cfg: SurfaceConfig) -> NDArray[np.bool_]:
    """Which faces are opaque: the mean over their vertices of ``1 - exp(-sum sigma ds)``
    integrated from the vertex along the density gradient (into the surface) over
    ``cfg.opacity_depth_m`` on the baked log-density ``grid`` (grid units, cell ``step`` m)."""
    from scipy.ndimage import map_coordinates

    if not len(faces) or cfg.min_opacity <= 0:
        return np.ones(len(faces), dtype=bool)
    ds = 0.5 * step
    n = np.stack([map_coordinates(g, verts.T, order=1, mode="nearest") for g in np.gradient(grid)], 1)
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    tau = np.zeros(len(verts))
    for k in range(1, max(round(cfg.opacity_depth_m / ds), 1) + 1):
        tau += np.exp(map_coordinates(grid, (verts + n * (k * 0.5)).T, order=1, mode="nearest"))
    opacity = 1.0 - np.exp(-tau * ds)
    keep: NDArray[np.bool_] = opacity[faces].mean(1) >= cfg.min_opacity
    return keep


def _default_origins(occ: Tensor, amin: NDArray[np.floating], voxel: float, n: int = 8) -> NDArray[np.float64]:
    """``n`` calibration origins: random occupied columns (fixed seed), 1.8 m above their lowest
    occupied cell."""
    cols = occ.any(2).nonzero().numpy()
    pick = cols[np.random.default_rng(0).choice(len(cols), size=min(n, len(cols)), replace=False)]
    z0 = np.array([int(occ[i, j].nonzero()[0, 0]) for i, j in pick])
    return amin + np.stack([pick[:, 0] + 0.5, pick[:, 1] + 0.5, z0 + 0.5], 1) * voxel + np.array([0.0, 0.0, 1.8])


def _no_actors() -> object:
    from sim.recon.config import ActorState

    return ActorState.empty()
