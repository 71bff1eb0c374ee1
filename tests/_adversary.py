"""Shared pieces of the corner-case search tests: a tiny-town base scenario (ego behind a car
that an adversary can replace) and a planner that ignores everything, registered by the modules
that use it (:func:`blind_throttle_registered`)."""

from __future__ import annotations

import contextlib

from sim.planning import PLANNERS, Control, Float, ObservationSpec, Planner, PlannerInit, PlannerParams
from tests._registry import registered

BASE = """\
version: 1
name: tiny_follow
tags: [longitudinal]
scene: {town: tiny, seed: 0}
ego:
  start: {lane: lane_1, s: 4.0, speed: 8.0}
  route: [lane_1, lane_21, lane_5]
actors:
  - {op: insert, id: lead, class: car, spawn: {lane: lane_1, s: 22.0, speed: 8.0}, behavior: {type: idm, v0: 8.0}}
planner: {name: idm}
horizon_s: 3.0
seeds: [0]
"""


class BlindThrottle(Planner):
    """Test planner: a constant acceleration straight ahead (``accel`` m/s², default 2), ignoring
    everything (fails behind a braking car)."""

    class Params(PlannerParams):
        accel: Float = 2.0  # m/s²

    name = "test_blind_throttle"

    def observation_spec(self) -> ObservationSpec:
        return ObservationSpec(kinds=("ego",))

    def reset(self, init: PlannerInit, *, seed: int | None = None) -> None:
        pass

    def plan(self, obs: object) -> Control:
        return Control(float(self.params.get("accel", 2.0)), 0.0)


def blind_throttle_registered() -> contextlib.AbstractContextManager[None]:
    """``BlindThrottle`` in the planner registry for a ``with`` block (a test module's fixture),
    removed afterwards."""
    return registered(PLANNERS, (BlindThrottle.name, BlindThrottle))
