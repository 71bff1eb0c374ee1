"""Town presets: the size of the road grid and how busy it is.

All lengths in metres, speeds in m/s, time in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.errors import ScenarioError

__all__ = ["PRESETS", "TownPreset", "get_preset"]


@dataclass(frozen=True)
class TownPreset:
    """Parameters of a procedural town.

    Attributes:
        name: preset name.
        grid: (nx, ny) intersections on a regular grid; every intersection is a 4-way crossing.
        block_m: (min, max) distance between neighbouring intersections (m).
        arm_m: (min, max) length of the dead-end roads leaving the grid (m).
        minor_lanes: lanes per direction on the minor (north-south) roads; the main east-west
            road through the middle row always has two lanes per direction.
        frames: default number of frames.
        moving_cars: number of moving vehicles (cars, trucks, buses).
        cyclists, pedestrians: number of each.
        parked_fraction: share of parking slots with a parked car.
        ego_start_m: distance of the ego's start before its first intersection's stop line (m).
        ego_lane_change: whether the ego changes lane before its turn.
        building_density: 0..1, how tightly buildings are packed along the roads.
    """

    name: str
    grid: tuple[int, int]
    block_m: tuple[float, float]
    arm_m: tuple[float, float]
    minor_lanes: tuple[int, ...]
    frames: int
    moving_cars: int
    cyclists: int
    pedestrians: int
    parked_fraction: float
    ego_start_m: float
    ego_lane_change: bool
    building_density: float


PRESETS: dict[str, TownPreset] = {
    "tiny": TownPreset(
        name="tiny",
        grid=(1, 1),
        block_m=(0.0, 0.0),
        arm_m=(38.0, 46.0),
        minor_lanes=(1,),
        frames=30,
        moving_cars=3,
        cyclists=1,
        pedestrians=1,
        parked_fraction=0.35,
        ego_start_m=6.0,
        ego_lane_change=False,
        building_density=0.6,
    ),
    "small": TownPreset(
        name="small",
        grid=(1, 1),
        block_m=(0.0, 0.0),
        arm_m=(70.0, 85.0),
        minor_lanes=(1, 2),
        frames=120,
        moving_cars=8,
        cyclists=1,
        pedestrians=2,
        parked_fraction=0.4,
        ego_start_m=42.0,
        ego_lane_change=True,
        building_density=0.8,
    ),
    "large": TownPreset(
        name="large",
        grid=(2, 2),
        block_m=(85.0, 105.0),
        arm_m=(60.0, 75.0),
        minor_lanes=(1, 2),
        frames=300,
        moving_cars=18,
        cyclists=2,
        pedestrians=4,
        parked_fraction=0.4,
        ego_start_m=45.0,
        ego_lane_change=True,
        building_density=0.85,
    ),
}


def get_preset(name: str) -> TownPreset:
    """The preset called ``name``; :class:`ScenarioError` naming the known presets otherwise."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ScenarioError(
            f"unknown town preset {name!r}; known presets: {', '.join(PRESETS)}", field="town"
        ) from None
