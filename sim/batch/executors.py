"""Where episodes run: in-process or a process pool (:mod:`sim.workers`), or Ray
(:mod:`sim.ray_executor`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sim.batch.episode import EpisodeOutcome, RolloutFn, run_episode
from sim.scenario import Episode

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- executors
def _iter_local(
    tasks: Sequence[Episode],
    planner: str | None,
    params: Mapping[str, Any] | None,
    video: bool,
    workers: int,
    rollout_fn: RolloutFn | None = None,
) -> Iterator[EpisodeOutcome]:
    """In-process for one worker; else a process pool whose workers die with this process
    (:func:`sim.workers.iter_process_pool`)."""
    if workers <= 1:
        for ep in tasks:
            yield run_episode(ep, planner, params, video=video, rollout_fn=rollout_fn)
        return
    from sim.workers import iter_process_pool

    yield from iter_process_pool(
        run_episode, tasks, workers, args=(planner, params), kwargs={"video": video, "rollout_fn": rollout_fn}
    )


def _iter_ray(
    tasks: Sequence[Episode],
    planner: str | None,
    params: Mapping[str, Any] | None,
    video: bool,
    workers: int,
    address: str | None,
    rollout_fn: RolloutFn | None = None,
) -> Iterator[EpisodeOutcome]:
    """Ray tasks on a local instance started for the run or the cluster at ``address``
    (:func:`sim.ray_executor.iter_ray`)."""
    from sim.ray_executor import iter_ray

    yield from iter_ray(
        run_episode,
        tasks,
        workers,
        address,
        args=(planner, params),
        kwargs={"video": video, "rollout_fn": rollout_fn},
    )
