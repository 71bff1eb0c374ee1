"""``loopdrive bench env``: closed-loop env throughput against highway-env, measured in one run.

Both simulators step 20 vehicles besides the ego at a 0.1 s simulation step with a constant
"keep going" action and rendering off, resetting whenever an episode ends (the reset cost is part
of the figure, as in an RL loop). Figures:

* loopdrive single env (``gymnasium.make``, ``state`` observation): env steps per wall second and
  simulated seconds per wall second;
* loopdrive batched (``gymnasium.make_vec(..., vectorization_mode="vector_entry_point")``) at
  B = 1, 16, 64, 256: world steps per wall second (B x vector steps) and simulated seconds per wall
  second;
* highway-env ``highway-v0`` (``Kinematics`` observation, ``simulation_frequency=10``,
  ``policy_frequency=10``, ``vehicles_count=20``, no rendering), when ``highway-env`` is
  installed (the ``bench`` extra); otherwise reported as unavailable.

The world is the built-in crossroads (:func:`sim.world.crossroads_scene`): 20 IDM + MOBIL cars on
the approach lanes driving through a 4-way intersection (yielding at its conflict points), the ego
driving its lane straight on.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sim.spec import BehaviorSpec, InsertOp, ScenarioSpec, SpawnSpec

__all__ = ["bench_scenario", "measure_highway_env", "measure_loopdrive", "measure_loopdrive_batched", "run_bench"]

log = logging.getLogger(__name__)

DT_S = 0.1
N_VEHICLES = 20


def bench_scenario(n_vehicles: int = N_VEHICLES, horizon_s: float = 40.0) -> tuple[ScenarioSpec, Any]:
    """The benchmark scenario: the crossroads with ``n_vehicles`` IDM/MOBIL cars (every fourth
    one MOBIL) spread over the eight approach lanes, and the scene."""
    from sim.map import LaneMap
    from sim.world import crossroads_scene

    scene = crossroads_scene(actors=(), ego_lane="W_in_1", ego_s=10.0, ego_speed=8.0, duration_s=horizon_s + 1.0, dt_s=DT_S)
    lm = LaneMap.from_dict(scene.map)
    lanes = [ln for ln in lm.lane_ids if "_in_" in ln]
    rng = np.random.default_rng(0)
    ops = []
    for i in range(n_vehicles):
        ln = lanes[i % len(lanes)]
        row = i // len(lanes)
        s = 25.0 + 16.0 * row + float(rng.uniform(0.0, 3.0))
        succ = lm.lanes[ln].successors
        route = (ln, succ[int(rng.integers(len(succ)))])
        beh = "mobil" if i % 4 == 3 else "idm"
        ops.append(InsertOp(f"v{i}", "car", (4.5, 1.9, 1.5), SpawnSpec(lane=ln, s=s, speed=8.0), BehaviorSpec(beh, {"v0_jitter": 0.1}, route=route)))
    spec = ScenarioSpec(name="bench-crossroads", actors=tuple(ops), horizon_s=horizon_s, dt_s=DT_S, max_actors=n_vehicles)
    return spec, scene


def measure_loopdrive(seconds: float = 5.0) -> dict[str, Any]:
    """Single env steps per wall second (``state`` observation, normalized control action)."""
    import gymnasium as gym

    import sim  # noqa: F401 - registers the env

    spec, scene = bench_scenario()
    env = gym.make("loopdrive/ClosedLoop-v0", scenario=spec, scene=scene)
    env.reset(seed=0)
    a = np.zeros(2, dtype=np.float32)
    for _ in range(20):  # warm-up
        _, _, te, tr, _ = env.step(a)
        if te or tr:
            env.reset()
    n = resets = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(50):
            _, _, te, tr, _ = env.step(a)
            n += 1
            if te or tr:
                env.reset()
                resets += 1
    wall = time.perf_counter() - t0
    env.close()
    return {"steps": n, "resets": resets, "wall_s": round(wall, 3), "steps_per_s": n / wall, "sim_s_per_wall_s": n * DT_S / wall}


def measure_loopdrive_batched(num_envs: int, seconds: float = 5.0) -> dict[str, Any]:
    """World steps per wall second of the vector env with ``num_envs`` worlds."""
    import gymnasium as gym

    import sim  # noqa: F401

    spec, scene = bench_scenario()
    venv = gym.make_vec("loopdrive/ClosedLoop-v0", num_envs=num_envs, vectorization_mode="vector_entry_point", scenario=spec, scene=scene)
    venv.reset(seed=0)
    a = np.zeros((num_envs, 2), dtype=np.float32)
    for _ in range(3):
        venv.step(a)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        venv.step(a)
        n += 1
    wall = time.perf_counter() - t0
    venv.close()
    ws = n * num_envs / wall
    return {"num_envs": num_envs, "vector_steps": n, "wall_s": round(wall, 3), "world_steps_per_s": ws, "sim_s_per_wall_s": ws * DT_S}


def measure_highway_env(seconds: float = 5.0) -> dict[str, Any]:
    """highway-env ``highway-v0`` steps per wall second, or ``{"available": False}``."""
    try:
        import gymnasium as gym
        import highway_env  # noqa: F401
    except Exception as exc:  # not installed (optional ``bench`` extra) or broken
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    cfg = {
        "observation": {"type": "Kinematics"},
        "simulation_frequency": 10,
        "policy_frequency": 10,
        "vehicles_count": N_VEHICLES,
        "duration": 40,
        "offscreen_rendering": True,
    }
    env = gym.make("highway-v0", config=cfg)
    env.reset(seed=0)
    idle = 1  # DiscreteMetaAction IDLE
    n = resets = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, te, tr, _ = env.step(idle)
        n += 1
        if te or tr:
            env.reset()
            resets += 1
    wall = time.perf_counter() - t0
    env.close()
    import highway_env as he

    return {
        "available": True,
        "version": getattr(he, "__version__", "unknown"),
        "steps": n,
        "resets": resets,
        "wall_s": round(wall, 3),
        "steps_per_s": n / wall,
        "sim_s_per_wall_s": n * DT_S / wall,
    }


def run_bench(
    out: str | os.PathLike[str] = "benchmarks/results/env.json",
    *,
    seconds: float = 5.0,
    batch_sizes: tuple[int, ...] = (1, 16, 64, 256),
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure everything in one run and write the JSON (atomically) to ``out``; returns it."""

    def say(msg: str) -> None:
        if progress is not None:
            progress(msg)

    say("highway-env highway-v0")
    hw = measure_highway_env(seconds)
    say("loopdrive single env")
    single = measure_loopdrive(seconds)
    batched = []
    for b in batch_sizes:
        say(f"loopdrive batched B={b}")
        batched.append(measure_loopdrive_batched(b, seconds))
    res: dict[str, Any] = {
        "benchmark": "env",
        "dt_s": DT_S,
        "vehicles": N_VEHICLES,
        "seconds_per_measurement": seconds,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__},
        "highway_env": hw,
        "loopdrive_single": single,
        "loopdrive_batched": batched,
    }
    if hw.get("available"):
        ref = hw["sim_s_per_wall_s"]
        res["ratios"] = {
            "single_vs_highway_env": single["sim_s_per_wall_s"] / ref,
            "batched_best_vs_highway_env": max(b["sim_s_per_wall_s"] for b in batched) / ref,
            **{f"batched_B{b['num_envs']}_vs_highway_env": b["sim_s_per_wall_s"] / ref for b in batched},
        }
        res["targets"] = {"single_x": 20.0, "batched_x": 100.0}
    outp = Path(out)
    outp.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=outp.parent, prefix=f".{outp.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(res, f, indent=2)
    os.replace(tmp, outp)
    return res
