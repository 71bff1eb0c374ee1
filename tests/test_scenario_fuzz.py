"""Mutations of the shipped scenarios: each is either refused cleanly (a ``ScenarioError``, one
line, naming the file and the field path) or a valid scenario that compiles into episodes (a few
also drive two steps). Bad planner parameters, work limits (steps, sweep grid, episodes, actors,
coordinates), overflows, non-finite numbers and names are all refused before any heavy work.

To add a case, add a row to ``MUTATIONS`` (a shipped scenario, the dotted paths to set and the
field path the refusal must name, or ``None`` when the result is valid) or to ``TEXT_CASES``
(raw text or bytes)."""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import LoopdriveError, ScenarioError
from sim.scenario import expand, validate_file
from sim.scenario_limits import LIMITS

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "scenarios"
RUNNER = CliRunner()
DEL = object()  # as a value: delete the key

FAST = {"max_examples": 40, "deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}


# ------------------------------------------------------------------------------------- helpers
def _yaml() -> YAML:
    y = YAML(typ="safe", pure=True)
    y.default_flow_style = True
    y.width = 4096
    return y


def _load(base: str) -> Any:
    return _yaml().load((LIBRARY / f"{base}.yaml").read_text())


def _dump(data: Any) -> str:
    buf = io.StringIO()
    _yaml().dump(data, buf)
    return buf.getvalue()


def _set(data: Any, dotted: str, value: Any) -> None:
    """Set ``dotted`` (``actors.0.spawn.speed``) in ``data``; ``sweep.<key>`` sets one sweep key
    (itself a dotted path)."""
    if dotted.startswith("sweep."):
        data.setdefault("sweep", {})[dotted.removeprefix("sweep.")] = value
        return
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in dotted.split(".")]
    cur = data
    for p in parts[:-1]:
        if isinstance(p, str) and isinstance(cur, dict) and p not in cur:
            cur[p] = {}
        cur = cur[p]
    last = parts[-1]
    if value is DEL:
        del cur[last]
    elif isinstance(cur, list) and isinstance(last, int) and last == len(cur):
        cur.append(value)
    else:
        cur[last] = value


def _mutated(tmp: Path, base: str, changes: Mapping[str, Any], fname: str = "mut.yaml") -> Path:
    data = _load(base)
    for k, v in changes.items():
        _set(data, k, v() if callable(v) else v)
    p = tmp / fname
    p.write_text(_dump(data), encoding="utf-8")
    return p


def _related(got: str, want: str) -> bool:
    """``got`` names ``want`` or a part of it (``actors[0].spawn.pose[0]`` names ``actors[0].spawn.pose``)."""
    return got == want or got.startswith((want + ".", want + "["))


def assert_refused(p: Path, want: str | None) -> list[ScenarioError]:
    """Every problem is a one-line ScenarioError starting with the file; one names ``want`` (a
    field-path prefix; ``""``: a problem of the whole file, without a field)."""
    errs = validate_file(p)
    assert errs, f"{p.name} was accepted"
    for e in errs:
        assert isinstance(e, ScenarioError)
        line = e.one_line()
        assert "\n" not in line and line.startswith(str(p)), line
        if e.field:
            assert e.field in line
    if want is not None:
        fields = [e.field or "" for e in errs]
        ok = any(f == "" for f in fields) if want == "" else any(_related(f, want) for f in fields)
        assert ok, (want, [e.one_line() for e in errs])
    with pytest.raises(ScenarioError) as ei:  # the compiler refuses it the same way
        expand(p)
    assert "\n" not in str(ei.value)
    return errs


def assert_compiles(p: Path, run: bool = False) -> None:
    errs = validate_file(p)
    assert not errs, [e.one_line() for e in errs]
    eps = expand(p)
    assert eps and all(0 <= ep.seed <= LIMITS.max_int for ep in eps)
    assert all(len(ep.episode_id) < 200 for ep in eps)
    if run:
        from sim.rollout import run_planner_episode

        ep = eps[0]
        res = run_planner_episode(ep.spec, ep.planner, ep.seed, params=dict(ep.planner_params), max_steps=2, raise_errors=True)
        assert res.status == "ok" and 1 <= res.steps <= 2, (res.status, res.error)


# ----------------------------------------------------------------------------- the mutation table
@dataclass(frozen=True)
class Mutation:
    """``set``: dotted path -> value (callables are called; :data:`DEL` deletes) applied to the
    shipped scenario ``base``; ``field``: the field path the refusal names (None: valid)."""

    name: str
    base: str
    set: Mapping[str, Any]
    field: str | None
    run: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)


SV = "stopped_vehicle"  # ego on lane_1 behind a static car, idm, 10 s at 0.1 s
CS = "cut_in_speed_sweep"  # a 3-point sweep
WL = "whatif_lead_removed"  # logged drive, one remove op
INF, NAN = math.inf, math.nan
SPAWN = "actors.0.spawn"


def _sweep(n_keys: int, n_values: int) -> dict[str, list[float]]:
    keys = ["actors.0.spawn.speed", "actors.0.spawn.s", "ego.start.speed", "ego.start.s", "actors.0.t_s"]
    return {k: [float(i % 9) for i in range(n_values)] for k in keys[:n_keys]}


def _inserts(n: int) -> list[dict[str, Any]]:
    return [
        {"op": "insert", "id": f"x{i}", "class": "car", "t_s": 1.0, "spawn": {"lane": "lane_1", "s": 60.0, "speed": 1.0}}
        for i in range(n)
    ]


MUTATIONS: list[Mutation] = [
    # --- time and steps (the cases that used to hang `loopdrive validate`)
    Mutation("dt_1e-7", SV, {"dt_s": 1e-7}, "dt_s"),
    Mutation("dt_zero", SV, {"dt_s": 0.0}, "dt_s"),
    Mutation("dt_negative", SV, {"dt_s": -0.1}, "dt_s"),
    Mutation("dt_above_1s", SV, {"dt_s": 2.0}, "dt_s"),
    Mutation("dt_nan", SV, {"dt_s": NAN}, "dt_s"),
    Mutation("dt_inf", SV, {"dt_s": INF}, "dt_s"),
    Mutation("dt_string", SV, {"dt_s": "fast"}, "dt_s"),
    Mutation("dt_bool", SV, {"dt_s": True}, "dt_s"),
    Mutation("dt_not_dividing", SV, {"dt_s": 0.3}, "dt_s"),
    Mutation("long_horizon_small_dt", SV, {"horizon_s": 3600.0, "dt_s": 0.001}, "horizon_s"),
    Mutation("horizon_72000_steps", SV, {"horizon_s": 3600.0, "dt_s": 0.05}, "horizon_s"),
    Mutation("horizon_above_cap", SV, {"horizon_s": 3601.0}, "horizon_s"),
    Mutation("horizon_zero", SV, {"horizon_s": 0.0}, "horizon_s"),
    Mutation("horizon_1e300", SV, {"horizon_s": 1e300}, "horizon_s"),
    Mutation("horizon_inf", SV, {"horizon_s": INF}, "horizon_s"),
    Mutation("ego_t_start_1e12", WL, {"ego.start.t_s": 1e12}, "ego.start.t_s"),
    Mutation("ego_t_start_scene_steps", WL, {"ego.start.t_s": 3599.0, "horizon_s": 10.0}, "ego.start.t_s"),
    Mutation("ego_t_start_negative", WL, {"ego.start.t_s": -1.0}, "ego.start.t_s"),
    Mutation("ego_t_start_inf", WL, {"ego.start.t_s": INF}, "ego.start.t_s"),
    Mutation("actor_t_s_1e9", SV, {"actors.0.t_s": 1e9}, "actors[0].t_s"),
    Mutation("actor_t_s_nan", SV, {"actors.0.t_s": NAN}, "actors[0].t_s"),
    Mutation("horizon_2s_ok", SV, {"horizon_s": 2.0}, None, run=True),
    Mutation("dt_0.05_ok", SV, {"dt_s": 0.05, "horizon_s": 2.0}, None),
    Mutation("ego_t_start_1s_ok", WL, {"ego.start.t_s": 1.0}, None, run=True),
    # --- integers, booleans, overflow
    Mutation("version_true", SV, {"version": True}, "version"),
    Mutation("version_float", SV, {"version": 1.0}, "version"),
    Mutation("version_2", SV, {"version": 2}, "version"),
    Mutation("version_string", SV, {"version": "1"}, "version"),
    Mutation("version_missing", SV, {"version": DEL}, "version"),
    Mutation("seeds_2_70", SV, {"seeds": [2**70]}, "seeds[0]"),
    Mutation("seeds_2_63", SV, {"seeds": [0, 2**63]}, "seeds[1]"),
    Mutation("seeds_negative", SV, {"seeds": [-1]}, "seeds[0]"),
    Mutation("seeds_bool", SV, {"seeds": [True]}, "seeds[0]"),
    Mutation("seeds_float", SV, {"seeds": [1.5]}, "seeds[0]"),
    Mutation("seeds_string", SV, {"seeds": ["0"]}, "seeds[0]"),
    Mutation("seeds_empty", SV, {"seeds": []}, "seeds"),
    Mutation("seeds_too_many", SV, {"seeds": lambda: list(range(LIMITS.max_seeds + 1))}, "seeds"),
    Mutation("seeds_int64_max_ok", SV, {"seeds": [2**63 - 1]}, None),
    Mutation("seeds_three_ok", SV, {"seeds": [0, 7, 123456789]}, None),
    Mutation("scene_seed_2_64", SV, {"scene.seed": 2**64}, "scene.seed"),
    Mutation("scene_seed_negative", SV, {"scene.seed": -3}, "scene.seed"),
    Mutation("scene_seed_bool", SV, {"scene.seed": False}, "scene.seed"),
    Mutation("max_actors_bool", SV, {"max_actors": True}, "max_actors"),
    Mutation("max_actors_zero", SV, {"max_actors": 0}, "max_actors"),
    Mutation("max_actors_million", SV, {"max_actors": 10**6}, "max_actors"),
    Mutation("int_overflow_in_tags", SV, {"tags": [2**80]}, "tags[0]"),
    # --- sweeps
    Mutation("sweep_grid_100_cubed", CS, {"sweep": lambda: _sweep(3, 100)}, "sweep"),
    Mutation("sweep_episodes", CS, {"sweep": lambda: _sweep(1, 20), "seeds": lambda: list(range(1000))}, "seeds"),
    Mutation("sweep_too_many_keys", CS, {"sweep": lambda: {f"seeds.{i}": [1] for i in range(LIMITS.max_sweep_keys + 1)}}, "sweep"),
    Mutation("sweep_values_too_many", CS, {"sweep.actors.0.spawn.speed": lambda: [4.0] * (LIMITS.max_sweep_values + 1)}, "sweep.actors.0.spawn.speed"),
    Mutation("sweep_many_scenes", CS, {"sweep.horizon_s": lambda: [1.0 + i for i in range(17)]}, "sweep"),
    Mutation("sweep_scene_steps", CS, {"sweep.horizon_s": [3000.0, 3500.0]}, "sweep"),
    Mutation("sweep_dt_1e-7", CS, {"sweep.dt_s": [0.1, 1e-7]}, "dt_s"),
    Mutation("sweep_t_start_huge", WL, {"sweep.ego.start.t_s": [0.0, 1e12]}, "ego.start.t_s"),
    Mutation("sweep_nan_value", CS, {"sweep.actors.0.spawn.speed": [4.0, NAN]}, "sweep.actors.0.spawn.speed[1]"),
    Mutation("sweep_value_out_of_range", CS, {"sweep.actors.0.spawn.speed": [4.0, 1e6]}, "actors[0].spawn.speed"),
    Mutation("sweep_unknown_path", CS, {"sweep.actors.5.spawn.speed": [1.0]}, "sweep.actors.5.spawn.speed"),
    Mutation("sweep_empty_values", CS, {"sweep.actors.0.spawn.speed": []}, "sweep.actors.0.spawn.speed"),
    Mutation("sweep_work_actors", CS, {"actors": lambda: _load(CS)["actors"] + _inserts(120), "sweep.actors.0.spawn.speed": lambda: [4.0 + i / 100 for i in range(500)]}, "sweep"),
    Mutation("sweep_two_speeds_ok", CS, {"sweep.actors.0.spawn.speed": [5.0, 6.0]}, None, run=True),
    Mutation("sweep_two_horizons_ok", CS, {"sweep.horizon_s": [2.0, 4.0]}, None),
    # --- actors
    Mutation("actors_257", SV, {"actors": lambda: _inserts(LIMITS.max_actor_ops + 1)}, "actors"),
    Mutation("actor_speed_1e4", SV, {f"{SPAWN}.speed": 1e4}, "actors[0].spawn.speed"),
    Mutation("actor_speed_negative", SV, {f"{SPAWN}.speed": -1.0}, "actors[0].spawn.speed"),
    Mutation("actor_speed_bool", SV, {f"{SPAWN}.speed": True}, "actors[0].spawn.speed"),
    Mutation("actor_size_1km", SV, {"actors.0.size": [1000.0, 2.0, 1.5]}, "actors[0].size[0]"),
    Mutation("actor_size_zero", SV, {"actors.0.size": [4.6, 0.0, 1.5]}, "actors[0].size[1]"),
    Mutation("actor_size_nan", SV, {"actors.0.size": [4.6, 1.9, NAN]}, "actors[0].size[2]"),
    Mutation("actor_size_two_values", SV, {"actors.0.size": [4.6, 1.9]}, "actors[0].size"),
    Mutation("actor_s_1e9", SV, {f"{SPAWN}.s": 1e9}, "actors[0].spawn.s"),
    Mutation("actor_s_beyond_lane", SV, {f"{SPAWN}.s": 5000.0}, "actors[0].spawn.s"),
    Mutation("actor_lateral_offset_1km", SV, {f"{SPAWN}.lateral_offset": 1000.0}, "actors[0].spawn.lateral_offset"),
    Mutation("actor_pose_10000km", SV, {SPAWN: {"pose": [1e10, 0.0, 0.0], "speed": 0.0}}, "actors[0].spawn.pose[0]"),
    Mutation("actor_pose_off_map", SV, {SPAWN: {"pose": [8000.0, 50.0, 0.0], "speed": 0.0}}, "actors[0].spawn.pose"),
    Mutation("actor_yaw_1e6", SV, {SPAWN: {"pose": [0.0, 0.0, 1e6], "speed": 0.0}}, "actors[0].spawn.pose[2]"),
    Mutation("actor_id_bool", SV, {"actors.0.id": True}, "actors[0].id"),
    Mutation("actor_class_unknown", SV, {"actors.0.class": "dragon"}, "actors[0].class"),
    Mutation("actor_behavior_param_bool", SV, {"actors.0.behavior": {"type": "idm", "v0": True}}, "actors[0].behavior.v0"),
    Mutation("actor_behavior_param_inf", SV, {"actors.0.behavior": {"type": "idm", "v0": INF}}, "actors[0].behavior.v0"),
    Mutation("actor_behavior_param_string", SV, {"actors.0.behavior": {"type": "idm", "v0": "fast"}}, "actors[0].behavior.v0"),
    Mutation("actor_behavior_unknown", SV, {"actors.0.behavior": {"type": "teleport"}}, "actors[0].behavior.type"),
    Mutation("actor_op_unknown", SV, {"actors.0.op": "teleport"}, "actors[0]"),
    Mutation("remove_unknown_id", WL, {"actors.0.id": "9999"}, "actors[0].id"),
    Mutation("actor_slower_ok", SV, {f"{SPAWN}.speed": 2.0, "horizon_s": 2.0}, None, run=True),
    Mutation("actor_bigger_ok", SV, {"actors.0.size": [6.0, 2.2, 2.0]}, None),
    # --- ego
    Mutation("ego_pose_10000km", SV, {"ego.start": {"pose": [1e10, 0.0, 0.0]}}, "ego.start.pose[0]"),
    Mutation("ego_pose_5km_off_map", WL, {"ego.start": {"pose": [5000.0, 5000.0, 0.0]}}, "ego.start.pose"),
    Mutation("ego_speed_1e4", SV, {"ego.start.speed": 1e4}, "ego.start.speed"),
    Mutation("ego_s_1e9", SV, {"ego.start.s": 1e9}, "ego.start.s"),
    Mutation("ego_lane_and_pose", SV, {"ego.start.pose": [0.0, 0.0, 0.0]}, "ego.start"),
    Mutation("ego_route_too_long", SV, {"ego.route": lambda: ["lane_1"] * (LIMITS.max_route_lanes + 1)}, "ego.route"),
    Mutation("ego_route_empty", SV, {"ego.route": []}, "ego.route"),
    Mutation("ego_faster_ok", SV, {"ego.start.speed": 12.0}, None),
    # --- planner and its params
    Mutation("planner_unknown", SV, {"planner": {"name": "warp_drive"}}, "planner.name"),
    Mutation("idm_param_unknown", SV, {"planner.params": {"warp": 1.0}}, "planner.params.warp"),
    Mutation("idm_param_string", SV, {"planner.params": {"a_max": "fast"}}, "planner.params.a_max"),
    Mutation("idm_param_negative", SV, {"planner.params": {"a_max": -1.0}}, "planner.params.a_max"),
    Mutation("idm_param_nan", SV, {"planner.params": {"a_max": NAN}}, "planner.params.a_max"),
    Mutation("idm_param_bool_for_float", SV, {"planner.params": {"speed_frac": True}}, "planner.params.speed_frac"),
    Mutation("idm_param_int_for_bool", SV, {"planner.params": {"stop_at_route_end": 1}}, "planner.params.stop_at_route_end"),
    Mutation("idm_params_not_a_mapping", SV, {"planner.params": [1, 2]}, "planner.params"),
    Mutation("pdm_metric_unknown", SV, {"planner": {"name": "pdm_closed", "params": {"metrics": ["happiness"]}}}, "planner.params.metrics"),
    Mutation("pdm_replan_zero", SV, {"planner": {"name": "pdm_closed", "params": {"replan_every": 0}}}, "planner.params.replan_every"),
    Mutation("pdm_horizon_huge", SV, {"planner": {"name": "pdm_closed", "params": {"horizon_s": 1e6}}}, "planner.params.horizon_s"),
    Mutation("pdm_speed_fracs_empty", SV, {"planner": {"name": "pdm_closed", "params": {"speed_fracs": []}}}, "planner.params.speed_fracs"),
    Mutation("lidar_stack_mode_bad", SV, {"planner": {"name": "lidar_stack", "params": {"mode": "yolo"}}}, "planner.params.mode"),
    Mutation("log_replay_param_unknown", SV, {"planner": {"name": "log_replay", "params": {"gain": 1.0}}}, "planner.params.gain"),
    Mutation("sb3_trust_pickle", SV, {"planner": {"name": "sb3", "params": {"path": "p.zip", "trust_pickle": True}}}, "planner.params.trust_pickle"),
    Mutation("sb3_model", SV, {"planner": {"name": "sb3", "params": {"model": "x"}}}, "planner.params.model"),
    Mutation("sb3_unknown", SV, {"planner": {"name": "sb3", "params": {"path": "p.safetensors", "exec": "x"}}}, "planner.params.exec"),
    Mutation("bc_network", SV, {"planner": {"name": "bc_policy", "params": {"network": "x"}}}, "planner.params.network"),
    Mutation("bc_weights_int", SV, {"planner": {"name": "bc_policy", "params": {"weights": 5}}}, "planner.params.weights"),
    Mutation("idm_params_ok", SV, {"planner.params": {"a_max": 2.0, "speed_frac": 0.8}, "horizon_s": 2.0}, None, run=True),
    Mutation("pdm_params_ok", SV, {"planner": {"name": "pdm_closed", "params": {"horizon_s": 3.0, "speed_fracs": [0.5, 1.0]}}, "horizon_s": 2.0}, None, run=True),
    Mutation("lidar_stack_pdm_ok", SV, {"planner": {"name": "lidar_stack", "params": {"mode": "pdm", "eps": 1.5}}}, None),
    Mutation("log_replay_ok", WL, {"planner": {"name": "log_replay", "params": {"k_pos": 0.5}}}, None),
    # --- name
    Mutation("name_300_chars", SV, {"name": "a" * 300}, "name"),
    Mutation("name_slash", SV, {"name": "../etc/passwd"}, "name"),
    Mutation("name_space", SV, {"name": "a b"}, "name"),
    Mutation("name_empty", SV, {"name": ""}, "name"),
    Mutation("name_int", SV, {"name": 5}, "name"),
    Mutation("name_newline", SV, {"name": "a\nb"}, "name"),
    Mutation("name_100_chars_ok", SV, {"name": "b" * 100}, None),
    Mutation("name_non_ascii", SV, {"name": "überholen"}, "name"),
    Mutation("name_dots_dashes_ok", SV, {"name": "cut-in_v2.1"}, None),
    # --- other fields
    Mutation("unknown_top_key", SV, {"horizon": 5.0}, "horizon"),
    Mutation("observation_unknown", SV, {"observation": ["telepathy"]}, "observation[0]"),
    Mutation("metric_unknown", SV, {"metrics": ["happiness"]}, "metrics[0]"),
    Mutation("renderer_unknown", SV, {"scene.renderer": "raytrace"}, "scene.renderer"),
    Mutation("description_nan_ok_as_text", SV, {"description": "nan"}, None),
]


@pytest.mark.parametrize("m", MUTATIONS, ids=lambda m: m.name)
def test_mutation(m: Mutation, tmp_path: Path) -> None:
    p = _mutated(tmp_path, m.base, m.set)
    if m.field is None:
        assert_compiles(p, run=m.run)
    else:
        assert_refused(p, m.field)


def test_table_is_large_and_names_are_unique() -> None:
    names = [m.name for m in MUTATIONS]
    assert len(set(names)) == len(names)
    assert len(MUTATIONS) + len(TEXT_CASES) >= 80
    assert sum(m.field is None for m in MUTATIONS) >= 10 and sum(m.run for m in MUTATIONS) >= 4


def test_limits_are_documented_in_one_table() -> None:
    """The scenario reference's Limits section is generated from ``Limits``: every field appears
    with its value and what it bounds."""
    from dataclasses import fields

    from sim.scenario_limits import Limits, limits_markdown

    md = limits_markdown()
    for f in fields(Limits):
        row = next(line for line in md.splitlines() if line.startswith(f"| `{f.name}` |"))
        assert f.metadata["doc"].replace("|", "\\|") in row, row


def test_every_shipped_scenario_still_compiles() -> None:
    for f in sorted(LIBRARY.glob("*.yaml")):
        assert not validate_file(f), f


# ------------------------------------------------------------------------------ raw text / bytes
def _base_text() -> str:
    return (LIBRARY / f"{SV}.yaml").read_text()


TEXT_CASES: list[tuple[str, Callable[[], str | bytes], str]] = [
    ("python_tag", lambda: _base_text().replace("name: stopped_vehicle", "name: !!python/object/apply:os.system [ls]"), "name"),
    ("duplicate_key", lambda: _base_text() + "horizon_s: 3.0\n", ""),
    ("not_utf8", lambda: _base_text().encode() + b"\xff\xfe\n", ""),
    ("empty_file", lambda: "", ""),
    ("top_level_list", lambda: "- version: 1\n", ""),
    ("yaml_nan_literal", lambda: _base_text().replace("horizon_s: 10.0", "horizon_s: .nan"), "horizon_s"),
    ("yaml_float_overflow", lambda: _base_text().replace("horizon_s: 10.0", "horizon_s: 1e400"), "horizon_s"),
    ("many_nodes", lambda: "version: 1\nseeds: [" + ",".join(["0"] * (LIMITS.max_yaml_nodes + 10)) + "]\n", ""),
    ("file_too_big", lambda: _base_text() + "#" + "x" * LIMITS.max_file_bytes + "\n", ""),
    (
        "alias_bomb",
        lambda: "version: 1\na: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True)),
        "",
    ),
    ("deep_nesting", lambda: "version: 1\nx: " + "[" * 2000 + "\n", ""),
]


@pytest.mark.parametrize("case", TEXT_CASES, ids=lambda c: c[0])
def test_text_case(case: tuple[str, Callable[[], str | bytes], str], tmp_path: Path) -> None:
    _, make, want = case
    content = make()
    p = tmp_path / "t.yaml"
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    errs = assert_refused(p, None)
    fields = [e.field or "" for e in errs]
    assert any(_related(f, want) for f in fields) if want else errs, [e.one_line() for e in errs]


def test_non_regular_inputs_are_refused_before_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    for p in (Path("/dev/zero"), fifo, tmp_path):
        (e,) = validate_file(p)
        assert e.file == str(p) and "expected a scenario file" in e.message, e.one_line()
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (LIMITS.max_file_bytes + 1))
    (e,) = validate_file(big)
    assert f"at most {LIMITS.max_file_bytes} bytes" in e.message


# ----------------------------------------------------------------------------- hypothesis fuzzing
#: numeric fields of stopped_vehicle that do not change the scene: (path, low, high, integer?);
#: a_max must be > 0 (its low bound is the smallest positive float)
NUMERIC = [
    ("actors.0.spawn.speed", 0.0, LIMITS.max_speed_mps, False),
    ("actors.0.spawn.s", 0.0, LIMITS.max_abs_coord_m, False),
    ("actors.0.spawn.lateral_offset", -LIMITS.max_lateral_offset_m, LIMITS.max_lateral_offset_m, False),
    ("actors.0.t_s", 0.0, LIMITS.max_time_s, False),
    ("ego.start.speed", 0.0, LIMITS.max_speed_mps, False),
    ("ego.start.s", 0.0, LIMITS.max_abs_coord_m, False),
    ("max_actors", 1, LIMITS.max_actor_slots, True),
    ("seeds.0", 0, LIMITS.max_int, True),
    ("planner.params.a_max", 5e-324, math.inf, False),
    ("planner.params.speed_frac", 0.0, 2.0, False),
]
ANY_NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.sampled_from(["1", "fast", "", None]),
)


def _field_of(dotted: str) -> str:
    out = ""
    for part in dotted.split("."):
        out += f"[{part}]" if part.isdigit() else ("." if out else "") + part
    return out


def _in_schema(value: Any, lo: float, hi: float, integer: bool) -> bool:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return False
    if integer and not isinstance(value, int):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if isinstance(value, int) and not LIMITS.min_int <= value <= LIMITS.max_int:
        return False
    return lo <= value <= hi


@settings(**FAST)
@given(target=st.sampled_from(NUMERIC), value=ANY_NUMBER)
def test_fuzz_numbers(tmp_path: Path, target: tuple[str, float, float, bool], value: Any) -> None:
    path, lo, hi, integer = target
    p = _mutated(tmp_path, SV, {path: value}, "num.yaml")
    errs = validate_file(p)
    for e in errs:
        assert isinstance(e, LoopdriveError) and "\n" not in e.one_line() and e.one_line().startswith(str(p))
    if value is None:  # null is valid where the schema makes the field optional, else refused at the field
        assert not errs or any(_related(e.field or "", _field_of(path)) for e in errs), [e.one_line() for e in errs]
        if not errs:
            assert expand(p)
    elif not _in_schema(value, lo, hi, integer):
        assert any(_related(e.field or "", _field_of(path)) for e in errs), (value, [e.one_line() for e in errs])
    elif not errs:
        assert expand(p)


@settings(**FAST)
@given(name=st.one_of(st.text(max_size=130), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,120}", fullmatch=True)))
def test_fuzz_names(tmp_path: Path, name: str) -> None:
    p = _mutated(tmp_path, SV, {"name": name}, "name.yaml")
    try:  # the test's YAML writer emits some odd strings (``?0``) as YAML that no parser reads back
        assume(_yaml().load(p.read_text(encoding="utf-8"))["name"] == name)
    except YAMLError:
        assume(False)
    errs = validate_file(p)
    if errs:
        assert [e.field for e in errs] == ["name"], [e.one_line() for e in errs]
    else:
        (ep,) = expand(p)
        assert ep.scenario == name and 1 <= len(name) <= LIMITS.max_name_chars
        assert re.fullmatch(LIMITS.name_pattern, name) and "/" not in ep.episode_id


@settings(**FAST)
@given(seeds=st.lists(st.integers(min_value=-(2**70), max_value=2**70), min_size=1, max_size=4))
def test_fuzz_seeds(tmp_path: Path, seeds: list[int]) -> None:
    p = _mutated(tmp_path, SV, {"seeds": seeds}, "seeds.yaml")
    errs = validate_file(p)
    bad = [i for i, s in enumerate(seeds) if not 0 <= s <= LIMITS.max_int]
    if bad:
        assert {f"seeds[{i}]" for i in bad} <= {e.field for e in errs}, [e.one_line() for e in errs]
    else:
        assert not errs and [ep.seed for ep in expand(p)] == seeds


IDM_KEYS = ["a_max", "b_comf", "s0", "T", "speed_frac", "stop_at_route_end", "jerk_max", "warp", "trust_pickle"]


@settings(**FAST)
@given(params=st.dictionaries(st.sampled_from(IDM_KEYS), ANY_NUMBER, max_size=3))
def test_fuzz_planner_params(tmp_path: Path, params: dict[str, Any]) -> None:
    from sim.planning import make_planner

    p = _mutated(tmp_path, SV, {"planner.params": params}, "pp.yaml")
    errs = validate_file(p)
    for e in errs:
        assert (e.field or "").startswith("planner.params."), e.one_line()
    if {"warp", "trust_pickle"} & set(params):
        assert errs
    if not errs:
        (ep,) = expand(p)
        make_planner(ep.planner, **dict(ep.planner_params))  # the planner takes what validated
    else:
        with pytest.raises(ScenarioError, match=r"^planner\.params\."):
            make_planner("idm", **params)


# ----------------------------------------------------------------------------------- the CLI
def _cli_refuses(args: list[str], want: str) -> None:
    res = RUNNER.invoke(app, ["validate", *args])
    out = res.stdout + res.stderr
    assert res.exit_code == 2, out
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in out, out
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert want in out, out


@pytest.mark.parametrize(
    ("name", "changes", "want"),
    [
        ("dt_1e-7", {"dt_s": 1e-7}, "dt_s: expected greater than or equal to 0.001"),
        ("long_horizon_small_dt", {"horizon_s": 3600.0, "dt_s": 0.001}, "horizon_s: expected at most 36000 steps"),
        ("sweep_grid", {"sweep": lambda: _sweep(3, 100)}, "sweep: expected at most 1000 sweep points"),
        ("huge_t_start", {"ego.start.t_s": 1e12}, "ego.start.t_s:"),
        ("seeds_2_70", {"seeds": [2**70]}, "seeds[0]: expected an integer within int64"),
        ("version_true", {"version": True}, "version:"),
        ("ego_10000km", {"ego.start": {"pose": [1e10, 0.0, 0.0]}}, "ego.start.pose[0]:"),
        ("name_300", {"name": "n" * 300}, "name:"),
        ("planner_params", {"planner.params": {"warp": 9}}, "planner.params.warp: unknown parameter"),
        ("sb3_trust_pickle", {"planner": {"name": "sb3", "params": {"path": "x.zip", "trust_pickle": True}}}, "planner.params.trust_pickle"),
    ],
)
def test_cli_validate_refuses_in_one_line(tmp_path: Path, name: str, changes: dict[str, Any], want: str) -> None:
    p = _mutated(tmp_path, CS if name == "sweep_grid" else SV, changes, f"{name}.yaml")
    _cli_refuses([str(p)], want)


def test_cli_validate_refuses_devices_fifos_and_their_folders(tmp_path: Path) -> None:
    fifo = tmp_path / "sub" / "pipe.yaml"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    (tmp_path / "sub" / "ok.yaml").write_text(_base_text())
    _cli_refuses(["/dev/zero"], "/dev/zero: expected a scenario file, got not a regular file")
    _cli_refuses([str(fifo)], "expected a scenario file, got not a regular file")
    _cli_refuses([str(tmp_path / "sub")], f"{fifo}: expected a scenario file")
