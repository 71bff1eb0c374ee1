"""The Gymnasium shell over the engine: ``ClosedLoopEnv`` and its batched ``ClosedLoopVectorEnv``.

Registered at ``import sim`` as ``loopdrive/ClosedLoop-v0``::

    env = gymnasium.make("loopdrive/ClosedLoop-v0")                         # tiny synthetic town
    env = gymnasium.make("loopdrive/ClosedLoop-v0", scenario="scenarios/cut_in.yaml",
                         observation=["state", "camera"], action_mode="trajectory")
    venv = gymnasium.make_vec("loopdrive/ClosedLoop-v0", num_envs=64, vectorization_mode="vector_entry_point")

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from numpy.typing import NDArray

from sim import engine
from sim.controller import TrajectoryController
from sim.errors import EpisodeStateError, ScenarioError
from sim.observations import OBSERVATIONS, BevObservation, ObservationConfig, ObservationKind, bev_rgb
from sim.spec import ScenarioSpec
from sim.world import SceneLike

__all__ = ["ENV_ID", "ClosedLoopEnv", "ClosedLoopVectorEnv", "RewardConfig", "register_envs"]

log = logging.getLogger(__name__)

ENV_ID = "loopdrive/ClosedLoop-v0"
TRAJ_SCALE_SPEED = 30.0  # m/s: the normalized trajectory box spans +-K*dt*30 m


@dataclass(frozen=True)
class RewardConfig:
    """Reward weights (see the module docstring)."""

    progress_weight: float = 0.1  # per metre of route progress
    collision_penalty: float = 10.0
    offroad_penalty: float = 5.0
    wrong_way_penalty: float = 0.1  # per step
    comfort_weight: float = 0.01  # x (jerk / 10 m/s^3)^2 per step
    complete_bonus: float = 1.0


def _spec_of(scenario: ScenarioSpec | str | Path | None) -> ScenarioSpec:
    if scenario is None:
        return ScenarioSpec()
    if isinstance(scenario, ScenarioSpec):
        return scenario
    if isinstance(scenario, str | Path):
        from sim.scenario import load_scenario

        return load_scenario(scenario)
    raise ScenarioError(f"expected a ScenarioSpec or a scenario YAML path, got {type(scenario).__name__}", field="scenario")


class _Core:
    """What the single and the vector env share: compiled scenario, observation kinds, action
    mapping, reward, renderer."""

    def __init__(
        self,
        scenario: ScenarioSpec | str | Path | None,
        observation: Sequence[str] | str,
        action_mode: str,
        action_units: str | None,
        renderer: str | None,
        scene: SceneLike | None,
        obs_config: ObservationConfig | None,
        reward: RewardConfig | None,
        controller: TrajectoryController | None,
        trajectory_points: int,
    ) -> None:
        self.spec = _spec_of(scenario)
        self.compiled = engine.compile_scenario(self.spec, scene)
        kinds = [observation] if isinstance(observation, str) else list(observation)
        if not kinds:
            raise ScenarioError("expected at least one observation kind", field="observation")
        if len(set(kinds)) != len(kinds):
            raise ScenarioError(f"observation kinds repeat: {kinds}", field="observation")
        self.obs_config = obs_config or ObservationConfig()
        self.kinds: list[ObservationKind] = []
        for i, k in enumerate(kinds):
            try:
                cls = OBSERVATIONS.get(k)
            except Exception as exc:
                raise ScenarioError(str(exc), field=f"observation[{i}]") from None
            self.kinds.append(cls(self.obs_config, self.compiled))
        self.names = kinds
        if len(kinds) == 1:
            self.observation_space: spaces.Space[Any] = self.kinds[0].space()
        else:
            self.observation_space = spaces.Dict({k.name: k.space() for k in self.kinds})
        if action_mode not in ("control", "trajectory"):
            raise ScenarioError(f"expected 'control' or 'trajectory', got {action_mode!r}", field="action_mode")
        self.action_mode = action_mode
        units = action_units or ("normalized" if action_mode == "control" else "si")
        if units not in ("normalized", "si"):
            raise ScenarioError(f"expected 'normalized' or 'si', got {units!r}", field="action_units")
        self.units = units
        lim = self.compiled.bicycle.limits
        self.controller = controller or TrajectoryController(wheelbase=self.compiled.bicycle.wheelbase)
        self.K = int(trajectory_points)
        if action_mode == "control":
            if units == "normalized":
                self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
            else:
                self.action_space = spaces.Box(np.array([-lim.decel_max, -lim.steer_max], np.float32), np.array([lim.accel_max, lim.steer_max], np.float32), dtype=np.float32)
        else:
            self.traj_extent = self.K * self.controller.dt * TRAJ_SCALE_SPEED
            hi = 1.0 if units == "normalized" else self.traj_extent
            self.action_space = spaces.Box(-hi, hi, (self.K, 2), np.float32)
        self.reward_cfg = reward or RewardConfig()
        self.renderer_name = renderer or self.spec.scene.renderer
        self._renderer: Any = None
        self._bev_view: BevObservation | None = None
        self._bounds: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None  # action box, float64

    # ------------------------------------------------------------------------------- actions
    def to_control(self, action: NDArray[np.float64], state: engine.SimState, integral: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Clipped actions (B, *shape) -> bicycle controls (B, 2) and the new controller integral."""
        lim = self.compiled.bicycle.limits
        if self.action_mode == "control":
            if self.units == "normalized":
                u = action[:, 0]
                out = np.empty((action.shape[0], 2))
                out[:, 0] = np.where(u >= 0, u * lim.accel_max, u * lim.decel_max)
                out[:, 1] = action[:, 1] * lim.steer_max
                return out, integral
            return action.astype(np.float64), integral
        traj = action * (self.traj_extent if self.units == "normalized" else 1.0)
        return self.controller(traj, state.v[:, 0], integral, self.compiled.dt_s)

    def check_action(self, action: Any, B: int | None) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        shape = self.action_space.shape
        assert shape is not None
        a = np.asarray(action, dtype=np.float64)
        want = shape if B is None else (B, *shape)
        if a.shape != want:
            try:
                a = a.reshape(want)
            except ValueError:
                raise EpisodeStateError(f"expected an action of shape {want}, got {a.shape}", field="action") from None
        if not np.isfinite(a).all():
            raise EpisodeStateError("the action must be finite (got NaN or inf)", field="action")
        if self._bounds is None:
            assert isinstance(self.action_space, spaces.Box)
            self._bounds = (self.action_space.low.astype(np.float64), self.action_space.high.astype(np.float64))
        lo, hi = self._bounds
        c = np.minimum(np.maximum(a, lo), hi)
        flag = (c != a).reshape(c.shape[0] if B is not None else 1, -1).any(axis=1)
        if B is None:
            c = c[None]
        return c, flag

    # ---------------------------------------------------------------------------- observations
    def renderer(self) -> Any:
        """The sensor backend, built on first use like a batch episode's (:func:`sim.batch.make_renderer`)."""
        if self._renderer is None:
            from sim.batch import make_renderer

            self._renderer = make_renderer(self.spec, self.compiled.scene, self.renderer_name)
        return self._renderer

    def observe(self, state: engine.SimState) -> Any:
        frames = None
        if any(k.needs_render for k in self.kinds):
            r = self.renderer()
            frames = [r.render(state.world(b), self.obs_config.rig) for b in range(state.batch_size)]
        if len(self.kinds) == 1:
            return self.kinds[0].compute(state, frames)
        return {k.name: k.compute(state, frames) for k in self.kinds}

    def reward(self, state: engine.SimState) -> NDArray[np.float64]:
        w = self.reward_cfg
        r = w.progress_weight * state.progress
        r = r - w.collision_penalty * state.collision - w.offroad_penalty * state.offroad
        r = r - w.wrong_way_penalty * state.wrong_way - w.comfort_weight * np.square(state.jerk / 10.0)
        return r + w.complete_bonus * state.route_complete

    def frame(self, state: engine.SimState, b: int = 0, size: int = 256, res: float = 0.25) -> NDArray[np.uint8]:
        if self._bev_view is None:
            cfg = ObservationConfig(bev_size=size, bev_res_m=res)
            self._bev_view = BevObservation(cfg, self.compiled)
        return bev_rgb(self._bev_view.compute(_row(state, b))[0])

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def _row(state: engine.SimState, b: int) -> engine.SimState:
    import dataclasses

    return dataclasses.replace(state, **{f: getattr(state, f)[b : b + 1] for f in engine._ROW_FIELDS})


def _index_obs(obs: Any, b: int) -> Any:
    if isinstance(obs, dict):
        return {k: v[b] for k, v in obs.items()}
    return obs[b]


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
        self.core = _Core(scenario, observation, action_mode, action_units, renderer, scene, obs_config, reward, controller, trajectory_points)
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
        obs = _index_obs(self.core.observe(self._state), 0)
        return obs, self._info(self._state, False)

    def _info(self, st: engine.SimState, clipped: bool) -> dict[str, Any]:
        info = st.metrics(0)
        info["action_clipped"] = bool(clipped)
        info["actuator_limited"] = bool(st.action_clipped[0])
        return info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        st = self.state
        if st.done[0]:
            raise EpisodeStateError("the episode is over (terminated or truncated); call reset() before stepping again")
        a, flag = self.core.check_action(action, None)
        ctrl, self._integral = self.core.to_control(a, st, self._integral)
        nxt = engine.step(st, ctrl, self.np_random)
        self._state = nxt
        obs = _index_obs(self.core.observe(nxt), 0)
        rew = float(self.core.reward(nxt)[0])
        return obs, rew, bool(nxt.terminated[0]), bool(nxt.truncated[0]), self._info(nxt, bool(flag[0]))

    def render(self) -> NDArray[np.uint8] | None:  # type: ignore[override]
        if self.render_mode != "rgb_array":
            return None
        return self.core.frame(self.state)

    def close(self) -> None:
        self.core.close()


class ClosedLoopVectorEnv(VectorEnv[Any, Any, Any]):
    """B worlds stepped with one engine call (``gymnasium.make_vec(..., vectorization_mode=
    "vector_entry_point")``). Same arguments as :class:`ClosedLoopEnv` plus ``num_envs``.

    Autoreset follows Gymnasium's ``NEXT_STEP`` mode: the step after a world terminates or
    truncates resets it (its action is ignored, reward 0). World ``i`` is seeded with ``seed + i``.
    ``infos`` holds arrays of the per-step metrics (``collision``, ``offroad``, ``progress_m``,
    ``min_ttc_s``, ``jerk_mps3``, ``action_clipped``, ``collision_partner``).
    """

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
        action_units: str | None = None,
        scene: SceneLike | None = None,
        obs_config: ObservationConfig | None = None,
        reward: RewardConfig | None = None,
        controller: TrajectoryController | None = None,
        trajectory_points: int = 8,
    ) -> None:
        if num_envs < 1:
            raise ScenarioError(f"expected num_envs >= 1, got {num_envs}", field="num_envs")
        self.core = _Core(scenario, observation, action_mode, action_units, renderer, scene, obs_config, reward, controller, trajectory_points)
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.single_observation_space = self.core.observation_space
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._rngs: list[np.random.Generator] = []
        self._state: engine.SimState | None = None
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._integral = np.zeros(num_envs)

    @property
    def state(self) -> engine.SimState:
        if self._state is None:
            raise EpisodeStateError("call reset() before using the environment")
        return self._state

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ScenarioError(f"expected {self.num_envs} seeds, got {len(seeds)}", field="seed")
        if seed is not None or not self._rngs:
            self._rngs = [seeding.np_random(s)[0] for s in seeds]
        self._state = engine.reset_batch(self.core.compiled, self._rngs)
        self._autoreset[:] = False
        self._integral = np.zeros(self.num_envs)
        return self.core.observe(self._state), self._infos(self._state, np.zeros(self.num_envs, dtype=bool))

    def _infos(self, st: engine.SimState, clipped: NDArray[np.bool_]) -> dict[str, Any]:
        ids = np.array([st.compiled.ids[j] if j >= 0 else "" for j in st.collision_partner], dtype=object)
        return {
            "collision": st.collision.copy(),
            "collision_partner": ids,
            "offroad": st.offroad.copy(),
            "wrong_way": st.wrong_way.copy(),
            "route_complete": st.route_complete.copy(),
            "off_route": np.abs(st.ego_lat) > engine.OFF_ROUTE_M,
            "progress_m": st.progress.copy(),
            "min_ttc_s": st.min_ttc.copy(),
            "jerk_mps3": st.jerk.copy(),
            "action_clipped": clipped,
        }

    def step(self, actions: Any) -> tuple[Any, NDArray[np.float64], NDArray[np.bool_], NDArray[np.bool_], dict[str, Any]]:
        st = self.state
        a, flag = self.core.check_action(actions, self.num_envs)
        rows = np.flatnonzero(self._autoreset)
        fresh = None
        if len(rows):
            fresh = engine.reset_batch(self.core.compiled, [self._rngs[i] for i in rows])
            st = _scatter(st, rows, fresh)
            self._integral[rows] = 0.0
        ctrl, self._integral = self.core.to_control(a, st, self._integral)
        nxt = engine.step(st, ctrl)
        rew = self.core.reward(nxt)
        if fresh is not None:
            nxt = _scatter(nxt, rows, fresh)
            rew[rows] = 0.0
            flag[rows] = False
            self._integral[rows] = 0.0
        self._state = nxt
        term, trunc = nxt.terminated.copy(), nxt.truncated.copy()
        self._autoreset = term | trunc
        return self.core.observe(nxt), rew, term, trunc, self._infos(nxt, flag)

    def render(self) -> tuple[NDArray[np.uint8], ...] | None:  # type: ignore[override]
        if self.render_mode != "rgb_array":
            return None
        return tuple(self.core.frame(self.state, b) for b in range(self.num_envs))

    def close_extras(self, **kwargs: Any) -> None:
        self.core.close()


def _scatter(state: engine.SimState, rows: NDArray[np.int64], sub: engine.SimState) -> engine.SimState:
    import dataclasses

    ch = {}
    for f in engine._ROW_FIELDS:
        a = getattr(state, f).copy()
        a[rows] = getattr(sub, f)
        ch[f] = a
    return dataclasses.replace(state, **ch)


def register_envs() -> None:
    """Register ``loopdrive/ClosedLoop-v0`` (single and vector entry points); harmless to repeat."""
    from gymnasium.envs.registration import register, registry

    if ENV_ID not in registry:
        register(id=ENV_ID, entry_point="sim.env:ClosedLoopEnv", vector_entry_point="sim.env:ClosedLoopVectorEnv")
