"""WorldState immutability, oriented-box geometry and the pure edits with their error messages."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.edits import insert, remove, reroute
from sim.errors import ScenarioError
from sim.map import LaneMap
from sim.spec import BehaviorSpec, InsertOp, SpawnSpec
from sim.world import box_corners, boxes_overlap, crossroads_scene, world_from_scene


@pytest.fixture(scope="module")
def scene():
    return crossroads_scene()


@pytest.fixture(scope="module")
def lane_map(scene):
    return LaneMap.from_dict(scene.map)


@pytest.fixture()
def world(scene):
    return world_from_scene(scene, int(scene.ego.t_us[0]), capacity=8)


def test_world_from_scene_and_immutability(world, scene):
    assert world.ids[0] == "ego" and world.valid[0]
    assert set(world.ids[1:4]) == {"car_1", "car_2", "car_3"} and world.ids[4:] == ("",) * 4
    i = world.index("car_1")
    np.testing.assert_array_equal([world.x[i], world.y[i], world.z[i], world.yaw[i]], scene.tracks[0].pose[0])
    with pytest.raises(ValueError, match="read-only"):
        world.x[0] = 1.0  # arrays are read-only
    w2 = world.set_slot(i, x=123.0)
    assert w2.x[i] == 123.0 and world.x[i] != 123.0  # a new state, the old one unchanged


def _shapely_box(x, y, yaw, ln, wd):
    return shapely.Polygon(box_corners(x, y, yaw, ln, wd))


boxes = st.tuples(
    st.floats(-5, 5), st.floats(-5, 5), st.floats(-np.pi, np.pi), st.floats(0.5, 6), st.floats(0.5, 3)
)


@settings(max_examples=300, deadline=None)
@given(boxes, boxes)
def test_box_overlap_agrees_with_shapely(a, b):
    pa, pb = _shapely_box(*a), _shapely_box(*b)
    inter = pa.intersection(pb).area
    if inter > 1e-6:
        assert boxes_overlap(a, b)
    elif pa.distance(pb) > 1e-6:
        assert not boxes_overlap(a, b)


def _op(i, lane="E_in_0", s=30.0, **kw):
    return InsertOp(f"new_{i}", "car", (4.5, 1.9, 1.5), SpawnSpec(lane=lane, s=s, speed=5.0), **kw)


def test_insert_places_actor_on_lane(world, lane_map):
    w = insert(world, _op(0), lane_map, where="actors[0]")
    i = w.index("new_0")
    xy, h = lane_map.lanes["E_in_0"].polyline.interpolate(30.0)
    assert (w.x[i], w.y[i], w.yaw[i]) == (pytest.approx(xy[0]), pytest.approx(xy[1]), pytest.approx(float(h)))
    assert w.valid[i] and w.speed[i] == 5.0 and w.cls[i] == "car"
    assert w.behavior[i].type == "idm" and w.behavior[i].route == ("E_in_0",)
    assert world.index("new_0") is None  # pure


@pytest.mark.parametrize(
    ("op", "field", "words"),
    [
        (_op(1, lane="nope"), "actors[2].spawn.lane", "unknown lane"),
        (_op(1, s=500.0), "actors[2].spawn.s", "arc length"),
        (_op(1, lane="E_in_1", s=32.0), "actors[2].spawn", "overlaps actor 'car_1'"),
        (InsertOp("car_1", "car", (4.5, 1.9, 1.5), SpawnSpec(lane="E_in_0", s=10.0)), "actors[2].id", "already"),
        (InsertOp("x", "boat", (4.5, 1.9, 1.5), SpawnSpec(lane="E_in_0", s=10.0)), "actors[2].class", "expected one of"),
        (InsertOp("x", "car", (4.5, -1.0, 1.5), SpawnSpec(lane="E_in_0", s=10.0)), "actors[2].size", "positive"),
        (_op(1, behavior=BehaviorSpec("teleport")), "actors[2].behavior.type", "unknown behaviour 'teleport'"),
        (_op(1, behavior=BehaviorSpec("idm", {"warp": 1.0})), "actors[2].behavior.params.warp", "unknown parameter"),
        (_op(1, behavior=BehaviorSpec("idm", route=("E_in_0", "W_out_0"))), "actors[2].behavior.route[1]", "does not follow"),
    ],
)
def test_insert_errors_name_the_field(world, lane_map, op, field, words):
    with pytest.raises(ScenarioError) as ei:
        insert(world, op, lane_map, where="actors[2]")
    assert ei.value.field == field and words in str(ei.value)


def test_no_free_slot(scene, lane_map):
    w = world_from_scene(scene, int(scene.ego.t_us[0]), capacity=4)  # ego + 3 logged actors: full
    with pytest.raises(ScenarioError, match="no free actor slot") as ei:
        insert(w, _op(0), lane_map, where="actors[0]")
    assert ei.value.field == "actors[0]"


def test_remove_and_unknown_ids(world, lane_map):
    w = remove(world, "car_2", where="actors[0]")
    assert w.index("car_2") is None and not w.valid[world.index("car_2")]
    with pytest.raises(ScenarioError, match="unknown actor id 'ghost'") as ei:
        remove(world, "ghost", where="actors[1]")
    assert ei.value.field == "actors[1].id"
    with pytest.raises(ScenarioError, match="ego"):
        remove(world, "ego")
    with pytest.raises(ScenarioError, match="unknown actor id"):
        reroute(world, "ghost", ["E_in_1"], lane_map=lane_map)


def test_reroute(world, lane_map):
    w = reroute(world, "car_1", ["E_in_1", "E_1_right", "S_out_1"], lane_map=lane_map, where="actors[0]")
    b = w.behavior[w.index("car_1")]
    assert b.type == "idm" and b.route == ("E_in_1", "E_1_right", "S_out_1")  # log replay cannot follow a route
    w = reroute(world, "car_1", behavior=BehaviorSpec("mobil", {"politeness": 0.5}), lane_map=lane_map)
    assert w.behavior[w.index("car_1")].type == "mobil"
    with pytest.raises(ScenarioError, match="does not follow") as ei:
        reroute(world, "car_1", ["E_in_1", "N_out_1"], lane_map=lane_map, where="actors[3]")
    assert ei.value.field == "actors[3].route[1]"
    with pytest.raises(ScenarioError, match="not on lane") as ei:
        reroute(world, "car_1", ["W_in_1"], lane_map=lane_map, where="actors[3]")
    assert ei.value.field == "actors[3].route[0]"
