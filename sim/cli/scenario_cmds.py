"""``loopdrive schema | validate | run | report | compare`` and ``loopdrive bench batch``: scenario
files, batch runs and their reports."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from sim.cli._app import (
    app,
    bench_app,
    check_planner,
    console,
    err_console,
    fail,
    horizon_seconds,
    out_dir,
    out_file,
    user_errors,
)
from sim.cli._group import one_line
from sim.cli._outputs import bench_out_option, bench_output, publish_option
from sim.cli._planner_params import PARAM_HELP, parse_planner_params


@app.command("schema")
def schema_cmd(
    out: Path | None = typer.Option(None, "--out", "-o", callback=out_file, help="Write to this file instead of stdout."),
) -> None:
    """Print the JSON Schema of scenario files (for editors): loopdrive schema > scenario.schema.json"""
    from sim.scenario import json_schema

    text = json.dumps(json_schema(), indent=2, sort_keys=True)
    if out is None:
        sys.stdout.write(text + "\n")
    else:
        from sim.fsutil import atomic_write_text

        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, text + "\n")
        err_console.print(f"wrote {out}")


@app.command("validate")
def validate_cmd(
    paths: list[Path] = typer.Argument(..., help="Scenario files or folders (searched for *.yaml)."),
) -> None:
    """Validate scenario files: one line per problem (FILE:LINE: field.path: what was expected);
    exit 0 when all are valid, 2 otherwise."""
    from sim.scenario import scenario_files, validate_file

    files = scenario_files(paths)
    if not files:
        raise fail(f"{', '.join(map(str, paths))}: expected scenario files (*.yaml), found none")
    bad = 0
    for f in files:
        errs = validate_file(f)
        for e in errs:
            sys.stdout.write(e.one_line() + "\n")
        bad += bool(errs)
    if bad:
        raise fail(f"{bad} of {len(files)} file(s) invalid (one line per problem above)")
    err_console.print(f"[green]ok[/] {len(files)} scenario file(s) valid")


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]episodes"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[red]{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


def _with_cli_params(episodes: list[Any], planner: str | None, items: list[str]) -> list[Any]:
    """``episodes`` with the ``--planner-param`` values applied over the params of the planner that
    drives each (``planner`` when given, else the episode's own)."""
    names = [planner] if planner else sorted({ep.planner for ep in episodes})
    given = parse_planner_params(items, names)
    out = []
    for ep in episodes:
        name = planner or ep.planner
        if name in given:
            own = dict(ep.planner_params) if name == ep.planner else {}
            ep = ep.with_planner(name, {**own, **given[name]})
        out.append(ep)
    return out


@app.command("run")
def run_cmd(
    paths: list[Path] = typer.Argument(..., help="Scenario files or folders."),
    out: Path = typer.Option(..., "--out", "-o", callback=out_dir, help="Run folder (results.parquet, episodes/)."),
    planner: str | None = typer.Option(
        None, "--planner", "-p", help="Planner for every episode (default: each scenario's)."
    ),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Episodes in parallel."),
    executor: str = typer.Option("local", "--executor", help="local (process pool) or ray."),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Join this Ray cluster (default: start a local one)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
    video: bool = typer.Option(False, "--video", help="Also write a BEV video.mp4 per episode."),
    horizon: float | None = typer.Option(
        None, "--horizon", callback=horizon_seconds, help="Cut every episode to this many seconds (smoke runs)."
    ),
    renderer: str | None = typer.Option(
        None,
        "--renderer",
        help="Sensor backend for camera/LiDAR planners: mesh, neural or composite (default: each scenario's scene.renderer).",
    ),
    trust_pickle: bool = typer.Option(
        False, "--trust-pickle", help="Let the sb3 planner unpickle stable-baselines3 .zip policies (can run code: only files you trust)."
    ),
    planner_param: list[str] | None = typer.Option(None, "--planner-param", metavar="[PLANNER.]KEY=VALUE", help=PARAM_HELP),
) -> None:
    """Run scenario files x seeds x sweep points closed-loop and write results.parquet.

    A trained model: --planner bc_policy --planner-param weights=models/bc.safetensors (the
    parameters are applied over each scenario's own planner.params).

    Exit code 1 when every episode errored (the planner or the rollout raised); some errored
    episodes still exit 0, and the summary counts them."""
    from sim.batch import run_batch

    if executor not in ("local", "ray"):
        raise typer.BadParameter(f"expected local or ray, got {executor!r}", param_hint="--executor")
    check_planner(planner)
    from sim.scenario import expand_paths

    with user_errors():
        episodes = expand_paths(paths)  # invalid files fail here, before the progress bar
        if planner_param:
            episodes = _with_cli_params(episodes, planner, planner_param)
        from sim.planning import with_opt_ins_episodes

        episodes = with_opt_ins_episodes(episodes, planner=planner, trust_pickle=trust_pickle)  # policy files checked now
    with user_errors(), contextlib.ExitStack() as stack:
        bar: list[Any] = []  # the progress bar appears at the first report: after run_batch's checks

        def cb(done: int, failed: int, total: int) -> None:
            if not bar:
                prog = stack.enter_context(_progress())
                bar.extend([prog, prog.add_task("run", total=total, failed=0)])
            bar[0].update(bar[1], completed=done, total=total, failed=failed)

        s = run_batch(
            None,
            out,
            episodes=episodes,
            planner=planner,
            workers=workers,
            executor=executor,  # type: ignore[arg-type]
            ray_address=ray_address,
            resume=resume,
            video=video,
            progress=cb,
            horizon_s=horizon,
            renderer=renderer,
        )
    console.print(
        f"{s.total} episodes ({s.ran} run, {s.skipped} already done, {s.failed} errored) in {s.wall_s:.1f} s -> {s.results}",
        soft_wrap=True,
        highlight=False,
    )
    for eid, err in s.errors[:10]:
        err_console.print(Text.assemble(("errored", "red"), f" {eid}: {one_line(err)}"), highlight=False, soft_wrap=True)
    if s.total and s.failed == s.total:
        raise fail(f"every episode errored ({s.failed} of {s.total}); nothing was scored", code=1)


@app.command("report")
def report_cmd(run: Path = typer.Argument(..., help="A run folder made by `loopdrive run`.")) -> None:
    """Write RUN/report.html (self-contained) and RUN/summary.md."""
    from sim.report import write_report

    with user_errors():
        h, m = write_report(run)
    console.print(f"wrote {h} and {m}")


@app.command("compare")
def compare_cmd(
    run_a: Path = typer.Argument(..., help="Run folder A."),
    run_b: Path = typer.Argument(..., help="Run folder B."),
) -> None:
    """Per-scenario mean score of two runs and the difference B - A, then an overall row: the mean
    of the per-scenario scores over the scenarios both runs scored (each scenario counts once)."""
    from sim.report import compare_runs

    with user_errors():
        diffs = compare_runs(run_a, run_b)
    tab = Table(title=f"score: {run_a.name} (A) vs {run_b.name} (B)")
    for c in ("scenario", "episodes A", "episodes B", "score A", "score B", "B - A"):
        tab.add_column(c, justify="left" if c == "scenario" else "right")

    def f(v: float) -> str:
        return "–" if math.isnan(v) else f"{v:.3f}"

    for d in diffs:
        dv = d.diff
        colour = "" if math.isnan(dv) or abs(dv) < 1e-9 else ("green" if dv > 0 else "red")
        tab.add_row(
            d.scenario,
            str(d.episodes_a),
            str(d.episodes_b),
            f(d.score_a),
            f(d.score_b),
            f"[{colour}]{f(dv)}[/]" if colour else f(dv),
        )
    both = [d for d in diffs if not (math.isnan(d.score_a) or math.isnan(d.score_b))]
    if both:
        ma, mb = sum(d.score_a for d in both) / len(both), sum(d.score_b for d in both) / len(both)
        tab.add_section()
        tab.add_row(f"overall ({len(both)} of {len(diffs)} scenarios in both)", str(sum(d.episodes_a for d in both)),
                    str(sum(d.episodes_b for d in both)), f(ma), f(mb), f"{mb - ma:+.3f}")
    else:
        tab.add_section()
        tab.add_row("overall", "", "", "–", "–", "– (no scenario scored in both runs)")
    console.print(tab)


@bench_app.command("batch")
def bench_batch_cmd(
    scenarios: Path = typer.Option(Path("scenarios"), "--scenarios", help="Scenario library folder."),
    out: Path | None = bench_out_option("batch.json", "-o"),
    publish: bool = publish_option(),
    horizon_s: float | None = typer.Option(
        None, "--horizon", callback=horizon_seconds, help="Cut episodes to this length, s (default: the files')."
    ),
    planner: str | None = typer.Option(None, "--planner", help="Planner (default: each scenario's)."),
) -> None:
    """Episodes per minute with 1 and 2 workers, local and Ray, on the scenario library."""
    from sim.bench.batch import run_bench

    check_planner(planner)
    dest = bench_output("batch.json", out, publish)
    with user_errors():
        res = run_bench(
            scenarios, dest.path, horizon_s=horizon_s, planner=planner, log=lambda s: err_console.print(s)
        )
    tab = Table(
        title=f"batch throughput ({res['episodes']} episodes, horizon {res['horizon_s'] or 'per file'} s)"
    )
    for c in ("executor", "workers", "episodes/min", "wall s", "failed"):
        tab.add_column(c)
    for r in res["runs"]:
        if "error" in r:
            tab.add_row(r["executor"], str(r["workers"]), "–", "–", r["error"][:60])
        else:
            tab.add_row(
                r["executor"],
                str(r["workers"]),
                f"{r['episodes_per_min']:.1f}",
                f"{r['wall_s']:.1f}",
                str(r["failed"]),
            )
    console.print(tab)
    runs = res["runs"]
    if runs and all("error" in r or r.get("failed") == r.get("episodes") for r in runs):
        console.print(f"wrote {dest.path}", markup=False, highlight=False)
        raise fail("no configuration ran an episode to the end (every run failed or every episode errored); not published", code=1)
    dest.publish()
    console.print(dest.wrote(), markup=False, highlight=False)
