"""``loopdrive import FORMAT SOURCE --out LOG``: convert an external data set into a drive log."""

from __future__ import annotations

from pathlib import Path

import typer

from sim.cli._app import app, console, out_dir, user_errors


@app.command("import")
def import_cmd(
    fmt: str = typer.Argument(..., help="Importer name (built in: nuscenes; more through the loopdrive.importers entry points)."),
    source: Path = typer.Argument(..., help="The data set's root folder."),
    out: Path = typer.Option(..., "--out", callback=out_dir, help="Drive-log folder to write."),
    scene: str | None = typer.Option(None, "--scene", help="Scene name inside the data set (default: the first)."),
    version: str = typer.Option("v1.0-mini", "--version", help="nuScenes table version folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty --out."),
) -> None:
    """Import one scene of an external data set as a drive log (atomic; validated before it is published)."""
    from sim.importers import import_log

    with user_errors():
        opts = {"scene": scene, "overwrite": overwrite}
        if fmt == "nuscenes":
            opts["version"] = version
        path = import_log(fmt, source, out, **opts)
    console.print(f"[green]wrote[/] {path}")
