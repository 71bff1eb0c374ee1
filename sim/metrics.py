"""Driving metrics: a registry (Waymax style), the :class:`EpisodeRecord` they read, and the
aggregate driving score with nuPlan's closed-loop score (CLS) structure.

Every metric is a :class:`MetricDef`: a name, a unit, a kind and a function
``EpisodeRecord -> MetricValue``. ``value`` is the physical quantity (in ``unit``); ``score`` in
[0, 1] is what enters the aggregate:

* ``multiplier`` metrics (hard constraints) multiply the score: ``collision``, ``offroad``,
  ``driving_direction``, ``making_progress``;
* ``weighted`` metrics are averaged with their weights: ``progress`` (5), ``ttc`` (5),
  ``speed_limit`` (4), ``comfort`` (2);
* ``info`` metrics are reported only (``any_collision``, ``max_abs_jerk``).

**score** = Π multipliers × Σ(wᵢ · sᵢ) / Σ wᵢ — the structure and weights of nuPlan's CLS
(H. Caesar et al., *nuPlan*, 2021; ``nuplan-devkit`` ``planning/metrics``; the weights are those of
the nuPlan challenge: progress 5, TTC 5, speed limit 4, comfort 2). Thresholds are nuPlan's where
nuPlan has one (cited per metric); the details and the known simplifications are in
``docs/metrics.md``.

Frames and units: world frame (z up), metres, seconds, m/s, radians. Third-party packages add
metrics through the ``loopdrive.metrics`` entry-point group (an object with the
:class:`MetricDef` fields).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import shapely
from numpy.typing import NDArray

from sim.registry import Registry
from sim.safety import contact_interval, first_on_grid, in_contact
from sim.world import box_corners, boxes_overlap

__all__ = [
    "COMFORT_LIMITS",
    "METRICS",
    "EpisodeRecord",
    "MetricDef",
    "MetricValue",
    "aggregate_score",
    "box_corners",
    "boxes_overlap",
    "compute_metrics",
    "metric",
    "progress_route",
]

FloatArray = NDArray[np.float64]
MetricKind = Literal["multiplier", "weighted", "info"]

#: Classes that count as vulnerable road users / vehicles for the collision multiplier; any other
#: class (``other``) or a static actor counts as a static object (multiplier 0.5, as nuPlan).
DYNAMIC_CLASSES = frozenset({"car", "truck", "bus", "cyclist", "pedestrian", "motorcycle"})

#: nuPlan ``ego_is_comfortable`` thresholds (nuplan-devkit ``ego_is_comfortable_statistics.yaml``).
COMFORT_LIMITS: Mapping[str, tuple[float, float]] = MappingProxyType({
    "lon_accel": (-4.05, 2.40),  # m/s^2
    "lat_accel": (-4.89, 4.89),  # m/s^2
    "lon_jerk": (-4.13, 4.13),  # m/s^3
    "jerk_mag": (0.0, 8.37),  # m/s^3, magnitude of the 2D jerk vector
    "yaw_rate": (-0.95, 0.95),  # rad/s
    "yaw_accel": (-1.93, 1.93),  # rad/s^2
})
#: nuPlan ``drivable_area_compliance``: a footprint corner further than this outside is a violation (m).
DRIVABLE_TOLERANCE_M = 0.3
#: nuPlan ``driving_direction_compliance``: wrong-way progress within any 1 s window, metres.
WRONG_WAY_OK_M, WRONG_WAY_HALF_M, WRONG_WAY_WINDOW_S = 2.0, 6.0, 1.0
#: nuPlan ``time_to_collision_within_bound``: least acceptable TTC (s) and projection step (s).
TTC_MIN_S, TTC_STEP_S = 0.95, 0.1
#: s: the ``ttc`` metric projects this far ahead (nuPlan projects 1 s; the value is searched further
#: so it says how close a call was, and the score -- a TTC below :data:`TTC_MIN_S` -- is the same).
#: Not the engine's per-step signal horizon (:data:`sim.safety.TTC_SIGNAL_HORIZON_S`).
TTC_METRIC_HORIZON_S = 3.0
#: nuPlan ``speed_limit_compliance``: overspeed (m/s) that, held for the whole episode, scores 0.
MAX_OVERSPEED_MS = 2.23
#: nuPlan ``ego_is_making_progress``: least ratio of ego progress to the reference.
MAKING_PROGRESS_RATIO = 0.2
#: Savitzky-Golay filter of the comfort signals (samples, polynomial order), as nuPlan's
#: ``ego_is_comfortable`` does before comparing with its bounds.
SAVGOL_WINDOW, SAVGOL_ORDER = 15, 2
#: Ego speed (m/s) below which the ego counts as stopped (collision fault, TTC).
STOPPED_SPEED_MS = 0.05


# --------------------------------------------------------------------------------- the record
@dataclass(frozen=True, eq=False)
class EpisodeRecord:
    """Everything the metrics read about one finished episode (world frame, SI units).

    Attributes:
        t_s: (T,) time of each step from the episode start, seconds (uniform steps of ``dt_s``).
        ego_xy: (T, 2) ego box centre, m.  ego_yaw: (T,) rad.  ego_speed: (T,) m/s (signed along yaw).
        ego_size: (length, width) of the ego, m.
        actor_ids: (N,) actor ids.  actor_cls: (N,) class names.  actor_static: (N,) bool.
        actor_xy: (T, N, 2) m.  actor_yaw: (T, N) rad.  actor_speed: (T, N) m/s.
        actor_size: (N, 2) length, width, m.  actor_valid: (T, N) bool (actor exists at that step).
        lane_map: the scene's ``sim.map.LaneMap``.  route: the ego's lane route.
        reference_progress_m: progress an expert makes along the route in the same time (the logged
            ego, when there is one); None = the speed-limit reference of :func:`_progress`.
        ego_accel: optional (T,) longitudinal acceleration m/s^2 (default: differentiated speed).
    """

    t_s: FloatArray
    ego_xy: FloatArray
    ego_yaw: FloatArray
    ego_speed: FloatArray
    ego_size: tuple[float, float]
    actor_ids: tuple[str, ...]
    actor_cls: tuple[str, ...]
    actor_xy: FloatArray
    actor_yaw: FloatArray
    actor_speed: FloatArray
    actor_size: FloatArray
    actor_valid: NDArray[np.bool_]
    lane_map: Any
    route: tuple[str, ...]
    actor_static: NDArray[np.bool_] | None = None
    reference_progress_m: float | None = None
    ego_accel: FloatArray | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        T = len(self.t_s)
        n = len(self.actor_ids)
        shapes = {
            "ego_xy": (T, 2), "ego_yaw": (T,), "ego_speed": (T,), "actor_xy": (T, n, 2), "actor_yaw": (T, n),
            "actor_speed": (T, n), "actor_size": (n, 2), "actor_valid": (T, n),
        }  # fmt: skip
        for name, shp in shapes.items():
            arr = np.asarray(getattr(self, name))
            arr = arr.astype(bool) if name == "actor_valid" else arr.astype(np.float64)
            if arr.shape != shp:
                raise ValueError(f"EpisodeRecord.{name}: expected shape {shp}, got {arr.shape}")
            object.__setattr__(self, name, arr)
        if T < 2:
            raise ValueError("EpisodeRecord needs at least two steps")
        if len(self.actor_cls) != n:
            raise ValueError("EpisodeRecord.actor_cls must have one class per actor")
        object.__setattr__(self, "t_s", np.asarray(self.t_s, dtype=np.float64))
        st = np.zeros(n, bool) if self.actor_static is None else np.asarray(self.actor_static, bool)
        object.__setattr__(self, "actor_static", st)

    # -------------------------------------------------------------------- derived ego signals
    @property
    def n_steps(self) -> int:
        return len(self.t_s)

    @property
    def dt_s(self) -> float:
        return float(np.median(np.diff(self.t_s)))

    @property
    def duration_s(self) -> float:
        return float(self.t_s[-1] - self.t_s[0])

    def _window(self) -> int:
        w = min(SAVGOL_WINDOW, self.n_steps if self.n_steps % 2 else self.n_steps - 1)
        return max(w, 3)

    def _filt(self, a: FloatArray) -> FloatArray:
        """Savitzky-Golay smoothed signal (window 15 samples, order 2), as nuPlan smooths its
        comfort signals."""
        from scipy.signal import savgol_filter

        a = np.asarray(a, np.float64)
        if self.n_steps < 3:
            return a
        w = self._window()
        return savgol_filter(a, w, min(SAVGOL_ORDER, w - 1), mode="interp")

    def _d(self, a: FloatArray) -> FloatArray:
        """Time derivative (second-order differences, exact for quadratics)."""
        return np.gradient(a, self.t_s, edge_order=2 if self.n_steps >= 3 else 1)

    @cached_property
    def lon_accel(self) -> FloatArray:
        """Longitudinal acceleration, m/s^2: the applied acceleration when given (exact, from the
        engine: not smoothed), else the time derivative of the smoothed speed."""
        if self.ego_accel is not None:
            return np.asarray(self.ego_accel, np.float64)
        return self._d(self._filt(self.ego_speed))

    @cached_property
    def yaw_rate(self) -> FloatArray:
        """rad/s, the derivative of the smoothed unwrapped yaw."""
        return self._d(self._filt(np.unwrap(self.ego_yaw)))

    @cached_property
    def yaw_accel(self) -> FloatArray:
        """rad/s^2."""
        return self._d(self.yaw_rate)

    @cached_property
    def lat_accel(self) -> FloatArray:
        """Lateral (centripetal) acceleration v·ψ̇, m/s^2."""
        return self.ego_speed * self.yaw_rate

    def _sg_d(self, a: FloatArray) -> FloatArray:
        """Savitzky-Golay first derivative (window 15 samples, order 2, mean step), as nuPlan's
        ``approximate_derivatives`` turns an acceleration into a jerk."""
        from scipy.signal import savgol_filter

        a = np.asarray(a, np.float64)
        if self.n_steps < 3:
            return self._d(a)
        w = self._window()
        # edges padded with the first/last value (the state held before and after the episode)
        # rather than nuPlan's polynomial extrapolation, which invents jerk at the first step
        return savgol_filter(a, w, min(SAVGOL_ORDER, w - 1), deriv=1, delta=self.dt_s, mode="nearest")

    @cached_property
    def lon_jerk(self) -> FloatArray:
        """m/s^3, the Savitzky-Golay derivative of the longitudinal acceleration (nuPlan's
        ``ego_lon_jerk``: a one-step change of the applied acceleration is spread over the window,
        a sustained ramp is measured exactly)."""
        return self._sg_d(self.lon_accel)

    @cached_property
    def jerk_mag(self) -> FloatArray:
        """Magnitude of the 2D jerk (longitudinal, lateral), m/s^3, both Savitzky-Golay derivatives."""
        return np.hypot(self.lon_jerk, self._sg_d(self.lat_accel))

    @cached_property
    def progress_route(self) -> tuple[str, ...]:
        """:func:`progress_route` of the ego's route."""
        return progress_route(self.lane_map, self.route)

    @cached_property
    def route_polyline(self) -> Any:
        """The centreline of :attr:`progress_route`."""
        return self.lane_map.route_polyline(list(self.progress_route))

    @cached_property
    def route_s(self) -> FloatArray:
        """Arc length (m) of each ego position projected on the route."""
        s, _ = self.route_polyline.project(self.ego_xy)
        return np.asarray(s, np.float64)

    @cached_property
    def route_lane_index(self) -> NDArray[np.int64]:
        """Index into :attr:`progress_route` of the lane the ego's route projection is in, per step."""
        ends = np.cumsum([self.lane_map.lanes[r].length for r in self.progress_route])
        return np.clip(np.searchsorted(ends, self.route_s, side="right"), 0, len(self.progress_route) - 1)

    @cached_property
    def route_speed_limit(self) -> FloatArray:
        """Speed limit (m/s) of the route lane the ego is on, per step."""
        return np.array([self.lane_map.lanes[r].speed_limit for r in self.progress_route])[
            self.route_lane_index
        ]


def progress_route(lane_map: Any, route: Sequence[str]) -> tuple[str, ...]:
    """A lane route with its lane changes collapsed: of consecutive same-direction neighbours only
    the last is kept (they run side by side, so arc lengths along it measure progress)."""
    out: list[str] = []
    for lid in route:
        if out:
            prev = lane_map.lanes[out[-1]]
            if lid in (prev.left, prev.right):
                out[-1] = lid
                continue
        out.append(lid)
    return tuple(out)


# ------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class MetricValue:
    """One metric of one episode: ``value`` in the metric's unit, ``score`` in [0, 1]."""

    value: float
    score: float
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricDef:
    """A metric: ``fn(record) -> MetricValue``. ``kind`` says how ``score`` enters the aggregate
    (``multiplier``, ``weighted`` with ``weight``, or ``info`` = reported only)."""

    name: str
    unit: str
    kind: MetricKind
    fn: Callable[[EpisodeRecord], MetricValue]
    weight: float = 0.0
    description: str = ""
    higher_is_better: bool = True


#: name -> MetricDef; third-party metrics through the ``loopdrive.metrics`` entry-point group.
METRICS: Registry[MetricDef] = Registry("metric", "loopdrive.metrics")


def metric(
    name: str, unit: str, kind: MetricKind, weight: float = 0.0, *, higher_is_better: bool = True
) -> Callable[[Callable[[EpisodeRecord], MetricValue]], Callable[[EpisodeRecord], MetricValue]]:
    """Decorator registering ``fn`` as a metric (the docstring's first line becomes the description)."""
    if kind == "weighted" and weight <= 0:
        raise ValueError("a weighted metric needs a positive weight")

    def deco(fn: Callable[[EpisodeRecord], MetricValue]) -> Callable[[EpisodeRecord], MetricValue]:
        desc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        METRICS.register(name, MetricDef(name, unit, kind, fn, weight, desc, higher_is_better))
        return fn

    return deco


# -------------------------------------------------------------------------------- collisions
_Motion = tuple[FloatArray, FloatArray, FloatArray, FloatArray]  # x, y, yaw, speed


def _ego_and_actors(rec: EpisodeRecord) -> tuple[_Motion, _Motion, tuple[FloatArray, FloatArray]]:
    """The record as :func:`sim.safety.contact_interval` arguments: ego (T,) and actors (T, N)."""
    ego = (rec.ego_xy[:, 0], rec.ego_xy[:, 1], rec.ego_yaw, rec.ego_speed)
    actors = (rec.actor_xy[..., 0], rec.actor_xy[..., 1], rec.actor_yaw, rec.actor_speed)
    return ego, actors, (rec.actor_size[:, 0], rec.actor_size[:, 1])


def _collision_events(rec: EpisodeRecord) -> list[dict[str, Any]]:
    """First contact with each actor: step, actor, class, and whether the ego is at fault."""
    if not rec.actor_ids:
        return []
    el, ew = rec.ego_size
    ego, actors, size = _ego_and_actors(rec)
    hit = in_contact(contact_interval(ego, (el, ew), actors, size, rec.actor_valid)[0])
    events = []
    for j in np.flatnonzero(hit.any(axis=0)):
        t = int(np.argmax(hit[:, j]))
        c, s = math.cos(rec.ego_yaw[t]), math.sin(rec.ego_yaw[t])
        rel = rec.actor_xy[t, j] - rec.ego_xy[t]
        x_rel = c * rel[0] + s * rel[1]  # actor centre ahead (+) / behind (-) of the ego centre
        v_ego = float(rec.ego_speed[t])
        # actor speed along the ego heading
        v_act = float(rec.actor_speed[t, j] * math.cos(rec.actor_yaw[t, j] - rec.ego_yaw[t]))
        ego_stopped = abs(v_ego) < STOPPED_SPEED_MS
        rear = x_rel < -el / 4.0 and v_act > v_ego
        if ego_stopped:
            kind = "stopped_ego"
        elif rear:
            kind = "rear"
        elif x_rel > el / 4.0:
            kind = "front"
        else:
            kind = "lateral"
        static = bool(rec.actor_static is not None and rec.actor_static[j]) or rec.actor_cls[j] not in DYNAMIC_CLASSES
        events.append(
            {
                "step": t,
                "t_s": float(rec.t_s[t]),
                "actor": rec.actor_ids[j],
                "cls": rec.actor_cls[j],
                "type": kind,
                "at_fault": not (ego_stopped or rear),
                "static_object": static,
                "ego_speed": v_ego,
            }
        )
    return sorted(events, key=lambda e: (e["step"], e["actor"]))


@metric("collision", "count", "multiplier", higher_is_better=False)
def _collision(rec: EpisodeRecord) -> MetricValue:
    """At-fault collisions (nuPlan ``no_ego_at_fault_collisions``): score 0 after an at-fault
    collision with a vehicle/VRU, 0.5 when only static objects were hit, else 1.

    Fault follows nuPlan's classification, simplified: the ego is *not* at fault when it was
    stopped (speed < 0.05 m/s) or was hit from behind (the other actor's centre lies behind the
    ego's rear quarter and it moved faster along the ego's heading); front and lateral contacts while
    moving are the ego's fault. Value = number of at-fault collisions (each actor counted once)."""
    ev = [e for e in _collision_events(rec) if e["at_fault"]]
    if not ev:
        return MetricValue(0.0, 1.0, {"events": []})
    score = 0.5 if all(e["static_object"] for e in ev) else 0.0
    return MetricValue(float(len(ev)), score, {"events": ev})


@metric("any_collision", "count", "info", higher_is_better=False)
def _any_collision(rec: EpisodeRecord) -> MetricValue:
    """Number of actors the ego touched, at fault or not (reported only)."""
    ev = _collision_events(rec)
    return MetricValue(float(len(ev)), 0.0 if ev else 1.0, {"events": ev})


# ---------------------------------------------------------------------------- drivable area
def _drivable(lane_map: Any) -> Any:
    """The map's drivable area (built once per map), prepared for fast distance queries."""
    area = lane_map.drivable_area
    shapely.prepare(area)  # in place, once: a prepared geometry stays prepared
    return area


@metric("offroad", "m", "multiplier", higher_is_better=False)
def _offroad(rec: EpisodeRecord) -> MetricValue:
    """Drivable-area compliance (nuPlan ``drivable_area_compliance``): value = the largest distance
    (m) of an ego footprint corner outside the drivable area (union of lane polygons); score 1 when
    it stays within 0.3 m, else 0."""
    area = _drivable(rec.lane_map)
    corners = box_corners(rec.ego_xy[:, 0], rec.ego_xy[:, 1], rec.ego_yaw, *rec.ego_size).reshape(-1, 2)
    d = shapely.distance(area, shapely.points(corners))
    worst = float(np.max(d)) if len(d) else 0.0
    steps_off = int(np.sum(d.reshape(-1, 4).max(axis=1) > DRIVABLE_TOLERANCE_M))
    return MetricValue(worst, 1.0 if worst <= DRIVABLE_TOLERANCE_M else 0.0, {"steps_off": steps_off})


# ------------------------------------------------------------------------- driving direction
def _wrong_way_step(rec: EpisodeRecord) -> FloatArray:
    """Per step, the distance (m) the ego moved against the direction of every lane it is on
    (0 when some lane agrees with its motion, or when it is on no lane)."""
    T = rec.n_steps
    step_vec = np.diff(rec.ego_xy, axis=0)
    step_len = np.linalg.norm(step_vec, axis=1)
    tree, ids = rec.lane_map.lane_tree, rec.lane_map.lane_ids
    mid = 0.5 * (rec.ego_xy[1:] + rec.ego_xy[:-1])
    pairs = tree.query(shapely.points(mid), predicate="intersects")
    agree = np.zeros(T - 1, bool)
    onlane = np.zeros(T - 1, bool)
    for k, li in zip(pairs[0], pairs[1], strict=True):
        lane = rec.lane_map.lanes[ids[li]]
        s, _ = lane.polyline.project(mid[k])
        _, h = lane.polyline.interpolate(np.clip(s, 0.0, lane.length))
        onlane[k] = True
        if (
            step_len[k] < 1e-9
            or step_vec[k, 0] * math.cos(float(h)) + step_vec[k, 1] * math.sin(float(h)) >= 0
        ):
            agree[k] = True
    return np.where(onlane & ~agree, step_len, 0.0)


@metric("driving_direction", "m", "multiplier", higher_is_better=False)
def _driving_direction(rec: EpisodeRecord) -> MetricValue:
    """Driving-direction compliance (nuPlan ``driving_direction_compliance``): value = the largest
    distance (m) driven against the lane direction within any 1 s window; score 1 below 2 m, 0.5
    below 6 m, else 0."""
    ww = _wrong_way_step(rec)
    win = max(1, round(WRONG_WAY_WINDOW_S / rec.dt_s))
    c = np.concatenate([[0.0], np.cumsum(ww)])
    worst = float(np.max(c[win:] - c[:-win])) if len(ww) >= win else float(c[-1])
    score = 1.0 if worst < WRONG_WAY_OK_M else 0.5 if worst < WRONG_WAY_HALF_M else 0.0
    return MetricValue(worst, score)


# ---------------------------------------------------------------------------------- progress
def _progress_values(rec: EpisodeRecord) -> tuple[float, float]:
    """(ego progress along the route in m, reference progress in m)."""
    s = rec.route_s
    prog = float(s[-1] - s[0])
    if rec.reference_progress_m is not None:
        ref = float(rec.reference_progress_m)
    else:
        # no expert: half the speed limit of the route lane the ego is on, integrated over the
        # episode, capped by the route length left at the start
        limits = rec.route_speed_limit
        ref = float(np.sum(0.5 * limits[:-1] * np.diff(rec.t_s)))
        ref = min(ref, float(rec.route_polyline.length - s[0]))
    return prog, max(ref, 1.0)


@metric("progress", "m", "weighted", weight=5.0)
def _progress(rec: EpisodeRecord) -> MetricValue:
    """Ego progress along the route (nuPlan ``ego_progress_along_expert_route``): value = metres
    along the route centreline between the first and last step; score = min(1, value / reference),
    the reference being the expert's progress (the logged ego) or, without one, half the route's
    speed limit integrated over the episode (capped at the route length left)."""
    prog, ref = _progress_values(rec)
    return MetricValue(prog, float(np.clip(prog / ref, 0.0, 1.0)), {"reference_m": ref})


@metric("making_progress", "ratio", "multiplier")
def _making_progress(rec: EpisodeRecord) -> MetricValue:
    """nuPlan ``ego_is_making_progress``: value = progress / reference; score 1 when >= 0.2, else 0."""
    prog, ref = _progress_values(rec)
    r = prog / ref
    return MetricValue(r, 1.0 if r >= MAKING_PROGRESS_RATIO else 0.0)


# ------------------------------------------------------------------------------------- TTC
def _min_ttc(rec: EpisodeRecord, horizon_s: float) -> tuple[float, int, str | None]:
    """Smallest time-to-collision (s) over the episode, projecting the ego and every actor ahead of
    it at constant velocity on nuPlan's 0.1 s grid (:func:`sim.safety.first_on_grid`); inf when
    nothing is hit within ``horizon_s``. Steps where the ego is stopped, and actors already in
    contact or behind the ego, are skipped. Returns (TTC, step, actor id)."""
    n = len(rec.actor_ids)
    if n == 0:
        return math.inf, -1, None
    el, ew = rec.ego_size
    ego, actors, size = _ego_and_actors(rec)
    ex, ey, eyaw, ev = ego
    x_rel = np.cos(eyaw)[:, None] * (actors[0] - ex[:, None]) + np.sin(eyaw)[:, None] * (actors[1] - ey[:, None])
    cand = rec.actor_valid & (x_rel >= -el / 2.0) & (np.abs(ev) >= STOPPED_SPEED_MS)[:, None]
    first, last = contact_interval(ego, (el, ew), actors, size, cand)
    cand &= ~in_contact(first)
    ttc = np.where(cand, first_on_grid(first, last, horizon_s, TTC_STEP_S), np.inf)
    k = int(np.argmin(ttc))
    if not np.isfinite(ttc.flat[k]):
        return math.inf, -1, None
    return float(ttc.flat[k]), k // n, rec.actor_ids[k % n]


@metric("ttc", "s", "weighted", weight=5.0)
def _ttc(rec: EpisodeRecord) -> MetricValue:
    """Minimum time-to-collision (nuPlan ``time_to_collision_within_bound``): value = the smallest
    constant-velocity TTC (s) over the episode, searched up to 3 s (inf when none); score 1 when
    no TTC below 0.95 s occurs within nuPlan's 1 s projection horizon, else 0."""
    ttc, step, actor = _min_ttc(rec, TTC_METRIC_HORIZON_S)
    return MetricValue(ttc, 1.0 if ttc >= TTC_MIN_S else 0.0, {"step": step, "actor": actor})


# ------------------------------------------------------------------------------ speed limit
@metric("speed_limit", "m/s", "weighted", weight=4.0, higher_is_better=False)
def _speed_limit(rec: EpisodeRecord) -> MetricValue:
    """Speed-limit compliance (nuPlan ``speed_limit_compliance``): value = the largest overspeed
    (m/s) above the limit of the route lane the ego is on; score = max(0, 1 - ∫overspeed dt /
    (2.23 m/s × episode duration))."""
    limits = rec.route_speed_limit
    over = np.maximum(np.abs(rec.ego_speed) - limits, 0.0)
    dt = np.diff(rec.t_s)
    area = float(np.sum(0.5 * (over[1:] + over[:-1]) * dt))
    score = max(0.0, 1.0 - area / (MAX_OVERSPEED_MS * max(rec.duration_s, 1e-9)))
    return MetricValue(float(over.max()), score, {"violation_area_m": area})


# ---------------------------------------------------------------------------------- comfort
def comfort_signals(rec: EpisodeRecord) -> dict[str, FloatArray]:
    """The signals :data:`COMFORT_LIMITS` bound, per step."""
    return {
        "lon_accel": rec.lon_accel,
        "lat_accel": rec.lat_accel,
        "lon_jerk": rec.lon_jerk,
        "jerk_mag": rec.jerk_mag,
        "yaw_rate": rec.yaw_rate,
        "yaw_accel": rec.yaw_accel,
    }


@metric("comfort", "ratio", "weighted", weight=2.0, higher_is_better=False)
def _comfort(rec: EpisodeRecord) -> MetricValue:
    """Comfort (nuPlan ``ego_is_comfortable``): longitudinal acceleration in [-4.05, 2.40] m/s²,
    |lateral acceleration| <= 4.89 m/s², |longitudinal jerk| <= 4.13 m/s³, |jerk| <= 8.37 m/s³,
    |yaw rate| <= 0.95 rad/s, |yaw acceleration| <= 1.93 rad/s². Signals are Savitzky-Golay
    smoothed (15 samples, order 2, as nuPlan) derivatives of the ego's speed and yaw; the engine's
    applied acceleration is used as is and the jerks are its Savitzky-Golay derivatives (nuPlan's
    ``approximate_derivatives``). value = the worst ratio of a signal to its bound (<= 1 is comfortable);
    score 1 when every bound holds at every step, else 0."""
    worst, which = 0.0, None
    for name, sig in comfort_signals(rec).items():
        lo, hi = COMFORT_LIMITS[name]
        r_hi = float(np.max(sig)) / hi if hi > 0 else 0.0
        r_lo = float(np.min(sig)) / lo if lo < 0 else 0.0
        r = max(r_hi, r_lo)
        if r > worst:
            worst, which = r, name
    return MetricValue(worst, 1.0 if worst <= 1.0 + 1e-9 else 0.0, {"worst_signal": which})


@metric("max_abs_jerk", "m/s^3", "info", higher_is_better=False)
def _max_jerk(rec: EpisodeRecord) -> MetricValue:
    """Largest |longitudinal jerk| of the ego, m/s³ (reported only)."""
    j = float(np.max(np.abs(rec.lon_jerk)))
    return MetricValue(j, 1.0 if j <= COMFORT_LIMITS["lon_jerk"][1] else 0.0)


# -------------------------------------------------------------------------------- aggregate
def aggregate_score(values: Mapping[str, MetricValue], defs: Mapping[str, MetricDef] | None = None) -> float:
    """nuPlan CLS structure: Π multiplier scores × Σ wᵢ·sᵢ / Σ wᵢ over the weighted metrics
    present in ``values`` (info metrics are ignored). 1.0 when no weighted metric is present and
    no multiplier fails."""
    mult, num, den = 1.0, 0.0, 0.0
    for name, v in values.items():
        d = defs[name] if defs is not None and name in defs else METRICS.get(name)
        if d.kind == "multiplier":
            mult *= float(v.score)
        elif d.kind == "weighted":
            num += d.weight * float(v.score)
            den += d.weight
    return mult * (num / den if den > 0 else 1.0)


def compute_metrics(
    rec: EpisodeRecord, names: Sequence[str] | None = None
) -> tuple[dict[str, MetricValue], float]:
    """Compute the named metrics (default: every registered one) and the aggregate score."""
    names = list(names) if names else METRICS.names()
    defs = {n: METRICS.get(n) for n in names}
    values = {n: d.fn(rec) for n, d in defs.items()}
    return values, aggregate_score(values, defs)
