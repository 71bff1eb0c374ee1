"""The planner interface (nuPlan's shape, with CARLA-style self-declared sensors).

A planner declares the observation kinds (and sensor rig) it needs; the environment and the
batch runner check that declaration against their own configuration at reset and pass the planner
*only* what it asked for. At every step ``plan(obs)`` returns either a :class:`Trajectory` in the
ego frame (tracked by the controller) or a :class:`Control` (acceleration, steering).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError

from sim.errors import BundleError, ScenarioError
from sim.fsutil import check_input_file
from sim.planning.params import NoParams, ParamProblem, PlannerParams, file_params, param_errors
from sim.sensors import SensorRig

__all__ = [
    "Control",
    "Observation",
    "ObservationSpec",
    "Planner",
    "PlannerInit",
    "PlannerOutput",
    "Trajectory",
    "check_observation_spec",
]

#: An observation: observation kind name -> value (see ``sim.observations``).
Observation = Mapping[str, Any]


@dataclass(frozen=True)
class ObservationSpec:
    """What a planner needs.

    Attributes:
        kinds: observation kinds (``state``, ``bev``, ``camera``, ``lidar``, ...).
        cameras: camera names it needs when ``camera`` is among the kinds.
        lidar: True when it needs the LiDAR (implied by ``lidar`` in kinds).
    """

    kinds: tuple[str, ...] = ("state",)
    cameras: tuple[str, ...] = ()

    @property
    def lidar(self) -> bool:
        return "lidar" in self.kinds


@dataclass(frozen=True)
class PlannerInit:
    """What a planner is told once per episode.

    Attributes:
        lane_map: the map (``sim.map.LaneMap``).
        route: the ego's lane route (lane ids).
        dt_s: simulation step, seconds.
        horizon_s: episode length, seconds.
        ego_size: (length, width, height) of the ego, metres.
        rig: the sensor rig of the episode.
        expert: the logged ego trajectory as (T, 5) columns t_s, x, y, yaw, speed (world frame) --
            only given to planners with ``requires_scenario = True``.
        scenario: the full scenario spec -- only given to planners with ``requires_scenario``.
    """

    lane_map: Any
    route: tuple[str, ...]
    dt_s: float
    horizon_s: float
    ego_size: tuple[float, float, float] = (4.6, 1.9, 1.6)
    rig: SensorRig | None = None
    expert: NDArray[np.float64] | None = None
    scenario: Any = None


@dataclass(frozen=True)
class Trajectory:
    """A planned trajectory in the **ego frame** at plan time (x forward, y left, metres).

    Attributes:
        t_s: (K,) seconds after now, strictly increasing, all > 0.
        xy: (K, 2) positions.
        speed: optional (K,) target speeds in m/s.
    """

    t_s: NDArray[np.float64]
    xy: NDArray[np.float64]
    speed: NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        t = np.asarray(self.t_s, dtype=np.float64)
        xy = np.asarray(self.xy, dtype=np.float64)
        if t.ndim != 1 or xy.shape != (len(t), 2) or len(t) == 0:
            raise ValueError(f"Trajectory needs t_s (K,) and xy (K, 2); got {t.shape} and {xy.shape}")
        object.__setattr__(self, "t_s", t)
        object.__setattr__(self, "xy", xy)
        if self.speed is not None:
            object.__setattr__(self, "speed", np.asarray(self.speed, dtype=np.float64))

    def is_finite(self) -> bool:
        ok = bool(np.all(np.isfinite(self.t_s)) and np.all(np.isfinite(self.xy)))
        return ok and (self.speed is None or bool(np.all(np.isfinite(self.speed))))


@dataclass(frozen=True)
class Control:
    """Direct bicycle-model controls: longitudinal acceleration (m/s^2) and front-wheel steering
    angle (rad, positive = left)."""

    accel: float
    steer: float

    def is_finite(self) -> bool:
        return bool(np.isfinite(self.accel) and np.isfinite(self.steer))


PlannerOutput = Trajectory | Control


class Planner(ABC):
    """A planning stack under test. Subclasses set ``name`` and register through the
    ``loopdrive.planners`` entry-point group (:data:`sim.planning.PLANNERS`).

    Parameters: a subclass declares them as ``Params`` (a :class:`PlannerParams` model; default
    :class:`NoParams`). The constructor validates its keyword arguments against it and keeps the
    result in ``self.config`` (``self.params`` keeps the raw dict). ``code_params`` names keyword
    arguments only code can give (in-memory objects such as a loaded network, command-line
    opt-ins): they bypass ``Params`` when given by code and are refused in a scenario file.
    ``loopdrive validate`` and :mod:`sim.scenario` check a file's ``planner.params`` with
    :meth:`param_problems` before anything runs.
    """

    name: ClassVar[str]
    #: Oracle planners that need the scenario / logged expert say so (they get ``PlannerInit.expert``).
    requires_scenario: ClassVar[bool] = False
    #: The declared parameters (a pydantic model with ``extra="forbid"``).
    Params: ClassVar[type[PlannerParams]] = NoParams
    #: Keyword arguments only code may pass (never read from a scenario file).
    code_params: ClassVar[frozenset[str]] = frozenset()
    #: Parameters that name a file the planner reads (a model's weights): a run checks each one
    #: given with :meth:`check_input_files` before any episode starts.
    input_files: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **params: Any) -> None:
        self.params = dict(params)
        self.config = type(self).parse_params(params)

    @classmethod
    def param_problems(cls, params: Mapping[str, Any], *, from_file: bool = True) -> list[ParamProblem]:
        """Problems of ``params`` against :attr:`Params` as (path under ``planner.params``,
        message) pairs, empty when valid. ``from_file``: the params come from a scenario file, so
        :attr:`code_params` are refused too."""
        if not isinstance(params, Mapping):
            return [((), f"expected a mapping of parameter names to values, got {type(params).__name__}")]
        out: list[ParamProblem] = []
        for k in params:
            if k in cls.code_params and from_file:
                out.append(((str(k),), f"planner {cls.name!r} takes {k!r} only from code or the command line, not from a file"))
        try:
            cls.Params.model_validate(file_params(params, cls.code_params))
        except ValidationError as exc:
            out.extend(param_errors(cls.name, cls.Params, exc))
        return out

    @classmethod
    def parse_params(cls, params: Mapping[str, Any]) -> PlannerParams:
        """``params`` (given by code: :attr:`code_params` allowed) as a validated :attr:`Params`;
        the first problem raises :class:`ScenarioError` with field ``planner.params.<key>``."""
        problems = cls.param_problems(params, from_file=False)
        if problems:
            loc, msg = problems[0]
            raise ScenarioError(msg, field=".".join(["planner.params", *map(str, loc)]))
        return cls.Params.model_validate(file_params(params, cls.code_params))

    @classmethod
    def check_input_files(cls, params: Mapping[str, Any]) -> None:
        """Each of :attr:`input_files` given in ``params`` (a path, relative to the working
        folder as the planner reads it) is an existing regular file -- not a folder, device or
        FIFO -- or :class:`BundleError` names it and ``planner.params.<key>``. Nothing is read."""
        for key in sorted(cls.input_files):
            value = params.get(key)
            if isinstance(value, str | os.PathLike) and os.fspath(value):
                check_input_file(value, error=BundleError, max_bytes=None, what=f"an input file of planner {cls.name!r}",
                                 field=f"planner.params.{key}")

    @classmethod
    def with_opt_ins(cls, params: Mapping[str, Any], *, trust_pickle: bool = False) -> dict[str, Any] | None:
        """``params`` with the command line's opt-ins added (``--trust-pickle``), checked now, so
        a run refuses unusable parameters or files before it writes anything; None (the default)
        when this planner takes no opt-in and its parameters pass through unchanged."""
        return None

    @abstractmethod
    def observation_spec(self) -> ObservationSpec:
        """The observation kinds (and cameras) this planner needs."""

    @abstractmethod
    def reset(self, init: PlannerInit, *, seed: int | None = None) -> None:
        """Start a new episode."""

    @abstractmethod
    def plan(self, obs: Observation) -> PlannerOutput:
        """One planning step: the observation dict (only the kinds asked for) -> a trajectory or a control."""


def check_observation_spec(
    spec: ObservationSpec, kinds: Sequence[str], cameras: Sequence[str] = (), *, planner: str = "planner"
) -> None:
    """Raise :class:`ScenarioError` naming exactly what the configuration lacks for ``spec``."""
    missing = [k for k in spec.kinds if k not in kinds]
    problems = []
    if missing:
        problems.append(f"observation kind(s) {missing} (configured: {list(kinds)})")
    if "camera" in spec.kinds:
        miss_cam = [c for c in spec.cameras if c not in cameras]
        if miss_cam:
            problems.append(f"camera(s) {miss_cam} (rig has: {list(cameras)})")
    if problems:
        raise ScenarioError(f"planner {planner!r} needs " + " and ".join(problems), field="observation")
