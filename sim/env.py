"""The Gymnasium shell over the engine: ``ClosedLoopEnv`` and its batched ``ClosedLoopVectorEnv``.

Registered at ``import sim`` as ``loopdrive/ClosedLoop-v0``::

    env = gymnasium.make("loopdrive/ClosedLoop-v0")                         # tiny synthetic town
    env = gymnasium.make("loopdrive/ClosedLoop-v0", scenario="scenarios/cut_in.yaml",
                         observation=["state", "camera"], action_mode="trajectory")
    venv = gymnasium.make_vec("loopdrive/ClosedLoop-v0", num_envs=64, vectorization_mode="vector_entry_point",
                              autoreset_mode="same_step")                 # or "next_step" (default)

The vector env (:mod:`sim.vec_env`) steps B worlds in one engine call and gives the transitions of
gymnasium's ``SyncVectorEnv`` over B single envs; :mod:`sim.vec_sb3` adapts it to
Stable-Baselines3's ``VecEnv`` (``make_sb3_vec_env(64, scenario=...)``).

**Actions.** ``action_mode="control"``: [acceleration, steer]. With ``action_units="normalized"`` (the
default for control) the Box is [-1, 1]^2: acceleration ``u0 * accel_max`` when u0 >= 0 and
``u0 * decel_max`` below, steer ``u1 * steer_max`` (the bicycle limits, :class:`sim.dynamics.BicycleLimits`);
with ``action_units="si"`` the Box is in m/s^2 and rad. ``action_mode="trajectory"``: K future
(x, y) ego-frame points (m) every ``controller.dt`` seconds, tracked by
:class:`sim.controller.TrajectoryController` (``action_units="normalized"`` scales [-1, 1] to
+-``K * dt * 30`` m). An action outside the space is clipped and ``info["action_clipped"]`` is True; a
NaN/inf action raises :class:`sim.errors.EpisodeStateError`, as does stepping a finished episode.

**Reward** (:class:`RewardConfig`): ``progress_weight`` x metres of route progress, minus
``collision_penalty`` on a collision, ``offroad_penalty`` off-road, ``wrong_way_penalty`` per step
driven against the route, ``comfort_weight`` x (jerk / 10 m/s^3)^2; plus ``complete_bonus`` on
reaching the route's end. Terminated on collision, off-road or route completion; truncated at the
scenario horizon. ``info`` carries the per-step metrics (``min_ttc_s``, ``collision_partner``,
``offroad``, ``wrong_way``, ``off_route``, ``progress_m``, ``jerk_mps3``, ...) and ``action_clipped``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from sim import engine
from sim.controller import TrajectoryController
from sim.env_core import EnvCore, RewardConfig, index_obs, world_info
from sim.errors import EpisodeStateError, ScenarioError
from sim.observations import ObservationConfig
from sim.spec import ScenarioSpec
from sim.vec_env import ClosedLoopVectorEnv
from sim.world import SceneLike

__all__ = ["ENV_ID", "ClosedLoopEnv", "ClosedLoopVectorEnv", "RewardConfig", "register_envs"]

log = logging.getLogger(__name__)

ENV_ID = "loopdrive/ClosedLoop-v0"


class ClosedLoopEnv(gym.Env[Any, NDArray[np.float32]]):
    """One closed-loop world (see the module docstring).

    Args:
        scenario: a :class:`sim.spec.ScenarioSpec`, a scenario YAML path, or None (the tiny
            synthetic town, replaying its log).
        observation: kinds (``state``, ``bev``, ``camera``, ``lidar``); a Dict space when several.
        action_mode: ``control`` or ``trajectory``.
        render_mode: None or ``rgb_array`` (a BEV frame with ego, actors and route).
        renderer: sensor backend name for camera/lidar (default: ``scenario.scene.renderer``).
        action_units: ``normalized`` or ``si`` (default: normalized for control, si for trajectory).
        scene: an in-memory scene to use instead of loading ``scenario.scene``.
        obs_config: observation sizes (BEV raster, LiDAR points, camera size).
        reward: reward weights.
        controller: the trajectory tracker used for ``action_mode="trajectory"``.
        trajectory_points: K for ``action_mode="trajectory"``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}  # noqa: RUF012 - gymnasium convention

    def __init__(
        self,
        scenario: ScenarioSpec | str | Path | None = None,
        observation: Sequence[str] | str = ("state",),
        action_mode: str = "control",
        render_mode: str | None = None,
        renderer: str | None = None,
        *,
        action_units: str | None = None,
        scene: SceneLike | None = None,
        obs_config: ObservationConfig | None = None,
        reward: RewardConfig | None = None,
        controller: TrajectoryController | None = None,
        trajectory_points: int = 8,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ScenarioError(f"expected render_mode None or 'rgb_array', got {render_mode!r}", field="render_mode")
        self.core = EnvCore(scenario, observation, action_mode, action_units, renderer, scene, obs_config, reward, controller, trajectory_points)
        self.observation_space = self.core.observation_space
        self.action_space = self.core.action_space
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": round(1.0 / self.core.compiled.dt_s)}
        self._state: engine.SimState | None = None
        self._integral = np.zeros(1)

    @property
    def state(self) -> engine.SimState:
        """The current engine state (B = 1)."""
        if self._state is None:
            raise EpisodeStateError("call reset() before using the environment")
        return self._state

    @property
    def compiled(self) -> engine.Compiled:
        """The compiled scenario (lane map, paths, ego route, slots)."""
        return self.core.compiled

    @property
    def observation_kinds(self) -> tuple[str, ...]:
        """The configured observation kinds, in order (for planner spec checks)."""
        return tuple(self.core.names)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Start an episode; ``seed`` reseeds the episode generator (Gymnasium's contract)."""
        super().reset(seed=seed)
        self._state = engine.reset_batch(self.core.compiled, [self.np_random])
        self._integral = np.zeros(1)
        obs = index_obs(self.core.observe(self._state), 0)
        return obs, self._info(self._state, False)

    def _info(self, st: engine.SimState, clipped: bool) -> dict[str, Any]:
        return world_info(st, 0, clipped)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        st = self.state
        if st.terminated.item(0) or st.truncated.item(0):
            raise EpisodeStateError("the episode is over (terminated or truncated); call reset() before stepping again")
        a, flag = self.core.check_action(action, None)
        ctrl, self._integral = self.core.to_control(a, st, self._integral)
        nxt = engine.step(st, ctrl, self.np_random)
        self._state = nxt
        obs = index_obs(self.core.observe(nxt), 0)
        rew = self.core.reward(nxt).item(0)
        return obs, rew, nxt.terminated.item(0), nxt.truncated.item(0), self._info(nxt, flag.item(0))

    def render(self) -> NDArray[np.uint8] | None:  # type: ignore[override]
        if self.render_mode != "rgb_array":
            return None
        return self.core.frame(self.state)

    def close(self) -> None:
        self.core.close()


def register_envs() -> None:
    """Register ``loopdrive/ClosedLoop-v0`` (single and vector entry points); harmless to repeat."""
    from gymnasium.envs.registration import register, registry

    if ENV_ID not in registry:
        register(id=ENV_ID, entry_point="sim.env:ClosedLoopEnv", vector_entry_point="sim.env:ClosedLoopVectorEnv")
