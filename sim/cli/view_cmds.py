"""``loopdrive view``: rerun recordings of drive logs and episodes."""

from __future__ import annotations

from pathlib import Path

import typer

from sim.cli._app import app, bench_app, console, fail, out_dir, out_file, split_names, user_errors


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


@bench_app.command("all")
def bench_all_cmd(
    quick: bool = typer.Option(False, "--quick", help="Small settings for every benchmark (tiny town for recon, no nerfacto)."),
    only: str = typer.Option(",".join(("synth", "env", "batch", "recon", "closed-loop")), "--only", help="Comma-separated subset."),
    results: Path = typer.Option(Path("benchmarks/results"), "--results", callback=out_dir, help="Results folder."),
    work: Path = typer.Option(Path("out/bench-all"), "--work", callback=out_dir, help="Scratch folder."),
) -> None:
    """Run every benchmark (each in its own process) and write all.json + all.md (the README table)."""
    from rich.table import Table
    from rich.text import Text

    from sim.bench.all import BENCHMARKS, run_all

    names = tuple(split_names(only, "--only"))
    bad = [n for n in names if n not in BENCHMARKS]
    if bad:
        raise fail(f"--only: unknown benchmark(s) {bad}; known: {list(BENCHMARKS)}")
    doc = run_all(results, quick=quick, only=names, work=work, echo=lambda s: console.print(f"[bold]{s}[/]"))
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
    if failed:
        raise fail(f"{len(failed)} of {len(doc['status'])} benchmarks failed: {', '.join(failed)}", code=1)
