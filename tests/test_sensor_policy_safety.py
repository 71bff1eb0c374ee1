"""``sensor_policy``'s geometric safety check (``safety_decel``): it slows a plan that runs into an
obstacle of the LiDAR raster down to a stop short of it, and leaves a plan alone whose path is
clear (an obstacle beside it, or one the plan steers around)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agents.sensor_policy_data import RasterGeometry
from agents.sensor_policy_safety import free_length, slow_for_obstacles

GEOM = RasterGeometry()
T = np.arange(1, 7) * (2.0 / 3.0)


def _raster_with_car(x0: float, y0: float) -> np.ndarray:
    """A raster with a 4.6 x 1.9 m box of full occupancy centred at (x0, y0) m in the ego frame."""
    ras = np.zeros((GEOM.size, GEOM.size, 5), np.uint8)
    fwd, left = GEOM.pixel_centres()
    box = (np.abs(fwd - x0) <= 2.3) & (np.abs(left - y0) <= 0.95)
    ras[..., 0] = np.where(box, 255, 0).reshape(GEOM.size, GEOM.size)
    return ras


def _straight(v: float) -> np.ndarray:
    return np.stack([v * T, np.zeros_like(T)], axis=1)


def test_a_car_in_the_path_limits_the_plan_to_stop_short_of_it() -> None:
    ras = _raster_with_car(20.0, 0.0)
    free = free_length(_straight(10.0), ras, GEOM)
    assert 20.0 - 2.3 - 2.3 - 1.0 - 0.8 <= free <= 20.0 - 2.3 - 2.3 - 1.0 + 0.8  # rear of the car, front and margin off
    out = slow_for_obstacles(_straight(10.0), T, ras, GEOM, decel=4.0)
    assert out[-1, 0] <= free + 1e-6  # never planned past the stopping point
    assert out[1, 0] < _straight(10.0)[1, 0] - 1.0  # slower from the start: the controller brakes now
    assert np.all(np.diff(out[:, 0]) >= -1e-9) and np.allclose(out[:, 1], 0.0)


@pytest.mark.parametrize("plan", ["beside", "around"])
def test_a_clear_path_is_left_alone(plan: str) -> None:
    wp = _straight(10.0)
    if plan == "beside":
        ras = _raster_with_car(20.0, 3.5)  # a car in the next lane
    else:
        ras = _raster_with_car(20.0, 0.0)
        wp = wp.copy()
        wp[:, 1] = np.clip((wp[:, 0] - 4.0) / 8.0, 0.0, 1.0) * 3.5  # the plan changes lane before the car
    assert math.isinf(free_length(wp, ras, GEOM))
    assert np.array_equal(slow_for_obstacles(wp, T, ras, GEOM, decel=4.0), wp)


def test_off_by_default_and_refused_out_of_range() -> None:
    from agents.sensor_policy import SensorPolicyPlanner
    from sim.errors import LoopdriveError

    assert SensorPolicyPlanner().safety_decel == 0.0
    assert SensorPolicyPlanner(safety_decel=5).safety_decel == 5.0
    with pytest.raises(LoopdriveError, match="safety_decel"):
        SensorPolicyPlanner(safety_decel=-1)
