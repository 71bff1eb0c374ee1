"""SB3 PPO environment steps per wall second (the ``sb3_ppo`` part of ``loopdrive bench env``):
the batched env through the SB3 adapter (:mod:`sim.vec_sb3`) against SB3's ``DummyVecEnv`` of
single envs, same scenario (:func:`sim.bench.env.bench_scenario`) and B."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["bench_sb3_ppo"]


def _sb3_systems(num_envs: int) -> dict[str, Any]:
    """The two SB3 VecEnvs of the PPO row: the adapter over the batched engine and DummyVecEnv of
    single envs, same scenario and B."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from sim.bench.env import bench_scenario
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
