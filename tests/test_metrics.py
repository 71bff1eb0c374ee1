"""Metrics on hand-built trajectories whose values are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.map import Lane, LaneMap
from sim.metrics import (
    METRICS,
    EpisodeRecord,
    MetricValue,
    aggregate_score,
    box_corners,
    boxes_overlap,
    compute_metrics,
)

EGO = (4.6, 1.9)
DT = 0.1


@pytest.fixture(scope="module")
def road() -> LaneMap:
    """Two straight 200 m lanes, 3.5 m wide, opposite directions; speed limit 15 m/s.
    L1 runs +x along y = 0; L2 runs -x along y = 3.5."""
    l1 = Lane("L1", np.array([[0.0, 0.0], [200.0, 0.0]]), 3.5, 15.0)
    l2 = Lane("L2", np.array([[200.0, 3.5], [0.0, 3.5]]), 3.5, 15.0)
    return LaneMap([l1, l2])


def record(
    lm: LaneMap,
    x: np.ndarray,
    y: np.ndarray | float = 0.0,
    yaw: np.ndarray | float = 0.0,
    speed: np.ndarray | None = None,
    actors: list[dict] | None = None,
    route: tuple[str, ...] = ("L1",),
    reference: float | None = None,
) -> EpisodeRecord:
    T = len(x)
    t = np.arange(T) * DT
    x = np.asarray(x, float)
    y = np.broadcast_to(np.asarray(y, float), (T,)).copy()
    yaw = np.broadcast_to(np.asarray(yaw, float), (T,)).copy()
    if speed is None:
        speed = np.gradient(x, t)
    actors = actors or []
    n = len(actors)
    axy = np.zeros((T, n, 2))
    ayaw = np.zeros((T, n))
    asp = np.zeros((T, n))
    for j, a in enumerate(actors):
        axy[:, j, 0] = a["x"]
        axy[:, j, 1] = a.get("y", 0.0)
        ayaw[:, j] = a.get("yaw", 0.0)
        asp[:, j] = a.get("speed", 0.0)
    return EpisodeRecord(
        t_s=t,
        ego_xy=np.stack([x, y], axis=1),
        ego_yaw=yaw,
        ego_speed=np.asarray(speed, float),
        ego_size=EGO,
        actor_ids=tuple(a.get("id", f"a{j}") for j, a in enumerate(actors)),
        actor_cls=tuple(a.get("cls", "car") for a in actors),
        actor_xy=axy,
        actor_yaw=ayaw,
        actor_speed=asp,
        actor_size=np.array([a.get("size", (4.6, 1.9)) for a in actors]).reshape(n, 2),
        actor_valid=np.ones((T, n), bool),
        lane_map=lm,
        route=route,
        reference_progress_m=reference,
    )


def cruise(v: float = 10.0, seconds: float = 5.0, x0: float = 10.0) -> np.ndarray:
    return x0 + v * np.arange(round(seconds / DT) + 1) * DT


def test_clean_cruise_scores_one(road: LaneMap) -> None:
    rec = record(road, cruise(10.0, 5.0), reference=50.0)
    vals, score = compute_metrics(rec)
    assert vals["collision"].value == 0 and vals["collision"].score == 1
    assert vals["offroad"].score == 1 and vals["offroad"].value == pytest.approx(0.0, abs=1e-9)
    assert vals["driving_direction"].value == 0
    assert vals["progress"].value == pytest.approx(50.0)
    assert vals["progress"].score == pytest.approx(1.0)
    assert math.isinf(vals["ttc"].value)
    assert vals["speed_limit"].value == 0 and vals["speed_limit"].score == 1
    assert vals["comfort"].score == 1 and vals["comfort"].value == pytest.approx(0.0, abs=1e-9)
    assert score == pytest.approx(1.0)


def test_rear_ending_a_stopped_car_is_at_fault(road: LaneMap) -> None:
    # ego front at 10 t + 2.3 (from x0 = 0); stopped car rear at 30 - 2.3 = 27.7 -> contact at t = 2.54 s
    x = cruise(10.0, 4.0, x0=0.0)
    rec = record(road, x, actors=[{"id": "stopped", "x": 30.0}])
    vals, score = compute_metrics(rec)
    col = vals["collision"]
    assert col.value == 1 and col.score == 0.0
    ev = col.details["events"][0]
    assert ev["actor"] == "stopped" and ev["type"] == "front" and ev["step"] == 26
    assert score == 0.0
    # one step before contact (t = 2.5 s) the gap is 0.4 m, closed within the first 0.1 s of projection
    assert vals["ttc"].value == pytest.approx(0.1)
    assert vals["ttc"].score == 0.0


def test_hit_from_behind_while_stopped_is_not_at_fault(road: LaneMap) -> None:
    T = 31
    x = np.full(T, 50.0)
    # the follower drives at 10 m/s into the stopped ego from behind
    rec = record(road, x, speed=np.zeros(T), actors=[])
    follower_x = 30.0 + 10.0 * np.arange(T) * DT
    axy = np.zeros((T, 1, 2))
    axy[:, 0, 0] = follower_x
    rec = EpisodeRecord(
        t_s=rec.t_s, ego_xy=rec.ego_xy, ego_yaw=rec.ego_yaw, ego_speed=rec.ego_speed, ego_size=EGO,
        actor_ids=("follower",), actor_cls=("car",), actor_xy=axy, actor_yaw=np.zeros((T, 1)),
        actor_speed=np.full((T, 1), 10.0), actor_size=np.array([[4.6, 1.9]]), actor_valid=np.ones((T, 1), bool),
        lane_map=road, route=("L1",),
    )  # fmt: skip
    vals, _ = compute_metrics(rec, ["collision", "any_collision"])
    assert vals["any_collision"].value == 1
    assert vals["collision"].value == 0 and vals["collision"].score == 1.0
    assert vals["any_collision"].details["events"][0]["type"] == "stopped_ego"


def test_static_object_collision_halves_the_score(road: LaneMap) -> None:
    x = cruise(10.0, 4.0, x0=0.0)
    rec = record(road, x, actors=[{"id": "cone", "x": 30.0, "cls": "other", "size": (0.5, 0.5)}])
    vals, _ = compute_metrics(rec, ["collision"])
    assert vals["collision"].score == 0.5


def test_offroad_distance(road: LaneMap) -> None:
    # centre at y = -2.0: the right-hand corners at y = -2.95, the drivable area ends at -1.75 - 0.05
    rec = record(road, cruise(10.0, 3.0), y=-2.0)
    v = compute_metrics(rec, ["offroad"])[0]["offroad"]
    assert v.value == pytest.approx(2.95 - 1.80, abs=1e-6)
    assert v.score == 0.0
    # 0.2 m outside is within nuPlan's 0.3 m tolerance
    rec = record(road, cruise(10.0, 3.0), y=-(1.80 + 0.2 - 0.95))
    v = compute_metrics(rec, ["offroad"])[0]["offroad"]
    assert v.value == pytest.approx(0.2, abs=1e-6) and v.score == 1.0


@pytest.mark.parametrize(("speed", "expected_m", "score"), [(10.0, 10.0, 0.0), (3.0, 3.0, 0.5), (1.0, 1.0, 1.0)])
def test_wrong_way_driving(road: LaneMap, speed: float, expected_m: float, score: float) -> None:
    # driving +x in L2, which runs -x: every metre is against the lane; window 1 s
    rec = record(road, cruise(speed, 3.0), y=3.5, route=("L1",))
    v = compute_metrics(rec, ["driving_direction"])[0]["driving_direction"]
    assert v.value == pytest.approx(expected_m)
    assert v.score == score


def test_progress_ratio_and_making_progress(road: LaneMap) -> None:
    rec = record(road, cruise(10.0, 5.0), reference=100.0)
    vals, _ = compute_metrics(rec, ["progress", "making_progress"])
    assert vals["progress"].score == pytest.approx(0.5)
    assert vals["making_progress"].score == 1.0
    rec = record(road, cruise(10.0, 5.0), reference=300.0)
    vals, _ = compute_metrics(rec, ["progress", "making_progress"])
    assert vals["making_progress"].value == pytest.approx(50.0 / 300.0)
    assert vals["making_progress"].score == 0.0


def test_progress_reference_without_expert(road: LaneMap) -> None:
    # half the speed limit (7.5 m/s) over 5 s = 37.5 m; the ego makes 30 m
    rec = record(road, cruise(6.0, 5.0))
    v = compute_metrics(rec, ["progress"])[0]["progress"]
    assert v.details["reference_m"] == pytest.approx(37.5)
    assert v.score == pytest.approx(30.0 / 37.5)


def test_speed_limit_overspeed(road: LaneMap) -> None:
    rec = record(road, cruise(17.0, 5.0))
    v = compute_metrics(rec, ["speed_limit"])[0]["speed_limit"]
    assert v.value == pytest.approx(2.0)
    assert v.score == pytest.approx(1.0 - 2.0 / 2.23)


@pytest.mark.parametrize(("decel", "score"), [(-2.0, 1.0), (-5.0, 0.0)])
def test_comfort_braking(road: LaneMap, decel: float, score: float) -> None:
    t = np.arange(31) * DT
    v = 15.0 + decel * t
    x = 10.0 + 15.0 * t + 0.5 * decel * t**2
    rec = record(road, x, speed=v)
    c = compute_metrics(rec, ["comfort"])[0]["comfort"]
    assert c.value == pytest.approx(abs(decel) / 4.05)
    assert c.score == score
    assert c.details["worst_signal"] == "lon_accel"


def test_comfort_lateral_acceleration_in_a_turn(road: LaneMap) -> None:
    # constant 10 m/s on a circle with yaw rate 0.5 rad/s: lateral acceleration 5 m/s^2 > 4.89
    t = np.arange(21) * DT
    r, w = 20.0, 0.5
    x = 50.0 + r * np.sin(w * t)
    y = r * (1 - np.cos(w * t))
    rec = record(road, x, y=y, yaw=w * t, speed=np.full_like(t, 10.0))
    c = compute_metrics(rec, ["comfort"])[0]["comfort"]
    assert c.value == pytest.approx(5.0 / 4.89)
    assert c.score == 0.0
    assert c.details["worst_signal"] == "lat_accel"


def test_aggregate_has_cls_structure() -> None:
    vals = {
        "collision": MetricValue(0, 1.0),
        "driving_direction": MetricValue(3.0, 0.5),
        "progress": MetricValue(10, 0.5),
        "ttc": MetricValue(2.0, 1.0),
        "speed_limit": MetricValue(0, 1.0),
        "comfort": MetricValue(2.0, 0.0),
        "any_collision": MetricValue(5, 0.0),  # info: ignored
    }
    assert aggregate_score(vals) == pytest.approx(0.5 * (5 * 0.5 + 5 * 1 + 4 * 1 + 2 * 0) / 16)


def test_registry_declares_units_and_kinds() -> None:
    for name in ("collision", "offroad", "driving_direction", "progress", "ttc", "comfort", "speed_limit"):
        d = METRICS.get(name)
        assert d.unit and d.kind in ("multiplier", "weighted") and d.description
    assert METRICS.get("progress").weight == 5 and METRICS.get("comfort").weight == 2


def _poly(b: tuple[float, ...]) -> shapely.Polygon:
    return shapely.Polygon(box_corners(*b))


box = st.tuples(
    st.floats(-5, 5), st.floats(-5, 5), st.floats(-math.pi, math.pi), st.floats(0.3, 6), st.floats(0.3, 3)
)


@settings(max_examples=300, deadline=None)
@given(box, box)
def test_box_overlap_matches_shapely(a: tuple[float, ...], b: tuple[float, ...]) -> None:
    pa, pb = _poly(a), _poly(b)
    if abs(pa.distance(pb)) < 1e-6 and not pa.intersects(pb):
        return  # touching within rounding: either answer is right
    if pa.intersects(pb) and pa.intersection(pb).area < 1e-9:
        return
    assert bool(boxes_overlap(a, b)) == pa.intersects(pb)


def test_progress_across_a_lane_change(road: LaneMap) -> None:
    """A route with a lane change (L1 -> its left neighbour L1b) measures progress along the
    neighbour, not back along a second copy of the road."""
    l1 = Lane("L1", np.array([[0.0, 0.0], [200.0, 0.0]]), 3.5, 15.0, left="L1b")
    l1b = Lane("L1b", np.array([[0.0, 3.5], [200.0, 3.5]]), 3.5, 15.0, right="L1")
    lm = LaneMap([l1, l1b])
    x = cruise(10.0, 5.0)
    y = np.clip((x - 20.0) / 20.0, 0.0, 1.0) * 3.5  # drift left between x = 20 and 40 m
    rec = record(lm, x, y=y, route=("L1", "L1b"), reference=50.0)
    v = compute_metrics(rec, ["progress"])[0]["progress"]
    assert v.value == pytest.approx(50.0)


def test_comfort_filter_keeps_a_smooth_ramp(road: LaneMap) -> None:
    # acceleration ramping at 1 m/s^3 (a quadratic speed profile) is reproduced exactly by the
    # order-2 filter: jerk 1 m/s^3, well within nuPlan's 4.13
    t = np.arange(31) * DT
    a = 1.0 * t - 1.5
    v = 10.0 - 1.5 * t + 0.5 * t**2
    x = 10.0 + 10.0 * t - 0.75 * t**2 + t**3 / 6.0
    rec = record(road, x, speed=v)
    assert np.allclose(rec.lon_accel, a, atol=1e-9)
    # exact away from the edges; at the edges the held first/last value only lowers it
    assert np.allclose(rec.lon_jerk[7:-7], 1.0, atol=1e-6)
    assert np.all(rec.lon_jerk <= 1.0 + 1e-9) and np.all(rec.lon_jerk >= 0.45)
    assert compute_metrics(rec, ["comfort"])[0]["comfort"].score == 1.0


def test_jerk_limited_brake_ramp_is_comfortable(road: LaneMap) -> None:
    # the applied deceleration ramps at 3.5 m/s^3 (below nuPlan's 4.13) to 2.8 m/s^2 and eases off:
    # comfortable, although the ramp starts right at the first step
    T = 51
    jerk = np.concatenate([np.full(8, -3.5), np.full(T - 9, 0.8)])
    acc = np.concatenate([[0.0], np.cumsum(jerk) * DT])
    acc = np.minimum(acc, 0.0)
    v = 10.0 + np.concatenate([[0.0], np.cumsum(acc[:-1]) * DT])
    x = 10.0 + np.concatenate([[0.0], np.cumsum(v[:-1]) * DT])
    base = record(road, x, speed=v)
    from dataclasses import replace

    rec = replace(base, ego_accel=acc)
    c = compute_metrics(rec, ["comfort"])[0]["comfort"]
    assert 2.0 < np.abs(rec.lon_jerk).max() <= 3.5
    assert c.score == 1.0


def _accel_record(road: LaneMap, acc: np.ndarray) -> EpisodeRecord:
    from dataclasses import replace

    v = 12.0 + np.concatenate([[0.0], np.cumsum(acc[:-1]) * DT])
    x = 10.0 + np.concatenate([[0.0], np.cumsum(v[:-1]) * DT])
    return replace(record(road, x, speed=v), ego_accel=acc)


def test_jerk_is_the_savitzky_golay_derivative(road: LaneMap) -> None:
    # a one-step 1.5 m/s^2 change (15 m/s^3 between two samples) is spread over nuPlan's
    # 15-sample window -> comfortable; a ramp at 6 m/s^3 from +2.3 to -4 m/s^2 (1.05 s) is not
    T = 61
    blip = np.where(np.arange(T) >= 30, -1.5, 0.0)
    rec = _accel_record(road, blip)
    c = compute_metrics(rec, ["comfort"])[0]["comfort"]
    assert c.score == 1.0 and np.abs(rec.lon_jerk).max() == pytest.approx(1.5)
    ramp = np.clip(2.3 - (np.arange(T) - 20) * DT * 6.0, -4.0, 2.3)
    rec = _accel_record(road, ramp)
    c = compute_metrics(rec, ["comfort"])[0]["comfort"]
    assert c.score == 0.0 and c.details["worst_signal"] == "lon_jerk"
    assert 4.5 < np.abs(rec.lon_jerk).max() <= 6.0
