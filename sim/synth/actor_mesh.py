"""Procedural actor models of the synthetic town (numpy + trimesh, no GL) by class -- car, truck,
bus, cyclist, pedestrian -- sized to each box and coloured from the actor id, and the export of the
asset library (one GLB per class, texture samples).

Geometry is in the actor's box frame: metres, x forward, y left, z up, origin at the box's bottom
centre. Shading is rotation-invariant (:func:`sim.synth.parts.sky_shade`): actors turn, the sky
does not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import trimesh
from numpy.typing import NDArray

import sim.synth.textures as tex
from sim.synth.parts import (
    Part,
    box_part,
    cylinder_part,
    hexahedron,
    merge_parts,
    parts_to_trimesh,
    sky_shade,
    sphere_part,
)

__all__ = ["actor_parts", "export_assets", "id_colour"]


def _readonly(rows: list[list[float]]) -> NDArray[np.float64]:
    """A constant palette (N, 3) of RGB in [0, 1] that cannot be modified in place."""
    a = np.array(rows)
    a.flags.writeable = False
    return a


_CAR_COLOURS = _readonly([
    [0.92, 0.92, 0.92], [0.08, 0.08, 0.09], [0.62, 0.64, 0.66], [0.35, 0.36, 0.38], [0.65, 0.08, 0.08],
    [0.10, 0.22, 0.52], [0.12, 0.30, 0.18], [0.78, 0.72, 0.58], [0.85, 0.55, 0.10], [0.30, 0.48, 0.70],
])
_CLOTH = _readonly([
    [0.15, 0.18, 0.35], [0.55, 0.12, 0.12], [0.85, 0.80, 0.20], [0.20, 0.45, 0.25], [0.90, 0.90, 0.88],
    [0.12, 0.12, 0.12], [0.45, 0.30, 0.55], [0.95, 0.50, 0.15],
])
_SKIN = _readonly([[0.96, 0.80, 0.69], [0.80, 0.60, 0.45], [0.55, 0.38, 0.26], [0.36, 0.24, 0.16]])


def id_colour(actor_id: str, palette: NDArray[np.float64], salt: str = "") -> NDArray[np.float64]:
    """A deterministic colour for an actor id (md5, not Python's salted hash)."""
    h = hashlib.md5((salt + actor_id).encode()).digest()
    c = palette[h[0] % len(palette)] * (0.9 + 0.2 * h[1] / 255.0)
    return np.clip(c, 0.0, 1.0)


def actor_parts(cls: str, size: Sequence[float], actor_id: str) -> list[Part]:
    """A procedural model of class ``cls`` filling a box of ``size`` = (length, width, height) in
    the box frame (x forward, y left, z up, origin at the bottom centre); colours from the id."""
    length, width, height = (float(s) for s in size)
    if cls == "pedestrian":
        parts = _pedestrian(length, width, height, actor_id)
    elif cls in ("cyclist", "motorcycle"):
        parts = _cyclist(length, width, height, actor_id)
    elif cls == "truck":
        parts = _truck(length, width, height, actor_id)
    elif cls == "bus":
        parts = _bus(length, width, height, actor_id)
    else:
        parts = _car(length, width, height, actor_id)
    return merge_parts(parts)


def _wheels(xs: Sequence[float], width: float, r: float, tw: float = 0.24) -> list[Part]:
    out = []
    for x in xs:
        for sgn in (-1, 1):
            y = sgn * (width / 2 - tw / 2 - 0.02)
            out.append(cylinder_part([x, y, r], "y", r, tw, "tyre", (0.08, 0.08, 0.08), segments=14, shade=sky_shade))
            out.append(cylinder_part([x, y + sgn * 0.005, r], "y", r * 0.55, tw, "metal", (0.6, 0.6, 0.62), segments=10, shade=sky_shade))
    return out


def _car(L: float, W: float, H: float, aid: str) -> list[Part]:
    col = id_colour(aid, _CAR_COLOURS)
    r = float(np.clip(0.2 * H, 0.28, 0.36))
    z_b0, z_b1 = 0.16 * H + 0.1, 0.58 * H
    parts = [box_part(-L / 2, L / 2, -W / 2 + 0.02, W / 2 - 0.02, z_b0, z_b1, "body", col, sky_shade)]
    # bonnet slope and cabin (glass) as hexahedra
    xf, xr = 0.5 * L - 0.02, -0.5 * L + 0.02
    cab_b = np.array([[-0.34 * L, -0.47 * W, z_b1], [0.18 * L, -0.47 * W, z_b1], [0.18 * L, 0.47 * W, z_b1], [-0.34 * L, 0.47 * W, z_b1]])
    cab_t = np.array([[-0.26 * L, -0.40 * W, 0.95 * H], [0.02 * L, -0.40 * W, 0.95 * H], [0.02 * L, 0.40 * W, 0.95 * H], [-0.26 * L, 0.40 * W, 0.95 * H]])
    parts.append(hexahedron(cab_b, cab_t, "glass", (0.12, 0.15, 0.19), sky_shade, skip=("bottom", "top")))
    roof_b = cab_t.copy()
    roof_t = cab_t + np.array([0.0, 0.0, 0.05 * H])
    parts.append(hexahedron(roof_b, roof_t, "body", col, sky_shade))
    # pillars (body colour) at the cabin corners
    for xa, xb in ((0.16 * L, 0.01 * L), (-0.32 * L, -0.25 * L)):
        for sgn in (-1, 1):
            b = np.array([[xa - 0.05, sgn * 0.47 * W - 0.03, z_b1], [xa + 0.05, sgn * 0.47 * W - 0.03, z_b1],
                          [xa + 0.05, sgn * 0.47 * W + 0.0, z_b1], [xa - 0.05, sgn * 0.47 * W + 0.0, z_b1]])
            t = np.array([[xb - 0.05, sgn * 0.40 * W - 0.03, 0.95 * H], [xb + 0.05, sgn * 0.40 * W - 0.03, 0.95 * H],
                          [xb + 0.05, sgn * 0.40 * W + 0.0, 0.95 * H], [xb - 0.05, sgn * 0.40 * W + 0.0, 0.95 * H]])
            parts.append(hexahedron(b, t, "body", col * 0.9, sky_shade))
    parts.extend(_wheels([0.33 * L, -0.32 * L], W, r))
    # lights and plates
    zl = 0.45 * H
    for sgn in (-1, 1):
        parts.append(box_part(xf - 0.03, xf + 0.02, sgn * 0.36 * W - 0.12, sgn * 0.36 * W + 0.12, zl - 0.05, zl + 0.05, "light", (0.95, 0.95, 0.85), sky_shade))
        parts.append(box_part(xr - 0.02, xr + 0.03, sgn * 0.38 * W - 0.12, sgn * 0.38 * W + 0.12, zl - 0.05, zl + 0.06, "light", (0.75, 0.05, 0.05), sky_shade))
    parts.append(box_part(xf - 0.01, xf + 0.03, -0.26, 0.26, 0.28 * H, 0.28 * H + 0.11, "plate", (0.95, 0.95, 0.95), sky_shade))
    parts.append(box_part(xr - 0.03, xr + 0.01, -0.26, 0.26, 0.34 * H, 0.34 * H + 0.11, "plate", (0.95, 0.9, 0.3), sky_shade))
    return parts


def _truck(L: float, W: float, H: float, aid: str) -> list[Part]:
    col = id_colour(aid, _CAR_COLOURS)
    box_col = id_colour(aid, np.array([[0.9, 0.9, 0.88], [0.75, 0.75, 0.72], [0.2, 0.35, 0.6], [0.6, 0.15, 0.1]]), "box")
    r = 0.45
    cab_l = min(2.2, 0.3 * L)
    xf = L / 2
    parts = [
        box_part(xf - cab_l, xf, -W / 2, W / 2, 0.55, 0.55 * H, "body", col, sky_shade),
        box_part(xf - cab_l, xf - 0.35, -W / 2 + 0.02, W / 2 - 0.02, 0.55 * H, 0.85 * H, "glass", (0.12, 0.15, 0.19), sky_shade),
        box_part(xf - cab_l, xf - 0.35, -W / 2 + 0.02, W / 2 - 0.02, 0.85 * H, 0.88 * H, "body", col, sky_shade),
        box_part(-L / 2, xf - cab_l - 0.15, -W / 2, W / 2, 0.7, H, "body", box_col, sky_shade),
        box_part(-L / 2 + 0.3, xf - 0.2, -W / 2 + 0.3, W / 2 - 0.3, 0.45, 0.72, "metal", (0.2, 0.2, 0.2), sky_shade),
    ]
    parts.extend(_wheels([xf - 0.9, -L / 2 + 1.6, -L / 2 + 2.6], W, r, 0.3))
    parts.append(box_part(xf - 0.01, xf + 0.03, -0.26, 0.26, 0.5, 0.61, "plate", (0.95, 0.95, 0.95), sky_shade))
    parts.append(box_part(-L / 2 - 0.03, -L / 2 + 0.01, -0.26, 0.26, 0.45, 0.56, "plate", (0.95, 0.9, 0.3), sky_shade))
    for sgn in (-1, 1):
        parts.append(box_part(-L / 2 - 0.03, -L / 2 + 0.01, sgn * (W / 2 - 0.25) - 0.1, sgn * (W / 2 - 0.25) + 0.1, 0.75, 0.9, "light", (0.75, 0.05, 0.05), sky_shade))
    return parts


def _bus(L: float, W: float, H: float, aid: str) -> list[Part]:
    col = id_colour(aid, np.array([[0.85, 0.15, 0.12], [0.95, 0.75, 0.1], [0.15, 0.35, 0.7], [0.9, 0.9, 0.9], [0.2, 0.55, 0.3]]))
    r = 0.5
    parts = [
        box_part(-L / 2, L / 2, -W / 2, W / 2, 0.35, 0.42 * H, "body", col, sky_shade),
        box_part(-L / 2, L / 2, -W / 2, W / 2, 0.82 * H, H, "body", col, sky_shade),
        box_part(-L / 2 + 0.05, L / 2 - 0.02, -W / 2 + 0.03, W / 2 - 0.03, 0.42 * H, 0.82 * H, "glass", (0.1, 0.13, 0.17), sky_shade),
    ]
    # window pillars
    x = -L / 2 + 1.2
    while x < L / 2 - 1.0:
        for sgn in (-1, 1):
            parts.append(box_part(x - 0.08, x + 0.08, sgn * W / 2 - 0.02, sgn * W / 2 + 0.02, 0.42 * H, 0.82 * H, "body", col * 0.85, sky_shade))
        x += 1.6
    parts.extend(_wheels([L / 2 - 2.4, -L / 2 + 2.8], W, r, 0.3))
    parts.append(box_part(L / 2 - 0.01, L / 2 + 0.03, -0.26, 0.26, 0.5, 0.61, "plate", (0.95, 0.95, 0.95), sky_shade))
    parts.append(box_part(-L / 2 - 0.03, -L / 2 + 0.01, -0.26, 0.26, 0.5, 0.61, "plate", (0.95, 0.9, 0.3), sky_shade))
    return parts


def _cyclist(L: float, W: float, H: float, aid: str) -> list[Part]:
    shirt = id_colour(aid, _CLOTH)
    skin = id_colour(aid, _SKIN, "skin")
    bike = id_colour(aid, _CAR_COLOURS, "bike")
    wr = min(0.34, 0.2 * H)
    wx = L / 2 - wr - 0.02
    parts = []
    for x in (wx, -wx):
        parts.append(cylinder_part([x, 0, wr], "y", wr, 0.05, "tyre", (0.06, 0.06, 0.06), segments=16, shade=sky_shade))
    parts.append(box_part(-wx, wx, -0.03, 0.03, wr + 0.05, wr + 0.12, "bike", bike, sky_shade))
    parts.append(box_part(-0.15, 0.05, -0.03, 0.03, wr, 0.55 * H, "bike", bike, sky_shade))
    # rider: legs, torso leaning forward, arms to the bars, head
    parts.append(box_part(-0.2, 0.05, -0.16, -0.04, wr * 0.8, 0.55 * H, "cloth", (0.15, 0.15, 0.2), sky_shade))
    parts.append(box_part(-0.2, 0.05, 0.04, 0.16, wr * 0.8, 0.55 * H, "cloth", (0.15, 0.15, 0.2), sky_shade))
    tb = np.array([[-0.28, -0.18, 0.55 * H], [0.0, -0.18, 0.55 * H], [0.0, 0.18, 0.55 * H], [-0.28, 0.18, 0.55 * H]])
    tt = np.array([[-0.05, -0.17, 0.86 * H], [0.2, -0.17, 0.86 * H], [0.2, 0.17, 0.86 * H], [-0.05, 0.17, 0.86 * H]])
    parts.append(hexahedron(tb, tt, "cloth", shirt, sky_shade))
    for sgn in (-1, 1):
        parts.append(box_part(0.1, wx - 0.1, sgn * 0.2 - 0.04, sgn * 0.2 + 0.04, 0.7 * H, 0.78 * H, "skin", skin, sky_shade))
    parts.append(sphere_part([0.15, 0.0, 0.93 * H], [0.11, 0.1, 0.12], "skin", skin, subdiv=1, shade=sky_shade))
    parts.append(sphere_part([0.13, 0.0, 0.96 * H], [0.13, 0.12, 0.08], "cloth", shirt * 0.6, subdiv=1, shade=sky_shade))
    return parts


def _pedestrian(L: float, W: float, H: float, aid: str) -> list[Part]:
    shirt = id_colour(aid, _CLOTH)
    trousers = id_colour(aid, _CLOTH, "legs") * 0.6
    skin = id_colour(aid, _SKIN, "skin")
    hw = W / 2
    parts = [
        box_part(-0.08, 0.08, -0.8 * hw, -0.05, 0.0, 0.47 * H, "cloth", trousers, sky_shade),
        box_part(-0.08, 0.08, 0.05, 0.8 * hw, 0.0, 0.47 * H, "cloth", trousers, sky_shade),
        box_part(-0.11, 0.11, -0.75 * hw, 0.75 * hw, 0.47 * H, 0.82 * H, "cloth", shirt, sky_shade),
        box_part(-0.06, 0.06, -hw, -0.75 * hw, 0.45 * H, 0.8 * H, "cloth", shirt, sky_shade),
        box_part(-0.06, 0.06, 0.75 * hw, hw, 0.45 * H, 0.8 * H, "cloth", shirt, sky_shade),
        box_part(-0.05, 0.05, -0.05, 0.05, 0.82 * H, 0.86 * H, "skin", skin, sky_shade),
        sphere_part([0.0, 0.0, 0.92 * H], [0.1, 0.09, 0.08 * H], "skin", skin, subdiv=1, shade=sky_shade),
        sphere_part([-0.01, 0.0, 0.96 * H], [0.105, 0.095, 0.05 * H], "cloth", (0.2, 0.14, 0.08), subdiv=1, shade=sky_shade),
    ]
    return parts



def export_assets(out: str | Any, seed: int = 0) -> list[str]:
    """Write the procedural asset library to ``out``: one GLB per actor class at a typical size
    (vertex colours, box frame) and 256x256 samples of the ground textures. Returns the file names."""
    from pathlib import Path

    from PIL import Image

    out = Path(out)
    (out / "actors").mkdir(parents=True, exist_ok=True)
    (out / "textures").mkdir(parents=True, exist_ok=True)
    written = []
    sizes = {"car": (4.5, 1.85, 1.5), "truck": (7.0, 2.35, 3.0), "bus": (11.0, 2.5, 3.1), "cyclist": (1.8, 0.65, 1.75),
             "pedestrian": (0.55, 0.6, 1.75)}
    for cls, size in sizes.items():
        parts = actor_parts(cls, size, f"asset-{cls}")
        mesh, _ = parts_to_trimesh(parts)
        cols = np.concatenate([p.colors for p in parts])
        mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=np.column_stack([np.clip(cols, 0, 1) * 255, np.full(len(cols), 255)]).astype(np.uint8))
        name = f"actors/{cls}.glb"
        mesh.export(out / name)
        written.append(name)
    rng = np.random.default_rng(seed)
    for name, img in (("asphalt", tex.asphalt((256, 256), rng, 0.1)), ("sidewalk", tex.concrete_tiles((256, 256), rng, 0.1)),
                      ("grass", tex.grass((256, 256), rng, 0.1)), ("facade", tex.facade(rng, 4, 4))):
        fn = f"textures/{name}.png"
        Image.fromarray(img).save(out / fn)
        written.append(fn)
    return written
