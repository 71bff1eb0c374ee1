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

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sim.render.base import LidarScan, WorldLike
from sim.sensors import LidarSpec

__all__ = ["LidarMotion", "TimedLidarScan", "cast_lidar", "static_motion"]


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


def cast_lidar(r: Any, world: WorldLike, spec: LidarSpec, motion: LidarMotion) -> LidarScan:
    """Cast one sweep of ``spec`` with the mesh renderer ``r`` (its static intersector, actor models,
    materials); see :meth:`sim.render.mesh.MeshRenderer.render_lidar`. ``world`` gives the rows'
    ids, classes and sizes; ``motion`` their poses per column."""
    from sim.render.mesh import _first_hits
    from sim.synth.parts import MATERIAL_IDS

    key = ("lidar", spec.beams, spec.azimuth_steps, tuple(spec.vertical_fov_deg))
    d_s = r._ray_cache.get(key)
    if d_s is None:
        d_s = spec.ray_directions().reshape(-1, 3)
        r._ray_cache[key] = d_s
    n = len(d_s)
    az_steps = spec.azimuth_steps
    P = len(motion.t_us)
    timed = P > 1
    pix = np.arange(n) % az_steps if timed else np.zeros(n, np.int64)  # pose index of each ray
    Rs, ts = motion.sensor_to_world[:, :3, :3], motion.sensor_to_world[:, :3, 3]
    if timed:
        d_w = np.einsum("kij,kj->ki", Rs[pix], d_s)
        o_w = ts[pix].copy()
    else:
        d_w = d_s @ Rs[0].T
        o_w = np.broadcast_to(ts[0], d_w.shape).copy()
    best = np.full(n, np.inf)
    mat = np.full(n, -1, dtype=np.int16)
    cosi = np.zeros(n)
    who = np.full(n, -1, dtype=np.int32)
    ri, dist, tri = _first_hits(r._static_rt, o_w, d_w)
    best[ri] = dist
    mat[ri] = r.town.face_material[tri]
    cosi[ri] = np.abs(np.einsum("ij,ij->i", r._static_normals[tri], d_w[ri]))
    max_r = spec.max_range_m
    col_az = np.arange(az_steps) * (2 * np.pi / az_steps)
    for i in range(1, len(world.ids)):
        if not motion.actor_valid[:, i].any():
            continue
        m = r._actor_model(world.ids[i], world.cls[i], (world.length[i], world.width[i], world.height[i]))
        a2w = _box_poses(motion.actor_pose[:, i])
        rel = np.einsum("pij,j->pi", a2w[:, :3, :3], m.center) + a2w[:, :3, 3] - ts
        rng_c = np.linalg.norm(rel, axis=1)
        rad = float(np.linalg.norm(m.half))
        alive = motion.actor_valid[:, i] & (rng_c - rad <= max_r)
        if not alive.any():
            continue
        # rays whose azimuth can see the actor
        rel_s = np.einsum("pji,pj->pi", Rs, rel)
        az_c = np.arctan2(rel_s[:, 1], rel_s[:, 0])
        half = np.where(rng_c <= rad * 1.05, np.pi, np.arcsin(np.minimum(1.0, rad / np.maximum(rng_c, 1e-9)))) + 2 * np.pi / az_steps
        if timed:
            near = (np.abs((col_az - az_c + np.pi) % (2 * np.pi) - np.pi) <= half + 1e-12) & alive
            cols = np.nonzero(near)[0]
        else:
            c0 = int(np.floor((az_c[0] - half[0]) / (2 * np.pi) * az_steps))
            c1 = int(np.ceil((az_c[0] + half[0]) / (2 * np.pi) * az_steps))
            cols = np.unique(np.arange(c0, c1 + 1) % az_steps)
        if len(cols) == 0:
            continue
        rows = np.arange(spec.beams)
        idx = (rows[:, None] * az_steps + cols[None, :]).ravel()
        # slab test against the model's bounding box in the actor frame (at each ray's time)
        if timed:
            Ra, ta = a2w[pix[idx], :3, :3], a2w[pix[idx], :3, 3]
            o_l = np.einsum("kj,kji->ki", o_w[idx] - ta, Ra)
            d_l = np.einsum("kj,kji->ki", d_w[idx], Ra)
        else:
            Ra, ta = a2w[0, :3, :3], a2w[0, :3, 3]
            o_l = (ts[0] - ta) @ Ra
            d_l = d_w[idx] @ Ra
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / d_l
            t0 = (m.center - m.half - o_l) * inv
            t1 = (m.center + m.half - o_l) * inv
        tmin = np.nanmax(np.minimum(t0, t1), axis=1)
        tmax = np.nanmin(np.maximum(t0, t1), axis=1)
        hit = (tmax >= np.maximum(tmin, 0.0)) & (tmin < best[idx])
        if not hit.any():
            continue
        sel = idx[hit]
        if m.intersector is None:
            from sim.render.mesh import make_intersector

            m.intersector = make_intersector(m.mesh, r.lidar_engine)
        o_sel = o_l[hit].copy() if timed else np.broadcast_to(o_l, (len(sel), 3)).copy()
        r_a, dist_a, tri_a = _first_hits(m.intersector, o_sel, d_l[hit])
        if len(r_a) == 0:
            continue
        g = sel[r_a]
        closer = dist_a < best[g]
        g, dist_a, tri_a, r_a = g[closer], dist_a[closer], tri_a[closer], r_a[closer]
        best[g] = dist_a
        mat[g] = m.face_material[tri_a]
        cosi[g] = np.abs(np.einsum("ij,ij->i", m.mesh.face_normals[tri_a], d_l[hit][r_a]))
        who[g] = i
    ok = np.isfinite(best) & (best <= max_r) & (best > 0.3) & (cosi > 0.02)
    idx = np.nonzero(ok)[0]
    dist = best[idx]
    hw = o_w[idx] + d_w[idx] * dist[:, None]
    if timed:  # exact world hits, expressed in the sensor frame at the sweep's time stamp
        ref = motion.reference
        pts = ((hw - ref[:3, 3]) @ ref[:3, :3]).astype(np.float32)
    else:
        pts = (d_s[idx] * dist[:, None]).astype(np.float32)
    refl = r._reflectivity[mat[idx]]
    inten = refl * (0.35 + 0.65 * cosi[idx])
    # ground textures modulate the reflectivity (paint wear, patches, tiles, dry grass)
    x0, y0, gw, gh = r.town.ground_mapping
    for name in ("asphalt", "sidewalk", "grass"):
        sel = mat[idx] == MATERIAL_IDS[name]
        if sel.any():
            lum = r._ground_lum[name]
            H, W = lum.shape
            c = np.clip(((hw[sel, 0] - x0) / gw * W).astype(np.int64), 0, W - 1)
            rr = np.clip(((hw[sel, 1] - y0) / gh * H).astype(np.int64), 0, H - 1)
            inten[sel] *= lum[rr, c]
    inten = np.clip(inten, 0.0, 1.0).astype(np.float32)
    names = np.array(list(MATERIAL_IDS))
    r.last_lidar_materials = names[mat[idx]]
    if not timed:
        return LidarScan(pts, inten, motion.reference, idx.astype(np.int32), who[idx])
    ring = spec.rings()[idx // az_steps]
    return TimedLidarScan(pts, inten, motion.reference, idx.astype(np.int32), who[idx], motion.t_us[pix[idx]].astype(np.int64), ring)
