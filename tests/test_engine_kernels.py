"""The engine's fused compiled step (sim.kernels_path, sim.kernels_ego, sim.idm.idm_one,
sim.mobil.mobil_decide): each equals its own Python source run un-jitted, the compiled IDM equals
the numpy IDM bit for bit, the neighbour search's early rejections change no result, and a world
moves the same whatever batch it is stepped in. numba is a hard dependency: nothing here skips."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest

from sim import engine, kernels
from sim.bench.env import bench_scenario
from sim.dynamics import KinematicBicycle
from sim.engine import _move_actors
from sim.errors import EpisodeStateError
from sim.idm import USE_SVML, IdmArrays, idm_accel, idm_one, idm_pow
from sim.kernels_ego import ego_metrics_nb, ego_move_nb
from sim.kernels_path import path_step_nb
from sim.motion import PathMotion
from sim.safety import TTC_SIGNAL_HORIZON_S


@pytest.fixture(scope="module")
def compiled():
    spec, scn = bench_scenario()
    return engine.compile_scenario(spec, scn)


def _run(c, B, steps, seed=5, *, reset_seed=0):
    st = engine.reset_batch(c, [np.random.default_rng(reset_seed + i) for i in range(B)])
    rng = np.random.default_rng(seed)
    states = []
    for _ in range(steps):
        st = engine.step(st, rng.uniform([-2.0, -0.02], [1.5, 0.02], (B, 2)))
        states.append(st)
        if st.done.any():
            break
    return states


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.view(np.uint8) if a.dtype != object else a


@numba.njit
def _idm_loop(v, vl, g, v0, p):
    out = np.empty_like(v)
    for i in range(v.size):
        out[i] = idm_one(v[i], vl[i], g[i], v0[i], p[0, i], p[1, i], p[2, i], p[3, i], p[4, i], p[5, i])
    return out


def test_compiled_idm_equals_numpy_idm_bit_for_bit():
    rng = np.random.default_rng(0)
    n = 20000
    v = np.where(rng.random(n) < 0.05, 0.0, rng.uniform(-0.5, 25, n))
    vl = rng.uniform(0, 25, n)
    g = np.where(rng.random(n) < 0.2, np.inf, rng.uniform(-3, 90, n))
    v0 = np.where(rng.random(n) < 0.1, rng.uniform(0, 0.05, n), rng.uniform(0, 20, n))
    p = np.stack([rng.uniform(0.5, 3, n), rng.uniform(1, 4, n), rng.uniform(1, 3, n), rng.uniform(0.8, 2, n), rng.choice([4.0, 2.0, 3.5], n), rng.uniform(6, 10, n)])
    want = idm_accel(v, vl, g, v0, IdmArrays(*p))
    got = _idm_loop(v, vl, g, v0, p)
    np.testing.assert_array_equal(_bits(got), _bits(want))
    py = np.array([idm_one.py_func(v[i], vl[i], g[i], v0[i], *p[:, i]) for i in range(300)])
    np.testing.assert_array_equal(_bits(py), _bits(want[:300]))


@numba.njit
def _pow_loop(x, y):
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = idm_pow(x[i], y[i])
    return out


def test_idm_pow_is_numpys_float64_power():
    x = np.random.default_rng(1).uniform(0, 2, 50000)
    y = np.full_like(x, 4.0)
    np.testing.assert_array_equal(_bits(_pow_loop(x, y)), _bits(x**y))
    assert [idm_pow(float(a), 4.0) for a in x[:50]] == (x[:50] ** 4.0).tolist()
    # where numpy's power is SVML's, libm's pow differs from it on some of these: the check has teeth
    libm_differs = any(math.pow(float(a), 4.0) != b for a, b in zip(x[:2000], (x**y)[:2000], strict=True))
    assert libm_differs == USE_SVML


def _reference_neighbours(xy, heading, ds, path_id, s, width_q, props, allowed, window, stride, backward, offset):
    """The neighbour search without its early rejections (one actor after another, every test in
    full): the oracle the kernel's pruned version must match."""
    B, M = s.shape
    N = props.shape[1]
    P = xy.shape[1]
    W = window + 1
    g_out, v_out, w_out = np.full((B, M), np.inf), np.zeros((B, M)), np.full((B, M), -1)
    for b in range(B):
        for m in range(M):
            q, sq = path_id[b, m], s[b, m]
            k0 = int(sq / ds)
            idx = [min(max(k0 + (w - window if backward else w) * stride, 0), P - 1) for w in range(W)]
            wx = [np.float32(xy[q, k, 0]) for k in idx]
            wy = [np.float32(xy[q, k, 1]) for k in idx]
            best, best_n, best_v = np.inf, -1, 0.0
            for n in range(N):
                if not allowed[b, m, n]:
                    continue
                gx, gy = props[b, n, 0], props[b, n, 1]
                fx, fy = np.float32(gx), np.float32(gy)
                dist = [(fx - wx[w]) * (fx - wx[w]) + (fy - wy[w]) * (fy - wy[w]) for w in range(W)]
                kv = idx[int(np.argmin(dist))]
                h = heading[q, kv]
                ch, sh = math.cos(h), math.sin(h)
                rx, ry = gx - xy[q, kv, 0], gy - xy[q, kv, 1]
                s_proj = kv * ds + ch * rx + sh * ry
                lat = ch * ry - sh * rx
                rel = props[b, n, 2] - h
                crel = math.cos(rel)
                cr, sr = abs(crel), abs(math.sin(rel))
                cl, cw = props[b, n, 4], props[b, n, 5]
                gap = (sq - s_proj if backward else s_proj - sq) - 0.5 * (cl * cr + cw * sr)
                ok = s_proj < sq if backward else s_proj > sq
                wq = width_q[min(b, width_q.shape[0] - 1), min(m, width_q.shape[1] - 1)]
                off = offset[min(b, offset.shape[0] - 1), min(m, offset.shape[1] - 1)]
                if ok and abs(lat - 0.5 * off) < 0.5 * (wq + abs(off) + cl * sr + cw * cr) + 0.3 and gap < best:
                    best, best_n, best_v = gap, n, props[b, n, 3] * crel
            if best_n >= 0:
                g_out[b, m], v_out[b, m], w_out[b, m] = best, best_v, best_n
    return g_out, v_out, w_out


def test_neighbour_search_with_early_rejections_equals_the_full_search(compiled):
    c, p = compiled, compiled.paths
    st = _run(c, 3, 30)[-1]
    B, N = st.x.shape
    rng = np.random.default_rng(2)
    props = np.stack([st.x, st.y, st.yaw, st.v, np.broadcast_to(c.length, (B, N)), np.broadcast_to(c.width, (B, N))], axis=-1)
    allowed = st.valid[:, None, :] & c.not_self[None]
    found = 0
    for trial in range(4):
        pid = st.path_id if trial % 2 == 0 else rng.integers(0, p.xy.shape[0], (B, N))
        s = st.s + (0 if trial < 2 else rng.normal(0, 5, (B, N)))
        off = st.d if trial < 2 else rng.normal(0, 2, (B, N))
        for backward in (False, True):
            args = (p.xy, p.heading, p.ds, pid, s, c.width[None, :], props, allowed, 12, 4, backward, off)
            got = kernels.path_neighbours_nb(*args, None, None)
            want = _reference_neighbours(*args)
            for u, w in zip(got, want, strict=True):
                np.testing.assert_array_equal(u, w)
            found += int((got[2] >= 0).sum())
    assert found > 20  # leaders and followers were found: the comparison is not of empty results


def _step_inputs(c, st, k):
    """The engine's step context for ``st`` (its ``pre`` poses and ``spawned``) and the arc lengths
    the path step starts from (the ego's new route progress in column 0)."""
    a = np.tile([[0.5, 0.01]], (st.batch_size, 1))
    o, status = ego_move_nb(st.x, st.y, st.yaw, st.v, st.accel, st.steer, a, c.dt_s, *c.row["ego_move"], c.paths.xy, c.paths.heading, c.paths.ds, st.s, st.terminated, st.truncated)
    assert status == 0
    ctx = _move_actors(st, o, k)
    s0 = st.s.copy()
    s0[:, 0] = o[7]
    return ctx, s0


def test_path_step_equals_its_python_source_on_a_lane_change_step(compiled):
    c = compiled
    states = _run(c, 2, 40)
    every = int(c.row["lc_check_every"][0][c.changes_lanes].max())
    st = next(s for s in states if int(s.step_index[0] + 1) % every == 0)
    k = st.step_index + 1
    ctx, s0 = _step_inputs(c, st, k)
    rows = next(r for m, r in c.motions if m is PathMotion)[0]
    outs = []
    for f in (path_step_nb, path_step_nb.py_func):
        x, y, yaw, v = (a.copy() for a in ctx.pre)
        arrs = [x, y, yaw, v, st.accel.copy(), st.path_id.copy(), s0.copy(), st.d.copy(), st.lc_timer.copy(), st.lc_hold.copy(), st.alive.copy()]
        f(*c.row["path_step"], rows, k, c.dt_s, ctx.spawned, *ctx.pre, st.valid, st.v0_scale, *arrs)
        outs.append(arrs)
    for u, w in zip(*outs, strict=True):
        np.testing.assert_array_equal(_bits(u), _bits(w))
    assert (outs[0][3] != ctx.pre[3]).any()  # actors moved


def test_ego_kernels_equal_their_python_source(compiled):
    c = compiled
    st = _run(c, 3, 20)[-1]
    a = np.random.default_rng(4).uniform([-9, -1], [4, 1], (3, 2))  # some actions beyond the limits
    args = (st.x, st.y, st.yaw, st.v, st.accel, st.steer, a, c.dt_s, *c.row["ego_move"], c.paths.xy, c.paths.heading, c.paths.ds, st.s, st.terminated, st.truncated)
    o, status = ego_move_nb(*args)
    o_py, status_py = ego_move_nb.py_func(*args)
    np.testing.assert_array_equal(o, o_py)
    assert status == status_py == 0 and (o[6] == 1.0).any()
    bad = a.copy()
    bad[1, 0] = np.nan
    assert ego_move_nb(*args[:6], bad, *args[7:])[1] == 1
    assert ego_move_nb(*args[:-2], st.terminated, np.array([False, True, False]))[1] == 2
    margs = (
        st.x, st.y, st.yaw, st.v, c.length, c.width, np.ones_like(st.valid), st.alive, ~st.valid, TTC_SIGNAL_HORIZON_S, *c.row["ego_metrics"],
        o, st.s, st.accel, st.step_index + 1, c.horizon_steps, c.dt_s, c.t0_us, c.dt_us,
    )  # fmt: skip
    for u, w in zip(ego_metrics_nb(*margs), ego_metrics_nb.py_func(*margs), strict=True):
        np.testing.assert_array_equal(u, w)


def test_a_world_moves_the_same_in_any_batch(compiled):
    """World 2 of a batch of 4 equals the same world stepped alone, field by field, over a run
    with lane changes (the compiled step keeps no state across worlds)."""
    c = compiled
    batch = _run(c, 4, 60, seed=9)
    rng = np.random.default_rng(9)
    acts = [rng.uniform([-2.0, -0.02], [1.5, 0.02], (4, 2)) for _ in batch]
    alone = engine.reset_batch(c, [np.random.default_rng(2)])
    changes = 0
    for st, a in zip(batch, acts, strict=True):
        prev = alone.path_id
        alone = engine.step(alone, a[2:3])
        changes += int((alone.path_id != prev).sum())
        for f in engine._ROW_FIELDS:
            np.testing.assert_array_equal(_bits(getattr(alone, f)[0]), _bits(getattr(st, f)[2]), err_msg=f)
    assert changes > 0, "no lane change in the run: pick a longer run"


def test_another_ego_model_keeps_the_models_own_path():
    spec, scn = bench_scenario()
    c = engine.compile_scenario(spec, scn, dynamics=KinematicBicycle(wheelbase=2.76, backend="numpy"))
    assert c.row["ego_move"] is None
    st = engine.reset(c, np.random.default_rng(0))
    st = engine.step(st, np.array([5.0, 0.0]))
    assert st.action_clipped[0] and st.v[0, 0] > 0 and np.isfinite(st.s[0, 0])


def _unfused(c):
    import dataclasses

    return dataclasses.replace(c, row={**c.row, "engine_step": None})


@pytest.mark.parametrize("kind", ["bench", "replay"])
def test_the_fused_step_equals_the_step_through_the_motions(compiled, kind):
    """sim.kernels_ego.engine_step_nb (one call) gives the same states, bit for bit, as the step
    through the ego kernels and each motion (path followers with lane changes; log replay), and
    its arrays are read-only."""
    from sim.spec import ScenarioSpec

    c = compiled if kind == "bench" else engine.compile_scenario(ScenarioSpec())
    assert c.row["engine_step"] is not None
    u = _unfused(c)
    B = 3
    rngs = lambda: [np.random.default_rng(i) for i in range(B)]  # noqa: E731
    fast, slow = engine.reset_batch(c, rngs()), engine.reset_batch(u, rngs())
    rng = np.random.default_rng(4)
    changes = 0
    for _ in range(80):
        a = rng.uniform([-2.0, -0.02], [1.5, 0.02], (B, 2))
        prev = fast.path_id
        fast, slow = engine.step(fast, a), engine.step(slow, a)
        changes += int((fast.path_id != prev).sum())
        for f in engine._ROW_FIELDS:
            got = getattr(fast, f)
            assert not got.flags.writeable, f
            np.testing.assert_array_equal(_bits(got), _bits(getattr(slow, f)), err_msg=f)
        if fast.done.any():
            break
    if kind == "bench":
        assert changes > 0, "no lane change in the run: pick a longer run"
    with pytest.raises(EpisodeStateError):
        engine.step(fast, np.array([np.nan, 0.0]))


def test_the_fused_step_is_used_only_for_the_builtin_motions():
    from sim.dynamics import KinematicBicycle

    spec, scn = bench_scenario()
    c = engine.compile_scenario(spec, scn, dynamics=KinematicBicycle(wheelbase=2.76, backend="numpy"))
    assert c.row["engine_step"] is None
