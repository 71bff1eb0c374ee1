"""Cameras and LiDARs rendered from the decomposed neural scene (pure torch, world frame, metres).

A camera renders a low-resolution feature image (``1/upsample`` of the output) whose rays are
volume-rendered by the scene and decoded to RGB at full resolution by its CNN
(:func:`render_camera`); a LiDAR ray's feature goes through the LiDAR head for intensity and
ray-drop probability, and the range is the expected depth (:func:`render_lidar`). With a baked
background surface (:mod:`sim.recon.surface`) the background is the surface; LiDAR rays that pass
no actor then return at the surface hit with the surface's baked LiDAR values, no field evaluation.

Volume renders run in chunks of :data:`VOLUME_CHUNK` rays so temporaries stay small and are reused
by the allocator; surface renders (a few samples per ray) in chunks of :data:`SURFACE_CHUNK`
rays, a whole camera frame at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import Tensor

from sim.recon.actor_boxes import cone_candidates
from sim.recon.config import ActorState, SceneConfig

if TYPE_CHECKING:
    from sim.recon.surface import SurfaceProxy

__all__ = ["SURFACE_CHUNK", "VOLUME_CHUNK", "camera_rays", "render_camera", "render_lidar"]

#: rays per render chunk: volume rendering (many samples per ray) and surface rendering (a few)
VOLUME_CHUNK, SURFACE_CHUNK = 2048, 32768


class RenderableScene(Protocol):
    """What sensor rendering reads of a scene model (:class:`sim.recon.scene.SceneModel`)."""

    cfg: SceneConfig

    def render_rays(self, origins: Tensor, dirs: Tensor, actors: ActorState, *args: Any, **kwargs: Any) -> dict[str, Tensor]: ...

    def lidar_outputs(self, r: dict[str, Tensor]) -> dict[str, Tensor]: ...

    def decode(self, feat_img: Tensor) -> tuple[Tensor, Tensor]: ...


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
def render_camera(model: RenderableScene, c2w: Tensor, K: Tensor, width: int, height: int, actors: ActorState, chunk: int | None = None,
                  surface: SurfaceProxy | None = None) -> dict[str, Tensor]:
    """Render a camera (see :func:`camera_rays`): ``rgb`` (H, W, 3) float in [0, 1], ``depth``
    (H, W) z-depth along the optical axis (m, nearest-upsampled from the feature image), ``acc``
    (H, W) opacity and ``acc_actor`` (H, W) actor opacity."""
    s = model.cfg.upsample
    h, w = -(-height // s), -(-width // s)
    o, d, cos = camera_rays(c2w, K, width, height, s)
    ks = surface.cfg.samples if surface is not None else 1
    chunk = chunk or (SURFACE_CHUNK if surface is not None else VOLUME_CHUNK)
    outs = [model.render_rays(o[i : i + chunk], d[i : i + chunk], actors, surface=surface, surface_samples=ks) for i in range(0, o.shape[0], chunk)]
    feat = torch.cat([r["feat"] for r in outs]).reshape(h, w, -1).permute(2, 0, 1)[None]
    rgb, _ = model.decode(feat)
    rgb = rgb[0].permute(1, 2, 0)[:height, :width]

    def up(x: Tensor) -> Tensor:
        return x.reshape(h, w).repeat_interleave(s, 0).repeat_interleave(s, 1)[:height, :width]

    depth = torch.cat([r["depth"] for r in outs]) * cos
    acc = torch.cat([r["acc"] for r in outs])
    depth = torch.where(acc > 0.5, depth, torch.full_like(depth, float("inf")))
    return {"rgb": rgb, "depth": up(depth), "acc": up(acc), "acc_actor": up(torch.cat([r["acc_actor"] for r in outs]))}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _lidar_from_surface(model: RenderableScene, o: Tensor, d: Tensor, actors: ActorState, surface: SurfaceProxy) -> dict[str, Tensor]:
    """LiDAR on a baked surface with per-vertex LiDAR values: a ray that passes no actor box
    returns at its surface hit with the interpolated intensity / drop of the vertices (no field
    evaluation); rays near actors are rendered by ``render_rays`` (surface background + actor
    fields); a ray that misses the surface returns nothing (range ``far_m``, dropped)."""
    assert surface.vertex_lidar is not None
    cfg = model.cfg
    R = o.shape[0]
    t, prim, u, v = surface.hits(o.numpy(), d.numpy())
    hit = np.isfinite(t) & (t < cfg.far_m)
    rng = np.where(hit, t, cfg.far_m).astype(np.float32)
    logits = np.zeros((R, 2), np.float32)
    logits[:, 1] = 20.0  # misses: dropped
    if hit.any():
        logits[hit] = surface.interpolate(surface.vertex_lidar, prim[hit], u[hit], v[hit])
    out = {"range": torch.from_numpy(rng), "intensity": torch.from_numpy(_sigmoid(logits[:, 0]).astype(np.float32)),
           "drop_prob": torch.from_numpy(_sigmoid(logits[:, 1]).astype(np.float32)), "acc_actor": torch.zeros(R)}
    if actors.slot.shape[0] > 0:
        near, entry = cone_candidates(cfg, o[0], d, actors)
        spread = float((o - o[:1]).norm(dim=-1).max())
        if spread > 0:  # firing-time origins of a spinning LiDAR: the cone test from the first one, widened
            grown = ActorState(actors.slot, actors.pose, actors.size + 2.0 * spread / cfg.actor_margin, actors.valid)
            near, entry = cone_candidates(cfg, o[0], d, grown)
        # rays near an actor whose background hit is not in front of that actor's sphere
        th = torch.from_numpy(np.where(hit, t, np.inf).astype(np.float32))
        rows = (near & (entry[None] < th[:, None])).any(1).nonzero().squeeze(1)
        if rows.numel():
            r = model.render_rays(o[rows], d[rows], actors, surface=surface, surface_samples=surface.cfg.lidar_samples, surface_t=th[rows])
            li = model.lidar_outputs(r)
            for k, val in (("range", li["range"]), ("intensity", li["intensity"]), ("drop_prob", torch.sigmoid(li["drop_logit"])),
                           ("acc_actor", r["acc_actor"])):
                out[k] = out[k].index_copy(0, rows, val.to(out[k].dtype))
    return out


@torch.no_grad()
def render_lidar(model: RenderableScene, sensor_to_world: Tensor, dirs_sensor: Tensor, actors: ActorState, chunk: int | None = None,
                 surface: SurfaceProxy | None = None, origin_offset: Tensor | None = None) -> dict[str, Tensor]:
    """Render LiDAR rays from a sensor pose (4x4) along (N, 3) unit directions in the sensor
    frame: ``range`` (N,) m, ``intensity`` (N,), ``drop_prob`` (N,), ``acc_actor`` (N,).
    ``origin_offset`` (N, 3): world offsets (m) of each ray's origin from the sensor's (a spinning
    LiDAR's firing-time positions)."""
    d = dirs_sensor.to(torch.float32) @ sensor_to_world[:3, :3].T.to(torch.float32)
    o = sensor_to_world[:3, 3].to(torch.float32).expand_as(d).contiguous()
    if origin_offset is not None:
        o = (o + origin_offset.to(torch.float32)).contiguous()
    if surface is not None and surface.vertex_lidar is not None:
        return _lidar_from_surface(model, o, d, actors, surface)
    ks = surface.cfg.lidar_samples if surface is not None else 1
    chunk = chunk or (SURFACE_CHUNK if surface is not None else VOLUME_CHUNK)
    outs = []
    for i in range(0, d.shape[0], chunk):
        r = model.render_rays(o[i : i + chunk], d[i : i + chunk], actors, surface=surface, surface_samples=ks)
        li = model.lidar_outputs(r)
        outs.append((li["range"], li["intensity"], torch.sigmoid(li["drop_logit"]), r["acc_actor"]))
    rng, inten, drop, aa = (torch.cat(x) for x in zip(*outs, strict=True))
    return {"range": rng, "intensity": inten, "drop_prob": drop, "acc_actor": aa}
