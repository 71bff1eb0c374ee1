"""``loopdrive export-nuscenes LOG --out ROOT``: a drive log as a nuScenes data root.

A separate command rather than a sub-command of ``loopdrive export`` (the training-shard export,
whose options and ``--out`` are its own): ``export-nuscenes`` takes the log as an argument and has
only the options of the nuScenes writer.
"""

from __future__ import annotations

from pathlib import Path

import typer

from sim.cli._app import app, console, fail, out_dir, user_errors


@app.command("export-nuscenes")
def export_nuscenes_cmd(
    log: Path = typer.Argument(..., help="Drive-log folder (e.g. from `loopdrive synth --rig nuscenes`)."),
    out: Path = typer.Option(..., "--out", "-o", callback=out_dir, help="Data root to write (ROOT/<version>/*.json, samples/, sweeps/, maps/)."),
    version: str = typer.Option("v1.0-mini", "--version", help="Table folder: NuScenes(version=..., dataroot=ROOT)."),
    scene: str | None = typer.Option(None, "--scene", help="Scene name (default: the log's name)."),
    origin: str = typer.Option("300,600", "--origin", help="Global x,y (m) of the town's lower-left corner (the map offset)."),
    image_format: str = typer.Option("jpg", "--image-format", help="Camera files: jpg (as nuScenes) | png (lossless)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty --out."),
) -> None:
    """Write a drive log as a nuScenes data root that the official nuscenes-devkit loads: all 13 tables,
    key frames at 2 Hz with annotations, sweeps, every camera and LIDAR_TOP (.pcd.bin x, y, z,
    intensity, ring), a map mask (atomic: written beside ROOT, then renamed)."""
    from sim.importers.nuscenes_export import export_nuscenes

    try:
        ox, oy = (float(v) for v in origin.split(","))
    except ValueError:
        raise fail(f"--origin: expected two numbers x,y in metres, got {origin!r}") from None
    if not (0.0 <= ox <= 1e5 and 0.0 <= oy <= 1e5):
        raise fail(f"--origin: expected x,y between 0 and 100000 m, got {origin!r}")
    if image_format not in ("jpg", "png"):
        raise fail(f"--image-format: expected jpg or png, got {image_format!r}")
    with user_errors():
        root = export_nuscenes(log, out, version=version, scene_name=scene, origin=(ox, oy), image_format=image_format,
                               overwrite=overwrite)
    console.print(f"[green]wrote[/] {root} (NuScenes(version={version!r}, dataroot={str(root)!r}))", highlight=False)
