"""The pydantic schema of the scenario YAML (``version: 1``) and its JSON Schema."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from sim.scenario_limits import (
    LIMITS,
    Coord,
    Distance,
    Name,
    Offset,
    Seed,
    Size,
    Slots,
    Speed,
    Step,
    Time,
    Version,
    Yaw,
)

log = logging.getLogger(__name__)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: Upper bound on YAML nodes, while parsing and after alias expansion ("billion laughs" files).
_MAX_NODES = LIMITS.max_yaml_nodes
#: Default size (l, w, h) of an inserted actor per class when ``size`` is omitted, metres.
DEFAULT_SIZES: dict[str, tuple[float, float, float]] = {
    "car": (4.6, 1.9, 1.5),
    "truck": (8.0, 2.5, 3.2),
    "bus": (11.0, 2.6, 3.2),
    "cyclist": (1.8, 0.7, 1.7),
    "motorcycle": (2.2, 0.8, 1.5),
    "pedestrian": (0.6, 0.6, 1.75),
    "other": (2.0, 1.0, 1.0),
}
EGO_SIZE: tuple[float, float, float] = (4.6, 1.9, 1.6)


# ------------------------------------------------------------------------------------ the schema
def _id_str(v: Any) -> Any:
    """Accept ``id: 172`` as the string ``"172"`` (logged ids are strings)."""
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return v


ActorId = Annotated[str, BeforeValidator(_id_str), Field(min_length=1, description="actor id (string)")]
LaneId = Annotated[
    str, BeforeValidator(_id_str), Field(min_length=1, description="lane id from the scene's map")
]
Route = Annotated[list[LaneId], Field(min_length=1, max_length=LIMITS.max_route_lanes)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)


class SceneModel(_Model):
    """Where the world comes from: a drive log (and optional scene bundle), or a synthetic town."""

    log: str | None = Field(
        None, description="drive-log folder (relative to the scenario file, or the working directory)"
    )
    bundle: str | None = Field(
        None, description="reconstructed scene bundle for the neural/composite renderers"
    )
    town: str = Field("tiny", description="synthetic town preset used when no log is given")
    seed: Seed = Field(0, description="synthetic town seed used when no log is given")
    renderer: Literal["mesh", "neural", "composite"] = Field("mesh", description="sensor backend")
    neural_mode: Literal["auto", "surface", "volume"] = Field(
        "auto",
        description="how the neural/composite renderers draw the static background: `surface` (the bundle's baked "
        "iso-surface, colours from the field; fast), `volume` (full volume rendering; the reference) or `auto` "
        "(surface when its calibration agrees with volume rendering, else volume)",
    )
    actor_library: str | None = Field(
        None,
        description="actor-library folder for inserted actors' `asset` (relative to the scenario file; "
        "default $LOOPDRIVE_ACTORS or ./actors)",
    )
    rig: Literal["default", "log"] = Field(
        "default",
        description="sensor rig of rendered observations: `default` (one front camera 320x192 and a 32x1024 "
        "LiDAR) or `log` (the drive log's own rig: every camera at its intrinsics and size, and its LiDAR, all "
        "rendered at every step whatever the planner reads; needs scene.log)",
    )


class StartModel(_Model):
    """Ego start: time into the log, and optionally a lane + arc length or a pose, and a speed."""

    t_s: Time = Field(0.0, description="start time into the log, s")
    lane: LaneId | None = Field(None, description="start on this lane ...")
    s: Distance = Field(0.0, description="... at this arc length, m")
    pose: tuple[Coord, Coord, Yaw] | None = Field(
        None, description="start pose x, y (m), yaw (rad), world frame"
    )
    speed: Speed | None = Field(None, description="start speed, m/s (default: logged speed)")

    @model_validator(mode="after")
    def _one_start(self) -> StartModel:
        if self.lane is not None and self.pose is not None:
            raise ValueError("give either lane (+ s) or pose, not both")
        return self


class EgoModel(_Model):
    start: StartModel = Field(default_factory=StartModel)
    route: Route | None = Field(None, description="lane ids; default: the lanes the logged ego drove")


class BehaviorModel(BaseModel):
    """An actor policy by registry name; every other key is a parameter of that behaviour (SI units),
    e.g. ``{type: idm, v0: 14.0, T: 1.5}``."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    type: str = Field(description="behaviour name (log_replay, idm, mobil, constant_velocity, ...)")
    route: Route | None = Field(None, description="lane route the behaviour follows")

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SpawnModel(_Model):
    """Where an inserted actor appears: on ``lane`` at arc length ``s``, or at ``pose``."""

    lane: LaneId | None = None
    s: Distance = Field(0.0, description="arc length along the lane, m")
    lateral_offset: Offset = Field(0.0, description="offset left of the centreline, m")
    pose: tuple[Coord, Coord, Yaw] | None = Field(None, description="x, y (m), yaw (rad), world frame")
    speed: Speed = Field(0.0, description="initial speed, m/s")

    @model_validator(mode="after")
    def _one_place(self) -> SpawnModel:
        if (self.lane is None) == (self.pose is None):
            raise ValueError("expected exactly one of lane (+ s) or pose")
        return self


ActorClass = Literal["car", "truck", "bus", "cyclist", "pedestrian", "motorcycle", "other"]


class InsertModel(_Model):
    """Add an actor. With ``asset`` (a reconstructed actor of the actor library, ``source/id``, or
    just ``source`` for the one of that source nearest in size of the class) the neural backend
    renders it with that actor's field; ``class`` and ``size`` then default to the library actor's,
    and a given size must be within the library's rescaling tolerance."""

    op: Literal["insert"]
    id: ActorId
    cls: ActorClass | None = Field(None, alias="class", description="actor class (default: the asset's)")
    size: tuple[Size, Size, Size] | None = Field(
        None, description="length, width, height in metres (default: the asset's, else per class)"
    )
    asset: str | None = Field(
        None,
        pattern=r"^[^/\s.][^/\s]*(/[^/\s]+)?$",
        description="actor-library actor 'source/id' (e.g. town-s1/12) or source 'source' (the actor of "
        "that source and class nearest in size), see `loopdrive actors list`",
    )
    spawn: SpawnModel
    behavior: BehaviorModel = Field(default_factory=lambda: BehaviorModel(type="idm"))
    t_s: Time = Field(0.0, description="time the actor appears, s after the episode start")

    @model_validator(mode="after")
    def _class_or_asset(self) -> InsertModel:
        if self.cls is None and self.asset is None:
            raise ValueError("a class (car, truck, bus, cyclist, pedestrian, motorcycle, other) or an asset")
        return self


class RemoveModel(_Model):
    op: Literal["remove"]
    id: ActorId


class RerouteModel(_Model):
    op: Literal["reroute"]
    id: ActorId
    route: Route | None = None
    behavior: BehaviorModel | None = None

    @model_validator(mode="after")
    def _something(self) -> RerouteModel:
        if self.route is None and self.behavior is None:
            raise ValueError("expected a route and/or a behavior")
        return self


ActorOpModel = Annotated[InsertModel | RemoveModel | RerouteModel, Field(discriminator="op")]


class PlannerModel(_Model):
    name: str = Field("idm", description="planner name from the planner registry")
    params: dict[str, Any] = Field(default_factory=dict)


class ScenarioModel(_Model):
    """A loopdrive scenario file (``version: 1``)."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        populate_by_name=True,
        title="loopdrive scenario",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    version: Version = Field(description="schema version; only 1 exists")
    name: Name | None = Field(None, description="scenario name (default: the file name without extension)")
    description: str = Field("", description="what happens and what a good planner does")
    tags: list[str] = Field(default_factory=list)
    scene: SceneModel = Field(default_factory=SceneModel)
    ego: EgoModel = Field(default_factory=EgoModel)
    actors: list[ActorOpModel] = Field(default_factory=list, max_length=LIMITS.max_actor_ops)
    logged_behavior: BehaviorModel | None = Field(
        None, description="policy of logged actors no op touches (default: log replay)"
    )
    planner: PlannerModel = Field(default_factory=PlannerModel)
    observation: list[str] = Field(default_factory=lambda: ["state"], min_length=1)
    horizon_s: Time = Field(10.0, gt=0.0, description="episode length, s")
    dt_s: Step = Field(0.1, description="simulation step, s")
    max_actors: Slots = Field(64, description="actor slots (logged + inserted)")
    metrics: list[str] | None = Field(None, description="metric names (default: all registered)")
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1, max_length=LIMITS.max_seeds)
    sweep: dict[str, Annotated[list[Any], Field(max_length=LIMITS.max_sweep_values)]] = Field(
        default_factory=dict,
        max_length=LIMITS.max_sweep_keys,
        description="grid over dotted paths, e.g. {actors.0.spawn.speed: [8, 12]}",
    )


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the scenario file, for editors."""
    return ScenarioModel.model_json_schema(by_alias=True)
