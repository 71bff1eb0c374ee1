"""``loopdrive serve``, ``loopdrive actors list|add`` and ``loopdrive bench closed-loop``: the neural
scene in the loop. torch, FastAPI and uvicorn are imported inside the commands."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import typer
from rich.table import Table

from sim.cli._app import (
    LoopdriveGroup,
    app,
    bench_app,
    check_bundle_and_log,
    console,
    horizon_seconds,
    out_dir,
    parse_int_list,
    user_errors,
)
from sim.cli._outputs import bench_out_option, bench_output, publish_option

actors_app = typer.Typer(help="The actor library: reconstructed actors harvested from scene bundles.", no_args_is_help=True, cls=LoopdriveGroup)
app.add_typer(actors_app, name="actors")

_LIBRARY_HELP = "Actor-library folder (default: $LOOPDRIVE_ACTORS or ./actors)."


@app.command("serve")
def serve_cmd(
    bundle: Path = typer.Argument(..., help="Scene bundle folder to serve."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (loopback by default; another address needs --allow-remote and --token)."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow binding a non-loopback address (requires --token)."),
    token: str | None = typer.Option(None, "--token", envvar="LOOPDRIVE_SERVE_TOKEN", show_envvar=True,
                                     help="Access token (>= 16 characters): every request must send 'Authorization: Bearer TOKEN'."),
    max_body_bytes: int = typer.Option(1024 * 1024, "--max-body-bytes", min=1024, max=1 << 30, help="Larger request bodies get 413."),
    library: Path | None = typer.Option(None, "--library", help=_LIBRARY_HELP),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch threads per render."),
    max_requests: int | None = typer.Option(None, "--max-requests", min=1, help="Exit after this many requests (tests, smoke runs)."),
    api: str = typer.Option("both", "--api", help="both: loopdrive's API and the neurad/NeuroNCAP protocol at the root (GET /alive answers "
                            "true; loopdrive's description is at GET /info); loopdrive: only loopdrive's; neurad: only the neurad protocol."),
) -> None:
    """Serve camera and LiDAR renders of BUNDLE over HTTP: loopdrive's API (GET /info, GET|POST /actors, POST /render/camera,
    POST /render/lidar) and neurad-studio's closed-loop protocol that NeuroNCAP's client speaks (GET /alive, GET /get_actors,
    POST /update_actors, POST /render_image, GET /start_time; POST /render_lidar as an extension)."""
    from sim.serve import serve

    with user_errors():
        serve(bundle, host=host, port=port, library=library, max_requests=max_requests, threads=threads,
              allow_remote=allow_remote, token=token, max_body_bytes=max_body_bytes, api=api,
              on_ready=lambda: console.print(f"serving [bold]{bundle}[/] on http://{host}:{port} (docs at /docs)"))


@actors_app.command("list")
def actors_list_cmd(
    library: Path | None = typer.Option(None, "--library", help=_LIBRARY_HELP),
    cls: str | None = typer.Option(None, "--class", help="Only this class."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the reconstructed actors available for insertion (key = source/id)."""
    from sim.actor_library import open_library

    with user_errors():
        lib = open_library(library)
        rows = [a for a in lib.actors if cls is None or a.cls == cls]
    if as_json:
        console.print_json(json.dumps([{"key": a.key, "class": a.cls, "size": list(a.size), "static": a.static} for a in rows]))
        return
    tab = Table(title=f"actor library {lib.root} ({len(rows)} actors from {len(lib.sources)} bundles)")
    for c in ("key", "class", "length m", "width m", "height m", "parked"):
        tab.add_column(c, justify="right" if c.endswith(" m") else "left")
    for a in rows:
        tab.add_row(a.key, a.cls, *(f"{s:.2f}" for s in a.size), "yes" if a.static else "")
    console.print(tab)
    if not rows:
        console.print("empty: add a bundle with [bold]loopdrive actors add BUNDLE[/]")


@actors_app.command("add")
def actors_add_cmd(
    bundle: Path = typer.Argument(..., help="Scene bundle folder to harvest."),
    library: Path | None = typer.Option(None, "--library", callback=out_dir, help=_LIBRARY_HELP),
    name: str | None = typer.Option(None, "--name", help="Source name (default: the bundle folder's name)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a source of the same name."),
) -> None:
    """Harvest every reconstructed actor of BUNDLE (fields, latent codes, decoders) into the library."""
    from sim.actor_library import open_library

    with user_errors():
        lib = open_library(library)
        added = lib.add_bundle(bundle, name, overwrite=overwrite)
    console.print(f"[green]added[/] {len(added)} actors to {lib.root}: {', '.join(a.key for a in added[:8])}{' ...' if len(added) > 8 else ''}")


@bench_app.command("closed-loop")
def bench_closed_loop_cmd(
    bundle: Path = typer.Option(..., "--bundle", help="Scene bundle of the town (trained on --log)."),
    log: Path = typer.Option(..., "--log", help="The synth drive log the bundle was trained on (mesh truth)."),
    out: Path | None = bench_out_option("closed_loop.json"),
    publish: bool = publish_option(),
    steps: int = typer.Option(20, "--steps", min=2, help="Env steps per speed measurement."),
    scenarios: list[Path] = typer.Option([], "--scenario", help="Scenario files for the sensor-only planner gap (repeatable)."),
    horizon_s: float = typer.Option(6.0, "--horizon", min=0.5, callback=horizon_seconds, help="Episode horizon for the planner gap, s."),
    threads: int = typer.Option(1, "--threads", min=1, help="torch threads."),
    deviation_steps: int = typer.Option(40, "--deviation-steps", min=2, help="Steps of the deviating episode (realism vs lateral offset)."),
    max_offset_m: float = typer.Option(3.0, "--max-offset", min=0.0, max=20.0, help="Lateral offset the deviating episode steers to, m."),
    edit_frames: int = typer.Option(4, "--edit-frames", min=1, help="Logged times scored with an actor removed / inserted."),
    multicam: bool = typer.Option(False, "--multicam", help="The loop on --log's own rig (e.g. an imported six-camera nuScenes log): "
                                  "every camera + LiDAR in surface mode; writes closed_loop_multicam.json."),
    truth: Path | None = typer.Option(None, "--truth", help="--multicam: the native synth log --log was imported from (mesh truth, "
                                      "same frames; without it no planner gap and PSNR against --log's images)."),
    worlds: int = typer.Option(8, "--worlds", min=1, help="--multicam: worlds rendered per renderer configuration."),
    heldout_frames: int = typer.Option(4, "--heldout-frames", min=1, help="--multicam: held-out frames scored per camera."),
) -> None:
    """Closed-loop speed of the env with neural/composite sensors, realism under editing against mesh
    truth, and the sensor-only planner's score on neural vs mesh sensors. With --multicam: env
    steps/s with every camera of --log's rig and its LiDAR rendered from the bundle (surface mode),
    per-sensor ms, held-out PSNR and lidar_stack's score on neural vs mesh sensors of that rig."""
    if multicam:
        return _bench_multicam(bundle, log, truth, out, publish, steps, worlds, heldout_frames, horizon_s, threads)
    from sim.bench.closed_loop import run_closed_loop_bench

    dest = bench_output("closed_loop.json", out, publish)
    with user_errors():
        check_bundle_and_log(bundle, log)
        res = run_closed_loop_bench(bundle, log, dest.path, steps=steps, scenarios=list(scenarios), horizon_s=horizon_s, threads=threads,
                                    deviation_steps=deviation_steps, max_offset_m=max_offset_m, edit_frames=edit_frames,
                                    progress=lambda m: console.log(m))
    tab = Table(title=f"closed loop ({res['machine']['cpu_count']} CPUs)")
    tab.add_column("measure")
    tab.add_column("value", justify="right")
    for k, v in res.get("speed", {}).items():
        if isinstance(v, dict) and "steps_per_s" in v:
            tab.add_row(f"{k} steps/s", f"{v['steps_per_s']:.2f}")
    for row in res.get("realism", {}).get("lane_deviation", []):
        tab.add_row(f"PSNR at {row['lateral_m']:.1f} m lateral", f"{row['psnr']:.2f}")
    for k in ("actor_removed", "actor_inserted"):
        v = res.get("realism", {}).get(k) or {}
        if v.get("psnr") is not None:
            tab.add_row(f"PSNR {k.replace('_', ' ')}", f"{v['psnr']:.2f}")
    for row in res.get("planner_gap", {}).get("scenarios", []):
        tab.add_row(f"lidar_stack {row['scenario']} mesh / neural", f"{row['score_mesh']:.3f} / {row['score_neural']:.3f}")
    console.print(tab)
    dest.publish()
    console.print(dest.wrote(), markup=False, highlight=False)


def _bench_multicam(bundle: Path, log: Path, truth: Path | None, out: Path | None, publish: bool, steps: int, worlds: int,
                    heldout_frames: int, horizon_s: float, threads: int) -> None:
    """``bench closed-loop --multicam`` (:mod:`sim.bench.closed_loop_multicam`)."""
    from sim.bench.closed_loop_multicam import run_multicam_bench

    dest = bench_output("closed_loop_multicam.json", out, publish)
    with user_errors():
        check_bundle_and_log(bundle, log)
        if truth is not None:
            check_bundle_and_log(None, truth)
        res = run_multicam_bench(bundle, log, dest.path, truth_log=truth, steps=steps, render_worlds=worlds, threads=threads,
                                 heldout_frames=heldout_frames, gap_horizon_s=horizon_s, progress=lambda m: console.log(m),
                                 command=shlex.join(["loopdrive", *sys.argv[1:]]))
    tab = Table(title=f"closed loop, {len(res['rig']['cameras'])} cameras + LiDAR ({res['machine']['cpu_count']} CPUs, "
                      f"load {(res['machine']['load_average'] or ['n/a'])[0]})")
    tab.add_column("measure")
    tab.add_column("value", justify="right")
    tab.add_row("env steps/s", f"{res['speed']['steps_per_s']:.2f}")
    for k, v in res["render"]["configs"].items():
        tab.add_row(f"render {k} ms/step (median)", f"{v['ms_median']}")
    for k, v in res["render"]["per_sensor_ms"].items():
        tab.add_row(f"{k} ms", f"{v}")
    tab.add_row("held-out PSNR, mean over cameras", f"{res['quality']['mean_over_cameras']}")
    for row in res.get("planner_gap", {}).get("scenarios", []):
        tab.add_row(f"lidar_stack {row['scenario']} mesh / neural", f"{row['score_mesh']:.3f} / {row['score_neural']:.3f}")
    console.print(tab)
    dest.publish()
    console.print(dest.wrote(), markup=False, highlight=False)


@bench_app.command("planner-gap")
def bench_planner_gap_cmd(
    bundle: Path = typer.Option(..., "--bundle", help="Scene bundle of the town (trained on --log)."),
    log: Path = typer.Option(..., "--log", help="The synth drive log the bundle was trained on (mesh truth)."),
    out: Path | None = bench_out_option("planner_gap.json"),
    publish: bool = publish_option(),
    scenarios: list[Path] = typer.Option([], "--scenario", help="Scenario files (repeatable; default: the library files on the bundle's town)."),
    max_scenarios: int | None = typer.Option(3, "--max-scenarios", min=1, help="At most this many scenarios."),
    horizon_s: float = typer.Option(3.0, "--horizon", min=0.5, callback=horizon_seconds, help="Episode horizon, s."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated episode seeds."),
    lidar: str = typer.Option("32x1024", "--lidar", help="LiDAR beams x azimuth steps."),
    threads: int = typer.Option(1, "--threads", min=1, help="torch threads."),
) -> None:
    """The sim-to-real gap of the sensor model: lidar_stack's score on neural vs mesh LiDAR."""
    from sim.bench.closed_loop import run_planner_gap_bench

    try:
        beams, az = (int(v) for v in lidar.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"expected BEAMSxAZIMUTH (e.g. 32x1024), got {lidar!r}", param_hint="--lidar") from None
    if not (1 <= beams <= 256 and 8 <= az <= 8192):
        raise typer.BadParameter(f"expected 1-256 beams and 8-8192 azimuth steps, got {lidar!r}", param_hint="--lidar")
    seed_list = tuple(parse_int_list(seeds, "--seeds", minimum=0) or (0,))
    dest = bench_output("planner_gap.json", out, publish)
    with user_errors():
        check_bundle_and_log(bundle, log)
        res = run_planner_gap_bench(bundle, log, dest.path, scenarios=list(scenarios) or None, max_scenarios=max_scenarios, horizon_s=horizon_s,
                                    seeds=seed_list, lidar=(beams, az), threads=threads, progress=lambda m: console.log(m))
    tab = Table(title=f"lidar_stack, mesh vs neural LiDAR ({res['machine']['cpu_count']} CPUs)")
    for c in ("scenario", "mesh", "neural", "gap"):
        tab.add_column(c, justify="left" if c == "scenario" else "right")
    for row in res["planner_gap"].get("scenarios", []):
        tab.add_row(str(row["scenario"]), f"{row['score_mesh']:.3f}", f"{row['score_neural']:.3f}", f"{row['score_mesh'] - row['score_neural']:+.3f}")
    console.print(tab)
    dest.publish()
    console.print(dest.wrote(), markup=False, highlight=False)
