"""``pdm_closed``: a PDM-Closed-style planner (Dauner et al., *Parting with Misconceptions about
Learning-based Vehicle Motion Planning*, CoRL 2023).

Every step it builds P proposals -- the route centreline at several lateral offsets (0, ±1 m, one
lane width left/right, and the current offset) times several desired speeds (fractions of the speed
limit) -- rolls each one forward closed-loop (pure pursuit + IDM through the engine's own kinematic
bicycle, :func:`agents.planners.common.forecast`) against the other actors predicted at constant
velocity, scores each forecast with the metric registry (:func:`sim.metrics.compute_metrics`, the
same aggregate score the batch runner reports; progress is measured against the best proposal, as
PDM does) and executes the first control of the best one.

It needs privileged state: the ego's odometry (``ego``) and the other actors' boxes, headings and
speeds (``objects``).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Annotated, Any

import numpy as np
from pydantic import Field, field_validator

from agents.planners.common import (
    ActorsView,
    EgoView,
    ForecastResult,
    RouteRef,
    actors_from_obs,
    ego_from_obs,
    forecast,
)
from agents.planners.idm import IdmFields
from sim.dynamics import KinematicBicycle
from sim.metrics import METRICS, EpisodeRecord, aggregate_score
from sim.planning import Control, Float, Int, Observation, ObservationSpec, Planner, PlannerInit

__all__ = ["PdmClosedParams", "PdmClosedPlanner", "score_proposals"]

log = logging.getLogger(__name__)

#: the metrics scored by default: every registered multiplier and weighted metric
DEFAULT_SPEED_FRACS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _records(
    f: ForecastResult,
    actors: ActorsView,
    lane_map: Any,
    route: tuple[str, ...],
    ego_size: tuple[float, float],
    ends: np.ndarray | None,
    which: list[int],
) -> list[EpisodeRecord]:
    _P, T1 = f.x.shape
    n = actors.n
    a_xy = f.actors_xy
    a_yaw = np.broadcast_to(actors.yaw[None], (T1, n))
    a_v = np.broadcast_to(actors.speed[None], (T1, n))
    size = np.stack([actors.length, actors.width], axis=-1) if n else np.zeros((0, 2))
    static = np.array([c not in _DYNAMIC for c in actors.cls], bool) if n and len(actors.cls) == n else None
    cls = actors.cls if len(actors.cls) == n else ("car",) * n
    ids = actors.ids if len(actors.ids) == n else tuple(f"a{i}" for i in range(n))
    recs = []
    for p in which:
        e = T1 if ends is None else int(np.clip(ends[p], 2, T1))
        recs.append(
            EpisodeRecord(
                t_s=f.t_s[:e], ego_xy=np.stack([f.x[p, :e], f.y[p, :e]], -1), ego_yaw=f.yaw[p, :e],
                ego_speed=f.speed[p, :e], ego_size=ego_size, actor_ids=ids, actor_cls=cls, actor_xy=a_xy[:e],
                actor_yaw=a_yaw[:e], actor_speed=a_v[:e], actor_size=size, actor_valid=np.ones((e, n), bool),
                lane_map=lane_map, route=route, actor_static=static, ego_accel=f.accel[p, :e],
            )
        )
    return recs


_DYNAMIC = frozenset({"car", "truck", "bus", "cyclist", "pedestrian", "motorcycle"})


def score_proposals(
    f: ForecastResult,
    actors: ActorsView,
    lane_map: Any,
    route: tuple[str, ...],
    ego_size: tuple[float, float],
    metrics: list[str],
    ends: np.ndarray | None = None,
    which: list[int] | None = None,
    reference_m: float | None = None,
) -> tuple[np.ndarray, list[dict[str, float]]]:
    """Aggregate score of forecast proposals ``which`` (default all P) with the metric registry, and
    per proposal a dict metric -> score. Progress and making-progress are measured against
    ``reference_m`` (default: the best scored proposal's progress -- PDM's normalisation). ``ends``
    (P,) optionally cuts proposal p after step ``ends[p]`` (the route is complete there: the episode
    would end)."""
    which = list(range(f.x.shape[0])) if which is None else which
    recs = _records(f, actors, lane_map, route, ego_size, ends, which)
    if reference_m is None:
        prog = np.array([float(r.route_s[-1] - r.route_s[0]) for r in recs])
        reference_m = float(prog.max())
    ref = max(float(reference_m), 1.0)
    scores = np.zeros(len(which))
    per: list[dict[str, float]] = []
    mult = [m for m in metrics if METRICS.get(m).kind == "multiplier"]
    rest = [m for m in metrics if m not in mult]
    for i, r in enumerate(recs):
        object.__setattr__(r, "reference_progress_m", ref)
        # multipliers first: a proposal they zero needs no weighted metric (same aggregate score)
        values = {m: METRICS.get(m).fn(r) for m in mult}
        if rest and all(v.score > 0 for v in values.values()):
            values.update({m: METRICS.get(m).fn(r) for m in rest})
            scores[i] = aggregate_score(values)
        elif rest:
            scores[i] = 0.0
        else:
            scores[i] = aggregate_score(values)
        per.append({k: float(v.score) for k, v in values.items()})
    return scores, per


Frac = Annotated[float, Field(ge=0.0, le=2.0)]
Lateral = Annotated[float, Field(ge=-20.0, le=20.0)]


class PdmClosedParams(IdmFields):
    """Parameters of ``pdm_closed``: the IDM fields plus the proposal set and its scoring (s, m)."""

    horizon_s: Float = Field(4.0, gt=0.0, le=20.0, description="forecast horizon, s")
    forecast_dt_s: Float = Field(0.2, ge=0.05, le=1.0, description="forecast step, s")
    speed_fracs: list[Annotated[Frac, Field(strict=True, allow_inf_nan=False)]] = Field(
        default_factory=lambda: list(DEFAULT_SPEED_FRACS), min_length=1, max_length=16,
        description="desired speeds as fractions of the limit",
    )  # fmt: skip
    offsets_m: list[Annotated[Lateral, Field(strict=True, allow_inf_nan=False)]] | None = Field(
        None, min_length=1, max_length=16, description="lateral offsets, m (default: 0 and ±one lane width)"
    )
    metrics: list[str] | None = Field(None, min_length=1, description="metric names (default: every scored metric)")
    switch_cost: Float = Field(0.02, ge=0.0, description="score per lane width of moving further out")
    replan_every: Int = Field(2, ge=1, le=100, description="full proposal scoring every n-th step")

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: list[str] | None) -> list[str] | None:
        unknown = [m for m in v or () if m not in METRICS]
        if unknown:
            raise ValueError(f"registered metric names, unknown: {', '.join(unknown)}; known: {', '.join(METRICS.names())}")
        return v


class PdmClosedPlanner(Planner):
    """PDM-Closed. Params: ``horizon_s`` (4.0 s forecast), ``forecast_dt_s`` (0.2 s), ``speed_fracs``
    (0, .25, .5, .75, 1 of the limit), ``offsets_m`` (lateral offsets; default 0 and ±one lane
    width, plus the current target), ``replan_every`` (2: full proposal scoring every 2nd step, the
    chosen policy re-run against fresh observations in between), ``metrics`` (default: every registered multiplier/weighted metric), ``switch_cost``
    (0.02 score units per lane width of moving further from the centreline: hysteresis), plus any IDM parameter."""

    name = "pdm_closed"
    Params = PdmClosedParams

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        cfg: PdmClosedParams = self.config  # type: ignore[assignment]
        self.idm = cfg.idm()
        self.horizon_s = cfg.horizon_s
        self.forecast_dt_s = cfg.forecast_dt_s
        self.speed_fracs = np.asarray(cfg.speed_fracs, np.float64)
        self.offsets_m = cfg.offsets_m
        self.metrics = list(cfg.metrics or [n for n in METRICS.names() if METRICS.get(n).kind != "info"])
        self.switch_cost = cfg.switch_cost
        self.replan_every = cfg.replan_every
        self.bicycle = KinematicBicycle()
        self.route: RouteRef | None = None
        #: the last plan's proposals, scores and choice (for inspection / tests)
        self.last: dict[str, Any] = {}

    def observation_spec(self) -> ObservationSpec:
        return ObservationSpec(kinds=("ego", "objects"))

    def reset(self, init: PlannerInit, *, seed: int | None = None) -> None:
        self.init = init
        self.route = RouteRef(init.lane_map, init.route)
        self.dt_s = float(init.dt_s)
        self.ego_size = (float(init.ego_size[0]), float(init.ego_size[1]))
        widths = [init.lane_map.lanes[r].width for r in init.route]
        self.lane_w = float(np.median(widths))
        self.target_d = 0.0
        self.target_frac = float(self.speed_fracs.max())
        self._k = 0
        self.last = {}

    def _offsets(self, d_cur: float) -> np.ndarray:
        if self.offsets_m is not None:
            base = [float(o) for o in self.offsets_m]
        else:
            base = [0.0, self.lane_w, -self.lane_w]
        base.append(self.target_d)
        return np.unique(np.round(np.asarray(base), 3))

    def actors(self, obs: Observation, ego: EgoView) -> ActorsView:
        """The actors the planner believes in (ground truth here)."""
        return actors_from_obs(obs)

    def _offset_cost(self, off: np.ndarray) -> np.ndarray:
        """Tie-breaking cost (score units) of lateral offsets: 0.01 per lane width away from the
        centreline, plus ``switch_cost`` per lane width for moving further out than the current
        target (hysteresis); going back toward the centreline is never penalised."""
        away = np.abs(off) > np.abs(self.target_d) + 1e-6
        return 0.01 * np.abs(off) / self.lane_w + np.where(away, self.switch_cost * np.abs(off - self.target_d) / self.lane_w, 0.0)

    def _freeze_at_route_end(self, f: ForecastResult) -> ForecastResult:
        """The forecast with each proposal held at the pose where it completes the route (the
        engine ends the episode there; the map may end right after it)."""
        assert self.route is not None
        s_f, _ = self.route.polyline.project(np.stack([f.x, f.y], -1))
        done = s_f + self.ego_size[0] / 2.0 >= self.route.route_end_s - 0.2
        if not done.any():
            return f
        T1 = f.x.shape[1]
        end = np.where(done.any(axis=1), np.maximum(np.argmax(done, axis=1) - 1, 0), T1 - 1)
        k = np.minimum(np.arange(T1)[None, :], end[:, None])
        rows = np.arange(f.x.shape[0])[:, None]
        return replace(f, x=f.x[rows, k], y=f.y[rows, k], yaw=f.yaw[rows, k], speed=f.speed[rows, k], accel=f.accel[rows, k])

    def plan(self, obs: Observation) -> Control:
        assert self.route is not None, "reset() first"
        ego = ego_from_obs(obs)
        actors = self.actors(obs, ego)
        _, d_cur = self.route.polyline.project(ego.xy)
        self._k += 1
        if (self._k - 1) % self.replan_every:
            # between full replans: the chosen policy (offset, desired speed) on the fresh observation
            return self._execute(ego, actors, self.target_d, self.target_frac, float(d_cur))
        offs = self._offsets(float(d_cur))
        n_off, n_spd = len(offs), len(self.speed_fracs)
        off_p = np.repeat(offs, n_spd)
        fr_p = np.tile(self.speed_fracs, n_off)
        steps = max(1, round(self.horizon_s / self.forecast_dt_s))
        kw = dict(steps=steps, dt_s=self.forecast_dt_s, bicycle=self.bicycle, params=self.idm, ego_size=self.ego_size, d_start=float(d_cur))
        f = forecast(ego, self.route, actors, off_p, fr_p, **kw)  # type: ignore[arg-type]
        f = self._freeze_at_route_end(f)
        args = (f, actors, self.init.lane_map, tuple(self.init.route), self.ego_size, self.metrics)
        fmax = float(self.speed_fracs.max())
        # lazy evaluation: when keeping the current offset (or going back to the lane centre) at
        # full speed is flawless against the free-road progress, no proposal can beat it
        pref = [int(i) for i in np.flatnonzero((fr_p == fmax) & ((off_p == self.target_d) | (off_p == 0.0)))]
        free = self._freeze_at_route_end(forecast(ego, self.route, ActorsView.empty(), np.array([0.0]), np.array([fmax]), **kw))  # type: ignore[arg-type]
        s_free, _ = self.route.polyline.project(np.stack([free.x[0], free.y[0]], -1))
        ref_free = float(s_free[-1] - s_free[0])
        sc, per = score_proposals(*args, which=pref, reference_m=ref_free)
        adj_pref = sc - self._offset_cost(off_p[pref])
        k = int(np.argmax(adj_pref))
        if sc[k] >= 1.0 - 1e-9:
            best, scores, best_metrics, lazy = pref[k], None, per[k], True
        else:
            scores, per_all = score_proposals(*args)
            adj = scores - self._offset_cost(off_p)
            best, best_metrics, lazy = int(np.argmax(adj)), per_all[int(np.argmax(adj))], False
        self.target_d = float(off_p[best])
        self.target_frac = float(fr_p[best])
        self.last = {"offsets": off_p, "speed_fracs": fr_p, "scores": scores, "best": best, "metric_scores": best_metrics, "lazy": lazy}
        return self._execute(ego, actors, self.target_d, self.target_frac, float(d_cur))

    def _execute(self, ego: EgoView, actors: ActorsView, offset: float, frac: float, d_cur: float) -> Control:
        """The control of policy (offset, desired-speed fraction) at the engine's step."""
        assert self.route is not None
        g = forecast(
            ego, self.route, actors, np.array([offset]), np.array([frac]), steps=1, dt_s=self.dt_s,
            bicycle=self.bicycle, params=self.idm, ego_size=self.ego_size, d_start=d_cur,
        )  # fmt: skip
        a, st = g.controls[0, 0]
        return Control(float(a), float(st))

