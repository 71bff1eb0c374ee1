"""Shared machinery of the reference planners: views of the observation, the route reference path,
IDM speed control, pure-pursuit steering and a vectorised closed-loop forecast of "path + IDM"
policies through the engine's kinematic bicycle.

Frames and units: world frame (x, y metres, yaw radians, z up), speeds m/s, accelerations m/s²,
time in seconds. A *proposal* is a policy (lateral offset from the route centreline in metres,
desired speed as a fraction of the speed limit); :func:`forecast` rolls P proposals forward at
once (numpy over the proposal axis) against actors predicted at constant velocity, exactly as the
engine would execute the same controls (same :class:`sim.dynamics.KinematicBicycle`, same clipping).

The planners read the observation kinds ``ego`` and ``objects`` of the planning interface
(:mod:`sim.planning.observe`) through :func:`ego_from_obs` and :func:`actors_from_obs`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sim.controller import pure_pursuit_steer, pursuit_offset
from sim.dynamics import BicycleState, KinematicBicycle
from sim.geometry import wrap_angle
from sim.idm import idm_accel
from sim.map import LaneMap, Polyline
from sim.paths import route_points, straight_continuation
from sim.planning.observe import CODE_CLASSES

__all__ = [
    "ActorsView",
    "EgoView",
    "ForecastResult",
    "IdmParams",
    "RouteRef",
    "actors_from_obs",
    "ego_from_obs",
    "forecast",
    "pursuit_offset",
]

F64 = NDArray[np.float64]

#: m over which the planners' reference line blends a lane change (the engine's paths: 25 m)
REF_BLEND_M = 20.0



# ----------------------------------------------------------------------------------- views
@dataclass(frozen=True)
class EgoView:
    """The ego's state: pose (world frame, m / rad), speed (m/s), last applied accel (m/s²) and
    steering angle (rad)."""

    x: float
    y: float
    yaw: float
    speed: float
    accel: float = 0.0
    steer: float = 0.0

    @property
    def xy(self) -> F64:
        return np.array([self.x, self.y])

    def to_ego_frame(self, xy: F64) -> F64:
        """World points (..., 2) -> ego frame (x forward, y left)."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        d = np.asarray(xy, np.float64) - self.xy
        return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], axis=-1)

    def to_world(self, xy: F64) -> F64:
        """Ego-frame points (..., 2) -> world frame."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        p = np.asarray(xy, np.float64)
        return np.stack([self.x + c * p[..., 0] - s * p[..., 1], self.y + s * p[..., 0] + c * p[..., 1]], axis=-1)


@dataclass(frozen=True)
class ActorsView:
    """Other actors (N of them, only existing ones): box centre ``xy`` (N, 2), ``yaw`` (N,), speed
    along the heading (N,) (m/s), box ``length``/``width`` (N,) (m), class names, ids."""

    xy: F64
    yaw: F64
    speed: F64
    length: F64
    width: F64
    cls: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    #: optional velocity (N, 2) in the world frame (m/s); default speed along yaw
    velocity: F64 | None = None

    @property
    def n(self) -> int:
        return len(self.xy)

    @classmethod
    def empty(cls) -> ActorsView:
        z = np.zeros(0)
        return cls(np.zeros((0, 2)), z, z, z, z)

    def vel(self) -> F64:
        if self.velocity is not None:
            return np.asarray(self.velocity, np.float64)
        return self.speed[:, None] * np.stack([np.cos(self.yaw), np.sin(self.yaw)], axis=-1)

    def predict(self, t_s: F64) -> F64:
        """Constant-velocity positions (T, N, 2) at times ``t_s`` (T,) seconds from now."""
        t = np.asarray(t_s, np.float64)
        return self.xy[None] + t[:, None, None] * self.vel()[None]


def ego_from_obs(obs: Mapping[str, Any]) -> EgoView:
    """The ego view from an observation's ``ego`` entry (vector or mapping)."""
    e = obs["ego"]
    if isinstance(e, Mapping):
        pose = np.asarray(e["pose"], np.float64)
        return EgoView(float(pose[0]), float(pose[1]), float(pose[2]), float(e["speed"]), float(e.get("accel", 0.0)), float(e.get("steer", 0.0)))
    v = np.asarray(e, np.float64).reshape(-1)
    vals = [float(a) for a in v[:6]] + [0.0] * (6 - min(6, len(v)))
    return EgoView(*vals)


def actors_from_obs(obs: Mapping[str, Any]) -> ActorsView:
    """The actor view from an ``objects`` observation (only valid slots kept)."""
    o = obs["objects"]
    if not isinstance(o, Mapping):  # the registered (M, 8) array form (sim.observations.ObjectsObservation)
        a = np.asarray(o, np.float64).reshape(-1, 8)
        a = a[a[:, 0] > 0.5]
        return ActorsView(
            xy=a[:, 1:3], yaw=a[:, 3], speed=a[:, 4], length=a[:, 5], width=a[:, 6],
            cls=tuple(CODE_CLASSES.get(int(np.rint(k)), "other") for k in a[:, 7]),
        )  # fmt: skip
    valid = np.asarray(o["valid"], bool)
    ids = o.get("ids")
    codes = np.asarray(o["cls"]) if "cls" in o else np.ones(len(valid), np.int64)
    return ActorsView(
        xy=np.asarray(o["xy"], np.float64)[valid],
        yaw=np.asarray(o["yaw"], np.float64)[valid],
        speed=np.asarray(o["speed"], np.float64)[valid],
        length=np.asarray(o["length"], np.float64)[valid],
        width=np.asarray(o["width"], np.float64)[valid],
        cls=tuple(CODE_CLASSES.get(int(c), "other") if not isinstance(c, str) else c for c in codes[valid]),
        ids=tuple(np.asarray(ids, dtype=object)[valid]) if ids is not None else (),
    )


# ------------------------------------------------------------------------------- route path
class RouteRef:
    """The route as one reference polyline (extended straight on by successors so the planner never
    runs off its end), with speed limits and curvature along it.

    Args:
        lane_map: the map.  route: lane ids.  extend_m: metres of straight continuation appended.
    """

    def __init__(self, lane_map: LaneMap, route: Sequence[str], extend_m: float = 60.0) -> None:
        self.route = tuple(route)
        route_len = sum(lane_map.lanes[r].length for r in route)
        ext = straight_continuation(lane_map, list(route), route_len + extend_m)
        rp = route_points(lane_map, ext, blend=REF_BLEND_M)
        pts, lim = rp.xy, rp.speed_limit
        tail = pts[-1] + (pts[-1] - pts[-2]) / max(np.linalg.norm(pts[-1] - pts[-2]), 1e-9) * extend_m
        pts = np.concatenate([pts, tail[None]])
        lim = np.concatenate([lim, lim[-1:]])
        self.polyline = Polyline(pts)
        keep = np.concatenate([[True], np.linalg.norm(np.diff(pts, axis=0), axis=1) > 1e-9])
        self.limit_at_vertex = lim[keep]
        #: arc length where the requested route ends (the extension is only a run-out), m
        self.route_end_s = float(self.polyline.project(route_points(lane_map, list(route), blend=REF_BLEND_M).xy[-1])[0])
        # curvature per vertex (1/m) from heading change over the neighbouring segments
        yaw = self.polyline.seg_yaw
        dyaw = np.abs(wrap_angle(np.diff(yaw)))
        ds = 0.5 * (self.polyline.seg_len[1:] + self.polyline.seg_len[:-1])
        k = np.zeros(len(self.polyline.s))
        k[1:-1] = dyaw / np.maximum(ds, 0.5)
        self.curvature = k

    def limit(self, s: F64) -> F64:
        """Speed limit (m/s) at arc lengths ``s``."""
        i = np.clip(np.searchsorted(self.polyline.s, s, side="right") - 1, 0, len(self.limit_at_vertex) - 1)
        return self.limit_at_vertex[i]

    def max_curvature(self, s0: F64, s1: F64) -> F64:
        """Largest curvature (1/m) between arc lengths ``s0`` and ``s1`` (arrays of one shape)."""
        sv = self.polyline.s
        s0 = np.asarray(s0, np.float64)
        s1 = np.asarray(s1, np.float64)
        inside = (sv[None, :] >= s0.reshape(-1, 1)) & (sv[None, :] <= s1.reshape(-1, 1))
        return np.where(inside, self.curvature[None, :], 0.0).max(axis=1).reshape(s0.shape)

    def point(self, s: F64, d: F64) -> tuple[F64, F64]:
        """World points (..., 2) at arc length ``s`` and lateral offset ``d`` (m, left positive) and
        the centreline heading there."""
        c, h = self.polyline.interpolate(s)
        n = np.stack([-np.sin(h), np.cos(h)], axis=-1)
        return c + np.asarray(d, np.float64)[..., None] * n, h


# ------------------------------------------------------------------------------------- IDM
@dataclass(frozen=True)
class IdmParams:
    """IDM (Treiber et al., 2000) and path-following parameters.

    Attributes:
        a_max: 1.5 m/s² comfortable acceleration.  b_comf: 2.5 m/s² comfortable deceleration.
        s0: 2.5 m standstill gap.  T: 1.5 s time headway.  delta: 4 acceleration exponent.
        decel_max: 7.0 m/s² strongest braking the planner asks for.
        lat_accel_max: 2.0 m/s² lateral acceleration used to slow down for curves.
        lookahead_min / lookahead_gain: pure-pursuit look-ahead = max(min, gain * speed) (m, s).
        corridor_margin: 0.3 m extra half-width of the path corridor for leader detection.
        ramp_s: 1.8 s to move to a new lateral offset (ramp length = max(8 m, ramp_s * speed)).
        stop_at_route_end: stop at the end of the route (the engine ends the episode on route
            completion, so the default is to drive through).
        jerk_max: 3.5 m/s³ largest change of acceleration per second (nuPlan's comfort bound is
            4.13), waived when braking harder than ``emergency_decel`` (4.0 m/s²) is needed.
    """

    a_max: float = 1.5
    b_comf: float = 2.5
    s0: float = 2.5
    T: float = 1.5
    delta: float = 4.0
    decel_max: float = 7.0
    lat_accel_max: float = 2.0
    lookahead_min: float = 5.0
    lookahead_gain: float = 0.9
    corridor_margin: float = 0.3
    ramp_s: float = 1.8
    stop_at_route_end: bool = False
    jerk_max: float = 3.5
    emergency_decel: float = 4.0


# --------------------------------------------------------------------------------- forecast
@dataclass(frozen=True)
class ForecastResult:
    """P rolled-out proposals over T steps: states (P, T+1) including now, controls (P, T, 2)
    [accel m/s², steer rad] actually applied, and the time stamps ``t_s`` (T+1,)."""

    t_s: F64
    x: F64
    y: F64
    yaw: F64
    speed: F64
    accel: F64
    controls: F64
    actors_xy: F64  # (T+1, N, 2) constant-velocity prediction used
    extra: dict[str, Any] = field(default_factory=dict)


def forecast(
    ego: EgoView,
    route: RouteRef,
    actors: ActorsView,
    offsets: F64,
    speed_fracs: F64,
    *,
    steps: int,
    dt_s: float,
    bicycle: KinematicBicycle,
    params: IdmParams,
    ego_size: tuple[float, float] = (4.6, 1.9),
    d_start: float | None = None,
) -> ForecastResult:
    """Roll P proposals (lateral offset ``offsets[p]`` from the route centreline, m; desired speed
    ``speed_fracs[p]`` x the speed limit) forward ``steps`` steps of ``dt_s`` seconds.

    Each step: project the ego on the route; pure pursuit toward the offset path point a look-ahead
    ahead (offset ramped in from ``d_start``, the ego's current offset); IDM toward the desired speed
    (capped by curvature: v <= sqrt(lat_accel_max / kappa)) behind the nearest constant-velocity
    actor inside the proposal's corridor (and the route end as a stopped obstacle); then the
    engine's bicycle ``forward`` with its clipping. Vectorised over proposals.
    """
    offsets = np.asarray(offsets, np.float64)
    fr = np.asarray(speed_fracs, np.float64)
    P = len(offsets)
    el, ew = ego_size
    lr = pursuit_offset(bicycle)
    L = bicycle.wheelbase
    t = np.arange(steps + 1) * dt_s
    axy = actors.predict(t)  # (T+1, N, 2)
    n = actors.n
    if n:
        sa, da, v_along, half_w, half_l = _actors_along_route(route, actors, axy)
    s_e0, d_e0 = route.polyline.project(ego.xy)
    s_e0 = float(s_e0)
    d0 = float(d_e0) if d_start is None else float(d_start)
    state = BicycleState.from_arrays(
        np.full(P, ego.x), np.full(P, ego.y), np.full(P, ego.yaw), np.full(P, ego.speed),
        np.full(P, ego.accel), np.full(P, ego.steer),
    )  # fmt: skip
    X = np.zeros((P, steps + 1))
    Y, YAW, V, A = X.copy(), X.copy(), X.copy(), X.copy()
    X[:, 0], Y[:, 0], YAW[:, 0], V[:, 0], A[:, 0] = ego.x, ego.y, ego.yaw, ego.speed, ego.accel
    U = np.zeros((P, steps, 2))
    ramp_len = max(8.0, params.ramp_s * max(ego.speed, 1.0))

    def d_ref(s: F64) -> F64:
        return d0 + (offsets - d0) * _smooth((s - s_e0) / ramp_len)

    for k in range(steps):
        xy = np.stack([state.x, state.y], axis=-1)
        s_e, _ = route.polyline.project(xy)
        v = state.v
        # --- steering: pure pursuit from the rear axle toward the offset path
        steer = _pursue_offset_path(route, xy, state.yaw, v, lr, L, params, d_ref)
        # --- speed: IDM behind the nearest actor in the corridor
        lim = route.limit(s_e)
        kap = route.max_curvature(s_e, s_e + np.maximum(2.5 * v, 10.0) + 5.0)
        v0 = np.minimum(fr * lim, np.sqrt(params.lat_accel_max / np.maximum(kap, 1e-4)))
        gap = np.full(P, np.inf)
        v_lead = np.zeros(P)
        if params.stop_at_route_end:
            gap = np.maximum(route.route_end_s - s_e - el / 2.0, 0.0) + params.s0
        if n:
            dref_a = d0 + (offsets[:, None] - d0) * _smooth((sa[k][None, :] - s_e0) / ramp_len)  # (P, N)
            inside = np.abs(da[k][None, :] - dref_a) < (half_w[k][None, :] + ew / 2.0 + params.corridor_margin)
            gap, v_lead = _nearest_ahead(sa[k], half_l[k], v_along[k], s_e, inside, el, gap, v_lead)
        acc = idm_accel(v, v_lead, gap, v0, params, zero_v0="brake")
        a_prev = state.accel
        lo = np.where(acc < -params.emergency_decel, -np.inf, a_prev - params.jerk_max * dt_s)
        acc = np.clip(acc, lo, a_prev + params.jerk_max * dt_s)
        u = np.stack([acc, steer], axis=-1)
        state = bicycle.forward(state, u, dt_s)
        U[:, k] = np.stack([state.accel, state.steer], axis=-1)
        X[:, k + 1], Y[:, k + 1], YAW[:, k + 1], V[:, k + 1], A[:, k + 1] = state.x, state.y, state.yaw, state.v, state.accel
    return ForecastResult(t, X, Y, YAW, V, A, U, axy)


def _pursue_offset_path(route: RouteRef, xy: F64, yaw: F64, v: F64, lr: float, wheelbase: float, params: IdmParams, d_ref: Any) -> F64:
    """Steer (rad, (P,)) of pure pursuit from the pursuit point (``lr`` m behind ``xy``) toward the
    point of the offset path ``d_ref(s)`` (m) a look-ahead ``max(lookahead_min, gain * v)`` ahead."""
    ld = np.maximum(params.lookahead_min, params.lookahead_gain * v)
    rear = xy - lr * np.stack([np.cos(yaw), np.sin(yaw)], axis=-1)
    s_r, _ = route.polyline.project(rear)
    s_la = s_r + ld
    tgt, _ = route.point(s_la, d_ref(s_la))
    dxy = tgt - rear
    return pure_pursuit_steer(dxy[:, 0], dxy[:, 1], yaw, wheelbase)  # type: ignore[no-any-return]


def _actors_along_route(route: RouteRef, actors: ActorsView, axy: F64) -> tuple[F64, F64, F64, F64, F64]:
    """Predicted actors (T+1, N, 2) on the route: arc length and lateral offset (m), speed along
    the route (m/s), half extent across and along the route (m); each (T+1, N)."""
    T1, n = axy.shape[0], actors.n
    sa, da = route.polyline.project(axy.reshape(-1, 2))
    sa = sa.reshape(T1, n)
    da = da.reshape(T1, n)
    _, h_at = route.polyline.interpolate(np.clip(sa, 0, route.polyline.length))
    vel = actors.vel()
    v_along = vel[None, :, 0] * np.cos(h_at) + vel[None, :, 1] * np.sin(h_at)  # (T+1, N)
    # half extent of each actor across / along the path
    rel_yaw = actors.yaw[None, :] - h_at
    half_w = 0.5 * (np.abs(np.sin(rel_yaw)) * actors.length + np.abs(np.cos(rel_yaw)) * actors.width)
    half_l = 0.5 * (np.abs(np.cos(rel_yaw)) * actors.length + np.abs(np.sin(rel_yaw)) * actors.width)
    return sa, da, v_along, half_w, half_l


def _nearest_ahead(sa: F64, half_l: F64, v_along: F64, s_e: F64, inside: NDArray[np.bool_], el: float, gap: F64, v_lead: F64) -> tuple[F64, F64]:
    """Per proposal (P,): the bumper gap (m) to the nearest actor ahead inside its corridor
    (``inside`` (P, N)) and that actor's speed along the route (m/s, >= 0), where closer than the
    given ``gap``; actors at arc lengths ``sa`` (N,), the proposals' egos at ``s_e`` (P,)."""
    ahead = sa[None, :] > s_e[:, None]
    g = sa[None, :] - s_e[:, None] - half_l[None, :] - el / 2.0
    g = np.where(inside & ahead, np.maximum(g, 0.0), np.inf)
    j = np.argmin(g, axis=1)
    gmin = g[np.arange(len(s_e)), j]
    closer = gmin < gap
    return np.where(closer, gmin, gap), np.where(closer, np.maximum(v_along[j], 0.0), v_lead)


def _smooth(u: F64) -> F64:
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)
