"""Lane map: Frenet projection, routing, lookups."""

from __future__ import annotations

import numpy as np
import pytest

from sim.errors import ScenarioError
from sim.map import LaneMap, Polyline
from tests._logfixture import MAP


def _map() -> LaneMap:
    d = {
        "lanes": [
            *MAP["lanes"],
            {"id": "a_left", "centerline": [[0.0, 3.5], [50.0, 3.5]], "width": 3.5, "speed_limit": 13.9,
             "successors": [], "predecessors": [], "left": None, "right": "a"},
            {"id": "turn", "centerline": [[50.0, 0.0], [55.0, 1.0], [58.0, 5.0], [59.0, 10.0]], "width": 3.5,
             "speed_limit": 8.0, "successors": [], "predecessors": ["a"], "left": None, "right": None},
        ]
    }
    d["lanes"][0] = {**d["lanes"][0], "left": "a_left", "successors": ["b", "turn"]}
    return LaneMap.from_dict(d)


def test_polyline_interpolate_and_project_are_inverse() -> None:
    pl = Polyline([[0, 0], [10, 0], [10, 10]])
    assert pl.length == pytest.approx(20.0)
    s = np.array([0.0, 5.0, 12.5, 19.0])
    xy, yaw = pl.interpolate(s)
    np.testing.assert_allclose(xy, [[0, 0], [5, 0], [10, 2.5], [10, 9]])
    np.testing.assert_allclose(yaw, [0, 0, np.pi / 2, np.pi / 2])
    s2, d2 = pl.project(xy + np.array([[0, 1], [0, -1], [-1, 0], [1, 0]]))
    np.testing.assert_allclose(s2, s)
    np.testing.assert_allclose(d2, [1, -1, 1, -1])  # positive = left of travel


def test_projection_extrapolates_before_start() -> None:
    s, d = Polyline([[0, 0], [10, 0]]).project([-3.0, 2.0])
    assert s == pytest.approx(-3.0) and d == pytest.approx(2.0)


def test_routes() -> None:
    m = _map()
    m.check_route(["a", "b"])
    m.check_route(["a", "a_left"])  # lane change to a same-direction neighbour
    with pytest.raises(ScenarioError, match="does not follow") as ei:
        m.check_route(["b", "a"], where="ego.route")
    assert ei.value.field == "ego.route[1]"
    with pytest.raises(ScenarioError, match="unknown lane 'zz'"):
        m.check_route(["a", "zz"])
    assert m.shortest_route("a", "turn") == ["a", "turn"]
    with pytest.raises(ScenarioError, match="no lane route"):
        m.shortest_route("b", "a")
    assert m.extend_route(["a"], 80.0) == ["a", "b"]


def test_lookups_and_drivable_area() -> None:
    m = _map()
    assert m.lanes_at(25.0, 0.5) == ["a"]
    assert set(m.lanes_at(25.0, 1.75)) == {"a", "a_left"}
    lid, s, d = m.nearest_lane(25.0, 3.0, yaw=0.0)
    assert lid == "a_left" and s == pytest.approx(25.0) and d == pytest.approx(-0.5)
    assert m.drivable_area.contains(__import__("shapely").Point(75.0, 0.0))
    assert not m.drivable_area.contains(__import__("shapely").Point(25.0, -10.0))
    assert m.route_polyline(["a", "b"]).length == pytest.approx(100.0)
