"""Per-camera and per-frame appearance: exposure, white balance and vignetting as a colour transform.

Real cameras differ from one another (white balance, vignetting) and from frame to frame (auto
exposure). If the scene had to explain those changes it would bend its geometry or its actors to
do it; instead the decoded colour of a frame passes through a small learned transform before it is
compared with the image, and the scene keeps one canonical appearance:

``rgb_out = (1 + v1 r^2 + v2 r^4)_cam * ((I + M_cam) (I + M_frame) rgb + b_cam + b_frame)``

with ``M`` a 3x3 matrix and ``b`` an offset per camera and per frame (exposure is the diagonal of
``M``, white balance its unequal diagonal, cross terms a colour cast), and a radial vignetting
polynomial per camera in ``r^2 = ((u - cx) / fx)^2 + ((v - cy) / fy)^2`` (the squared tangent of
the pixel's angle to the optical axis). Every term starts at the identity; :meth:`Appearance.prior`
pulls them back towards it (weight ``w_appearance``), so the mean colour of the log stays in the
scene and only the deviations go into the embeddings.

**Gauge (zero mean).** The decomposition is not unique: a common change of every frame row of a
camera can move into that camera's row, and a common change of every camera row into the scene's
colour. Training fixes it (:meth:`Appearance.set_gauge`, :meth:`Appearance.center_`, called after
every optimiser step: a projection onto the constraint): the frame rows ``(M, b)`` of the *training*
frames of each camera have zero mean, and the camera rows have zero mean over cameras. The
transform is affine in each term, so the mean over a camera's training frames of its frames'
transforms is exactly that camera's transform, and the mean of those over cameras is the identity:
a render that names no frame (the simulator's cameras) shows the scene's own colour, which is the
log's mean appearance (vignetting stays per camera; renders that name no frame leave it out).

Which embedding a render uses (the protocol of :mod:`sim.recon.split`): a training frame its own;
a held-out frame -- and every view scored at its time -- the nearest training frame of its camera
and the camera's own. Renders that name no frame (``appearance=None``: the simulator's sensors)
get the log's mean transform (:meth:`Appearance.apply_mean`), which is the identity for
embeddings trained under the gauge above (bundles trained before it may carry a mean cast).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Appearance", "radius2"]


def radius2(u: Tensor, v: Tensor, K: Tensor) -> Tensor:
    """Squared normalised radius ``((u - cx) / fx)^2 + ((v - cy) / fy)^2`` of pixel coordinates
    ``u``, ``v`` (...) for intrinsics ``K`` (3, 3, or batched to broadcast with them)."""
    return ((u - K[..., 0, 2]) / K[..., 0, 0]) ** 2 + ((v - K[..., 1, 2]) / K[..., 1, 1]) ** 2


class Appearance(nn.Module):
    """Per-frame (``n_frames``, one row per frame index of the log) and per-camera (``n_cameras``)
    colour transforms, all starting at the identity (see the module docstring)."""

    def __init__(self, n_frames: int, n_cameras: int) -> None:
        super().__init__()
        self.frame_affine = nn.Parameter(torch.zeros(n_frames, 3, 4))
        self.camera_affine = nn.Parameter(torch.zeros(n_cameras, 3, 4))
        self.camera_vignette = nn.Parameter(torch.zeros(n_cameras, 2))
        # camera row of each training frame, -1 for the others (set_gauge; not saved: only training uses it)
        self.register_buffer("gauge_group", torch.full((n_frames,), -1, dtype=torch.long), persistent=False)

    def set_gauge(self, frame_camera: Tensor, train_frames: Tensor | list[int]) -> None:
        """Fix the gauge (module docstring) over the training frames ``train_frames`` (frame
        indices) whose camera rows are ``frame_camera`` (n_frames,), and project onto it now."""
        g = torch.full((self.frame_affine.shape[0],), -1, dtype=torch.long)
        idx = torch.as_tensor(train_frames, dtype=torch.long).reshape(-1)
        g[idx] = torch.as_tensor(frame_camera, dtype=torch.long).reshape(-1)[idx]
        self.gauge_group = g
        self.center_()

    @torch.no_grad()
    def center_(self) -> None:
        """Project the embeddings onto the gauge in place: the training-frame rows of each camera to
        zero mean (rows of other frames untouched), the camera rows to zero mean over cameras."""
        g = self.gauge_group
        ok = g >= 0
        if bool(ok.any()) and self.camera_affine.shape[0] > 0:
            C = self.camera_affine.shape[0]
            rows = self.frame_affine.data[ok]
            sums = torch.zeros(C, 3, 4, dtype=rows.dtype).index_add_(0, g[ok], rows)
            n = torch.zeros(C, dtype=rows.dtype).index_add_(0, g[ok], torch.ones(len(rows), dtype=rows.dtype))
            self.frame_affine.data[ok] = rows - (sums / n.clamp(min=1)[:, None, None])[g[ok]]
        if self.camera_affine.shape[0] > 0:
            self.camera_affine.data -= self.camera_affine.data.mean(0, keepdim=True)

    def forward(self, rgb: Tensor, frame: Tensor | None, camera: Tensor | None, r2: Tensor | None) -> Tensor:
        """Apply to ``rgb`` (B, H, W, 3) in [0, 1] the transforms of ``frame`` (B,) and ``camera``
        (B,) (None or -1: that term off), with vignetting at squared radii ``r2`` (B, H, W) (None:
        off). Returns (B, H, W, 3) (not clamped: the loss sees what the model predicts)."""
        B = rgb.shape[0]
        eye = torch.eye(3, 4, dtype=rgb.dtype)

        def pick(table: Tensor, idx: Tensor | None) -> Tensor:
            if idx is None or table.shape[0] == 0:
                return torch.zeros(B, *table.shape[1:], dtype=rgb.dtype)
            ok = (idx >= 0) & (idx < table.shape[0])
            return table[idx.clamp(0, table.shape[0] - 1)] * ok.reshape(-1, *([1] * (table.dim() - 1))).to(rgb.dtype)

        mf = eye + pick(self.frame_affine, frame)  # (B, 3, 4)
        mc = eye + pick(self.camera_affine, camera)
        lin = torch.einsum("bij,bhwj->bhwi", mc[:, :, :3] @ mf[:, :, :3], rgb) + (mf[:, :, 3] + mc[:, :, 3])[:, None, None, :]
        if r2 is not None:
            v = pick(self.camera_vignette, camera)  # (B, 2)
            lin = lin * (1.0 + v[:, 0, None, None] * r2 + v[:, 1, None, None] * r2 * r2)[..., None]
        return lin

    @torch.no_grad()
    def apply_mean(self, rgb: Tensor) -> Tensor:
        """``rgb`` (..., 3) through the *mean* transform: the mean of the trained frames' rows (rows
        that moved from the identity) and of the cameras' (no vignetting) -- the log's average
        appearance, for renders that name no frame (the simulator's cameras)."""
        eye = torch.eye(3, 4, dtype=rgb.dtype)
        fr = self.frame_affine.detach()
        moved = fr.flatten(1).abs().sum(1) > 0
        mf = eye + (fr[moved].mean(0) if bool(moved.any()) else torch.zeros(3, 4, dtype=rgb.dtype))
        mc = eye + (self.camera_affine.detach().mean(0) if self.camera_affine.shape[0] else torch.zeros(3, 4, dtype=rgb.dtype))
        return torch.einsum("ij,...j->...i", mc[:, :3] @ mf[:, :3], rgb) + mf[:, 3] + mc[:, 3]

    def prior(self) -> Tensor:
        """Sum of squares of every term's deviation from the identity, averaged per row."""
        terms = [t.pow(2).sum() / max(t.shape[0], 1) for t in (self.frame_affine, self.camera_affine, self.camera_vignette)]
        return torch.stack(terms).sum()
