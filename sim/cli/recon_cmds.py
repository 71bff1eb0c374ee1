"""``loopdrive recon``, ``loopdrive eval-recon`` and ``loopdrive bench recon``: the neural scene.

nerfstudio and torch are imported inside the commands so ``loopdrive --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

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

from sim.cli._app import (
    LazyProgress,
    app,
    bench_app,
    check_bundle_and_log,
    console,
    fail,
    out_dir,
    user_errors,
)
from sim.cli._outputs import bench_out_option, bench_output, publish_option

#: Third-party warnings a recon run triggers on every run, harmless and not the user's to act on:
#: (category, module regex, message regex). Matched narrowly so any other warning still shows.
KNOWN_THIRD_PARTY_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    (FutureWarning, r"nerfstudio\.", ""),  # torch.cuda.amp.GradScaler and other deprecations inside nerfstudio
    (FutureWarning, r"torchmetrics\.", ""),  # torchmetrics' deprecated re-exports (spectral_angle_mapper, ...)
    (UserWarning, r"nerfstudio\.utils\.writer", r"Converting a tensor with requires_grad"),  # its scalar logging
)

def preset_cap_minutes(preset: str, multi_camera: bool = False) -> float:
    """Wall-clock training cap of a preset in minutes (its ``max_train_seconds``; with
    ``multi_camera`` the cap it uses when several cameras train)."""
    from sim.recon.presets import preset_settings

    return float(preset_settings(preset, multi_camera)["model"]["max_train_seconds"]) / 60.0


@contextlib.contextmanager
def known_warnings_filtered() -> Iterator[None]:
    """Hide :data:`KNOWN_THIRD_PARTY_WARNINGS` for the duration (the CLI's choice; the library
    leaves the warning filters alone)."""
    with warnings.catch_warnings():
        for cat, module, message in KNOWN_THIRD_PARTY_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=cat, module=module)
        yield


class TrainingBar:
    """The training progress bar of ``recon`` and ``demo --recon``: a ``(step, total)`` callback for
    :func:`sim.recon.run.train_bundle`; the bar (after ``heading``, if given) appears at the first
    iteration, so a run refused by the library's checks prints only its error line; :meth:`close`
    (or leaving the ``with`` block) ends it."""

    def __init__(self, heading: str | None = None) -> None:
        self._heading = heading
        columns = (TextColumn("[bold]training[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
        self._bar = LazyProgress(lambda: Progress(*columns, console=console, transient=False), "train")
        self._state = "new"  # -> "running" at the first step -> "closed"

    def __call__(self, step: int, total: int) -> None:
        if self._state == "new" and self._heading:
            console.print(self._heading, soft_wrap=True)
        if self._state != "closed":
            self._state = "running"
            self._bar.update(completed=step, total=total)

    def close(self) -> None:
        """End the bar if it started (once: a stopped rich display stopped again prints a blank line)."""
        if self._state == "running":
            self._state = "closed"
            self._bar.__exit__(None, None, None)

    def __enter__(self) -> TrainingBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@app.command("recon")
def recon_cmd(
    log: Path = typer.Argument(..., help="Drive-log folder to reconstruct."),
    out: Path = typer.Option(..., "--out", "-o", callback=out_dir, help="Bundle folder to write (e.g. bundles/town-s0)."),
    preset: str = typer.Option("quick", "--preset", help="quick (minutes) or full (up to an hour on 2 CPU cores)."),
    iterations: int | None = typer.Option(None, "--iterations", min=1, max=10_000_000, help="Override the preset's iteration count."),
    max_minutes: float | None = typer.Option(None, "--max-minutes", "--time-cap", min=0, max=7 * 24 * 60,
                                             help="Stop training after this many wall-clock minutes (the learning-rate decay is fitted to it). "
                                                  "Default: the preset's cap (quick 9, quick on several cameras 14, full 55); 0: no cap, train every iteration."),
    seed: int = typer.Option(0, "--seed", help="Seed of the batch sampler and the ray jitter."),
    threads: int = typer.Option(1, "--threads", min=1, help="torch CPU threads: 2 trains about 1.4x faster on an idle 2-core machine, but loses a lot when other jobs share the cores."),
    upsample: int | None = typer.Option(None, "--upsample", min=1, max=8, help="Output pixels per rendered feature pixel, per axis (quick: 4, full: 2); "
                                        "2 renders sharper images about 2.5x slower than 4."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty --out."),
    cameras: str | None = typer.Option(None, "--cameras", help="Cameras to train on: one name, a comma-separated list or all (default: the rig's first)."),
    appearance: bool = typer.Option(True, "--appearance/--no-appearance", help="Per-camera and per-frame appearance embeddings (exposure, white balance, vignetting)."),
    refine_actors: bool = typer.Option(True, "--refine-actors/--no-refine-actors", help="Learn per-sample corrections of the actor boxes (with a prior)."),
    refine_ego: bool = typer.Option(False, "--refine-ego/--no-refine-ego", help="Learn per-sample corrections of the ego/sensor poses (with a prior); for noisy poses."),
) -> None:
    """Train the decomposed neural scene (nerfstudio method loopdrive-recon) on LOG and write a bundle."""
    if preset not in ("quick", "full"):
        raise fail(f"--preset: expected quick or full, got {preset!r}")
    from sim.recon.run import train_bundle

    cap = preset_cap_minutes(preset) if max_minutes is None else max_minutes
    multi = preset_cap_minutes(preset, multi_camera=True)
    cap_text = f"{cap:g} min" + (f", {preset} on several cameras {multi:g} min" if max_minutes is None and multi != cap else "")
    heading = f"training preset {preset}, wall-clock cap {cap_text} (--max-minutes to change, 0 for none)" if cap else None
    with user_errors(), known_warnings_filtered(), TrainingBar(heading) as progress:
        # no --max-minutes: the preset's own cap (the quick preset's is longer on several cameras)
        summary = train_bundle(log, out, preset=preset, iterations=iterations, max_seconds=None if max_minutes is None else cap * 60, seed=seed,
                               overwrite=overwrite, progress=progress, camera=cameras,
                               overrides={"num_threads": threads, "appearance": appearance, "refine_actors": refine_actors,
                                          "refine_ego": refine_ego, **({"upsample": upsample} if upsample else {})})
    stopped = " (stopped by the wall-clock cap)" if summary["iterations"] < summary["configured_iterations"] else ""
    console.print(f"[green]wrote[/] bundle {summary['bundle']}: {summary['iterations']} of {summary['configured_iterations']} iterations "
                  f"in {summary['train_seconds']:.0f} s{stopped}", soft_wrap=True)
    if Path(summary["nerfstudio_config"]).is_file():
        console.print(f"nerfstudio config (for ns-eval / ns-render): {summary['nerfstudio_config']}", soft_wrap=True)


@app.command("eval-recon")
def eval_recon_cmd(
    bundle: Path = typer.Argument(..., help="Scene bundle folder."),
    log: Path = typer.Option(..., "--log", help="The drive log the bundle was trained on."),
    out: Path | None = typer.Option(None, "--out", "-o", callback=out_dir,
                                    help="Output folder (default BUNDLE/eval): eval_MODE.json and contact_sheet_MODE.png, so both modes fit in one."),
    max_frames: int = typer.Option(12, "--max-frames", min=1, help="Held-out frames to score."),
    mode: str = typer.Option("volume", "--mode", help="volume (the reference) or surface (the fast renderer's baked background)."),
) -> None:
    """Score a bundle on held-out frames, lane-shifted and actor-edited views, and held-out LiDAR."""
    from sim.recon.evaluate import eval_paths, evaluate_bundle

    if mode not in ("volume", "surface"):
        raise fail(f"--mode: expected volume or surface, got {mode!r}")
    with user_errors(), known_warnings_filtered():
        res = evaluate_bundle(bundle, log, out, max_frames=max_frames, progress=lambda m: console.log(m), mode=mode)
    tab = Table(title=f"eval-recon {bundle}")
    tab.add_column("view")
    tab.add_column("metric")
    tab.add_column("value", justify="right")
    h = res["heldout"]
    tab.add_row("held-out", "PSNR dB / SSIM", f"{h['psnr']:.2f} / {h['ssim']:.3f}" if h["psnr"] is not None else "-")
    for k, v in (res.get("lane_shift", {}).get("psnr") or {}).items():
        tab.add_row(f"lane shift {k}", "PSNR dB", f"{v:.2f}" if v is not None else "-")
    for k in ("actor_removed", "actor_moved"):
        v = res.get(k, {}).get("psnr")
        tab.add_row(k.replace("_", " "), "PSNR dB", f"{v:.2f}" if v is not None else res.get(k, {}).get("skipped", "-"))
    li = res.get("lidar") or {}
    if li:
        tab.add_row("LiDAR", "median |range err| m", f"{li['median_abs_range_err_m']:.3f}")
        tab.add_row("LiDAR", "ray-drop accuracy", f"{li['ray_drop_accuracy']:.3f}")
    console.print(tab)
    written = [p for p in eval_paths(out if out else Path(bundle) / "eval", mode) if p.exists()]
    console.print("wrote " + " and ".join(str(p) for p in written))


@app.command("bake-surface")
def bake_surface_cmd(
    bundle: Path = typer.Argument(..., help="Scene bundle folder."),
    level: float | None = typer.Option(None, "--level", min=1e-3, help="Iso-density (1/m); default: calibrated against volume rendering."),
    subdivide: int = typer.Option(1, "--subdivide", min=1, max=4, help="Bake grid points per occupancy cell edge."),
) -> None:
    """Bake (or re-bake) a bundle's background surface for the fast neural render mode (stored in
    BUNDLE/surface.npz; bundles written by `loopdrive recon` already have one)."""
    from sim.recon.bundle import write_surface
    from sim.recon.surface import SurfaceConfig

    with user_errors(), console.status("baking the background surface"):
        proxy = write_surface(bundle, SurfaceConfig(level=level, subdivide=subdivide))
    cal = f"; calibration: median depth difference {proxy.calib_err_m:.3f} m ({100 * proxy.calib_rel_err:.1f} %)" if level is None else ""
    console.print(f"[green]wrote[/] {bundle}/surface.npz: {proxy.triangles} triangles at level {proxy.level:.2f} /m{cal}")


@bench_app.command("recon")
def bench_recon_cmd(
    log: Path | None = typer.Option(None, "--log", help="Drive log (default: synthesise the town)."),
    town: str = typer.Option("small", "--town", help="Synth preset when --log is not given."),
    frames: int = typer.Option(120, "--frames", min=10, help="Frames to synthesise when --log is not given."),
    preset: str = typer.Option("quick", "--preset", help="quick or full."),
    nerfacto: bool = typer.Option(True, "--nerfacto/--no-nerfacto", help="Also train nerfacto for the same wall-clock."),
    out: Path | None = bench_out_option("recon.json"),
    publish: bool = publish_option(),
    work: Path = typer.Option(Path("out/bench-recon"), "--work", callback=out_dir, help="Working folder (logs, bundles)."),
    threads: int = typer.Option(1, "--threads", min=1, help="torch CPU threads for both methods."),
    nerfacto_from: Path | None = typer.Option(
        None, "--nerfacto-from", help="Reuse the nerfacto result of an earlier results JSON on the same log (no nerfacto training)."),
) -> None:
    """Reconstruction benchmark: train time, held-out / lane-shift PSNR, LiDAR error, render speed, vs nerfacto."""
    if preset not in ("quick", "full"):
        raise fail(f"--preset: expected quick or full, got {preset!r}")
    dest = bench_output("recon.json", out, publish)
    with user_errors():  # before torch and nerfstudio are imported
        check_bundle_and_log(None, log)
        if log is None:
            from sim.synth import get_preset

            get_preset(town)
        if nerfacto_from is not None:
            from sim.errors import ResultsError
            from sim.fsutil import check_input_file

            check_input_file(nerfacto_from, error=ResultsError, what="an earlier `loopdrive bench recon` results file")
    from sim.bench.recon import run_recon_bench

    with user_errors():
        res = run_recon_bench(log=log, town=town, frames=frames, preset=preset, nerfacto=nerfacto, out=dest.path, work=work, threads=threads,
                              echo=lambda m: console.log(m), nerfacto_from=nerfacto_from)
    console.print_json(json.dumps(res))
    dest.publish()
    console.print(dest.wrote(), markup=False, highlight=False)


@bench_app.command("render")
def bench_render_cmd(
    bundle: Path = typer.Option(..., "--bundle", help="Scene bundle folder."),
    log: Path = typer.Option(..., "--log", help="The drive log the bundle was trained on (poses, rig)."),
    out: Path | None = bench_out_option("render.json"),
    publish: bool = publish_option(),
    threads: int = typer.Option(1, "--threads", min=1, help="torch CPU threads."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Timed renders per sensor and mode."),
) -> None:
    """Render speed of a bundle (one camera frame, one LiDAR sweep) with the volume and baked-surface backgrounds."""
    from sim.bench.recon import run_render_bench

    dest = bench_output("render.json", out, publish)
    with user_errors():
        check_bundle_and_log(bundle, log)
        res = run_render_bench(bundle, log, dest.path, threads=threads, repeats=repeats)
    tab = Table(title=f"render ({res['machine']['cpu_count']} CPUs, {threads} torch thread(s), load {(res['machine']['load_average'] or ['n/a'])[0]})")
    for c in ("mode", "camera ms (min / median)", "LiDAR sweep ms (min / median)"):
        tab.add_column(c)
    r = res["render"]
    for mode in ("volume", "surface"):
        m = r[mode]
        tab.add_row(mode, f"{m['camera_ms_min']} / {m['camera_ms_median']}", f"{m['lidar_sweep_ms_min']} / {m['lidar_sweep_ms_median']}")
    console.print(tab)
    dest.publish()
    console.print(dest.wrote(), markup=False, highlight=False)


@app.command("ns-config")
def ns_config_cmd(bundle: Path = typer.Argument(..., help="Scene bundle folder written by `loopdrive recon`.")) -> None:
    """Print the bundle's nerfstudio config.yml once its sha256 matches bundle.json (nerfstudio loads
    it with an unsafe YAML loader): ns-eval --load-config "$(loopdrive ns-config BUNDLE)"."""
    from sim.recon.bundle import nerfstudio_config

    with user_errors():
        path = nerfstudio_config(bundle)
    typer.echo(str(path))
