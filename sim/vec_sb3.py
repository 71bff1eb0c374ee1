"""Stable-Baselines3 ``VecEnv`` over the batched engine: :class:`LoopdriveSB3VecEnv`.

SB3 does not take a gymnasium ``VectorEnv``; this adapter gives it the native vector env
(:class:`sim.vec_env.ClosedLoopVectorEnv`, B worlds in one engine call) in SB3's own conventions,
the same ones its ``DummyVecEnv`` of single :class:`sim.env.ClosedLoopEnv` follows, so that both give
the same observations, rewards, dones and infos for the same seeds and actions::

    from stable_baselines3 import PPO
    from sim.vec_sb3 import make_sb3_vec_env

    venv = make_sb3_vec_env(16, scenario="scenarios/cut_in_left.yaml")   # or to_sb3(vector_env)
    PPO("MlpPolicy", venv).learn(100_000)

Conventions (SB3's ``VecEnv`` API):

* ``reset()`` returns the observations; the seeds set by ``seed(s)`` (world ``i``: ``s + i``) and
  the options set by ``set_options`` apply to that reset only; ``reset_infos`` holds the resets' infos.
* ``step_wait()`` returns observations, rewards (float32), dones (terminated or truncated) and one
  ``info`` dict per world: the single env's ``info`` keys plus ``TimeLimit.truncated`` (truncated
  and not terminated). A finished world is reset within the step (the vector env runs in
  ``SAME_STEP`` autoreset mode): the returned observation is the new episode's, its ``info`` is
  the final step's with ``terminal_observation``, and ``reset_infos[i]`` is the reset's info.
* ``get_attr`` / ``set_attr`` / ``env_method`` act on the one vector env the worlds share (its
  configuration: ``render_mode``, ``compiled``, ``observation_kinds``, ...); ``get_attr`` and
  ``env_method`` return the value once per requested index; ``set_attr`` on a subset of worlds is
  refused. ``env_is_wrapped`` is False for every world (no gymnasium wrappers inside).
* ``get_images()`` gives one BEV frame per world when ``render_mode="rgb_array"``.

Episode statistics for SB3's logger: wrap in ``stable_baselines3.common.vec_env.VecMonitor``.
Needs stable-baselines3 (the ``dev`` extra).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from numpy.typing import NDArray
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from sim.errors import ScenarioError
from sim.vec_env import ClosedLoopVectorEnv

__all__ = ["LoopdriveSB3VecEnv", "make_sb3_vec_env", "to_sb3"]

log = logging.getLogger(__name__)

_FINAL = ("final_obs", "final_info")


def _per_world(infos: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Gymnasium vector infos (arrays + ``_key`` masks) -> one dict per world, Python scalars as the
    single env gives them."""
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for k, v in infos.items():
        if k.startswith("_") or k in _FINAL:
            continue
        mask = infos.get(f"_{k}")
        if isinstance(v, dict):
            sub = _per_world(v, n)
            rows = [i for i in range(n) if mask is None or mask[i]]
            for i in rows:
                out[i][k] = sub[i]
            continue
        vals = v.tolist() if isinstance(v, np.ndarray) and v.ndim == 1 else list(v)
        for i in range(n):
            if mask is None or mask[i]:
                out[i][k] = vals[i]
    return out


class LoopdriveSB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` over a :class:`ClosedLoopVectorEnv` in ``SAME_STEP`` autoreset mode (see the
    module docstring). Build it with :func:`make_sb3_vec_env` or :func:`to_sb3`.

    Raises:
        ScenarioError: ``venv`` is not a loopdrive vector env, or not in ``SAME_STEP`` mode.
    """

    def __init__(self, venv: ClosedLoopVectorEnv) -> None:
        inner = getattr(venv, "unwrapped", venv)
        if not isinstance(inner, ClosedLoopVectorEnv):
            raise ScenarioError(f"expected a loopdrive ClosedLoopVectorEnv, got {type(venv).__name__}", field="venv")
        if inner.autoreset_mode is not AutoresetMode.SAME_STEP:
            raise ScenarioError(
                f"SB3 resets a finished world within the step: build the vector env with autoreset_mode='same_step' (got {inner.autoreset_mode.name})",
                field="autoreset_mode",
            )
        self.venv = inner
        super().__init__(inner.num_envs, inner.single_observation_space, inner.single_action_space)
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": inner.metadata["render_fps"]}
        self._actions: NDArray[Any] | None = None

    # ------------------------------------------------------------------------------ stepping
    def reset(self) -> VecEnvObs:
        """Reset every world with the pending seeds and options (used once); see the module docstring."""
        options = self._options[0] if self._options and self._options[0] else None
        obs, infos = self.venv.reset(seed=list(self._seeds), options=options)
        self.reset_infos = _per_world(infos, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise ScenarioError("step_wait() without step_async()", field="actions")
        obs, rew, term, trunc, infos = self.venv.step(self._actions)
        self._actions = None
        dones = term | trunc
        rows = _per_world(infos, self.num_envs)
        if "final_info" in infos:
            finals = _per_world(infos["final_info"], self.num_envs)
            for i in np.flatnonzero(infos["_final_info"]).tolist():
                self.reset_infos[i] = rows[i]
                rows[i] = finals[i]
                rows[i]["terminal_observation"] = infos["final_obs"][i]
        for i, (te, tr) in enumerate(zip(term.tolist(), trunc.tolist(), strict=True)):
            rows[i]["TimeLimit.truncated"] = tr and not te
            if "terminal_observation" in rows[i]:  # DummyVecEnv's key order
                rows[i]["terminal_observation"] = rows[i].pop("terminal_observation")
        return obs, rew.astype(np.float32), dones, rows

    def close(self) -> None:
        self.venv.close()

    # --------------------------------------------------------------------- attributes, methods
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """``attr_name`` of the shared vector env, once per requested world (AttributeError if absent)."""
        value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set ``attr_name`` on the shared vector env; all worlds share it, so ``indices`` must cover them all."""
        if sorted(self._get_indices(indices)) != list(range(self.num_envs)):
            raise ScenarioError(f"the {self.num_envs} worlds share one configuration: set {attr_name!r} on all of them (indices=None)", field="indices")
        setattr(self.venv, attr_name, value)
        if attr_name == "render_mode":
            self.render_mode = value

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any) -> list[Any]:
        """Call ``method_name`` once on the shared vector env; its result once per requested world."""
        idx = list(self._get_indices(indices))
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in idx]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """One RGB BEV frame per world (``render_mode="rgb_array"``), else Nones with a warning as DummyVecEnv."""
        if self.render_mode != "rgb_array":
            warnings.warn(f"The render mode is {self.render_mode}, but this method assumes it is `rgb_array` to obtain images.", stacklevel=2)
            return [None for _ in range(self.num_envs)]
        frames = self.venv.render()
        assert frames is not None
        return list(frames)


def to_sb3(venv: ClosedLoopVectorEnv) -> LoopdriveSB3VecEnv:
    """The SB3 ``VecEnv`` over ``venv`` (built with ``autoreset_mode="same_step"``)."""
    return LoopdriveSB3VecEnv(venv)


def make_sb3_vec_env(num_envs: int, **env_kwargs: Any) -> LoopdriveSB3VecEnv:
    """A :class:`ClosedLoopVectorEnv` of ``num_envs`` worlds (``env_kwargs`` as for
    :class:`sim.env.ClosedLoopEnv`) in ``SAME_STEP`` mode, as an SB3 ``VecEnv``."""
    if "autoreset_mode" in env_kwargs:
        raise ScenarioError("the SB3 adapter always uses autoreset_mode='same_step'", field="autoreset_mode")
    return LoopdriveSB3VecEnv(ClosedLoopVectorEnv(num_envs, autoreset_mode=AutoresetMode.SAME_STEP, **env_kwargs))
