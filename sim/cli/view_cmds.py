"""``loopdrive view``: rerun recordings of drive logs and episodes."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from sim.cli._app import (
    app,
    bench_app,
    check_out_path,
    console,
    fail,
    out_dir,
    out_file,
    split_names,
    user_errors,
)
from sim.cli._outputs import BenchOutput, bench_run_dir, repository_results


@app.command("view")
def view_cmd(
    source: Path = typer.Argument(..., help="A drive-log folder or an episode folder (OUT/episodes/<id> of `loopdrive run`)."),
    out: Path = typer.Option(..., "--out", callback=out_file, help="The .rrd file to write; open it with `rerun FILE.rrd`."),
    max_points: int = typer.Option(20000, "--max-points", min=100, help="LiDAR points kept per sweep."),
) -> None:
    """Write a rerun recording (camera, LiDAR, 3D boxes, lanes, ego path, per-step metrics); works headless."""
    from sim.view import write_recording

    with user_errors():
        path = write_recording(source, out, max_points=max_points)
    console.print(f"[green]wrote[/] {path}  (open with: rerun {path})")


def bench_app_commands() -> list[str]:
    """The names of the registered ``loopdrive bench`` commands (``all`` itself excluded)."""
    return [c.name for c in bench_app.registered_commands if c.name and c.name != "all"]


@bench_app.command("all")
def bench_all_cmd(
    quick: bool = typer.Option(False, "--quick", help="Small settings for every benchmark (tiny town for recon, no nerfacto, one loop round)."),
    only: str | None = typer.Option(
        None, "--only", help="Comma-separated subset (default: every benchmark: synth, env, batch, recon, render, closed-loop, "
        "planner-gap, loop, nuscenes-roundtrip, recon-roundtrip)."),
    out: Path | None = typer.Option(
        None, "--out", "--results", callback=out_dir,
        help="Results folder (default: runs/bench/<UTC time>/); the repository's benchmarks/results/ only with --publish."),
    work: Path | None = typer.Option(None, "--work", callback=out_dir, help="Scratch folder for logs, bundles and loop runs (default: OUT/work)."),
    publish: bool = typer.Option(
        False, "--publish", help="When every benchmark succeeded, also copy each result JSON, all.json and all.md into the "
        "repository's benchmarks/results/ (the figures behind the README tables)."),
) -> None:
    """Run every benchmark (each in its own process; render, closed-loop and planner-gap on the
    bundle recon trains) and write all.json + all.md (the README table) beside their results."""
    from rich.table import Table
    from rich.text import Text

    from sim.bench.all import BENCHMARKS, result_name, run_all

    known = [n for n in BENCHMARKS if n in bench_app_commands()]
    names = tuple(split_names(only, "--only")) if only is not None else tuple(known)
    bad = [n for n in names if n not in known]
    if bad:
        raise fail(f"--only: unknown benchmark(s) {bad}; known: {known}")
    results = out if out is not None else check_out_path(bench_run_dir())
    published = repository_results() if publish else None
    doc = run_all(results, quick=quick, only=names, work=work, echo=lambda s: console.print(f"[bold]{escape(s)}[/]"))
    tab = Table(title="loopdrive benchmarks")
    for c in ("benchmark", "figure", "value", "target"):
        tab.add_column(c)
    for r in doc["rows"]:
        v = r["value"]
        tab.add_row(r["benchmark"], r["figure"], f"{v:.3g}" if isinstance(v, float) else str(v), r["target"])
    console.print(tab)
    failed = [name for name, st in doc["status"].items() if not st.get("ok")]
    for name in failed:
        console.print(Text.assemble((f"{name} failed: ", "red"), str(doc["status"][name].get("error"))), highlight=False)
    console.print(f"wrote {results / 'all.json'} and {results / 'all.md'}", markup=False, highlight=False)
    if failed:
        raise fail(f"{len(failed)} of {len(doc['status'])} benchmarks failed: {', '.join(failed)}"
                   f"{'; nothing published' if published else ''}", code=1)
    if published is not None:
        for f in [result_name(n) for n in names] + ["all.json", "all.md"]:
            BenchOutput(results / f, published / f).publish()
        console.print(f"published {len(names) + 2} files to {published}", markup=False, highlight=False)
