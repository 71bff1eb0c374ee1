"""Reference planners closed-loop on the built-in crossroads (fast, in-memory scene)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from agents.planners.lidar_stack import LidarStackPlanner
from sim import engine
from sim.errors import ScenarioError
from sim.metrics import compute_metrics
from sim.planning import (
    PLANNERS,
    Control,
    ObservationSpec,
    Planner,
    PlannerInit,
    PlannerParams,
    check_observation_spec,
)
from sim.rollout import run_planner_episode
from sim.spec import BehaviorSpec, EgoSpec, InsertOp, ScenarioSpec, SpawnSpec
from sim.world import crossroads_scene
from tests._registry import registered

ROUTE = ("E_in_1", "E_1_straight", "E_out_1")
STOP_X = -40.0  # world x of the stopped car's centre (E_in_1 starts at x = -80)


@pytest.fixture(scope="module")
def scene() -> Any:
    return crossroads_scene(actors=(), duration_s=14.0)


def _spec(stopped: bool, horizon: float) -> ScenarioSpec:
    ops = (
        (InsertOp(id="stopped", cls="car", size=(4.5, 1.9, 1.5), spawn=SpawnSpec(lane="E_in_1", s=40.0, speed=0.0), behavior=BehaviorSpec("static")),)
        if stopped
        else ()
    )
    return ScenarioSpec(name="t", ego=EgoSpec(route=ROUTE), actors=ops, horizon_s=horizon)


@pytest.fixture(scope="module")
def free_road(scene: Any) -> tuple[ScenarioSpec, Any]:
    spec = _spec(False, 5.0)
    return spec, engine.compile_scenario(spec, scene)


@pytest.fixture(scope="module")
def stopped_car(scene: Any) -> tuple[ScenarioSpec, Any]:
    spec = _spec(True, 9.0)
    return spec, engine.compile_scenario(spec, scene)


@pytest.mark.parametrize("name", ["log_replay", "idm", "pdm_closed", "lidar_stack"])
def test_planner_drives_a_simple_route(name: str, free_road: tuple[ScenarioSpec, Any]) -> None:
    spec, c = free_road
    res = run_planner_episode(spec, name, 0, compiled=c, observation=("state", "lidar"))
    assert res.status == "ok", res.error
    values, score = compute_metrics(res.record)
    assert values["collision"].score == 1.0 and values["offroad"].score == 1.0
    assert values["driving_direction"].score == 1.0
    moved = float(np.hypot(*(res.record.ego_xy[-1] - res.record.ego_xy[0])))
    assert moved > 35.0  # 5 s from 8 m/s toward the 13.9 m/s limit
    assert score > 0.8


def test_pdm_closed_passes_a_stopped_car_that_idm_stops_behind(stopped_car: tuple[ScenarioSpec, Any]) -> None:
    spec, c = stopped_car
    idm = run_planner_episode(spec, "idm", 0, compiled=c)
    pdm = run_planner_episode(spec, "pdm_closed", 0, compiled=c)
    assert idm.status == pdm.status == "ok"
    for r in (idm, pdm):
        assert r.termination != "collision"
        assert compute_metrics(r.record)[0]["collision"].score == 1.0
    # idm waits behind the car (its front short of the car's rear), stopped
    assert idm.record.ego_xy[-1, 0] + 2.3 < STOP_X - 2.25
    assert idm.record.ego_speed[-1] < 0.5
    # pdm changes into the free inner lane and drives past it
    assert pdm.record.ego_xy[-1, 0] > STOP_X + 10.0
    assert compute_metrics(pdm.record)[1] > compute_metrics(idm.record)[1]


class _Spy(LidarStackPlanner):
    name = "lidar_stack_spy"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.seen: list[set[str]] = []

    def plan(self, obs: Any) -> Control:
        self.seen.append(set(obs))
        return super().plan(obs)


def test_lidar_stack_gets_only_what_it_declared_and_still_stops(stopped_car: tuple[ScenarioSpec, Any]) -> None:
    spec, c = stopped_car
    spy = _Spy()
    # the configuration offers privileged kinds too; the planner must receive only its own
    res = run_planner_episode(spec, spy, 0, compiled=c, observation=("state", "objects", "lidar", "bev"))
    assert res.status == "ok", res.error
    assert spy.seen and all(s == {"ego", "lidar"} for s in spy.seen)
    assert res.termination != "collision"
    # it perceived the stopped car from the LiDAR alone and stopped behind it
    assert res.record.ego_xy[-1, 0] < STOP_X - 2.25
    det = spy.last_actors
    # the LiDAR sees the car's rear face (x = STOP_X - 2.25, across the lane centre y = -5.25)
    assert det.n >= 1 and np.min(np.hypot(det.xy[:, 0] - (STOP_X - 2.25), det.xy[:, 1] + 5.25)) < 0.5


def test_observation_spec_mismatch_names_what_is_missing(free_road: tuple[ScenarioSpec, Any]) -> None:
    spec, c = free_road
    with pytest.raises(ScenarioError, match=r"lidar_stack.*\['lidar'\]"):
        run_planner_episode(spec, "lidar_stack", 0, compiled=c, observation=("state",))
    with pytest.raises(ScenarioError, match=r"camera\(s\) \['rear'\]"):
        check_observation_spec(ObservationSpec(kinds=("camera",), cameras=("rear",)), ["camera"], ["front"], planner="p")


class _Bad(Planner):
    class Params(PlannerParams):
        mode: str = "raise"

    name = "test_bad"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.mode = params.get("mode", "raise")
        self.k = 0

    def observation_spec(self) -> ObservationSpec:
        return ObservationSpec(kinds=("ego",))

    def reset(self, init: PlannerInit, *, seed: int | None = None) -> None:
        self.k = 0

    def plan(self, obs: Any) -> Control:
        self.k += 1
        if self.k < 5:
            return Control(0.0, 0.0)
        if self.mode == "raise":
            raise RuntimeError("planner blew up")
        return Control(math.nan, 0.0)


@pytest.mark.parametrize("mode", ["raise", "nan"])
def test_failing_planner_is_an_error_episode(mode: str, free_road: tuple[ScenarioSpec, Any]) -> None:
    spec, c = free_road
    res = run_planner_episode(spec, _Bad(mode=mode), 0, compiled=c)
    assert res.status == "error" and res.steps == 4
    assert ("blew up" in res.error) if mode == "raise" else ("non-finite" in res.error)

    # through the batch runner: an error row, and the batch goes on with the next episode
    from sim.batch import run_episode
    from sim.scenario import Episode

    def rollout(ep: Episode, name: str, params: Any) -> Any:
        return run_planner_episode(ep.spec, name, ep.seed, params=params, compiled=c, raise_errors=True).record

    with registered(PLANNERS, ("test_bad", _Bad)):  # removed again after the block
        bad = run_episode(Episode("bad", "t", 0, spec, planner="test_bad", planner_params={"mode": mode}), rollout_fn=rollout)
    assert "test_bad" not in PLANNERS
    good = run_episode(Episode("good", "t", 0, spec, planner="idm"), rollout_fn=rollout)
    assert bad.row["status"] == "error" and bad.row["error"]
    assert good.row["status"] == "ok" and good.row["score"] > 0.5



# the sb3 planner and PPO training: tests/test_sb3_policy.py
