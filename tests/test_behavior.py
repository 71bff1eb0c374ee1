"""Actor behaviours: IDM car following, intersection yielding, MOBIL, scripted braking, log replay."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import pytest

from sim import engine
from sim.behavior import BEHAVIORS
from sim.errors import RegistryError
from sim.idm import IdmArrays, idm_accel
from sim.spec import BehaviorSpec, InsertOp, RemoveOp, ScenarioSpec, SpawnSpec
from sim.world import boxes_overlap, crossroads_scene

CAR = (4.5, 1.9, 1.5)


def _quiet_scene(**kw):
    # the ego parked at the far end of an exit lane, out of everyone's way
    return crossroads_scene(actors=(), ego_lane="W_out_1", ego_s=60.0, ego_speed=0.0, **kw)


def _roll(spec, scene, steps, action=(0.0, 0.0)):
    c = engine.compile_scenario(spec, scene)
    st = engine.reset(c, np.random.default_rng(0))
    hist = [st]
    for _ in range(steps):
        if st.done[0]:
            break
        st = engine.step(st, np.asarray(action))
        hist.append(st)
    return c, hist


def _overlapping_pairs(c, hist):
    """All (actor, actor) pairs whose boxes overlap at some step (ego included)."""
    out = set()
    iu, ju = np.triu_indices(c.num_slots, 1)
    for st in hist:
        v = st.valid[0]
        hit = boxes_overlap(
            (st.x[0, iu], st.y[0, iu], st.yaw[0, iu], c.length[iu], c.width[iu]),
            (st.x[0, ju], st.y[0, ju], st.yaw[0, ju], c.length[ju], c.width[ju]),
        ) & v[iu] & v[ju]
        out |= {(c.ids[a], c.ids[b]) for a, b in zip(iu[hit], ju[hit], strict=True)}
    return out


def test_registry_lists_builtins_and_rejects_unknown():
    assert {"log_replay", "idm", "mobil", "constant_velocity", "static"} <= set(BEHAVIORS.names())
    with pytest.raises(RegistryError, match="known: "):
        BEHAVIORS.get("teleport")


def test_idm_free_road_and_standstill():
    d = BEHAVIORS.get("idm").defaults
    p = IdmArrays(*(np.array(d[k]) for k in ("a_max", "b_comf", "s0", "T", "delta", "decel_max")))
    # free road below v0 accelerates, at v0 does not
    assert idm_accel(np.array(5.0), np.array(0.0), np.array(np.inf), np.array(10.0), p) > 1.5
    assert abs(idm_accel(np.array(10.0), np.array(10.0), np.array(np.inf), np.array(10.0), p)) < 1e-9
    # close behind a stopped car: brakes at the physical limit
    assert idm_accel(np.array(12.0), np.array(0.0), np.array(5.0), np.array(14.0), p) == -p.decel_max
    # a desired speed of zero: "hold" never creeps forward, "brake" brakes at a_max
    assert idm_accel(np.array(0.005), np.array(0.0), np.array(np.inf), np.array(0.0), p) <= 0.0
    assert idm_accel(np.array(3.0), np.array(0.0), np.array(np.inf), np.array(0.0), p, zero_v0="brake") == -d["a_max"]


def test_idm_follower_stops_behind_stopped_car_without_collision():
    spec = ScenarioSpec(
        horizon_s=20.0,
        actors=(
            InsertOp("stopped", "car", CAR, SpawnSpec(lane="E_in_1", s=60.0), BehaviorSpec("static")),
            InsertOp("follower", "car", CAR, SpawnSpec(lane="E_in_1", s=5.0, speed=12.0), BehaviorSpec("idm")),
        ),
    )
    c, hist = _roll(spec, _quiet_scene(), 200)
    assert not _overlapping_pairs(c, hist)
    i, j = c.ids.index("follower"), c.ids.index("stopped")
    last = hist[-1]
    gap = (last.x[0, j] - last.x[0, i]) - 4.5
    assert last.v[0, i] < 0.05 and 1.0 < gap < 3.0  # stopped at about s0 = 2 m
    assert max(s.v[0, i] for s in hist) > 11.0  # it really drove there


def test_crossing_actors_yield_at_the_intersection():
    routes = {
        "a": ("E_in_1", "E_1_straight", "E_out_1"),
        "b": ("N_in_1", "N_1_straight", "N_out_1"),
        "c": ("S_in_0", "S_0_left", "E_out_0"),
        "d": ("W_in_0", "W_0_straight", "W_out_0"),
    }
    starts = {"a": 40.0, "b": 40.0, "c": 42.0, "d": 38.0}  # all arrive within a second of each other
    ops = tuple(
        InsertOp(k, "car", CAR, SpawnSpec(lane=r[0], s=starts[k], speed=10.0), BehaviorSpec("idm", route=r)) for k, r in routes.items()
    )
    c, hist = _roll(ScenarioSpec(horizon_s=20.0, actors=ops), _quiet_scene(), 200)
    assert not _overlapping_pairs(c, hist)
    # somebody had to wait, and everybody got through and left the map
    assert min(min(s.v[0, c.ids.index(k)] for s in hist) for k in routes) < 3.0
    assert not any(hist[-1].valid[0, c.ids.index(k)] for k in routes)


def test_dense_idm_traffic_never_overlaps():
    rng = np.random.default_rng(0)
    sc = _quiet_scene()
    from sim.map import LaneMap

    lm = LaneMap.from_dict(sc.map)
    lanes = [ln for ln in lm.lane_ids if "_in_" in ln]
    ops = []
    for i in range(16):
        ln = lanes[i % len(lanes)]
        succ = lm.lanes[ln].successors
        ops.append(
            InsertOp(
                f"a{i}", "car", CAR,
                SpawnSpec(lane=ln, s=10.0 + 25.0 * (i // len(lanes)) + float(rng.uniform(0, 5)), speed=float(rng.uniform(5, 12))),
                BehaviorSpec("idm", route=(ln, succ[int(rng.integers(len(succ)))])),
            )
        )
    c, hist = _roll(ScenarioSpec(horizon_s=30.0, actors=tuple(ops), max_actors=20), sc, 300)
    assert not _overlapping_pairs(c, hist)
    assert hist[-1].valid[0, 1:].sum() < 8  # traffic flowed: most actors crossed and left


def test_mobil_overtakes_a_slow_leader():
    spec = ScenarioSpec(
        horizon_s=12.0,
        actors=(
            InsertOp("slow", "car", CAR, SpawnSpec(lane="E_in_1", s=25.0, speed=3.0), BehaviorSpec("idm", {"v0": 3.0})),
            InsertOp("fast", "car", CAR, SpawnSpec(lane="E_in_1", s=5.0, speed=10.0), BehaviorSpec("mobil")),
        ),
    )
    c, hist = _roll(spec, _quiet_scene(), 120)
    assert not _overlapping_pairs(c, hist)
    i, j = c.ids.index("fast"), c.ids.index("slow")
    lanes = {c.paths.lane_ids[c.paths.lane[s.path_id[0, i], c.paths.vertex(s.path_id[0, i : i + 1], s.s[0, i : i + 1])[0]]] for s in hist}
    assert "E_in_0" in lanes  # changed to the left lane
    passed = [s for s in hist if s.valid[0, j] and s.x[0, i] > s.x[0, j] + 5.0]
    assert passed, "the MOBIL actor never got past the slow one"
    # the idm-only twin stays stuck behind
    spec2 = ScenarioSpec(horizon_s=12.0, actors=(spec.actors[0], InsertOp("fast", "car", CAR, SpawnSpec(lane="E_in_1", s=5.0, speed=10.0), BehaviorSpec("idm"))))
    c2, hist2 = _roll(spec2, _quiet_scene(), 120)
    assert all(s.x[0, c2.ids.index("fast")] < s.x[0, c2.ids.index("slow")] for s in hist2)


def test_scripted_hard_brake_and_follower_reacts():
    spec = ScenarioSpec(
        horizon_s=10.0,
        actors=(
            InsertOp("lead", "car", CAR, SpawnSpec(lane="E_in_1", s=40.0, speed=10.0), BehaviorSpec("idm", {"v0": 10.0, "brake_at_s": 2.0, "brake_decel": 6.0})),
            InsertOp("follow", "car", CAR, SpawnSpec(lane="E_in_1", s=15.0, speed=10.0), BehaviorSpec("idm", {"v0": 10.0})),
        ),
    )
    c, hist = _roll(spec, _quiet_scene(), 100)
    i = c.ids.index("lead")
    v = np.array([s.v[0, i] for s in hist])
    assert v[19] > 9.5 and v[30] == pytest.approx(max(0.0, v[20] - 6.0), abs=0.05)  # 6 m/s^2 for 1 s
    assert v[-1] == 0.0
    assert not _overlapping_pairs(c, hist)


def test_log_replay_reproduces_the_log_exactly():
    sc = crossroads_scene()
    spec = ScenarioSpec(horizon_s=5.0, actors=(RemoveOp("car_3"),))
    c, hist = _roll(spec, sc, 50, action=(0.0, 0.0))
    tracks = {t.id: t for t in sc.tracks}
    for st in hist:
        k = int(st.step_index[0])
        for aid in ("car_1", "car_2"):
            i = c.ids.index(aid)
            np.testing.assert_array_equal([st.x[0, i], st.y[0, i], st.yaw[0, i]], tracks[aid].pose[k, [0, 1, 3]])


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # both spawned too close to stop before the junction, arriving at their crossing together
        (("E_in_0", "E_0_straight", 66.2, 10.0), ("N_in_0", "N_0_straight", 69.8, 10.0)),
        # opposing left turns: their centrelines pass 1.25 m apart without crossing
        (("E_in_0", "E_0_left", 60.0, 8.0), ("W_in_0", "W_0_left", 60.0, 8.0)),
    ],
)
def test_committed_and_near_miss_junction_pairs_never_overlap(a, b):
    ops = tuple(
        InsertOp(name, "car", CAR, SpawnSpec(lane=ln, s=s, speed=v), BehaviorSpec("idm", {"v0": v}, route=(ln, nxt)))
        for name, (ln, nxt, s, v) in (("a", a), ("b", b))
    )
    c, hist = _roll(ScenarioSpec(horizon_s=8.0, actors=ops), _quiet_scene(), 80)
    assert not _overlapping_pairs(c, hist)
    ia, ib = c.ids.index("a"), c.ids.index("b")
    assert not hist[-1].valid[0, ia] or hist[-1].s[0, ia] > 85.0  # both got through the junction
    assert not hist[-1].valid[0, ib] or hist[-1].s[0, ib] > 85.0


@pytest.mark.parametrize(("s0", "v"), [(38.0, 3.0), (43.0, 1.0)])
def test_mobil_change_close_behind_a_stopped_car_never_overlaps_and_completes(s0, v):
    # the lane change starts close behind a stopped car: while the MOBIL car is still partly in
    # its old lane it must keep following that car, and still finish the change and drive on
    spec = ScenarioSpec(
        horizon_s=20.0,
        actors=(
            InsertOp("stopped", "car", CAR, SpawnSpec(lane="E_in_0", s=50.0, speed=0.0), BehaviorSpec("idm", {"v0": 0.0})),
            InsertOp("m", "car", CAR, SpawnSpec(lane="E_in_0", s=s0, speed=v), BehaviorSpec("mobil")),
        ),
    )
    c, hist = _roll(spec, _quiet_scene(), 200)
    assert not _overlapping_pairs(c, hist)
    i, j = c.ids.index("m"), c.ids.index("stopped")
    assert hist[-1].x[0, i] > hist[-1].x[0, j] + 5.0  # got past it in the other lane


def test_a_plug_in_behaviour_brings_its_own_motion():
    """The behaviour/motion seam: a behaviour registered in-test with its own vectorised motion
    (circling at a fixed yaw rate) is dispatched by the engine for its rows only."""
    from sim.behavior import Behavior
    from sim.motion import Motion

    class Circle(Motion):
        kind = "circle"

        @staticmethod
        def advance(ctx, rows):
            x, y, yaw, v = ctx.pre
            m = rows & ctx.spawned
            yaw1 = yaw + ctx.c.params["yaw_rate"][None, :] * ctx.dt
            ctx.yaw = np.where(m, yaw1, ctx.yaw)
            ctx.x = np.where(m, x + v * np.cos(yaw1) * ctx.dt, ctx.x)
            ctx.y = np.where(m, y + v * np.sin(yaw1) * ctx.dt, ctx.y)

    class Circling(Behavior):
        name = "circling"
        motion = Circle
        defaults: ClassVar[Mapping[str, float]] = {"yaw_rate": 0.5}

    assert Circling.kind == "circle"
    BEHAVIORS.register("circling", Circling)
    try:
        _drive_circling()
    finally:
        BEHAVIORS._items.pop("circling", None)  # the registry as it was (tests never leak entries)


def _drive_circling():
    spec = ScenarioSpec(
        horizon_s=2.0,
        actors=(InsertOp("c1", "car", CAR, SpawnSpec(lane="N_in_0", s=20.0, speed=5.0), behavior=BehaviorSpec("circling", {"yaw_rate": 0.3})),),
    )
    c = engine.compile_scenario(spec, crossroads_scene())
    st = engine.reset(c, np.random.default_rng(0))
    i = c.ids.index("c1")
    j = c.ids.index("car_1")
    yaw0, car0 = float(st.yaw[0, i]), float(st.x[0, j])
    for _ in range(10):
        st = engine.step(st, np.zeros(2))
    assert float(st.yaw[0, i]) == pytest.approx(yaw0 + 10 * 0.3 * 0.1)
    assert float(st.x[0, j]) != car0  # the replayed car still moves by its own behaviour
