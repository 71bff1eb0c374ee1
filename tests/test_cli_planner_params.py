"""``--planner-param [PLANNER.]KEY=VALUE`` on ``run`` and ``leaderboard`` (and ``--planner-params``
JSON): one parser, values read as JSON else text, every set checked against the planner's schema
as a scenario file's ``planner.params`` is, the ``--trust-pickle`` opt-in never smuggled in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import typer
from typer.testing import CliRunner

from sim.cli import app
from sim.cli._planner_params import parse_planner_params, parse_value
from sim.planning import PLANNERS, Control, ObservationSpec, Planner, PlannerParams
from tests._registry import registered

SCENARIO = """\
version: 1
name: {name}
description: the ego alone on the tiny town's first lane
scene: {{town: tiny, seed: 0}}
ego:
  start: {{lane: lane_1, s: 2.0, speed: 3.0}}
  route: [lane_1, lane_22, lane_9]
planner: {{name: {planner}, params: {params}}}
horizon_s: 0.3
seeds: [0]
"""


class ProbeParams(PlannerParams):
    accel: float = 0.0
    label: str | None = None


class Probe(Planner):
    """Drives with a constant acceleration; records the parameters each instance got."""

    name = "param_probe"
    Params = ProbeParams
    seen: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        Probe.seen.append(dict(params))

    def observation_spec(self) -> ObservationSpec:
        return ObservationSpec(kinds=("ego",))

    def reset(self, init: object, *, seed: int | None = None) -> None:
        pass

    def plan(self, obs: object) -> Control:
        return Control(accel=float(self.config.accel), steer=0.0)  # type: ignore[attr-defined]


class Probe2(Probe):
    name = "param_probe2"


@pytest.fixture()
def probes() -> Any:
    Probe.seen.clear()
    with registered(PLANNERS, ("param_probe", Probe), ("param_probe2", Probe2)):
        yield Probe.seen


def _scenario(tmp: Path, planner: str = "param_probe", params: str = "{label: from-file, accel: 0.5}") -> Path:
    d = tmp / "scen"
    d.mkdir(exist_ok=True)
    (d / "probe.yaml").write_text(SCENARIO.format(name="probe", planner=planner, params=params))
    return d


def test_values_are_json_else_text() -> None:
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("true") is True and parse_value("null") is None
    assert parse_value('"7"') == "7" and parse_value("[1, 2]") == [1, 2]
    assert parse_value("models/bc.safetensors") == "models/bc.safetensors" and parse_value("NaN") == "NaN" and parse_value("") == ""


def test_keys_go_to_the_one_planner_or_to_the_named_one(probes: list) -> None:
    assert parse_planner_params(["accel=1.5", "label=a=b"], ["param_probe"]) == {"param_probe": {"accel": 1.5, "label": "a=b"}}
    two = ["param_probe", "param_probe2"]
    assert parse_planner_params(["param_probe2.accel=-1"], two) == {"param_probe2": {"accel": -1}}
    # the JSON form (planner -> params, or one planner's params) with KEY=VALUE applied over it
    got = parse_planner_params(["param_probe.accel=2"], two, json_text='{"param_probe": {"accel": 1, "label": "j"}}')
    assert got == {"param_probe": {"accel": 2, "label": "j"}}
    assert parse_planner_params([], ["param_probe"], json_text='{"accel": 1}') == {"param_probe": {"accel": 1}}
    for items, planners, json_text, words in [
        (["accel=1"], two, None, "ambiguous"),
        (["idm.accel=1"], ["param_probe"], None, "does not run here"),
        (["accel"], ["param_probe"], None, "KEY=VALUE"),
        (["speed=3"], ["param_probe"], None, "speed"),  # not a parameter of the planner
        (["accel=fast"], ["param_probe"], None, "accel"),  # not a number (nothing is coerced)
        ([], two, '{"idm": {"a": 1}}', "do not run here"),
        ([], two, "[1]", "JSON object"),
    ]:
        with pytest.raises(typer.BadParameter) as exc:
            parse_planner_params(items, planners, json_text=json_text)
        assert words in str(exc.value), (items, exc.value)


def test_the_pickle_opt_in_cannot_come_from_a_parameter() -> None:
    for items, json_text in [(["trust_pickle=true"], None), ([], '{"path": "p.zip", "trust_pickle": "--trust-pickle"}')]:
        with pytest.raises(typer.BadParameter, match="--trust-pickle"):
            parse_planner_params(items, ["sb3"], json_text=json_text)


def test_run_applies_command_line_params_over_the_scenario_files(probes: list, tmp_path: Path) -> None:
    scen = _scenario(tmp_path)
    res = CliRunner().invoke(app, ["run", str(scen), "--out", str(tmp_path / "run"), "--planner-param", "accel=1.25"])
    assert res.exit_code == 0, res.output
    assert probes and all(p == {"label": "from-file", "accel": 1.25} for p in probes)
    # --planner replaces the file's planner: only the command line's params then
    probes.clear()
    res = CliRunner().invoke(app, ["run", str(scen), "--out", str(tmp_path / "run2"), "--planner", "param_probe2", "--planner-param", "label=x"])
    assert res.exit_code == 0, res.output
    assert probes and all(p == {"label": "x"} for p in probes)


@pytest.mark.parametrize("item", ["speed=3", "accel=fast", "accel", "idm.accel=1"])
def test_run_refuses_a_bad_parameter_in_one_line_before_anything_is_written(probes: list, tmp_path: Path, item: str) -> None:
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", str(_scenario(tmp_path)), "--out", str(out), "--planner-param", item])
    assert res.exit_code == 2, res.output
    assert "--planner-param" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not out.exists() and not probes


def test_run_refuses_a_smuggled_pickle_opt_in(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", str(_scenario(tmp_path, planner="idm", params="{}")), "--out", str(out), "--planner", "sb3",
                                   "--planner-param", "path=p.zip", "--planner-param", "trust_pickle=true"])
    assert res.exit_code == 2 and "--trust-pickle" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not out.exists()


def test_a_pickled_policy_given_as_a_parameter_still_needs_the_flag(tmp_path: Path) -> None:
    """``--planner-param path=policy.zip`` goes through the same opt-in check as a scenario file's
    ``path``: refused (one line, exit 2) without ``--trust-pickle``, and nothing is unpickled."""
    import base64
    import pickle
    import zipfile

    marker = tmp_path / "MARKER"
    payload = pickle.dumps(_Opener(str(marker)))
    zpath = tmp_path / "policy.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("data", json.dumps({"policy_class": {":type:": "<class 'abc.ABCMeta'>", ":serialized:": base64.b64encode(payload).decode()}}))
        z.writestr("_stable_baselines3_version", "2.9.2")
    pickle.loads(payload)  # control: the payload is live
    assert marker.exists()
    marker.unlink()
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", str(_scenario(tmp_path, planner="idm", params="{}")), "--out", str(out), "--planner", "sb3",
                                   "--planner-param", f"path={zpath}"])
    assert res.exit_code == 2 and "--trust-pickle" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not out.exists() and not marker.exists()


class _Opener:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_leaderboard_takes_params_per_planner(probes: list, tmp_path: Path) -> None:
    scen = _scenario(tmp_path)
    out = tmp_path / "lb"
    args = ["leaderboard", str(scen), "--planners", "param_probe,param_probe2", "--out", str(out)]
    bad = CliRunner().invoke(app, [*args, "--planner-param", "accel=1"])  # which planner?
    assert bad.exit_code == 2 and "ambiguous" in bad.stderr and not out.exists()
    res = CliRunner().invoke(app, [*args, "--planner-param", "param_probe2.accel=0.75", "--planner-params", '{"param_probe": {"label": "lb"}}'])
    assert res.exit_code == 0, res.output
    assert {json.dumps(p, sort_keys=True) for p in probes} == {'{"label": "lb"}', '{"accel": 0.75}'}


def test_attack_and_export_check_their_json_params_the_same_way(probes: list, tmp_path: Path) -> None:
    base = _scenario(tmp_path) / "probe.yaml"
    for cmd in (["attack", "--planner", "param_probe", "--base", str(base), "--out", str(tmp_path / "a")],
                ["export", "--scenarios", str(base), "--planner", "param_probe", "--out", str(tmp_path / "a")]):
        res = CliRunner().invoke(app, [*cmd, "--planner-params", '{"speed": 3}'])
        assert res.exit_code == 2 and "--planner-params" in res.stderr and "speed" in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "a").exists()


@pytest.mark.parametrize("where", ["option", "scenario", "leaderboard"])
def test_a_missing_weights_file_is_one_line_and_exit_2_before_any_episode(tmp_path: Path, where: str) -> None:
    """``bc_policy``'s ``weights`` (one of the planner's declared :attr:`Planner.input_files`) is
    checked before the run starts, whether it comes from ``--planner-param`` or from a scenario
    file's ``planner.params``: one line naming the file and the field, exit 2, no episode run."""
    missing = tmp_path / "missing.safetensors"
    out = tmp_path / "run"
    if where == "option":
        args = ["run", str(_scenario(tmp_path, planner="idm", params="{}")), "--out", str(out), "--planner", "bc_policy",
                "--planner-param", f"weights={missing}"]
    elif where == "scenario":
        args = ["run", str(_scenario(tmp_path, planner="bc_policy", params=f"{{weights: {missing}}}")), "--out", str(out)]
    else:
        args = ["leaderboard", str(_scenario(tmp_path, planner="idm", params="{}")), "--planners", "idm,bc_policy", "--out", str(out),
                "--planner-param", f"bc_policy.weights={missing}"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0] and "planner.params.weights" in lines[0] and "does not exist" in lines[0], res.stderr
    assert not (out / "episodes").exists() and not (out / "results.parquet").exists()


class FileProbe(Probe):
    """A probe that declares its ``label`` parameter an input file."""

    name = "file_probe"
    input_files = frozenset({"label"})


def test_declared_input_files_are_checked_generically(tmp_path: Path) -> None:
    """Any planner's :attr:`Planner.input_files`: a folder (or device) is refused up front, a
    regular file lets the run go ahead, an absent optional parameter is not checked."""
    Probe.seen.clear()
    scen = _scenario(tmp_path, planner="file_probe", params="{}")
    good = tmp_path / "model.bin"
    good.write_bytes(b"x")
    with registered(PLANNERS, ("file_probe", FileProbe)):
        bad = CliRunner().invoke(app, ["run", str(scen), "--out", str(tmp_path / "r1"), "--planner-param", f"label={tmp_path}"])
        assert bad.exit_code == 2 and "got a folder" in bad.stderr and "planner.params.label" in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and not Probe.seen
        for i, extra in enumerate([["--planner-param", f"label={good}"], []]):
            res = CliRunner().invoke(app, ["run", str(scen), "--out", str(tmp_path / f"ok{i}"), *extra])
            assert res.exit_code == 0, res.output
    assert Probe.seen
