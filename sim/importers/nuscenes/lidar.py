"""``LIDAR_TOP`` of a nuScenes scene: the points, their firing times and the LiDAR of the rig.

A nuScenes ``.pcd.bin`` holds float32 (N, 5) x, y, z (m), intensity (0..255) and ring (the beam,
0 = lowest) **in the LiDAR frame at the sweep's time stamp**: nuScenes has already compensated the
ego's motion during the sweep, so the importer moves the points to the world with the sweep's own
ego pose and calibration and applies no further compensation (static points land where they are;
a moving actor's returns stay where the actor was when each was fired).

The files carry no per-point time. The importer estimates it from nuScenes' firing model, which it
fits to the scene rather than assuming (:func:`estimate_firing`): the head spins once per sweep
period (the median spacing of the scene's ``LIDAR_TOP`` time stamps) and, as in nuScenes, each
camera is exposed when the head crosses the centre of its field of view, so the key-frame offsets
of the cameras from the LiDAR time stamp give the direction of rotation and the azimuth where a
sweep starts (the head is at the cut azimuth at the start of a sweep and again at its time stamp).
The cameras give the cut only up to a camera--LiDAR time offset, so :func:`refine_cut` then moves it
to where the key-frame sweeps' geometry puts it (the cut at which the returns of a moving sensor,
moved back to their firing poses, land on the sweep's column grid); the cameras' cut is kept when
the geometry does not tell (a static sensor, an exact fit).
When the cameras do not fit one rotation (within :data:`FIRING_FIT_TOL_DEG`), the firing model is
``instant`` and every point gets the sweep's time stamp. A point's time then follows from the
azimuth at which it was fired: the compensated point is moved back into the LiDAR frame at its
estimated firing time (the ego pose interpolated between the scene's ``ego_pose`` records, which
nuScenes has for every capture of every sensor) and its time re-estimated, twice.

The rig's LiDAR (``meta.rig.lidar``) is measured from the key-frame sweeps in that firing frame:
``beams`` = the highest ring + 1; ``elevation_deg``, the median elevation of each ring's returns
(ring 0 first; a ring without returns is filled from a straight-line fit); ``vertical_fov_deg``,
the ends of that fit (the reconstructor spaces beams evenly between them, as an HDL-32E's are);
``azimuth_steps`` from the median azimuth spacing of neighbouring returns of one ring of one sweep
(:func:`azimuth_steps`; sweeps are never merged, their columns interleave under pose noise);
``max_range_m`` the farthest return rounded up; the mount from ``calibrated_sensor``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation, Slerp

from sim.errors import LogFormatError
from sim.log_validate import MAX_LIDAR_RAYS

log = logging.getLogger(__name__)

__all__ = ["FIRING_FIT_TOL_DEG", "MAX_RINGS", "EgoPath", "Firing", "azimuth_steps", "estimate_firing", "firing_frame", "lidar_rig", "read_pcd_bin",
           "refine_cut"]

#: largest ring index + 1 accepted in a ``.pcd.bin`` (nuScenes' HDL-32E has 32)
MAX_RINGS = 256
#: how far (degrees of head rotation) a camera's exposure may sit from the fitted firing model
FIRING_FIT_TOL_DEG = 20.0
#: a return this close (degrees) short of the cut azimuth was fired at the sweep's start
_SEAM_DEG = 1e-6
#: how far (degrees) from the cameras' cut :func:`refine_cut` looks for the sweeps' cut
_CUT_SCAN_DEG = 60.0


def read_pcd_bin(path: Path) -> NDArray[np.float32]:
    """(N, 5) float32 x, y, z, intensity, ring of a nuScenes ``.pcd.bin`` (already a size-capped
    regular file): finite values, whole ring numbers in [0, :data:`MAX_RINGS`)."""
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % 5 or not np.all(np.isfinite(raw)):
        raise LogFormatError("expected finite float32 (N, 5) points x, y, z, intensity, ring", file=path)
    pts = raw.reshape(-1, 5)
    ring = pts[:, 4]
    if len(pts) and (ring.min() < 0 or ring.max() >= MAX_RINGS or np.any(ring != np.round(ring))):
        raise LogFormatError(f"expected whole ring numbers in [0, {MAX_RINGS}) in column 5", file=path)
    return pts


class EgoPath:
    """The ego's global pose at any time, interpolated (translation linearly, rotation by slerp)
    between time-stamped ``ego_pose`` records; clamped to the first / last record outside them."""

    def __init__(self, t_us: NDArray[np.int64], poses: NDArray[np.float64]) -> None:
        order = np.argsort(t_us, kind="stable")
        t, p = np.asarray(t_us, dtype=np.int64)[order], np.asarray(poses, dtype=np.float64)[order]
        keep = np.concatenate([[True], np.diff(t) > 0])
        self.t, self.p = t[keep], p[keep]
        self._slerp = Slerp(self.t.astype(np.float64), Rotation.from_matrix(self.p[:, :3, :3])) if len(self.t) > 1 else None

    def at(self, t_us: NDArray[np.int64]) -> NDArray[np.float64]:
        """(N, 4, 4) global-from-ego at times ``t_us`` (N,)."""
        tq = np.clip(np.asarray(t_us, dtype=np.float64), float(self.t[0]), float(self.t[-1]))
        out = np.tile(np.eye(4), (len(tq), 1, 1))
        if self._slerp is None:
            out[:] = self.p[0]
            return out
        out[:, :3, :3] = self._slerp(tq).as_matrix()
        for k in range(3):
            out[:, k, 3] = np.interp(tq, self.t.astype(np.float64), self.p[:, k, 3])
        return out


@dataclass(frozen=True)
class Firing:
    """A LiDAR firing model (the :class:`sim.sensors.LidarSpec` one): ``instant``, or a head
    spinning ``spin_cw`` / ``spin_ccw`` (seen from above) once per ``period_us``, starting and
    ending at sensor-frame azimuth ``cut_azimuth_deg``, the sweep stamped at its end."""

    model: str = "instant"
    period_us: int = 50_000
    cut_azimuth_deg: float = 180.0
    #: largest distance (degrees of rotation) of a camera's exposure from the model
    fit_deg: float | None = None
    #: the cut azimuth the cameras gave when :func:`refine_cut` moved it (None: not moved)
    camera_cut_deg: float | None = None

    def dt_us(self, azimuth_deg: NDArray[np.float64]) -> NDArray[np.float64]:
        """Firing time (us, in [-period, 0]) relative to the sweep's time stamp of a return at
        sensor-frame ``azimuth_deg`` (counter-clockwise from the sensor's x axis)."""
        az = np.asarray(azimuth_deg, dtype=np.float64)
        if self.model == "instant":
            return np.zeros_like(az)
        rel = np.mod((self.cut_azimuth_deg - az) if self.model == "spin_cw" else (az - self.cut_azimuth_deg), 360.0)
        rel[rel > 360.0 - _SEAM_DEG] = 0.0  # at the cut azimuth: the first column of the sweep (LidarSpec's convention)
        return (rel / 360.0 - 1.0) * self.period_us


def _azimuth_deg(v: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.degrees(np.arctan2(v[..., 1], v[..., 0]))


def estimate_firing(period_us: int | None, camera_offsets: dict[str, tuple[NDArray[np.float64], float]],
                    lidar_mount: NDArray[np.float64]) -> Firing:
    """Fit the firing model to the cameras: ``camera_offsets`` maps a camera to (its optical axis
    in the ego frame, the median offset (us) of its key-frame exposures from the LiDAR time stamp).
    ``instant`` without a period, with fewer than two cameras or when no rotation direction fits
    them all within :data:`FIRING_FIT_TOL_DEG`."""
    if not period_us or period_us <= 0 or len(camera_offsets) < 2:
        return Firing("instant", period_us or 50_000)
    best: Firing | None = None
    for model in ("spin_cw", "spin_ccw"):
        cuts = []
        for axis, dt in camera_offsets.values():
            if not -period_us <= dt <= 0:
                return Firing("instant", period_us)
            az = float(_azimuth_deg(lidar_mount[:3, :3].T @ axis))
            turn = (dt / period_us + 1.0) * 360.0  # degrees turned since the sweep's start
            cuts.append(az + turn if model == "spin_cw" else az - turn)
        c = np.radians(cuts)
        cut = float(np.degrees(np.arctan2(np.sin(c).mean(), np.cos(c).mean())))
        dev = float(np.max(np.abs((np.asarray(cuts) - cut + 180.0) % 360.0 - 180.0)))
        if best is None or dev < (best.fit_deg or 0.0):
            best = Firing(model, int(period_us), round(cut, 6), dev)
    assert best is not None
    return best if (best.fit_deg or 0.0) <= FIRING_FIT_TOL_DEG else Firing("instant", period_us)


def _irregularity(sweeps: list[tuple[NDArray[np.float64], NDArray[np.int64], int]], firing: Firing, ego: EgoPath,
                  mount: NDArray[np.float64]) -> float:
    """How far (mean, in columns) the azimuth gaps of neighbouring returns of one ring, moved back
    to their firing frame, sit from a whole number of the sweep's median gap."""
    out = []
    for p_s, ring, t in sweeps:
        az = _azimuth_deg(firing_frame(p_s, t, firing, ego, mount)[1])
        d = np.concatenate([np.diff(np.sort(az[ring == b])) for b in np.unique(ring)])
        d = d[(d > 1e-4) & (d < 10.0)]
        if len(d):
            x = d / float(np.median(d))
            out.append(np.abs(x - np.round(x)))
    return float(np.mean(np.concatenate(out))) if out else 0.0


def refine_cut(firing: Firing, sweeps: list[tuple[NDArray[np.float64], NDArray[np.int64], int]], ego: EgoPath,
               mount: NDArray[np.float64]) -> Firing:
    """The cut azimuth of a spinning ``firing`` moved to where the sweeps' geometry puts it.

    The cameras give the cut only up to the camera--LiDAR time offset (each millisecond turns the
    fitted cut by 360 degrees x 1 ms / period: 28.8 degrees for 4 ms at 20 Hz). The geometry does
    not depend on it: with the right cut every return of a moving sensor, moved back to its firing
    pose, is one whole number of columns from its neighbour on its ring, while a wrong cut gives
    every return a firing time off by the offset (and those between the two cuts one period more),
    which bends the column spacing. Each of ``sweeps`` (compensated sensor-frame points (N, 3),
    rings (N,), time stamp us) scans the cut within :data:`_CUT_SCAN_DEG` of the cameras' in
    3-degree then 0.5-degree steps and votes for the middle of its best plateau when that at least
    halves the gaps' irregularity (:func:`_irregularity`) of the cameras' cut, by 0.002 columns or
    more; the median vote of a majority of the sweeps is kept, so a static sensor or an exact camera
    fit keeps the cameras' cut."""
    if firing.model == "instant" or not sweeps:
        return firing
    votes: list[float] = []
    base_all = lo_all = 0.0
    for sw in sweeps:

        def score(dc: float, sw: tuple[NDArray[np.float64], NDArray[np.int64], int] = sw) -> float:
            return _irregularity([sw], replace(firing, cut_azimuth_deg=firing.cut_azimuth_deg + dc), ego, mount)

        base = score(0.0)
        coarse = {float(dc): score(float(dc)) for dc in np.arange(-_CUT_SCAN_DEG, _CUT_SCAN_DEG + 1e-9, 3.0)}
        c0 = min(coarse, key=lambda k: (coarse[k], abs(k)))
        fine = {float(dc): score(float(dc)) for dc in np.arange(c0 - 3.0, c0 + 3.0 + 1e-9, 0.5)}
        lo = min(fine.values())
        base_all, lo_all = base_all + base / len(sweeps), lo_all + lo / len(sweeps)
        if lo <= 0.5 * base and base - lo >= 0.002:
            tied = sorted(k for k, v in fine.items() if v <= lo + 0.1 * (base - lo))
            votes.append(0.5 * (tied[0] + tied[-1]))
    if 2 * len(votes) <= len(sweeps):
        return firing
    cut = float((firing.cut_azimuth_deg + float(np.median(votes)) + 180.0) % 360.0 - 180.0)
    log.info("LiDAR cut azimuth %.2f deg from the sweeps' geometry (cameras: %.2f deg; gap irregularity %.4f -> %.4f columns)",
             cut, firing.cut_azimuth_deg, base_all, lo_all)
    return replace(firing, cut_azimuth_deg=round(cut, 6), camera_cut_deg=firing.cut_azimuth_deg)


def firing_frame(p_s: NDArray[np.float64], t_stamp: int, firing: Firing, ego: EgoPath, mount: NDArray[np.float64],
                 iterations: int = 2) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(dt_us (N,), points (N, 3) in the LiDAR frame at their firing time) of compensated sensor-frame
    points ``p_s`` of the sweep stamped ``t_stamp`` (see the module docstring)."""
    dt = firing.dt_us(_azimuth_deg(p_s))
    if firing.model == "instant" or not len(p_s):
        return dt, p_s
    s0 = ego.at(np.array([t_stamp]))[0] @ mount
    world = p_s @ s0[:3, :3].T + s0[:3, 3]
    p = p_s
    for _ in range(iterations):
        s = ego.at(t_stamp + np.round(dt).astype(np.int64)) @ mount
        d = world - s[:, :3, 3]
        p = np.einsum("nji,nj->ni", s[:, :3, :3], d)  # R^T (world - t)
        dt = firing.dt_us(_azimuth_deg(p))
    return dt, p


def azimuth_steps(samples: list[tuple[NDArray[np.float64], NDArray[np.float32]]], default: int = 1024) -> int:
    """Columns per spin of key-frame sweeps (pairs of (points (N, 3) in the LiDAR frame, rings (N,))):
    360 degrees over the median azimuth spacing of neighbouring returns of one ring **of one sweep**,
    pooled over rings and sweeps; ``default`` without two returns on one ring.

    Sweeps are never merged before the spacing is taken: the columns of two sweeps coincide only
    when every point is moved back to its exact firing pose, and a pose or time-stamp error of a
    few centimetres or milliseconds (localisation noise, a camera--LiDAR time offset) shifts a
    sweep's columns by a fraction of a step, so merged sweeps interleave and their spacing is a
    fraction of the true one (20 000 - 45 000 "steps" for a 1 024-column HDL-32E)."""
    pooled = []
    for pts, rings in samples:
        if not len(pts):
            continue
        az = _azimuth_deg(np.asarray(pts, dtype=np.float64))
        ok = np.linalg.norm(pts, axis=1) > 1e-3
        rg = np.asarray(rings).astype(np.int64)
        for b in np.unique(rg[ok]):
            d = np.diff(np.sort(az[ok & (rg == b)]))
            pooled.append(d[(d > 1e-4) & (d < 10.0)])
    d = np.concatenate(pooled) if pooled else np.zeros(0)
    if not len(d):
        return default
    return round(360.0 / float(np.median(d)))


def lidar_rig(samples: list[tuple[NDArray[np.float64], NDArray[np.float32]]], mount: NDArray[np.float64], firing: Firing) -> dict[str, Any]:
    """``meta.rig.lidar`` measured from key-frame sweeps: pairs of (points (N, 3) in the LiDAR frame
    at their firing time, rings (N,)) (see the module docstring)."""
    p = np.concatenate([s[0] for s in samples]) if samples else np.zeros((0, 3))
    ring = np.concatenate([s[1] for s in samples]).astype(np.int64) if samples else np.zeros(0, np.int64)
    beams = int(ring.max()) + 1 if len(ring) else 1
    rng = np.linalg.norm(p, axis=1)
    ok = rng > 1e-3
    el = np.degrees(np.arctan2(p[:, 2], np.hypot(p[:, 0], p[:, 1])))
    table = np.full(beams, np.nan)
    for b in np.unique(ring[ok]):
        table[b] = float(np.median(el[ok & (ring == b)]))
    have = np.flatnonzero(np.isfinite(table))
    if len(have) >= 2:
        slope, icpt = np.polyfit(have.astype(np.float64), table[have], 1)
        table[~np.isfinite(table)] = icpt + slope * np.flatnonzero(~np.isfinite(table))
        ends = sorted((float(icpt), float(icpt + slope * (beams - 1))))
    else:
        mid = float(table[have[0]]) if len(have) else 0.0
        table[:] = mid
        ends = [mid - 0.5, mid + 0.5]
    if ends[1] - ends[0] < 1e-3:
        ends = [ends[0] - 0.5, ends[1] + 0.5]
    az_steps = azimuth_steps(samples)
    az_steps = int(np.clip(az_steps, 8, max(8, MAX_LIDAR_RAYS // beams)))
    out: dict[str, Any] = {
        "name": "LIDAR_TOP",
        "beams": beams,
        "azimuth_steps": az_steps,
        "vertical_fov_deg": [round(max(ends[0], -90.0), 6), round(min(ends[1], 90.0), 6)],
        "max_range_m": float(max(1.0, math.ceil(float(rng.max())) if len(rng) else 1.0)),
        "vehicle_from_lidar": np.round(mount, 9).tolist(),
        "elevation_deg": np.round(table, 6).tolist(),
    }
    if firing.model != "instant":
        out.update(firing=firing.model, rate_hz=1e6 / firing.period_us, cut_azimuth_deg=firing.cut_azimuth_deg)
    return out
