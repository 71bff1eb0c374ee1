"""The ``mesh`` backend's LiDAR: ray casting against the static town and the actors' models.

One function serves both firing models of :class:`sim.sensors.LidarSpec`:

* ``instant``: every ray leaves the sensor at one pose (the sweep's time stamp);
* spinning (``spin_cw`` / ``spin_ccw``): each azimuth column fires at its own time during the sweep,
  from the sensor pose **at that time**, against the actors posed **at that time** -- the rolling
  distortion a real spinning LiDAR on a moving vehicle has. The caller gives the per-column poses
  (:class:`LidarMotion`); the returned points are expressed in the sensor frame at the sweep's time
  stamp (so ``world_points()`` is exact) and carry their firing times.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from sim.render.base import LidarScan, WorldLike
from sim.sensors import LidarSpec

if TYPE_CHECKING:
    import trimesh

__all__ = ["LIDAR_ENGINES", "LidarMotion", "TimedLidarScan", "cast_lidar", "first_hits", "make_intersector", "static_motion"]

log = logging.getLogger(__name__)

#: ray-casting engines: ``auto`` (Embree when available), ``embree``, ``triangle`` (pure numpy)
LIDAR_ENGINES = ("auto", "embree", "triangle")


@dataclass(frozen=True)
class LidarMotion:
    """Where the sensor and every world row are when each azimuth column fires.

    Attributes:
        t_us: (P,) int64 firing time of each pose, microseconds (P = 1: one pose for every column;
            P = ``azimuth_steps``: one per column).
        sensor_to_world: (P, 4, 4) sensor pose per column.
        actor_pose: (P, N, 4) x, y, z (box bottom centre, m) and yaw (rad) of each world row.
        actor_valid: (P, N) whether the row exists at that time.
        reference: 4x4 sensor-to-world the returned points are expressed in (the pose at the sweep's
            time stamp).
    """

    t_us: NDArray[np.int64]
    sensor_to_world: NDArray[np.float64]
    actor_pose: NDArray[np.float64]
    actor_valid: NDArray[np.bool_]
    reference: NDArray[np.float64]


@dataclass(frozen=True)
class TimedLidarScan(LidarScan):
    """A :class:`~sim.render.base.LidarScan` with each return's firing time and ring.

    Attributes:
        time_us: (N,) int64 absolute firing time of each return, microseconds.
        ring: (N,) int32 beam of each return, 0 = lowest (see :meth:`LidarSpec.rings`).
    """

    time_us: NDArray[np.int64]
    ring: NDArray[np.int32]


def _box_poses(pose: NDArray[np.float64]) -> NDArray[np.float64]:
    """(P, 4, 4) world-from-box of (P, 4) poses x, y, z, yaw (same values as
    :func:`sim.render.mesh.vehicle_pose_se3`)."""
    c, s = np.cos(pose[:, 3]), np.sin(pose[:, 3])
    m = np.zeros((len(pose), 4, 4))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    m[:, 2, 2] = m[:, 3, 3] = 1.0
    m[:, :3, 3] = pose[:, :3]
    return m


def static_motion(world: WorldLike, s2w: NDArray[np.float64]) -> LidarMotion:
    """The ``instant`` firing model: one pose for every column (the world as it is)."""
    pose = np.stack([np.asarray(world.x), np.asarray(world.y), np.asarray(world.z), np.asarray(world.yaw)], -1).astype(np.float64)
    return LidarMotion(np.array([int(world.t_us)], np.int64), s2w[None], pose[None], np.asarray(world.valid, bool)[None], s2w)


def make_intersector(mesh: trimesh.Trimesh, engine: str = "auto") -> Any:
    """A trimesh ray intersector for ``mesh``: ``embree`` (embreex), ``triangle`` (pure numpy) or
    ``auto`` (Embree when available)."""
    if engine not in LIDAR_ENGINES:
        raise ValueError(f"unknown LiDAR engine {engine!r}; known: {', '.join(LIDAR_ENGINES)}")
    import trimesh

    if engine in ("auto", "embree") and trimesh.ray.has_embree:
        from trimesh.ray import ray_pyembree

        return ray_pyembree.RayMeshIntersector(mesh, scale_to_box=False)
    if engine == "embree":
        log.warning("embreex is not available; falling back to trimesh's pure-numpy ray intersector")
    from trimesh.ray import ray_triangle

    return ray_triangle.RayMeshIntersector(mesh)


def first_hits(intersector: Any, origins: NDArray[np.float64], dirs: NDArray[np.float64]) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int64]]:
    """(ray indices, distances (m), triangle indices) of the nearest hit of each ray (origins and
    unit directions (N, 3)) that hits, from a :func:`make_intersector` intersector."""
    if len(origins) == 0:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64)
    scene = getattr(intersector, "_scene", None)
    if scene is not None and hasattr(scene, "run") and getattr(intersector, "_scale_to_box", False) is False:
        # Embree directly: nearest hit per ray with its distance (float32, sub-millimetre at 80 m)
        res = scene.run(origins, dirs, output=1)
        prim = np.asarray(res["primID"])
        hit = np.nonzero(prim >= 0)[0]
        return hit.astype(np.int64), np.asarray(res["tfar"], dtype=np.float64)[hit], prim[hit].astype(np.int64)
    locs, idx_ray, idx_tri = intersector.intersects_location(origins, dirs, multiple_hits=False)
    if len(idx_ray) == 0:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64)
    dist = np.einsum("ij,ij->i", locs - origins[idx_ray], dirs[idx_ray])
    # keep the nearest per ray (the pure-numpy engine may report several)
    order = np.lexsort((dist, idx_ray))
    idx_ray, dist, idx_tri = idx_ray[order], dist[order], idx_tri[order]
    first = np.concatenate([[True], idx_ray[1:] != idx_ray[:-1]])
    return idx_ray[first].astype(np.int64), dist[first], idx_tri[first].astype(np.int64)


@dataclass(frozen=True)
class _Rays:
    """Every ray of one sweep: sensor-frame unit directions ``d_s`` (N, 3), world origins ``o_w``
    and directions ``d_w`` (N, 3) at each ray's firing pose, the pose index ``pix`` (N,) of each
    ray, and whether the poses differ per column (``timed``)."""

    d_s: NDArray[np.float64]
    d_w: NDArray[np.float64]
    o_w: NDArray[np.float64]
    pix: NDArray[np.int64]
    timed: bool


@dataclass
class _Nearest:
    """The nearest hit of each ray so far: distance (m, inf = none), material id, |cos| of the
    incidence angle, and the world row of the actor hit (-1 = static scene)."""

    best: NDArray[np.float64]
    mat: NDArray[np.int16]
    cosi: NDArray[np.float64]
    who: NDArray[np.int32]

    @staticmethod
    def empty(n: int) -> _Nearest:
        """No hit for any of ``n`` rays."""
        return _Nearest(np.full(n, np.inf), np.full(n, -1, dtype=np.int16), np.zeros(n), np.full(n, -1, dtype=np.int32))


def _sweep_rays(r: Any, spec: LidarSpec, motion: LidarMotion) -> _Rays:
    """The rays of one sweep of ``spec`` (directions cached per renderer ``r``) posed by ``motion``."""
    key = ("lidar", spec.beams, spec.azimuth_steps, tuple(spec.vertical_fov_deg))
    d_s = r._ray_cache.get(key)
    if d_s is None:
        d_s = spec.ray_directions().reshape(-1, 3)
        r._ray_cache[key] = d_s
    n = len(d_s)
    timed = len(motion.t_us) > 1
    pix = np.arange(n) % spec.azimuth_steps if timed else np.zeros(n, np.int64)
    Rs, ts = motion.sensor_to_world[:, :3, :3], motion.sensor_to_world[:, :3, 3]
    if timed:
        d_w = np.einsum("kij,kj->ki", Rs[pix], d_s)
        o_w = ts[pix].copy()
    else:
        d_w = d_s @ Rs[0].T
        o_w = np.broadcast_to(ts[0], d_w.shape).copy()
    return _Rays(d_s, d_w, o_w, pix, timed)


def _actor_rays(m: Any, a2w: NDArray[np.float64], alive: NDArray[np.bool_], spec: LidarSpec, motion: LidarMotion, timed: bool) -> NDArray[np.int64]:
    """Flat indices of the rays whose azimuth column can see the bounding sphere of model ``m``
    posed by ``a2w`` (P, 4, 4) (empty when it is out of range or not ``alive`` at any pose)."""
    az_steps = spec.azimuth_steps
    Rs, ts = motion.sensor_to_world[:, :3, :3], motion.sensor_to_world[:, :3, 3]
    rel = np.einsum("pij,j->pi", a2w[:, :3, :3], m.center) + a2w[:, :3, 3] - ts
    rng_c = np.linalg.norm(rel, axis=1)
    rad = float(np.linalg.norm(m.half))
    alive = alive & (rng_c - rad <= spec.max_range_m)
    if not alive.any():
        return np.zeros(0, np.int64)
    rel_s = np.einsum("pji,pj->pi", Rs, rel)
    az_c = np.arctan2(rel_s[:, 1], rel_s[:, 0])
    half = np.where(rng_c <= rad * 1.05, np.pi, np.arcsin(np.minimum(1.0, rad / np.maximum(rng_c, 1e-9)))) + 2 * np.pi / az_steps
    if timed:
        col_az = np.arange(az_steps) * (2 * np.pi / az_steps)
        near = (np.abs((col_az - az_c + np.pi) % (2 * np.pi) - np.pi) <= half + 1e-12) & alive
        cols = np.nonzero(near)[0]
    else:
        c0 = int(np.floor((az_c[0] - half[0]) / (2 * np.pi) * az_steps))
        c1 = int(np.ceil((az_c[0] + half[0]) / (2 * np.pi) * az_steps))
        cols = np.unique(np.arange(c0, c1 + 1) % az_steps)
    rows = np.arange(spec.beams)
    return (rows[:, None] * az_steps + cols[None, :]).ravel()


def _in_actor_frame(a2w: NDArray[np.float64], rays: _Rays, idx: NDArray[np.int64], s2w: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Origins and directions of rays ``idx`` in the actor's box frame at each ray's firing time
    (one shared origin (3,) for an instant sweep from sensor pose ``s2w`` (4, 4))."""
    if rays.timed:
        Ra, ta = a2w[rays.pix[idx], :3, :3], a2w[rays.pix[idx], :3, 3]
        return np.einsum("kj,kji->ki", rays.o_w[idx] - ta, Ra), np.einsum("kj,kji->ki", rays.d_w[idx], Ra)
    Ra, ta = a2w[0, :3, :3], a2w[0, :3, 3]
    return (s2w[:3, 3] - ta) @ Ra, rays.d_w[idx] @ Ra


def _hit_actor(r: Any, world: WorldLike, i: int, spec: LidarSpec, motion: LidarMotion, rays: _Rays, hits: _Nearest) -> None:
    """Cast the rays that can see world row ``i`` against its actor model (slab test on the
    model's box first) and keep the hits nearer than what each ray hit so far."""
    m = r._actor_model(world.ids[i], world.cls[i], (world.length[i], world.width[i], world.height[i]))
    a2w = _box_poses(motion.actor_pose[:, i])
    idx = _actor_rays(m, a2w, motion.actor_valid[:, i], spec, motion, rays.timed)
    if len(idx) == 0:
        return
    o_l, d_l = _in_actor_frame(a2w, rays, idx, motion.sensor_to_world[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d_l
        t0 = (m.center - m.half - o_l) * inv
        t1 = (m.center + m.half - o_l) * inv
    tmin = np.nanmax(np.minimum(t0, t1), axis=1)
    tmax = np.nanmin(np.maximum(t0, t1), axis=1)
    hit = (tmax >= np.maximum(tmin, 0.0)) & (tmin < hits.best[idx])
    if not hit.any():
        return
    sel = idx[hit]
    if m.intersector is None:
        m.intersector = make_intersector(m.mesh, r.lidar_engine)
    o_sel = o_l[hit].copy() if rays.timed else np.broadcast_to(o_l, (len(sel), 3)).copy()
    r_a, dist_a, tri_a = first_hits(m.intersector, o_sel, d_l[hit])
    if len(r_a) == 0:
        return
    g = sel[r_a]
    closer = dist_a < hits.best[g]
    g, dist_a, tri_a, r_a = g[closer], dist_a[closer], tri_a[closer], r_a[closer]
    hits.best[g] = dist_a
    hits.mat[g] = m.face_material[tri_a]
    hits.cosi[g] = np.abs(np.einsum("ij,ij->i", m.mesh.face_normals[tri_a], d_l[hit][r_a]))
    hits.who[g] = i


def _intensity(r: Any, mat: NDArray[np.int16], cosi: NDArray[np.float64], hw: NDArray[np.float64]) -> NDArray[np.float32]:
    """Return intensity in [0, 1]: material reflectivity times ``0.35 + 0.65 |cos|``, modulated on
    the ground by its texture's luminance at the world hit ``hw`` (paint wear, patches, tiles)."""
    from sim.synth.parts import MATERIAL_IDS

    inten = r._reflectivity[mat] * (0.35 + 0.65 * cosi)
    x0, y0, gw, gh = r.town.ground_mapping
    for name in ("asphalt", "sidewalk", "grass"):
        sel = mat == MATERIAL_IDS[name]
        if sel.any():
            lum = r._ground_lum[name]
            H, W = lum.shape
            c = np.clip(((hw[sel, 0] - x0) / gw * W).astype(np.int64), 0, W - 1)
            rr = np.clip(((hw[sel, 1] - y0) / gh * H).astype(np.int64), 0, H - 1)
            inten[sel] *= lum[rr, c]
    return np.clip(inten, 0.0, 1.0).astype(np.float32)


def cast_lidar(r: Any, world: WorldLike, spec: LidarSpec, motion: LidarMotion) -> LidarScan:
    """Cast one sweep of ``spec`` with the mesh renderer ``r`` (its static intersector, actor models,
    materials); see :meth:`sim.render.mesh.MeshRenderer.render_lidar`. ``world`` gives the rows'
    ids, classes and sizes; ``motion`` their poses per column. Returns are the nearest hits within
    (0.3 m, ``max_range_m``] not grazing the surface; their material names are kept in
    ``r.last_lidar_materials``."""
    from sim.synth.parts import MATERIAL_IDS

    rays = _sweep_rays(r, spec, motion)
    hits = _Nearest.empty(len(rays.d_s))
    ri, dist, tri = first_hits(r._static_rt, rays.o_w, rays.d_w)
    hits.best[ri] = dist
    hits.mat[ri] = r.town.face_material[tri]
    hits.cosi[ri] = np.abs(np.einsum("ij,ij->i", r._static_normals[tri], rays.d_w[ri]))
    for i in range(1, len(world.ids)):
        if motion.actor_valid[:, i].any():
            _hit_actor(r, world, i, spec, motion, rays, hits)
    ok = np.isfinite(hits.best) & (hits.best <= spec.max_range_m) & (hits.best > 0.3) & (hits.cosi > 0.02)
    idx = np.nonzero(ok)[0]
    dist = hits.best[idx]
    hw = rays.o_w[idx] + rays.d_w[idx] * dist[:, None]
    if rays.timed:  # exact world hits, expressed in the sensor frame at the sweep's time stamp
        ref = motion.reference
        pts = ((hw - ref[:3, 3]) @ ref[:3, :3]).astype(np.float32)
    else:
        pts = (rays.d_s[idx] * dist[:, None]).astype(np.float32)
    inten = _intensity(r, hits.mat[idx], hits.cosi[idx], hw)
    r.last_lidar_materials = np.array(list(MATERIAL_IDS))[hits.mat[idx]]
    if not rays.timed:
        return LidarScan(pts, inten, motion.reference, idx.astype(np.int32), hits.who[idx])
    ring = spec.rings()[idx // spec.azimuth_steps]
    return TimedLidarScan(pts, inten, motion.reference, idx.astype(np.int32), hits.who[idx], motion.t_us[rays.pix[idx]].astype(np.int64), ring)
