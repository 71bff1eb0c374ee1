"""What the single env (:mod:`sim.env`) and the vector env (:mod:`sim.vec_env`) share.

The compiled scenario, the observation kinds, the action mapping, the reward, the sensor backend
(:class:`EnvCore`), and the ``info`` of a step: :func:`world_info` for one world (the single env's
``info``) and :func:`info_arrays` for all B worlds at once (the vector env's ``infos``), which gives
the same values as calling :func:`world_info` on every world, in the dtypes gymnasium's
``VectorEnv._add_info`` gives them (Python float -> float64, bool -> bool, anything else -> an
object array).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
from gymnasium import spaces
from numpy.typing import NDArray

from sim import engine
from sim.controller import TrajectoryController
from sim.errors import EpisodeStateError, ScenarioError
from sim.observations import OBSERVATIONS, BevObservation, ObservationConfig, ObservationKind, bev_rgb
from sim.spec import ScenarioSpec
from sim.world import SceneLike

__all__ = ["EnvCore", "RewardConfig", "index_obs", "info_arrays", "put_obs_rows", "row_state", "scatter_rows", "world_info"]

log = logging.getLogger(__name__)

TRAJ_SCALE_SPEED = 30.0  # m/s: the normalized trajectory box spans +-K*dt*30 m


@dataclass(frozen=True)
class RewardConfig:
    """Reward weights (see :mod:`sim.env`)."""

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


def _scenario_obs_config(spec: ScenarioSpec, scene: SceneLike) -> ObservationConfig:
    """The default observation sizes with the scenario's rig (``scene.rig: log``: the drive log's
    rig, ``camera`` its first camera; see ``sim.batch.scenario_rig``)."""
    if getattr(spec.scene, "rig", "default") != "log":
        return ObservationConfig()
    from sim.batch import scenario_rig

    rig = scenario_rig(spec, scene)
    return ObservationConfig(rig=rig, camera=rig.cameras[0].name)


class EnvCore:
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
        self.obs_config = obs_config or _scenario_obs_config(self.spec, self.compiled.scene)
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
                return _normalized_control(action, lim.accel_max, lim.decel_max, lim.steer_max), integral
            return action.astype(np.float64), integral
        traj = action * (self.traj_extent if self.units == "normalized" else 1.0)
        return self.controller(traj, state.v[:, 0], integral, self.compiled.dt_s)

    def check_action(self, action: Any, B: int | None) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """The action as float64 (B, *shape) clipped to the box, and per world whether it was clipped.

        ``B`` None: one world's action (the single env). Raises :class:`EpisodeStateError` on a
        wrong shape or a NaN/inf."""
        shape = self.action_space.shape
        assert shape is not None
        a = np.asarray(action, dtype=np.float64)
        want = shape if B is None else (B, *shape)
        if a.shape != want:
            try:
                a = a.reshape(want)
            except ValueError:
                raise EpisodeStateError(f"expected an action of shape {want}, got {a.shape}", field="action") from None
        if self._bounds is None:
            assert isinstance(self.action_space, spaces.Box)
            self._bounds = (self.action_space.low.astype(np.float64).ravel(), self.action_space.high.astype(np.float64).ravel())
        lo, hi = self._bounds
        rows = a.shape[0] if B is not None else 1
        c, flag, finite = _clip_rows(np.ascontiguousarray(a).reshape(rows, -1), lo, hi)
        if not finite:
            raise EpisodeStateError("the action must be finite (got NaN or inf)", field="action")
        return c.reshape((rows, *shape)), flag

    # ---------------------------------------------------------------------------- observations
    def renderer(self) -> Any:
        """The sensor backend, built on first use like a batch episode's (:func:`sim.batch.make_renderer`)."""
        if self._renderer is None:
            from sim.batch import make_renderer

            self._renderer = make_renderer(self.spec, self.compiled.scene, self.renderer_name)
        return self._renderer

    def observe(self, state: engine.SimState) -> Any:
        """Observations of all B worlds of ``state``: an array (B, ...) or a dict of them."""
        frames = None
        if any(k.needs_render for k in self.kinds):
            r = self.renderer()
            frames = [r.render(state.world(b), self.obs_config.rig) for b in range(state.batch_size)]
        if len(self.kinds) == 1:
            return self.kinds[0].compute(state, frames)
        return {k.name: k.compute(state, frames) for k in self.kinds}

    def reward(self, state: engine.SimState) -> NDArray[np.float64]:
        """The reward (B,) of the step that produced ``state``."""
        w = self.reward_cfg
        return _reward(
            state.progress, state.collision, state.offroad, state.wrong_way, state.jerk, state.route_complete,
            w.progress_weight, w.collision_penalty, w.offroad_penalty, w.wrong_way_penalty, w.comfort_weight, w.complete_bonus,
        )  # fmt: skip

    def frame(self, state: engine.SimState, b: int = 0, size: int = 256, res: float = 0.25) -> NDArray[np.uint8]:
        """An RGB bird's-eye frame (size x size pixels, ``res`` m per pixel) of world ``b``."""
        if self._bev_view is None:
            cfg = ObservationConfig(bev_size=size, bev_res_m=res)
            self._bev_view = BevObservation(cfg, self.compiled)
        return bev_rgb(self._bev_view.compute(row_state(state, b))[0])

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


# ===================================================================== compiled per-step helpers
def _jit(fn: Any) -> Any:
    return numba.njit(cache=True)(fn)


@_jit
def _clip_rows(a, lo, hi):  # type: ignore[no-untyped-def]
    """Actions (B, k) clipped to [lo, hi] (k,), whether each row was changed, whether all are finite."""
    B, K = a.shape
    out = np.empty((B, K))
    flag = np.zeros(B, dtype=np.bool_)
    finite = True
    for b in range(B):
        for i in range(K):
            x = a[b, i]
            finite = finite and math.isfinite(x)
            c = min(max(x, lo[i]), hi[i])
            out[b, i] = c
            flag[b] = flag[b] or c != x
    return out, flag, finite


@_jit
def _normalized_control(action, accel_max, decel_max, steer_max):  # type: ignore[no-untyped-def]
    """Normalized actions (B, 2) in [-1, 1] -> [accel m/s^2, steer rad]: u0 * accel_max when u0 >= 0,
    u0 * decel_max below; u1 * steer_max."""
    B = action.shape[0]
    out = np.empty((B, 2))
    for b in range(B):
        u = action[b, 0]
        out[b, 0] = u * accel_max if u >= 0 else u * decel_max
        out[b, 1] = action[b, 1] * steer_max
    return out


@_jit
def _reward(progress, collision, offroad, wrong_way, jerk, complete, w_progress, w_collision, w_offroad, w_wrong, w_comfort, w_complete):  # type: ignore[no-untyped-def]
    """The reward (B,) of :meth:`EnvCore.reward`, term by term in its order."""
    B = progress.shape[0]
    r = np.empty(B)
    for b in range(B):
        j = jerk[b] / 10.0
        x = w_progress * progress[b]
        x = x - w_collision * collision[b] - w_offroad * offroad[b]
        x = x - w_wrong * wrong_way[b] - w_comfort * (j * j)
        r[b] = x + w_complete * complete[b]
    return r


# ========================================================================= state rows, obs rows
def row_state(state: engine.SimState, b: int) -> engine.SimState:
    """World ``b`` of ``state`` as a state of batch size 1."""
    return dataclasses.replace(state, **{f: getattr(state, f)[b : b + 1] for f in engine._ROW_FIELDS})


def scatter_rows(state: engine.SimState, rows: NDArray[np.int64], sub: engine.SimState) -> engine.SimState:
    """A copy of ``state`` whose worlds ``rows`` are the worlds of ``sub`` (batch size len(rows))."""
    vals = []
    for f in engine._ROW_FIELDS:
        a = getattr(state, f).copy()
        a[rows] = getattr(sub, f)
        a.flags.writeable = False
        vals.append(a)
    return engine.SimState._of_readonly(state.compiled, tuple(vals))


def index_obs(obs: Any, b: int) -> Any:
    """World ``b`` of a batched observation (array or dict of arrays)."""
    if isinstance(obs, dict):
        return {k: v[b] for k, v in obs.items()}
    return obs[b]


def put_obs_rows(obs: Any, rows: NDArray[np.int64], sub: Any) -> Any:
    """Write the batched observation ``sub`` (len(rows) worlds) into rows ``rows`` of ``obs`` (in place)."""
    if isinstance(obs, dict):
        for k, v in obs.items():
            v[rows] = sub[k]
    else:
        obs[rows] = sub
    return obs


# ======================================================================================== infos
def world_info(state: engine.SimState, b: int, clipped: bool) -> dict[str, Any]:
    """The ``info`` of world ``b``: :meth:`engine.SimState.metrics` plus ``action_clipped`` (the
    env clipped the action into its box) and ``actuator_limited`` (the bicycle limits clipped the
    control)."""
    info = state.metrics(b)
    info["action_clipped"] = bool(clipped)
    info["actuator_limited"] = bool(state.action_clipped[b])
    return info


def _partner_ids(st: engine.SimState) -> NDArray[np.object_]:
    ids = st.compiled.ids
    out = np.full(st.batch_size, None, dtype=object)
    for b, j in enumerate(st.collision_partner.tolist()):
        if j >= 0:
            out[b] = ids[j]
    return out


def _f64(a: Any) -> NDArray[np.float64]:
    return np.array(a, dtype=np.float64)


# The keys of world_info computed for all worlds at once; test_env_vector checks them against it.
_BATCHED: dict[str, Callable[[engine.SimState], NDArray[Any]]] = {
    "t_s": lambda st: (st.t_us.astype(np.int64) - int(st.compiled.t0_us)) * 1e-6,
    "collision": lambda st: np.array(st.collision, dtype=bool),
    "collision_partner": _partner_ids,
    "offroad": lambda st: np.array(st.offroad, dtype=bool),
    "wrong_way": lambda st: np.array(st.wrong_way, dtype=bool),
    "route_complete": lambda st: np.array(st.route_complete, dtype=bool),
    "progress_m": lambda st: _f64(st.progress),
    "route_progress_m": lambda st: _f64(st.s[:, 0]),
    "min_ttc_s": lambda st: _f64(st.min_ttc),
    "jerk_mps3": lambda st: _f64(st.jerk),
    "speed_mps": lambda st: _f64(st.v[:, 0]),
    "accel_mps2": lambda st: _f64(st.accel[:, 0]),
    "lateral_offset_m": lambda st: _f64(st.ego_lat),
    "off_route": lambda st: np.abs(_f64(st.ego_lat)) > engine.OFF_ROUTE_M,
    "actuator_limited": lambda st: np.array(st.action_clipped, dtype=bool),
}


def _array_of(values: list[Any]) -> NDArray[Any]:
    """Values of one key over the worlds, batched as gymnasium's ``_add_info`` batches them."""
    t = type(values[0])
    if t in (int, float, bool) or issubclass(t, np.number):
        return np.array(values, dtype=t)
    out = np.full(len(values), None, dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def info_arrays(state: engine.SimState, clipped: NDArray[np.bool_], keys: Sequence[str]) -> dict[str, NDArray[Any]]:
    """``{key: array (B,)}`` for ``keys`` (the keys of :func:`world_info`, in its order): element b
    equals ``world_info(state, b, clipped[b])[key]``. Keys without a batched formula are gathered
    world by world."""
    out: dict[str, NDArray[Any]] = {}
    slow = [k for k in keys if k not in _BATCHED and k != "action_clipped"]
    rows = [world_info(state, b, bool(clipped[b])) for b in range(state.batch_size)] if slow else []
    for k in keys:
        if k == "action_clipped":
            out[k] = np.array(clipped, dtype=bool)
        elif k in _BATCHED:
            out[k] = _BATCHED[k](state)
        else:
            out[k] = _array_of([r[k] for r in rows])
    return out
