"""The Gymnasium env: checkers, spaces, determinism, error handling, vector env, RL smoke tests."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim  # noqa: F401 - registers loopdrive/ClosedLoop-v0
from sim.env import ENV_ID, ClosedLoopEnv
from sim.errors import EpisodeStateError
from sim.observations import ObservationConfig, state_layout
from sim.sensors import CameraSpec, LidarSpec, SensorRig
from sim.spec import BehaviorSpec, RemoveOp, ScenarioSpec
from sim.world import crossroads_scene

TINY_RIG = SensorRig((CameraSpec(width=64, height=48),), LidarSpec(beams=8, azimuth_steps=64))


def _checker_warnings(env: gym.Env) -> list[str]:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=False)
    # pyrender / PyOpenGL emit numpy DeprecationWarnings of their own; everything else counts
    return [str(w.message) for w in rec if not issubclass(w.category, DeprecationWarning)]


def test_registered_ids_pass_the_gymnasium_checker():
    ids = [k for k in gym.registry if k.startswith("loopdrive/")]
    assert ids == [ENV_ID]
    for env_id in ids:
        env = gym.make(env_id)
        assert _checker_warnings(env) == []
        env.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"observation": ["state"], "action_mode": "control"},
        {"observation": ["state"], "action_mode": "control", "action_units": "si"},
        {"observation": ["state"], "action_mode": "trajectory"},
        {"observation": ["bev"], "action_mode": "trajectory", "render_mode": "rgb_array"},
        {"observation": ["state", "bev"], "action_mode": "control", "render_mode": "rgb_array"},
    ],
    ids=["state-control", "state-control-si", "state-trajectory", "bev-trajectory", "dict-control"],
)
def test_checker_passes_for_each_kind_and_action_mode(kwargs):
    env = gym.make(ENV_ID, scene=crossroads_scene(), **kwargs)
    msgs = _checker_warnings(env)
    if kwargs.get("action_units") == "si":  # physical units: Gymnasium only recommends [-1, 1]
        msgs = [m for m in msgs if "symmetric and normalized" not in m]
    assert msgs == []
    if kwargs.get("render_mode") == "rgb_array":
        env.reset(seed=0)
        frame = env.render()
        assert frame.shape == (256, 256, 3) and frame.dtype == np.uint8 and len(np.unique(frame.reshape(-1, 3), axis=0)) >= 3


def test_camera_and_lidar_from_the_mesh_renderer():
    kw = {"observation": ["state", "camera", "lidar"], "obs_config": ObservationConfig(rig=TINY_RIG)}
    assert _checker_warnings(gym.make(ENV_ID, **kw)) == []  # the checker closes the env
    env = gym.make(ENV_ID, **kw)
    obs, _ = env.reset(seed=0)
    assert obs["camera"].shape == (48, 64, 3) and obs["camera"].dtype == np.uint8 and obs["camera"].std() > 5
    rng_img = obs["lidar"][..., 0]
    assert obs["lidar"].shape == (8, 64, 2) and (rng_img > 0).mean() > 0.3 and rng_img.max() <= 80.0
    env.close()


def test_stable_baselines3_checker():
    from stable_baselines3.common.env_checker import check_env as sb3_check

    for kw in ({"observation": ["state"]}, {"observation": ["state"], "action_mode": "trajectory", "action_units": "normalized"}):
        env = ClosedLoopEnv(scene=crossroads_scene(), **kw)
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            sb3_check(env, warn=True)
        assert [str(w.message) for w in rec if not issubclass(w.category, DeprecationWarning)] == []


def _rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    out = [obs]
    rews = []
    for a in actions:
        obs, r, te, tr, _ = env.step(a)
        out.append(obs)
        rews.append(r)
        if te or tr:
            break
    return np.stack(out), np.array(rews)


def test_determinism_and_independent_envs():
    scene = crossroads_scene()
    spec = ScenarioSpec(horizon_s=3.0, logged_behavior=BehaviorSpec("idm", {"v0_jitter": 0.2}))
    acts = np.random.default_rng(0).uniform(-1, 1, (30, 2)).astype(np.float32)
    e1, e2 = ClosedLoopEnv(spec, scene=scene), ClosedLoopEnv(spec, scene=scene)
    o1, r1 = _rollout(e1, 7, acts)
    # interleave a second env with a different seed between two replays of the first
    e2.reset(seed=99)
    e2.step(acts[0])
    o2, r2 = _rollout(e1, 7, acts)
    e2.step(acts[1])
    assert o1.tobytes() == o2.tobytes() and r1.tobytes() == r2.tobytes()
    o3, _ = _rollout(e2, 7, acts)
    assert o3.tobytes() == o1.tobytes()  # the same seed in another env instance: same episode
    o4, _ = _rollout(e2, 8, acts)
    assert o4.tobytes() != o1.tobytes()


def test_action_errors_clipping_and_termination():
    env = ClosedLoopEnv(ScenarioSpec(horizon_s=2.0, actors=(RemoveOp("car_1"),)), scene=crossroads_scene())
    with pytest.raises(EpisodeStateError, match="reset"):
        env.step(np.zeros(2, np.float32))
    env.reset(seed=0)
    with pytest.raises(EpisodeStateError, match="finite"):
        env.step(np.array([np.nan, 0.0], np.float32))
    _, _, _, _, info = env.step(np.array([5.0, 0.0], np.float32))
    assert info["action_clipped"] is True and info["accel_mps2"] <= 3.0
    _, _, _, _, info = env.step(np.array([0.5, 0.0], np.float32))
    assert info["action_clipped"] is False
    for k in ("min_ttc_s", "collision_partner", "offroad", "progress_m", "jerk_mps3"):
        assert k in info
    done = False
    while not done:
        _, _, te, tr, info = env.step(np.zeros(2, np.float32))
        done = te or tr
    assert tr and not te
    with pytest.raises(EpisodeStateError, match="reset"):
        env.step(np.zeros(2, np.float32))
    env.reset(seed=1)
    env.step(np.zeros(2, np.float32))  # usable again after reset


def test_collision_terminates_with_penalty():
    env = ClosedLoopEnv(ScenarioSpec(horizon_s=8.0), scene=crossroads_scene())
    env.reset(seed=0)
    te = False
    while not te:
        _, r, te, tr, info = env.step(np.array([1.0, 0.0], np.float32))
        assert not tr
    assert info["collision"] and info["collision_partner"] == "car_1" and r < -5.0


def test_removed_actor_is_absent_from_state_observation():
    scene = crossroads_scene()
    lay = state_layout(ObservationConfig())
    with_car, _ = ClosedLoopEnv(ScenarioSpec(), scene=scene).reset(seed=0)
    without, _ = ClosedLoopEnv(ScenarioSpec(actors=(RemoveOp("car_1"),)), scene=scene).reset(seed=0)
    a1 = with_car[lay["actors"]].reshape(-1, 9)
    a2 = without[lay["actors"]].reshape(-1, 9)
    assert a1[:, 0].sum() == 3 and a2[:, 0].sum() == 2
    # car_1 is 22 m straight ahead of the ego in the same lane
    assert np.any(np.isclose(a1[:, 1], 22.0, atol=0.01) & np.isclose(a1[:, 2], 0.0, atol=0.01))
    assert not np.any(np.isclose(a2[:, 1], 22.0, atol=0.01) & (a2[:, 0] > 0))


def test_vector_env_steps_all_worlds_and_autoresets():
    venv = gym.make_vec(ENV_ID, num_envs=4, vectorization_mode="vector_entry_point", scenario=ScenarioSpec(horizon_s=0.5), scene=crossroads_scene())
    obs, _ = venv.reset(seed=3)
    assert obs.shape == (4, 102) and obs.dtype == np.float32
    single = ClosedLoopEnv(ScenarioSpec(horizon_s=0.5), scene=crossroads_scene())
    o_single, _ = single.reset(seed=5)
    np.testing.assert_array_equal(obs[2], o_single)  # world i is seeded with seed + i
    acts = np.zeros((4, 2), np.float32)
    for _ in range(5):
        obs, rew, te, tr, info = venv.step(acts)
        assert not te.any()
    assert tr.all() and rew.shape == (4,) and set(info) >= {"collision", "min_ttc_s", "progress_m", "action_clipped"}
    obs2, rew2, te2, tr2, _ = venv.step(acts)  # NEXT_STEP autoreset
    assert not (te2 | tr2).any() and np.all(rew2 == 0.0)
    np.testing.assert_array_equal(obs2[0], venv.reset(seed=3)[0][0])
    venv.close()


def test_ppo_trains_on_state_observation():
    """PPO learns from the env's observations and rewards: with the reward set to route progress
    over a 2 s episode, 2048 steps teach it to accelerate (measured over PPO seeds 0-3: the greedy
    return rises by 1.2-2.7 and the mean throttle from ~0 to 0.18-0.51; seed 0 here)."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    from sim.env_core import RewardConfig

    def make() -> ClosedLoopEnv:
        return ClosedLoopEnv(ScenarioSpec(horizon_s=2.0), scene=crossroads_scene(), reward=RewardConfig(progress_weight=1.0))

    def greedy(model: PPO) -> tuple[float, float]:
        """(return, mean normalised throttle) of the deterministic policy's episode."""
        env = make()
        obs, _ = env.reset(seed=0)
        ret, throttle, done = 0.0, [], False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            throttle.append(float(action[0]))
            obs, r, te, tr, _ = env.step(action)
            ret, done = ret + float(r), te or tr
        return ret, float(np.mean(throttle))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: threading only adds overhead on a shared CPU
    try:
        model = PPO("MlpPolicy", make(), n_steps=256, batch_size=64, n_epochs=10, learning_rate=1e-3, seed=0, device="cpu", verbose=0)
        model.set_logger(Logger(folder=None, output_formats=[]))  # no SB3-<date> folder in the temp dir
        before = greedy(model)
        model.learn(total_timesteps=2048)
        after = greedy(model)
    finally:
        torch.set_num_threads(threads)
    assert abs(before[1]) < 0.05  # the untrained policy neither accelerates nor brakes
    assert after[1] > 0.15 and after[0] > before[0] + 1.0, (before, after)


def test_scripted_lane_follow_policy_completes_the_route():
    env = gym.make(ENV_ID, scenario=ScenarioSpec(horizon_s=30.0, logged_behavior=BehaviorSpec("idm")), action_mode="trajectory")
    lay = state_layout(ObservationConfig())
    obs, _ = env.reset(seed=0)
    route = env.unwrapped.compiled.ego_route
    info = {}
    for _ in range(300):
        # the route centreline every 4 m is a trajectory at 8 m/s with the 0.5 s controller step
        obs, _, te, tr, info = env.step(obs[lay["route"]].reshape(-1, 2)[:8])
        if te or tr:
            break
    assert te and info["route_complete"] and not info["collision"] and not info["offroad"]
    assert len(route) >= 2 and info["route_progress_m"] > 50.0
