"""``loopdrive import FORMAT SOURCE --out LOG``: convert an external data set into a drive log; ``loopdrive
bench nuscenes-roundtrip``: synth -> export-nuscenes -> import nuscenes against the exact truth."""

from __future__ import annotations

from pathlib import Path

import typer

from sim.cli._app import app, bench_app, console, fail, out_dir, user_errors
from sim.cli._outputs import bench_out_option, bench_output, publish_option


@app.command("import")
def import_cmd(
    fmt: str = typer.Argument(..., help="Importer name (built in: nuscenes; more through the loopdrive.importers entry points)."),
    source: Path = typer.Argument(..., help="The data set's root folder."),
    out: Path = typer.Option(..., "--out", callback=out_dir, help="Drive-log folder to write."),
    scene: str | None = typer.Option(None, "--scene", help="Scene name inside the data set (default: the first)."),
    version: str | None = typer.Option(None, "--version", help="Table version folder (nuscenes: default v1.0-mini)."),
    cameras: str | None = typer.Option(None, "--cameras", help="Cameras to import: all (nuscenes' default) or channels, e.g. CAM_FRONT,CAM_BACK."),
    sweeps: bool = typer.Option(False, "--sweeps", help="Also import the captures between key frames (nuscenes: cameras 12 Hz, LiDAR 20 Hz)."),
    max_gap: float | None = typer.Option(None, "--max-gap", help="Seconds: an actor unannotated for longer starts a new track (nuscenes: 1.5)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty --out."),
) -> None:
    """Import one scene of an external data set as a drive log (atomic; validated before it is published).
    Options are passed to the importer only when given; one it does not take is refused."""
    from sim.importers import check_options, get_importer

    given = {"scene": scene, "version": version, "cameras": cameras, "sweeps": sweeps or None, "max_gap_s": max_gap, "overwrite": overwrite or None}
    opts = {k: v for k, v in given.items() if v is not None}
    flags = {"scene": "--scene", "version": "--version", "cameras": "--cameras", "sweeps": "--sweeps", "max_gap_s": "--max-gap", "overwrite": "--overwrite"}
    with user_errors():
        importer = get_importer(fmt)
        check_options(fmt, importer, opts, flags)
        path = importer(source, out, **opts)
    console.print(f"[green]wrote[/] {path}")


@bench_app.command("nuscenes-roundtrip")
def bench_nuscenes_roundtrip_cmd(
    town: str = typer.Option("tiny", "--town", help="Synth preset."),
    frames: int = typer.Option(44, "--frames", min=12, max=2000, help="Steps of 50 ms to synthesise (44: 5 key frames)."),
    image_scale: float = typer.Option(0.1, "--image-scale", help="Images at this scale of 1600x900, in (0, 4]."),
    azimuth: int = typer.Option(1024, "--azimuth", min=8, max=65536, help="LiDAR azimuth steps."),
    sweeps: bool = typer.Option(True, "--sweeps/--key-frames-only", help="Import every capture, or the key frames only."),
    out: Path | None = bench_out_option("nuscenes_roundtrip.json"),
    publish: bool = publish_option(),
    work: Path = typer.Option(Path("out/bench-nuscenes-roundtrip"), "--work", callback=out_dir, help="Working folder (log, root, import)."),
) -> None:
    """Round trip against exact truth: a nuScenes-rig synth log exported as a nuScenes root, imported
    back and compared with the native log (camera poses and K, boxes, LiDAR, devkit projections)."""
    import math

    from rich.markup import escape
    from rich.table import Table

    if not (math.isfinite(image_scale) and 0 < image_scale <= 4):
        raise fail(f"--image-scale: expected a number in (0, 4], got {image_scale!r}")
    dest = bench_output("nuscenes_roundtrip.json", out, publish)
    with user_errors():
        from sim.synth import get_preset

        get_preset(town)
    from sim.bench.nuscenes_roundtrip import run_nuscenes_roundtrip

    cmd = (f"loopdrive bench nuscenes-roundtrip --town {town} --frames {frames} --image-scale {image_scale} --azimuth {azimuth} "
           f"{'--sweeps' if sweeps else '--key-frames-only'} --out {dest.path}")
    with user_errors():
        res = run_nuscenes_roundtrip(work=work, out=dest.path, town=town, frames=frames, image_scale=image_scale, azimuth=azimuth, sweeps=sweeps,
                                     command=cmd, echo=lambda m: console.log(m))
    tab = Table(title=f"nuScenes round trip ({town} town, {frames} steps; devkit {res['devkit']})")
    tab.add_column("quantity")
    tab.add_column(escape("count, [imported, native] or max error"), justify="right")
    for part in ("counts", "rig_imported_vs_native", "max_errors"):
        for k, v in res[part].items():
            tab.add_row(k, f"{v:.3g}" if isinstance(v, float) else escape(str(v)))
    console.print(tab)
    dest.publish()
    console.print(dest.wrote(), markup=False, highlight=False)
