"""``loopdrive realism`` (real-sensor imperfections on a clean synth log) and ``loopdrive bench recon-roundtrip``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
from rich.table import Table

from sim.cli._app import app, bench_app, console, fail, out_dir, user_errors
from sim.cli._outputs import bench_out_option, bench_output, publish_option, split_names


@app.command("realism")
def realism_cmd(
    log: Path = typer.Argument(..., help="A clean drive log (e.g. from `loopdrive synth --rig nuscenes`): the truth, left untouched."),
    out: Path = typer.Option(..., "--out", callback=out_dir, help="The log to write, with the imperfections applied."),
    level: str = typer.Option("real_like", "--level", help="Realism level: real_like | clean (see docs/concepts/realism.md)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of every draw (same seed -> byte-identical log)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty --out."),
) -> None:
    """Write a copy of a clean log whose logged images, poses, LiDAR stamps and boxes carry the
    imperfections of real sensors and labels (exposure / white balance per camera and frame,
    vignetting, motion blur, sensor noise, camera-LiDAR time offset, ego-pose and box label noise)."""
    from sim.errors import LogFormatError
    from sim.log import validate_log
    from sim.synth.realism import REALISM_PRESETS, apply_realism, get_realism

    if level not in REALISM_PRESETS:
        raise fail(f"--level: expected one of {', '.join(REALISM_PRESETS)}, got {level!r}")
    with user_errors():
        dl = validate_log(log)
        if Path(out).resolve() == Path(log).resolve():
            raise LogFormatError("expected an output folder other than the clean log (the truth stays untouched)", file=out)
        cfg = get_realism(level, seed)
        apply_realism(dl, out, cfg, overwrite=overwrite)
    tab = Table(title=f"wrote {out} ({level}, seed {seed}; truth: {log})", show_header=False)
    for k, v in cfg.to_dict().items():
        if k != "seed":
            tab.add_row(k, f"{v:g}")
    console.print(tab)


@bench_app.command("recon-roundtrip")
def bench_recon_roundtrip_cmd(
    budget: str = typer.Option("quick", "--budget", help="smoke (plumbing, < 1 min) | quick | full."),
    variants: str = typer.Option("clean,real_like,real_like_no_appearance,real_like_no_pose_refinement", "--variants",
                                 help="Comma-separated variants to run (realism level + reconstructor switches)."),
    work: Path = typer.Option(Path("out/bench-recon-roundtrip"), "--work", callback=out_dir,
                              help="Working folder (logs, exports, bundles, evaluations; reused between runs of one budget)."),
    out: Path | None = bench_out_option("recon_roundtrip.json"),
    publish: bool = publish_option(),
    threads: int = typer.Option(1, "--threads", min=1, help="torch CPU threads."),
    merge: bool = typer.Option(True, "--merge/--no-merge", help="Keep the variants of an existing --out of the same settings."),
    reuse_bundles: bool = typer.Option(False, "--reuse-bundles", help="Score a variant's bundle already in --work again instead of retraining it."),
    iterations: int | None = typer.Option(None, "--iterations", min=1,
                                          help="Train every variant exactly N iterations with no wall-clock cap (iteration-matched; recorded in settings)."),
    section: str | None = typer.Option(None, "--section",
                                       help="Write the result under this top-level key of --out (e.g. ablation_iteration_matched), leaving the rest."),
) -> None:
    """Six cameras + LiDAR, real format: synth (nuScenes rig) -> export-nuscenes -> import nuscenes ->
    recon -> eval-recon per camera against mesh truth, clean and with real-like imperfections, plus ablations."""
    from sim.bench.recon_roundtrip import BENCH_PRESETS, VARIANTS

    if budget not in BENCH_PRESETS:
        raise fail(f"--budget: expected one of {', '.join(BENCH_PRESETS)}, got {budget!r}")
    names = tuple(split_names(variants, "--variants"))
    bad = [n for n in names if n not in VARIANTS]
    if bad:
        raise fail(f"--variants: unknown variant {bad[0]!r}; known: {', '.join(VARIANTS)}")
    dest = bench_output("recon_roundtrip.json", out, publish)
    from sim.bench.recon_roundtrip import run_recon_roundtrip

    with user_errors():
        res = run_recon_roundtrip(work=work, out=dest.path, budget=budget, variants=names, threads=threads, merge=merge, reuse_bundles=reuse_bundles,
                                  iterations=iterations, section=section, keep_sections_from=tuple(f for f in (dest.published,) if f),
                                  command=shlex.join(["loopdrive", *sys.argv[1:]]), echo=lambda m: console.log(m))
    tab = Table(title=f"recon round trip ({budget}; load {res['machine']['load_average'][0]})")
    for c in ("variant", "status", "iterations", "held-out dB (mean / front)", "lane 2 m dB", "LiDAR median m", "wall s"):
        tab.add_column(c)
    for name, v in res["variants"].items():
        s = v.get("summary", {})

        def f(x: object) -> str:
            return f"{x:.2f}" if isinstance(x, float) else "-"

        tab.add_row(name, v.get("status", "-"), str(v.get("iterations_run", "-")), f"{f(s.get('mean_heldout_psnr'))} / {f(s.get('front_heldout_psnr'))}",
                    f(s.get("mean_lane_shift_psnr", {}).get("2m")), f"{s['lidar_median_range_err_m']:.3f}" if s.get("lidar_median_range_err_m") is not None else "-",
                    f(v.get("wall_s")))
    console.print(tab)
    dest.publish()
    console.print(dest.wrote(), markup=False, highlight=False)
