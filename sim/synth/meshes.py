"""Meshes of the synthetic town (built with numpy + trimesh, no GL): the static town (textured
asphalt with lane markings, raised sidewalks with kerbs, grass, buildings with window facades,
trees, street lights, stop signs, a distant tree line) and procedural actor models by class
(car, truck, bus, cyclist, pedestrian) sized to each box and coloured from the actor id.

Geometry is in metres; the static town is in the world frame (z up), actor models in the actor's
box frame (x forward, y left, z up, origin at the box's bottom centre). Every :class:`Part` carries
a LiDAR material name (see :data:`MATERIALS`), UVs into a named texture (or none) and per-vertex
colour multipliers in which a fixed illumination is baked, so the renderer draws unlit ("flat")
and the appearance does not depend on the viewpoint.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
import trimesh
from numpy.typing import NDArray
from shapely.geometry import Point, Polygon, box

from sim.synth import textures as tex
from sim.synth.network import KERB_H, PARKING_W, SIDEWALK_W, TownNetwork

if TYPE_CHECKING:
    from sim.synth.scene import SynthScene

__all__ = [
    "MATERIALS",
    "MATERIAL_IDS",
    "Part",
    "StaticTown",
    "actor_parts",
    "build_static_town",
    "merge_parts",
]

F64 = NDArray[np.float64]
F32 = NDArray[np.float32]

#: LiDAR reflectivity per material, in [0, 1] (retro-reflective paint and plates high, asphalt and
#: glass low).
MATERIALS: dict[str, float] = {
    "asphalt": 0.10,
    "paint_white": 0.62,
    "paint_yellow": 0.52,
    "sidewalk": 0.28,
    "grass": 0.14,
    "wall": 0.30,
    "roof": 0.20,
    "trunk": 0.18,
    "foliage": 0.22,
    "metal": 0.45,
    "sign_face": 0.92,
    "sign_back": 0.40,
    "lamp": 0.55,
    "far": 0.15,
    "body": 0.32,
    "glass": 0.06,
    "tyre": 0.04,
    "plate": 0.95,
    "light": 0.80,
    "cloth": 0.20,
    "skin": 0.25,
    "bike": 0.40,
}
MATERIAL_IDS: dict[str, int] = {m: i for i, m in enumerate(MATERIALS)}

SUN = np.array([0.45, -0.35, 0.82])
SUN = SUN / np.linalg.norm(SUN)
FLOOR_H = 3.2
BAY_W = 3.0


@dataclass
class Part:
    """A mesh piece with one material and (optionally) one texture.

    Attributes:
        material: LiDAR material name (a key of :data:`MATERIALS`).
        vertices: (N, 3) metres; faces: (M, 3) vertex indices (counter-clockwise seen from outside).
        normals: (N, 3) unit vertex normals.
        colors: (N, 3) colour multipliers in [0, 1] (albedo for untextured parts, baked shading).
        uv: (N, 2) texture coordinates (repeat wrapping) or None.
        texture: key into :attr:`StaticTown.textures` (or an actor texture) or None.
    """

    material: str
    vertices: F64
    faces: NDArray[np.int64]
    normals: F64
    colors: F64
    uv: F64 | None = None
    texture: str | None = None

    def key(self) -> tuple[str, str | None]:
        return (self.material, self.texture)


def merge_parts(parts: Iterable[Part]) -> list[Part]:
    """Concatenate parts that share material and texture (fewer draw calls)."""
    groups: dict[tuple[str, str | None], list[Part]] = {}
    for p in parts:
        if len(p.faces):
            groups.setdefault(p.key(), []).append(p)
    out = []
    for (mat, tkey), ps in groups.items():
        offs = np.cumsum([0] + [len(p.vertices) for p in ps[:-1]])
        uv = None
        if tkey is not None:
            uv = np.concatenate([p.uv if p.uv is not None else np.zeros((len(p.vertices), 2)) for p in ps])
        out.append(Part(
            mat,
            np.concatenate([p.vertices for p in ps]),
            np.concatenate([p.faces + o for p, o in zip(ps, offs, strict=True)]),
            np.concatenate([p.normals for p in ps]),
            np.concatenate([p.colors for p in ps]),
            uv,
            tkey,
        ))
    return out


# ------------------------------------------------------------------------------------- shading
def sun_shade(normals: F64) -> F64:
    """Baked illumination of the static town: sky ambient + a fixed sun (Lambert)."""
    n = np.asarray(normals)
    return 0.58 + 0.12 * n[:, 2] + 0.34 * np.clip(n @ SUN, 0.0, 1.0)


def sky_shade(normals: F64) -> F64:
    """Rotation-invariant illumination for actors (they turn; the sky does not)."""
    n = np.asarray(normals)
    return 0.74 + 0.26 * n[:, 2]


# ----------------------------------------------------------------------------------- primitives
def _quad_part(corners: F64, normal: F64, material: str, albedo: Sequence[float], uv: F64 | None = None,
               texture: str | None = None, shade: Any = sun_shade) -> Part:
    v = np.asarray(corners, dtype=np.float64)
    n = np.tile(np.asarray(normal, dtype=np.float64), (4, 1))
    c = np.outer(shade(n), albedo)
    return Part(material, v, np.array([[0, 1, 2], [0, 2, 3]]), n, c, uv, texture)


def hexahedron(bottom: F64, top: F64, material: str, albedo: Sequence[float], shade: Any = sun_shade,
               skip: Sequence[str] = ()) -> Part:
    """A convex solid from 4 bottom and 4 top corners (counter-clockwise seen from above), with
    flat-shaded faces (each face has its own vertices)."""
    b, t = np.asarray(bottom, dtype=np.float64), np.asarray(top, dtype=np.float64)
    faces_q = []
    if "bottom" not in skip:
        faces_q.append([b[0], b[3], b[2], b[1]])
    if "top" not in skip:
        faces_q.append([t[0], t[1], t[2], t[3]])
    for i in range(4):
        j = (i + 1) % 4
        faces_q.append([b[i], b[j], t[j], t[i]])
    verts, faces, norms = [], [], []
    for k, q in enumerate(faces_q):
        q = np.asarray(q)
        n = np.cross(q[1] - q[0], q[2] - q[0])
        if np.linalg.norm(n) < 1e-12:
            n = np.cross(q[2] - q[0], q[3] - q[0])
        n = n / max(np.linalg.norm(n), 1e-12)
        verts.append(q)
        norms.append(np.tile(n, (4, 1)))
        faces.append(np.array([[0, 1, 2], [0, 2, 3]]) + 4 * k)
    v = np.concatenate(verts)
    nn = np.concatenate(norms)
    return Part(material, v, np.concatenate(faces), nn, np.outer(shade(nn), albedo))


def box_part(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float, material: str,
             albedo: Sequence[float], shade: Any = sun_shade, skip: Sequence[str] = ()) -> Part:
    """An axis-aligned box in the local frame."""
    bot = np.array([[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0]])
    top = bot + np.array([0.0, 0.0, z1 - z0])
    return hexahedron(bot, top, material, albedo, shade, skip)


def cylinder_part(center: Sequence[float], axis: str, radius: float, length: float, material: str,
                  albedo: Sequence[float], segments: int = 12, shade: Any = sun_shade) -> Part:
    """A capped cylinder along local axis ``axis`` ('x', 'y' or 'z') centred at ``center``."""
    m = trimesh.creation.cylinder(radius=radius, height=length, sections=segments)
    # flat-shaded: unmerge vertices
    v = m.vertices[m.faces].reshape(-1, 3)
    f = np.arange(len(v)).reshape(-1, 3)
    fn = np.repeat(m.face_normals, 3, axis=0)
    # smooth the side normals (radial) for a rounder look
    side = np.abs(fn[:, 2]) < 0.5
    radial = v[:, :2] / np.maximum(np.linalg.norm(v[:, :2], axis=1, keepdims=True), 1e-9)
    fn[side, :2] = radial[side]
    fn[side, 2] = 0.0
    rot = {"z": np.eye(3), "x": np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]]), "y": np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]])}[axis]
    v = v @ rot.T + np.asarray(center)
    fn = fn @ rot.T
    return Part(material, v, f, fn, np.outer(shade(fn), albedo))


def sphere_part(center: Sequence[float], radii: Sequence[float], material: str, albedo: Sequence[float],
                subdiv: int = 1, shade: Any = sun_shade, jitter: float = 0.0, rng: np.random.Generator | None = None,
                color_jitter: float = 0.0) -> Part:
    """An ellipsoid (icosphere scaled by ``radii``), optionally with a bumpy surface and colour noise."""
    m = trimesh.creation.icosphere(subdivisions=subdiv)
    v = m.vertices.copy()
    if jitter and rng is not None:
        v = v * (1.0 + rng.uniform(-jitter, jitter, size=(len(v), 1)))
    v = v * np.asarray(radii) + np.asarray(center)
    m2 = trimesh.Trimesh(v, m.faces, process=False)
    n = m2.vertex_normals.copy()
    col = np.outer(shade(n), albedo)
    if color_jitter and rng is not None:
        col = col * (1.0 + rng.uniform(-color_jitter, color_jitter, size=(len(v), 1)))
    return Part(material, v, m.faces.copy(), n, np.clip(col, 0, 1))


def transform_part(p: Part, m: F64) -> Part:
    """Apply a rigid 4x4 transform to a part (normals rotated)."""
    r = m[:3, :3]
    return Part(p.material, p.vertices @ r.T + m[:3, 3], p.faces, p.normals @ r.T, p.colors, p.uv, p.texture)


# ------------------------------------------------------------------------------ flat polygons
def _triangulate(geom: Any) -> tuple[F64, NDArray[np.int64]]:
    polys = [geom] if isinstance(geom, Polygon) else [g for g in getattr(geom, "geoms", []) if isinstance(g, Polygon)]
    vs, fs, off = [], [], 0
    for p in polys:
        if p.is_empty or p.area < 1e-6:
            continue
        v2, f = trimesh.creation.triangulate_polygon(p, engine="earcut")
        vs.append(v2)
        fs.append(f + off)
        off += len(v2)
    if not vs:
        return np.zeros((0, 2)), np.zeros((0, 3), dtype=np.int64)
    return np.concatenate(vs), np.concatenate(fs).astype(np.int64)


def flat_part(geom: Any, z: float, material: str, texture: str | None, uv_of: Any, albedo: Sequence[float] = (1, 1, 1)) -> Part:
    """A horizontal (upward-facing) triangulated polygon at height ``z``."""
    v2, f = _triangulate(geom)
    v = np.column_stack([v2, np.full(len(v2), z)])
    # make the winding counter-clockwise seen from above
    if len(f):
        a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
        cz = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
        f = np.where((cz < 0)[:, None], f[:, [0, 2, 1]], f)
    n = np.tile([0.0, 0.0, 1.0], (len(v), 1))
    return Part(material, v, f, n, np.outer(sun_shade(n), albedo), uv_of(v2) if texture else None, texture)


def kerb_walls(geom: Any, z0: float, z1: float, material: str, texture: str | None, uv_of: Any) -> Part:
    """Vertical walls along every ring of ``geom`` from z0 to z1 (the kerb faces)."""
    polys = [geom] if isinstance(geom, Polygon) else list(getattr(geom, "geoms", []))
    verts, faces, norms = [], [], []
    k = 0
    for p in polys:
        p = shapely.geometry.polygon.orient(p, 1.0)  # exterior CCW, holes CW
        for ring in [p.exterior, *p.interiors]:
            c = np.asarray(ring.coords)[:, :2]
            for a, b in itertools.pairwise(c):
                d = b - a
                ln = float(np.linalg.norm(d))
                if ln < 1e-6:
                    continue
                n = np.array([d[1], -d[0], 0.0]) / ln  # outward for a CCW exterior / CW hole
                verts.append([[a[0], a[1], z0], [b[0], b[1], z0], [b[0], b[1], z1], [a[0], a[1], z1]])
                norms.append(np.tile(n, (4, 1)))
                faces.append(np.array([[0, 1, 2], [0, 2, 3]]) + 4 * k)
                k += 1
    if not verts:
        return Part(material, np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), np.zeros((0, 3)), np.zeros((0, 3)))
    v = np.asarray(verts, dtype=np.float64).reshape(-1, 3)
    nn = np.concatenate(norms)
    uv = None
    if texture:
        uv = uv_of(v[:, :2]) + np.where(v[:, 2:3] > z0, 0.0015, 0.0)
    return Part(material, v, np.concatenate(faces), nn, np.outer(sun_shade(nn), (1, 1, 1)), uv, texture)


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


def build_static_town(scene: SynthScene) -> StaticTown:
    """Build every static mesh and texture of ``scene``'s town (depends only on preset and seed)."""
    from sim.synth.scene import _S_PROPS, _S_TEXTURES

    net: TownNetwork = scene.network
    rng = scene.seed_stream(_S_PROPS)
    trng = scene.seed_stream(_S_TEXTURES)
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
    parts.extend(_buildings(scene, net, rng, trng, textures, occupied))
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
    import logging

    if not trimesh.ray.has_embree:
        logging.getLogger(__name__).info("embreex not available: ground shadows are not baked")
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
        walls.append(_quad_part(v, n, "wall", (1, 1, 1), uv, "facades"))
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


def _buildings(scene: SynthScene, net: TownNetwork, rng: np.random.Generator, trng: np.random.Generator,
               textures: dict[str, NDArray[np.uint8]], occupied: list[Polygon]) -> list[Part]:
    town = scene.town
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


# ------------------------------------------------------------------------------------ actors
_CAR_COLOURS = np.array([
    [0.92, 0.92, 0.92], [0.08, 0.08, 0.09], [0.62, 0.64, 0.66], [0.35, 0.36, 0.38], [0.65, 0.08, 0.08],
    [0.10, 0.22, 0.52], [0.12, 0.30, 0.18], [0.78, 0.72, 0.58], [0.85, 0.55, 0.10], [0.30, 0.48, 0.70],
])
_CLOTH = np.array([
    [0.15, 0.18, 0.35], [0.55, 0.12, 0.12], [0.85, 0.80, 0.20], [0.20, 0.45, 0.25], [0.90, 0.90, 0.88],
    [0.12, 0.12, 0.12], [0.45, 0.30, 0.55], [0.95, 0.50, 0.15],
])
_SKIN = np.array([[0.96, 0.80, 0.69], [0.80, 0.60, 0.45], [0.55, 0.38, 0.26], [0.36, 0.24, 0.16]])


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


def parts_to_trimesh(parts: Sequence[Part]) -> tuple[trimesh.Trimesh, NDArray[np.int16]]:
    """All parts as one trimesh (for ray casting) and the material id per face."""
    vs, fs, mats = [], [], []
    off = 0
    for p in parts:
        vs.append(p.vertices)
        fs.append(p.faces + off)
        mats.append(np.full(len(p.faces), MATERIAL_IDS[p.material], dtype=np.int16))
        off += len(p.vertices)
    return trimesh.Trimesh(np.concatenate(vs), np.concatenate(fs), process=False), np.concatenate(mats)




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
