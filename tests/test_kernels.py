"""The compiled kernels (sim.kernels) are the one implementation of the engine's hot spots: each is
compared here with its own source run un-jitted (``py_func``) on the arrays of a real episode and
on random inputs, bit for bit. numba is a hard dependency: nothing here skips."""

from __future__ import annotations

import numpy as np
import pytest

from sim import engine, kernels
from sim.bench.env import bench_scenario
from sim.observations import ACTOR_FEATURES, EGO_FEATURES, STATE_BOUND


@pytest.fixture(scope="module")
def episode():
    """The 20-car crossroads benchmark, B = 2 worlds, after 25 random steps."""
    spec, scn = bench_scenario()
    c = engine.compile_scenario(spec, scn)
    st = engine.reset_batch(c, [np.random.default_rng(1), np.random.default_rng(2)])
    rng = np.random.default_rng(5)
    for _ in range(25):
        st = engine.step(st, rng.uniform([-3.0, -0.05], [2.0, 0.05], (2, 2)))
    assert not st.done.any()
    return c, st


def _same(a, b):
    for u, w in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,), strict=True):
        assert u.dtype == w.dtype and u.shape == w.shape
        np.testing.assert_array_equal(u, w)


def test_every_kernel_is_compiled():
    for name in kernels.__all__:
        k = getattr(kernels, name)
        assert hasattr(k, "py_func") and callable(k.py_func), name


def test_path_kernels_equal_their_python_source(episode):
    c, st = episode
    p = c.paths
    B, N = st.x.shape
    props = np.stack([st.x, st.y, st.yaw, st.v, np.broadcast_to(c.length, (B, N)), np.broadcast_to(c.width, (B, N))], axis=-1)
    allowed = st.valid[:, None, :] & c.not_self[None]
    wq = c.width[None, :]
    for backward in (False, True):
        args = (p.xy, p.heading, p.ds, st.path_id, st.s, wq, props, allowed, 12, 4, backward, st.d, 1, None)
        out = kernels.path_neighbours_nb(*args)
        _same(out, kernels.path_neighbours_nb.py_func(*args))
        assert (out[2] >= 0).any()  # some leaders found: the comparison is not of empty results
    args = (p.conf_s, p.conf_id, p.conf_lane, st.path_id, st.s, st.v, c.length[None], st.valid, c.row["is_path"], 40.0, 4.0, 8, 6.0, 25.0, p.n_conflicts)
    _same(kernels.conflict_stops_nb(*args), kernels.conflict_stops_nb.py_func(*args))
    args = (p.xy, p.heading, p.ds, st.path_id.ravel(), st.s.ravel(), st.x.ravel() + 0.3, st.y.ravel() - 0.2, 6, 24)
    _same(kernels.project_nb(*args), kernels.project_nb.py_func(*args))
    outs = []
    for f in (kernels.path_motion_nb, kernels.path_motion_nb.py_func):
        arrs = [a.copy() for a in (st.x, st.y, st.yaw, st.v, st.accel, st.s, st.d)] + [st.lc_hold.copy(), st.alive.copy()]
        a = np.random.default_rng(0).uniform(-3, 2, (B, N))
        f(p.xy, p.heading, p.ds, p.end_s, st.path_id, c.row["is_path"] & st.valid, a, 0.1, c.row["lc_rate"][0], 0.2, *arrs)
        outs.append(tuple(arrs))
    _same(outs[0], outs[1])


def test_contact_flags_and_observation_kernels_equal_their_python_source(episode):
    c, st = episode
    ex, ey, eyaw, ev = st.x[:, 0], st.y[:, 0], st.yaw[:, 0], st.v[:, 0]
    others = st.valid.copy()
    others[:, 0] = False
    args = (ex, ey, eyaw, ev, 4.6, 1.9, st.x, st.y, st.yaw, st.v, c.length, c.width, others)
    out = kernels.contact_interval_nb(*args)
    _same(out, kernels.contact_interval_nb.py_func(*args))
    assert np.isfinite(out[0]).any()
    rng = np.random.default_rng(3)
    n = 500
    x, y, yaw = rng.uniform(-40, 40, n), rng.uniform(-40, 40, n), rng.uniform(-7, 7, n)
    ra, ld = c.raster, c.lane_dirs
    args = (ra.mask, ra.x0, ra.y0, ra.res, ld.bits, ld.x0, ld.y0, ld.res, ld.ok_mask, engine.LANE_SECTORS, x, y, yaw, c.corner_lon, c.corner_lat)
    _same(kernels.ego_flags_nb(*args), kernels.ego_flags_nb.py_func(*args))
    p = c.paths
    args = (
        p.xy[0], p.heading[0], p.speed_limit[0], p.ds, c.route_length, c.horizon_steps, c.dt_s, (np.arange(10) + 1.0) * 5.0,
        st.x, st.y, st.yaw, st.v, st.accel, st.steer, st.ego_lat, st.step_index, st.s[:, 0], st.valid,
        c.length, c.width, 8, ACTOR_FEATURES, EGO_FEATURES, STATE_BOUND,
    )  # fmt: skip
    _same(kernels.state_obs_nb(*args), kernels.state_obs_nb.py_func(*args))


def test_bicycle_kernels_equal_their_python_source():
    rng = np.random.default_rng(7)
    n = 300
    x, y, yaw = rng.uniform(-50, 50, n), rng.uniform(-50, 50, n), rng.uniform(-4, 4, n)
    v, acc, st = rng.uniform(0, 30, n), rng.uniform(-8, 3, n), rng.uniform(-0.6, 0.6, n)
    a = np.stack([rng.uniform(-12, 6, n), rng.uniform(-1, 1, n)], axis=-1)
    lim = (8.0, 3.0, 15.0, 0.6, 1.0)
    args = (acc, st, a, 0.1, *lim)
    _same(kernels.bicycle_clip_nb(*args), kernels.bicycle_clip_nb.py_func(*args))
    args = (x, y, yaw, v, acc, st, a, 0.1, *lim, 40.0, 2.8)
    _same(kernels.bicycle_forward_nb(*args), kernels.bicycle_forward_nb.py_func(*args))
