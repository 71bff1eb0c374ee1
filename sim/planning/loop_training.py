"""What the data loop (``loopdrive loop``, :mod:`sim.loop`) needs to know to retrain one learned
planner, as an interface: an :class:`~sim.planning.training.ImitationTrainer` that the loop may
retrain offers ``loop_training() -> LoopTraining``. The loop finds the trainer of ``--planner``
through the ``loopdrive.trainers`` registry (the trainer's ``planner`` attribute) and never imports
the package that implements it. A trainer without ``loop_training`` cannot be retrained by the loop.

What differs between learned planners is small:

* the file name of each round's weights and the planner parameter that takes them;
* the training settings a retraining uses unless the loop is told otherwise;
* which sensors the planner's episodes are rendered with (``None``: it observes no rendered
  sensor; ``bc_policy`` reads a privileged bird's-eye raster);
* how the episodes the loop selects (mined nominal episodes, generated failures, the round-0 expert
  collection) become training shards. ``None`` is the runner's behaviour-cloning export
  (:mod:`sim.export`: ``bev``/``ego``/expert ``action``); a planner that learns from its own
  sensors gives a :class:`ShardExporter` that re-drives each episode with the sensors rendered and
  stores what the planner saw, labelled by the expert.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sim.planning.training import EpisodeRunner, TrainSettings

__all__ = ["LoopTraining", "ShardExporter"]

PathLike = str | os.PathLike[str]


class ShardExporter(Protocol):
    """Writes one training shard per item into ``out`` and returns the shards that exist (existing
    shards are kept: an interrupted export resumes). ``items``: :class:`sim.export.ExportItem`-like
    objects (``episode``, ``planner``, ``planner_params``, ``trigger``, ``weight``, ``source``); an
    item whose ``planner`` is ``expert`` is driven by the expert itself (an expert collection),
    any other by that planner while the expert labels every state it reaches (DAgger). Episodes are
    driven by ``run_episode`` with the LiDAR / cameras of ``sensors`` (``mesh``, ``neural``,
    ``scenario``, ``box``); every step gets the item's ``weight``."""

    def __call__(self, items: Sequence[Any], out: PathLike, *, run_episode: EpisodeRunner, expert: str,
                 expert_params: Mapping[str, Any], sensors: str,
                 progress: Callable[[int, int], None] | None = None) -> list[Path]: ...  # fmt: skip


@dataclass(frozen=True)
class LoopTraining:
    """How the data loop retrains a learned planner (module docstring).

    Attributes:
        weights_name: file name of each round's weights (``round_<k>/<weights_name>``; the config
            JSON is written beside it with the ``.json`` suffix).
        weights_param: the planner parameter that takes a weights path.
        settings: training settings (epochs, batch size, Adam learning rate) of a retraining when
            the loop is given none.
        sensors: the sensors the planner's episodes are rendered with when the loop is given none
            (``mesh``, ``neural``, ``scenario`` = each file's ``scene.renderer``); None: the planner
            observes no rendered sensor (its episodes run without a renderer).
        sensor_choices: the values the loop accepts for ``sensors`` (empty: any backend name).
        experts: the experts whose labels the shards can carry (None: any registered planner).
        export: how selected episodes become shards (None: :func:`sim.export.export_episodes`,
            behaviour-cloning shards of ``bev``/``state``; the round-0 expert collection is then
            :func:`sim.collect.collect_episodes`).
    """

    weights_name: str
    weights_param: str = "weights"
    settings: TrainSettings = field(default_factory=TrainSettings)
    sensors: str | None = None
    sensor_choices: tuple[str, ...] = ()
    experts: tuple[str, ...] | None = None
    export: ShardExporter | None = None

    def planner_params(self, weights: PathLike) -> dict[str, Any]:
        """The planner parameters that run ``weights``."""
        return {self.weights_param: str(weights)}
