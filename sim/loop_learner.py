"""The learned planner a data loop (:mod:`sim.loop`) retrains, generic over planners: its trainer
is found through the ``loopdrive.trainers`` registry (the trainer whose ``planner`` is the loop's
planner and that offers ``loop_training()``, :class:`sim.planning.loop_training.LoopTraining`), and
everything the loop does with the planner goes through :class:`Learner`: the planner parameters of
a round's weights, the sensors its episodes are rendered with, the evaluation runs and the export
of selected episodes to the shards its trainer learns from.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import LoopdriveError, ScenarioError
from sim.planning.loop_training import LoopTraining
from sim.planning.training import ImitationTrainer

__all__ = ["Learner", "evaluate_policy", "find_learner", "loop_rollout", "loop_rollout_rendered"]


@dataclass(frozen=True)
class Learner:
    """A learned planner the loop can retrain: its registry name, its trainer (an
    :class:`ImitationTrainer`, registered as ``trainer``) and the trainer's :class:`LoopTraining`;
    ``sensors`` the sensors its episodes are rendered with (None: no rendered sensor)."""

    planner: str
    trainer: str
    impl: ImitationTrainer
    spec: LoopTraining
    sensors: str | None

    def params(self, weights: str) -> dict[str, Any]:
        """The planner parameters that run ``weights``."""
        return self.spec.planner_params(weights)

    def export(self, items: Sequence[Any], out: Path, *, expert: str, expert_params: Mapping[str, Any], kinds: Sequence[str]) -> list[Path]:
        """Shards of the export ``items`` in ``out``: the trainer's exporter with the loop's sensors,
        or the runner's behaviour-cloning export (:func:`sim.export.export_episodes`, ``kinds``)."""
        if self.spec.export is None:
            from sim.export import export_episodes

            return export_episodes(items, out, kinds=kinds, expert=expert, expert_params=dict(expert_params))
        from sim.rollout import run_planner_episode

        return self.spec.export(items, out, run_episode=run_planner_episode, expert=expert, expert_params=dict(expert_params),
                                sensors=self.sensors or "scenario")  # fmt: skip

    def collect_expert(self, files: Sequence[str], out: Path, *, expert: str, expert_params: Mapping[str, Any], seeds: Sequence[int],
                       horizon_s: float | None, max_steps: int | None) -> list[Path]:  # fmt: skip
        """Round 0's expert collection on ``files`` x ``seeds`` into ``out``: :func:`sim.collect.collect_episodes`
        (behaviour-cloning shards), or the trainer's exporter on expert-driven items."""
        if self.spec.export is None:
            from sim.collect import collect_episodes

            return collect_episodes(files, out, expert=expert, seeds=list(seeds), max_steps=max_steps)
        from sim.export import ExportItem
        from sim.scenario import expand_with_seeds

        eps = expand_with_seeds(files, list(seeds))
        items = [ExportItem(ep.with_horizon(horizon_s) if horizon_s else ep, expert, dict(expert_params), "expert", 1.0, {}, "expert") for ep in eps]
        return self.export(items, out, expert=expert, expert_params=expert_params, kinds=())


def _loop_trainers() -> dict[str, tuple[str, type[Any]]]:
    """planner -> (trainer name, class) of every registered imitation trainer with ``loop_training``."""
    from sim.planning.training import TRAINERS

    out: dict[str, tuple[str, type[Any]]] = {}
    for name in TRAINERS.names():
        try:
            cls = TRAINERS.get(name)
        except LoopdriveError:  # pragma: no cover - a broken plug-in is not the loop's
            continue
        if isinstance(cls, type) and issubclass(cls, ImitationTrainer) and callable(getattr(cls, "loop_training", None)):
            out.setdefault(str(cls.planner), (name, cls))
    return out


def find_learner(planner: str, sensors: str | None = None) -> Learner:
    """The :class:`Learner` of ``planner``; :class:`ScenarioError` (field ``planner``) when no
    registered trainer retrains it in the loop, (field ``sensors``) for sensors it does not take."""
    found = _loop_trainers()
    if planner not in found:
        known = ", ".join(sorted(found)) or "none"
        raise ScenarioError(f"no registered trainer retrains planner {planner!r} in the data loop; planners with one: {known}", field="planner")
    name, cls = found[planner]
    impl = cls()
    spec = impl.loop_training()
    if not isinstance(spec, LoopTraining):
        raise ScenarioError(f"trainer {name!r} returned {type(spec).__name__} from loop_training(), expected a LoopTraining", field="planner")
    chosen = sensors if sensors is not None else spec.sensors
    if sensors is not None and spec.sensors is None:
        raise ScenarioError(f"{planner} observes no rendered sensor: expected no sensors, got {sensors!r}", field="sensors")
    if sensors is not None and spec.sensor_choices and sensors not in spec.sensor_choices:
        raise ScenarioError(f"expected sensors among {', '.join(spec.sensor_choices)} for {planner}, got {sensors!r}", field="sensors")
    return Learner(planner, name, impl, spec, chosen)


def loop_rollout(ep: Any, planner: str, params: Mapping[str, Any]) -> Any:
    """A ``sim.batch`` rollout function that offers the planner every kind it asks for (the
    learned planner needs ``bev``, which scenario files rarely list); no rendered sensor."""
    from sim.rollout import run_planner_episode

    res = run_planner_episode(ep.spec, planner, ep.seed, params=params, raise_errors=True)
    if res.record is None:  # pragma: no cover
        raise ScenarioError("the episode ended before its second step")
    return res.record


def loop_rollout_rendered(ep: Any, planner: str, params: Mapping[str, Any]) -> Any:
    """:func:`loop_rollout` with the sensors of each episode's ``scene.renderer`` (the batch's
    ``renderer`` overrides it: a planner that drives from its LiDAR sees the rendered sweep)."""
    from sim.rollout import run_planner_episode

    res = run_planner_episode(ep.spec, planner, ep.seed, params=params, raise_errors=True, renderer="scenario")
    if res.record is None:  # pragma: no cover
        raise ScenarioError("the episode ended before its second step")
    return res.record


def _rates(run_dir: Path) -> dict[str, float]:
    from sim.adversary import FAILURES
    from sim.mining import load_run

    eps = load_run(run_dir)
    ok = [e for e in eps if e.ok]
    if not eps:
        return {"episodes": 0, "failures": 0, "failure_rate": math.nan, "score": math.nan, "errored": 0}
    fails = sum(1 for e in ok if e.details.get("termination") in FAILURES)
    return {
        "episodes": len(eps),
        "errored": len(eps) - len(ok),
        "failures": fails,
        "failure_rate": fails / len(ok) if ok else math.nan,  # over the finished episodes only
        "score": float(np.mean([float(e.row["score"]) for e in ok])) if ok else math.nan,
    }


def evaluate_policy(files: Sequence[str | os.PathLike[str]], out: Path, planner: str, params: Mapping[str, Any], horizon_s: float | None,
                    workers: int = 1, sensors: str | None = None) -> dict[str, float]:  # fmt: skip
    """Batch-run ``files`` with the planner (resumable) and return episodes, failures,
    failure_rate and mean score. ``sensors``: render each episode's LiDAR / cameras with this
    backend (``scenario``: each file's ``scene.renderer``; ``box``: the analytic box LiDAR; None:
    no renderer, as for a planner that observes no rendered sensor)."""
    from sim.batch import run_batch

    if not files:
        return {"episodes": 0, "failures": 0, "failure_rate": math.nan, "score": math.nan, "errored": 0}
    rendered = sensors is not None and sensors != "box"
    run_batch(list(files), out, planner=planner, planner_params=dict(params), resume=True, horizon_s=horizon_s,
              rollout_fn=loop_rollout_rendered if rendered else loop_rollout, workers=workers,
              renderer=sensors if rendered and sensors != "scenario" else None)  # fmt: skip
    return _rates(out)


def attack_renderer(sensors: str | None) -> str | None:
    """The ``renderer`` of :class:`sim.adversary.AttackConfig` for the loop's ``sensors``."""
    return None if sensors in (None, "box") else sensors

