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
from typing import Annotated, Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from sim.errors import ScenarioError
from sim.registry import Registry
from sim.sensors import SensorRig

__all__ = [
    "PLANNERS",
    "Bool",
    "Control",
    "Float",
    "Int",
    "NoParams",
    "Observation",
    "ObservationSpec",
    "Planner",
    "PlannerInit",
    "PlannerOutput",
    "PlannerParams",
    "Trajectory",
    "check_observation_spec",
    "make_planner",
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


def _plain_number(v: Any) -> Any:
    """numpy scalars as Python numbers; ``True`` is not a number (strict fields refuse it)."""
    return v.item() if isinstance(v, np.generic) else v


#: a finite float parameter (ints accepted; bools and strings refused)
Float = Annotated[float, BeforeValidator(_plain_number), Field(strict=True, allow_inf_nan=False)]
#: an integer parameter (bools, floats and strings refused)
Int = Annotated[int, BeforeValidator(_plain_number), Field(strict=True)]
#: a boolean parameter (``1`` or ``"yes"`` refused)
Bool = Annotated[bool, BeforeValidator(_plain_number), Field(strict=True)]


class PlannerParams(BaseModel):
    """Base of a planner's declared parameters (``Planner.Params``): unknown keys are errors,
    numbers are finite, nothing is coerced from another type (``true`` is not 1). Fields carry
    their defaults and units; :meth:`Planner.param_problems` reports against this schema."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class NoParams(PlannerParams):
    """The parameters of a planner that takes none."""


class Planner(ABC):
    """A planning stack under test. Subclasses set ``name`` and register in :data:`PLANNERS`.

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

    def __init__(self, **params: Any) -> None:
        self.params = dict(params)
        self.config = type(self).parse_params(params)

    @classmethod
    def param_problems(
        cls, params: Mapping[str, Any], *, from_file: bool = True
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """Problems of ``params`` against :attr:`Params` as (path under ``planner.params``,
        message) pairs, empty when valid. ``from_file``: the params come from a scenario file, so
        :attr:`code_params` are refused too."""
        if not isinstance(params, Mapping):
            return [((), f"expected a mapping of parameter names to values, got {type(params).__name__}")]
        out: list[tuple[tuple[str | int, ...], str]] = []
        for k in params:
            if k in cls.code_params and from_file:
                out.append(
                    (
                        (str(k),),
                        f"planner {cls.name!r} takes {k!r} only from code or the command line, not from a file",
                    )
                )
        try:
            cls.Params.model_validate(_file_params(cls, params))
        except ValidationError as exc:
            out.extend(_param_errors(cls, exc))
        return out

    @classmethod
    def parse_params(cls, params: Mapping[str, Any]) -> PlannerParams:
        """``params`` (given by code: :attr:`code_params` allowed) as a validated :attr:`Params`;
        the first problem raises :class:`ScenarioError` with field ``planner.params.<key>``."""
        problems = cls.param_problems(params, from_file=False)
        if problems:
            loc, msg = problems[0]
            raise ScenarioError(msg, field=".".join(["planner.params", *map(str, loc)]))
        return cls.Params.model_validate(_file_params(cls, params))

    @abstractmethod
    def observation_spec(self) -> ObservationSpec:
        """The observation kinds (and cameras) this planner needs."""

    @abstractmethod
    def reset(self, init: PlannerInit, *, seed: int | None = None) -> None:
        """Start a new episode."""

    @abstractmethod
    def plan(self, obs: Observation) -> PlannerOutput:
        """One planning step: the observation dict (only the kinds asked for) -> a trajectory or a control."""


def _file_params(cls: type[Planner], params: Mapping[str, Any]) -> dict[str, Any]:
    """The params :attr:`Planner.Params` describes (code-only ones dropped, paths as str)."""
    return {
        k: os.fspath(v) if isinstance(v, os.PathLike) else v
        for k, v in params.items()
        if k not in cls.code_params
    }


def _param_errors(cls: type[Planner], exc: ValidationError) -> list[tuple[tuple[str | int, ...], str]]:
    out: list[tuple[tuple[str | int, ...], str]] = []
    for e in exc.errors(include_url=False):
        loc = tuple(e["loc"])
        got = repr(e.get("input"))
        got = got if len(got) <= 60 else got[:57] + "..."
        if e["type"] == "extra_forbidden":
            known = sorted(cls.Params.model_fields)
            msg = f"unknown parameter of planner {cls.name!r}; " + (
                f"known: {', '.join(known)}" if known else "it takes no parameters"
            )
        elif e["type"] == "missing":
            msg = "required parameter is missing"
        elif str(e["msg"]).startswith(("Input should be ", "Value error, ")):
            text = str(e["msg"]).removeprefix("Value error, ").removeprefix("Input should be ")
            msg = f"expected {text}, got {got}"
        else:
            text = str(e["msg"])
            msg = f"{text[:1].lower() + text[1:]} (got {got})"
        out.append((loc, msg))
    return out


#: name -> Planner subclass; third parties add planners through the ``loopdrive.planners``
#: entry-point group.
PLANNERS: Registry[type[Planner]] = Registry("planner", "loopdrive.planners")


def make_planner(name: str, **params: Any) -> Planner:
    """Construct a registered planner by name (``RegistryError`` lists the known ones)."""
    import agents.planners  # noqa: F401  (registers the reference planners)

    return PLANNERS.get(name)(**params)


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
