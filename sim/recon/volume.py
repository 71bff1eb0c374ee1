"""Volume rendering of rays through the decomposed neural scene: background, actor and sky fields
merged by depth and alpha-composited (pure torch, world frame, metres).

Samples of all fields along a ray are merged by depth (:func:`merge_by_depth`) and
volume-rendered together (:func:`composite`) into a feature vector, expected depth and opacity;
the sky fills the transmittance left after the last sample. The background is either sampled in
the occupancy grid (:func:`volume_background`) or, when rendering with a baked surface, one opaque
sample at the surface hit (:func:`surface_background`). Moving, removing or inserting an actor is a
change of the actor poses given to :func:`render_rays`; nothing is retrained.

Rendering (no grad, no jitter) takes two shortcuts, both bounded against the training path in the
tests: actor samples are made only for rays passing near an actor (see
:mod:`sim.recon.actor_boxes`), and a ray's background samples are evaluated in stages (4, 4, the
rest), each only on rays whose transmittance is still above the model's ``early_stop``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from sim.recon.actor_boxes import actor_candidates, actor_samples
from sim.recon.config import ActorState, SceneConfig

if TYPE_CHECKING:
    from sim.recon.surface import SurfaceProxy

__all__ = ["RayFields", "composite", "merge_by_depth", "render_rays", "surface_background", "volume_background"]

#: per-ray samples: distances, interval lengths (m), densities (1/m), features (R, K, C) and
#: whether each sample belongs to an actor field
Samples = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]
#: composited rays: feature sum (R, C), opacity, distance sum, actor opacity (R,), distances and
#: weights (R, S)
Composited = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


class RayFields(Protocol):
    """What the ray renderer reads of a scene model (:class:`sim.recon.scene.SceneModel`)."""

    cfg: SceneConfig
    early_stop: float

    def background_samples(self, o: Tensor, d: Tensor, jitter: Tensor | None) -> tuple[Tensor, Tensor, Tensor]: ...

    def background(self, p: Tensor, t: Tensor | None = None) -> tuple[Tensor, Tensor]: ...

    def actor(self, pn: Tensor, slot: Tensor) -> tuple[Tensor, Tensor]: ...

    def sky(self, dirs: Tensor) -> Tensor: ...


def merge_by_depth(ts: list[Tensor], ws: list[Tensor], sig: list[Tensor], feats: list[Tensor], acts: list[Tensor]) -> Samples:
    """Concatenate per-ray sample sets (each (R, k_i), features (R, k_i, C)) sorted by distance."""
    t = torch.cat(ts, 1)
    order = torch.argsort(t, dim=1)
    C = feats[0].shape[-1]
    return (
        torch.gather(t, 1, order), torch.gather(torch.cat(ws, 1), 1, order), torch.gather(torch.cat(sig, 1), 1, order),
        torch.gather(torch.cat(feats, 1), 1, order[..., None].expand(-1, -1, C)), torch.gather(torch.cat(acts, 1), 1, order),
    )


def composite(far_m: float, t: Tensor, width: Tensor, sigma: Tensor, feat: Tensor, act: Tensor) -> Composited:
    """Alpha-composite depth-sorted samples (R, S): weighted feature sum (R, C), opacity (R,),
    weighted distance sum (R,), actor opacity (R,), distances clamped to ``far_m`` and weights (R, S)."""
    R = t.shape[0]
    alpha = 1.0 - torch.exp(-sigma * width)
    trans = torch.cumprod(torch.cat([torch.ones(R, 1), 1.0 - alpha + 1e-7], 1), 1)[:, :-1]
    w = alpha * trans
    tc = t.clamp(max=far_m)
    f = w * feat[:, 0] if w.shape[1] == 1 else torch.bmm(w[:, None, :], feat)[:, 0]  # bmm is slow on (R, 1) batches
    return f, w.sum(1), (w * tc).sum(1), (w * act).sum(1), tc, w


def volume_background(model: RayFields, origins: Tensor, dirs: Tensor, jb: Tensor | None, rendering: bool) -> Samples:
    """Background samples of the volume renderer: distances, interval lengths, densities,
    features (R, K[, C]) and validity (R, K). When ``rendering``, the samples are evaluated in
    stages (4, 4, the rest); a stage runs only on rays whose transmittance after the previous
    stages is above ``model.early_stop`` (the skipped samples carry at most that much weight)."""
    cfg = model.cfg
    tb, wb, vb = model.background_samples(origins, dirs, jb[:, : min(cfg.samples_bg, cfg.occupied_candidates)] if jb is not None else None)
    sig_b = torch.zeros_like(tb)
    feat_b = torch.zeros(*tb.shape, cfg.feat_dim)
    K = tb.shape[1]
    bounds = sorted({min(4, K), min(8, K), K}) if rendering and model.early_stop > 0 else [K]
    k0 = 0
    for k1 in bounds:
        v = vb[:, k0:k1]
        if k0 > 0:
            v = v & (torch.exp(-(sig_b[:, :k0] * wb[:, :k0]).sum(1)) > model.early_stop)[:, None]
        if v.any():
            pts = (origins[:, None, :] + dirs[:, None, :] * tb[:, k0:k1, None])[v]
            s_, f_ = model.background(pts, tb[:, k0:k1][v])
            sig_b[:, k0:k1] = sig_b[:, k0:k1].masked_scatter(v, s_)
            feat_b[:, k0:k1] = feat_b[:, k0:k1].index_put((v,), f_)
        k0 = k1
    return tb, wb, sig_b, feat_b, vb


def surface_background(model: RayFields, origins: Tensor, dirs: Tensor, surface: SurfaceProxy, samples: int,
                       th: Tensor | None = None) -> Samples:
    """Background of the surface proxy: one opaque sample per ray at its first surface hit ``th``
    (R,) m (cast when None; none on a miss), with the weighted mean features of ``samples`` field
    evaluations spread over ``[t - spread_m, t + spread_m]``. Same outputs as
    :func:`volume_background`."""
    cfg = model.cfg
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
        s_, f_ = model.background(pts.reshape(-1, 3), t.reshape(-1))
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


def _actor_fields(model: RayFields, ta: Tensor, va: Tensor, pn: Tensor, slot: Tensor) -> tuple[Tensor, Tensor]:
    """Densities (R, S) and features (R, S, C) of the valid actor samples ``va`` (0 elsewhere)."""
    sig_a = torch.zeros_like(ta)
    feat_a = torch.zeros(*ta.shape, model.cfg.feat_dim)
    if va.any():
        s_, f_ = model.actor(pn[va], slot[va])
        sig_a = sig_a.masked_scatter(va, s_)
        feat_a = feat_a.index_put((va,), f_)
    return sig_a, feat_a


def _with_actors(model: RayFields, origins: Tensor, dirs: Tensor, group: Tensor, actors: ActorState, generator: torch.Generator | None,
                 bg: Samples, rendering: bool) -> tuple[Tensor | None, Samples | None]:
    """Actor samples merged by depth with the background samples ``bg`` of the same rays.

    Returns ``(rows, merged)``: ``rows`` None when every ray got actor samples (training), else
    the indices of the rays that cross an actor box (rendering: only rays near an actor are
    tested); ``merged`` None when no ray did. Actor jitter is drawn from ``generator`` after the
    background's."""
    cfg = model.cfg
    rows: Tensor | None = None
    cand: Tensor | None = None
    sub_o, sub_d, sub_g, sub_actors = origins, dirs, group, actors
    if rendering:
        rows, keep, cand = actor_candidates(cfg, origins, dirs, group, actors)
        if rows.numel() == 0:
            return rows, None
        sub_o, sub_d, sub_g = origins[rows], dirs[rows], group[rows]
        sub_actors = ActorState(actors.slot[keep], actors.pose[:, keep], actors.size[keep], actors.valid[:, keep])
    ja = None
    if generator is not None:
        ja = torch.rand(sub_o.shape[0], min(cfg.max_actors_per_ray, sub_actors.slot.shape[0]), cfg.samples_actor, generator=generator)
    ta, wa, va, pn, slot = actor_samples(cfg, sub_o, sub_d, sub_g, sub_actors, ja, cand=cand)
    if rows is not None:  # keep the candidate rays that really cross a box
        hit_rows = va.any(1)
        rows, ta, wa, va, pn, slot = rows[hit_rows], ta[hit_rows], wa[hit_rows], va[hit_rows], pn[hit_rows], slot[hit_rows]
        if rows.numel() == 0:
            return rows, None
    sig_a, feat_a = _actor_fields(model, ta, va, pn, slot)
    ta = torch.where(va, ta, torch.full_like(ta, cfg.far_m * 2))
    tb, wb, sig_b, feat_b, act_b = bg if rows is None else tuple(x[rows] for x in bg)
    return rows, merge_by_depth([tb, ta], [wb, wa], [sig_b, sig_a], [feat_b, feat_a], [act_b, va])


def _composite_rays(far_m: float, bg: Samples, rows: Tensor | None, merged: Samples | None) -> Composited:
    """Composite every ray: the merged samples when all rays have them; otherwise the background
    samples, with the rays near actors (``rows``) overwritten by their merged samples (the other
    rows keep their short background sample lists)."""
    if merged is not None and rows is None:
        return composite(far_m, *merged)
    f_sum, acc, d_sum, acc_act, tc, w = composite(far_m, *bg)
    if merged is None:
        return f_sum, acc, d_sum, acc_act, tc, w
    assert rows is not None
    R = tc.shape[0]
    mf, macc, md, mact, mt, mw = composite(far_m, *merged)
    f_sum, acc, d_sum, acc_act = f_sum.index_copy(0, rows, mf), acc.index_copy(0, rows, macc), d_sum.index_copy(0, rows, md), acc_act.index_copy(0, rows, mact)
    extra = mt.shape[1] - tc.shape[1]
    tc = torch.cat([tc, tc.new_full((R, extra), far_m)], 1).index_copy_(0, rows, mt)
    w = torch.cat([w, w.new_zeros(R, extra)], 1).index_copy_(0, rows, mw)
    return f_sum, acc, d_sum, acc_act, tc, w


def render_rays(
    model: RayFields,
    origins: Tensor,
    dirs: Tensor,
    actors: ActorState,
    group: Tensor | None = None,
    generator: torch.Generator | None = None,
    surface: SurfaceProxy | None = None,
    surface_samples: int = 1,
    surface_t: Tensor | None = None,
) -> dict[str, Tensor]:
    """Volume-render rays (world frame, unit ``dirs``) through ``model``'s fields; see
    :meth:`sim.recon.scene.SceneModel.render_rays` for the arguments and outputs."""
    cfg = model.cfg
    R = origins.shape[0]
    if group is None:
        group = torch.zeros(R, dtype=torch.long)
    jb = torch.rand(R, cfg.samples_bg, generator=generator) if generator is not None else None
    rendering = generator is None and not torch.is_grad_enabled()
    if surface is not None and rendering:
        tb, wb, sig_b, feat_b, vb = surface_background(model, origins, dirs, surface, surface_samples, surface_t)
    else:
        tb, wb, sig_b, feat_b, vb = volume_background(model, origins, dirs, jb, rendering)
    bg = (tb, wb, sig_b, feat_b, torch.zeros_like(vb))
    rows, merged = _with_actors(model, origins, dirs, group, actors, generator, bg, rendering) if actors.slot.shape[0] > 0 else (None, None)
    f_sum, acc, d_sum, acc_act, tc, w = _composite_rays(cfg.far_m, bg, rows, merged)
    sky = model.sky(dirs)
    return {
        "feat": f_sum + (1.0 - acc)[:, None] * sky, "depth": d_sum + (1.0 - acc) * cfg.far_m, "acc": acc, "acc_actor": acc_act,
        "t": tc, "w": w,
    }
