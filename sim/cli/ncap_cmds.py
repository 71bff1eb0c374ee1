"""``loopdrive ncap``: NeuroNCAP's safety protocol (stationary, frontal and side collision scenarios,
NeuroNCAP's score) in loopdrive's own closed loop, on a reconstructed log (:mod:`sim.ncap`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from sim.cli._app import (
    LazyProgress,
    app,
    check_planner,
    console,
    err_console,
    fail,
    out_dir,
    split_names,
    user_errors,
)
from sim.cli._group import one_line


def _progress() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.fields[phase]}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("[red]{task.fields[failed]} errored"), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), console=err_console, transient=False)  # fmt: skip


def _f(v: Any, pct: bool = False) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f} %" if pct else f"{v:.3f}"


@app.command("ncap")
def ncap_cmd(
    bundle: Path = typer.Argument(..., help="Scene bundle of the log (made by `loopdrive recon`)."),
    log: Path = typer.Option(..., "--log", help="The drive log the bundle was reconstructed from (synthetic or imported)."),
    planner: str = typer.Option(..., "--planner", "-p", help="Planner under test (registry name, see `loopdrive planners`)."),
    out: Path = typer.Option(..., "--out", "-o", callback=out_dir, help="Run folder (scenarios/, run/, reference/, results, report)."),
    runs: int = typer.Option(100, "--runs", min=1, max=1000, help="Random permutations per scenario type."),
    sensors: str = typer.Option("neural", "--sensors", help="Sensor backend of camera/LiDAR planners: neural (the bundle) or mesh (a synthetic log's exact meshes)."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1, help="Seed of the permutations."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, max=256, help="Episodes in parallel."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out (same bundle, log, planner, runs, sensors, seed)."),
    types: str = typer.Option("stationary,frontal,side", "--types", help="Comma-separated scenario types to run (a subset for a quick look)."),
    planner_param: list[str] = typer.Option([], "--planner-param", help="KEY=VALUE planner parameter written into every permutation's file "
                                            "(repeatable; e.g. weights=models/x.safetensors), checked like a scenario file's."),
) -> None:
    """Run NeuroNCAP's protocol: stationary, frontal and side collision scenarios built from LOG, RUNS random
    permutations of each (scenario files under OUT/scenarios, each replayable with `loopdrive run`), driven by the
    planner and by a no-action reference; NeuroNCAP's score (5 without a collision, else 4 * max(0, 1 - v_i / v_r))
    and the collision rate per type and averaged, with a report.

    Exit code 1 when every permutation errored."""
    from sim.ncap.run import SENSORS, NcapConfig, run_ncap

    if sensors not in SENSORS:
        raise typer.BadParameter(f"expected {' or '.join(SENSORS)}, got {sensors!r}", param_hint="--sensors")
    check_planner(planner)
    from sim.ncap.scenarios import NCAP_TYPES

    type_list = tuple(split_names(types, "--types"))
    if any(t not in NCAP_TYPES for t in type_list) or len(set(type_list)) != len(type_list):
        raise typer.BadParameter(f"expected distinct types of {', '.join(NCAP_TYPES)}, got {types!r}", param_hint="--types")
    from sim.cli._planner_params import parse_planner_params

    params = parse_planner_params(planner_param, [planner]).get(planner, {})
    cfg = NcapConfig(bundle=bundle, log=log, planner=planner, runs=runs, sensors=sensors, seed=seed, workers=workers,
                     types=tuple(t for t in NCAP_TYPES if t in type_list), planner_params=params)
    with user_errors(), LazyProgress(_progress, "ncap", failed=0, phase="") as bar:

        def cb(phase: str, done: int, failed: int, total: int) -> None:
            bar.update(completed=done, total=total, failed=failed, phase=phase)

        s = run_ncap(cfg, out, resume=resume, progress=cb)
    tab = Table(title=f"NeuroNCAP: {planner} on {log.name} ({sensors} sensors, {runs} per type)")
    for c in ("type", "permutations", "errored", "collision rate", "NCAP score", "off-road ends", "score, off-road = 0"):
        tab.add_column(c, justify="left" if c == "type" else "right")
    for k, v in [*s.summary["types"].items(), ("average", s.summary["overall"])]:
        tab.add_row(k, str(v["permutations"]), str(v["errored"]), _f(v["collision_rate"], pct=True), _f(v["score"]),
                    _f(v.get("offroad_rate"), pct=True), _f(v.get("score_offroad_as_0")))  # fmt: skip
    console.print(tab)
    console.print(f"{s.permutations} permutations ({s.ran} episodes run, {s.skipped} already done, {s.errored} errored) "
                  f"in {s.wall_s:.1f} s -> {s.files['report_html']}", soft_wrap=True, highlight=False)  # fmt: skip
    for eid, err in s.errors[:10]:
        err_console.print(Text.assemble(("errored", "red"), f" {eid}: {one_line(err)}"), highlight=False, soft_wrap=True)
    if s.permutations and s.errored == s.permutations:
        raise fail(f"every permutation errored ({s.errored} of {s.permutations}); nothing was scored", code=1)
