"""``threads``: the vector env's engine step shared among worker threads gives the same bits as one
thread (observations, rewards, flags, infos across resets), refuses a bad action the way one call
does whichever slice holds it, cuts the worlds into the stated slices, and validates the option."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import sim  # noqa: F401 - registers loopdrive/ClosedLoop-v0
from sim import engine
from sim.env import ENV_ID
from sim.errors import EpisodeStateError, ScenarioError
from sim.world import crossroads_scene
from tests._vec import SPEC, assert_same

WORLDS = 20  # two slices of 10 (StepThreads keeps at least 8 worlds per slice)


def _actions(n: int) -> np.ndarray:
    rng = np.random.default_rng(5)
    a = rng.uniform(-1, 1, (n, WORLDS, 2)).astype(np.float32)
    a[:, 0] = [1.0, 0.0]  # world 0 drives into the car ahead: a collision in the first slice
    a[:, 13] = [1.0, 1.0]  # world 13 leaves the road: an off-road end in the second slice
    return a


def test_threaded_vector_env_equals_one_thread_bit_for_bit():
    scene = crossroads_scene()
    one = gym.make_vec(ENV_ID, num_envs=WORLDS, vectorization_mode="vector_entry_point", scenario=SPEC, scene=scene)
    two = gym.make_vec(ENV_ID, num_envs=WORLDS, vectorization_mode="vector_entry_point", scenario=SPEC, scene=scene, threads=2)
    assert two.unwrapped._threads is not None and two.unwrapped._threads.slices(WORLDS) == [(0, 10), (10, 20)]
    acts = _actions(90)
    assert_same(one.reset(seed=3), two.reset(seed=3), "reset")
    ends = 0
    for t in range(len(acts)):
        out1, out2 = one.step(acts[t]), two.step(acts[t])
        assert_same(out1, out2, f"step {t}")
        ends += int((out1[2] | out1[3]).sum())
    assert ends >= WORLDS  # the run crosses episode ends (and autoresets) in both slices
    for name in ("x", "y", "v", "s", "d", "path_id", "valid", "min_ttc"):
        assert getattr(one.unwrapped.state, name).tobytes() == getattr(two.unwrapped.state, name).tobytes(), name
    one.close()
    two.close()
    assert two.unwrapped._threads._pool is None  # close() stops the worker threads


def test_a_bad_action_in_any_slice_is_refused_as_one_call_refuses_it():
    c = engine.compile_scenario(SPEC, crossroads_scene())
    st = engine.reset_batch(c, [np.random.default_rng(i) for i in range(6)])
    pool = engine.StepThreads(3, min_worlds=1)
    try:
        assert pool.slices(6) == [(0, 2), (2, 4), (4, 6)]
        a = np.zeros((6, 2))
        same = engine.step(st, a, threads=pool)
        for name in ("x", "y", "yaw", "v", "s", "valid", "collision", "min_ttc", "t_us"):
            assert getattr(same, name).tobytes() == getattr(engine.step(st, a), name).tobytes(), name
        a[5, 1] = np.nan  # in the last slice
        with pytest.raises(EpisodeStateError, match="must be finite"):
            engine.step(st, a, threads=pool)
        # a done world in the first slice and a non-finite action in the last: the action is
        # checked first, as by one call
        term = st.terminated.copy()
        term[0] = True
        ended = engine.SimState._of(c, {**{k: getattr(st, k).copy() for k in engine._ROW_FIELDS}, "terminated": term})
        with pytest.raises(EpisodeStateError, match="must be finite"):
            engine.step(ended, a, threads=pool)
        a[5, 1] = 0.0
        with pytest.raises(EpisodeStateError, match="episode is over"):
            engine.step(ended, a, threads=pool)
    finally:
        pool.close()
        pool.close()  # idempotent


def test_slices_keep_a_minimum_of_worlds():
    pool = engine.StepThreads(2)
    try:
        assert pool.slices(15) == [(0, 15)]  # below 2 x 8 worlds: one call
        assert pool.slices(16) == [(0, 8), (8, 16)]
        assert pool.slices(257) == [(0, 128), (128, 257)]
    finally:
        pool.close()
    assert engine.StepThreads(1).slices(100) == [(0, 100)]
    with pytest.raises(ValueError, match="threads >= 1"):
        engine.StepThreads(0)


@pytest.mark.parametrize("bad", [0, -2, True, 1.5, "2"])
def test_threads_option_is_validated(bad):
    with pytest.raises(ScenarioError, match="threads") as e:
        gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="vector_entry_point", scenario=SPEC, scene=crossroads_scene(), threads=bad)
    assert e.value.field == "threads"
