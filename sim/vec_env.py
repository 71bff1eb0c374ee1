"""``ClosedLoopVectorEnv``: B closed-loop worlds stepped with one engine call.

Built by ``gymnasium.make_vec("loopdrive/ClosedLoop-v0", num_envs=B,
vectorization_mode="vector_entry_point", autoreset_mode=...)``, it gives the same transitions as
gymnasium's ``SyncVectorEnv`` over B :class:`sim.env.ClosedLoopEnv` with the same autoreset mode
and seeds (observations, rewards, terminations, truncations and ``infos`` bit for bit), B times
cheaper per world than stepping B single envs.

**Autoreset** (``autoreset_mode``, declared in ``metadata["autoreset_mode"]``; see
https://farama.org/Vector-Autoreset-Mode):

* ``NEXT_STEP`` (default): the step after a world terminates or truncates resets it; its action is
  ignored, its reward is 0, ``terminated``/``truncated`` are False and its ``info`` is the reset's.
* ``SAME_STEP``: a world that terminates or truncates is reset within the same step. The step
  returns the reset observation, the final step's reward and flags, and the reset's ``info``; the
  last observation and ``info`` of the episode are in ``infos["final_obs"]`` (an object array, one
  observation per world, None for worlds that did not finish) and ``infos["final_info"]`` (a dict
  of arrays in the same convention), with the masks ``infos["_final_obs"]`` and
  ``infos["_final_info"]``. This is the mode of CleanRL-style loops and of the SB3 adapter
  (:mod:`sim.vec_sb3`).

``DISABLED`` is refused (a typed :class:`sim.errors.ScenarioError`).

**infos** follow gymnasium's vector-info convention (``VectorEnv._add_info``): every key of the
single env's ``info`` (``t_s``, ``collision``, ``collision_partner``, ``offroad``, ``wrong_way``,
``route_complete``, ``progress_m``, ``route_progress_m``, ``min_ttc_s``, ``jerk_mps3``,
``speed_mps``, ``accel_mps2``, ``lateral_offset_m``, ``off_route``, ``action_clipped``,
``actuator_limited``) is an array over the worlds (float64, bool, or object for
``collision_partner``: the actor id or None), paired with a boolean mask ``_key`` saying which
worlds report it (all of them, at every step and reset).

**Seeds.** ``reset(seed=s)`` seeds world ``i`` with ``s + i``; a list gives one seed per world; a
world whose seed is None keeps its generator (a fresh one on the first reset), as
:meth:`gymnasium.Env.reset` does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from numpy.typing import NDArray

from sim import engine
from sim.controller import TrajectoryController
from sim.env_core import EnvCore, RewardConfig, info_arrays, put_obs_rows, scatter_rows, world_info
from sim.errors import EpisodeStateError, ScenarioError
from sim.observations import ObservationConfig
from sim.spec import ScenarioSpec
from sim.world import SceneLike

__all__ = ["ClosedLoopVectorEnv", "parse_autoreset_mode"]

log = logging.getLogger(__name__)

_MODES = {m.value.lower(): m for m in AutoresetMode} | {m.name.lower(): m for m in AutoresetMode}


def parse_autoreset_mode(value: AutoresetMode | str) -> AutoresetMode:
    """``AutoresetMode.NEXT_STEP`` / ``SAME_STEP``, or their value (``"NextStep"``) or name
    (``"next_step"``), case-insensitive. Raises :class:`ScenarioError` otherwise and for ``DISABLED``."""
    mode = value if isinstance(value, AutoresetMode) else _MODES.get(str(value).lower())
    if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
        raise ScenarioError(f"expected AutoresetMode.NEXT_STEP or AutoresetMode.SAME_STEP ('next_step' / 'same_step'), got {value!r}", field="autoreset_mode")
    return mode


def _with_masks(arrays: dict[str, NDArray[Any]], mask: NDArray[np.bool_]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in arrays.items():
        out[k] = v
        out[f"_{k}"] = mask.copy()
    return out


def _masked(arrays: dict[str, NDArray[Any]], rows: NDArray[np.int64], n: int) -> dict[str, Any]:
    """The ``final_info`` dict: each key's values at ``rows``, zero (None for objects) elsewhere, with masks."""
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    out: dict[str, Any] = {}
    for k, v in arrays.items():
        a = np.full(n, None, dtype=object) if v.dtype == object else np.zeros((n, *v.shape[1:]), dtype=v.dtype)
        a[rows] = v[rows]
        out[k] = a
        out[f"_{k}"] = mask.copy()
    return out


def _final_obs(obs: Any, rows: NDArray[np.int64], n: int) -> NDArray[np.object_]:
    out = np.full(n, None, dtype=object)
    for i in rows.tolist():
        out[i] = {k: v[i].copy() for k, v in obs.items()} if isinstance(obs, dict) else obs[i].copy()
    return out


class ClosedLoopVectorEnv(VectorEnv[Any, Any, Any]):
    """B worlds stepped with one engine call (see the module docstring). Same arguments as
    :class:`sim.env.ClosedLoopEnv` plus ``num_envs``, ``autoreset_mode`` (``NEXT_STEP``
    default, or ``SAME_STEP``) and ``threads``: the engine step's worlds are shared among that many
    threads (:class:`sim.engine.StepThreads`; default 1), with the same results bit for bit."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": ["rgb_array"]}  # noqa: RUF012

    def __init__(
        self,
        num_envs: int = 1,
        scenario: ScenarioSpec | str | Path | None = None,
        observation: Sequence[str] | str = ("state",),
        action_mode: str = "control",
        render_mode: str | None = None,
        renderer: str | None = None,
        *,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        action_units: str | None = None,
        scene: SceneLike | None = None,
        obs_config: ObservationConfig | None = None,
        reward: RewardConfig | None = None,
        controller: TrajectoryController | None = None,
        trajectory_points: int = 8,
        threads: int = 1,
    ) -> None:
        if num_envs < 1:
            raise ScenarioError(f"expected num_envs >= 1, got {num_envs}", field="num_envs")
        if isinstance(threads, bool) or not isinstance(threads, int | np.integer) or threads < 1:
            raise ScenarioError(f"expected threads to be an integer >= 1, got {threads!r}", field="threads")
        self.autoreset_mode = parse_autoreset_mode(autoreset_mode)
        self.core = EnvCore(scenario, observation, action_mode, action_units, renderer, scene, obs_config, reward, controller, trajectory_points)
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode, "render_fps": round(1.0 / self.core.compiled.dt_s)}
        self.single_observation_space = self.core.observation_space
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._rngs: list[np.random.Generator | None] = [None] * num_envs
        self._state: engine.SimState | None = None
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._integral = np.zeros(num_envs)
        self._info_keys: list[str] | None = None
        self._all = np.ones(num_envs, dtype=bool)
        # the engine's compiled step shared among threads (same bits as one thread), this env's own
        self._threads = engine.StepThreads(int(threads)) if threads > 1 else None

    @property
    def state(self) -> engine.SimState:
        """The current engine state (B = ``num_envs``)."""
        if self._state is None:
            raise EpisodeStateError("call reset() before using the environment")
        return self._state

    @property
    def compiled(self) -> engine.Compiled:
        """The compiled scenario shared by the worlds."""
        return self.core.compiled

    @property
    def observation_kinds(self) -> tuple[str, ...]:
        """The configured observation kinds, in order."""
        return tuple(self.core.names)

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Start an episode in every world (see the module docstring for ``seed``); ``options`` is
        accepted and ignored, as by the single env."""
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, int | np.integer):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ScenarioError(f"expected {self.num_envs} seeds, got {len(seeds)}", field="seed")
        for i, s in enumerate(seeds):
            if s is not None or self._rngs[i] is None:
                self._rngs[i] = seeding.np_random(s)[0]
        self._state = engine.reset_batch(self.core.compiled, self._rngs)
        self._autoreset[:] = False
        self._integral = np.zeros(self.num_envs)
        return self.core.observe(self._state), _with_masks(self._arrays(self._state, np.zeros(self.num_envs, dtype=bool)), self._all)

    def _arrays(self, st: engine.SimState, clipped: NDArray[np.bool_]) -> dict[str, NDArray[Any]]:
        if self._info_keys is None:
            self._info_keys = list(world_info(st, 0, False))
        return info_arrays(st, clipped, self._info_keys)

    def _fresh(self, rows: NDArray[np.int64]) -> engine.SimState:
        return engine.reset_batch(self.core.compiled, [self._rngs[i] for i in rows.tolist()])

    def step(self, actions: Any) -> tuple[Any, NDArray[np.float64], NDArray[np.bool_], NDArray[np.bool_], dict[str, Any]]:
        """Step every world with its action (B, *single action shape); see the module docstring."""
        st = self.state
        a, flag = self.core.check_action(actions, self.num_envs)
        if self.autoreset_mode is AutoresetMode.NEXT_STEP:
            return self._step_next(st, a, flag)
        return self._step_same(st, a, flag)

    def _step_next(self, st: engine.SimState, a: NDArray[np.float64], flag: NDArray[np.bool_]) -> tuple[Any, NDArray[np.float64], NDArray[np.bool_], NDArray[np.bool_], dict[str, Any]]:
        rows = np.flatnonzero(self._autoreset)
        fresh = None
        if len(rows):
            fresh = self._fresh(rows)
            st = scatter_rows(st, rows, fresh)
            self._integral[rows] = 0.0
        ctrl, self._integral = self.core.to_control(a, st, self._integral)
        nxt = engine.step(st, ctrl, threads=self._threads)
        rew = self.core.reward(nxt)
        if fresh is not None:
            nxt = scatter_rows(nxt, rows, fresh)
            rew[rows] = 0.0
            flag[rows] = False
            self._integral[rows] = 0.0
        self._state = nxt
        term, trunc = nxt.terminated.copy(), nxt.truncated.copy()
        self._autoreset = term | trunc
        return self.core.observe(nxt), rew, term, trunc, _with_masks(self._arrays(nxt, flag), self._all)

    def _step_same(self, st: engine.SimState, a: NDArray[np.float64], flag: NDArray[np.bool_]) -> tuple[Any, NDArray[np.float64], NDArray[np.bool_], NDArray[np.bool_], dict[str, Any]]:
        ctrl, self._integral = self.core.to_control(a, st, self._integral)
        nxt = engine.step(st, ctrl, threads=self._threads)
        rew = self.core.reward(nxt)
        term, trunc = nxt.terminated.copy(), nxt.truncated.copy()
        obs = self.core.observe(nxt)
        arrays = self._arrays(nxt, flag)
        rows = np.flatnonzero(term | trunc)
        final: dict[str, Any] = {}
        if len(rows):
            final["final_obs"] = _final_obs(obs, rows, self.num_envs)
            final["final_info"] = _masked(arrays, rows, self.num_envs)
            fresh = self._fresh(rows)
            nxt = scatter_rows(nxt, rows, fresh)
            self._integral[rows] = 0.0
            obs = put_obs_rows(obs, rows, self.core.observe(fresh))
            reset = self._arrays(fresh, np.zeros(len(rows), dtype=bool))
            for k, v in arrays.items():
                v[rows] = reset[k]
        self._state = nxt
        infos = _with_masks(final, np.isin(np.arange(self.num_envs), rows)) if final else {}
        infos.update(_with_masks(arrays, self._all))
        return obs, rew, term, trunc, infos

    def render(self) -> tuple[NDArray[np.uint8], ...] | None:  # type: ignore[override]
        """One BEV frame per world when ``render_mode="rgb_array"``, else None."""
        if self.render_mode != "rgb_array":
            return None
        return tuple(self.core.frame(self.state, b) for b in range(self.num_envs))

    def close_extras(self, **kwargs: Any) -> None:
        self.core.close()
        if self._threads is not None:
            self._threads.close()
