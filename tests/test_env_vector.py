"""The native vector env against gymnasium's own SyncVectorEnv over single envs: both autoreset
modes, bit for bit (observations, rewards, flags, infos with their ``_key`` masks, final_obs /
final_info), and the batched infos against the single env's info."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import sim  # noqa: F401 - registers loopdrive/ClosedLoop-v0
from sim.env import ENV_ID, ClosedLoopEnv
from sim.env_core import info_arrays, world_info
from sim.errors import ScenarioError
from sim.vec_env import ClosedLoopVectorEnv
from sim.world import crossroads_scene
from tests._vec import SPEC, B, assert_same, scripted_actions


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP], ids=["next_step", "same_step"])
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"action_mode": "trajectory", "action_units": "normalized", "observation": ["state", "bev"]}],
    ids=["state-control", "dict-trajectory"],
)
def test_native_vector_env_equals_sync_vector_env(mode, kwargs):
    scene = crossroads_scene()
    native = gym.make_vec(ENV_ID, num_envs=B, vectorization_mode="vector_entry_point", autoreset_mode=mode, scenario=SPEC, scene=scene, **kwargs)
    sync = gym.make_vec(ENV_ID, num_envs=B, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}, scenario=SPEC, scene=scene, **kwargs)
    assert native.metadata["autoreset_mode"] is mode and sync.metadata["autoreset_mode"] is mode
    assert native.observation_space == sync.observation_space and native.action_space == sync.action_space
    steps = 100 if not kwargs else 50
    acts = scripted_actions(steps, native.single_action_space.shape)
    assert_same(native.reset(seed=11), sync.reset(seed=11), "reset")
    seen = {"term": 0, "trunc": 0, "final": 0, "staggered": 0}
    for t in range(steps):
        out_n, out_s = native.step(acts[t]), sync.step(acts[t])
        assert_same(out_n, out_s, f"step {t}")
        _, _, te, tr, infos = out_n
        seen["term"] += int(te.sum())
        seen["trunc"] += int(tr.sum())
        seen["final"] += int("final_obs" in infos)
        seen["staggered"] += int(0 < (te | tr).sum() < B)
    # the sequence crosses episode boundaries of both kinds, at different steps in different worlds
    assert seen["term"] >= 1 and seen["trunc"] >= 1 and seen["staggered"] >= 1
    if mode is AutoresetMode.NEXT_STEP:
        assert seen["final"] == 0
    else:
        assert seen["final"] >= 2
    # a reseed in the middle of an episode
    assert_same(native.reset(seed=[3, None, 5, None]), sync.reset(seed=[3, None, 5, None]), "reseed")
    for t in range(10):
        assert_same(native.step(acts[t]), sync.step(acts[t]), f"after reseed {t}")
    native.close()
    sync.close()


def test_infos_carry_every_single_env_key_with_masks_and_same_step_finals():
    scene = crossroads_scene()
    venv = ClosedLoopVectorEnv(B, SPEC, scene=scene, autoreset_mode="same_step")
    single = ClosedLoopEnv(SPEC, scene=scene)
    _, info1 = single.reset(seed=0)
    _, infos = venv.reset(seed=0)
    keys = set(info1)
    assert keys >= {"speed_mps", "t_s", "accel_mps2", "lateral_offset_m", "route_progress_m", "actuator_limited", "action_clipped", "collision_partner"}
    assert set(infos) == keys | {f"_{k}" for k in keys}
    for k in keys:
        assert infos[f"_{k}"].dtype == bool and infos[f"_{k}"].all()
    assert infos["collision_partner"].dtype == object and infos["speed_mps"].dtype == np.float64 and infos["collision"].dtype == bool
    a = np.tile(np.array([1.0, 0.0], np.float32), (B, 1))
    a[1:, 0] = 0.0  # only world 0 drives into car_1
    for _ in range(60):
        obs, rew, te, tr, infos = venv.step(a)
        if te[0]:
            break
    assert te[0] and not (te[1:] | tr[1:]).any()
    assert list(infos["_final_obs"]) == [True, False, False, False] and list(infos["_final_info"]) == [True, False, False, False]
    fi = infos["final_info"]
    assert fi["collision"][0] and fi["collision_partner"][0] == "car_1" and fi["_collision"].tolist() == [True, False, False, False]
    assert fi["collision_partner"][1] is None and rew[0] < -5.0  # the final step's reward
    assert infos["t_s"][0] == 0.0 and not infos["collision"][0] and infos["collision_partner"][0] is None  # the reset's info
    assert not np.array_equal(infos["final_obs"][0], obs[0])  # obs[0] is the fresh episode's


def test_batched_info_arrays_equal_world_info_row_by_row():
    venv = ClosedLoopVectorEnv(B, SPEC, scene=crossroads_scene())
    venv.reset(seed=1)
    acts = scripted_actions(60, (2,))
    checked = 0
    for t in range(60):
        venv.step(acts[t])
        st = venv.state
        clipped = np.arange(B) % 2 == t % 2
        keys = list(world_info(st, 0, False))
        arrays = info_arrays(st, clipped, keys)
        for b in range(B):
            row = world_info(st, b, bool(clipped[b]))
            got = {k: arrays[k][b] for k in keys}
            got = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in got.items()}
            assert got == row and [type(v) for v in got.values()] == [type(v) for v in row.values()]
            checked += 1
    assert checked == 60 * B


def test_autoreset_mode_is_validated():
    with pytest.raises(ScenarioError, match="autoreset_mode"):
        ClosedLoopVectorEnv(2, SPEC, scene=crossroads_scene(), autoreset_mode=AutoresetMode.DISABLED)
    with pytest.raises(ScenarioError, match="autoreset_mode"):
        ClosedLoopVectorEnv(2, SPEC, scene=crossroads_scene(), autoreset_mode="sometimes")
    for value in ("NextStep", "next_step", "SAME_STEP", AutoresetMode.SAME_STEP):
        env = ClosedLoopVectorEnv(1, SPEC, scene=crossroads_scene(), autoreset_mode=value)
        assert env.metadata["autoreset_mode"] is env.autoreset_mode
    assert ClosedLoopVectorEnv.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP  # the class default is untouched
