"""``loopdrive bench neighbours``: how the car-following neighbour search scales with the number of
actors in a world, over every actor and over the per-world grid (:mod:`sim.kernels_neighbours`),
and the engine's step at those sizes.

For each size N the bench scenario (:func:`sim.bench.env.bench_scenario`, the crossroads with N
cars, arms grown to fit them) runs B worlds for a few seconds of random driving; the leader query
of every path follower in that state is then timed both ways (process time, interleaved rounds,
medians), the two answers are checked to be the same bits, and the vector env's world-steps/s at
that N is measured with random per-world actions (the engine uses the grid from
:data:`sim.kernels_neighbours.GRID_MIN_ACTORS` actors up). Units: microseconds, steps per second.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sim.fsutil import atomic_write_text
from sim.machine import machine_info

__all__ = ["DEFAULT_SIZES", "run_neighbours_bench"]

log = logging.getLogger(__name__)

#: actors per world of the default run
DEFAULT_SIZES = (20, 64, 160, 320)


def _timed(fn: Callable[[], Any], seconds: float) -> float:
    """Process seconds per call of ``fn`` over about ``seconds`` (at least 3 calls)."""
    fn()
    n = 0
    t0 = time.process_time()
    while n < 3 or time.process_time() - t0 < seconds:
        fn()
        n += 1
    return (time.process_time() - t0) / n


def _size_row(n_actors: int, worlds: int, seconds: float, rounds: int, seed: int) -> dict[str, Any]:
    import gymnasium as gym

    import sim.env  # noqa: F401 - registers the env ids
    from sim import engine
    from sim.bench.env import bench_scenario
    from sim.kernels_neighbours import GRID_MIN_ACTORS, path_neighbours_nb, path_reach_nb

    spec, scene = bench_scenario(n_actors)
    c = engine.compile_scenario(spec, scene)
    rng = np.random.default_rng(seed)
    st = engine.reset_batch(c, [np.random.default_rng(seed + i) for i in range(worlds)])
    for _ in range(30):
        nxt = engine.step(st, rng.uniform([-1.0, -0.02], [1.0, 0.02], (worlds, 2)))
        if nxt.done.any():
            break
        st = nxt
    p = c.paths
    B, N = st.x.shape
    props = np.stack([st.x, st.y, st.yaw, st.v, np.broadcast_to(c.length, (B, N)), np.broadcast_to(c.width, (B, N))], axis=-1)
    allowed = st.valid[:, None, :] & c.not_self[None]
    reach = path_reach_nb(p.xy, p.heading, p.ds, 4)
    args = (p.xy, p.heading, p.ds, st.path_id, st.s, c.width[None, :], props, allowed, 12, 4, False, st.d)
    lin = path_neighbours_nb(*args, None, reach)
    grid = path_neighbours_nb(*args, 1, reach)
    same = all(np.array_equal(np.ascontiguousarray(u).view(np.uint8), np.ascontiguousarray(w).view(np.uint8)) for u, w in zip(lin, grid, strict=True))
    queries = B * N
    t_lin, t_grid = [], []
    for _ in range(rounds):
        t_lin.append(_timed(lambda: path_neighbours_nb(*args, None, reach), seconds / (2 * rounds)) / queries * 1e6)
        t_grid.append(_timed(lambda: path_neighbours_nb(*args, 1, reach), seconds / (2 * rounds)) / queries * 1e6)
    venv = gym.make_vec("loopdrive/ClosedLoop-v0", num_envs=worlds, vectorization_mode="vector_entry_point", scenario=spec, scene=scene)
    try:
        venv.reset(seed=seed)
        lo, hi = venv.single_action_space.low, venv.single_action_space.high
        pool = rng.uniform(lo, hi, size=(64, worlds, lo.shape[0])).astype(venv.single_action_space.dtype)
        k = [0]

        def step() -> None:
            for _ in range(10):
                venv.step(pool[k[0] % 64])
                k[0] += 1

        per = [_timed(step, seconds / rounds) for _ in range(rounds)]
    finally:
        venv.close()
    ml, mg = statistics.median(t_lin), statistics.median(t_grid)
    return {
        "actors": N, "worlds": B, "queries": queries, "leaders_found": int((lin[2] >= 0).sum()), "same_answer": bool(same),
        "us_per_query_every_actor": round(ml, 4), "us_per_query_grid": round(mg, 4), "grid_speedup": round(ml / mg, 2),
        "engine_uses_grid": N >= GRID_MIN_ACTORS, "vector_env_world_steps_per_s": round(10 * worlds / statistics.median(per)),
    }  # fmt: skip


def run_neighbours_bench(out: Path, *, sizes: Sequence[int] = DEFAULT_SIZES, worlds: int = 16, seconds: float = 4.0, rounds: int = 3, seed: int = 0,
                         progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every size in ``sizes`` (actors per world) and write the result JSON to ``out``
    (atomically). ``seconds`` per size and way; figures are medians of ``rounds`` rounds."""
    import json

    rows = []
    for n in sizes:
        if progress:
            progress(f"{n} actors")
        rows.append(_size_row(int(n), worlds, seconds, rounds, seed))
        log.info("neighbours bench: %s", rows[-1])
    res = {
        "benchmark": "neighbours", "sizes": list(sizes), "worlds": worlds, "seconds": seconds, "rounds": rounds, "seed": seed,
        "machine": machine_info(),
        "rows": rows,
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(res, indent=2) + "\n")
    return res
