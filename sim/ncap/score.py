"""NeuroNCAP's score, impact speeds and the per-type summary.

**score** = 5 when the ego collides with nothing, else ``4 · max(0, 1 − v_i / v_r)``, where ``v_i`` is
the impact speed -- the magnitude of the ego's velocity minus the other actor's velocity (m/s) at
the first step the two boxes overlap (NeuroNCAP's ``CollisionInfo``) -- and ``v_r`` the impact
speed of the same permutation with the ego taking no action (:mod:`sim.ncap.reference`). When the
no-action run collides with nothing (a permutation shifted the target off the ego's path) ``v_r``
is the permutation's designed closing speed, NeuroNCAP's own reference rule (the logged ego's
velocity minus the target's at the designed meeting time). A ``v_r`` of zero scores 0 on impact.

**Off-road ends** (loopdrive's addition, not NeuroNCAP's): NeuroNCAP scores only collisions, so a
run that leaves the road and ends there scores 5. The summary counts such runs (``offroad_ends``,
``offroad_rate``) and gives ``score_offroad_as_0``, the mean score with each of them counted 0,
so a planner cannot buy its score by driving off the road.

The first collision is the one the metric registry's ``any_collision`` metric reports (the first
contact with any actor, target or not, as NeuroNCAP's collision checker; the engine ends the
episode there). The **collision rate** is the share of scored permutations with a collision. Per
type: mean score and collision rate; overall: the mean of the three type means (NeuroNCAP's
"average" column). Errored permutations (the planner's or the reference's run raised) are counted
and never scored.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import ResultsError
from sim.fsutil import json_safe

__all__ = [
    "Impact",
    "episode_record",
    "first_impact",
    "ncap_score",
    "relative_speed",
    "summarize",
]


def ncap_score(collided: bool, impact_speed: float, reference_speed: float) -> float:
    """NeuroNCAP's score in [0, 5]: 5 without a collision, else 4 · max(0, 1 − v_i / v_r) (m/s)."""
    if not collided:
        return 5.0
    if not reference_speed > 0.0:
        return 0.0
    return 4.0 * max(0.0, 1.0 - float(impact_speed) / float(reference_speed))


def relative_speed(ego_speed: float, ego_yaw: float, actor_speed: float, actor_yaw: float) -> float:
    """|ego velocity − actor velocity| (m/s) of two boxes moving along their headings (rad)."""
    dx = ego_speed * math.cos(ego_yaw) - actor_speed * math.cos(actor_yaw)
    dy = ego_speed * math.sin(ego_yaw) - actor_speed * math.sin(actor_yaw)
    return float(math.hypot(dx, dy))


@dataclass(frozen=True)
class Impact:
    """The first collision of an episode: step, time (s), the other actor (id, class), the impact
    speed (m/s, relative) and both speeds (m/s)."""

    step: int
    t_s: float
    actor: str
    cls: str
    speed_ms: float
    ego_speed_ms: float
    actor_speed_ms: float


def first_impact(rec: Any) -> Impact | None:
    """The first collision of an :class:`sim.metrics.EpisodeRecord` (None without one), found by
    the ``any_collision`` metric; an episode the engine ended with ``termination: collision`` whose
    boxes the metric sees apart (a touch within rounding) takes the last step and the nearest actor."""
    from sim.metrics import METRICS

    events = METRICS.get("any_collision").fn(rec).details.get("events") or []
    if events:
        ev = min(events, key=lambda e: (e["step"], e["actor"]))
        t, j = int(ev["step"]), rec.actor_ids.index(ev["actor"])
    elif rec.meta.get("termination") == "collision" and len(rec.actor_ids):
        t = rec.n_steps - 1
        d = np.hypot(*(rec.actor_xy[t] - rec.ego_xy[t]).T)
        d = np.where(rec.actor_valid[t], d, np.inf)
        j = int(np.argmin(d))
    else:
        return None
    ve, va = float(rec.ego_speed[t]), float(rec.actor_speed[t, j])
    return Impact(
        step=t,
        t_s=float(rec.t_s[t]),
        actor=str(rec.actor_ids[j]),
        cls=str(rec.actor_cls[j]),
        speed_ms=relative_speed(ve, float(rec.ego_yaw[t]), va, float(rec.actor_yaw[t, j])),
        ego_speed_ms=ve,
        actor_speed_ms=va,
    )


def episode_record(run: str | os.PathLike[str], episode_id: str) -> Any:
    """The :class:`sim.metrics.EpisodeRecord` of a finished episode of a batch run folder, rebuilt
    from its ``trajectory.parquet`` and ``metrics.json`` (lane map from the scene it names).
    :class:`ResultsError` naming the folder when they are missing or malformed."""
    import polars as pl

    from sim.batch import read_episode, scene_lane_map
    from sim.metrics import EpisodeRecord

    folder = Path(run) / "episodes" / episode_id
    try:
        det = read_episode(Path(run), episode_id)
        t = pl.read_parquet(folder / "trajectory.parquet").sort("step", maintain_order=True)
    except Exception as exc:  # polars and json raise their own error types
        raise ResultsError(f"expected a finished episode (metrics.json + trajectory.parquet): {type(exc).__name__}: {exc}",
                           file=folder) from None  # fmt: skip
    T = int(t["step"].max()) + 1 if t.height else 0
    if T < 2 or t.height % T:
        raise ResultsError(f"expected a trajectory table of whole steps, got {t.height} rows", file=folder / "trajectory.parquet")
    n = t.height // T - 1

    def col(name: str, dtype: Any = np.float64) -> Any:
        return t[name].to_numpy().astype(dtype).reshape(T, n + 1)

    ids = t["actor_id"].to_list()[: n + 1]
    cls = t["cls"].to_list()[: n + 1]
    x, y, yaw, sp, valid = col("x"), col("y"), col("yaw"), col("speed"), col("valid", bool)
    ln, wd = col("length")[0], col("width")[0]
    return EpisodeRecord(
        t_s=col("t_s")[:, 0],
        ego_xy=np.stack([x[:, 0], y[:, 0]], axis=1),
        ego_yaw=yaw[:, 0],
        ego_speed=sp[:, 0],
        ego_size=(float(ln[0]), float(wd[0])),
        actor_ids=tuple(str(i) for i in ids[1:]),
        actor_cls=tuple(str(c) for c in cls[1:]),
        actor_xy=np.stack([x[:, 1:], y[:, 1:]], axis=-1),
        actor_yaw=yaw[:, 1:],
        actor_speed=sp[:, 1:],
        actor_size=np.stack([ln[1:], wd[1:]], axis=1),
        actor_valid=valid[:, 1:],
        lane_map=scene_lane_map(det),
        route=tuple(det.get("route") or ()),
        meta={"termination": det.get("termination", "")},
    )


# ------------------------------------------------------------------------------- summary
def _mean(xs: Sequence[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def _offroad_end(row: Mapping[str, Any]) -> bool:
    """The run left the road and ended there without a collision (NeuroNCAP would score it 5)."""
    return not row["collided"] and row.get("termination") == "offroad"


def summarize(rows: Iterable[Mapping[str, Any]], types: Sequence[str]) -> dict[str, Any]:
    """Per type (in ``types`` order) and overall: permutations, errored, scored, collisions,
    ``collision_rate`` and ``score`` (means over the scored; None where nothing was scored), the
    mean impact speed of the collisions (m/s), and the off-road ends without a collision
    (``offroad_ends``, ``offroad_rate``, ``score_offroad_as_0``). ``overall`` averages the per-type means over the
    types that have one (NeuroNCAP's average) and counts everything."""
    rows = list(rows)
    per: dict[str, Any] = {}
    for k in types:
        rs = [r for r in rows if r["type"] == k]
        ok = [r for r in rs if r["status"] == "ok"]
        hits = [r for r in ok if r["collided"]]
        off = [_offroad_end(r) for r in ok]
        per[k] = {
            "permutations": len(rs),
            "errored": len(rs) - len(ok),
            "scored": len(ok),
            "collisions": len(hits),
            "collision_rate": _mean([float(bool(r["collided"])) for r in ok]),
            "score": _mean([float(r["score"]) for r in ok]),
            "mean_impact_speed_ms": _mean([float(r["impact_speed_ms"]) for r in hits]),
            "offroad_ends": sum(off),
            "offroad_rate": _mean([float(o) for o in off]),
            "score_offroad_as_0": _mean([0.0 if o else float(r["score"]) for r, o in zip(ok, off, strict=True)]),
        }
    scored = [v for v in per.values() if v["score"] is not None]
    overall = {
        "permutations": sum(v["permutations"] for v in per.values()),
        "errored": sum(v["errored"] for v in per.values()),
        "scored": sum(v["scored"] for v in per.values()),
        "collisions": sum(v["collisions"] for v in per.values()),
        "collision_rate": _mean([v["collision_rate"] for v in scored]),
        "score": _mean([v["score"] for v in scored]),
        "offroad_ends": sum(v["offroad_ends"] for v in per.values()),
        "offroad_rate": _mean([v["offroad_rate"] for v in scored]),
        "score_offroad_as_0": _mean([v["score_offroad_as_0"] for v in scored]),
    }
    return {"types": per, "overall": overall}


def dumps(obj: Any) -> str:
    """Indented strict JSON of ``obj`` (:func:`sim.fsutil.json_safe`: non-finite floats as null)."""
    return json.dumps(json_safe(obj), indent=1, sort_keys=True, allow_nan=False)
