"""Benchmarks write into a run folder (``runs/bench/<UTC time>/`` or ``--out``) and into the
repository's ``benchmarks/results/`` only with ``--publish``: every ``loopdrive bench`` command
follows the one helper of :mod:`sim.cli._outputs`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

import sim
from sim.cli._outputs import BenchOutput, bench_output, bench_run_dir, repository_results

REPO = Path(sim.__file__).resolve().parent.parent


def test_default_is_a_fresh_run_folder_relative_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    d = bench_output("env.json", None, False)
    assert d.path.parent.parent == Path("runs/bench") and d.path.name == "env.json" and d.published is None
    assert bench_run_dir(0.0) == Path("runs/bench/19700101T000000Z")
    assert bench_output("env.json", tmp_path / "x.json", False).path == tmp_path / "x.json"
    assert "--publish" in d.wrote()


def test_publish_goes_to_the_checkout_not_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)  # a decoy in the working directory
    d = bench_output("env.json", None, True)
    assert d.published == REPO / "benchmarks" / "results" / "env.json" == repository_results() / "env.json"
    # --out naming the published file itself: nothing to copy
    assert bench_output("env.json", REPO / "benchmarks" / "results" / "env.json", True).published is None


def test_publish_copies_atomically(tmp_path: Path) -> None:
    src, dst = tmp_path / "run" / "a.json", tmp_path / "pub" / "a.json"
    src.parent.mkdir()
    dst.parent.mkdir()
    src.write_text('{"x": 1}')
    dst.write_text("old")
    out = BenchOutput(src, dst)
    assert out.publish() == dst and dst.read_text() == '{"x": 1}'
    assert sorted(p.name for p in dst.parent.iterdir()) == ["a.json"]
    assert "published to" in out.wrote()
    assert BenchOutput(src).publish() is None


def _bench_commands() -> dict:
    from sim.cli import app

    bench = get_command(app).commands["bench"]  # type: ignore[attr-defined]
    return dict(bench.commands)


def test_every_bench_command_writes_a_run_folder_by_default_and_publishes_on_request() -> None:
    cmds = _bench_commands()
    assert {"all", "synth", "env", "batch", "recon", "render", "closed-loop", "planner-gap", "loop", "nuscenes-roundtrip"} <= set(cmds)
    for name, cmd in cmds.items():
        opts = {o: p for p in cmd.params if p.param_type_name == "option" for o in p.opts}
        assert "--publish" in opts, f"bench {name} has no --publish"
        assert opts["--out"].default is None, f"bench {name}: --out defaults to {opts['--out'].default!r}, not a run folder"


def test_bench_synth_writes_the_run_folder_and_leaves_the_repository_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sim.cli import app

    published = REPO / "benchmarks" / "results" / "synth.json"
    before = published.read_bytes() if published.exists() else None
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["bench", "synth", "--town", "tiny", "--width", "16", "--height", "16", "--beams", "1",
                                 "--azimuth", "8", "--camera-frames", "1", "--lidar-sweeps", "1", "--slow-sweeps", "1"])
    assert r.exit_code == 0, r.output
    (res,) = list((tmp_path / "runs" / "bench").glob("*/synth.json"))
    assert json.loads(res.read_text())["lidar"]
    assert (published.read_bytes() if published.exists() else None) == before
    assert "add --publish" in r.output


def test_publish_outside_a_checkout_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "site-packages" / "sim"
    fake.mkdir(parents=True)
    monkeypatch.setattr(sim, "__file__", str(fake / "__init__.py"))
    with pytest.raises(typer.BadParameter, match="not from a repository checkout"):
        repository_results()


def test_bench_all_knows_every_bench_command() -> None:
    from sim.bench.all import BENCHMARKS
    from sim.cli.view_cmds import bench_app_commands

    missing = sorted(set(bench_app_commands()) - set(BENCHMARKS))
    assert not missing, f"bench all does not run {missing}: add them to sim.bench.all.BENCHMARKS and _args"
