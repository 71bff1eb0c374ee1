"""The static part of the synthetic town as meshes (numpy + trimesh, no GL): textured asphalt with
lane markings, raised sidewalks with kerbs, grass, buildings with window facades (one texture
atlas), trees, street lights, stop signs and a distant tree line, plus the merged mesh LiDAR rays
are cast against and ground textures with baked sun shadows.

Geometry is in metres in the world frame (z up); parts are built from the primitives of
:mod:`sim.synth.parts`. Everything depends only on the scene's preset and seed (its props and
textures random streams).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
import trimesh
from numpy.typing import NDArray
from shapely.geometry import Point, Polygon, box

import sim.synth.textures as tex
from sim.synth.network import KERB_H, PARKING_W, SIDEWALK_W, TownNetwork
from sim.synth.parts import (
    SUN,
    Part,
    box_part,
    cylinder_part,
    flat_part,
    kerb_walls,
    merge_parts,
    parts_to_trimesh,
    quad_part,
    sphere_part,
    sun_shade,
    transform_part,
)
from sim.synth.presets import TownPreset

__all__ = ["StaticTown", "build_static_town"]

log = logging.getLogger(__name__)

F64 = NDArray[np.float64]
F32 = NDArray[np.float32]

#: storey height and window-bay width of the buildings (m)
FLOOR_H = 3.2
BAY_W = 3.0


def _strip(p0: F64, p1: F64, width: float) -> Polygon:
    d = (p1 - p0) / max(float(np.linalg.norm(p1 - p0)), 1e-9)
    n = np.array([-d[1], d[0]]) * width / 2
    return Polygon([p0 - n, p1 - n, p1 + n, p0 + n])


def _dashes(p0: F64, p1: F64, width: float, dash: float, gap: float) -> list[Polygon]:
    ln = float(np.linalg.norm(p1 - p0))
    d = (p1 - p0) / max(ln, 1e-9)
    out, s = [], gap / 2
    while s + dash <= ln:
        out.append(_strip(p0 + d * s, p0 + d * (s + dash), width))
        s += dash + gap
    return out


# ------------------------------------------------------------------------------------ static town
@dataclass
class StaticTown:
    """The static town: parts to draw, their textures, and one merged mesh for LiDAR ray casting.

    Attributes:
        parts: merged :class:`Part` s (one per material/texture pair).
        textures: texture key -> (H, W, 3) uint8 image.
        ground_mapping: (x0, y0, width_m, height_m) of the world-aligned ground textures
            (``asphalt``, ``sidewalk``, ``grass``): texture pixel row r, column c covers world
            x = x0 + (c + 0.5) * width_m / W, y = y0 + (r + 0.5) * height_m / H.
        mesh: all static triangles (world frame) for ray casting; ``face_material`` holds the
            :data:`MATERIAL_IDS` of each face.
    """

    parts: list[Part]
    textures: dict[str, NDArray[np.uint8]]
    ground_mapping: tuple[float, float, float, float]
    mesh: trimesh.Trimesh = field(repr=False)
    face_material: NDArray[np.int16] = field(repr=False)
    sky: F32 = field(repr=False, default_factory=lambda: np.zeros((2, 2), dtype=np.float32))

    @property
    def n_faces(self) -> int:
        return len(self.mesh.faces)


def _ground_uv(x0: float, y0: float, w: float, h: float) -> Any:
    def uv_of(xy: F64) -> F64:
        return np.column_stack([(xy[:, 0] - x0) / w, (xy[:, 1] - y0) / h])

    return uv_of


def build_static_town(net: TownNetwork, town: TownPreset, rng: np.random.Generator, trng: np.random.Generator) -> StaticTown:
    """Build every static mesh and texture of the town on road network ``net`` of preset ``town``,
    props (buildings, furniture, trees) drawn from ``rng`` and textures from ``trng`` (the scene's
    props and textures streams: see :meth:`sim.synth.scene.SynthScene.static_town`)."""
    xmin, ymin, xmax, ymax = net.town_area.bounds
    x0, y0 = xmin - 20.0, ymin - 20.0
    gw, gh = (xmax - xmin) + 40.0, (ymax - ymin) + 40.0
    mpp = max(0.1, max(gw, gh) / 2048.0)
    shape = (math.ceil(gh / mpp), math.ceil(gw / mpp))
    gw, gh = shape[1] * mpp, shape[0] * mpp
    uv_of = _ground_uv(x0, y0, gw, gh)
    textures: dict[str, NDArray[np.uint8]] = {
        "asphalt": tex.asphalt(shape, trng, mpp),
        "sidewalk": tex.concrete_tiles(shape, trng, mpp),
        "grass": tex.grass(shape, trng, mpp),
        "paint_white": tex.paint((256, 256), trng, (0.93, 0.93, 0.9)),
        "paint_yellow": tex.paint((256, 256), trng, (0.92, 0.72, 0.15)),
        "roof": tex.roof((256, 256), trng),
    }
    parts: list[Part] = []
    road = net.road_area
    outer = road.buffer(SIDEWALK_W, join_style="round")
    parts.append(flat_part(road, 0.0, "asphalt", "asphalt", uv_of))
    sidewalk = net.sidewalk_area
    parts.append(flat_part(sidewalk, KERB_H, "sidewalk", "sidewalk", uv_of))
    parts.append(kerb_walls(sidewalk, 0.0, KERB_H, "sidewalk", "sidewalk", uv_of))
    cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
    far = 700.0
    ground = box(cx - far, cy - far, cx + far, cy + far).difference(outer)
    parts.append(flat_part(ground, KERB_H - 0.02, "grass", "grass", uv_of))
    parts.extend(_markings(net, uv_of))
    lots = net.town_area.difference(outer.buffer(1.0))
    occupied: list[Polygon] = []
    parts.extend(_buildings(town, net, rng, trng, textures, occupied))
    parts.extend(_street_furniture(net, rng, occupied))
    parts.extend(_trees(net, rng, lots, occupied))
    parts.append(_tree_line(rng, (cx, cy)))
    merged = merge_parts(parts)
    mesh, mats = parts_to_trimesh(merged)
    _bake_ground_shadows(mesh, textures, (x0, y0, gw, gh))
    sky = tex.sky_clouds(trng)
    return StaticTown(merged, textures, (x0, y0, gw, gh), mesh, mats, sky)


def _bake_ground_shadows(mesh: trimesh.Trimesh, textures: dict[str, NDArray[np.uint8]],
                         mapping: tuple[float, float, float, float], strength: float = 0.42) -> None:
    """Darken the world-aligned ground textures where the static town (buildings, trees, poles)
    hides the sun (:data:`SUN`): one ray per 2x2 texels, cast with Embree, softened by bilinear
    upsampling. Skipped (with a log message) without Embree: the pure-numpy caster is too slow."""
    if not trimesh.ray.has_embree:
        log.info("embreex not available: ground shadows are not baked")
        return
    from PIL import Image
    from trimesh.ray import ray_pyembree

    x0, y0, gw, gh = mapping
    h, w = textures["asphalt"].shape[:2]
    hs, ws = (h + 1) // 2, (w + 1) // 2
    ys = y0 + (np.arange(hs) * 2 + 1.0) * gh / h
    xs = x0 + (np.arange(ws) * 2 + 1.0) * gw / w
    gx, gy = np.meshgrid(xs, ys)
    origins = np.column_stack([gx.ravel(), gy.ravel(), np.full(gx.size, KERB_H + 0.05)])
    dirs = np.broadcast_to(SUN, origins.shape)
    scene = ray_pyembree.RayMeshIntersector(mesh, scale_to_box=False)._scene
    prim = np.asarray(scene.run(origins.astype(np.float32), np.ascontiguousarray(dirs, dtype=np.float32)))
    shadow = (prim >= 0).reshape(hs, ws).astype(np.float32)
    im = Image.fromarray(shadow, mode="F").resize((w, h), Image.BILINEAR)
    factor = 1.0 - strength * np.asarray(im, dtype=np.float32)
    for key in ("asphalt", "sidewalk", "grass"):
        textures[key] = np.clip(np.round(textures[key].astype(np.float32) * factor[..., None]), 0, 255).astype(np.uint8)


def _markings(net: TownNetwork, uv_of: Any) -> list[Part]:
    from sim.synth.network import ROAD_RUNOUT

    white: list[Polygon] = []
    yellow: list[Polygon] = []
    by_id = net.lane_by_id
    for r in net.roads:
        lanes = [ln for ln in net.lanes if ln.kind == "road" and ln.road == r.id]
        fwd = [ln for ln in lanes if np.dot(ln.pts[-1] - ln.pts[0], r.u) > 0]
        if not fwd:
            continue
        p_start, p_end = fwd[0].pts[0], fwd[0].pts[-1]
        s0 = float(np.dot(p_start - np.asarray(r.a), r.u))
        s1 = float(np.dot(p_end - np.asarray(r.a), r.u))
        if r.node_a is None:
            s0 -= ROAD_RUNOUT
        if r.node_b is None:
            s1 += ROAD_RUNOUT
        a = np.asarray(r.a)

        def at(s: float, off: float, a: F64 = a, r: Any = r) -> F64:
            return a + r.u * s + r.n * off

        # double yellow centre line
        for off in (-0.11, 0.11):
            yellow.append(_strip(at(s0, off), at(s1, off), 0.12))
        # dashed lane dividers and solid edge lines, both directions
        for sign in (-1.0, 1.0):
            for k in range(1, r.lanes):
                white.extend(_dashes(at(s0, sign * k * r.lane_w), at(s1, sign * k * r.lane_w), 0.14, 3.0, 6.0))
            white.append(_strip(at(s0, sign * r.lanes * r.lane_w), at(s1, sign * r.lanes * r.lane_w), 0.14))
            # parking bay ticks
            e = sign * (r.lanes * r.lane_w + PARKING_W)
            s = s0 + 4.0
            while s < s1 - 4.0:
                white.append(_strip(at(s, sign * r.lanes * r.lane_w), at(s, e * 0.98), 0.1))
                s += 6.5
    del by_id
    for sl in net.stop_lines:
        white.append(Polygon(sl))
    for _cid, q in net.crosswalks:
        q = np.asarray(q)
        across = q[3] - q[0]
        width = float(np.linalg.norm(across))
        d = across / width
        along = q[1] - q[0]
        s = 0.3
        while s + 0.5 <= width - 0.3:
            p = q[0] + d * s
            white.append(Polygon([p, p + along, p + along + d * 0.5, p + d * 0.5]))
            s += 1.0
    out = []
    for polys, mat in ((white, "paint_white"), (yellow, "paint_yellow")):
        geom = shapely.union_all([p for p in polys if p.is_valid and p.area > 0])
        geom = geom.intersection(net.road_area)
        part = flat_part(geom, 0.008, mat, mat, lambda xy: xy / 4.0)
        out.append(part)
    return out


FACADE_PX_PER_M = 16.0
ATLAS_W = 4096
GUTTER = 4


def _wall_bays(fp: Polygon) -> tuple[F64, list[int]]:
    """Footprint corners (counter-clockwise) and the number of window bays on each wall."""
    c = np.asarray(shapely.geometry.polygon.orient(fp, 1.0).exterior.coords)[:-1]
    bays = []
    for i in range(len(c)):
        ln = float(np.linalg.norm(c[(i + 1) % len(c)] - c[i]))
        bays.append(max(1, round(ln / BAY_W)))
    return c, bays


def _building_parts(c: F64, bays: list[int], height: float, z0: float, rect: tuple[float, float, float, float]) -> list[Part]:
    """Walls (textured from the atlas rectangle ``rect`` = (u0, v0, u1, v1) that holds this
    building's facade strip: all walls side by side, ``bays`` bays each) and a flat roof."""
    u0, v0, u1, v1 = rect
    total = float(sum(bays))
    top = z0 + height
    walls = []
    acc = 0.0
    for i in range(len(c)):
        a, b = c[i], c[(i + 1) % len(c)]
        d = b - a
        ln = float(np.linalg.norm(d))
        n = np.array([d[1], -d[0], 0.0]) / ln
        ua = u0 + (u1 - u0) * acc / total
        acc += bays[i]
        ub = u0 + (u1 - u0) * acc / total
        v = np.array([[a[0], a[1], z0], [b[0], b[1], z0], [b[0], b[1], top], [a[0], a[1], top]])
        uv = np.array([[ua, v1], [ub, v1], [ub, v0], [ua, v0]])
        walls.append(quad_part(v, n, "wall", (1, 1, 1), uv, "facades"))
    roof = flat_part(Polygon(c), top, "roof", "roof", lambda xy: xy / 8.0)
    return [*walls, roof]


def _pack_atlas(images: list[NDArray[np.uint8]]) -> tuple[NDArray[np.uint8], list[tuple[float, float, float, float]]]:
    """Shelf-pack images into one atlas (rows top to bottom) with edge-padded gutters; returns the
    atlas and each image's (u0, v0, u1, v1) in the ``v = row / H`` convention."""
    order = sorted(range(len(images)), key=lambda i: -images[i].shape[0])
    pos: dict[int, tuple[int, int]] = {}
    x = y = shelf_h = 0
    for i in order:
        h, w = images[i].shape[:2]
        w2, h2 = min(w, ATLAS_W - 2 * GUTTER) + 2 * GUTTER, h + 2 * GUTTER
        if x + w2 > ATLAS_W:
            x, y, shelf_h = 0, y + shelf_h, 0
        pos[i] = (x, y)
        x += w2
        shelf_h = max(shelf_h, h2)
    height = max(8, y + shelf_h)
    height += (-height) % 4
    atlas = np.zeros((height, ATLAS_W, 3), dtype=np.uint8)
    rects = []
    for i, img in enumerate(images):
        img = img[:, : ATLAS_W - 2 * GUTTER]
        h, w = img.shape[:2]
        px, py = pos[i]
        atlas[py:py + h + 2 * GUTTER, px:px + w + 2 * GUTTER] = np.pad(img, ((GUTTER, GUTTER), (GUTTER, GUTTER), (0, 0)), mode="edge")
        x0, y0 = px + GUTTER, py + GUTTER
        rects.append((x0 / ATLAS_W, y0 / height, (x0 + w) / ATLAS_W, (y0 + h) / height))
    return atlas, rects


def _buildings(town: TownPreset, net: TownNetwork, rng: np.random.Generator, trng: np.random.Generator,
               textures: dict[str, NDArray[np.uint8]], occupied: list[Polygon]) -> list[Part]:
    """Buildings along both sides of every road (``town.building_density``), clear of the road,
    the sidewalk and each other, with their facades packed into the ``facades`` texture atlas."""
    keep_out = net.road_area.buffer(SIDEWALK_W + 1.2)
    area = net.town_area.buffer(-2.0)
    specs: list[tuple[F64, list[int], int]] = []
    images: list[NDArray[np.uint8]] = []
    shapely.prepare(area)
    shapely.prepare(keep_out)
    boxes: list[F64] = [np.asarray(o.bounds) for o in occupied]
    for r in net.roads:
        u, n = r.u, r.n
        a = np.asarray(r.a)
        for side in (-1.0, 1.0):
            s = 0.0
            while s < r.length:
                width = float(rng.uniform(8.0, 20.0))
                depth = float(rng.uniform(8.0, 16.0))
                gap = float(rng.uniform(1.0, 6.0))
                setback = float(rng.uniform(1.5, 6.0))
                place = rng.uniform() < town.building_density
                floors = int(rng.integers(2, 8 if r.main else 5))
                s_mid = s + width / 2
                s += width + gap
                if not place:
                    continue
                off = side * (r.half_w + SIDEWALK_W + setback + depth / 2)
                cen = a + u * s_mid + n * off
                hl, hd = width / 2, depth / 2
                corners = [cen + u * x + n * y for x, y in ((-hl, -hd), (hl, -hd), (hl, hd), (-hl, hd))]
                fp = Polygon(corners)
                if not area.contains(fp) or fp.intersects(keep_out):
                    continue
                b = np.asarray(fp.bounds)
                if len(boxes):
                    bb = np.asarray(boxes)
                    close = (bb[:, 0] < b[2] + 1.5) & (bb[:, 2] > b[0] - 1.5) & (bb[:, 1] < b[3] + 1.5) & (bb[:, 3] > b[1] - 1.5)
                    if any(fp.distance(occupied[j]) < 1.5 for j in np.nonzero(close)[0]):
                        continue
                occupied.append(fp)
                boxes.append(b)
                c, bays = _wall_bays(fp)
                specs.append((c, bays, floors))
                images.append(tex.facade(trng, bays=sum(bays), floors=floors, px_per_m=FACADE_PX_PER_M))
    if not specs:
        return []
    atlas, rects = _pack_atlas(images)
    textures["facades"] = atlas
    parts: list[Part] = []
    for (c, bays, floors), rect in zip(specs, rects, strict=True):
        parts.extend(_building_parts(c, bays, floors * FLOOR_H, KERB_H - 0.02, rect))
    return parts


def _street_furniture(net: TownNetwork, rng: np.random.Generator, occupied: list[Polygon]) -> list[Part]:
    parts: list[Part] = []
    metal = (0.42, 0.44, 0.46)
    # street lights along every road, alternating sides, on the sidewalk next to the kerb
    for r in net.roads:
        a = np.asarray(r.a)
        s = float(rng.uniform(6.0, 14.0))
        side = 1.0
        while s < r.length - 4.0:
            base = a + r.u * s + side * r.n * (r.half_w + 0.6)
            if not net.road_area.buffer(0.3).contains(Point(base)) and net.sidewalk_area.contains(Point(base)):
                parts.extend(_street_light(base, -side * r.n, metal))
                occupied.append(Point(base).buffer(0.6))
            s += float(rng.uniform(24.0, 32.0))
            side = -side
    # stop signs on the minor roads' approaches
    for x, y, yaw in net.stop_signs:
        parts.extend(_stop_sign(np.array([x, y]), yaw))
        occupied.append(Point(x, y).buffer(0.5))
    return parts


def _street_light(base: F64, toward_road: F64, color: Sequence[float]) -> list[Part]:
    h = 7.0
    pole = cylinder_part([base[0], base[1], KERB_H + h / 2], "z", 0.09, h, "metal", color, segments=10)
    tip = base + toward_road * 1.6
    yaw = math.atan2(toward_road[1], toward_road[0])
    m = np.eye(4)
    m[:3, :3] = np.array([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]])
    m[:3, 3] = [base[0], base[1], KERB_H]
    arm = transform_part(box_part(0.0, 1.8, -0.05, 0.05, h - 0.12, h - 0.02, "metal", color), m)
    m2 = m.copy()
    m2[:3, 3] = [tip[0], tip[1], KERB_H]
    lamp = transform_part(box_part(-0.1, 0.55, -0.18, 0.18, h - 0.3, h - 0.05, "lamp", (0.85, 0.85, 0.8)), m2)
    return [pole, arm, lamp]


def _stop_sign(p: F64, facing_yaw: float) -> list[Part]:
    """A stop sign whose face looks along ``facing_yaw`` (towards approaching traffic)."""
    h = 2.1
    parts = [cylinder_part([p[0], p[1], KERB_H + h / 2], "z", 0.04, h, "metal", (0.55, 0.56, 0.57), segments=8)]
    f = np.array([math.cos(facing_yaw), math.sin(facing_yaw), 0.0])
    side = np.array([-f[1], f[0], 0.0])
    zc = KERB_H + h + 0.05
    ang = np.arange(8) * (2 * np.pi / 8) + np.pi / 8

    def octagon(radius: float, offset: float, mat: str, col: Sequence[float], normal: F64) -> Part:
        ring = np.array([p[0], p[1], zc]) + f * offset + np.outer(np.cos(ang) * radius, side) + np.outer(np.sin(ang) * radius, [0, 0, 1])
        v = np.vstack([np.array([p[0], p[1], zc]) + f * offset, ring])
        faces = np.array([[0, 1 + i, 1 + (i + 1) % 8] for i in range(8)])
        if normal @ f < 0:
            faces = faces[:, [0, 2, 1]]
        nn = np.tile(normal, (len(v), 1))
        return Part(mat, v, faces, nn, np.outer(sun_shade(nn) * 0 + 1.0, col))

    parts.append(octagon(0.40, 0.06, "sign_face", (0.93, 0.93, 0.93), f))
    parts.append(octagon(0.36, 0.065, "sign_face", (0.78, 0.08, 0.08), f))
    parts.append(octagon(0.40, 0.04, "sign_back", (0.5, 0.5, 0.52), -f))
    return parts


def _trees(net: TownNetwork, rng: np.random.Generator, lots: Any, occupied: list[Polygon]) -> list[Part]:
    parts: list[Part] = []
    spots: list[F64] = []
    # street trees on the sidewalk's outer edge
    for r in net.roads:
        a = np.asarray(r.a)
        for side in (-1.0, 1.0):
            s = float(rng.uniform(3.0, 10.0))
            while s < r.length:
                p = a + r.u * s + side * r.n * (r.half_w + SIDEWALK_W - 0.7)
                if rng.uniform() < 0.55:
                    spots.append(p)
                s += float(rng.uniform(8.0, 14.0))
    # trees in the lots
    xmin, ymin, xmax, ymax = lots.bounds
    for _ in range(int(lots.area / 250)):
        spots.append(np.array([rng.uniform(xmin, xmax), rng.uniform(ymin, ymax)]))
    greens = np.array([[0.22, 0.40, 0.16], [0.28, 0.45, 0.18], [0.18, 0.34, 0.15], [0.32, 0.42, 0.20], [0.25, 0.38, 0.22]])
    from shapely.strtree import STRtree

    taken = STRtree(occupied) if occupied else None
    near_road = net.road_area.buffer(0.5)
    for g in (near_road, net.sidewalk_area, lots):
        shapely.prepare(g)
    trees_xy: list[tuple[float, float, float]] = []
    for p in spots:
        pt = Point(p)
        on_sidewalk = net.sidewalk_area.contains(pt)
        if not on_sidewalk and not lots.contains(pt):
            continue
        if near_road.contains(pt) or (taken is not None and len(taken.query(pt, predicate="dwithin", distance=2.0))):
            continue
        if any((p[0] - x) ** 2 + (p[1] - y) ** 2 < (2.0 + r) ** 2 for x, y, r in trees_xy):
            continue
        crown_r = float(rng.uniform(1.4, 2.6) if on_sidewalk else rng.uniform(1.8, 3.4))
        trunk_h = float(rng.uniform(2.2, 3.2))
        trunk_r = float(rng.uniform(0.12, 0.2))
        z0 = KERB_H - 0.02
        trunk = cylinder_part([p[0], p[1], z0 + (trunk_h + crown_r * 0.5) / 2], "z", trunk_r, trunk_h + crown_r * 0.5, "trunk",
                              (0.36, 0.27, 0.19), segments=8)
        col = greens[int(rng.integers(len(greens)))] * rng.uniform(0.85, 1.15)
        crown = sphere_part([p[0], p[1], z0 + trunk_h + crown_r * 0.85], [crown_r, crown_r, crown_r * 1.1], "foliage",
                            np.clip(col, 0, 1), subdiv=2, jitter=0.18, rng=rng, color_jitter=0.18)
        parts.extend([trunk, crown])
        trees_xy.append((float(p[0]), float(p[1]), crown_r * 0.6))
    return parts


def _tree_line(rng: np.random.Generator, center: tuple[float, float], radius: float = 420.0, n: int = 180) -> Part:
    """A distant ring of wooded hills so the horizon is not empty."""
    ang = np.arange(n) * (2 * np.pi / n)
    h = 14.0 + 9.0 * np.sin(3 * ang + rng.uniform(0, 6)) + rng.uniform(-4, 6, size=n)
    h = np.convolve(np.pad(h, 2, mode="wrap"), np.ones(5) / 5, mode="valid")
    c = np.asarray(center)
    base = np.column_stack([c[0] + radius * np.cos(ang), c[1] + radius * np.sin(ang), np.zeros(n)])
    top = base.copy()
    top[:, 2] = h
    v = np.vstack([base, top])
    faces = []
    for i in range(n):
        j = (i + 1) % n
        faces.append([i, n + j, j])
        faces.append([i, n + i, n + j])
    nn = np.column_stack([-np.cos(ang), -np.sin(ang), np.zeros(n)])
    nn = np.vstack([nn, nn])
    col = np.vstack([np.tile([0.20, 0.28, 0.18], (n, 1)), np.tile([0.30, 0.38, 0.30], (n, 1))])
    col = col * (1 + rng.uniform(-0.12, 0.12, size=(2 * n, 1)))
    return Part("far", v, np.asarray(faces), nn, np.clip(col, 0, 1))
