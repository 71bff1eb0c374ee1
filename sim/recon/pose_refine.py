"""Learnable corrections of noisy actor boxes and ego poses (UniSim / NeuRAD-style pose refinement).

Tracked boxes and ego poses carry label noise; a scene fitted to them blurs the actors and smears
the background. Two optional sets of corrections, trained with the scene and pulled back towards
zero by a quadratic prior (weights ``w_actor_prior``, ``w_ego_prior``), fix them:

* **actor boxes**: per actor and per sample of its track, ``(dx, dy, dyaw)`` (m, m, rad) added to
  the logged pose; a box at any time gets the linear interpolation of its two neighbouring samples'
  corrections (as :meth:`sim.log.Track.pose_at` interpolates the poses).
* **ego / sensor poses**: per sample of the ego track, ``(dx, dy, dz, dyaw)``: every sensor ray
  at time ``t`` is moved rigidly with the ego, rotated by ``dyaw`` about the ego's position at ``t``
  and shifted by ``(dx, dy, dz)``, i.e. the corrected ego pose is ``(x + dx, y + dy, z + dz, yaw +
  dyaw)`` and every sensor keeps its mount. Cameras and the LiDAR of one instant move together.

* **camera time offsets** (``refine_time``): per camera, a constant offset ``dt`` (s) between its
  logged time stamps and when it really captured (true = logged + ``dt``; a camera-LiDAR
  synchronisation error), prior weight ``w_time_prior`` per ms^2 (the parameter is in units of
  :data:`TIME_UNIT_S`, so that the pose group's learning rate moves it by a fraction of a ms a step). A frame's rays move with the ego
  over ``dt`` and its actors with their tracks, to first order: the ego's and each actor's
  velocity (finite differences of the neighbouring track samples) times ``dt``, the same rigid
  move as an ego correction. The LiDAR and the ego track are the clock's reference.

The refined tracks (:meth:`PoseRefiner.refined_tracks`, :meth:`PoseRefiner.refined_ego`) are what
the bundle stores, so renders and evaluations place actors where training found them; the time
offsets are recorded (:meth:`PoseRefiner.time_offsets_ms`) but not applied when rendering.
All three sets are switches (``refine_actors``, ``refine_ego``, ``refine_time``) for ablations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from sim.log import Track

__all__ = ["TIME_UNIT_S", "PoseRefiner"]

#: unit (s) of the learned camera time offsets (:attr:`PoseRefiner.camera_dt`)
TIME_UNIT_S = 0.1


def _interp_weights(knots: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For sorted knot times ``knots`` (K,) (padded with +inf) and query times ``t`` (G,): the
    left / right knot indices (G,) and the right weight (G,) (clamped at the ends)."""
    n = int(torch.isfinite(knots).sum())
    k = knots[:n]
    i1 = torch.searchsorted(k, t.to(k.dtype)).clamp(0, max(n - 1, 0))
    i0 = (i1 - 1).clamp(min=0)
    span = (k[i1] - k[i0]).clamp(min=1.0)
    a = ((t.to(k.dtype) - k[i0]) / span).clamp(0.0, 1.0)
    a = torch.where(i1 == i0, torch.zeros_like(a), a)
    return i0, i1, a.float()


class PoseRefiner(nn.Module):
    """Corrections of ``tracks`` (actor slots in order) and of the ``ego`` track (see the module
    docstring); ``actors`` / ``ego_poses`` switch each set on."""

    def __init__(self, ego: Track, tracks: Sequence[Track], *, actors: bool = True, ego_poses: bool = True, time_cameras: int = 0) -> None:
        super().__init__()
        A = len(tracks)
        kmax = max([len(t.t_us) for t in tracks] + [1])
        kt = torch.full((max(A, 1), kmax), float("inf"), dtype=torch.float64)
        kp = torch.zeros(max(A, 1), kmax, 4)
        for a, tr in enumerate(tracks):
            kt[a, : len(tr.t_us)] = torch.from_numpy(np.asarray(tr.t_us, dtype=np.float64))
            kp[a, : len(tr.t_us)] = torch.from_numpy(np.asarray(tr.pose, dtype=np.float32))
        self.register_buffer("actor_t", kt, persistent=False)
        self.register_buffer("actor_p", kp, persistent=False)
        self.register_buffer("ego_t", torch.from_numpy(np.asarray(ego.t_us, dtype=np.float64)), persistent=False)
        self.register_buffer("ego_xyz", torch.from_numpy(np.asarray(ego.pose[:, :3], dtype=np.float32)), persistent=False)
        self.register_buffer("ego_p", torch.from_numpy(np.asarray(ego.pose, dtype=np.float32)), persistent=False)
        self.actor_delta = nn.Parameter(torch.zeros(max(A, 1), kmax, 3)) if actors and A else None
        self.ego_delta = nn.Parameter(torch.zeros(len(ego.t_us), 4)) if ego_poses else None
        self.camera_dt = nn.Parameter(torch.zeros(time_cameras)) if time_cameras > 0 else None

    @property
    def enabled(self) -> bool:
        return self.actor_delta is not None or self.ego_delta is not None or self.camera_dt is not None

    # -------------------------------------------------------------------------- time offsets
    def group_dt(self, group_camera: Tensor) -> Tensor:
        """(G,) time offsets (s) of ray groups whose camera rows are ``group_camera`` (G,) (-1: not
        a camera frame, e.g. a LiDAR slice or a virtual view: 0)."""
        if self.camera_dt is None:
            return torch.zeros(group_camera.shape[0])
        ok = (group_camera >= 0) & (group_camera < self.camera_dt.shape[0])
        return self.camera_dt[group_camera.clamp(0, max(self.camera_dt.shape[0] - 1, 0))] * ok.float() * TIME_UNIT_S

    @staticmethod
    def _velocity(knots: Tensor, poses: Tensor, t: Tensor) -> Tensor:
        """(G, 4) velocity (per s) of a track (knot times (K,) +inf padded, poses (K, 4)) at ``t``
        (G,): the finite difference of the two samples around it (the first / last pair outside)."""
        n = int(torch.isfinite(knots).sum())
        if n < 2:
            return torch.zeros(t.shape[0], 4)
        k = knots[:n]
        i1 = torch.searchsorted(k, t.to(k.dtype)).clamp(1, n - 1)
        i0 = i1 - 1
        span = ((k[i1] - k[i0]) * 1e-6).clamp(min=1e-6).float()
        dp = poses[i1] - poses[i0]
        dp[:, 3] = torch.atan2(torch.sin(dp[:, 3]), torch.cos(dp[:, 3]))
        return dp / span[:, None]

    def time_shift(self, t_us: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
        """First-order moves over ``dt`` (G,) s at times ``t_us`` (G,): the ego's (G, 4) (dx, dy,
        dz, dyaw) and every actor's (G, A, 4) (dx, dy, dz, dyaw)."""
        ego = self._velocity(self.ego_t, self.ego_p, t_us) * dt[:, None]
        kt = self.actor_t  # (A, K), +inf padded: one batched search over every track
        A = kt.shape[0]
        n = torch.isfinite(kt).sum(1)
        tq = t_us.to(kt.dtype)[None].expand(A, -1).contiguous()
        i1 = torch.minimum(torch.searchsorted(kt, tq).clamp(min=1), (n - 1).clamp(min=0)[:, None])
        i0 = (i1 - 1).clamp(min=0)
        span = ((kt.gather(1, i1) - kt.gather(1, i0)) * 1e-6).clamp(min=1e-6).float()
        rows = torch.arange(A)[:, None]
        dp = self.actor_p[rows, i1] - self.actor_p[rows, i0]  # (A, G, 4)
        dp = torch.cat([dp[..., :3], torch.atan2(torch.sin(dp[..., 3:]), torch.cos(dp[..., 3:]))], -1)
        return ego, (dp / span[..., None]).transpose(0, 1) * dt[:, None, None]

    @torch.no_grad()
    def time_offsets_ms(self) -> list[float]:
        """The learned time offset of each camera row (ms; true capture = logged stamp + offset)."""
        return [] if self.camera_dt is None else [round(float(x) * TIME_UNIT_S * 1e3, 3) for x in self.camera_dt]

    # -------------------------------------------------------------------------- actors
    def actor_offsets(self, t_us: Tensor) -> Tensor:
        """(G, A, 3) corrections (dx, dy, dyaw) of every actor at times ``t_us`` (G,) (one batched
        search over all tracks' sample times; clamped at each track's ends)."""
        assert self.actor_delta is not None
        A = self.actor_delta.shape[0]
        kt = self.actor_t[:A]  # (A, K), +inf padded
        n = torch.isfinite(kt).sum(1).clamp(min=1)  # samples per track
        tq = t_us.to(kt.dtype)[None].expand(A, -1).contiguous()  # (A, G)
        i1 = torch.minimum(torch.searchsorted(kt, tq), (n - 1)[:, None])
        i0 = (i1 - 1).clamp(min=0)
        k0, k1 = kt.gather(1, i0), kt.gather(1, i1)
        w = ((tq - k0) / (k1 - k0).clamp(min=1.0)).clamp(0.0, 1.0)
        w = torch.where(i1 == i0, torch.zeros_like(w), w).float()  # (A, G)
        rows = torch.arange(A)[:, None]
        d = self.actor_delta[rows, i0] * (1 - w)[..., None] + self.actor_delta[rows, i1] * w[..., None]  # (A, G, 3)
        return d.transpose(0, 1)

    def refine_actors(self, pose: Tensor, t_us: Tensor) -> Tensor:
        """Actor poses (G, A, 4) at times ``t_us`` (G,) with their corrections added."""
        if self.actor_delta is None or pose.shape[1] == 0:
            return pose
        off = self.actor_offsets(t_us)[:, : pose.shape[1]]
        return pose + torch.stack([off[..., 0], off[..., 1], torch.zeros_like(off[..., 0]), off[..., 2]], -1)

    # -------------------------------------------------------------------------- ego
    def ego_offsets(self, t_us: Tensor) -> tuple[Tensor, Tensor]:
        """(G, 4) corrections (dx, dy, dz, dyaw) of the ego at times ``t_us`` (G,) and the ego's
        logged position there (G, 3)."""
        assert self.ego_delta is not None
        i0, i1, w = _interp_weights(self.ego_t, t_us)
        d = self.ego_delta[i0] * (1 - w)[:, None] + self.ego_delta[i1] * w[:, None]
        c = self.ego_xyz[i0] * (1 - w)[:, None] + self.ego_xyz[i1] * w[:, None]
        return d, c

    def refine_rays(self, o: Tensor, d: Tensor, group: Tensor, t_us: Tensor, extra: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """World rays (R, 3) whose group (R,) was captured at ``t_us`` (G,), moved with the ego's
        correction at their time (rotation about the ego position, then the shift), plus ``extra``
        (G, 4) (dx, dy, dz, dyaw) per group (a time offset's ego move; added to first order)."""
        if self.ego_delta is None and extra is None:
            return o, d
        if self.ego_delta is not None:
            off, c = self.ego_offsets(t_us)
            off = off if extra is None else off + extra
        else:
            i0, i1, w = _interp_weights(self.ego_t, t_us)
            off, c = extra, self.ego_xyz[i0] * (1 - w)[:, None] + self.ego_xyz[i1] * w[:, None]
        assert off is not None
        off, c = off[group], c[group]
        cy, sy = torch.cos(off[:, 3]), torch.sin(off[:, 3])

        def rot(v: Tensor) -> Tensor:
            return torch.stack([cy * v[:, 0] - sy * v[:, 1], sy * v[:, 0] + cy * v[:, 1], v[:, 2]], -1)

        return rot(o - c) + c + off[:, :3], rot(d)

    # -------------------------------------------------------------------------- prior, export
    def prior(self, w_actor: float, w_ego: float, w_time: float = 0.0) -> Tensor:
        """Quadratic prior: ``w_actor`` x mean of dx^2 + dy^2 + dyaw^2 over actor samples plus
        ``w_ego`` x the mean of dx^2 + dy^2 + dz^2 + dyaw^2 over ego samples plus ``w_time`` x the
        mean over cameras of the squared time offset in ms^2."""
        out = torch.zeros(())
        if self.camera_dt is not None and w_time > 0:
            out = out + w_time * (self.camera_dt * (TIME_UNIT_S * 1e3)).pow(2).mean()
        if self.actor_delta is not None:
            ok = torch.isfinite(self.actor_t[: self.actor_delta.shape[0]])
            out = out + w_actor * (self.actor_delta.pow(2).sum(-1) * ok).sum() / ok.sum().clamp(min=1)
        if self.ego_delta is not None:
            out = out + w_ego * self.ego_delta.pow(2).sum(-1).mean()
        return out

    @torch.no_grad()
    def refined_tracks(self, tracks: Sequence[Track]) -> list[Track]:
        """``tracks`` with their corrections applied at every sample."""
        if self.actor_delta is None:
            return list(tracks)
        out = []
        for a, tr in enumerate(tracks):
            d = self.actor_delta[a, : len(tr.t_us)].double().numpy()
            p = np.asarray(tr.pose, dtype=np.float64).copy()
            p[:, 0] += d[:, 0]
            p[:, 1] += d[:, 1]
            p[:, 3] += d[:, 2]
            out.append(dataclasses.replace(tr, pose=p))
        return out

    @torch.no_grad()
    def refined_ego(self, ego: Track) -> Track:
        """The ego track with its corrections applied at every sample."""
        if self.ego_delta is None:
            return ego
        p = np.asarray(ego.pose, dtype=np.float64).copy()
        p += self.ego_delta.double().numpy()
        return dataclasses.replace(ego, pose=p)
