"""``sb3``: any stable-baselines3 policy zip as a :class:`~agents.base.Planner`, and PPO training on
the Gymnasium env (``loopdrive train ppo``).

The policy must have been trained on ``loopdrive/ClosedLoop-v0`` with ``action_mode="control"`` and
the observation kinds given in ``observation`` (default ``["state"]``; the env's observation is that
kind's array when there is one kind, else a dict). Normalised actions ([-1, 1]², the env's default
for control) are mapped back to SI with the engine's bicycle limits.

Loading: :func:`stable_baselines3.PPO.load` (or the ``algo`` given) with the learning-rate and
clip-range schedules replaced by constants, so the zip's pickled callables are not needed; the zip
is still a pickle-based format -- load only policies you trust (unlike the BC weights, which are
safetensors).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.base import PLANNERS, Control, Observation, ObservationSpec, Planner, PlannerInit
from sim.dynamics import BicycleLimits
from sim.errors import BundleError, ScenarioError
from sim.fsutil import atomic_path

__all__ = ["SB3Planner", "load_sb3", "train_ppo"]

log = logging.getLogger(__name__)

_ALGOS = ("PPO", "A2C", "SAC", "TD3", "DDPG", "DQN")
_SAFE_OBJECTS = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0}


def load_sb3(path: str | os.PathLike[str], algo: str = "PPO") -> Any:
    """A stable-baselines3 model from a zip (``BundleError`` when missing or unreadable)."""
    import stable_baselines3 as sb3

    if algo not in _ALGOS:
        raise ScenarioError(f"expected one of {', '.join(_ALGOS)}, got {algo!r}", field="planner.params.algo")
    p = Path(path)
    if not p.is_file():
        raise BundleError("expected a stable-baselines3 policy zip (train one with `loopdrive train ppo`)", file=p)
    try:
        return getattr(sb3, algo).load(str(p), device="cpu", custom_objects=_SAFE_OBJECTS)
    except Exception as exc:
        raise BundleError(f"cannot load the policy ({type(exc).__name__}: {exc})", file=p) from None


class SB3Planner(Planner):
    """Params: ``path`` (policy zip, default ``models/ppo.zip``), ``algo`` (``PPO``), ``observation``
    (kinds, default ``["state"]``), ``action_units`` (``normalized`` | ``si``), ``deterministic``
    (True); or ``model`` (an already loaded model)."""

    name = "sb3"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.path = params.get("path", "models/ppo.zip")
        self.algo = str(params.get("algo", "PPO"))
        kinds = params.get("observation", ("state",))
        self.kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        self.units = str(params.get("action_units", "normalized"))
        if self.units not in ("normalized", "si"):
            raise ScenarioError(f"expected 'normalized' or 'si', got {self.units!r}", field="planner.params.action_units")
        self.deterministic = bool(params.get("deterministic", True))
        self.model = params.get("model")
        self.limits = BicycleLimits()

    def observation_spec(self) -> ObservationSpec:
        return ObservationSpec(kinds=self.kinds)

    def reset(self, init: PlannerInit, *, seed: int | None = None) -> None:
        if self.model is None:
            self.model = load_sb3(self.path, self.algo)

    def plan(self, obs: Observation) -> Control:
        assert self.model is not None, "reset() first"
        x = obs[self.kinds[0]] if len(self.kinds) == 1 else {k: obs[k] for k in self.kinds}
        act, _ = self.model.predict(x, deterministic=self.deterministic)
        a = np.asarray(act, np.float64).reshape(-1)
        if self.units == "normalized":
            a = np.clip(a, -1.0, 1.0)
            acc = a[0] * (self.limits.accel_max if a[0] >= 0 else self.limits.decel_max)
            return Control(float(acc), float(a[1] * self.limits.steer_max))
        return Control(float(a[0]), float(a[1]))


PLANNERS.register(SB3Planner.name, SB3Planner)


def train_ppo(
    scenario: str | os.PathLike[str] | Any,
    steps: int,
    out: str | os.PathLike[str],
    *,
    observation: Sequence[str] = ("state",),
    seed: int = 0,
    n_steps: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Train PPO (``MlpPolicy``, or ``MultiInputPolicy`` for several kinds) on
    ``loopdrive/ClosedLoop-v0`` for ``steps`` environment steps and save the zip atomically to
    ``out``. ``progress(done, total)`` is called as steps complete."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import Logger

    from sim.env import ClosedLoopEnv

    if steps < 1:
        raise ScenarioError(f"expected a positive number of steps, got {steps}", field="steps")
    env = ClosedLoopEnv(scenario=scenario, observation=list(observation), action_mode="control")

    class _Cb(BaseCallback):
        def _on_step(self) -> bool:
            if progress is not None:
                progress(min(self.num_timesteps, steps), steps)
            return True

    policy = "MlpPolicy" if len(observation) == 1 else "MultiInputPolicy"
    model = PPO(policy, env, seed=seed, n_steps=min(n_steps, max(steps, 64)), batch_size=64, verbose=0, device="cpu")
    # SB3's default logger makes an empty SB3-<date> folder in the system temp dir on every run
    model.set_logger(Logger(folder=None, output_formats=[]))
    model.learn(total_timesteps=steps, callback=_Cb())
    outp = Path(out)
    outp.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(outp, suffix=".zip") as tmp:
        model.save(str(tmp))
    env.close()
    return outp
