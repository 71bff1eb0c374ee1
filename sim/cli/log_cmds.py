"""``loopdrive validate-log`` and ``loopdrive info``: inspect drive logs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from sim.cli._app import app, console, user_errors
from sim.log import validate_log


@app.command("validate-log")
def validate_log_cmd(logs: list[Path] = typer.Argument(..., help="Drive-log folders.")) -> None:
    """Validate drive-log folders (every file, field and payload); exit 2 on the first problem of each."""
    bad = 0
    for p in logs:
        try:
            with user_errors():
                dl = validate_log(p)
        except typer.Exit:
            bad += 1
            continue
        console.print(f"[green]ok[/] {p}: {len(dl.frames)} camera frames, {len(dl.sweeps)} LiDAR sweeps, {len(dl.tracks)} tracks")
    if bad:
        raise typer.Exit(2)


@app.command("info")
def info_cmd(log: Path = typer.Argument(..., help="A drive-log folder.")) -> None:
    """Summarise a drive log: sensors, duration, tracks and lanes."""
    with user_errors():
        dl = validate_log(log, deep=False)  # every field and payload header, no decoding
    t0, t1 = dl.t_span_us
    tab = Table(title=f"drive log {dl.name}", show_header=False)
    tab.add_row("source", str(dl.meta.get("source")))
    tab.add_row("duration", f"{(t1 - t0) / 1e6:.1f} s")
    tab.add_row("cameras", ", ".join(f"{c} ({len(dl.frames_of(c))})" for c in dl.cameras))
    tab.add_row("lidar sweeps", str(len(dl.sweeps)))
    classes: dict[str, int] = {}
    for t in dl.tracks:
        classes[t.cls] = classes.get(t.cls, 0) + 1
    tab.add_row("tracks", ", ".join(f"{k}: {v}" for k, v in sorted(classes.items())) or "none")
    tab.add_row("lanes", str(len(dl.map["lanes"])))
    console.print(tab)
