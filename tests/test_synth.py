"""The synthetic town: scene builder (render-free) and, further down, the written drive log."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sim.errors import LoopdriveError, ScenarioError
from sim.map import LaneMap
from sim.synth import PRESETS, make_scene


@pytest.fixture(scope="module")
def tiny():
    return make_scene("tiny", 0)


def test_unknown_preset_names_known_ones():
    with pytest.raises(ScenarioError) as ei:
        make_scene("huge", 0)
    msg = str(ei.value)
    assert "huge" in msg and all(p in msg for p in PRESETS)
    assert isinstance(ei.value, LoopdriveError)


@pytest.mark.parametrize("frames", [0, -3, 2.5])
def test_bad_frames(frames):
    with pytest.raises(ScenarioError):
        make_scene("tiny", 0, frames=frames)


def test_scene_is_deterministic_and_seed_dependent(tiny):
    again = make_scene("tiny", 0)
    other = make_scene("tiny", 1)
    assert json.dumps(tiny.map) == json.dumps(again.map)
    assert np.array_equal(tiny.ego.pose, again.ego.pose)
    assert len(tiny.tracks) == len(again.tracks)
    for a, b in zip(tiny.tracks, again.tracks, strict=True):
        assert a.id == b.id and np.array_equal(a.pose, b.pose) and np.array_equal(a.t_us, b.t_us)
    assert json.dumps(tiny.map) != json.dumps(other.map)


def test_static_town_does_not_depend_on_frames(tiny):
    longer = make_scene("tiny", 0, frames=50)
    assert json.dumps(tiny.map) == json.dumps(longer.map)
    assert len(longer.t_us) == 50 and len(longer.ego.t_us) == 50


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_network_has_four_way_intersection_and_two_lane_roads(preset):
    sc = make_scene(preset, 2)
    lm = LaneMap.from_dict(sc.map)
    lanes = sc.map["lanes"]
    assert all(isinstance(ln["id"], str) for ln in lanes)
    # at least one node with connectors from 4 approaches
    by_node: dict[str, set[str]] = {}
    for ln in lanes:
        if ln["kind"] == "connector":
            by_node.setdefault(ln["node"], set()).add(ln["predecessors"][0])
    roads_in = {n: {lm.lanes[p].attrs["road"] for p in preds} for n, preds in by_node.items()}
    assert any(len(r) == 4 for r in roads_in.values())
    # two lanes per direction somewhere: a road lane with a same-direction neighbour
    with_neigh = [ln for ln in lanes if ln["kind"] == "road" and (ln["left"] or ln["right"])]
    assert with_neigh
    for ln in with_neigh:
        nb = lm.lanes[ln["left"] or ln["right"]]
        h0 = np.diff(np.asarray(ln["centerline"])[[0, -1]], axis=0)[0]
        h1 = np.diff(nb.centerline[[0, -1]], axis=0)[0]
        assert np.dot(h0, h1) > 0  # same direction
    # both directions exist on a road (two-way)
    roads = {}
    for ln in lanes:
        if ln["kind"] == "road":
            d = np.diff(np.asarray(ln["centerline"])[[0, -1]], axis=0)[0]
            roads.setdefault(ln["road"], []).append(d / np.linalg.norm(d))
    assert any(min(np.dot(a, b) for a in ds for b in ds) < -0.99 for ds in roads.values())
    assert len(sc.map["crosswalks"]) >= 4


def test_ego_route_has_a_turn_and_is_connected(tiny):
    lm = LaneMap.from_dict(tiny.map)
    lm.check_route(list(tiny.ego_route))
    turns = [lm.lanes[r].attrs.get("turn") for r in tiny.ego_route]
    assert "left" in turns or "right" in turns
    assert tiny.ego.id == "ego" and tiny.ego.cls == "car"
    assert len(tiny.ego.t_us) == len(tiny.t_us)
    yaw = np.unwrap(tiny.ego.pose[:, 3])
    assert abs(yaw[-1] - yaw[0]) > np.radians(20)  # the turn happens within the tiny log


def test_actors_are_plausible(tiny):
    classes = {t.cls for t in tiny.tracks}
    assert classes & {"cyclist", "pedestrian"}
    assert any(t.static for t in tiny.tracks)
    lm = LaneMap.from_dict(tiny.map)
    for t in tiny.tracks:
        if t.static:
            assert np.ptp(t.pose[:, 0]) == 0 and np.ptp(t.pose[:, 1]) == 0
            continue
        v = np.linalg.norm(np.diff(t.pose[:, :2], axis=0), axis=1) / np.diff(t.t_us / 1e6)
        limit = {"pedestrian": 2.0, "cyclist": 7.0}.get(t.cls, 15.0)
        assert v.max() < limit
        if t.cls in ("car", "truck", "bus"):
            _lane, _s, d = lm.nearest_lane(*t.pose[0, :2], yaw=t.pose[0, 3])
            assert abs(d) < 0.5


def test_no_overlapping_actors(tiny):
    from shapely.geometry import Polygon

    def poly(p, size):
        c, s = np.cos(p[3]), np.sin(p[3])
        hl, hw = size[0] / 2, size[1] / 2
        return Polygon([(p[0] + c * u - s * w, p[1] + s * u + c * w) for u, w in ((hl, hw), (-hl, hw), (-hl, -hw), (hl, -hw))])

    all_tracks = [tiny.ego, *tiny.tracks]
    for t in tiny.t_us:
        boxes = [(tr.id, poly(tr.pose_at(int(t)), tr.size)) for tr in all_tracks if tr.pose_at(int(t)) is not None]
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                assert boxes[i][1].intersection(boxes[j][1]).area < 0.05, (t, boxes[i][0], boxes[j][0])
