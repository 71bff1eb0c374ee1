"""The neighbour search over a per-world grid (sim.kernels_neighbours) returns exactly what the
search over every actor returns: the same gap, speed and slot bits, on crowded worlds of the bench
scenario, on scattered actors far ahead on the rays of the windows' far ends, on a path with a
hairpin (which no box bounds), and inside the engine's compiled path step."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim import engine
from sim.bench.env import bench_scenario
from sim.kernels_neighbours import (
    GRID_MIN_ACTORS,
    grid_alloc_nb,
    grid_build_nb,
    path_neighbours_nb,
    path_reach_nb,
)
from sim.kernels_path import path_step_nb
from sim.motion import PathMotion
from tests.test_engine_kernels import _bits, _reference_neighbours, _run, _step_inputs

N_CROWD = 64


@pytest.fixture(scope="module")
def crowded():
    spec, scn = bench_scenario(N_CROWD)
    c = engine.compile_scenario(spec, scn)
    return c, _run(c, 3, 40)


def _props(c, st):
    B, N = st.x.shape
    return np.stack([st.x, st.y, st.yaw, st.v, np.broadcast_to(c.length, (B, N)), np.broadcast_to(c.width, (B, N))], axis=-1)


def _both(args):
    """The search without a grid and with one in every world (grid_min 1), checked equal."""
    lin = path_neighbours_nb(*args, None, None)
    grid = path_neighbours_nb(*args, 1, None)
    for u, w in zip(lin, grid, strict=True):
        np.testing.assert_array_equal(_bits(u), _bits(w))
    return lin


def test_grid_search_equals_the_search_over_every_actor_on_crowded_worlds(crowded):
    c, states = crowded
    p = c.paths
    st = states[-1]
    B, N = st.x.shape
    props = _props(c, st)
    allowed = st.valid[:, None, :] & c.not_self[None]
    rng = np.random.default_rng(3)
    found = 0
    for trial in range(3):
        pid = st.path_id if trial == 0 else rng.integers(0, p.xy.shape[0], (B, N))
        s = st.s + (0 if trial == 0 else rng.normal(0, 20, (B, N)))
        off = st.d if trial == 0 else rng.normal(0, 2, (B, N))
        for backward in (False, True):
            args = (p.xy, p.heading, p.ds, pid, s, c.width[None, :], props, allowed, 12, 4, backward, off)
            got = _both(args)
            want = _reference_neighbours(*args)
            for u, w in zip(got, want, strict=True):
                np.testing.assert_array_equal(u, w)
            found += int((got[2] >= 0).sum())
    assert found > 100  # leaders and followers were found: not a comparison of empty results


def test_grid_search_finds_leaders_far_along_the_ray_and_ignores_non_finite_actors(crowded):
    """Actors scattered over the whole town (most far from any window: only the far-end ray can
    place them), some at the same spot (ties go to the lower slot), some not finite."""
    c = crowded[0]
    p = c.paths
    rng = np.random.default_rng(11)
    B, N, Q = 4, 90, p.xy.shape[0]
    q = rng.integers(0, Q, (B, N))
    k = rng.integers(0, p.xy.shape[1], (B, N))
    props = np.empty((B, N, 6))
    props[..., 0] = p.xy[q, k, 0] + rng.normal(0, 1.0, (B, N))
    props[..., 1] = p.xy[q, k, 1] + rng.normal(0, 1.0, (B, N))
    props[..., 2] = p.heading[q, k] + rng.normal(0, 0.2, (B, N))
    props[..., 3] = rng.uniform(0, 15, (B, N))
    props[..., 4] = rng.uniform(3.5, 12.0, (B, N))
    props[..., 5] = rng.uniform(1.6, 2.6, (B, N))
    props[:, 5, :] = props[:, 4, :]  # two actors at the same spot: a tie
    props[:, 7, 0] = np.nan
    props[:, 8, 1] = np.inf
    allowed = rng.random((B, N, N)) < 0.9
    allowed[:, np.arange(N), np.arange(N)] = False
    s = rng.uniform(0, p.ds * (p.xy.shape[1] - 1), (B, N))
    found = 0
    for backward in (False, True):
        args = (p.xy, p.heading, p.ds, q, s, np.full((1, 1), 3.5), props, allowed, 12, 4, backward, rng.normal(0, 1, (B, N)))
        got = _both(args)
        want = _reference_neighbours(*args)
        for u, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(u, w)
        found += int((got[2] >= 0).sum())
        assert not np.isin(got[2], [7, 8]).any()
    assert found > 50


def test_a_hairpin_path_has_no_reach_and_is_searched_exactly():
    """A path turning back on itself within a window stride has no bounded region: its reach is
    infinite and its queries test every actor, with the same answer."""
    P, ds = 400, 1.0
    t = np.arange(P) * ds
    straight = np.stack([t, np.zeros(P)], axis=-1)
    # straight for 150 m, a hairpin of radius 1.2 m, straight back
    ang = np.clip((t - 150.0) / 1.2, 0.0, math.pi)
    hx = np.where(t < 150.0, t, 150.0 + 1.2 * np.sin(ang) - np.clip(t - 150.0 - 1.2 * math.pi, 0, None))
    hy = np.where(t < 150.0, 0.0, 1.2 - 1.2 * np.cos(ang))
    hairpin = np.stack([hx, hy], axis=-1)
    xy = np.stack([straight, hairpin])
    heading = np.arctan2(np.gradient(xy[..., 1], axis=1), np.gradient(xy[..., 0], axis=1))
    reach = path_reach_nb(xy, heading, ds, 4)
    assert math.isfinite(reach[0, 0]) and not math.isfinite(reach[1, 0])
    rng = np.random.default_rng(5)
    B, N = 3, 60
    props = np.empty((B, N, 6))
    props[..., 0] = rng.uniform(100, 170, (B, N))
    props[..., 1] = rng.uniform(-2, 5, (B, N))
    props[..., 2] = rng.uniform(-math.pi, math.pi, (B, N))
    props[..., 3] = rng.uniform(0, 10, (B, N))
    props[..., 4] = 4.5
    props[..., 5] = 1.9
    allowed = np.ones((B, N, N), dtype=bool)
    allowed[:, np.arange(N), np.arange(N)] = False
    q = np.tile(np.array([0, 1] * (N // 2)), (B, 1))
    s = rng.uniform(110, 160, (B, N))
    for backward in (False, True):
        args = (xy, heading, ds, q, s, np.full((1, 1), 3.5), props, allowed, 12, 4, backward, np.zeros((1, 1)))
        got = _both(args)
        for u, w in zip(got, _reference_neighbours(*args), strict=True):
            np.testing.assert_array_equal(u, w)
        assert (got[2][:, 1::2] >= 0).any()  # leaders found on the hairpin


def test_grid_build_bins_every_finite_actor_once():
    rng = np.random.default_rng(2)
    N = 70
    px, py = rng.uniform(-500, 900, N), rng.uniform(0, 40, N)
    px[3] = np.nan
    incl = rng.random(N) < 0.8
    gf, gi = grid_alloc_nb(N, 1)
    grid_build_nb(px, py, np.full(N, 4.5), np.full(N, 1.9), incl, gf, gi)
    nx, ny, cap = gi[0], gi[1], gi[3]
    assert 0 < nx * ny <= cap and gf[4] == pytest.approx(6.4)
    starts = gi[5 : 6 + nx * ny]
    items = gi[6 + cap : 6 + cap + starts[-1]]
    assert sorted(items.tolist()) == [n for n in range(N) if incl[n] and n != 3]
    for cell in range(nx * ny):  # every actor in the cell its position falls in
        for n in gi[6 + cap + starts[cell] : 6 + cap + starts[cell + 1]]:
            i = min(int((px[n] - gf[0]) * gf[3]), nx - 1)
            j = min(int((py[n] - gf[1]) * gf[3]), ny - 1)
            assert i * ny + j == cell
    gf, gi = grid_alloc_nb(N, N + 1)  # fewer actors than the grid's minimum: no grid this step
    grid_build_nb(px, py, np.full(N, 4.5), np.full(N, 1.9), incl, gf, gi)
    assert gi[0] == 0


def test_the_engine_path_step_is_the_same_bits_with_and_without_its_grid(crowded):
    c, states = crowded
    assert len(c.length) >= GRID_MIN_ACTORS and c.row["path_step"][-1] == GRID_MIN_ACTORS  # the engine uses a grid here
    st = states[-1]
    k = st.step_index + 1
    ctx, s0 = _step_inputs(c, st, k)
    rows = next(r for m, r in c.motions if m is PathMotion)[0]
    outs = []
    for grid_min in (None, 1):
        x, y, yaw, v = (a.copy() for a in ctx.pre)
        arrs = [x, y, yaw, v, st.accel.copy(), st.path_id.copy(), s0.copy(), st.d.copy(), st.lc_timer.copy(), st.lc_hold.copy(), st.alive.copy()]
        path_step_nb(*c.row["path_step"][:-1], grid_min, rows, k, c.dt_s, ctx.spawned, *ctx.pre, st.valid, st.v0_scale, *arrs)
        outs.append(arrs)
    for u, w in zip(*outs, strict=True):
        np.testing.assert_array_equal(_bits(u), _bits(w))
    assert (outs[0][3] != ctx.pre[3]).any()  # actors moved


def test_bench_neighbours_writes_both_ways_per_size_and_refuses_bad_sizes(tmp_path):
    import json

    from typer.testing import CliRunner

    from sim.cli import app

    out = tmp_path / "nb.json"
    r = CliRunner().invoke(app, ["bench", "neighbours", "--sizes", "20,50", "--worlds", "2", "--seconds", "0.2", "--rounds", "1", "-o", str(out)])
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())["rows"]
    assert [x["actors"] for x in rows] == [21, 51]  # the ego is a slot too
    assert all(x["same_answer"] and x["us_per_query_grid"] > 0 and x["us_per_query_every_actor"] > 0 for x in rows)
    assert [x["engine_uses_grid"] for x in rows] == [False, True] and rows[1]["leaders_found"] > 0
    bad = CliRunner().invoke(app, ["bench", "neighbours", "--sizes", "1", "-o", str(tmp_path / "x.json")])
    assert bad.exit_code == 2 and not (tmp_path / "x.json").exists()
