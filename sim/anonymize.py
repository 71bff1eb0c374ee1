"""Anonymisation of camera images before anything is written: licence plates and pedestrians' faces
are replaced by a smooth fill from their surroundings.

The anonymiser takes **boxes** -- 3D regions in the world frame (:class:`SensitiveBox`) projected
through the camera, or 2D pixel rectangles directly -- so the regions can come from the synthetic
scene's actor boxes today (:func:`sensitive_boxes`) and from a real plate/face detector later.

Regions of the synthetic scene, derived from each actor's box (centre x, y on the ground, yaw,
length L, width W, height H; metres, world frame):

* cars, trucks, buses, motorcycles: a plate zone at both ends of the box, 0.3 m deep around
  x = ±L/2, |y| <= 0.45 m, z in [0.2, 0.85] m (covers the mesh library's plates, see
  ``sim.synth.meshes``, with margin);
* pedestrians and cyclists: a head zone, a 0.7 m cube whose top is 0.1 m above the box top.

Each projected region is grown by ``margin_px`` and filled by inpainting from the pixels around
it (:func:`anonymize`), so nothing of the original region survives -- not even a uniform plate
that a blur would leave as it was.
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


def anonymize(rgb: NDArray[np.uint8], rects: Sequence[tuple[int, int, int, int]], *, margin_px: int = 2) -> NDArray[np.uint8]:
    """A copy of ``rgb`` (H, W, 3) uint8 where every rectangle (grown by ``margin_px``) is replaced
    by a smooth fill interpolated from the pixels just **outside** it (a Coons-patch inpainting:
    the mean of the left-right and top-bottom linear blends of its border). Nothing inside a region
    influences the output, so no plate or face pixel survives; pixels outside are unchanged."""
    img = np.array(rgb, copy=True)
    H, W = img.shape[:2]
    src = np.asarray(rgb, np.float32)
    for u0, v0, u1, v1 in rects:
        a0, b0 = max(v0 - margin_px, 0), max(u0 - margin_px, 0)
        a1, b1 = min(v1 + margin_px, H), min(u1 + margin_px, W)
        if a1 <= a0 or b1 <= b0:
            continue
        h, w = a1 - a0, b1 - b0
        # border lines just outside the region (clamped to the image; at an image edge the
        # opposite border is used)
        top = src[a0 - 1, b0:b1] if a0 > 0 else None
        bot = src[a1, b0:b1] if a1 < H else None
        left = src[a0:a1, b0 - 1] if b0 > 0 else None
        right = src[a0:a1, b1] if b1 < W else None
        top = top if top is not None else (bot if bot is not None else np.full((w, 3), src.mean((0, 1)), np.float32))
        bot = bot if bot is not None else top
        left = left if left is not None else (right if right is not None else np.full((h, 3), src.mean((0, 1)), np.float32))
        right = right if right is not None else left
        ty = ((np.arange(h, dtype=np.float32) + 1) / (h + 1))[:, None, None]
        tx = ((np.arange(w, dtype=np.float32) + 1) / (w + 1))[None, :, None]
        vert = (1 - ty) * top[None] + ty * bot[None]
        horiz = (1 - tx) * left[:, None] + tx * right[:, None]
        img[a0:a1, b0:b1] = np.clip(np.rint(0.5 * (vert + horiz)), 0, 255).astype(np.uint8)
    return img
