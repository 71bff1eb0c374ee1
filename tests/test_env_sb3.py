"""The SB3 VecEnv adapter over the batched engine against SB3's DummyVecEnv of single envs: the
same rollouts (observations, rewards, dones, infos with terminal_observation and
TimeLimit.truncated, reset_infos), PPO training to the same weights, the VecEnv API."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from stable_baselines3 import PPO
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.utils import check_for_correct_spaces
from stable_baselines3.common.vec_env import DummyVecEnv, VecCheckNan, VecMonitor

import sim  # noqa: F401 - registers loopdrive/ClosedLoop-v0
from sim.env import ClosedLoopEnv
from sim.errors import ScenarioError
from sim.vec_env import ClosedLoopVectorEnv
from sim.vec_sb3 import LoopdriveSB3VecEnv, make_sb3_vec_env, to_sb3
from sim.world import crossroads_scene
from tests._vec import SPEC, B, assert_same, scripted_actions


def _plain(obs):
    """DummyVecEnv gives Dict observations as an OrderedDict, the adapter as a dict."""
    return dict(obs) if isinstance(obs, dict) else obs


def _pair(**kw):
    scene = crossroads_scene()
    adapter = make_sb3_vec_env(B, scenario=SPEC, scene=scene, **kw)
    dummy = DummyVecEnv([lambda: ClosedLoopEnv(SPEC, scene=scene, **kw) for _ in range(B)])
    return adapter, dummy


@pytest.mark.parametrize(
    "kw",
    [{}, {"action_mode": "trajectory", "action_units": "normalized", "observation": ["state", "bev"]}],
    ids=["state-control", "dict-trajectory"],
)
def test_adapter_rollout_equals_dummy_vec_env(kw):
    adapter, dummy = _pair(**kw)
    single = ClosedLoopEnv(SPEC, scene=crossroads_scene(), **kw)
    check_for_correct_spaces(adapter, single.observation_space, single.action_space)
    check_for_correct_spaces(adapter, dummy.observation_space, dummy.action_space)
    steps = 100 if not kw else 50
    acts = scripted_actions(steps, single.action_space.shape)
    assert adapter.seed(7) == dummy.seed(7) == [7, 8, 9, 10]
    assert_same(_plain(adapter.reset()), _plain(dummy.reset()), "reset")
    assert_same(adapter.reset_infos, dummy.reset_infos, "reset_infos")
    dones = truncs = 0
    for t in range(steps):
        o1, r1, d1, i1 = adapter.step(acts[t])
        o2, r2, d2, i2 = dummy.step(acts[t])
        assert_same(_plain(o1), _plain(o2), f"obs {t}")
        assert_same((r1, d1), (r2, d2), f"reward/done {t}")
        assert_same(i1, i2, f"infos {t}")
        assert_same(adapter.reset_infos, dummy.reset_infos, f"reset_infos {t}")
        dones += int(d1.sum())
        truncs += sum(i["TimeLimit.truncated"] for i in i1)
    assert dones > truncs >= 1  # terminations and truncations both crossed
    # a reset without new seeds continues every world's generator, as DummyVecEnv's envs do
    assert_same(_plain(adapter.reset()), _plain(dummy.reset()), "second reset")
    adapter.close()
    dummy.close()


def _ppo(venv):
    model = PPO("MlpPolicy", VecCheckNan(venv, raise_exception=True), n_steps=32, batch_size=64, n_epochs=2, seed=3, device="cpu", verbose=0)
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def test_ppo_trains_on_the_adapter_exactly_as_on_dummy_vec_env():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        adapter, dummy = _pair()
        m1 = _ppo(VecMonitor(adapter))  # PPO seeds torch's global generator: build and train one after the other
        init = {k: v.clone() for k, v in m1.policy.state_dict().items()}
        m1.learn(total_timesteps=384)  # 3 rollouts of 4 x 32 steps: episodes end inside them
        m2 = _ppo(VecMonitor(dummy))
        m2.learn(total_timesteps=384)
    finally:
        torch.set_num_threads(threads)
    assert m1.num_timesteps == m2.num_timesteps == 384
    s1, s2 = m1.policy.state_dict(), m2.policy.state_dict()
    assert any(not torch.equal(init[k], s1[k]) for k in s1)  # it trained
    for k in s1:  # on the same transitions, to the same weights
        assert torch.equal(s1[k], s2[k]), k
    episodes = [[(e["r"], e["l"]) for e in m.ep_info_buffer] for m in (m1, m2)]  # VecMonitor's return and length
    assert len(episodes[0]) >= 4 and episodes[0] == episodes[1]


def test_vec_env_api():
    scene = crossroads_scene()
    venv = make_sb3_vec_env(3, scenario=SPEC, scene=scene, render_mode="rgb_array", observation=["state", "bev"])
    assert venv.num_envs == 3 and venv.render_mode == "rgb_array" and venv.get_attr("observation_kinds") == [("state", "bev")] * 3
    assert venv.has_attr("compiled") and not venv.has_attr("no_such_attribute")
    assert venv.get_attr("render_mode", indices=[0, 2]) == ["rgb_array", "rgb_array"]
    assert venv.env_is_wrapped(VecMonitor) == [False, False, False]
    obs = venv.reset()
    assert set(obs) == {"state", "bev"} and obs["state"].shape == (3, 102) and obs["bev"].dtype == np.uint8
    images = venv.get_images()
    assert len(images) == 3 and all(im.shape == (256, 256, 3) and im.dtype == np.uint8 for im in images)
    assert venv.render().shape == (512, 512, 3)  # SB3 tiles 3 frames 2 x 2
    assert len(venv.env_method("render")[0]) == 3
    venv.set_attr("render_mode", None)
    assert venv.get_attr("render_mode") == [None] * 3
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert venv.get_images() == [None, None, None]
    with pytest.raises(ScenarioError, match="indices"):
        venv.set_attr("render_mode", "rgb_array", indices=[1])
    with pytest.raises(ScenarioError, match="same_step"):
        to_sb3(ClosedLoopVectorEnv(2, SPEC, scene=scene))  # NEXT_STEP: SB3 needs the reset within the step
    with pytest.raises(ScenarioError, match="autoreset_mode"):
        make_sb3_vec_env(2, scene=scene, autoreset_mode="next_step")
    same = ClosedLoopVectorEnv(2, SPEC, scene=scene, autoreset_mode=AutoresetMode.SAME_STEP)
    assert isinstance(to_sb3(same), LoopdriveSB3VecEnv)
    venv.close()


def test_bench_sb3_ppo_row():
    from sim.bench.all import summary_rows
    from sim.bench.env import bench_sb3_ppo

    threads = torch.get_num_threads()
    res = bench_sb3_ppo(2, quick=True)
    assert torch.get_num_threads() == threads  # restored
    assert res["available"] and res["num_envs"] == 2 and res["steps_per_round"] == 64 and res["ppo"]["n_steps"] == 32
    for name in ("loopdrive_sb3_adapter", "dummy_vec_env"):
        fig = res[name]
        assert len(fig["slices"]) == 1 and fig["train_steps_per_s"] > 0 and fig["rollout_steps_per_s"] >= fig["train_steps_per_s"]
    ratio = res["loopdrive_sb3_adapter"]["train_steps_per_s"] / res["dummy_vec_env"]["train_steps_per_s"]
    assert res["adapter_vs_dummy"]["train"] == ratio
    rows = {r[1]: r[2] for r in summary_rows({"env": {"sb3_ppo": {"loopdrive_sb3_adapter": {"train_steps_per_s": 2500.0}, "dummy_vec_env": {"train_steps_per_s": 400.0}}}})}
    assert rows["SB3 PPO env steps/s, batched adapter / DummyVecEnv (same B)"] == "2500 / 400"
    assert {r[1]: r[2] for r in summary_rows({})}["SB3 PPO env steps/s, batched adapter / DummyVecEnv (same B)"] is None
