"""The end-to-end demo behind ``loopdrive demo`` (and ``make demo``).

On the built-in ``small`` synthetic town it runs the main job of loopdrive and writes a browsable
report folder:

1. **ground truth**: synthesise the town and an ego drive into a drive log (camera RGB + depth,
   LiDAR, exact tracks, lane map) -> ``log/``, ``bev.png``, ``preview.mp4``;
2. **closed loop**: run a set of library scenarios (cut-ins, hard braking, a stopped car, a
   pedestrian, an unprotected turn, a what-if with an actor removed) for two planners through the
   batch runner -> ``leaderboard/`` (per-planner ``results.parquet``, ``report.html``,
   ``leaderboard.md``);
3. **sensors in the loop**: one episode driven by ``pdm_closed`` with camera, LiDAR and BEV
   observations rendered every step from where the ego really is -> ``episode.mp4`` and
   ``episode.png``;
4. optionally (``recon=True``) **neural scene**: train the reconstructor on the log (preset
   ``quick``, its 9-minute cap), evaluate it against mesh truth, and drive the logged route on
   neural sensors -> ``bundle/``, ``eval/`` (``eval_volume.json``, ``contact_sheet_volume.png``),
   ``episode_neural.mp4``;
5. ``index.html`` tying it together (the neural results as a table, the video and the contact sheet).

Everything here calls the same library functions as the CLI; nothing is demo-only logic except
the choice of inputs. The arguments (town preset, seed, frames, planners, scenario files) are
checked before the folder is made, and a demo that fails removes the folder it created (an existing
``out`` is overwritten, as documented).
"""

from __future__ import annotations

import html
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import ScenarioError
from sim.fsutil import atomic_write_text

__all__ = ["DEMO_PLANNERS", "DEMO_SCENARIOS", "DemoResult", "recon_rows", "run_demo"]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
#: library scenarios the demo runs (file stems under scenarios/)
DEMO_SCENARIOS = (
    "cut_in_left",
    "lead_brake_hard",
    "stopped_vehicle",
    "pedestrian_crossing",
    "unprotected_left_turn",
    "whatif_lead_removed",
)
DEMO_PLANNERS = ("idm", "pdm_closed")
VIDEO_SCENARIO = "cut_in_left"

Progress = Callable[[str], None]
#: ``(step, total)`` after each training iteration of the neural scene
TrainProgress = Callable[[int, int], None]


@dataclass
class DemoResult:
    """Paths written by :func:`run_demo` and the headline numbers."""

    out: Path
    files: dict[str, Path] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    recon: dict[str, Any] = field(default_factory=dict)


def write_log_overview(log_dir: Path, out: Path, progress: Callable[[int, int], None] | None = None) -> tuple[Path, Path]:
    """``bev.png`` (lanes, actors mid-log, ego path) and ``preview.mp4`` (camera with LiDAR beside a
    BEV panel) of a drive log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.log import read_log
    from sim.viz import plot_bev, save_figure_atomic, write_preview_video

    dl = read_log(log_dir)
    t_mid = int(dl.ego.t_us[len(dl.ego.t_us) // 2])
    fig, ax = plt.subplots(figsize=(9, 9))
    plot_bev(dl.map, dl.tracks, dl.ego, t_mid, ax=ax, title=f"{dl.name}: lanes, actors at t = {t_mid / 1e6:.1f} s, ego path")
    bev = save_figure_atomic(fig, out / "bev.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    mp4 = write_preview_video(log_dir, out / "preview.mp4", progress=progress)
    return Path(bev), Path(mp4)


def sensor_episode_video(
    scenario: Path, out_mp4: Path, *, planner: str = "pdm_closed", renderer: Any = None, title: str = "",
    kinds: tuple[str, ...] = ("camera", "lidar", "bev"), max_steps: int | None = None,
) -> tuple[Path, Path, dict[str, Any]]:
    """Drive ``scenario`` closed loop with ``planner`` while rendering camera + LiDAR (``renderer``,
    default the mesh ground truth of the scenario's town) and the BEV every step; write the episode
    video and a still (the middle frame) as PNG. Returns (mp4, png, summary)."""
    from PIL import Image

    from sim import engine
    from sim.batch import drive_episode
    from sim.metrics import compute_metrics
    from sim.scenario import load_scenario
    from sim.sensors import SensorRig, default_rig
    from sim.viz import episode_frame, write_episode_video

    spec = load_scenario(scenario)
    rig = default_rig()
    if "lidar" not in kinds:
        rig = SensorRig(rig.cameras, None)
    scene = engine.load_scene(spec)
    own = renderer is None
    if own:
        from sim.render.mesh import MeshRenderer

        renderer = MeshRenderer(scene)
    try:
        res = drive_episode(
            spec, planner, 0, rig=rig, compiled=engine.compile_scenario(spec, scene), renderer=renderer,
            observation=list(kinds), record_observations=True, extra_kinds=kinds, max_steps=max_steps,
        )  # fmt: skip
    finally:
        if own:
            renderer.close()
    if res.record is None:
        raise RuntimeError(f"the demo episode failed: {res.error}")
    speeds = np.asarray(res.record.ego_speed)
    write_episode_video(res.observations, out_mp4, dt_s=spec.dt_s, speeds=speeds, title=title or f"{spec.name} / {planner}")
    k = len(res.observations) // 2
    png = out_mp4.with_suffix(".png")
    Image.fromarray(episode_frame(res.observations[k], [title or f"{spec.name} / {planner}", f"t = {k * spec.dt_s:.1f} s"])).save(png)
    values, score = compute_metrics(res.record)
    summary = {"status": res.status, "termination": res.termination, "steps": res.steps, "score": float(score),
               "metrics": {m: float(v.value) for m, v in values.items()}}
    return out_mp4, png, summary


def run_demo(
    out: str | os.PathLike[str] = "out/demo",
    *,
    town: str = "small",
    seed: int = 0,
    frames: int | None = None,
    recon: bool = False,
    planners: tuple[str, ...] = DEMO_PLANNERS,
    scenarios: tuple[str, ...] = DEMO_SCENARIOS,
    progress: Progress | None = None,
    train_progress: TrainProgress | None = None,
) -> DemoResult:
    """Run the demo into ``out`` (see the module docstring). ``progress`` receives one line per
    stage; ``train_progress`` ``(step, total)`` after each training iteration of the neural scene."""
    say = progress or (lambda s: log.info(s))
    paths = _check_args(town, seed, frames, planners, scenarios)
    outp = Path(out)
    if outp.exists() and not outp.is_dir():
        raise ScenarioError("expected a folder for the demo, got a file", file=outp)
    created = not outp.exists()
    outp.mkdir(parents=True, exist_ok=True)
    try:
        return _run_stages(outp, town, seed, frames, recon, planners, paths, say, train_progress)
    except BaseException:
        if created:  # nothing half-written stays behind
            shutil.rmtree(outp, ignore_errors=True)
        raise


def _check_args(town: str, seed: int, frames: int | None, planners: tuple[str, ...], scenarios: tuple[str, ...]) -> list[Path]:
    """The demo's scenario files once every argument is known to be usable (ScenarioError /
    RegistryError otherwise), before anything is written."""
    from sim.planning import PLANNERS
    from sim.synth import get_preset

    get_preset(town)
    if seed < 0:
        raise ScenarioError(f"expected a non-negative seed, got {seed}", field="seed")
    if frames is not None and frames < 2:
        raise ScenarioError(f"expected at least 2 frames, got {frames}", field="frames")
    for p in planners:
        PLANNERS.get(p)
    paths = [ROOT / "scenarios" / f"{s}.yaml" for s in scenarios]
    for p in paths:
        if not p.is_file():
            raise ScenarioError("expected a library scenario file", file=p)
    return paths


def _run_stages(outp: Path, town: str, seed: int, frames: int | None, recon: bool, planners: tuple[str, ...], paths: list[Path],
                say: Progress, train_progress: TrainProgress | None = None) -> DemoResult:
    from sim.leaderboard import run_leaderboard
    from sim.report import write_report
    from sim.synth import write_synth_log

    res = DemoResult(outp)

    say(f"1/4 synthesising the {town} town (seed {seed}) into {outp / 'log'}")
    log_dir = write_synth_log(town, seed, frames, out=outp / "log", overwrite=True)
    res.files["log"] = Path(log_dir)
    res.files["bev"], res.files["preview"] = write_log_overview(Path(log_dir), outp)

    say(f"2/4 running {len(paths)} scenarios x {len(planners)} planners closed loop")
    lb = run_leaderboard(paths, list(planners), outp / "leaderboard", resume=False)
    res.files["leaderboard"] = outp / "leaderboard" / "leaderboard.md"
    for p in planners:
        write_report(outp / "leaderboard" / p)
        res.files[f"report_{p}"] = outp / "leaderboard" / p / "report.html"
    for row in getattr(lb, "rows", []):
        res.scores[str(row["planner"])] = float(row["score"])

    say("3/4 one episode with camera + LiDAR + BEV rendered every step (pdm_closed)")
    mp4, png, summary = sensor_episode_video(ROOT / "scenarios" / f"{VIDEO_SCENARIO}.yaml", outp / "episode.mp4")
    res.files["episode"], res.files["episode_png"] = mp4, png
    atomic_write_text(outp / "episode.json", json.dumps(summary, indent=1))

    if recon:
        say("4/4 training the neural scene (preset quick) and driving the episode on neural sensors")
        res.recon = _recon_stage(Path(log_dir), outp, say, train_progress)
        for k, name in (("bundle", "bundle"), ("eval", "eval/eval_volume.json"), ("contact_sheet", "eval/contact_sheet_volume.png"),
                        ("episode_neural", "episode_neural.mp4")):
            if (outp / name).exists():
                res.files[k] = outp / name
    else:
        say("4/4 neural scene skipped (pass --recon to train it; about 10 minutes)")

    _write_index(res, planners)
    say(f"done: open {outp / 'index.html'}")
    return res


def _recon_stage(log_dir: Path, outp: Path, say: Progress, train_progress: TrainProgress | None = None) -> dict[str, Any]:
    """Train the neural scene on the demo log, evaluate it against mesh truth, and drive the logged
    route closed loop on neural sensors. Imports the reconstructor lazily."""
    from sim.recon.evaluate import evaluate_bundle
    from sim.recon.run import train_bundle
    from sim.render.neural import NeuralRenderer

    bundle = outp / "bundle"
    info: dict[str, Any] = {"train": train_bundle(log_dir, bundle, preset="quick", overwrite=True, progress=train_progress)}
    say("   evaluating the bundle against mesh truth (held-out, lane-shifted, actor edits, LiDAR)")
    ev = evaluate_bundle(bundle, log_dir, outp / "eval")
    info["eval"] = {k: ev[k] for k in ("heldout", "lane_shift", "actor_removed", "actor_moved", "lidar") if k in ev}
    # the bundle's baked background surface (auto mode) renders camera + LiDAR at about 10 steps/s
    say("   driving the logged route for 6 s on the neural camera and LiDAR")
    renderer = NeuralRenderer(bundle=bundle, library=False)
    info["neural_mode"] = renderer.mode
    try:
        _, _, summary = sensor_episode_video(ROOT / "scenarios" / "logged_drive.yaml", outp / "episode_neural.mp4",
                                             renderer=renderer, title=f"logged_drive / pdm_closed / neural sensors ({renderer.mode})",
                                             kinds=("camera", "lidar", "bev"), max_steps=60)
    finally:
        renderer.close()
    info["episode_neural"] = summary
    return info


def _num(v: Any, fmt: str, unit: str = "") -> str:
    """``v`` formatted with ``fmt`` (and ``unit``), ``-`` when missing or not a number."""
    return f"{v:{fmt}}{unit}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def recon_rows(recon: dict[str, Any]) -> list[tuple[str, str]]:
    """The neural-scene results of a demo (:attr:`DemoResult.recon`) as (what, value) rows:
    training, held-out and novel-view PSNR (dB) / SSIM, LiDAR range error (m) and ray-drop
    accuracy, and the closed-loop episode on neural sensors."""
    tr, ev, ep = recon.get("train") or {}, recon.get("eval") or {}, recon.get("episode_neural") or {}
    rows = [("training (preset quick)", f"{tr.get('iterations', '-')} of {tr.get('configured_iterations', '-')} iterations in "
                                        f"{_num(tr.get('train_seconds'), '.0f', ' s')}")]
    h = ev.get("heldout") or {}
    rows.append(("held-out frames: PSNR / SSIM", f"{_num(h.get('psnr'), '.2f', ' dB')} / {_num(h.get('ssim'), '.3f')}"))
    if "skipped" in (ev.get("lane_shift") or {}):
        rows.append(("ego shifted sideways: PSNR", f"skipped ({ev['lane_shift']['skipped']})"))
    for k, v in ((ev.get("lane_shift") or {}).get("psnr") or {}).items():
        rows.append((f"ego shifted {k.removesuffix('m')} m sideways: PSNR", _num(v, ".2f", " dB")))
    for k in ("actor_removed", "actor_moved"):
        e = ev.get(k) or {}
        rows.append((f"{k.replace('_', ' ')}: PSNR", _num(e.get("psnr"), ".2f", " dB") if "skipped" not in e else f"skipped ({e['skipped']})"))
    li = ev.get("lidar") or {}
    if li:
        rows.append(("LiDAR: median |range error| / ray-drop accuracy",
                     f"{_num(li.get('median_abs_range_err_m'), '.3f', ' m')} / {_num(li.get('ray_drop_accuracy'), '.3f')}"))
    if ep:
        rows.append((f"closed loop on neural sensors ({recon.get('neural_mode', '?')} mode)",
                     f"{ep.get('termination', '-')} after {ep.get('steps', '-')} steps, score {_num(ep.get('score'), '.3f')}"))
    return rows


def _recon_html(recon: dict[str, Any], rel: dict[str, str]) -> str:
    """Section 4 of index.html: the results table, the neural episode video and the contact sheet."""
    e = html.escape
    table = "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in recon_rows(recon))
    parts = [f"<table>{table}</table>"]
    if "episode_neural" in rel:
        parts.append(f'<p>The logged route driven by pdm_closed on the neural camera and LiDAR '
                     f'(<a href="{e(rel["episode_neural"])}">episode_neural.mp4</a>):</p>'
                     f'<video src="{e(rel["episode_neural"])}" controls loop></video>')
    if "contact_sheet" in rel:
        parts.append(f'<p>Contact sheet (<a href="{e(rel["contact_sheet"])}">full size</a>): truth | neural render | error x4, '
                     f"held-out frames, then the ego shifted 2 m sideways against mesh truth.</p>"
                     f'<img src="{e(rel["contact_sheet"])}" alt="contact sheet: truth, neural render, error">')
    links = [f'<a href="{e(rel[k])}">{e(label)}</a>' for k, label in (("eval", "all scores (JSON)"), ("bundle", "the scene bundle")) if k in rel]
    if links:
        parts.append(f"<p>{' · '.join(links)}</p>")
    return "\n".join(parts)


def _write_index(res: DemoResult, planners: tuple[str, ...]) -> None:
    out = res.out
    lb = (out / "leaderboard" / "leaderboard.md").read_text() if (out / "leaderboard" / "leaderboard.md").exists() else ""
    ep = json.loads((out / "episode.json").read_text()) if (out / "episode.json").exists() else {}
    rel = {k: os.path.relpath(v, out) for k, v in res.files.items()}
    reports = "".join(f'<li><a href="{html.escape(rel[f"report_{p}"])}">batch report: {html.escape(p)}</a></li>' for p in planners if f"report_{p}" in rel)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>loopdrive demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}} img,video{{max-width:100%}} pre{{background:#f4f4f4;padding:1em;overflow:auto}} table{{border-collapse:collapse}} td{{border:1px solid #ccc;padding:.3em .6em}}</style>
</head><body>
<h1>loopdrive demo</h1>
<h2>1. Ground truth: the synthetic town</h2>
<p>Drive log <code>{html.escape(rel.get("log", ""))}</code> (camera RGB + depth, LiDAR, exact tracks, lane map).</p>
<img src="{html.escape(rel.get("bev", ""))}" alt="bird's-eye view">
<video src="{html.escape(rel.get("preview", ""))}" controls loop></video>
<h2>2. Closed loop over the scenario library</h2>
<pre>{html.escape(lb)}</pre>
<ul>{reports}</ul>
<h2>3. Sensors rendered every step from where the ego really is</h2>
<p>{html.escape(VIDEO_SCENARIO)} driven by pdm_closed: camera (top), LiDAR range image (below), BEV (right).
Result: {html.escape(json.dumps({k: ep.get(k) for k in ("termination", "score", "steps")}))}</p>
<video src="{html.escape(rel.get("episode", ""))}" controls loop></video>
<h2>4. Neural scene</h2>
{_recon_html(res.recon, rel) if res.recon else "<p>skipped (<code>loopdrive demo --recon</code>)</p>"}
</body></html>
"""
    atomic_write_text(out / "index.html", page)
    res.files["index"] = out / "index.html"
