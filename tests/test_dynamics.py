"""Kinematic bicycle: forward/inverse consistency on logged trajectories and the actuation limits."""

from __future__ import annotations

import numpy as np
import pytest

from sim.dynamics import BicycleLimits, BicycleState, KinematicBicycle
from sim.world import crossroads_scene


def _left_turn_track(dt: float = 0.1):
    """A smooth logged drive: approach, left turn through the crossroads, exit (from the map)."""
    from sim.map import LaneMap

    sc = crossroads_scene()
    lm = LaneMap.from_dict(sc.map)
    pl = lm.route_polyline(["E_in_0", "E_0_left", "N_out_0"])
    t = np.arange(0.0, 12.0, dt)
    s = 40.0 + 6.0 * t + 0.1 * t**2  # gently accelerating
    xy, _ = pl.interpolate(s)
    # headings from the path tangent (smooth, like a real log)
    d = np.gradient(xy, axis=0)
    yaw = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
    return xy[:, 0], xy[:, 1], yaw


def test_forward_of_inverse_reproduces_a_logged_trajectory():
    dt = 0.1
    x, y, yaw = _left_turn_track(dt)
    model = KinematicBicycle(wheelbase=2.8, limits=BicycleLimits(jerk_max=1e9, steer_rate_max=1e9, steer_max=1.2))
    states = model.states_from_poses(x, y, yaw, dt)
    s0 = BicycleState(states.x[:-1], states.y[:-1], states.yaw[:-1], states.v[:-1], np.zeros(len(x) - 1), np.zeros(len(x) - 1))
    s1 = BicycleState(states.x[1:], states.y[1:], states.yaw[1:], states.v[1:], np.zeros(len(x) - 1), np.zeros(len(x) - 1))
    actions = model.inverse(s0, s1, dt)
    # one step: heading and speed exactly, position to within 2 cm (the log is not a bicycle path)
    pred = model.forward(s0, actions, dt, clip=False)
    np.testing.assert_allclose(pred.v, s1.v, atol=1e-9)
    np.testing.assert_allclose(np.angle(np.exp(1j * (pred.yaw - s1.yaw))), 0.0, atol=1e-9)
    assert np.max(np.hypot(pred.x - s1.x, pred.y - s1.y)) < 0.02
    # open loop over the whole 12 s log: drift below 0.5 m
    st = BicycleState.from_arrays(states.x[0], states.y[0], states.yaw[0], states.v[0])
    err = []
    for k in range(len(actions)):
        st = model.forward(st, actions[k], dt, clip=False)
        err.append(np.hypot(st.x - x[k + 1], st.y - y[k + 1]))
    assert max(err) < 0.5, max(err)
    # the recovered controls are plausible for a left turn: positive steer at some point, bounded
    assert actions[:, 1].max() > 0.05 and np.abs(actions[:, 1]).max() < 0.6


def test_limits_clip_accel_jerk_steer_and_rate():
    lim = BicycleLimits(accel_max=3.0, decel_max=8.0, jerk_max=10.0, steer_max=0.5, steer_rate_max=1.0)
    m = KinematicBicycle(limits=lim)
    st = BicycleState.from_arrays([0.0], [0.0], [0.0], [10.0])
    dt = 0.1
    u = m.clip_action(st, np.array([[50.0, 2.0]]), dt)
    # from rest: jerk limits accel to 10 m/s^3 * 0.1 s, rate limits steer to 1 rad/s * 0.1 s
    np.testing.assert_allclose(u, [[1.0, 0.1]])
    st = m.forward(st, [[-50.0, -2.0]], dt)
    assert st.accel[0] == pytest.approx(-1.0) and st.steer[0] == pytest.approx(-0.1)
    for _ in range(30):
        st = m.forward(st, [[-50.0, -2.0]], dt)
    assert st.accel[0] == pytest.approx(-8.0) and st.steer[0] == pytest.approx(-0.5)
    # never reverses
    for _ in range(30):
        st = m.forward(st, [[-50.0, 0.0]], dt)
    assert st.v[0] == 0.0


def test_vectorised_over_batch_and_actors_matches_loop():
    rng = np.random.default_rng(3)
    m = KinematicBicycle()
    B, N = 4, 5
    st = BicycleState.from_arrays(rng.normal(size=(B, N)), rng.normal(size=(B, N)), rng.uniform(-3, 3, (B, N)), rng.uniform(0, 15, (B, N)))
    act = np.stack([rng.uniform(-9, 4, (B, N)), rng.uniform(-0.7, 0.7, (B, N))], axis=-1)
    out = m.forward(st, act, 0.1)
    for b in range(B):
        for n in range(N):
            one = BicycleState.from_arrays(st.x[b, n], st.y[b, n], st.yaw[b, n], st.v[b, n])
            o = m.forward(one, act[b, n], 0.1)
            assert o.x == out.x[b, n] and o.y == out.y[b, n] and o.yaw == out.yaw[b, n] and o.v == out.v[b, n]


# ------------------------------------------------------------------------ the dynamics seam
def test_numpy_and_compiled_backends_of_the_bicycle_agree():
    """One model, two evaluations: numpy ufuncs and the compiled kernel run the same arithmetic
    (only tan's last bit may differ), including the (B, N) shapes the kernel sees flattened."""
    rng = np.random.default_rng(11)
    shape = (7, 9)
    st = BicycleState.from_arrays(
        rng.uniform(-50, 50, shape), rng.uniform(-50, 50, shape), rng.uniform(-4, 4, shape), rng.uniform(0, 30, shape),
        rng.uniform(-8, 3, shape), rng.uniform(-0.6, 0.6, shape),
    )  # fmt: skip
    act = np.stack([rng.uniform(-15, 8, shape), rng.uniform(-1.2, 1.2, shape)], axis=-1)
    a, b = KinematicBicycle(), KinematicBicycle(backend="numba")
    np.testing.assert_array_equal(a.clip_action(st, act, 0.1), b.clip_action(st, act, 0.1))
    assert (a.clip_action(st, act, 0.1) != act).any()  # the limits were exercised
    for clip in (True, False):
        u, w = a.forward(st, act, 0.1, clip=clip), b.forward(st, act, 0.1, clip=clip)
        for f in ("x", "y", "yaw", "v", "accel", "steer"):
            np.testing.assert_allclose(getattr(w, f), getattr(u, f), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(w.v, u.v)


class PointMass:
    """A second dynamics model for the seam: action [accel m/s^2, yaw rate rad/s], both clipped,
    no jerk limit; the state's ``steer`` stays 0."""

    def __init__(self, accel_max: float = 2.0, yaw_rate_max: float = 0.5) -> None:
        self.lo = np.array([-6.0, -yaw_rate_max])
        self.hi = np.array([accel_max, yaw_rate_max])

    def clip_action(self, state, action, dt):
        return np.clip(np.asarray(action, np.float64), self.lo, self.hi)

    def forward(self, state, action, dt):
        u = self.clip_action(state, action, dt)
        v1 = np.maximum(state.v + u[..., 0] * dt, 0.0)
        yaw1 = state.yaw + u[..., 1] * dt
        vm = 0.5 * (state.v + v1)
        return BicycleState(state.x + vm * np.cos(yaw1) * dt, state.y + vm * np.sin(yaw1) * dt, yaw1, v1, u[..., 0], np.zeros_like(v1))

    def inverse(self, state, next_state, dt):
        return np.stack([(next_state.v - state.v) / dt, (next_state.yaw - state.yaw) / dt], axis=-1)


def test_a_registered_second_dynamics_model_drives_an_episode():
    from sim import engine
    from sim.dynamics import DYNAMICS, DynamicsModel
    from sim.spec import RemoveOp, ScenarioSpec

    assert isinstance(KinematicBicycle(), DynamicsModel) and isinstance(PointMass(), DynamicsModel)
    try:
        DYNAMICS.register("point_mass", lambda length_m: PointMass())
        assert "point_mass" in DYNAMICS.names()
        c = engine.compile_scenario(ScenarioSpec(horizon_s=3.0, actors=(RemoveOp("car_1"),)), crossroads_scene(), dynamics="point_mass")
        assert isinstance(c.dynamics, PointMass)
        st = engine.reset(c, np.random.default_rng(0))
        yaw0, v0 = float(st.yaw[0, 0]), float(st.v[0, 0])
        hist = [st]
        for _ in range(10):
            st = engine.step(st, np.array([1.0, 0.2]))
            hist.append(st)
        # the point mass's kinematics, not the bicycle's: yaw moves by yaw_rate * dt per step
        assert float(st.yaw[0, 0]) == pytest.approx(yaw0 + 10 * 0.2 * 0.1)
        assert float(st.v[0, 0]) == pytest.approx(v0 + 1.0)
        assert not any(bool(h.action_clipped[0]) for h in hist[1:])
        assert hist[-1].progress[0] > 0.5 and np.isfinite(hist[-1].s[0, 0])
        # beyond its limits: clipped and reported
        st = engine.step(st, np.array([5.0, -2.0]))
        assert st.action_clipped[0] and float(st.accel[0, 0]) == 2.0
        assert float(st.yaw[0, 0]) == pytest.approx(yaw0 + 10 * 0.2 * 0.1 - 0.05)
        # the kinematic bicycle under the same actions drives elsewhere
        cb = engine.compile_scenario(ScenarioSpec(horizon_s=3.0, actors=(RemoveOp("car_1"),)), crossroads_scene())
        sb = engine.reset(cb, np.random.default_rng(0))
        for _ in range(10):
            sb = engine.step(sb, np.array([1.0, 0.2]))
        assert abs(float(sb.yaw[0, 0]) - float(hist[-1].yaw[0, 0])) > 0.05
    finally:
        DYNAMICS._items.pop("point_mass", None)  # the registry as it was (tests never leak entries)
    assert "point_mass" not in DYNAMICS.names()
