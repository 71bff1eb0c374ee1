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


# ------------------------------------------------------------------ prediction (safety_predict_s)
def _track(x: float, y: float, vx: float, vy: float) -> dict[str, np.ndarray]:
    """One tracked car (ego frame, m and m/s) heading along its velocity."""
    return {"xy": np.array([[x, y]]), "vel": np.array([[vx, vy]]), "yaw": np.array([math.atan2(vy, vx)]),
            "length": np.array([4.6]), "width": np.array([1.9])}  # fmt: skip


def test_predicted_free_length_stops_short_of_a_crossing_car_and_ignores_one_that_misses() -> None:
    from agents.sensor_policy_safety import predicted_free_length

    wp = _straight(8.0)  # 8 m/s: at x = 24 m after 3 s
    cross = predicted_free_length(wp, T, _track(24.0, -15.0, 0.0, 5.0), horizon_s=4.0)  # there at 3 s too
    assert 24.0 - 2.3 - 0.95 - 1.5 <= cross <= 24.0 - 2.3 - 0.95  # the ego's front short of the car's side
    assert math.isinf(predicted_free_length(wp, T, _track(24.0, 2.0, 0.0, 5.0), horizon_s=4.0))  # already across, leaving
    assert math.isinf(predicted_free_length(wp, T, _track(24.0, -30.0, 0.0, 5.0), horizon_s=4.0))  # crosses after the ego
    assert math.isinf(predicted_free_length(wp, T, _track(15.0, 0.0, 12.0, 0.0), horizon_s=4.0))  # a car ahead moving away
    assert math.isinf(predicted_free_length(wp, T, _track(40.0, 3.5, -6.0, 0.0), horizon_s=4.0))  # oncoming, next lane
    assert predicted_free_length(wp, T, _track(40.0, 0.0, -6.0, 0.0), horizon_s=4.0) < 12.0  # oncoming in the ego's lane
    assert math.isinf(predicted_free_length(wp, T, _track(24.0, -15.0, 0.0, 5.0), horizon_s=0.0))  # off
    # a car crossing right in front of the ego's bumper: the ego is already in its way and clears it
    # by driving on; a head-on one there is still braked for
    assert math.isinf(predicted_free_length(wp, T, _track(3.0, -5.0, 0.0, 5.0), horizon_s=4.0))
    assert predicted_free_length(wp, T, _track(20.0, 0.0, -6.0, 0.0), horizon_s=4.0) == 0.0


def _crossing_plans(predict_s: float, y0: float) -> tuple[np.ndarray, np.ndarray]:
    """The shipped policy with ``safety_decel=5`` (and ``safety_predict_s``) fed 10 box-LiDAR sweeps
    (0.1 s apart) of a car crossing at x = 24 m from ``y0`` at +5 m/s; the ego holds 8 m/s at the
    origin. Returns the first and the last plan's waypoints."""
    from types import SimpleNamespace

    from agents.sensor_policy import SensorPolicyPlanner
    from sim.planning import PlannerInit
    from sim.render.box_lidar import simulate_lidar
    from sim.sensors import default_rig

    rig = default_rig()
    pl = SensorPolicyPlanner(safety_decel=5, safety_predict_s=predict_s)
    pl.reset(PlannerInit(lane_map=None, route=(), dt_s=0.1, horizon_s=5.0, rig=rig))
    ego = np.array([0.0, 0.0, 0.0, 8.0, 0.0, 0.0])
    plans = []
    for k in range(10):
        y = y0 + 5.0 * 0.1 * k
        w = SimpleNamespace(x=np.array([0.0, 24.0]), y=np.array([0.0, y]), yaw=np.array([0.0, math.pi / 2]), z=np.zeros(2),
                            length=np.full(2, 4.6), width=np.full(2, 1.9), height=np.full(2, 1.6), valid=np.ones(2, bool))  # fmt: skip
        plans.append(pl.plan({"lidar": simulate_lidar(w, rig.lidar), "ego": ego}).xy)
    return plans[0], plans[-1]


def test_a_crossing_car_predicted_into_the_path_makes_the_planner_brake() -> None:
    _, plain = _crossing_plans(0.0, -14.0)  # the car is still 9.5 m to the right: the raster check sees nothing on the path
    _, predicted = _crossing_plans(4.0, -14.0)
    assert plain[-1, 0] > 25.0
    assert predicted[-1, 0] < 24.0 - 2.3 - 0.95  # stops with its front short of the car's path
    assert predicted[-1, 0] < plain[-1, 0] - 5.0


def test_a_car_moving_away_from_the_path_does_not_make_it_brake() -> None:
    _, plain = _crossing_plans(0.0, 3.0)  # already across and leaving to the left
    _, predicted = _crossing_plans(4.0, 3.0)
    np.testing.assert_allclose(predicted, plain, atol=1e-6)
    assert predicted[-1, 0] > 25.0


def test_predict_is_off_by_default_and_bounded() -> None:
    from agents.sensor_policy import SensorPolicyPlanner
    from sim.errors import LoopdriveError

    assert SensorPolicyPlanner().safety_predict_s == 0.0
    with pytest.raises(LoopdriveError, match="safety_predict_s"):
        SensorPolicyPlanner(safety_predict_s=11)
