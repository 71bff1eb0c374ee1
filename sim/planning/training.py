"""Training of learned planners as an interface: the runner (the data loop) and the CLI train
and check policies through it without importing the package that implements them. Trainers
register in :data:`TRAINERS` through the ``loopdrive.trainers`` entry-point group (loopdrive's own:
``bc`` and ``ppo`` in ``agents``).

* :class:`ImitationTrainer` learns from **behaviour-cloning shards**: one ``.npz`` per episode
  (written atomically; readable with ``np.load(..., allow_pickle=False)``) holding

  - ``bev``: (T, H, W, C) uint8, the ``bev`` observation (``sim.observations.BevObservation``:
    drivable area, route, actors, ego; ego heading up);
  - ``ego``: (T, 3) float32, speed (m/s), acceleration (m/s²), steering angle (rad)
    (:func:`sim.planning.observe.ego_features`);
  - ``action``: (T, 2) float32, the expert's control: acceleration (m/s²), steering angle (rad);
  - optional ``weight``: (T,) float32 per-sample weights; anything else is ignored.

  Producers: ``sim.collect`` (expert and DAgger collections) and ``sim.export`` (the data loop's
  exports, which add more keys).
* :class:`RLTrainer` learns in the Gymnasium env :data:`ENV_ID` and re-exports policies trained
  elsewhere in its own safe format.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from sim.errors import RegistryError
from sim.fsutil import atomic_savez
from sim.registry import Registry

__all__ = [
    "ENV_ID",
    "TRAINERS",
    "ClosedLoopTrainer",
    "EpisodeRunner",
    "ImitationTrainer",
    "RLTrainer",
    "TrainResult",
    "TrainSettings",
    "Trainer",
    "TrainingSet",
    "collect_shards",
    "get_trainer",
]

#: the Gymnasium id of the closed-loop env (registered at ``import sim``)
ENV_ID = "loopdrive/ClosedLoop-v0"

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class TrainSettings:
    """What every imitation run is told: ``epochs``, ``batch_size`` (samples), ``lr`` (Adam
    learning rate) and ``seed`` (initial weights, validation split, sample order)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0


@dataclass(frozen=True)
class TrainResult:
    """Training outcome: per-epoch mean train / validation losses, the validation loss of the
    untrained network, and the files written (weights, their config, the loss-curve PNG)."""

    train_loss: list[float]
    val_loss: list[float]
    initial_val_loss: float
    weights: Path
    config: Path
    plot: Path | None


class TrainingSet(Protocol):
    """A loaded set of shards: ``len`` samples, each with its shard index (``episode``) and
    weight; ``names`` the shard file names in load order."""

    episode: NDArray[np.int64]
    weight: NDArray[np.float32]
    names: tuple[str, ...]

    def __len__(self) -> int: ...


class Trainer(ABC):
    """How one learned planner is trained. ``planner`` is the registry name of the planner that
    runs the weights it writes; ``shipped_weights`` the weights that come with the package."""

    name: ClassVar[str]
    planner: ClassVar[str]
    shipped_weights: ClassVar[Path | None] = None

    @abstractmethod
    def check_weights(self, path: PathLike) -> None:
        """Raise a :class:`~sim.errors.LoopdriveError` naming the file when ``path`` is not a
        policy this trainer's planner loads (nothing from it is executed)."""

    def planner_params(self, weights: PathLike) -> dict[str, Any]:
        """The planner parameters that run ``weights``."""
        return {"weights": str(weights)}


class ImitationTrainer(Trainer):
    """Learns a policy from behaviour-cloning shards (format in the module docstring)."""

    @abstractmethod
    def load_dataset(self, paths: Iterable[PathLike]) -> TrainingSet:
        """Shard files or folders of them (sorted by name) as one training set;
        :class:`~sim.errors.ScenarioError` when there is none or one is malformed."""

    @abstractmethod
    def train(
        self,
        dataset: Any,
        out: PathLike,
        settings: TrainSettings = TrainSettings(),
        *,
        init_weights: PathLike | None = None,
        plot: bool = True,
        progress: Callable[[int, int, float, float], None] | None = None,
    ) -> TrainResult:
        """Fit on ``dataset`` and write the weights to ``out``; ``init_weights`` fine-tunes from
        them instead of a seeded initialisation; ``progress(epoch, epochs, train_loss, val_loss)``."""


def collect_shards(
    episodes: Sequence[Any],
    out: PathLike,
    drive: Callable[[Any], dict[str, NDArray[Any]] | None],
    *,
    tag: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Resumable shard collection, one ``.npz`` per episode in ``out``: ``<tag>_<episode_id>.npz``
    (``<episode_id>.npz`` without ``tag``). A shard that exists is kept (an interrupted collection
    resumes); otherwise ``drive(episode)`` returns its arrays, written atomically and never pickled,
    or None when the episode failed (no shard; ``drive`` says why). Returns the shards that exist,
    in episode order; ``progress(done, total)`` after each episode. ``episodes``: objects with an
    ``episode_id`` (:class:`sim.scenario.Episode`)."""
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for i, ep in enumerate(episodes):
        dst = outp / (f"{tag}_{ep.episode_id}.npz" if tag else f"{ep.episode_id}.npz")
        if not dst.exists():
            arrays = drive(ep)
            if arrays is not None:
                atomic_savez(dst, arrays)
        if dst.exists():
            written.append(dst)
        if progress is not None:
            progress(i + 1, len(episodes))
    return written


class EpisodeRunner(Protocol):
    """Drives one closed-loop episode: the runner's ``sim.rollout.run_planner_episode``, handed to
    a :class:`ClosedLoopTrainer` by whoever calls it (the CLI), so that a trainer never imports the
    runner. ``spec`` a compiled scenario's spec, ``planner`` a Planner instance, ``seed`` the
    episode's seed, ``observation`` the kinds recorded, ``max_steps`` a cap (None: the scenario's
    duration), ``renderer`` the sensors (``mesh``, ``neural``, ``scenario``; None: analytic LiDAR).
    Returns an object with ``status`` (``"ok"`` on success) and ``error``."""

    def __call__(self, spec: Any, planner: Any, seed: int, *, observation: Sequence[str],
                 max_steps: int | None, renderer: str | None) -> Any: ...  # fmt: skip


class ClosedLoopTrainer(ImitationTrainer):
    """An imitation trainer that collects its own data in closed loop: expert roll-outs of
    ``scenarios`` (x ``seeds``), a fit, then ``dagger_rounds`` rounds in which its own policy drives
    (``dagger_seeds``) while the expert labels. Episodes are driven by ``run_episode``."""

    @abstractmethod
    def train_closed_loop(
        self,
        scenarios: Sequence[PathLike],
        out: PathLike,
        episodes: PathLike,
        *,
        run_episode: EpisodeRunner,
        seeds: Sequence[int] | None = None,
        dagger_rounds: int = 0,
        dagger_seeds: Sequence[int] | None = None,
        sensors: str = "scenario",
        settings: TrainSettings = TrainSettings(),
        max_steps: int | None = None,
        progress: Callable[[str, int, int, str], None] | None = None,
        command: str | None = None,
    ) -> TrainResult:
        """Collect into the shard folder ``episodes`` (kept: an interrupted run resumes), train,
        and write the weights to ``out``; ``progress(stage, done, total, info)``; ``command`` is
        recorded beside the weights as the one that reproduces them."""


class RLTrainer(Trainer):
    """Learns a policy by reinforcement in the Gymnasium env :data:`ENV_ID`."""

    @abstractmethod
    def train(
        self,
        scenario: Any,
        steps: int,
        out: PathLike,
        *,
        observation: Sequence[str] = ("state",),
        seed: int = 0,
        progress: Callable[[int, int], None] | None = None,
    ) -> Path:
        """Train for ``steps`` environment steps on ``scenario`` (a file or spec) and write the
        policy to ``out``; ``progress(done, total)``. Returns the weights path."""

    @abstractmethod
    def import_policy(self, path: PathLike, out: PathLike, *, trust_pickle: bool, **options: Any) -> Path:
        """Re-export a policy saved by the learning library at ``path`` in this trainer's safe
        format at ``out`` (reading it may need ``trust_pickle``). Returns ``out``."""


#: name -> Trainer subclass (entry-point group ``loopdrive.trainers``)
TRAINERS: Registry[type[Trainer]] = Registry("trainer", "loopdrive.trainers")

_T = TypeVar("_T", bound=Trainer)


def get_trainer(name: str, kind: type[_T]) -> _T:
    """An instance of the trainer registered as ``name``, which must be a ``kind``
    (:class:`ImitationTrainer` or :class:`RLTrainer`); :class:`RegistryError` otherwise."""
    cls = TRAINERS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, kind)):
        raise RegistryError(f"trainer {name!r} is not an {kind.__name__}")
    return cls()
