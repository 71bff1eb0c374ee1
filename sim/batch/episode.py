"""One batch episode: its results row, metrics details, trajectory parquet and video
(:func:`run_episode`), whatever goes wrong inside it."""

from __future__ import annotations

import io
import json
import logging
import math
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.batch.driving import _params_for, rollout
from sim.errors import LoopdriveError
from sim.metrics import METRICS, EpisodeRecord, compute_metrics
from sim.scenario import Episode, to_builtin

log = logging.getLogger(__name__)

#: a rollout function ``(episode, planner, params) -> EpisodeRecord``
RolloutFn = Callable[[Episode, str, Mapping[str, Any]], EpisodeRecord]


# ------------------------------------------------------------------------------- one episode
@dataclass(frozen=True)
class EpisodeOutcome:
    """What one episode produced: the results row, the metrics.json content, the trajectory as
    parquet bytes, and the video as mp4 bytes (when asked)."""

    row: dict[str, Any]
    details: dict[str, Any]
    trajectory: bytes | None = None
    video: bytes | None = None


def _base_row(ep: Episode, planner: str) -> dict[str, Any]:
    row: dict[str, Any] = {
        "episode_id": ep.episode_id,
        "scenario": ep.scenario,
        "file": ep.file or "",
        "seed": int(ep.seed),
        "sweep": json.dumps(to_builtin(dict(ep.sweep)), sort_keys=True),
        "planner": planner,
    }
    for k, v in ep.sweep.items():
        row[f"sweep.{k}"] = v
    for name in METRICS.names():
        row[name] = math.nan
        row[f"{name}_score"] = math.nan
    row.update({"score": math.nan, "status": "error", "error": "", "steps": 0, "sim_time_s": 0.0})
    return row


def run_episode(
    ep: Episode,
    planner: str | None = None,
    planner_params: Mapping[str, Any] | None = None,
    *,
    video: bool = False,
    rollout_fn: RolloutFn | None = None,
) -> EpisodeOutcome:
    """Run, score and serialise one episode. Never raises for a failing episode: the exception
    becomes ``status = "error"`` with its one-line message (the traceback is in the details)."""
    name = planner or ep.planner
    params = _params_for(ep, planner, planner_params)
    row = _base_row(ep, name)
    details: dict[str, Any] = {
        "scene": to_builtin(
            {"log": ep.spec.scene.log, "town": ep.spec.scene.town, "seed": ep.spec.scene.seed}
        ),
        "planner_params": to_builtin(params),
        "description": ep.description,
    }
    t0 = time.perf_counter()
    traj = vid = None
    try:
        rec = (rollout_fn or rollout)(ep, name, params)
        values, score = compute_metrics(rec, ep.metrics or None)
        for m, v in values.items():
            row[m] = float(v.value)
            row[f"{m}_score"] = float(v.score)
        row.update(
            {"score": float(score), "status": "ok", "steps": rec.n_steps, "sim_time_s": rec.duration_s}
        )
        details["metrics"] = {
            m: {
                "value": float(v.value),
                "score": float(v.score),
                "unit": METRICS.get(m).unit,
                "kind": METRICS.get(m).kind,
                "details": to_builtin(v.details),
            }
            for m, v in values.items()
        }
        details["route"] = list(rec.route)
        details["ego_size"] = list(rec.ego_size)
        details.update({k: to_builtin(v) for k, v in rec.meta.items()})
        traj = trajectory_table(rec)
        if video:
            from sim.report import render_video

            vid = render_video(rec)
    except Exception as exc:
        msg = exc.one_line() if isinstance(exc, LoopdriveError) else f"{type(exc).__name__}: {exc}"
        row["status"] = "error"
        row["error"] = msg.splitlines()[0] if msg else type(exc).__name__
        details["traceback"] = traceback.format_exc()
        log.debug("episode %s failed: %s", ep.episode_id, msg)
    details["wall_s"] = time.perf_counter() - t0
    return EpisodeOutcome(row=row, details=details, trajectory=traj, video=vid)


def trajectory_table(rec: EpisodeRecord) -> bytes:
    """The episode as a long-format parquet table (bytes): one row per (step, actor) with columns
    step, t_s, actor_id (``ego`` for the ego), cls, x, y, yaw (world frame, m / rad), speed (m/s),
    length, width (m), valid."""
    import polars as pl

    T, n = rec.n_steps, len(rec.actor_ids)
    steps = np.repeat(np.arange(T, dtype=np.int32), n + 1)
    ids = np.tile(np.array(("ego", *rec.actor_ids), dtype=object), T)
    cls = np.tile(np.array(("car", *rec.actor_cls), dtype=object), T)
    x = np.concatenate([rec.ego_xy[:, None, 0], rec.actor_xy[..., 0]], axis=1).reshape(-1)
    y = np.concatenate([rec.ego_xy[:, None, 1], rec.actor_xy[..., 1]], axis=1).reshape(-1)
    yaw = np.concatenate([rec.ego_yaw[:, None], rec.actor_yaw], axis=1).reshape(-1)
    sp = np.concatenate([rec.ego_speed[:, None], rec.actor_speed], axis=1).reshape(-1)
    size = np.concatenate([np.array([rec.ego_size]), rec.actor_size], axis=0)
    valid = np.concatenate([np.ones((T, 1), bool), rec.actor_valid], axis=1).reshape(-1)
    df = pl.DataFrame(
        {
            "step": steps,
            "t_s": np.repeat(rec.t_s, n + 1),
            "actor_id": pl.Series(ids.tolist(), dtype=pl.String),
            "cls": pl.Series(cls.tolist(), dtype=pl.String),
            "x": x,
            "y": y,
            "yaw": yaw,
            "speed": sp,
            "length": np.tile(size[:, 0], T),
            "width": np.tile(size[:, 1], T),
            "valid": valid,
        }
    )
    buf = io.BytesIO()
    df.write_parquet(buf, compression="zstd")
    return buf.getvalue()
