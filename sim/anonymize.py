"""Anonymisation of camera images before anything is written: licence plates and pedestrians' faces
are pixelated and blurred.

The anonymiser takes **boxes** -- 3D regions in the world frame (:class:`SensitiveBox`) projected
through the camera, or 2D pixel rectangles directly -- so the regions can come from the synthetic
scene's actor boxes today (:func:`sensitive_boxes`) and from a real plate/face detector later.

Regions of the synthetic scene, derived from each actor's box (centre x, y on the ground, yaw,
length L, width W, height H; metres, world frame):

* cars, trucks, buses, motorcycles: a plate zone at both ends of the box, 0.3 m deep around
  x = ±L/2, |y| <= 0.45 m, z in [0.2, 0.85] m (covers the mesh library's plates, see
  ``sim.synth.meshes``, with margin);
* pedestrians and cyclists: a head zone, a 0.7 m cube whose top is 0.1 m above the box top.

Each projected region is grown by ``margin_px`` and replaced by a mosaic of ``block_px`` cells
followed by a box blur, so no pixel of the original region survives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sim.geometry import project_points

__all__ = ["SensitiveBox", "anonymize", "project_boxes", "region_mask", "sensitive_boxes"]

PLATE_CLASSES = frozenset({"car", "truck", "bus", "motorcycle"})
FACE_CLASSES = frozenset({"pedestrian", "cyclist"})


@dataclass(frozen=True)
class SensitiveBox:
    """An oriented 3D box to hide: centre (m, world frame), size (l, w, h, m), yaw (rad), kind
    (``plate`` / ``face``) and the actor id it belongs to."""

    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float
    kind: str
    actor_id: str = ""

    def corners(self) -> NDArray[np.float64]:
        """(8, 3) corners in the world frame."""
        ln, w, h = self.size
        sx = np.array([-1, 1, 1, -1, -1, 1, 1, -1]) * ln / 2
        sy = np.array([-1, -1, 1, 1, -1, -1, 1, 1]) * w / 2
        sz = np.array([-1, -1, -1, -1, 1, 1, 1, 1]) * h / 2
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        x = self.center[0] + c * sx - s * sy
        y = self.center[1] + s * sx + c * sy
        return np.stack([x, y, self.center[2] + sz], axis=1)


def sensitive_boxes(world: object, *, skip_ego: bool = True) -> list[SensitiveBox]:
    """Plate and face zones of every valid actor of a world (``sim.render.base.WorldLike``)."""
    out: list[SensitiveBox] = []
    ids, cls = world.ids, world.cls  # type: ignore[attr-defined]
    for i in range(len(ids)):
        if not bool(world.valid[i]) or (skip_ego and i == 0):  # type: ignore[attr-defined]
            continue
        x, y, yaw = float(world.x[i]), float(world.y[i]), float(world.yaw[i])  # type: ignore[attr-defined]
        z0 = float(world.z[i]) if hasattr(world, "z") else 0.0
        L, H = float(world.length[i]), float(world.height[i])  # type: ignore[attr-defined]
        c = (cls[i] or "other").lower()
        if c in PLATE_CLASSES:
            for sgn in (-1.0, 1.0):
                cx = x + sgn * (L / 2) * np.cos(yaw)
                cy = y + sgn * (L / 2) * np.sin(yaw)
                out.append(SensitiveBox((cx, cy, z0 + 0.525), (0.3, 0.9, 0.65), yaw, "plate", str(ids[i])))
        elif c in FACE_CLASSES:
            out.append(SensitiveBox((x, y, z0 + H - 0.25), (0.7, 0.7, 0.7), yaw, "face", str(ids[i])))
    return out


def project_boxes(boxes: Sequence[SensitiveBox], c2w: NDArray[np.float64], K: NDArray[np.float64], width: int, height: int, *, znear: float = 0.1) -> list[tuple[int, int, int, int]]:
    """Pixel rectangles (u0, v0, u1, v1), end-exclusive and clipped to the image, of the boxes in
    front of the camera (``c2w`` camera-to-world with OpenGL axes, ``K`` intrinsics). A box that
    straddles the near plane is clipped conservatively to the whole image side it extends to."""
    rects: list[tuple[int, int, int, int]] = []
    for b in boxes:
        uv, z = project_points(b.corners(), c2w, K)
        if np.all(z <= znear):
            continue
        if np.any(z <= znear):  # partly behind the camera: cover everything the front part may touch
            front = uv[z > znear]
            u0, v0 = front.min(axis=0)
            u1, v1 = front.max(axis=0)
            u0, u1 = (0.0 if u0 < width / 2 else u0), (float(width) if u1 > width / 2 else u1)
            v0, v1 = 0.0, float(height)
        else:
            u0, v0 = uv.min(axis=0)
            u1, v1 = uv.max(axis=0)
        r = (int(np.floor(max(u0, 0))), int(np.floor(max(v0, 0))), int(np.ceil(min(u1, width))), int(np.ceil(min(v1, height))))
        if r[2] > r[0] and r[3] > r[1]:
            rects.append(r)
    return rects


def region_mask(rects: Sequence[tuple[int, int, int, int]], width: int, height: int, margin_px: int = 2) -> NDArray[np.bool_]:
    """(H, W) mask of the rectangles grown by ``margin_px``."""
    m = np.zeros((height, width), bool)
    for u0, v0, u1, v1 in rects:
        m[max(v0 - margin_px, 0) : min(v1 + margin_px, height), max(u0 - margin_px, 0) : min(u1 + margin_px, width)] = True
    return m


def anonymize(rgb: NDArray[np.uint8], rects: Sequence[tuple[int, int, int, int]], *, margin_px: int = 2, block_px: int = 6) -> NDArray[np.uint8]:
    """A copy of ``rgb`` (H, W, 3) uint8 with every rectangle (grown by ``margin_px``) pixelated
    into ``block_px`` cells and box-blurred; pixels outside the rectangles are unchanged."""
    img = np.array(rgb, copy=True)
    H, W = img.shape[:2]
    for u0, v0, u1, v1 in rects:
        a0, b0 = max(v0 - margin_px, 0), max(u0 - margin_px, 0)
        a1, b1 = min(v1 + margin_px, H), min(u1 + margin_px, W)
        if a1 <= a0 or b1 <= b0:
            continue
        patch = img[a0:a1, b0:b1].astype(np.float32)
        h, w = patch.shape[:2]
        bs = max(1, min(block_px, h, w))
        out = np.empty_like(patch)
        for i in range(0, h, bs):
            for j in range(0, w, bs):
                out[i : i + bs, j : j + bs] = patch[i : i + bs, j : j + bs].reshape(-1, 3).mean(axis=0)
        # box blur across the cells (separable, edge-padded) so block edges carry no detail either
        k = bs
        pad = np.pad(out, ((k // 2, k - 1 - k // 2), (k // 2, k - 1 - k // 2), (0, 0)), mode="edge")
        cs = pad.cumsum(axis=0)
        cs = np.concatenate([np.zeros((1, *cs.shape[1:]), np.float32), cs], axis=0)
        v = (cs[k:] - cs[:-k]) / k
        cs2 = np.concatenate([np.zeros((v.shape[0], 1, 3), np.float32), v.cumsum(axis=1)], axis=1)
        blurred = (cs2[:, k:] - cs2[:, :-k]) / k
        img[a0:a1, b0:b1] = np.clip(np.rint(blurred[:h, :w]), 0, 255).astype(np.uint8)
    return img
