"""Rays against the actor boxes of the neural scene: where each actor field is sampled.

Each actor's field lives in its box frame, normalised so that the box scaled by ``actor_margin``
is ``[-1, 1]^3`` (:func:`box_frame`); a field follows its box wherever the box is put. Actor
samples exist only where a ray crosses a box (slab test, :func:`slab`): ``samples_actor`` per box
on at most ``max_actors_per_ray`` boxes per ray (:func:`actor_samples`).

Rendering shortcut (no grad, no jitter): only rays passing an actor's bounding sphere get actor
samples (:func:`actor_candidates`; from one origin, one matrix product, :func:`cone_candidates`),
and the box tests run on those ray-actor pairs only -- the same samples as the full test, bounded
against it in the tests. World frame, metres; poses ``(x, y, z bottom, yaw)``.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from sim.recon.config import ActorState, SceneConfig

__all__ = ["MAX_ORIGIN_RUNS", "actor_candidates", "actor_samples", "box_frame", "cone_candidates", "slab"]

#: rendering: rays in at most this many runs of a common origin get the per-origin cone test
#: (:func:`actor_candidates`)
MAX_ORIGIN_RUNS = 16


def box_frame(cfg: SceneConfig, o: Tensor, d: Tensor, pose: Tensor, size: Tensor) -> tuple[Tensor, Tensor]:
    """Ray origins/directions (..., 3) in normalised box coordinates of boxes ``pose`` (..., 4)
    and ``size`` (..., 3) (the box scaled by ``actor_margin`` is [-1, 1]^3)."""
    half = size * (0.5 * cfg.actor_margin)
    c, s = torch.cos(pose[..., 3]), torch.sin(pose[..., 3])
    rel = o - torch.stack([pose[..., 0], pose[..., 1], pose[..., 2] + size[..., 2] * 0.5], -1)

    def to_box(v: Tensor) -> Tensor:
        return torch.stack([c * v[..., 0] + s * v[..., 1], -s * v[..., 0] + c * v[..., 1], v[..., 2]], -1)

    return to_box(rel) / half, to_box(d) / half


def slab(cfg: SceneConfig, on: Tensor, dn: Tensor) -> tuple[Tensor, Tensor]:
    """Entry and exit distances (...) of rays in box coordinates (:func:`box_frame`) through the
    unit box [-1, 1]^3, clamped to [``near_m``, ``far_m``] (a miss has exit <= entry)."""
    dn_safe = torch.where(dn.abs() < 1e-9, torch.full_like(dn, 1e-9), dn)
    t1, t2 = (-1 - on) / dn_safe, (1 - on) / dn_safe
    return torch.minimum(t1, t2).amax(-1).clamp(min=cfg.near_m), torch.maximum(t1, t2).amin(-1).clamp(max=cfg.far_m)


def _box_samples(t0: Tensor, t1: Tensor, khit: Tensor, on_k: Tensor, dn_k: Tensor, slot: Tensor, u: Tensor) -> tuple[Tensor, ...]:
    """The samples of :func:`actor_samples` from the (R, Mx) chosen boxes of each ray: their
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


def actor_samples(
    cfg: SceneConfig, o: Tensor, d: Tensor, group: Tensor, actors: ActorState, jitter: Tensor | None, cand: Tensor | None = None
) -> tuple[Tensor, ...]:
    """Actor samples of rays (R, 3) in pose groups ``group`` (R,): distances (R, M*Ka), interval
    lengths, validity and normalised box coords (R, M*Ka, 3) plus the slot per sample (R, M*Ka).
    ``cand`` (R, A) bool (one pose group only) limits the box tests to those ray-actor pairs (a
    superset of the hits, from :func:`actor_candidates`): same samples, computed for the pairs
    only."""
    R = o.shape[0]
    A = actors.slot.shape[0]
    Ka, Mx = cfg.samples_actor, min(cfg.max_actors_per_ray, max(A, 1))
    if cand is not None and actors.pose.shape[0] == 1 and jitter is None:
        return _actor_samples_pairs(cfg, o, d, actors, cand, Ka, Mx)
    pose = actors.pose[group]  # (R, A, 4)
    valid = actors.valid[group]  # (R, A)
    on, dn = box_frame(cfg, o[:, None, :], d[:, None, :].expand(R, A, 3), pose, actors.size[None])
    tmin, tmax = slab(cfg, on, dn)
    hit = valid & (tmax > tmin)
    key = torch.where(hit, tmin, torch.full_like(tmin, float("inf")))
    kt, ka = torch.topk(key, Mx, dim=1, largest=False)  # (R, Mx)
    on_k = torch.gather(on, 1, ka[..., None].expand(R, Mx, 3))
    dn_k = torch.gather(dn, 1, ka[..., None].expand(R, Mx, 3))
    slot = actors.slot[ka] if A > 0 else torch.zeros_like(ka)
    u = jitter if jitter is not None else torch.full((R, Mx, Ka), 0.5)
    return _box_samples(torch.gather(tmin, 1, ka), torch.gather(tmax, 1, ka), torch.isfinite(kt), on_k, dn_k, slot, u)


def _actor_samples_pairs(cfg: SceneConfig, o: Tensor, d: Tensor, actors: ActorState, cand: Tensor, Ka: int, Mx: int) -> tuple[Tensor, ...]:
    """:func:`actor_samples` (rendering, one pose group) with box tests only on the ``cand``
    ray-actor pairs."""
    R, A = cand.shape
    ri, ai = cand.nonzero(as_tuple=True)
    on, dn = box_frame(cfg, o[ri], d[ri], actors.pose[0][ai], actors.size[ai])
    tmin, tmax = slab(cfg, on, dn)
    hit = actors.valid[0][ai] & (tmax > tmin)
    key = torch.full((R, A), float("inf"))
    key[ri[hit], ai[hit]] = tmin[hit]
    kt, ka = torch.topk(key, Mx, dim=1, largest=False)  # (R, Mx)
    khit = torch.isfinite(kt)
    far = torch.full((R, A), float("-inf"))
    far[ri[hit], ai[hit]] = tmax[hit]
    t0 = torch.where(khit, kt, torch.zeros_like(kt))
    t1 = torch.where(khit, torch.gather(far, 1, ka), torch.zeros_like(kt))
    on_k, dn_k = box_frame(cfg, o[:, None, :], d[:, None, :].expand(R, Mx, 3), actors.pose[0][ka], actors.size[ka])
    return _box_samples(t0, t1, khit, on_k, dn_k, actors.slot[ka], torch.full((1, 1, Ka), 0.5))


def cone_candidates(cfg: SceneConfig, o: Tensor, d: Tensor, actors: ActorState) -> tuple[Tensor, Tensor]:
    """Rays (R, 3) from one origin ``o`` (3,) against the bounding spheres of the actors of pose
    group 0: (R, A) bool, the ray passes the sphere (its angle to the centre is within
    asin(radius / distance), every ray when the origin is inside the sphere; one matrix
    product), and (A,) the distance (m, >= 0) at which a ray enters each sphere at the earliest."""
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


def actor_candidates(cfg: SceneConfig, o: Tensor, d: Tensor, group: Tensor, actors: ActorState) -> tuple[Tensor, Tensor, Tensor | None]:
    """Rays whose line passes through the bounding sphere of a valid actor box (scaled by the
    margin) between ``near_m`` and ``far_m`` (a superset of the rays hitting a box), as indices
    (Ra,), the actor indices (A',) hit by any of them, and for rays from one origin the
    (Ra, A') candidate pairs (else None; rays in up to :data:`MAX_ORIGIN_RUNS` runs of one origin
    each count as such)."""
    pose = actors.pose[0][None] if actors.pose.shape[0] == 1 else actors.pose[group]  # (R|1, A, 4)
    valid = actors.valid[0][None] if actors.valid.shape[0] == 1 else actors.valid[group]
    ctr = torch.stack([pose[..., 0], pose[..., 1], pose[..., 2] + actors.size[None, :, 2] * 0.5], -1)
    rad = 0.5 * cfg.actor_margin * actors.size.norm(dim=-1)[None]  # (1, A)
    if ctr.shape[0] == 1 and bool((o == o[:1]).all()):
        hit, _ = cone_candidates(cfg, o[0], d, actors)
        rows, keep = hit.any(1).nonzero().squeeze(1), hit.any(0).nonzero().squeeze(1)
        return rows, keep, hit[rows][:, keep]
    if ctr.shape[0] == 1 and o.shape[0] > 0:
        # a few runs of rays from one origin each (the cameras of a rig rendered in one batch):
        # the cone test per run, the same candidates as rendering each run alone
        cut = ((o[1:] != o[:-1]).any(1).nonzero().squeeze(1) + 1).tolist()
        if len(cut) < MAX_ORIGIN_RUNS:
            bounds = [0, *cut, o.shape[0]]
            hit = torch.cat([cone_candidates(cfg, o[a], d[a:b], actors)[0] for a, b in itertools.pairwise(bounds)])
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
