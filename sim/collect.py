"""Behaviour-cloning data from closed-loop episodes: expert collections and DAgger rounds, written
as shards in the format of :mod:`sim.planning.training` (``bev``, ``ego``, ``action``; one
``.npz`` per episode, written atomically) for an :class:`~sim.planning.training.ImitationTrainer`.

Both drive episodes through :func:`sim.rollout.run_planner_episode` with planners found by name in
the registry; existing shards are kept, so an interrupted collection resumes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sim.dynamics import BicycleState, KinematicBicycle
from sim.planning import make_planner
from sim.planning.observe import ego_features
from sim.planning.training import ImitationTrainer, collect_shards, get_trainer
from sim.rollout import run_planner_episode

__all__ = ["collect_dagger", "collect_episodes"]

log = logging.getLogger(__name__)


def _episodes(paths: Sequence[str | os.PathLike[str]], seeds: Sequence[int] | None) -> list[Any]:
    """:func:`sim.scenario.expand_with_seeds`."""
    from sim.scenario import expand_with_seeds

    return expand_with_seeds(paths, seeds)


def collect_episodes(
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    expert: str = "pdm_closed",
    seeds: Sequence[int] | None = None,
    max_steps: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Drive every episode of the scenario files under ``paths`` with ``expert`` and write one
    shard per episode into ``out`` (``<episode_id>.npz``; existing shards are kept, so an interrupted
    collection resumes). ``seeds`` overrides the scenarios' seeds. Failed episodes are skipped."""

    def drive(ep: Any) -> dict[str, NDArray[Any]] | None:
        res = run_planner_episode(
            ep.spec, expert, ep.seed, params=ep.planner_params if ep.planner == expert else None,
            observation=(*ep.observation, "bev"), record_observations=True, max_steps=max_steps,
            extra_kinds=("bev",),
        )  # fmt: skip
        if res.status != "ok" or not res.observations:
            log.warning("expert episode %s failed (%s); skipped", ep.episode_id, res.error)
            return None
        bev = np.stack([o["bev"] for o in res.observations]).astype(np.uint8)
        ego = np.stack([ego_features(o["ego"]) for o in res.observations])
        return {"bev": bev, "ego": ego, "action": res.actions[: len(bev)].astype(np.float32)}

    return collect_shards(_episodes(paths, seeds), out, drive, progress=progress)


def collect_dagger(
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    weights: str | os.PathLike[str],
    *,
    expert: str = "pdm_closed",
    seeds: Sequence[int] | None = None,
    tag: str = "dagger",
    max_steps: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    trainer: str = "bc",
) -> list[Path]:
    """One DAgger round (Ross et al., 2011): drive every episode under ``paths`` with the learned
    policy ``weights`` (the planner of the imitation ``trainer``) while ``expert`` is asked, on the
    very states the policy visits, what it would do; write one shard per episode
    (``<tag>_<episode_id>.npz``, existing ones kept) whose ``action`` is the **expert's** control.
    Episodes that end in a collision are kept (they are where the labels matter most); episodes
    that fail to run are skipped.

    The label is the expert's command passed through the ego's actuation limits from the visited
    state (:meth:`sim.dynamics.KinematicBicycle.clip_action`: jerk and steer-rate bounds), i.e. the
    control the engine would have *applied* -- the same kind of label :func:`collect_episodes`
    records, so expert and DAgger shards agree."""
    tr = get_trainer(trainer, ImitationTrainer)
    tr.check_weights(weights)  # a bad weights file fails before anything is written

    def drive(ep: Any) -> dict[str, NDArray[Any]] | None:
        res = run_planner_episode(
            ep.spec, make_planner(tr.planner, **tr.planner_params(weights)), ep.seed,
            observation=(*ep.observation, "bev"), record_observations=True, expert=make_planner(expert),
            max_steps=max_steps,
        )  # fmt: skip
        obs = [o for o in res.observations if "expert_action" in o]
        if res.status != "ok" or not obs:
            log.warning("DAgger episode %s failed (%s); skipped", ep.episode_id, res.error)
            return None
        ego = np.stack([ego_features(o["ego"]) for o in obs])
        bike = KinematicBicycle()  # the engine's ego limits (only its wheelbase differs)
        now = BicycleState.from_arrays(np.zeros(len(ego)), np.zeros(len(ego)), np.zeros(len(ego)), ego[:, 0], ego[:, 1], ego[:, 2])
        cmd = np.stack([np.asarray(o["expert_action"], np.float64) for o in obs])
        return {"bev": np.stack([o["bev"] for o in obs]).astype(np.uint8), "ego": ego,
                "action": bike.clip_action(now, cmd, ep.spec.dt_s).astype(np.float32)}  # fmt: skip

    return collect_shards(_episodes(paths, seeds), out, drive, tag=tag, progress=progress)
