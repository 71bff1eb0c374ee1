"""The functional core: determinism, batching, edits in the loop, metrics and episode state errors."""

from __future__ import annotations

import numpy as np
import pytest

from sim import engine
from sim.errors import EpisodeStateError, ScenarioError
from sim.map import LaneMap
from sim.spec import BehaviorSpec, EgoSpec, InsertOp, RemoveOp, RerouteOp, ScenarioSpec, SpawnSpec
from sim.world import crossroads_scene

CAR = (4.5, 1.9, 1.5)


@pytest.fixture(scope="module")
def scene():
    # ego on E_in_1 at s=8 m, 8 m/s; car_1 ahead in the same lane at s=30 m, 8 m/s (log replay)
    return crossroads_scene()


def _run(c, actions, seed=0):
    st = engine.reset(c, np.random.default_rng(seed))
    out = [st]
    for a in actions:
        if st.done[0]:
            break
        st = engine.step(st, a)
        out.append(st)
    return out


def test_same_seed_same_episode_and_batch_equals_singles(scene):
    spec = ScenarioSpec(horizon_s=4.0, logged_behavior=BehaviorSpec("idm", {"v0_jitter": 0.2}))
    c = engine.compile_scenario(spec, scene)
    acts = np.random.default_rng(5).uniform([-2, -0.05], [2, 0.05], size=(40, 2))
    a, b, other = _run(c, acts, 1), _run(c, acts, 1), _run(c, acts, 2)
    for s1, s2 in zip(a, b, strict=True):
        for f in engine._ROW_FIELDS:
            np.testing.assert_array_equal(getattr(s1, f), getattr(s2, f))
    assert not np.array_equal(a[-1].x, other[-1].x)  # the seed matters (desired-speed jitter)
    # three worlds in one batch == three single runs, bit for bit
    st = engine.reset_batch(c, [np.random.default_rng(s) for s in (1, 2, 3)])
    singles = [_run(c, acts, s) for s in (1, 2, 3)]
    for k, a_k in enumerate(acts):
        st = engine.step(st, np.repeat(a_k[None], 3, axis=0))
        for w in range(3):
            ref = singles[w][k + 1]
            np.testing.assert_array_equal(st.x[w], ref.x[0])
            np.testing.assert_array_equal(st.v[w], ref.v[0])
            assert st.min_ttc[w] == ref.min_ttc[0] and st.collision[w] == ref.collision[0]


def test_collision_partner_and_removed_actor_is_gone(scene):
    push = [np.array([3.0, 0.0])] * 60
    hit = _run(engine.compile_scenario(ScenarioSpec(horizon_s=6.0), scene), push)
    last = hit[-1]
    assert last.terminated[0] and last.collision[0] and last.partner_id() == "car_1"
    assert np.isfinite(hit[5].min_ttc[0])  # approaching the car ahead: a finite TTC
    c = engine.compile_scenario(ScenarioSpec(horizon_s=6.0, actors=(RemoveOp("car_1"),)), scene)
    free = _run(c, push)
    assert not any(s.collision[0] for s in free)
    assert "car_1" not in c.ids and all(s.valid[0].sum() == 3 for s in free)  # ego + car_2 + car_3
    w = free[-1].world()
    assert "car_1" not in [w.ids[i] for i in np.flatnonzero(w.valid)]


def test_ttc_matches_constant_velocity_geometry(scene):
    # ego at 10 m/s straight at a parked car 30 m ahead (centre to centre)
    spec = ScenarioSpec(
        horizon_s=2.0,
        ego=EgoSpec(start_speed=10.0),
        actors=(RemoveOp("car_1"), InsertOp("parked", "car", CAR, SpawnSpec(lane="E_in_1", s=38.0), BehaviorSpec("static"))),
    )
    c = engine.compile_scenario(spec, scene)
    st = engine.step(engine.reset(c, np.random.default_rng(0)), np.zeros(2))
    gap = 30.0 - 1.0 - (4.6 + 4.5) / 2  # after the first 0.1 s step at 10 m/s
    assert st.min_ttc[0] == pytest.approx(gap / 10.0, abs=1e-6)


def test_inserted_cut_in_appears_where_specified_and_merges(scene):
    lm = LaneMap.from_dict(scene.map)
    spec = ScenarioSpec(
        horizon_s=6.0,
        actors=(
            RemoveOp("car_1"),
            InsertOp("cutin", "car", CAR, SpawnSpec(lane="E_in_0", s=24.0, speed=9.0), BehaviorSpec("idm", route=("E_in_0", "E_in_1"))),
        ),
    )
    c = engine.compile_scenario(spec, scene)
    hist = _run(c, [np.zeros(2)] * 60)
    i = c.ids.index("cutin")
    xy, h = lm.lanes["E_in_0"].polyline.interpolate(24.0)
    assert (hist[0].x[0, i], hist[0].y[0, i], hist[0].yaw[0, i]) == (pytest.approx(xy[0]), pytest.approx(xy[1]), pytest.approx(float(h)))
    assert hist[0].valid[0, i] and hist[0].v[0, i] == 9.0
    ys = np.array([s.y[0, i] for s in hist])
    assert ys[0] == pytest.approx(-1.75) and abs(ys[-1] - (-5.25)) < 0.05  # ended in the ego's lane
    assert np.all(np.diff(ys) <= 1e-9)  # moved over monotonically
    with pytest.raises(ScenarioError, match="overlaps"):
        engine.compile_scenario(
            ScenarioSpec(actors=(InsertOp("x", "car", CAR, SpawnSpec(lane="E_in_1", s=9.0), BehaviorSpec("idm")),)), scene
        )


def test_rerouted_actor_follows_new_route(scene):
    lm = LaneMap.from_dict(scene.map)
    spec = ScenarioSpec(horizon_s=8.0, actors=(RerouteOp("car_1", route=("E_in_1", "E_1_right", "S_out_1")),))
    c = engine.compile_scenario(spec, scene)
    hist = _run(c, [np.array([-1.0, 0.0])] * 80)
    i = c.ids.index("car_1")
    last = hist[-1]
    lane, _, d = lm.nearest_lane(float(last.x[0, i]), float(last.y[0, i]), float(last.yaw[0, i]))
    assert lane == "S_out_1" and abs(d) < 0.1
    assert np.cos(last.yaw[0, i] + np.pi / 2) > 0.99  # heading south


def test_offroad_and_episode_state_errors(scene):
    c = engine.compile_scenario(ScenarioSpec(horizon_s=10.0, actors=(RemoveOp("car_1"),)), scene)
    st = engine.reset(c, np.random.default_rng(0))
    with pytest.raises(EpisodeStateError, match="finite"):
        engine.step(st, np.array([np.nan, 0.0]))
    with pytest.raises(EpisodeStateError, match="finite"):
        engine.step(st, np.array([0.0, np.inf]))
    while not st.done[0]:
        st = engine.step(st, np.array([1.0, -0.6]))  # hard right off the road
    assert st.offroad[0] and st.terminated[0] and not st.collision[0]
    with pytest.raises(EpisodeStateError, match="reset"):
        engine.step(st, np.zeros(2))


@pytest.mark.parametrize("steer", [-0.6, -0.25, 0.15, 0.4])
def test_offroad_termination_agrees_with_the_offroad_metric(scene, steer):
    # the engine ends an episode for leaving the road only where the metric (nuPlan's 0.3 m
    # drivable tolerance) also counts a footprint corner off the road; never on an in-tolerance graze
    import shapely

    from sim.metrics import DRIVABLE_TOLERANCE_M, box_corners

    c = engine.compile_scenario(ScenarioSpec(horizon_s=12.0, actors=(RemoveOp("car_1"),)), scene)
    area = shapely.union_all([ln.polygon for ln in c.lane_map.lanes.values()])
    st = engine.reset(c, np.random.default_rng(0))
    worst = []
    while not st.done[0]:
        st = engine.step(st, np.array([0.5, steer]))
        corners = box_corners(st.x[:1, 0], st.y[:1, 0], st.yaw[:1, 0], c.length[0], c.width[0]).reshape(-1, 2)
        worst.append(float(shapely.distance(area, shapely.points(corners)).max()))
    # every steer here leaves the road: the episode must end off-road, past the tolerance (not on
    # an in-tolerance graze) and no later than a raster cell beyond it
    assert st.offroad[0] and st.terminated[0]
    assert worst[-1] > DRIVABLE_TOLERANCE_M
    assert all(w <= DRIVABLE_TOLERANCE_M + 0.5 for w in worst[:-1])  # ended within a raster cell


def test_truncated_at_horizon_and_world_view(scene):
    c = engine.compile_scenario(ScenarioSpec(horizon_s=1.0, actors=(RemoveOp("car_1"),)), scene)
    hist = _run(c, [np.zeros(2)] * 20)
    assert len(hist) == 11 and hist[-1].truncated[0] and not hist[-1].terminated[0]
    w = hist[-1].world()
    assert w.ids[0] == "ego" and w.t_us == c.t0_us + 1_000_000
    assert w.x.dtype == np.float64 and w.valid.dtype == np.bool_ and len(w.cls) == len(w.ids)
    assert hist[-1].progress[0] == pytest.approx(0.8, abs=1e-6)  # 8 m/s for 0.1 s along a straight route


def test_contact_interval_matches_brute_force_sampling():
    from sim.safety import contact_interval
    from sim.world import boxes_overlap

    rng = np.random.default_rng(0)
    B, N = 12, 10
    ex, ey, eyaw, ev = rng.uniform(-5, 5, B), rng.uniform(-5, 5, B), rng.uniform(-3, 3, B), rng.uniform(0, 10, B)
    x, y = rng.uniform(-20, 20, (B, N)), rng.uniform(-20, 20, (B, N))
    yaw, v = rng.uniform(-3, 3, (B, N)), rng.uniform(0, 10, (B, N))
    ln, wd = rng.uniform(1, 5, N), rng.uniform(0.5, 2, N)
    mask = rng.random((B, N)) < 0.9
    first, last = contact_interval((ex, ey, eyaw, ev), (4.6, 1.9), (x, y, yaw, v), (ln, wd), mask)
    ts = np.arange(0.0, 6.0, 0.001)
    found = 0
    for b in range(B):
        for n in range(N):
            if not mask[b, n]:
                assert first[b, n] == np.inf and last[b, n] == -np.inf
                continue
            hit = boxes_overlap(
                (ex[b] + ev[b] * np.cos(eyaw[b]) * ts, ey[b] + ev[b] * np.sin(eyaw[b]) * ts, eyaw[b], 4.6, 1.9),
                (x[b, n] + v[b, n] * np.cos(yaw[b, n]) * ts, y[b, n] + v[b, n] * np.sin(yaw[b, n]) * ts, yaw[b, n], ln[n], wd[n]),
            )
            if hit.any():
                found += 1
                assert first[b, n] == pytest.approx(ts[np.argmax(hit)], abs=2e-3)
                end = ts[len(ts) - 1 - np.argmax(hit[::-1])]  # the last sampled contact
                assert last[b, n] == pytest.approx(end, abs=2e-3) or (end > 5.99 and last[b, n] > 5.99)
            else:
                assert first[b, n] > 5.99
    assert found >= 5  # the sample has real contacts, not only misses


def test_wrong_way_on_an_oncoming_lane_and_off_route_through_a_junction(scene):
    route = ("E_in_0", "E_0_left", "N_out_0")  # eastbound, left turn at the junction
    c = engine.compile_scenario(ScenarioSpec(horizon_s=6.0, actors=(RemoveOp("car_1"),), ego=EgoSpec(route=route, start_pose=(-60.0, 1.8, 0.0), start_speed=8.0)), scene)
    lm = c.lane_map
    mid = lm.lanes["W_out_0"].polyline.interpolate(30.0)[0]
    assert not c.lane_dirs.against(mid[0], mid[1], np.pi)  # along the westbound lane
    assert c.lane_dirs.against(mid[0], mid[1], 0.0)  # against it
    # eastbound on the westbound lane, 3.6 m beside the route: the route heading alone agrees
    st = engine.step(engine.reset(c, np.random.default_rng(0)), np.zeros(2))
    assert st.wrong_way[0] and not st.offroad[0] and not st.metrics()["off_route"]
    # on its own lane, straight on through the junction instead of turning left
    c2 = engine.compile_scenario(ScenarioSpec(horizon_s=6.0, actors=(RemoveOp("car_1"),), ego=EgoSpec(route=route, start_pose=(-20.0, -1.8, 0.0), start_speed=8.0)), scene)
    hist = _run(c2, [np.zeros(2)] * 60)
    m = [h.metrics() for h in hist[1:]]
    assert not any(x["wrong_way"] or x["offroad"] for x in m)
    assert not m[0]["off_route"] and m[-1]["off_route"]


def test_ego_flag_kernel_matches_the_rasters(scene):
    from sim.kernels import ego_flags_nb

    assert ego_flags_nb is not None, "numba kernels unavailable (numba missing, or LOOPDRIVE_NO_NUMBA set)"
    c = engine.compile_scenario(ScenarioSpec(horizon_s=1.0), scene)
    rng = np.random.default_rng(3)
    n = 4000
    x, y, yaw = rng.uniform(-40, 40, n), rng.uniform(-40, 40, n), rng.uniform(-7, 7, n)
    ra, ld = c.raster, c.lane_dirs
    off, against = ego_flags_nb(ra.mask, ra.x0, ra.y0, ra.res, ld.bits, ld.x0, ld.y0, ld.res, ld.ok_mask, engine.LANE_SECTORS, x, y, yaw, c.corner_lon, c.corner_lat)
    ce, se = np.cos(yaw), np.sin(yaw)
    cx = x[:, None] + ce[:, None] * c.corner_lon - se[:, None] * c.corner_lat
    cy = y[:, None] + se[:, None] * c.corner_lon + ce[:, None] * c.corner_lat
    np.testing.assert_array_equal(off, ~ra.lookup(cx, cy).all(axis=-1))
    np.testing.assert_array_equal(against, ld.against(x, y, yaw))
    assert 0 < off.sum() < n and 0 < against.sum() < n


def test_synthetic_town_scenarios_share_one_world_whatever_their_horizon():
    """A scenario on a synthetic town runs in the world of the preset's log for any horizon that
    fits in it; only a longer horizon lengthens the drive."""
    from sim.spec import SceneSpec
    from sim.synth import make_scene

    def scene_of(horizon_s: float, start_t_s: float = 0.0):
        return engine.load_scene(ScenarioSpec(scene=SceneSpec(town="tiny", seed=3), ego=EgoSpec(start_t_s=start_t_s), horizon_s=horizon_s))

    log = make_scene("tiny", 3)  # what `loopdrive synth --town tiny --seed 3` writes
    short, mid = scene_of(0.5), scene_of(2.0, start_t_s=0.5)
    for s in (short, mid):
        assert np.array_equal(s.t_us, log.t_us)
        assert [t.id for t in s.tracks] == [t.id for t in log.tracks]
        for a, b in zip(s.tracks, log.tracks, strict=True):
            assert np.array_equal(a.pose, b.pose)
    long = scene_of(6.0)
    assert len(long.t_us) == 62 and long.t_us[-1] >= 6_000_000


def test_state_arrays_are_read_only(scene):
    c = engine.compile_scenario(ScenarioSpec(horizon_s=1.0), scene)
    st0 = engine.reset_batch(c, [np.random.default_rng(0), np.random.default_rng(1)])
    st1 = engine.step(st0, np.array([1.0, 0.0]))
    merged = engine.merge_rows(st1, np.array([True, False]), st0)
    for st in (st0, st1, merged):
        for f in engine._ROW_FIELDS:
            arr = getattr(st, f)
            assert not arr.flags.writeable, f
            with pytest.raises(ValueError, match="read-only"):
                arr[...] = arr
    x_before = st0.x.copy()
    engine.step(st0, np.array([2.0, 0.1]))  # stepping never writes into the state it starts from
    np.testing.assert_array_equal(st0.x, x_before)
    with pytest.raises(ValueError, match="read-only"):
        st1.world().x[0] = 1.0
