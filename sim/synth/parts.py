"""Mesh parts of the synthetic town and its actors (numpy + trimesh, no GL): the :class:`Part`
record, LiDAR materials, baked shading and the primitive builders (quads, boxes, hexahedra,
cylinders, ellipsoids, flat triangulated polygons, kerb walls).

Geometry is in metres. Every :class:`Part` carries a LiDAR material name (see :data:`MATERIALS`),
UVs into a named texture (or none) and per-vertex colour multipliers in which a fixed
illumination is baked, so the renderer draws unlit ("flat") and the appearance does not depend on
the viewpoint. The static town is built in :mod:`sim.synth.town_mesh`, the actor models in
:mod:`sim.synth.actor_mesh`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import shapely
import trimesh
from numpy.typing import NDArray
from shapely.geometry import Polygon

__all__ = [
    "MATERIALS",
    "MATERIAL_IDS",
    "SUN",
    "Part",
    "box_part",
    "cylinder_part",
    "flat_part",
    "hexahedron",
    "kerb_walls",
    "merge_parts",
    "parts_to_trimesh",
    "quad_part",
    "sky_shade",
    "sphere_part",
    "sun_shade",
    "transform_part",
]

F64 = NDArray[np.float64]
F32 = NDArray[np.float32]

#: LiDAR reflectivity per material, in [0, 1] (retro-reflective paint and plates high, asphalt and
#: glass low). Read-only.
MATERIALS: Mapping[str, float] = MappingProxyType({
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
})
#: material name -> id (the order of :data:`MATERIALS`); read-only.
MATERIAL_IDS: Mapping[str, int] = MappingProxyType({m: i for i, m in enumerate(MATERIALS)})

#: unit direction towards the sun (world frame, z up) of the baked illumination; read-only
SUN = np.array([0.45, -0.35, 0.82])
SUN = SUN / np.linalg.norm(SUN)
SUN.flags.writeable = False


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
def quad_part(corners: F64, normal: F64, material: str, albedo: Sequence[float], uv: F64 | None = None,
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
