"""Scenario files: schema and semantic validation with line numbers, sweeps, the library."""

from __future__ import annotations

import contextlib
import json
import pickle
import re
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import ScenarioError
from sim.scenario import (
    expand,
    expand_paths,
    json_schema,
    load_scenario,
    read_yaml,
    scenario_files,
    validate_file,
)
from sim.spec import InsertOp, RemoveOp, RerouteOp

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "invalid_scenarios"
LIBRARY = ROOT / "scenarios"
RUNNER = CliRunner()

VALID = """\
version: 1
name: demo
scene: {town: tiny, seed: 0}
ego:
  start: {lane: lane_1, s: 2.0, speed: 6.0}
  route: [lane_1, lane_22, lane_9]
actors:
  - {op: insert, id: lead, class: car, spawn: {lane: lane_1, s: 15.0, speed: 5.0}, behavior: {type: idm, v0: 6.0}}
  - {op: remove, id: "3"}
  - {op: reroute, id: "1", route: [lane_6, lane_12, lane_2]}
horizon_s: 2.0
dt_s: 0.1
seeds: [0, 1]
sweep:
  actors.0.spawn.speed: [3.0, 5.0, 7.0]
"""


def _expected(path: Path) -> list[str]:
    return [
        line.removeprefix("# expect: ").replace("{file}", str(path))
        for line in path.read_text().splitlines()
        if line.startswith("# expect: ")
    ]


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.yaml")), ids=lambda p: p.stem)
def test_invalid_corpus_gives_the_expected_lines(path: Path) -> None:
    expected = _expected(path)
    assert expected, f"{path} has no '# expect:' line"
    got = [e.one_line() for e in validate_file(path)]
    assert len(got) == len(expected), got
    for g, e in zip(got, expected, strict=True):
        if e.endswith("..."):
            assert g.startswith(e[:-3]), (g, e)
        else:
            assert g == e
    with pytest.raises(ScenarioError, match=re.escape(str(path))):  # refused, naming the file
        load_scenario(path)


def test_corpus_covers_the_required_cases() -> None:
    names = {p.stem for p in CORPUS.glob("*.yaml")}
    for need in (
        "unknown_key",
        "wrong_type",
        "bad_version",
        "missing_field",
        "unknown_lane",
        "disconnected_route",
        "unknown_planner",
    ):
        assert need in names


def test_validate_cli_exit_codes_and_lines(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(VALID)
    ok = RUNNER.invoke(app, ["validate", str(good)])
    assert ok.exit_code == 0, ok.output
    bad = RUNNER.invoke(
        app, ["validate", str(CORPUS / "bad_version.yaml"), str(CORPUS / "unknown_lane.yaml")]
    )
    assert bad.exit_code == 2
    lines = bad.stdout.strip().splitlines()
    assert lines == _expected(CORPUS / "bad_version.yaml") + _expected(CORPUS / "unknown_lane.yaml")


def test_expand_seeds_times_sweep(tmp_path: Path) -> None:
    f = tmp_path / "demo.yaml"
    f.write_text(VALID)
    eps = expand(f)
    assert [e.episode_id for e in eps] == [f"demo__s{s}__p{k:03d}" for s in (0, 1) for k in range(3)]
    assert [e.sweep["actors.0.spawn.speed"] for e in eps] == [3.0, 5.0, 7.0] * 2
    assert [e.spec.actors[0].spawn.speed for e in eps] == [3.0, 5.0, 7.0] * 2
    e = eps[4]
    assert e.seed == 1 and e.planner == "idm"
    ops = e.spec.actors
    assert (
        isinstance(ops[0], InsertOp) and ops[0].behavior.type == "idm" and ops[0].behavior.params["v0"] == 6.0
    )
    assert isinstance(ops[1], RemoveOp) and ops[1].id == "3"
    assert isinstance(ops[2], RerouteOp) and ops[2].route == ("lane_6", "lane_12", "lane_2")
    # ego start on lane_1 at s = 2 m: the lane runs +x along y = -5.4 from x = -43.8
    x, y, yaw = e.spec.ego.start_pose
    assert (
        x == pytest.approx(-43.8 + 2.0, abs=0.1)
        and y == pytest.approx(-5.4, abs=0.1)
        and yaw == pytest.approx(0.0, abs=1e-6)
    )
    # episodes cross process boundaries (the spec holds read-only mappings)
    assert pickle.loads(pickle.dumps(e)) == e


def test_sweep_point_problems_are_reported(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(VALID.replace("[3.0, 5.0, 7.0]", "[3.0, -1.0]"))
    errs = validate_file(f)
    assert len(errs) == 1
    assert errs[0].line == 15
    assert "at sweep point" in errs[0].message and "greater than or equal to 0" in errs[0].message


def test_line_numbers_follow_the_yaml_nodes(tmp_path: Path) -> None:
    data, lines = read_yaml(_write(tmp_path, VALID))
    assert data["actors"][1]["id"] == "3"
    assert lines[("actors", 2)] == 10
    assert lines[("sweep", "actors.0.spawn.speed")] == 15


def _write(tmp: Path, text: str, name: str = "x.yaml") -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def test_json_schema_accepts_the_library_and_rejects_unknown_keys() -> None:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    v = jsonschema.Draft202012Validator(schema)
    for f in scenario_files([LIBRARY]):
        data, _ = read_yaml(f)
        errs = list(v.iter_errors(data))
        assert not errs, (f, errs[0].message)
    data, _ = read_yaml(CORPUS / "unknown_key.yaml")
    assert list(v.iter_errors(data))


def test_library_is_valid_documented_and_large_enough() -> None:
    files = scenario_files([LIBRARY])
    assert len(files) >= 15
    for f in files:
        assert validate_file(f) == [], f
        data, _ = read_yaml(f)
        assert data.get("description"), f"{f} has no description"
    eps = expand_paths([LIBRARY])
    assert len({e.scenario for e in eps}) == len(files)
    assert any(e.sweep for e in eps)
    kinds = {type(op).__name__ for e in eps for op in e.spec.actors}
    assert kinds == {"InsertOp", "RemoveOp", "RerouteOp"}


# ------------------------------------------------------------------------------------ fuzzing
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**6) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
KEYS = [
    "version",
    "scene",
    "ego",
    "actors",
    "planner",
    "horizon_s",
    "dt_s",
    "seeds",
    "sweep",
    "metrics",
    "observation",
    "name",
]


def _dump(obj: object) -> str:
    y = YAML(typ="safe", pure=True)
    import io

    buf = io.StringIO()
    y.dump(obj, buf)
    return buf.getvalue()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_fuzz_text_only_raises_scenario_error(tmp_path: Path, text: str) -> None:
    p = _write(tmp_path, text, "fuzz.yaml")
    with contextlib.suppress(ScenarioError):
        load_scenario(p)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=st.sampled_from(KEYS),
    value=json_values,
    sub=st.sampled_from(["", "actors.0", "actors.0.spawn", "ego.start", "scene"]),
)
def test_fuzz_mutated_scenarios_only_raise_scenario_error(
    tmp_path: Path, key: str, value: object, sub: str
) -> None:
    y = YAML(typ="safe", pure=True)
    data = y.load(VALID)
    target = data
    for part in [p for p in sub.split(".") if p]:
        target = target[int(part)] if part.isdigit() else target[part]
    if isinstance(target, dict):
        target[key] = value
    p = _write(tmp_path, _dump(data), "mut.yaml")
    try:
        eps = expand(p)
    except ScenarioError as exc:
        assert exc.file == str(p) and exc.one_line().startswith(str(p))
    else:
        assert eps


def test_deep_and_aliased_yaml_is_refused_cleanly(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefg", "bcdefgh", strict=True)
    )
    with pytest.raises(ScenarioError, match="too large"):
        load_scenario(_write(tmp_path, bomb, "bomb.yaml"))
    with pytest.raises(ScenarioError, match="nested too deeply"):
        load_scenario(_write(tmp_path, "[" * 1000, "deep.yaml"))


def test_schema_cli_prints_json() -> None:
    res = RUNNER.invoke(app, ["schema"])
    assert res.exit_code == 0
    schema = json.loads(res.stdout)
    assert schema["properties"]["version"]["const"] == 1
    assert "actors" in schema["properties"]


def test_committed_schema_is_up_to_date() -> None:
    """scenarios/scenario.schema.json (referenced by the library's yaml-language-server modelines)
    is what `loopdrive schema` prints; regenerate it with `loopdrive schema > scenarios/scenario.schema.json`."""
    committed = json.loads((LIBRARY / "scenario.schema.json").read_text())
    assert committed == json_schema()
    for f in scenario_files([LIBRARY]):
        assert f.read_text().startswith("# yaml-language-server: $schema=scenario.schema.json"), f
