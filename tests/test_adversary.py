"""Corner-case search: generated files reproduce their failure, unsolvable cases are discarded,
templates stay inside their physical bounds, CEM concentrates on low objectives."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sim.adversary import TEMPLATES, AttackConfig, attack, read_provenance, rerun_file
from sim.adversary.search import _Sampler
from sim.adversary.space import base_info
from sim.errors import ScenarioError
from sim.scenario import expand, read_yaml, scene_context, validate_file
from sim.spec import SceneSpec
from tests._adversary import BASE, BlindThrottle, blind_throttle_registered


@pytest.fixture(autouse=True)
def _blind_throttle() -> Iterator[None]:
    """The test planner is registered for each test here, and only then."""
    with blind_throttle_registered():
        yield


def test_generated_file_reruns_to_the_same_failure(tiny_follow_base: Path, tmp_path: Path) -> None:
    gen = tmp_path / "generated"
    cfg = AttackConfig(planner=BlindThrottle.name, method="random", budget=2, seed=3, template="lead_brake", horizon_s=3.0, oracle="idm")
    res = attack(tiny_follow_base, cfg, out=tmp_path / "attack", generated_dir=gen)
    assert res.n_solvable >= 1 and res.files, res.summary()
    assert (tmp_path / "attack" / "summary.json").is_file()
    for f in res.files:
        assert Path(f).parent == gen and Path(f).name.startswith("tiny_follow-")
        assert validate_file(f) == []
        prov = read_provenance(f)
        assert prov["base"] == "tiny_follow" and prov["method"] == "random" and prov["seed"] == "3"
        cand = next(c for c in res.candidates if c.file == f)
        obj, failure, ttc, score = rerun_file(f)
        assert failure == cand.failure and failure in ("collision", "offroad")
        assert obj == cand.objective and score == pytest.approx(cand.score, abs=0) and ttc == cand.min_ttc_s
        assert float(prov["objective"]) == pytest.approx(cand.objective)
        # the adversary replaced the base's own inserted lead
        data, _ = read_yaml(f)
        assert [a["id"] for a in data["actors"]] == ["adversary"]


def test_unsolvable_cases_are_discarded(tiny_follow_base: Path, tmp_path: Path) -> None:
    gen = tmp_path / "generated"
    # the oracle is the failing planner itself: every failure is unsolvable
    cfg = AttackConfig(planner=BlindThrottle.name, method="random", budget=1, seed=3, template="lead_brake", horizon_s=3.0, oracle=BlindThrottle.name)
    res = attack(tiny_follow_base, cfg, generated_dir=gen)
    assert res.n_failures >= 1
    assert res.n_solvable == 0 and res.files == []
    failed = [c for c in res.candidates if c.failure]
    assert failed and all(c.solvable is False for c in failed)
    assert not gen.exists() or not list(gen.glob("*.yaml"))


def test_same_config_same_candidates(tiny_follow_base: Path, tmp_path: Path) -> None:
    cfg = AttackConfig(planner="idm", method="cem", budget=2, seed=3, template="cut_in", horizon_s=1.0, check_solvable=False)
    a = attack(tiny_follow_base, cfg, generated_dir=tmp_path / "g")
    b = attack(tiny_follow_base, cfg, generated_dir=tmp_path / "g")
    # two runs that produced nothing would compare equal: every budgeted episode is a candidate
    assert len(a.candidates) == cfg.budget and len({c.hash for c in a.candidates}) == cfg.budget
    assert [(c.hash, c.objective) for c in a.candidates] == [(c.hash, c.objective) for c in b.candidates]


@pytest.mark.parametrize("name", ["lead_brake", "cut_in", "crossing", "perturb"])
def test_templates_stay_in_bounds_and_validate(name: str, tiny_follow_base: Path, tmp_path: Path) -> None:
    data, _ = read_yaml(tiny_follow_base)
    info = base_info(data, scene_context(SceneSpec(town="tiny", seed=0)).lane_map, str(tiny_follow_base))
    t = TEMPLATES.get(name)()
    rng = np.random.default_rng(0)
    ok = 0
    for u in [np.zeros(t.dim), np.ones(t.dim), *rng.random((3, t.dim))]:
        v = t.values(u)
        for p in t.params:
            assert p.low - 1e-9 <= v[p.name] <= p.high + 1e-9
        d = t.edit(info, u)
        if d is None:
            continue
        f = tmp_path / f"{name}-{ok}.yaml"
        import yaml

        f.write_text(yaml.safe_dump(d), encoding="utf-8")
        if not validate_file(f):
            ok += 1
            assert expand(f)[0].spec.actors
    assert ok >= 1
    # physical plausibility bounds of the adversary's motion
    bounds = {p.name: (p.low, p.high) for p in t.params}
    if name == "lead_brake":
        assert bounds["brake_decel"][1] <= 8.0
    if name == "cut_in":
        assert bounds["lane_change_time"][0] >= 2.5
    if name == "crossing":
        assert bounds["speed"][1] <= 2.5


def test_cem_moves_towards_low_objectives() -> None:
    cfg = AttackConfig(method="cem", budget=100, population=20)
    s = _Sampler("cem", 2, 100, cfg, np.random.default_rng(0))
    for _ in range(8):
        us = np.array([s.sample() for _ in range(20)])
        s.update(us, np.linalg.norm(us - np.array([0.9, 0.1]), axis=1))
    assert np.allclose(s.mean, [0.9, 0.1], atol=0.08)
    assert np.all(s.std >= cfg.min_std)


def test_bad_inputs(tiny_follow_base: Path, tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="method"):
        attack(tiny_follow_base, AttackConfig(method="annealing"), generated_dir=tmp_path)
    bad = tmp_path / "pose.yaml"
    bad.write_text(BASE.replace("{lane: lane_1, s: 4.0, speed: 8.0}", "{pose: [-40.0, -5.37, 0.0], speed: 8.0}"), encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"ego\.start\.lane"):
        attack(bad, AttackConfig(budget=1), generated_dir=tmp_path)
