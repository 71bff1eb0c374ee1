"""The graded search objective, distinct-failure counting, the CEM proposal (uniform first
generation, elitism, truncation to the cube), the oracle chain and uniform draws of a space."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sim.adversary import AttackConfig, attack, read_provenance, sample_cases
from sim.adversary.search import UNSOLVABLE_OBJECTIVE, Candidate, _Sampler, distinct_failures, min_clearance_m
from sim.scenario import expand, validate_file
from tests._adversary import BlindThrottle, blind_throttle_registered


@pytest.fixture(autouse=True)
def _blind_throttle() -> Iterator[None]:
    """The test planner is registered for each test here, and only then."""
    with blind_throttle_registered():
        yield


def _rec(ego_xy: list[tuple[float, float]], actor_xy: list[tuple[float, float]], valid: bool = True) -> SimpleNamespace:
    T = len(ego_xy)
    return SimpleNamespace(
        t_s=np.arange(T) * 0.1, ego_xy=np.array(ego_xy, float), ego_yaw=np.zeros(T), ego_size=(4.0, 2.0),
        actor_ids=("a",), actor_xy=np.array(actor_xy, float)[:, None, :], actor_yaw=np.zeros((T, 1)),
        actor_size=np.array([[4.0, 2.0]]), actor_valid=np.full((T, 1), valid),
    )  # fmt: skip


def test_clearance_of_boxes_side_by_side_and_in_line() -> None:
    # side by side, centres 5 m apart laterally: true gap 3 m; three discs of radius
    # sqrt((4/6)^2 + 1) = 1.20 m under-estimate it by at most 2 * 0.20 m
    side = min_clearance_m(_rec([(0, 0), (0, 0)], [(0, 6), (0, 5)]))
    assert 2.5 < side <= 3.0
    # in line, centres 10 m apart: gap 6 m, disc ends at +-(4/3 + 1.2) m
    inline = min_clearance_m(_rec([(0, 0)], [(10, 0)]))
    assert inline == pytest.approx(10 - 2 * (4 / 3 + math.sqrt((4 / 6) ** 2 + 1)))
    assert min_clearance_m(_rec([(0, 0)], [(1, 0)])) == 0.0  # overlapping
    assert min_clearance_m(_rec([(0, 0)], [(1, 0)], valid=False)) == math.inf  # invalid actors ignored


def _cand(i: int, u: tuple[float, ...], failure: str = "collision", solvable: bool | None = True) -> Candidate:
    return Candidate(i, u, {}, str(i), -1.0, failure, 0.0, 0.0, solvable)


def test_distinct_failures_merge_near_points_only() -> None:
    cands = [
        _cand(0, (0.5, 0.5)),
        _cand(1, (0.53, 0.48)),  # within 0.05 in every dimension: the same case
        _cand(2, (0.5, 0.58)),  # 0.08 away in one dimension: distinct
        _cand(3, (0.9, 0.9), solvable=False),  # unsolvable: never counted
        _cand(4, (0.1, 0.1), failure=""),  # not a failure
        _cand(5, (0.1, 0.9)),
    ]
    assert distinct_failures(cands, 0.05) == 3
    assert distinct_failures(cands, 0.0) == 4
    assert distinct_failures(cands, 1.0) == 1


def test_cem_first_generation_is_the_uniform_baseline() -> None:
    cfg = AttackConfig(method="cem", budget=40)
    a = _Sampler("cem", 3, 40, cfg, np.random.default_rng(5))
    b = _Sampler("random", 3, 40, cfg, np.random.default_rng(5))
    assert a.pop == 8  # ten generations of a 40-episode budget, at least 8
    ua = np.array([a.sample() for _ in range(a.pop)])
    ub = np.array([b.sample() for _ in range(a.pop)])
    assert np.array_equal(ua, ub)


def test_cem_keeps_elites_and_stays_in_the_cube() -> None:
    cfg = AttackConfig(method="cem", budget=100, population=10)
    s = _Sampler("cem", 2, 100, cfg, np.random.default_rng(0))
    us = np.array([s.sample() for _ in range(10)])
    objs = np.linalg.norm(us - 1.0, axis=1)
    s.update(us, objs)
    best = us[np.argmin(objs)]
    # a later generation of poor points does not evict the best point found so far
    s.update(np.full((10, 2), 0.0), np.full(10, 9.0))
    assert any(np.array_equal(best, e) for e in s.elite_u)
    draws = np.array([s.sample() for _ in range(200)])
    assert draws.min() >= 0.0 and draws.max() <= 1.0
    # truncation by resampling: no pile-up of samples exactly on the faces of the cube
    assert np.mean((draws == 0.0) | (draws == 1.0)) < 0.05


def test_oracle_chain_records_the_solver_and_unsolvable_failures_repel_the_search(tiny_follow_base: Path, tmp_path: Path) -> None:
    gen = tmp_path / "generated"
    # the planner under test is skipped as its own oracle; idm then solves the case
    cfg = AttackConfig(planner=BlindThrottle.name, method="random", budget=2, seed=3, template="lead_brake", horizon_s=3.0,
                       oracle=f"{BlindThrottle.name},idm")  # fmt: skip
    res = attack(tiny_follow_base, cfg, generated_dir=gen)
    assert res.n_solvable >= 1 and res.n_distinct >= 1
    assert res.files and all(read_provenance(f)["oracle"] == "idm" for f in res.files)
    assert res.summary()["distinct_failures"] == res.n_distinct
    # failures are graded below every non-failure (impact speed makes them differ)
    fails = [c.objective for c in res.candidates if c.failure]
    assert fails and all(-1.5 <= o <= -1.0 for o in fails)
    assert UNSOLVABLE_OBJECTIVE > 0.0


def test_sample_cases_are_valid_deterministic_uniform_draws(tiny_follow_base: Path, tmp_path: Path) -> None:
    a = sample_cases(tiny_follow_base, 3, tmp_path / "a", seed=4, planner="idm", template="lead_brake", horizon_s=2.0)
    b = sample_cases(tiny_follow_base, 3, tmp_path / "b", seed=4, planner="idm", template="lead_brake", horizon_s=2.0)
    assert len(a) == 3 and [Path(p).name for p in a] == [Path(p).name for p in b]
    assert len(set(a)) == 3
    for f in a:
        assert validate_file(f) == []
        ep = expand(f)[0]
        assert ep.planner == "idm" and ep.spec.horizon_s == 2.0
        assert [x.id for x in ep.spec.actors if getattr(x, "id", None) == "adversary"]


def test_attack_cli_reports_distinct_failures(tiny_follow_base: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sim.cli import app

    out = tmp_path / "attack"
    r = CliRunner().invoke(app, ["attack", "--planner", BlindThrottle.name, "--base", str(tiny_follow_base), "--method", "cem", "--budget", "2",
                                 "--template", "lead_brake", "--horizon", "3", "--oracle", "idm", "--seed", "3", "--out", str(out),
                                 "--generated-dir", str(tmp_path / "gen")])  # fmt: skip
    assert r.exit_code == 0, r.output
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert f"{summary['distinct_failures']} distinct" in r.output
    assert summary["distinct_failures"] >= 1 and len(list((tmp_path / "gen").glob("*.yaml"))) == summary["solvable_failures"]
