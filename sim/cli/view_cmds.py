"""``loopdrive view``: rerun recordings of drive logs and episodes."""

from __future__ import annotations

from pathlib import Path

import typer

from sim.cli._app import app, console, user_errors


@app.command("view")
def view_cmd(
    source: Path = typer.Argument(..., help="A drive-log folder or an episode folder (OUT/episodes/<id> of `loopdrive run`)."),
    out: Path = typer.Option(..., "--out", help="The .rrd file to write; open it with `rerun FILE.rrd`."),
    max_points: int = typer.Option(20000, "--max-points", min=100, help="LiDAR points kept per sweep."),
) -> None:
    """Write a rerun recording (camera, LiDAR, 3D boxes, lanes, ego path, per-step metrics); works headless."""
    from sim.view import write_recording

    with user_errors():
        path = write_recording(source, out, max_points=max_points)
    console.print(f"[green]wrote[/] {path}  (open with: rerun {path})")
