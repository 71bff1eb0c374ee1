"""Bad input on the ``loopdrive`` command line: every case exits 2 with exactly one line on stderr,
no traceback, nothing on stdout and no new file anywhere in the test's folder.

The table is generated: every output option x five kinds of unusable output (:data:`OUTPUTS`),
every subcommand x an unknown option, and hand-written rows per subcommand (:data:`VALUE_CASES`:
missing inputs, a folder or a FIFO where a file is expected, wrong types, out-of-range, NaN/inf and
huge numbers, unknown names, corrupt run folders and weights). Add a row to extend it. The
subcommands are discovered from the app itself: a new subcommand, or a new output option, fails
:func:`test_every_subcommand_and_output_option_is_covered` until it has rows here.

All cases are chosen to fail at validation, so the whole file runs in-process in seconds. That a
run whose every episode errored exits 1 and says "errored" is checked in
``tests/test_cli_all_errored.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from sim.cli import app

RUNNER = CliRunner()

SCENARIO = """\
version: 1
name: tiny_follow
scene: {town: tiny, seed: 0}
ego:
  start: {lane: lane_1, s: 4.0, speed: 8.0}
  route: [lane_1, lane_21, lane_5]
actors:
  - {op: insert, id: lead, class: car, spawn: {lane: lane_1, s: 22.0, speed: 8.0}, behavior: {type: idm, v0: 8.0}}
planner: {name: idm}
horizon_s: 1.0
seeds: [0]
"""

LONG = "x" * 300

# --------------------------------------------------------------------------------- outputs
#: (subcommand, output option, "dir" | "file", the other arguments the command needs to parse)
OUTPUTS: list[tuple[str, str, str, list[str]]] = [
    ("actors add", "--library", "dir", ["adir"]),
    ("attack", "--out", "dir", ["--planner", "idm", "--base", "good.yaml"]),
    ("attack", "--generated-dir", "dir", ["--planner", "idm", "--base", "good.yaml", "--out", "o"]),
    ("bench all", "--out", "dir", []),
    ("bench all", "--results", "dir", []),
    ("bench all", "--work", "dir", []),
    ("bench batch", "--out", "file", []),
    ("bench closed-loop", "--out", "file", ["--bundle", "adir", "--log", "adir"]),
    ("bench env", "--out", "file", []),
    ("bench neighbours", "--out", "file", []),
    ("bench loop", "--out", "file", []),
    ("bench loop", "--work", "dir", []),
    ("bench nuscenes-roundtrip", "--out", "file", []),
    ("bench recon-roundtrip", "--out", "file", []),
    ("bench recon-roundtrip", "--work", "dir", []),
    ("realism", "--out", "dir", ["adir"]),
    ("bench nuscenes-roundtrip", "--work", "dir", []),
    ("bench planner-gap", "--out", "file", ["--bundle", "adir", "--log", "adir"]),
    ("bench recon", "--out", "file", []),
    ("bench recon", "--work", "dir", []),
    ("bench render", "--out", "file", ["--bundle", "adir", "--log", "adir"]),
    ("bench synth", "--out", "file", []),
    ("convert-sb3", "--out", "file", ["afile"]),
    ("demo", "--out", "dir", []),
    ("eval-recon", "--out", "dir", ["adir", "--log", "adir"]),
    ("export", "--out", "dir", ["--scenarios", "good.yaml"]),
    ("export-nuscenes", "--out", "dir", ["adir"]),
    ("export-onnx", "--out", "dir", ["--planner", "sensor_policy", "--weights", "afile"]),
    ("import", "--out", "dir", ["nuscenes", "adir"]),
    ("leaderboard", "--out", "dir", ["good.yaml"]),
    ("loop", "--out", "dir", []),
    ("mine", "--out", "dir", ["adir"]),
    ("ncap", "--out", "dir", ["adir", "--log", "adir", "--planner", "idm"]),
    ("recon", "--out", "dir", ["adir"]),
    ("run", "--out", "dir", ["good.yaml"]),
    ("schema", "--out", "file", []),
    ("synth", "--out", "dir", []),
    ("train bc", "--out", "file", ["--episodes", "adir"]),
    ("train bc", "--episodes", "dir", []),
    ("train ppo", "--out", "file", ["--scenario", "good.yaml"]),
    ("train sensor-policy", "--out", "file", ["--scenarios", "good.yaml"]),
    ("train sensor-policy", "--episodes", "dir", ["--scenarios", "good.yaml"]),
    ("view", "--out", "file", ["adir"]),
]

#: commands that list the problems they find on stdout, one per line (their stderr is still one line)
PROBLEMS_ON_STDOUT = {"validate"}

#: option names that name something a command writes; each occurrence must be in OUTPUTS
OUTPUT_OPTION_NAMES = {"--out", "--work", "--results", "--generated-dir", "--episodes"}


def _out_values(kind: str) -> list[tuple[str, str]]:
    return [
        ("under-a-file", "afile/out"),
        ("dev-full", "/dev/full"),
        ("wrong-kind", "afile" if kind == "dir" else "adir"),
        ("proc", "/proc/loopdrive-none/out"),
        ("name-too-long", LONG),
    ]


def _output_cases() -> list[tuple[str, list[str]]]:
    cases = []
    for cmd, opt, kind, rest in OUTPUTS:
        for label, value in _out_values(kind):
            cases.append((f"{cmd} {opt} {label}", [*cmd.split(), *rest, opt, value]))
    return cases


# ------------------------------------------------------------------------- values, inputs
#: (subcommand, [arguments]) rows; the id is the subcommand and the arguments
VALUE_CASES: list[tuple[str, list[str]]] = [
    # actors
    ("actors add", ["nothere"]),
    ("actors add", ["afile"]),
    ("actors add", ["fifo"]),
    ("actors list", ["--library", "afile"]),
    # attack
    ("attack", ["--planner", "bogus", "--base", "good.yaml", "--out", "o"]),
    ("attack", ["--planner", "idm", "--base", "nothere.yaml", "--out", "o"]),
    ("attack", ["--planner", "idm", "--base", "adir", "--out", "o"]),
    ("attack", ["--planner", "idm", "--base", "fifo", "--out", "o"]),
    ("attack", ["--planner", "idm", "--base", "bad.yaml", "--out", "o"]),
    ("attack", ["--planner", "idm", "--base", "good.yaml", "--out", "o", "--budget", "0"]),
    ("attack", ["--planner", "idm", "--base", "good.yaml", "--out", "o", "--budget", "many"]),
    ("attack", ["--planner", "idm", "--base", "good.yaml", "--out", "o", "--horizon", "nan"]),
    ("attack", ["--planner", "idm", "--base", "good.yaml", "--out", "o", "--horizon", "inf"]),
    ("attack", ["--planner", "idm", "--base", "good.yaml", "--out", "o", "--horizon", "-1"]),
    ("attack", ["--planner", "idm", "--base", "good.yaml", "--out", "o", "--horizon", "1e300"]),
    ("attack", ["--planner", "idm", "--base", "good.yaml", "--out", "o", "--method", "bogus"]),
    ("attack", ["--planner", "idm", "--base", "good.yaml", "--out", "o", "--template", "bogus"]),
    ("attack", ["--planner", "idm", "--base", "good.yaml", "--out", "o", "--planner-params", "{bad"]),
    ("attack", ["--planner", "idm", "--base", "good.yaml", "--out", "o", "--planner-params", "[1]"]),
    ("attack", ["--planner", "idm", "--base", "good.yaml", "--out", "o", "--oracle", "bogus"]),
    ("attack", ["--planner", "idm", "--base", "good.yaml", "--out", "o", "--seed", str(2**70)]),
    # bake-surface
    ("bake-surface", ["nothere"]),
    ("bake-surface", ["afile"]),
    ("bake-surface", ["adir", "--level", "nan"]),
    ("bake-surface", ["adir", "--subdivide", "9"]),
    # bench all
    ("bench all", ["--only", "bogus"]),
    ("bench all", ["--only", ","]),
    # bench batch
    ("bench batch", ["--scenarios", "nothere"]),
    ("bench batch", ["--scenarios", "good.yaml", "--horizon", "inf"]),
    ("bench batch", ["--scenarios", "good.yaml", "--horizon", "0"]),
    ("bench batch", ["--scenarios", "good.yaml", "--planner", "bogus"]),
    # bench closed-loop
    ("bench closed-loop", ["--bundle", "nothere", "--log", "adir"]),
    ("bench closed-loop", ["--bundle", "adir", "--log", "adir", "--steps", "1"]),
    ("bench closed-loop", ["--bundle", "adir", "--log", "adir", "--max-offset", "inf"]),
    # bench env
    ("bench env", ["--seconds", "inf"]),
    ("bench env", ["--seconds", "nan"]),
    ("bench env", ["--rounds", "0"]),
    # bench neighbours
    ("bench neighbours", ["--sizes", "1"]),
    ("bench neighbours", ["--sizes", "20,a"]),
    ("bench neighbours", ["--sizes", "5000"]),
    ("bench neighbours", ["--worlds", "0"]),
    ("bench neighbours", ["--seconds", "nan"]),
    # bench loop
    ("bench loop", ["--seeds", "a,b"]),
    ("bench loop", ["--planners", "bogus"]),
    ("bench loop", ["--base", "nothere.yaml"]),
    ("bench loop", ["--budget", "0"]),
    ("bench loop", ["--bc-weights", "garbage.safetensors"]),
    # bench nuscenes-roundtrip
    ("bench nuscenes-roundtrip", ["--town", "bogus"]),
    ("bench nuscenes-roundtrip", ["--image-scale", "0"]),
    ("bench nuscenes-roundtrip", ["--image-scale", "nan"]),
    ("bench nuscenes-roundtrip", ["--frames", "5"]),
    ("bench nuscenes-roundtrip", ["--azimuth", "1e9"]),
    # bench planner-gap
    ("bench planner-gap", ["--bundle", "adir", "--log", "adir", "--lidar", "3y4"]),
    ("bench planner-gap", ["--bundle", "adir", "--log", "adir", "--seeds", "a"]),
    ("bench planner-gap", ["--bundle", "nothere", "--log", "adir"]),
    ("bench planner-gap", ["--bundle", "adir", "--log", "adir", "--horizon", "inf"]),
    # bench recon
    ("bench recon", ["--log", "nothere"]),
    ("bench recon", ["--town", "bogus"]),
    ("bench recon", ["--frames", "5"]),
    ("bench recon", ["--preset", "bogus"]),
    ("bench recon", ["--nerfacto-from", "nothere.json"]),
    # bench render
    ("bench render", ["--bundle", "nothere", "--log", "adir"]),
    ("bench render", ["--bundle", "adir", "--log", "adir", "--repeats", "0"]),
    # bench synth
    ("bench synth", ["--camera-frames", "0"]),
    ("bench synth", ["--lidar-sweeps", "-1"]),
    ("bench synth", ["--width", "0"]),
    ("bench synth", ["--town", "bogus"]),
    # compare
    ("compare", ["nothere", "adir"]),
    ("compare", ["badrun", "badrun"]),
    ("compare", ["afile", "afile"]),
    # convert-sb3
    ("convert-sb3", ["nothere.zip", "--out", "o.safetensors", "--trust-pickle"]),
    ("convert-sb3", ["afile", "--out", "o.safetensors"]),
    # demo
    ("demo", ["--town", "bogus"]),
    ("demo", ["--frames", "1"]),
    ("demo", ["--seed", "-1"]),
    # eval-recon
    ("eval-recon", ["nothere", "--log", "adir"]),
    ("eval-recon", ["adir", "--log", "adir", "--mode", "bogus"]),
    ("eval-recon", ["adir", "--log", "adir", "--max-frames", "0"]),
    # export
    ("export", ["--out", "o"]),
    ("export", ["--out", "o", "--mined", "nothere"]),
    ("export", ["--out", "o", "--scenarios", "nothere.yaml"]),
    ("export", ["--out", "o", "--scenarios", "good.yaml", "--kinds", "bogus"]),
    ("export", ["--out", "o", "--scenarios", "good.yaml", "--planner", "bogus"]),
    ("export", ["--out", "o", "--scenarios", "good.yaml", "--planner", "idm", "--planner-params", "{"]),
    ("export", ["--out", "o", "--scenarios", "good.yaml", "--expert", "bogus"]),
    ("export", ["--out", "o", "--scenarios", "good.yaml", "--max-steps", "0"]),
    # export-nuscenes
    ("export-nuscenes", ["nothere", "--out", "o"]),
    ("export-nuscenes", ["adir", "--out", "o", "--origin", "1,nan"]),
    ("export-nuscenes", ["adir", "--out", "o", "--image-format", "gif"]),
    # export-onnx
    ("export-onnx", ["--planner", "sensor_policy", "--weights", "nothere.safetensors", "--out", "o"]),
    ("export-onnx", ["--planner", "idm", "--weights", "afile", "--out", "o"]),
    ("export-onnx", ["--planner", "sensor_policy", "--weights", "afile", "--out", "o"]),
    ("export-onnx", ["--planner", "sensor_policy", "--weights", "afile", "--out", "o", "--keep-float", "all"]),
    ("export-onnx", ["--planner", "sensor_policy", "--weights", "afile", "--out", "o", "--samples", "0"]),
    # import
    ("import", ["bogusformat", "adir", "--out", "o"]),
    ("import", ["nuscenes", "nothere", "--out", "o"]),
    ("import", ["nuscenes", "afile", "--out", "o"]),
    ("import", ["nuscenes", "adir", "--out", "o", "--max-gap", "nan"]),
    ("import", ["nuscenes", "adir", "--out", "o", "--max-gap", "-1"]),
    ("import", ["nuscenes", "adir", "--out", "o", "--cameras", ","]),
    ("import", ["nuscenes", "adir", "--out", "o", "--sweeps", "--version", "../x"]),
    # info
    ("info", ["nothere"]),
    ("info", ["afile"]),
    ("info", ["fifo"]),
    # leaderboard
    ("leaderboard", ["nothere.yaml"]),
    ("leaderboard", ["bad.yaml"]),
    ("leaderboard", ["good.yaml", "--planners", "bogus"]),
    ("leaderboard", ["good.yaml", "--planners", ","]),
    ("leaderboard", ["good.yaml", "--workers", "0"]),
    ("leaderboard", ["good.yaml", "--horizon", "inf"]),
    ("leaderboard", ["good.yaml", "--horizon", "-1"]),
    ("leaderboard", ["good.yaml", "--horizon", "1e300"]),
    # loop
    ("loop", ["--scenarios", "good.yaml", "--planner", "bogus"]),
    ("loop", ["--scenarios", "good.yaml", "--init-weights", "garbage.safetensors"]),
    ("loop", ["--scenarios", "good.yaml", "--init-weights", "nothere.safetensors"]),
    ("loop", ["--scenarios", "nothere.yaml"]),
    ("loop", ["--scenarios", "good.yaml", "--base", "nothere.yaml"]),
    ("loop", ["--scenarios", "good.yaml", "--retrain", "bogus"]),
    ("loop", ["--scenarios", "good.yaml", "--method", "bogus"]),
    ("loop", ["--scenarios", "good.yaml", "--lr", "nan"]),
    ("loop", ["--scenarios", "good.yaml", "--rounds", "0"]),
    ("loop", ["--scenarios", "good.yaml", "--horizon", "inf"]),
    ("loop", ["--scenarios", "good.yaml", "--init-shards", "nothere"]),
    ("loop", ["--scenarios", "good.yaml", "--expert", "bogus"]),
    ("loop", ["--scenarios", "good.yaml", "--oracle", "bogus"]),
    # mine
    ("mine", ["nothere", "--out", "o"]),
    ("mine", ["badrun", "--out", "o"]),
    ("mine", ["adir", "--out", "o", "--trigger", "bogus"]),
    # ncap
    ("ncap", ["nothere", "--log", "adir", "--planner", "idm", "--out", "o"]),
    ("ncap", ["afile", "--log", "adir", "--planner", "idm", "--out", "o"]),
    ("ncap", ["adir", "--log", "nothere", "--planner", "idm", "--out", "o"]),
    ("ncap", ["adir", "--log", "fifo", "--planner", "idm", "--out", "o"]),
    ("ncap", ["adir", "--log", "afile", "--planner", "idm", "--out", "o"]),
    ("ncap", ["adir", "--log", "adir", "--planner", "bogus", "--out", "o"]),
    ("ncap", ["adir", "--log", "adir", "--planner", "idm", "--out", "o", "--runs", "0"]),
    ("ncap", ["adir", "--log", "adir", "--planner", "idm", "--out", "o", "--runs", "many"]),
    ("ncap", ["adir", "--log", "adir", "--planner", "idm", "--out", "o", "--runs", str(10**30)]),
    ("ncap", ["adir", "--log", "adir", "--planner", "idm", "--out", "o", "--sensors", "bogus"]),
    ("ncap", ["adir", "--log", "adir", "--planner", "idm", "--out", "o", "--seed", "-1"]),
    ("ncap", ["adir", "--log", "adir", "--planner", "idm", "--out", "o", "--workers", "0"]),
    ("ncap", ["adir", "--log", "adir", "--planner", "idm", "--out", "badrun", "--resume"]),
    # ns-config
    ("ns-config", ["nothere"]),
    ("ns-config", ["adir"]),
    # planners
    ("planners", ["extra-argument"]),
    # recon
    ("recon", ["nothere", "--out", "o"]),
    ("recon", ["afile", "--out", "o"]),
    ("recon", ["fifo", "--out", "o"]),
    ("recon", ["adir", "--out", "o", "--preset", "bogus"]),
    ("recon", ["adir", "--out", "o", "--iterations", "0"]),
    ("recon", ["adir", "--out", "o", "--max-minutes", "nan"]),
    ("recon", ["adir", "--out", "o", "--upsample", "9"]),
    # report
    ("report", ["nothere"]),
    ("report", ["badrun"]),
    ("report", ["afile"]),
    ("report", ["fifo"]),
    ("report", ["adir"]),
    # run
    ("run", ["nothere.yaml", "--out", "o"]),
    ("run", ["bad.yaml", "--out", "o"]),
    ("run", ["fifo", "--out", "o"]),
    ("run", ["adir", "--out", "o"]),
    ("run", ["good.yaml", "--out", "o", "--planner", "bogus"]),
    ("run", ["good.yaml", "--out", "o", "--horizon", "inf"]),
    ("run", ["good.yaml", "--out", "o", "--horizon", "nan"]),
    ("run", ["good.yaml", "--out", "o", "--horizon", "1e300"]),
    ("run", ["good.yaml", "--out", "o", "--horizon", "-1"]),
    ("run", ["good.yaml", "--out", "o", "--horizon", "0"]),
    ("run", ["good.yaml", "--out", "o", "--workers", "0"]),
    ("run", ["good.yaml", "--out", "o", "--workers", str(10**30)]),
    ("run", ["good.yaml", "--out", "o", "--executor", "bogus"]),
    ("run", ["good.yaml", "--out", "o", "--renderer", "bogus"]),
    ("run", ["good.yaml", "--out", "badrun", "--resume"]),
    # serve
    ("serve", ["nothere"]),
    ("serve", ["adir", "--port", "0"]),
    ("serve", ["adir", "--port", "70000"]),
    # synth
    ("synth", ["--out", "o", "--town", "bogus"]),
    ("synth", ["--out", "o", "--realism", "bogus"]),
    ("synth", ["--out", "o", "--realism", "real_like", "--truth-out", "o"]),
    ("realism", ["nothere", "--out", "o"]),
    ("realism", ["afile", "--out", "o"]),
    ("realism", ["adir", "--out", "o", "--level", "bogus"]),
    ("realism", ["adir", "--out", "o", "--seed", "-1"]),
    ("bench recon-roundtrip", ["--budget", "bogus"]),
    ("bench recon-roundtrip", ["--variants", "clean,bogus"]),
    ("bench recon-roundtrip", ["--variants", " , "]),
    ("bench recon-roundtrip", ["--threads", "0"]),
    ("synth", ["--out", "o", "--frames", "0"]),
    ("synth", ["--out", "o", "--cameras", "bogus"]),
    ("synth", ["--out", "o", "--width", "1"]),
    ("synth", ["--out", "o", "--rate", "inf"]),
    ("synth", ["--out", "o", "--rate", "0"]),
    ("synth", ["--out", "o", "--seed", "-1"]),
    # train bc
    ("train bc", ["--episodes", "nothere"]),
    ("train bc", ["--episodes", "afile"]),
    ("train bc", ["--episodes", "ep", "--scenarios", "good.yaml", "--seeds", "a,b"]),
    ("train bc", ["--episodes", "ep", "--scenarios", "good.yaml", "--dagger-seeds", "x"]),
    ("train bc", ["--episodes", "adir", "--dagger-rounds", "1"]),
    ("train bc", ["--episodes", "adir", "--init-weights", "garbage.safetensors"]),
    ("train bc", ["--episodes", "ep", "--scenarios", "good.yaml", "--expert", "bogus"]),
    ("train bc", ["--episodes", "ep", "--scenarios", "nothere.yaml"]),
    ("train bc", ["--episodes", "adir", "--epochs", "0"]),
    ("train bc", ["--episodes", "adir", "--lr", "nan"]),
    # train sensor-policy
    ("train sensor-policy", ["--scenarios", "nothere.yaml", "--episodes", "ep"]),
    ("train sensor-policy", ["--scenarios", "bad.yaml", "--episodes", "ep"]),
    ("train sensor-policy", ["--scenarios", "good.yaml", "--episodes", "ep", "--sensors", "bogus"]),
    ("train sensor-policy", ["--scenarios", "good.yaml", "--episodes", "ep", "--seeds", "a,b"]),
    ("train sensor-policy", ["--scenarios", "good.yaml", "--episodes", "ep", "--dagger-seeds", "x"]),
    ("train sensor-policy", ["--scenarios", "good.yaml", "--episodes", "ep", "--epochs", "0"]),
    ("train sensor-policy", ["--scenarios", "good.yaml", "--episodes", "ep", "--lr", "nan"]),
    # train ppo
    ("train ppo", ["--scenario", "nothere.yaml"]),
    ("train ppo", ["--scenario", "fifo"]),
    ("train ppo", ["--scenario", "adir"]),
    ("train ppo", ["--scenario", "bad.yaml"]),
    ("train ppo", ["--scenario", "good.yaml", "--steps", "0"]),
    # validate
    ("validate", ["nothere.yaml"]),
    ("validate", ["fifo"]),
    ("validate", ["adir"]),
    # validate-log
    ("validate-log", ["nothere"]),
    ("validate-log", ["afile"]),
    ("validate-log", ["fifo"]),
    # view
    ("view", ["nothere", "--out", "o.rrd"]),
    ("view", ["afile", "--out", "o.rrd"]),
    ("view", ["fifo", "--out", "o.rrd"]),
    ("view", ["adir", "--out", "o.rrd", "--max-points", "5"]),
]


def _subcommands() -> dict[str, object]:
    """Every leaf subcommand of the app, by its space-separated path."""
    out: dict[str, object] = {}

    def walk(group: object, prefix: str) -> None:
        for name, cmd in group.commands.items():  # type: ignore[attr-defined]
            path = f"{prefix} {name}".strip()
            if hasattr(cmd, "commands"):
                walk(cmd, path)
            else:
                out[path] = cmd

    walk(get_command(app), "")
    return out


def _unknown_option_cases() -> list[tuple[str, list[str]]]:
    return [(f"{cmd} unknown-option", [*cmd.split(), "--no-such-option"]) for cmd in sorted(_subcommands())]


def _value_cases() -> list[tuple[str, list[str]]]:
    return [(f"{cmd} {' '.join(a)}", [*cmd.split(), *a]) for cmd, a in VALUE_CASES]


CASES = _output_cases() + _unknown_option_cases() + _value_cases()


# -------------------------------------------------------------------------------- fixtures
class Hang(BaseException):
    """A case ran past its alarm (a command blocked, e.g. on a FIFO)."""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The inputs every case may name: ``good.yaml`` (a valid scenario), ``bad.yaml`` (broken
    YAML), ``afile`` (a regular file), ``adir`` (an empty folder), ``badrun`` (a run folder with
    corrupt results.parquet and run.json), ``garbage.safetensors`` (+ a valid .json config)."""
    ws = tmp_path_factory.mktemp("bad-input-template")
    (ws / "good.yaml").write_text(SCENARIO, encoding="utf-8")
    (ws / "bad.yaml").write_text("version: 1\nname: [unclosed\n", encoding="utf-8")
    (ws / "afile").write_text("not a folder\n", encoding="utf-8")
    (ws / "adir").mkdir()
    run = ws / "badrun"
    (run / "episodes").mkdir(parents=True)
    (run / "results.parquet").write_bytes(b"PAR1 this is not parquet")
    (run / "run.json").write_text("{", encoding="utf-8")
    (ws / "garbage.safetensors").write_bytes(os.urandom(256))
    from agents.bc import SHIPPED_WEIGHTS

    shutil.copyfile(SHIPPED_WEIGHTS.with_suffix(".json"), ws / "garbage.json")
    return ws


def _snapshot(root: Path) -> set[str]:
    return {str(Path(d, n).relative_to(root)) for d, dirs, files in os.walk(root) for n in (*dirs, *files)}


@pytest.fixture()
def in_workspace(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh copy of the template (plus a FIFO named ``fifo``) as the working folder, and an
    alarm that fails a case that blocks (a FIFO opened for reading) instead of hanging the suite."""
    ws = tmp_path / "ws"
    shutil.copytree(template, ws)
    os.mkfifo(ws / "fifo")
    monkeypatch.chdir(ws)

    def alarm(signum: int, frame: object) -> None:
        raise Hang("the command did not return within 20 s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(20)
    try:
        yield ws
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------------------------ tests
def test_table_is_large_and_ids_unique() -> None:
    assert len(CASES) >= 200
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


def test_every_subcommand_and_output_option_is_covered() -> None:
    subs = _subcommands()
    assert len(subs) >= 34
    valued = {cmd for cmd, _ in VALUE_CASES} | {cmd for cmd, *_ in OUTPUTS}
    assert set(subs) <= valued, f"subcommands without a bad-input row: {sorted(set(subs) - valued)}"
    listed = {(cmd, opt) for cmd, opt, *_ in OUTPUTS}
    for name, cmd in subs.items():
        for p in cmd.params:  # type: ignore[attr-defined]
            for opt in p.opts:
                if opt in OUTPUT_OPTION_NAMES:
                    assert (name, opt) in listed, f"{name} {opt} is an output option without rows in OUTPUTS"


@pytest.mark.parametrize("args", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(in_workspace: Path, args: list[str]) -> None:
    before = _snapshot(in_workspace)
    res = RUNNER.invoke(app, args)
    after = _snapshot(in_workspace)
    err = res.stderr
    assert "Traceback" not in err + res.stdout, err
    assert res.exit_code == 2, f"exit {res.exit_code}: {err}{res.stdout}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    if args[0] in PROBLEMS_ON_STDOUT:  # one line naming the bad file (none for a usage error or a folder)
        out, arg = res.stdout.splitlines(), args[-1]
        assert len(out) == (0 if arg.startswith("-") or Path(arg).is_dir() else 1), res.stdout
        assert all(ln.startswith(f"{arg}: ") for ln in out), res.stdout
    else:
        assert res.stdout == "", res.stdout
    assert after == before, f"left behind: {sorted(after - before)}; removed: {sorted(before - after)}"


def test_out_error_names_the_option_and_path(in_workspace: Path) -> None:
    res = RUNNER.invoke(app, ["run", "good.yaml", "--out", "afile/out"])
    assert res.exit_code == 2
    assert "--out" in res.stderr and "afile" in res.stderr and "(see loopdrive run --help)" in res.stderr


def test_usage_error_is_one_line_with_a_help_hint(in_workspace: Path) -> None:
    res = RUNNER.invoke(app, ["run", "good.yaml", "--out", "o", "--workers", "zero"])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert "--workers" in res.stderr and "(see loopdrive run --help)" in res.stderr
    assert "Usage:" not in res.stderr and "╭" not in res.stderr


def test_unexpected_exception_is_one_line_exit_1_and_traceback_with_verbose(
    in_workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sim.scenario

    def boom(*a: object, **k: object) -> None:
        raise ValueError("deliberate\nsecond line")

    monkeypatch.setattr(sim.scenario, "json_schema", boom)
    res = RUNNER.invoke(app, ["schema"])
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines() == ["error: unexpected ValueError: deliberate second line "
                                               "(a bug: rerun with --verbose for the traceback)"]  # fmt: skip
    res = RUNNER.invoke(app, ["--verbose", "schema"])
    assert res.exit_code == 1 and "Traceback" in res.stderr and "deliberate" in res.stderr


def test_full_disk_while_writing_is_one_line_exit_2(in_workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import sim.fsutil

    def full(path: object, text: str, **kw: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(sim.fsutil, "atomic_write_text", full)
    res = RUNNER.invoke(app, ["schema", "--out", "schema.json"])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == ["error: schema.json: No space left on device"]
    assert not (in_workspace / "schema.json").exists()


def test_atomic_writer_never_replaces_a_device() -> None:
    import stat

    from sim.fsutil import atomic_write_text

    with pytest.raises(OSError, match="device"):
        atomic_write_text("/dev/full", "x")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
