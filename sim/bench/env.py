"""``loopdrive bench env``: closed-loop env throughput against highway-env, measured in one run.

Both simulators step 20 vehicles besides the ego at a 0.1 s simulation step with a constant
"keep going" action and rendering off, resetting whenever an episode ends (the reset cost is part
of the figure, as in an RL loop). Figures:

* loopdrive single env (``gymnasium.make``, ``state`` observation): env steps per wall second and
  simulated seconds per wall second (the figures are medians of interleaved slices, see
  :func:`run_bench`: the machine may be shared);
* loopdrive batched (``gymnasium.make_vec(..., vectorization_mode="vector_entry_point")``) at
  B = 1, 16, 64, 256: world steps per wall second (B x vector steps) and simulated seconds per wall
  second;
* highway-env ``highway-v0`` (``Kinematics`` observation, ``simulation_frequency=10``,
  ``policy_frequency=10``, ``vehicles_count=20``, no rendering), when ``highway-env`` is
  installed (the ``bench`` extra); otherwise reported as unavailable;
* SB3 PPO environment steps per wall second (``sb3_ppo``, :func:`bench_sb3_ppo`): the batched env
  through the SB3 adapter (:mod:`sim.vec_sb3`) against SB3's ``DummyVecEnv`` of single envs, B = 16.

The world is the built-in crossroads (:func:`sim.world.crossroads_scene`): 20 IDM + MOBIL cars on
the approach lanes driving through a 4-way intersection (yielding at its conflict points), the ego
driving its lane straight on.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sim.fsutil import atomic_write_text
from sim.spec import BehaviorSpec, InsertOp, ScenarioSpec, SpawnSpec

__all__ = ["bench_sb3_ppo", "bench_scenario", "run_bench"]

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


class _Runner:
    """One system under test: ``run(seconds)`` steps it for about that long and returns
    (simulated seconds, wall seconds)."""

    def __init__(self, name: str, step: Callable[[], float]) -> None:
        self.name = name
        self._step = step
        self.rates: list[float] = []  # simulated s per wall s of each slice

    def run(self, seconds: float) -> None:
        sim_s = 0.0
        t0 = time.perf_counter()
        while True:
            for _ in range(5):
                sim_s += self._step()
            wall = time.perf_counter() - t0
            if wall >= seconds:
                break
        self.rates.append(sim_s / wall)


def _loopdrive_single() -> tuple[Any, Callable[[], float]]:
    import gymnasium as gym

    import sim  # noqa: F401 - registers the env

    spec, scene = bench_scenario()
    env = gym.make("loopdrive/ClosedLoop-v0", scenario=spec, scene=scene)
    env.reset(seed=0)
    a = np.zeros(2, dtype=np.float32)

    def step() -> float:
        _, _, te, tr, _ = env.step(a)
        if te or tr:
            env.reset()
        return DT_S

    return env, step


def _loopdrive_vector(num_envs: int) -> tuple[Any, Callable[[], float]]:
    import gymnasium as gym

    import sim  # noqa: F401

    spec, scene = bench_scenario()
    venv = gym.make_vec("loopdrive/ClosedLoop-v0", num_envs=num_envs, vectorization_mode="vector_entry_point", scenario=spec, scene=scene)
    venv.reset(seed=0)
    a = np.zeros((num_envs, 2), dtype=np.float32)

    def step() -> float:
        venv.step(a)  # finished worlds reset themselves on the next step
        return DT_S * num_envs

    return venv, step


def _highway_env() -> tuple[Any, Callable[[], float], str]:
    import gymnasium as gym
    import highway_env

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

    def step() -> float:
        _, _, te, tr, _ = env.step(1)  # DiscreteMetaAction IDLE
        if te or tr:
            env.reset()
        return DT_S

    return env, step, str(getattr(highway_env, "__version__", "unknown"))


def _setup_runners(batch_sizes: tuple[int, ...], say: Callable[[str], None]) -> tuple[list[_Runner], list[Any], dict[str, Any]]:
    """The systems to measure (highway-env when installed, loopdrive single, loopdrive batched at
    each B), what to close afterwards, and highway-env's description (or why it is unavailable)."""
    runners: list[_Runner] = []
    closers: list[Any] = []
    hw: dict[str, Any]
    say("setting up highway-env")
    try:
        env, st, ver = _highway_env()
        runners.append(_Runner("highway_env", st))
        closers.append(env)
        hw = {"available": True, "version": ver, "env": "highway-v0", "observation": "Kinematics", "simulation_frequency": 10, "policy_frequency": 10, "vehicles_count": N_VEHICLES}
    except Exception as exc:  # not installed (optional ``bench`` extra) or broken
        hw = {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    say("setting up loopdrive")
    env, st = _loopdrive_single()
    runners.append(_Runner("loopdrive_single", st))
    closers.append(env)
    for b in batch_sizes:
        venv, st = _loopdrive_vector(b)
        runners.append(_Runner(f"loopdrive_B{b}", st))
        closers.append(venv)
    return runners, closers, hw


def _measure_interleaved(runners: list[_Runner], seconds: float, rounds: int, say: Callable[[str], None]) -> None:
    """A 0.2 s warm-up of every system (not recorded), then ``rounds`` rounds giving each system
    a slice of ``seconds / rounds`` wall seconds in turn (recorded in ``_Runner.rates``)."""
    for r in runners:
        r.run(0.2)
        r.rates.clear()
    slice_s = seconds / max(1, rounds)
    for k in range(rounds):
        for r in runners:
            say(f"round {k + 1}/{rounds}: {r.name}")
            r.run(slice_s)


def _figure(r: _Runner, per_step: float) -> dict[str, Any]:
    """Median and best simulated seconds per wall second of a system's slices, and steps per
    second (``per_step`` simulated seconds a step)."""
    med = float(np.median(r.rates))
    return {"sim_s_per_wall_s": med, "sim_s_per_wall_s_best": float(max(r.rates)), "steps_per_s": med / per_step, "slices": [round(x, 3) for x in r.rates]}


def _ratios(single: dict[str, Any], batched: list[dict[str, Any]], ref: float) -> dict[str, float]:
    """loopdrive's rates relative to highway-env's (``ref`` simulated s per wall s)."""
    return {
        "single_vs_highway_env": single["sim_s_per_wall_s"] / ref,
        "batched_best_vs_highway_env": max(b["sim_s_per_wall_s"] for b in batched) / ref,
        **{f"batched_B{b['num_envs']}_vs_highway_env": b["sim_s_per_wall_s"] / ref for b in batched},
    }


def run_bench(
    out: str | os.PathLike[str] = "benchmarks/results/env.json",
    *,
    seconds: float = 5.0,
    batch_sizes: tuple[int, ...] = (1, 16, 64, 256),
    rounds: int = 5,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure every system in one run and write the JSON (atomically) to ``out``; returns it.

    The machine may be shared, so the systems are measured **interleaved**: ``rounds`` rounds, each
    giving every system a slice of ``seconds / rounds`` wall seconds in turn; the figure of a
    system is the median of its slices (the best slice is reported too). Ratios use medians.
    """

    def say(msg: str) -> None:
        if progress is not None:
            progress(msg)

    runners, closers, hw = _setup_runners(batch_sizes, say)
    _measure_interleaved(runners, seconds, rounds, say)
    for c in closers:
        c.close()
    by = {r.name: r for r in runners}
    if hw["available"]:
        hw.update(_figure(by["highway_env"], DT_S))
    single = _figure(by["loopdrive_single"], DT_S)
    batched = []
    for b in batch_sizes:
        f = _figure(by[f"loopdrive_B{b}"], DT_S)
        f["world_steps_per_s"] = f.pop("steps_per_s")
        batched.append({"num_envs": b, **f})
    res: dict[str, Any] = {
        "benchmark": "env",
        "dt_s": DT_S,
        "vehicles": N_VEHICLES,
        "scenario": "built-in crossroads, 20 IDM/MOBIL cars (sim.bench.env.bench_scenario), state observation",
        "wall_s_per_system": seconds,
        "rounds": rounds,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__, "load_avg_1min": round(os.getloadavg()[0], 2)},
        "highway_env": hw,
        "loopdrive_single": single,
        "loopdrive_batched": batched,
    }
    if hw["available"]:
        res["ratios"] = _ratios(single, batched, hw["sim_s_per_wall_s"])
        res["targets"] = {"single_x": 20.0, "batched_x": 100.0}
    res["sb3_ppo"] = bench_sb3_ppo(quick=seconds < 5.0, progress=progress)
    outp = Path(out)
    outp.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(outp, json.dumps(res, indent=2))
    return res


# ============================================================================ SB3 PPO throughput
def _sb3_systems(num_envs: int) -> dict[str, Any]:
    """The two SB3 VecEnvs of the PPO row: the adapter over the batched engine and DummyVecEnv of
    single envs, same scenario and B."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from sim.env import ClosedLoopEnv
    from sim.vec_sb3 import make_sb3_vec_env

    spec, scene = bench_scenario()
    return {
        "loopdrive_sb3_adapter": make_sb3_vec_env(num_envs, scenario=spec, scene=scene),
        "dummy_vec_env": DummyVecEnv([lambda: ClosedLoopEnv(spec, scene=scene) for _ in range(num_envs)]),
    }


def _rollout_clock() -> Any:
    """An SB3 callback summing the wall seconds spent in ``collect_rollouts`` (``.seconds``)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Clock(BaseCallback):
        seconds = 0.0
        _t0 = 0.0

        def _on_rollout_start(self) -> None:
            self._t0 = time.perf_counter()

        def _on_rollout_end(self) -> None:
            self.seconds += time.perf_counter() - self._t0

        def _on_step(self) -> bool:
            return True

    return Clock()


def _sb3_slices(num_envs: int, ppo_kw: dict[str, int], rounds: int, progress: Callable[[str], None] | None) -> dict[str, list[tuple[float, float]]]:
    """(train, rollout) steps per wall second of every round and system, systems interleaved."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    systems = _sb3_systems(num_envs)
    models = {}
    for name, venv in systems.items():
        venv.reset()
        for _ in range(3):  # warm-up (numba kernels, first allocations)
            venv.step(np.zeros((num_envs, *venv.action_space.shape), np.float32))
        models[name] = PPO("MlpPolicy", venv, seed=0, device="cpu", verbose=0, **ppo_kw)
        models[name].set_logger(Logger(folder=None, output_formats=[]))
    per_round = ppo_kw["n_steps"] * num_envs
    slices: dict[str, list[tuple[float, float]]] = {n: [] for n in systems}
    for k in range(rounds):
        for name, model in models.items():
            if progress is not None:
                progress(f"SB3 PPO round {k + 1}/{rounds}: {name}")
            clock = _rollout_clock()
            t0 = time.perf_counter()
            model.learn(total_timesteps=per_round, reset_num_timesteps=False, callback=clock)
            wall = time.perf_counter() - t0
            slices[name].append((per_round / wall, per_round / clock.seconds))
    for venv in systems.values():
        venv.close()
    return slices


def bench_sb3_ppo(
    num_envs: int = 16,
    *,
    quick: bool = False,
    rounds: int = 3,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """SB3 PPO environment steps per wall second on the native batched env (through
    :mod:`sim.vec_sb3`) and on SB3's ``DummyVecEnv`` of ``num_envs`` single envs, same scenario
    (:func:`bench_scenario`) and B.

    ``PPO("MlpPolicy", n_steps=128, batch_size=256, n_epochs=4)`` on the CPU with one torch thread
    (``n_steps=32``, one round when ``quick``); each round trains every system for one rollout of
    ``n_steps * num_envs`` steps, interleaved. Figures are medians over the rounds:
    ``train_steps_per_s`` (``learn()`` wall time, gradient updates included) and
    ``rollout_steps_per_s`` (``collect_rollouts`` only: env steps and policy inference). Returns
    ``{"available": False, "reason": ...}`` without stable-baselines3 (the ``dev`` extra).
    """
    try:
        import stable_baselines3
        import torch
    except ImportError as exc:
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    n_steps, rounds = (32, 1) if quick else (128, rounds)
    ppo_kw = {"n_steps": n_steps, "batch_size": min(256, n_steps * num_envs), "n_epochs": 4}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks on a shared CPU
    load0 = os.getloadavg()[0]
    try:
        slices = _sb3_slices(num_envs, ppo_kw, rounds, progress)
    finally:
        torch.set_num_threads(threads)

    def fig(rows: list[tuple[float, float]]) -> dict[str, Any]:
        return {
            "train_steps_per_s": float(np.median([r[0] for r in rows])),
            "rollout_steps_per_s": float(np.median([r[1] for r in rows])),
            "slices": [[round(a, 1), round(b, 1)] for a, b in rows],
        }

    out: dict[str, Any] = {
        "available": True,
        "num_envs": num_envs,
        "ppo": {"policy": "MlpPolicy", **ppo_kw, "device": "cpu", "torch_threads": 1},
        "steps_per_round": n_steps * num_envs,
        "rounds": rounds,
        "versions": {"stable_baselines3": stable_baselines3.__version__, "torch": torch.__version__},
        "load_avg_1min_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)],
        **{name: fig(rows) for name, rows in slices.items()},
    }
    a, d = out["loopdrive_sb3_adapter"], out["dummy_vec_env"]
    out["adapter_vs_dummy"] = {
        "train": a["train_steps_per_s"] / d["train_steps_per_s"],
        "rollout": a["rollout_steps_per_s"] / d["rollout_steps_per_s"],
    }
    return out
