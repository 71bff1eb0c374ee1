"""``loopdrive export-nuscenes LOG --out ROOT``: a drive log as a nuScenes data root;
``loopdrive export-onnx --planner P --weights W --out DIR``: a learned planner's ONNX forms.

Separate commands rather than sub-commands of ``loopdrive export`` (the training-shard export,
whose options and ``--out`` are its own): ``export-nuscenes`` takes the log as an argument and has
only the options of the nuScenes writer; ``export-onnx`` reaches the planner's exporter (its
``export_onnx`` class method) through the planner registry, so ``sim`` never imports ``agents``.
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


@app.command("export-onnx")
def export_onnx_cmd(
    planner: str = typer.Option(..., "--planner", "-p", help="A registered planner with an ONNX export (e.g. sensor_policy)."),
    weights: Path = typer.Option(..., "--weights", "-w", help="Its weights (.safetensors with the .json config beside)."),
    out: Path = typer.Option(..., "--out", "-o", callback=out_dir, help="Folder to write: the weights, <name>.onnx and <name>.int8.onnx, export.json."),
    int8: bool = typer.Option(True, "--int8/--no-int8", help="Also write the int8 form (static quantisation, onnxruntime)."),
    calibration: list[Path] | None = typer.Option(None, "--calibration", help="Shard files/folders to calibrate the int8 activations on (repeatable; default: synthetic rasters)."),
    samples: int = typer.Option(2000, "--samples", min=1, max=100_000, help="Calibration samples drawn from --calibration."),
    keep_float: str = typer.Option("head", "--keep-float", help="Layers left in float in the int8 form: head (the MLP head) or output (the output layer only)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty --out."),
) -> None:
    """Export a learned planner for the car: ONNX fp32 and int8 forms that onnxruntime runs on the CPU
    (``--planner-param runtime=onnx|onnx_int8 weights=OUT/<name>.safetensors``). The exporter is the
    planner's own, found through the planner registry; OUT is written beside itself and renamed into
    place (never half-written)."""
    from sim.planning import PLANNERS

    if keep_float not in ("head", "output"):
        raise fail(f"--keep-float: expected head or output, got {keep_float!r}")
    if calibration and not int8:
        raise fail("--calibration: only the int8 form is calibrated; drop --no-int8 or --calibration")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise fail(f"--out: {out} is not empty (give --overwrite to replace it)")
    with user_errors():
        cls = PLANNERS.get(planner)
        exporter = getattr(cls, "export_onnx", None)
        if not callable(exporter):
            have = [n for n in PLANNERS.names() if callable(getattr(PLANNERS.get(n), "export_onnx", None))]
            raise fail(f"--planner: {planner} has no ONNX export (planners with one: {', '.join(have) or 'none'})")
        files = exporter(weights, out, int8=int8, calibration=list(calibration) if calibration else None, samples=samples,
                         keep_float=keep_float)  # fmt: skip
    for kind, path in files.items():
        console.print(f"[green]wrote[/] {kind}: {path}", highlight=False)
