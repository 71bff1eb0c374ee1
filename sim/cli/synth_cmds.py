"""``loopdrive synth``, ``loopdrive demo`` and ``loopdrive bench synth``: the ground-truth synthetic town."""

from __future__ import annotations

import json
import time
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

from sim.cli._app import app, bench_app, console, fail, out_dir, user_errors
from sim.cli._outputs import bench_out_option, bench_output, publish_option

_CAMERAS = ("front", "left", "right", "rear")


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=False)


def _parse_cameras(cameras: str) -> tuple[str, ...]:
    names = tuple(c.strip() for c in cameras.split(",") if c.strip())
    if not names:
        raise fail(f"--cameras: expected a comma-separated list of {', '.join(_CAMERAS)}, got {cameras!r}")
    bad = [c for c in names if c not in _CAMERAS]
    if bad:
        raise fail(f"--cameras: unknown camera {bad[0]!r}; known: {', '.join(_CAMERAS)}")
    if len(set(names)) != len(names):
        raise fail(f"--cameras: each camera at most once, got {cameras!r}")
    return names


def _dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _nuscenes_setup(cameras: str | None, width: int | None, height: int | None, rate_hz: float | None, image_scale: float,
                    beams: int, azimuth: int) -> tuple[object, tuple[str, ...]]:
    """The nuScenes rig of ``--rig nuscenes`` (its options checked) and its camera names."""
    from sim.synth.rigs import NUSCENES_CAMERAS, nuscenes_rig

    for flag, v in (("--width", width), ("--height", height), ("--rate", rate_hz)):
        if v is not None:
            raise fail(f"{flag}: not used with --rig nuscenes (images are --image-scale x 1600x900; cameras 12 Hz, LiDAR 20 Hz)")
    if not 0.01 <= image_scale <= 2.0:
        raise fail(f"--image-scale: expected a scale of 1600x900 between 0.01 and 2, got {image_scale:g}")
    names = tuple(NUSCENES_CAMERAS) if cameras is None else tuple(c.strip() for c in cameras.split(",") if c.strip())
    bad = [c for c in names if c not in NUSCENES_CAMERAS]
    if bad or not names or len(set(names)) != len(names):
        raise fail(f"--cameras: expected distinct nuScenes cameras from {', '.join(NUSCENES_CAMERAS)}, got {cameras!r}")
    return nuscenes_rig(image_scale, cameras=names, beams=beams, azimuth_steps=azimuth), names


def synth_log(town: str, seed: int, frames: int | None, out: Path, overwrite: bool, cameras: str | None, width: int | None,
              height: int | None, beams: int, azimuth: int, rate_hz: float | None = None, rig_name: str = "default",
              image_scale: float = 0.2, realism: str = "clean", realism_seed: int = 0, truth_out: Path | None = None) -> Path:
    """Validate the arguments, render the town with a progress bar and print a summary. With a
    ``realism`` level other than ``clean`` the clean render (the truth) goes to ``truth_out``
    (default ``<out>-truth``) and ``out`` gets the copy with the imperfections applied."""
    from sim.sensors import default_rig
    from sim.synth import make_scene, write_synth_log
    from sim.synth.rigs import RIGS, nuscenes_schedule
    from sim.synth.writer import check_out_dir

    if rig_name not in RIGS:
        raise fail(f"--rig: expected one of {', '.join(RIGS)}, got {rig_name!r}")
    schedule = None
    if rig_name == "nuscenes":
        rig, names = _nuscenes_setup(cameras, width, height, rate_hz, image_scale, beams, azimuth)
        assert rig.lidar is not None  # type: ignore[attr-defined]
        rate_hz = rig.lidar.rate_hz  # type: ignore[attr-defined]
        width, height = rig.cameras[0].width, rig.cameras[0].height  # type: ignore[attr-defined]
    width = 320 if width is None else width
    height = 192 if height is None else height
    rate_hz = 10.0 if rate_hz is None else rate_hz

    if frames is not None and frames <= 0:
        raise fail(f"--frames: expected a positive number of frames, got {frames}")
    if seed < 0:
        raise fail(f"--seed: expected a non-negative integer, got {seed}")
    for flag, v, lo in (("--width", width, 16), ("--height", height, 16), ("--beams", beams, 1), ("--azimuth", azimuth, 8)):
        if v < lo:
            raise fail(f"{flag}: expected an integer >= {lo}, got {v}")
    if not 0.5 <= rate_hz <= 100.0:
        raise fail(f"--rate: expected a camera/LiDAR rate between 0.5 and 100 Hz, got {rate_hz:g}")
    if rig_name == "default":
        names = _parse_cameras(cameras or "front")
        rig = default_rig(names, width, height, beams, azimuth)
    from sim.synth.realism import REALISM_PRESETS, apply_realism, get_realism

    if realism not in REALISM_PRESETS:
        raise fail(f"--realism: expected one of {', '.join(REALISM_PRESETS)}, got {realism!r}")
    clean_out = out if realism == "clean" else (truth_out or out.with_name(out.name + "-truth"))
    if clean_out.resolve() == out.resolve() and realism != "clean":
        raise fail(f"--truth-out: expected a folder other than --out, got {clean_out}")
    with user_errors():
        scene = make_scene(town, seed, frames, dt_s=1.0 / rate_hz)
        check_out_dir(out, overwrite)
        check_out_dir(clean_out, overwrite)
    if rig_name == "nuscenes":
        schedule = nuscenes_schedule(int(scene.t_us[-1]), rig)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    with user_errors(), _progress() as prog:
        total = len(schedule.events()) if schedule is not None else scene.frames
        task = prog.add_task(f"rendering {town} town (seed {seed})", total=total)
        write_synth_log(scene, out=clean_out, rig=rig, overwrite=overwrite, progress=lambda d, n: prog.update(task, completed=d),  # type: ignore[arg-type]
                        schedule=schedule, rig_name=None if rig_name == "default" else rig_name)
    if realism != "clean":
        with user_errors(), console.status(f"applying realism {realism} (truth: {clean_out})"):
            apply_realism(clean_out, out, get_realism(realism, realism_seed), overwrite=overwrite)
    dt = time.perf_counter() - t0
    classes: dict[str, int] = {}
    for t in scene.tracks:
        k = f"{t.cls} (parked)" if t.static else t.cls
        classes[k] = classes.get(k, 0) + 1
    tab = Table(title=f"wrote {out}", show_header=False)
    tab.add_row("town", f"{town}, seed {seed}")
    tab.add_row("frames", f"{scene.frames} at {1 / scene.dt_s:g} Hz ({(scene.frames - 1) * scene.dt_s:.1f} s)")
    if schedule is not None:
        n_img = sum(len(t) for t in schedule.cameras.values())
        tab.add_row("rig", f"nuscenes: cameras {schedule.camera_hz:g} Hz, spinning LIDAR_TOP {schedule.lidar_hz:g} Hz")
        tab.add_row("cameras", f"{', '.join(names)} at {width}x{height} -> {n_img} images + depth")
        tab.add_row("LiDAR", f"{beams}x{azimuth} -> {len(schedule.lidar)} sweeps (per-point time and ring)")
    else:
        tab.add_row("cameras", f"{', '.join(names)} at {width}x{height} -> {scene.frames * len(names)} images + depth")
        tab.add_row("LiDAR", f"{beams}x{azimuth} -> {scene.frames} sweeps")
    tab.add_row("tracks", ", ".join(f"{v} {k}" for k, v in sorted(classes.items())))
    n_conn = sum(1 for ln in scene.map["lanes"] if ln.get("kind") == "connector")
    tab.add_row("map", f"{len(scene.map['lanes'])} lanes ({n_conn} intersection connectors), {len(scene.map['crosswalks'])} crosswalks")
    tab.add_row("ego route", " -> ".join(scene.ego_route))
    tab.add_row("size", f"{_dir_size(out) / 1e6:.1f} MB")
    tab.add_row("time", f"{dt:.1f} s ({scene.frames / dt:.1f} frames/s)")
    console.print(tab)
    return out


@app.command("synth")
def synth_cmd(
    town: str = typer.Option("small", "--town", help="Town preset: tiny | small | large."),
    seed: int = typer.Option(0, "--seed", help="Town and traffic seed (same seed -> byte-identical log)."),
    frames: int | None = typer.Option(None, "--frames", max=100_000, help="Frames (default: the preset's: tiny 30, small 120, large 300)."),
    out: Path = typer.Option(..., "--out", callback=out_dir, help="Drive-log folder to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty --out."),
    cameras: str | None = typer.Option(None, "--cameras", help="Comma-separated cameras: front,left,right,rear (default: front); "
                                       "with --rig nuscenes a subset of CAM_FRONT,... (default: all six)."),
    width: int | None = typer.Option(None, "--width", max=8192, help="Camera width, pixels (default 320; not with --rig nuscenes)."),
    height: int | None = typer.Option(None, "--height", max=8192, help="Camera height, pixels (default 192; not with --rig nuscenes)."),
    beams: int = typer.Option(32, "--beams", max=1024, help="LiDAR beams."),
    azimuth: int = typer.Option(1024, "--azimuth", max=65536, help="LiDAR azimuth steps per sweep."),
    rate: float | None = typer.Option(None, "--rate", help="Camera and LiDAR rate, Hz (one frame per sensor per step; default 10; "
                                      "not with --rig nuscenes, whose frames are 50 ms steps)."),
    rig: str = typer.Option("default", "--rig", help="Sensor rig: default (the named cameras, one capture per sensor per frame) | "
                            "nuscenes (six cameras at 12 Hz with nuScenes calibration, spinning 32-beam LIDAR_TOP at 20 Hz)."),
    image_scale: float = typer.Option(0.2, "--image-scale", help="With --rig nuscenes: image size as a fraction of 1600x900 (0.2 = 320x180)."),
    realism: str = typer.Option("clean", "--realism", help="Sensor and label imperfections of the logged data: clean | real_like "
                                "(docs/concepts/realism.md); the clean truth goes to --truth-out."),
    realism_seed: int = typer.Option(0, "--realism-seed", min=0, help="Seed of the realism draws."),
    truth_out: Path | None = typer.Option(None, "--truth-out", callback=out_dir, help="With --realism: where the clean log (the truth) "
                                          "is written (default: OUT-truth)."),
) -> None:
    """Generate a procedural town, drive the ego through it and write a drive log (camera RGB + depth,
    LiDAR, exact tracks and lane map)."""
    synth_log(town, seed, frames, out, overwrite, cameras, width, height, beams, azimuth, rate, rig, image_scale, realism, realism_seed, truth_out)


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("out/demo"), "--out", callback=out_dir, help="Demo folder (overwritten): log/, leaderboard/, videos, index.html."),
    town: str = typer.Option("small", "--town", help="Town preset."),
    seed: int = typer.Option(0, "--seed", min=0, help="Town seed."),
    frames: int | None = typer.Option(None, "--frames", min=2, max=100_000, help="Log frames (default: the preset's)."),
    recon: bool = typer.Option(False, "--recon/--no-recon", help="Also train the neural scene (quick preset: about 5 minutes on a quiet 2-core machine, more when it is busy) and drive on it."),
) -> None:
    """Run loopdrive end to end on the built-in small town and write OUT/index.html: the synthetic drive
    log (bev.png, preview.mp4), closed-loop runs of library scenarios for two planners (leaderboard,
    batch reports), and an episode with camera + LiDAR + BEV rendered every step (episode.mp4)."""
    from sim.cli.recon_cmds import TrainingBar, known_warnings_filtered
    from sim.demo import run_demo

    with user_errors(), known_warnings_filtered(), TrainingBar() as bar:

        def say(line: str) -> None:
            bar.close()  # a new stage: the training bar (if any) is done
            console.print(f"[bold]{line}[/]", soft_wrap=True)

        res = run_demo(out, town=town, seed=seed, frames=frames, recon=recon, progress=say, train_progress=bar)
    for k, v in res.files.items():
        console.print(f"  {k:>18}: {v}")


@bench_app.command("synth")
def bench_synth_cmd(
    town: str = typer.Option("small", "--town", help="Town preset."),
    width: int = typer.Option(320, "--width", min=16, max=8192, help="Camera width."),
    height: int = typer.Option(192, "--height", min=16, max=8192, help="Camera height."),
    beams: int = typer.Option(32, "--beams", min=1, max=1024, help="LiDAR beams."),
    azimuth: int = typer.Option(1024, "--azimuth", min=8, max=65536, help="LiDAR azimuth steps."),
    camera_frames: int = typer.Option(40, "--camera-frames", min=1, max=100_000, help="Timed camera frames."),
    lidar_sweeps: int = typer.Option(20, "--lidar-sweeps", min=1, max=100_000, help="Timed LiDAR sweeps (Embree)."),
    slow_sweeps: int = typer.Option(2, "--slow-sweeps", min=1, max=100_000, help="Timed LiDAR sweeps without Embree."),
    quick: bool = typer.Option(False, "--quick", help="Fewer timed renders."),
    out: Path | None = bench_out_option("synth.json"),
    publish: bool = publish_option(),
) -> None:
    """Ground-truth renderer speed: camera frames/s and LiDAR sweeps/s with and without Embree."""
    from sim.bench.synth import run_synth_bench

    dest = bench_output("synth.json", out, publish)

    if quick:
        camera_frames, lidar_sweeps, slow_sweeps = min(camera_frames, 10), min(lidar_sweeps, 5), 1
    with user_errors():
        from sim.synth import get_preset

        get_preset(town)
        res = run_synth_bench(town=town, width=width, height=height, beams=beams, azimuth=azimuth, camera_frames=camera_frames,
                              lidar_sweeps=lidar_sweeps, slow_sweeps=slow_sweeps, out=dest.path, echo=lambda m: console.log(m))
    tab = Table(title=f"synth renderer on the {town} town ({res['static_faces']} static triangles, {res['machine']['cpu_count']} CPUs)")
    tab.add_column("sensor")
    tab.add_column("setting")
    tab.add_column("rate", justify="right")
    tab.add_column("ms each", justify="right")
    for key in ("camera", "camera_supersample3"):
        c = res[key]
        tab.add_row("camera RGB+depth", f"{c['width']}x{c['height']}, supersample {c['supersample']} (pyrender EGL)",
                    f"{c['frames_per_s']} frames/s", f"{c['ms_per_frame']}")
    for eng in ("embree", "triangle"):
        if eng in res["lidar"]:
            li = res["lidar"][eng]
            note = f" (timed on {li['timed_rays_per_sweep']} rays, scaled)" if li["extrapolated"] else ""
            tab.add_row(f"LiDAR ({eng})", f"{beams}x{azimuth}, {li['mean_points']} pts{note}", f"{li['sweeps_per_s']} sweeps/s",
                        f"{li['ms_per_sweep']}")
    console.print(tab)
    console.print(json.dumps({k: res[k] for k in ("scene_build_s", "static_town_build_s")}))
    dest.publish()
    console.print(dest.wrote(), markup=False, highlight=False)
