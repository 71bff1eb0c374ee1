"""In-code scenario specification: the frozen dataclasses the engine consumes.

``sim.scenario`` (pydantic, the YAML boundary) validates user files and converts them to these;
notebooks and RL scripts may build them directly. Units: metres, seconds, m/s, radians.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = [
    "BehaviorSpec",
    "EgoSpec",
    "InsertOp",
    "RemoveOp",
    "RerouteOp",
    "ScenarioSpec",
    "SceneSpec",
    "SpawnSpec",
]


def _frozen(d: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class SceneSpec:
    """Where the world comes from: a drive log folder, or (``log`` None) a synthetic town made
    in memory from ``town`` preset and ``seed``. ``bundle`` is a reconstructed scene for the
    ``neural``/``composite`` renderers; ``renderer`` names the sensor backend."""

    log: Path | None = None
    town: str = "tiny"
    seed: int = 0
    bundle: Path | None = None
    renderer: str = "mesh"
    #: background mode of the neural/composite renderers: ``auto``, ``surface`` (baked iso-surface)
    #: or ``volume`` (see :class:`sim.render.neural.NeuralRenderer`)
    neural_mode: str = "auto"
    #: actor-library folder (``sim.actor_library``) whose reconstructed actors render inserted
    #: actors in the ``neural`` backend (None: ``$LOOPDRIVE_ACTORS`` or ``./actors``)
    actor_library: Path | None = None
    #: sensor rig of rendered observations: ``default`` (:func:`sim.sensors.default_rig`) or ``log``
    #: (the drive log's rig, every sensor rendered at every step; see ``sim.batch.scenario_rig``)
    rig: str = "default"


@dataclass(frozen=True)
class BehaviorSpec:
    """An actor policy by registry name with its parameters (SI units), and an optional lane route."""

    type: str = "log_replay"
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    route: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _frozen(self.params))


@dataclass(frozen=True)
class SpawnSpec:
    """Where an inserted actor starts: on ``lane`` at arc length ``s`` (m), or at ``pose``
    (x, y, yaw) in the world frame; with ``speed`` (m/s)."""

    lane: str | None = None
    s: float = 0.0
    pose: tuple[float, float, float] | None = None
    speed: float = 0.0
    lateral_offset: float = 0.0


@dataclass(frozen=True)
class InsertOp:
    """Add an actor. ``size`` is (length, width, height) in metres; it appears at ``t_s``;
    ``asset`` names the library actor whose reconstruction renders it (neural backend)."""

    id: str
    cls: str
    size: tuple[float, float, float]
    spawn: SpawnSpec
    behavior: BehaviorSpec = field(default_factory=lambda: BehaviorSpec(type="idm"))
    t_s: float = 0.0
    #: actor-library key ``source/id`` of the reconstructed actor that renders this one in the
    #: ``neural`` backend (None: the library actor of the class nearest in size); mesh-based
    #: backends draw the class model at ``size`` either way
    asset: str | None = None


@dataclass(frozen=True)
class RemoveOp:
    """Delete a logged actor from the episode."""

    id: str


@dataclass(frozen=True)
class RerouteOp:
    """Give an existing actor a new lane route and/or a new behaviour."""

    id: str
    route: tuple[str, ...] | None = None
    behavior: BehaviorSpec | None = None


ActorOp = InsertOp | RemoveOp | RerouteOp


@dataclass(frozen=True)
class EgoSpec:
    """The ego's start (time into the log, optional pose/speed override) and lane route
    (None = the lanes the logged ego drove)."""

    start_t_s: float = 0.0
    route: tuple[str, ...] | None = None
    start_pose: tuple[float, float, float] | None = None
    start_speed: float | None = None


@dataclass(frozen=True)
class ScenarioSpec:
    """A complete episode definition.

    Attributes:
        name: scenario name (file stem for YAML files).
        scene: world source and sensor backend.
        ego: ego start and route.
        actors: edits applied to the logged actors, in order.
        logged_behavior: policy of logged actors that no op touches (default: replay the log).
        horizon_s: episode length in seconds; ``dt_s`` the simulation step.
        max_actors: actor slots in observations/arrays (padding with ``valid`` False).
    """

    name: str = "scenario"
    scene: SceneSpec = field(default_factory=SceneSpec)
    ego: EgoSpec = field(default_factory=EgoSpec)
    actors: tuple[ActorOp, ...] = ()
    logged_behavior: BehaviorSpec = field(default_factory=BehaviorSpec)
    horizon_s: float = 10.0
    dt_s: float = 0.1
    max_actors: int = 32
