"""NeuroNCAP's three scenario types built from a drive log, and their seeded random permutations.

Every permutation is an ordinary scenario file (``sim/scenario/``): ``loopdrive run`` of that
file replays it exactly. Geometry (world frame, metres, seconds, m/s, radians):

* **The ego.** It starts at the first logged time its speed reaches :data:`MIN_EGO_SPEED`
  (the log's start when it never does, at :data:`DEFAULT_EGO_SPEED`), on the centreline of the
  lanes it drove (lane changes collapsed to the lane it changed into, extended with the straightest
  successors), at its logged speed. That centreline is the *ego path*; ``s`` is arc length on it.
* **stationary**: a parked car on the ego path ahead, centred where the ego, holding its speed,
  touches it about :data:`PREFERRED_IMPACT_S` after the start (NeuroNCAP designs its targets to
  meet the logged ego about 4 s in). Permuted: ±6 m along the path, ±0.5 m sideways, ±0.5 rad yaw
  (NeuroNCAP's stationary jitter).
* **frontal**: an oncoming car in the ego's lane, driving straight at constant speed towards the
  ego, timed to meet it about 4 s in, on a stretch of the ego path no farther than
  :data:`MAX_SAGITTA_M` from the straight line it drives. Permuted: ±10 m along the path, ±0.75 m
  sideways (NeuroNCAP's frontal jitter), speed uniform in 4.5..7.5 m/s.
* **side**: a car crossing the ego path from the side at constant speed, timed so that its centre
  reaches the crossing point with the ego's. The crossing is taken from the map when a lane's
  centreline crosses the ego path ahead at 45..135 degrees (a junction: the straightest such lane,
  then the one nearest a right angle, then the one crossed nearest :data:`PREFERRED_SIDE_S`); the
  car drives straight along that lane's heading at the crossing. When no lane crosses the ego path
  (a route that only turns right merges, never crosses), the crossing is *synthetic*: a straight
  path at right angles to the ego path, coming from the right (a driveway), crossed about
  :data:`PREFERRED_SIDE_S` after the start. Permuted: ±2 m along its path, ±1 m across it, speed
  uniform in 3.5..6.5 m/s.

Targets do not react (``static`` / ``constant_velocity`` behaviours), as NeuroNCAP's scripted
targets. Logged actors that come near the ego path up to the crossing, or near the target's path,
during the episode are removed (NeuroNCAP's scenes keep theirs; here they could be hit first and
make the no-action reference meaningless); the others replay the log. Permutation ``k`` of a type
draws from ``np.random.default_rng([seed, type code, k])``: the first 20 permutations of a 100-run
set are the 20 of a 20-run set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.errors import ScenarioError
from sim.map import LaneMap, Polyline
from sim.paths import route_from_poses

__all__ = [
    "JITTER",
    "NCAP_TYPES",
    "TARGET_ID",
    "Design",
    "EgoPath",
    "Jitter",
    "Permutation",
    "design",
    "ego_path",
    "interfering_actors",
    "permutation",
    "permutation_scenarios",
    "scenario_data",
]

NCAP_TYPES: tuple[str, ...] = ("stationary", "frontal", "side")
#: actor id of the inserted target in every permutation
TARGET_ID = "ncap_target"
#: designed time (s after the start) at which the no-action ego meets the target (NeuroNCAP: ~4 s)
PREFERRED_IMPACT_S = 4.0
#: designed crossing time of the side scenario (s): a shorter approach for the crossing car
PREFERRED_SIDE_S = 3.0
#: episode length after the latest designed impact (s)
POST_IMPACT_S = 4.0
#: the ego starts when its logged speed first reaches this (m/s) ...
MIN_EGO_SPEED = 3.0
#: ... or, when it never does, at the log's start at this speed (m/s)
DEFAULT_EGO_SPEED = 8.0
#: largest distance of the ego path from an oncoming target's straight line (m)
MAX_SAGITTA_M = 0.5
#: crossing angles accepted for a lane-based side scenario (degrees from the ego heading)
SIDE_ANGLE_DEG = (45.0, 135.0)
#: simulation step of the permutations (s)
DT_S = 0.1
_TYPE_CODE = {"stationary": 1, "frontal": 2, "side": 3}


@dataclass(frozen=True)
class Jitter:
    """Uniform permutation ranges of a scenario type: ± metres along / across the target's path,
    ± radians of yaw, and the (min, max) target speed in m/s."""

    longitudinal_m: float
    lateral_m: float
    yaw_rad: float
    speed_ms: tuple[float, float]


JITTER: Mapping[str, Jitter] = {
    "stationary": Jitter(6.0, 0.5, 0.5, (0.0, 0.0)),
    "frontal": Jitter(10.0, 0.75, 0.0, (4.5, 7.5)),
    "side": Jitter(2.0, 1.0, 0.0, (3.5, 6.5)),
}


# ------------------------------------------------------------------------------------ the ego
@dataclass(frozen=True)
class EgoPath:
    """Where the ego starts and the path it is meant to drive.

    Attributes:
        t_s: start time into the log, s.  speed: start speed, m/s.
        lane, s: start lane (the route's first) and arc length on it, m.
        route: lane ids from ``lane`` on.  size: (length, width, height) of the ego, m.
        path: the route's centreline (``s`` = 0 at the start of ``lane``).
    """

    t_s: float
    speed: float
    lane: str
    s: float
    route: tuple[str, ...]
    size: tuple[float, float, float]
    path: Polyline

    def pose(self, s: float) -> tuple[np.ndarray, float]:
        """(xy, heading) on the path at arc length ``s``."""
        xy, h = self.path.interpolate(float(s))
        return np.asarray(xy, np.float64), float(h)


def _ego_speeds(track: Any) -> np.ndarray:
    t = track.t_us.astype(np.float64) * 1e-6
    if len(t) < 2:
        return np.zeros(len(t))
    return np.hypot(*np.gradient(track.pose[:, :2], t, axis=0).T)


def _route_from(lane_map: LaneMap, track: Any, t0_us: int) -> list[str]:
    """Lanes of the logged ego from ``t0_us`` on (nearest lane per pose, joined through the
    successor graph)."""
    return route_from_poses(lane_map, track.pose[track.t_us >= t0_us], end_lane=False)


def ego_path(ctx: Any, *, min_length_m: float = 250.0) -> EgoPath:
    """The ego's start and path in a scene (a :class:`sim.scenario.SceneContext` of a drive log).
    Raises :class:`ScenarioError` when the log has no ego track."""
    from sim.behavior import straight_continuation
    from sim.metrics import progress_route

    tr = ctx.ego
    if tr is None or len(tr.t_us) == 0:
        raise ScenarioError("expected a drive log with a logged ego track", field="log")
    lm: LaneMap = ctx.lane_map
    v = _ego_speeds(tr)
    fast = np.flatnonzero(v >= MIN_EGO_SPEED)
    i = int(fast[0]) if len(fast) else 0
    speed = round(float(v[i]), 2) if len(fast) else DEFAULT_EGO_SPEED
    t_us = int(tr.t_us[i])
    raw = _route_from(lm, tr, t_us)
    route = list(progress_route(lm, raw))
    xy0 = tr.pose[i, :2]
    ends = np.cumsum([lm.lanes[r].length for r in route])
    s_all, _ = lm.route_polyline(route).project(xy0)
    k = int(min(np.searchsorted(ends, float(s_all), side="right"), len(route) - 1))
    s_local = float(np.clip(float(s_all) - (ends[k - 1] if k else 0.0), 0.0, lm.lanes[route[k]].length))
    route = straight_continuation(lm, route[k:], s_local + min_length_m)
    lm.check_route(route, where="ego.route")
    size = tuple(float(x) for x in tr.size) if tr.size is not None else (4.6, 1.9, 1.6)
    return EgoPath(
        t_s=round((t_us - int(tr.t_us[0])) * 1e-6, 6),
        speed=speed,
        lane=route[0],
        s=round(s_local, 3),
        route=tuple(route),
        size=size,  # type: ignore[arg-type]
        path=lm.route_polyline(route),
    )


# ----------------------------------------------------------------------------------- designs
@dataclass(frozen=True)
class Design:
    """The nominal (unpermuted) scenario of a type.

    Attributes:
        kind: ``stationary``, ``frontal`` or ``side``.
        ego: the ego start and path of this type (the logged route, or for ``frontal`` possibly
            the straightest route from the same start, see :func:`design`).
        t_impact_s: when the no-action ego meets the nominal target, s after the start.
        anchor_s: ego-path arc length of the nominal target's centre (stationary), the meeting
            point of the two centres (frontal) or the crossing point (side), m.
        heading: the target's heading (side only; the others follow the ego path), rad.
        source: how the target's path was chosen (reported).
        horizon_s: episode length for every permutation, s.
        lon_scale: fraction of the type's longitudinal jitter that fits the route (frontal).
    """

    kind: str
    ego: EgoPath
    t_impact_s: float
    anchor_s: float
    heading: float
    source: str
    horizon_s: float
    lon_scale: float = 1.0


def _horizon(t_latest: float) -> float:
    return float(math.ceil((t_latest + POST_IMPACT_S) * 2.0) / 2.0)


def _sagitta(path: Polyline, a: float, b: float) -> float:
    """Largest distance (m) of the path between arc lengths ``a`` < ``b`` from the chord."""
    s = np.linspace(a, b, max(3, int((b - a) / 0.5) + 1))
    pts, _ = path.interpolate(s)
    d = pts[-1] - pts[0]
    n = float(np.hypot(*d))
    if n < 1e-6:
        return math.inf
    rel = pts - pts[0]
    return float(np.max(np.abs(d[0] * rel[:, 1] - d[1] * rel[:, 0]) / n))


def _stationary(ego: EgoPath, tgt: tuple[float, float, float]) -> Design:
    j = JITTER["stationary"]
    half = 0.5 * (ego.size[0] + tgt[0])
    lo = ego.s + half + 5.0 + j.longitudinal_m
    hi = ego.path.length - 0.5 * tgt[0] - 8.0 - j.longitudinal_m
    if lo > hi:
        raise ScenarioError(
            f"the ego's route is too short for a stationary target ({ego.path.length - ego.s:.0f} m ahead of the start)",
            field="log",
        )
    sc = float(np.clip(ego.s + ego.speed * PREFERRED_IMPACT_S + half, lo, hi))
    t = (sc - half - ego.s) / ego.speed
    return Design("stationary", ego, t, sc, 0.0, "ego lane", _horizon(t + j.longitudinal_m / ego.speed))


def _frontal_fit(ego: EgoPath, tgt: tuple[float, float, float], times: Sequence[float], scale: float) -> Design | None:
    """The first meeting time of ``times`` at which an oncoming target (every permuted speed and
    ``scale`` x the longitudinal jitter) drives within :data:`MAX_SAGITTA_M` of the ego path."""
    j = JITTER["frontal"]
    half = 0.5 * (ego.size[0] + tgt[0])
    v, (vlo, vhi) = ego.speed, j.speed_ms
    dl = scale * j.longitudinal_m
    for t in times:
        far = ego.s + (v + vhi) * t + half + dl + 0.5 * tgt[0] + 2.0  # farthest target start
        t_near = t - dl / (v + vlo)  # earliest contact: the nearest, slowest target
        near = ego.s + v * t_near + 0.5 * ego.size[0]
        if far > ego.path.length - 2.0 or t_near < 1.5:
            continue
        if _sagitta(ego.path, near, far) <= MAX_SAGITTA_M:
            return Design("frontal", ego, float(t), ego.s + v * t + half, 0.0, "ego lane, oncoming",
                          _horizon(t + dl / (v + vlo)), scale)  # fmt: skip
    return None


def _frontal(ego: EgoPath, straight: EgoPath, tgt: tuple[float, float, float]) -> Design:
    """On the logged route, else on the straightest route from the same start (straight through
    junctions), with the meeting 3..6 s ahead and the full jitter; then 2..7 s with half and no
    longitudinal jitter."""
    def order(lo: float, hi: float) -> list[float]:
        return sorted(np.arange(lo, hi + 0.01, 0.25), key=lambda t: (abs(t - PREFERRED_IMPACT_S), t))

    tries = [(ego, 1.0, order(3.0, 6.0)), (straight, 1.0, order(3.0, 6.0))]
    tries += [(e, sc, order(2.0, 7.0)) for sc in (0.5, 0.0) for e in (ego, straight)]
    for e, scale, times in tries:
        d = _frontal_fit(e, tgt, times, scale)
        if d is not None:
            notes = []
            if e is straight and e.route != ego.route:
                notes.append("ego routed straight on: the logged route has no straight stretch long enough")
            if scale < 1.0:
                notes.append(f"longitudinal jitter x{scale:g}: short straight stretch")
            return Design(**{**d.__dict__, "source": d.source + (f" ({'; '.join(notes)})" if notes else "")})
    raise ScenarioError(
        "the ego's route has no stretch straight enough for an oncoming target "
        f"(within {MAX_SAGITTA_M} m of a straight line over about {ego.speed * 4 + 40:.0f} m, 2..7 s ahead)",
        field="log",
    )


def _crossings(ego: EgoPath, lm: LaneMap, s_min: float, s_max: float) -> list[tuple[float, float, float, float, str]]:
    """(straightness rad, |90 deg - angle| rad, ego-path s, lane heading, lane id) of every lane
    centreline crossing the ego path between ``s_min`` and ``s_max`` at 45..135 degrees."""
    import shapely
    from shapely.geometry import LineString

    if s_max <= s_min:
        return []
    ss = np.arange(s_min, s_max, 0.5)
    seg = LineString(ego.path.interpolate(ss)[0])
    lo, hi = (math.radians(a) for a in SIDE_ANGLE_DEG)
    out = []
    route = set(ego.route)
    for lid in lm.lane_ids:
        if lid in route:
            continue
        ln = lm.lanes[lid]
        inter = seg.intersection(LineString(ln.centerline))
        for p in getattr(inter, "geoms", [inter]):
            if p.is_empty or not isinstance(p, shapely.Point):
                continue
            xy = np.array([p.x, p.y])
            s_e, _ = ego.path.project(xy)
            s_l, _ = ln.polyline.project(xy)
            _, h_l = ln.polyline.interpolate(float(s_l))
            _, h_e = ego.path.interpolate(float(s_e))
            ang = abs(math.remainder(float(h_l) - float(h_e), 2 * math.pi))
            if not lo <= ang <= hi:
                continue
            _, h_up = ln.polyline.interpolate(max(0.0, float(s_l) - 15.0))
            bend = abs(math.remainder(float(h_l) - float(h_up), 2 * math.pi))
            out.append((round(bend, 3), round(abs(ang - math.pi / 2), 3), float(s_e), float(h_l), lid))
    return out


def _side(ego: EgoPath, lm: LaneMap, tgt: tuple[float, float, float]) -> Design:
    j = JITTER["side"]
    v = ego.speed
    s_min = ego.s + v * 1.5 + 0.5 * ego.size[0]
    s_max = min(ego.s + v * 7.0, ego.path.length - 15.0)
    cands = _crossings(ego, lm, s_min, s_max)
    if cands:
        _bend, off90, s_x, h, lid = min(cands, key=lambda c: (c[0], c[1], abs((c[2] - ego.s) / v - PREFERRED_SIDE_S), c[4]))
        src = f"lane {lid} crossing the ego path at {math.degrees(math.pi / 2 - off90):.0f} deg"
    else:  # a straight bit of the ego path (sagitta <= 0.2 m over 16 m), nearest the preferred time
        pref = float(np.clip(ego.s + v * PREFERRED_SIDE_S, s_min, max(s_min, s_max)))
        grid = sorted(np.arange(s_min, max(s_min, s_max) + 0.01, 1.0), key=lambda x: (abs(x - pref), x))
        s_x = next((float(x) for x in grid if _sagitta(ego.path, x - 8.0, x + 8.0) <= 0.2), pref)
        _, h_e = ego.pose(s_x)
        h = h_e + math.pi / 2
        src = "synthetic crossing path from the right (no lane crosses the ego path)"
    t = (s_x - ego.s) / v
    if s_x > ego.path.length - 10.0 or t < 1.0:
        raise ScenarioError("the ego's route is too short for a crossing target", field="log")
    return Design("side", ego, float(t), float(s_x), float(math.remainder(h, 2 * math.pi)), src,
                  _horizon(t + j.longitudinal_m / j.speed_ms[0] + 1.0))  # fmt: skip


def design(kind: str, ego: EgoPath, lane_map: LaneMap, target_size: Sequence[float]) -> Design:
    """The nominal scenario of ``kind`` for the ego's start and logged path (:class:`ScenarioError`
    when the route cannot hold it). Only ``frontal`` may route the ego differently: straight on
    from its start lane, when the logged route has no straight stretch for the oncoming car."""
    from dataclasses import replace

    from sim.behavior import straight_continuation

    tgt = (float(target_size[0]), float(target_size[1]), float(target_size[2]))
    if kind == "stationary":
        return _stationary(ego, tgt)
    if kind == "frontal":
        route = tuple(straight_continuation(lane_map, [ego.lane], ego.s + 250.0))
        straight = replace(ego, route=route, path=lane_map.route_polyline(route))
        return _frontal(ego, straight, tgt)
    if kind == "side":
        return _side(ego, lane_map, tgt)
    raise ScenarioError(f"unknown NeuroNCAP scenario type {kind!r}; known: {', '.join(NCAP_TYPES)}", field="type")


# ------------------------------------------------------------------------------ permutations
@dataclass(frozen=True)
class Permutation:
    """One random permutation of a scenario type.

    Attributes:
        kind, index, name: type, permutation number, scenario name (``ncap_<kind>_<index>``).
        pose: target start pose (x, y m, yaw rad).  speed: target speed, m/s.
        lon_shift_m, lat_shift_m, yaw_shift_rad, speed: the random draws.
        t_impact_s: when the no-action ego meets this target (designed), s.
        closing_speed_ms: |ego velocity - target velocity| at that time (NeuroNCAP's reference
            speed, used when the no-action run does not collide), m/s.
        horizon_s: episode length, s.  path_xy: (2, 2) start and designed meeting point of the
            target (for the removal corridor).
    """

    kind: str
    index: int
    name: str
    pose: tuple[float, float, float]
    speed: float
    lon_shift_m: float
    lat_shift_m: float
    yaw_shift_rad: float
    t_impact_s: float
    closing_speed_ms: float
    horizon_s: float
    path_xy: tuple[tuple[float, float], tuple[float, float]]


def _r(x: float, nd: int = 3) -> float:
    return round(float(x), nd) + 0.0


def permutation(d: Design, index: int, seed: int, target_size: Sequence[float]) -> Permutation:
    """Permutation ``index`` of design ``d`` (draws from ``default_rng([seed, type code, index])``)."""
    kind, ego = d.kind, d.ego
    j = JITTER[kind]
    rng = np.random.default_rng([int(seed), _TYPE_CODE[kind], int(index)])
    dl = rng.uniform(-1.0, 1.0) * j.longitudinal_m * d.lon_scale
    dlat = rng.uniform(-1.0, 1.0) * j.lateral_m
    dyaw = rng.uniform(-1.0, 1.0) * j.yaw_rad
    vt = _r(rng.uniform(*j.speed_ms), 2) if j.speed_ms[1] > 0 else 0.0
    v = ego.speed
    half = 0.5 * (ego.size[0] + float(target_size[0]))
    ve = lambda s: v * np.array([math.cos(ego.pose(s)[1]), math.sin(ego.pose(s)[1])])  # noqa: E731
    if kind == "stationary":
        s_c = d.anchor_s + dl
        xy, h = ego.pose(s_c)
        n = np.array([-math.sin(h), math.cos(h)])
        p, yaw = xy + dlat * n, h + dyaw
        t_i = (s_c - half - ego.s) / v
        closing = v
        meet = p
    elif kind == "frontal":
        s0 = ego.s + (v + vt) * d.t_impact_s + half + dl
        xy, _ = ego.pose(s0)
        ahead, _ = ego.pose(s0 - vt * d.t_impact_s)
        u = (ahead - xy) / max(float(np.hypot(*(ahead - xy))), 1e-9)
        yaw = math.atan2(u[1], u[0])
        n = np.array([-u[1], u[0]])
        p = xy + dlat * n
        t_i = (s0 - ego.s - half) / (v + vt)
        closing = float(np.hypot(*(ve(ego.s + v * t_i) - vt * u)))
        meet = p + vt * t_i * u
    else:
        x_pt, _ = ego.pose(d.anchor_s)
        u = np.array([math.cos(d.heading), math.sin(d.heading)])
        n = np.array([-u[1], u[0]])
        p = x_pt - (vt * d.t_impact_s - dl) * u + dlat * n
        yaw = d.heading
        t_i = d.t_impact_s
        closing = float(np.hypot(*(ve(d.anchor_s) - vt * u)))
        meet = x_pt + dlat * n
    return Permutation(
        kind=kind,
        index=index,
        name=f"ncap_{kind}_{index:03d}",
        pose=(_r(p[0]), _r(p[1]), _r(math.remainder(yaw, 2 * math.pi), 4)),
        speed=vt,
        lon_shift_m=_r(dl),
        lat_shift_m=_r(dlat),
        yaw_shift_rad=_r(dyaw, 4),
        t_impact_s=_r(t_i),
        closing_speed_ms=_r(closing),
        horizon_s=d.horizon_s,
        path_xy=((float(p[0]), float(p[1])), (float(meet[0]), float(meet[1]))),
    )


# --------------------------------------------------------------------------- logged actors
def interfering_actors(ctx: Any, ego: EgoPath, perm: Permutation, target_size: Sequence[float]) -> tuple[str, ...]:
    """Ids of logged actors that, at some logged time within the episode, come within reach of the
    ego path (from behind the start to 15 m past the designed impact) or of the target's path
    (start to designed meeting point), so that the target is the only conflict of the scenario."""
    import shapely
    from shapely.geometry import LineString

    t0 = int(ctx.t0_us) + round(ego.t_s * 1e6)
    t1 = t0 + round(perm.horizon_s * 1e6)
    s_end = min(ego.s + ego.speed * perm.t_impact_s + ego.size[0] + float(target_size[0]) + 15.0, ego.path.length)
    ss = np.arange(max(0.0, ego.s - ego.size[0]), s_end, 1.0)
    ego_line = LineString(ego.path.interpolate(ss)[0]) if len(ss) >= 2 else None
    a, b = np.asarray(perm.path_xy[0]), np.asarray(perm.path_xy[1])
    u = np.array([math.cos(perm.pose[2]), math.sin(perm.pose[2])])
    back = a - (0.5 * float(target_size[0]) + 1.0) * u  # the target's box behind its start point
    tgt_line = LineString([back, b]) if float(np.hypot(*(b - a))) > 1e-6 else LineString([back, a + (a - back)])
    out = []
    for aid, tr in ctx.tracks.items():
        m = (tr.t_us >= t0) & (tr.t_us <= t1)
        if not m.any():
            continue
        pts = shapely.points(tr.pose[m, :2])
        w = float(tr.size[1])
        near_ego = ego_line is not None and bool(np.any(shapely.distance(ego_line, pts) <= 0.5 * (ego.size[1] + w) + 0.75))
        near_tgt = bool(np.any(shapely.distance(tgt_line, pts) <= 0.5 * (float(target_size[1]) + w) + 0.75))
        if near_ego or near_tgt:
            out.append(str(aid))
    return tuple(sorted(out, key=lambda a: (len(a), a)))


# ----------------------------------------------------------------------------- scenario YAML
def scenario_data(
    perm: Permutation,
    ego: EgoPath,
    *,
    scene: Mapping[str, Any],
    planner: str,
    observation: Sequence[str],
    target: Mapping[str, Any],
    remove: Sequence[str] = (),
    seed: int = 0,
    planner_params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The scenario-file content (a plain dict for YAML) of one permutation.

    Args:
        scene: the file's ``scene`` mapping (log, bundle, renderer, actor_library).
        target: ``class`` and ``size`` or ``asset`` of the inserted target.
        remove: logged actor ids to remove (:func:`interfering_actors`).
        planner_params: the planner's parameters in the file (none: ``{}``).
    """
    behavior: dict[str, Any] = {"type": "static"} if perm.kind == "stationary" else {"type": "constant_velocity", "speed": perm.speed}
    desc = (
        f"NeuroNCAP {perm.kind} permutation {perm.index} (seed {seed}): target shifted {perm.lon_shift_m:+.2f} m along "
        f"and {perm.lat_shift_m:+.2f} m across its path, yaw {perm.yaw_shift_rad:+.3f} rad, speed {perm.speed:.2f} m/s; "
        f"the ego holding {ego.speed:.2f} m/s meets it at {perm.t_impact_s:.2f} s (closing speed "
        f"{perm.closing_speed_ms:.2f} m/s). A good planner avoids it or hits it slower."
    )
    actors: list[dict[str, Any]] = [{"op": "remove", "id": a} for a in remove]
    actors.append(
        {
            "op": "insert",
            "id": TARGET_ID,
            **dict(target),
            "spawn": {"pose": list(perm.pose), "speed": perm.speed},
            "behavior": behavior,
        }
    )
    return {
        "version": 1,
        "name": perm.name,
        "description": desc,
        "tags": ["ncap", perm.kind],
        "scene": dict(scene),
        "ego": {
            "start": {"t_s": ego.t_s, "lane": ego.lane, "s": ego.s, "speed": ego.speed},
            "route": list(ego.route),
        },
        "actors": actors,
        "planner": {"name": planner, "params": dict(planner_params or {})},
        "observation": list(observation),
        "horizon_s": perm.horizon_s,
        "dt_s": DT_S,
        "seeds": [0],
    }


def permutation_scenarios(
    ctx: Any,
    types: Sequence[str],
    runs: int,
    seed: int,
    target_size: Sequence[float],
    *,
    scene: Mapping[str, Any],
    planner: str,
    observation: Sequence[str],
    target: Mapping[str, Any],
    planner_params: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Design], list[tuple[Permutation, dict[str, Any]]]]:
    """The designs per type and every permutation's scenario-file content (nothing written) of the
    drive log behind ``ctx`` (:func:`sim.scenario.scene_context`): ``runs`` permutations of each
    of ``types``, permutation ``k`` drawn with ``seed`` (:func:`permutation`), the logged actors in
    its way removed (:func:`interfering_actors`); the other arguments as :func:`scenario_data`'s."""
    ego = ego_path(ctx)
    designs: dict[str, Design] = {}
    items: list[tuple[Permutation, dict[str, Any]]] = []
    for kind in types:
        d = design(kind, ego, ctx.lane_map, target_size)
        designs[kind] = d
        for k in range(runs):
            p = permutation(d, k, seed, target_size)
            data = scenario_data(p, d.ego, scene=scene, planner=planner, observation=observation, target=target,
                                 remove=interfering_actors(ctx, d.ego, p, target_size), seed=seed, planner_params=planner_params)  # fmt: skip
            items.append((p, data))
    return designs, items
