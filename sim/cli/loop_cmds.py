"""``loopdrive mine``, ``attack``, ``export``, ``loop`` and ``bench loop``: thin wrappers over
:mod:`sim.mining`, :mod:`sim.adversary`, :mod:`sim.export` and :mod:`sim.loop`."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING

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
    bc_weights_option,
    bench_app,
    check_planner,
    console,
    err_console,
    fail,
    horizon_seconds,
    out_dir,
    parse_int_list,
    split_names,
    user_errors,
)
from sim.cli._outputs import bench_out_option, bench_output, publish_option

if TYPE_CHECKING:
    from sim.loop_learner import Learner


def _progress(label: str) -> Progress:
    return Progress(
        TextColumn(f"[bold]{label}"), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=err_console,
    )  # fmt: skip


def _params(text: str | None, planner: str, option: str = "--planner-params") -> dict:
    """``--planner-params`` of the command's one planner, parsed and checked against its schema as
    ``run`` and ``leaderboard`` do (:mod:`sim.cli._planner_params`)."""
    from sim.cli._planner_params import parse_planner_params

    return parse_planner_params(None, [planner], json_text=text, json_option=option).get(planner, {})


def _check_scenario_file(path: Path) -> None:
    """``path`` is a readable, valid scenario file (not a folder, FIFO or device)."""
    from sim.errors import ScenarioError
    from sim.fsutil import check_input_file
    from sim.scenario import expand_paths

    expand_paths([check_input_file(path, error=ScenarioError, what="a scenario YAML file")])


@app.command("mine")
def mine_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder from `loopdrive run`."),
    out: Path = typer.Option(..., "--out", "-o", callback=out_dir, help="Folder for mined.json and the selected episode folders."),
    trigger: list[str] = typer.Option(["collision", "near_miss", "hard_brake", "offroad", "rarity"], "--trigger", "-t",
                                      help="Trigger name, optionally with parameters: near_miss:ttc_s=1.5 (repeatable)."),
) -> None:
    """Select the episodes where a trigger fires (collision, near miss, hard braking, off-road,
    planner-expert disagreement, rarity). Exit code 1 when every episode of the run errored."""
    from sim.mining import mine, parse_trigger
    from sim.report import errored_line, load_run_table

    with user_errors():
        for t in trigger:
            parse_trigger(t)
        df = load_run_table(run_dir)
        sel = mine(run_dir, out, trigger)
    n = df.height
    n_err = int((df["status"] != "ok").sum()) if n else 0
    tab = Table("episode", "triggers", "weight")
    for m in sel:
        tab.add_row(m.episode_id, ", ".join(m.triggers), f"{m.weight:.2f}")
    console.print(tab)
    console.print(f"{len(sel)} episodes selected of {errored_line(n, n_err)}; wrote {out / 'mined.json'}", highlight=False)
    if n and n_err == n:
        raise fail(f"every episode of {run_dir} errored ({n_err} of {n}): nothing to mine", code=1)


@app.command("attack")
def attack_cmd(
    planner: str = typer.Option(..., "--planner", "-p", help="Planner under test."),
    base: Path = typer.Option(..., "--base", "-b", help="Base scenario YAML (ego starting on a lane)."),
    method: str = typer.Option("cem", "--method", "-m", help="random | cem"),
    budget: int = typer.Option(200, "--budget", min=1, help="Episodes of the planner under test."),
    out: Path = typer.Option(..., "--out", "-o", callback=out_dir, help="Folder for summary.json and candidates.jsonl."),
    seed: int = typer.Option(0, "--seed", help="Seed of the search (the same seed gives the same candidates)."),
    template: str | None = typer.Option(None, "--template", help="lead_brake | cut_in | crossing | perturb (default: from the base)."),
    horizon: float | None = typer.Option(None, "--horizon", callback=horizon_seconds, help="Episode length of the generated cases, s."),
    planner_params: str | None = typer.Option(None, "--planner-params", help='JSON, e.g. {"weights": "models/bc.safetensors"}'),
    oracle: str = typer.Option("idm,pdm_closed", "--oracle", help="Privileged planner(s) that must solve each case, tried in order."),
    generated_dir: Path | None = typer.Option(
        None, "--generated-dir", callback=out_dir, help="Where the failing cases are written as scenario files (default: OUT/generated)."),
) -> None:
    """Search scenario edits for solvable failures of a planner; writes each as a scenario file.
    Exit code 1 when every episode of the search errored."""
    from sim.adversary import TEMPLATES, AttackConfig, attack
    from sim.adversary.search import METHODS

    check_planner(planner)
    for name in split_names(oracle, "--oracle"):
        check_planner(name, "--oracle")
    if method not in METHODS:
        raise typer.BadParameter(f"expected one of {', '.join(METHODS)}, got {method!r}", param_hint="--method")
    if template is not None and template not in TEMPLATES:
        raise typer.BadParameter(f"expected one of {', '.join(TEMPLATES.names())}, got {template!r}", param_hint="--template")
    cfg = AttackConfig(planner=planner, planner_params=_params(planner_params, planner), method=method, budget=budget, seed=seed,
                       template=template, horizon_s=horizon, oracle=oracle)  # fmt: skip
    with user_errors():
        _check_scenario_file(base)
    generated_dir = generated_dir if generated_dir is not None else out / "generated"
    with user_errors(), LazyProgress(lambda: _progress("attack"), f"{planner} / {method}", total=budget, info="") as prog:
        res = attack(base, cfg, out=out, generated_dir=generated_dir,
                     progress=lambda d, n, f: prog.update(completed=d, info=f"[red]{f} failures"))  # fmt: skip
    t = Table("episodes", "failures", "solvable failures", "distinct", "errored")
    for row in res.per_budget:
        t.add_row(str(row["episodes"]), str(row["failures"]), str(row["solvable_failures"]), str(row.get("distinct_failures", "")),
                  str(row.get("errored", "")))  # fmt: skip
    console.print(t)
    console.print(f"{res.n_solvable} solvable failures, {res.n_distinct} distinct (L-inf radius {cfg.dedupe_radius} in the unit cube); "
                  f"{res.n_failures - res.n_solvable} discarded as unsolvable; {res.n_errored} of {len(res.candidates)} episodes errored; "
                  f"files in {generated_dir}; summary {out / 'summary.json'}", highlight=False)  # fmt: skip
    if res.candidates and res.n_errored == len(res.candidates):
        raise fail(f"every episode of the search errored ({res.n_errored} of {len(res.candidates)}): no failure was looked for", code=1)


@app.command("export")
def export_cmd(
    out: Path = typer.Option(..., "--out", "-o", callback=out_dir, help="Folder for the training shards."),
    mined: list[Path] = typer.Option([], "--mined", help="mined.json folders from `loopdrive mine`."),
    scenarios: list[Path] = typer.Option([], "--scenarios", help="Scenario files/folders (e.g. generated cases)."),
    planner: str | None = typer.Option(None, "--planner", help="Planner driving --scenarios (default: each file's)."),
    planner_params: str | None = typer.Option(None, "--planner-params", help="JSON parameters of --planner."),
    kinds: str = typer.Option("bev,state", "--kinds", help="Stored observation kinds: bev,state,camera,lidar."),
    expert: str = typer.Option("pdm_closed", "--expert", help="Planner relabelling every step."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Cut episodes to this many steps."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Let the sb3 planner unpickle a stable-baselines3 .zip (can run code: only files you trust)."),
) -> None:
    """Export episodes to training shards (expert-relabelled, camera images anonymised)."""
    from sim.export import KINDS, export_episodes, items_from_files, items_from_mined
    from sim.mining import read_mined
    from sim.scenario import expand_paths, scenario_files

    if not mined and not scenarios:
        raise typer.BadParameter("nothing to export: give --mined and/or --scenarios", param_hint="--mined / --scenarios")
    kind_list = split_names(kinds, "--kinds")
    bad = [k for k in kind_list if k not in KINDS]
    if bad:
        raise typer.BadParameter(f"expected kinds among {', '.join(KINDS)}, got {', '.join(bad)}", param_hint="--kinds")
    check_planner(planner)
    check_planner(expert, "--expert")
    params = _params(planner_params, planner) if planner else None
    with user_errors():
        items = [it for m in mined for it in items_from_mined(read_mined(m))]
        if scenarios:
            expand_paths(scenarios)  # every file valid before the shard folder is made
            items += items_from_files(scenario_files(scenarios), planner=planner, planner_params=params)
        import dataclasses

        from sim.planning import with_opt_ins

        items = [dataclasses.replace(it, planner_params=with_opt_ins(it.planner, it.planner_params, trust_pickle=trust_pickle)) for it in items]
        with LazyProgress(lambda: _progress("export"), f"{len(items)} episodes", total=len(items), info="") as prog:
            shards = export_episodes(items, out, kinds=kind_list, expert=expert,
                                     max_steps=max_steps, progress=lambda d, n: prog.update(completed=d))  # fmt: skip
    console.print(f"wrote {len(shards)} shards and manifest.json to {out}", highlight=False)


@app.command("loop")
def loop_cmd(
    planner: str = typer.Option("bc_policy", "--planner", "-p", help="The learned planner the loop retrains (its trainer is found by name)."),
    scenarios: list[Path] = typer.Option([Path("scenarios")], "--scenarios", help="Nominal scenario files/folders."),
    rounds: int = typer.Option(3, "--rounds", min=1, help="Loop rounds; each mines failures, generates corner cases, exports them and retrains."),
    budget: int = typer.Option(60, "--budget", min=1, help="Attack episodes per round."),
    out: Path = typer.Option(Path("out/loop"), "--out", "-o", callback=out_dir, help="Loop folder (state.json, each round's runs, policies and report; resumable)."),
    method: str = typer.Option("cem", "--method", help="Search method of the corner-case generation: random | cem."),
    base: list[Path] = typer.Option([], "--base", help="Attack bases (default: up to 3 lane-start nominal files)."),
    horizon: float | None = typer.Option(6.0, "--horizon", callback=horizon_seconds, help="Episode length, s."),
    init_weights: str | None = typer.Option(None, "--init-weights", help="Round-0 policy: a weights file of the planner, `shipped` (the weights its "
                                            "trainer ships, e.g. agents/weights/bc_policy), or `scratch` (collect expert data and train round 0). "
                                            "Default: shipped when the trainer ships weights, scratch otherwise."),
    init_shards: list[Path] = typer.Option([], "--init-shards", help="Shard folders/files the --init-weights were trained on (e.g. out/bc-expert); "
                                          "aggregated into every retraining (repeatable)."),
    retrain: str = typer.Option("scratch", "--retrain", help="scratch | finetune (from the previous policy) | both (alternating candidates; needs --candidates >= 2)."),
    lr: float | None = typer.Option(None, "--lr", min=0.0, help="Adam learning rate of a from-scratch retraining (default: the trainer's, 1e-3)."),
    finetune_lr: float | None = typer.Option(None, "--finetune-lr", min=0.0, help="Learning rate of a fine-tuning (default --lr)."),
    finetune_epochs: int | None = typer.Option(None, "--finetune-epochs", min=1, help="Epochs of a fine-tuning (default --epochs)."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Samples per gradient step of a retraining (default: the trainer's, 64)."),
    heldout_method: str | None = typer.Option(None, "--heldout-method", help="Search method of the held-out set (default --method)."),
    heldout_seed: int = typer.Option(1000, "--heldout-seed", help="Search seed of the held-out set (the training side uses --seed)."),
    expert: str = typer.Option("pdm_closed", "--expert", help="Planner that labels every exported step (the one cloned)."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Passes over the shards per from-scratch retraining (default: the trainer's: bc 15, sensor-policy 12)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the training-side search and the retraining."),
    heldout_budget: int | None = typer.Option(None, "--heldout-budget", min=1, help="Attack episodes for the held-out set (default --budget)."),
    init_random: int = typer.Option(0, "--init-random", min=0, help="Round-0 expert episodes per base on uniform draws of its search space."),
    failure_weight: float = typer.Option(1.0, "--failure-weight", min=0.0, help="Training weight of exported generated-failure steps."),
    oracle: str = typer.Option("idm,pdm_closed", "--oracle", help="Solvability oracle(s), tried in order."),
    threads: int = typer.Option(1, "--threads", min=1, help="torch threads (the machine is shared)."),
    candidates: int = typer.Option(1, "--candidates", min=1, help="Policies trained per round; the best on a validation set (uniform draws + generated cases) is kept."),
    sensors: str | None = typer.Option(None, "--sensors", help="Sensors of every episode of the planner (evaluation, search, export): scenario (each file's "
                                       "scene.renderer), mesh, neural, box (analytic LiDAR). Default: the trainer's (sensor_policy: scenario)."),
) -> None:
    """Run (or resume) evaluate -> mine -> generate -> export -> retrain rounds; writes report.md/json.
    Exit code 1 when every evaluation episode errored."""
    from sim.loop import LoopConfig, all_errored, check_config, run_loop
    from sim.loop_learner import find_learner

    check_planner(planner)
    with user_errors():
        learner = find_learner(planner, sensors)  # a planner the loop can retrain (one line, exit 2, otherwise)
    w0 = _init_weights(init_weights, learner)
    st = learner.spec.settings
    cfg = LoopConfig(planner=planner, scenarios=tuple(str(s) for s in scenarios), bases=tuple(str(b) for b in base) or None,
                     rounds=rounds, budget=budget, method=method, horizon_s=horizon, expert=expert, seed=seed, sensors=sensors,
                     epochs=epochs if epochs is not None else st.epochs, lr=lr if lr is not None else st.lr,
                     batch_size=batch_size if batch_size is not None else st.batch_size,
                     init_weights=w0, init_shards=tuple(str(d) for d in init_shards), retrain=retrain, finetune_lr=finetune_lr, finetune_epochs=finetune_epochs,
                     heldout_budget=heldout_budget, heldout_method=heldout_method, heldout_seed=heldout_seed,
                     init_random=init_random, failure_weight=failure_weight, oracle=oracle, candidates=candidates)  # fmt: skip
    with user_errors():
        check_config(cfg)  # names, numbers and files before anything is made or trained
    if w0 is not None and not init_shards:
        err_console.print("[yellow]--init-weights without --init-shards: each retraining sees only the exported failures "
                          "(the policy may forget the nominal driving); pass the shards it was trained on.")  # fmt: skip
    import torch

    torch.set_num_threads(threads)
    with user_errors(), console.status("data loop") as status:
        rep = run_loop(cfg, out, progress=lambda s: status.update(f"data loop: {s}"))
    console.print((out / "report.md").read_text(encoding="utf-8"), markup=False, highlight=False)
    console.print(f"{len(rep['rounds'])} evaluations; wrote {out / 'report.md'}", highlight=False)
    n, n_err = all_errored(rep)
    if n and n_err == n:
        raise fail(f"every evaluation episode errored ({n_err} of {n}): the loop produced no result", code=1)


def _init_weights(value: str | None, learner: Learner) -> str | None:
    """The file ``--init-weights`` names for the loop's planner: ``shipped`` is its trainer's
    shipped weights (the default when there are any), ``scratch`` none, anything else a path that
    must load (:meth:`~sim.planning.training.Trainer.check_weights`, nothing executed);
    :class:`typer.BadParameter` otherwise, before any work starts."""
    import os

    from sim.errors import LoopdriveError

    impl = learner.impl
    shipped = impl.shipped_weights
    if value is None:
        value = "shipped" if shipped is not None and os.path.isfile(shipped) else "scratch"
    if value == "scratch":
        return None
    if value == "shipped" and shipped is None:
        raise typer.BadParameter(f"{learner.planner} has no shipped weights (a path or `scratch`)", param_hint="--init-weights")
    path = str(shipped) if value == "shipped" else value
    if not os.path.isfile(path):
        raise typer.BadParameter(f"no weights file {path} (a path, `shipped` or `scratch`)", param_hint="--init-weights")
    try:
        impl.check_weights(path)
    except LoopdriveError as exc:
        raise typer.BadParameter(exc.one_line(), param_hint="--init-weights") from None
    return path


def _search_row(planner: str, params: dict, b_file: str, seed: int, b: int, horizon: float, work: Path,
                totals: dict[str, dict[str, int]]) -> dict:  # fmt: skip
    """One row of the search comparison: random and CEM at budget ``b`` against ``planner`` from
    base ``b_file`` with ``seed`` (wall times in s); adds the counts to ``totals``."""
    import os

    from sim.adversary import AttackConfig, attack

    row: dict = {"planner": planner, "base": b_file, "seed": seed, "budget": b}
    if planner == "bc_policy":
        row["weights"] = params["weights"]
    for method in ("random", "cem"):
        t0 = time.perf_counter()
        with console.status(f"bench loop: {planner} {Path(b_file).stem} seed {seed} {method}"):
            res = attack(b_file, AttackConfig(planner=planner, planner_params=params, method=method, budget=b, seed=seed, horizon_s=horizon),
                         out=work / "search" / f"{planner}-{Path(b_file).stem}-s{seed}-{method}", generated_dir=work / "search" / "generated")  # fmt: skip
        row[method] = {"failures": res.n_failures, "solvable_failures": res.n_solvable, "distinct_failures": res.n_distinct,
                       "unsolvable_discarded": res.n_failures - res.n_solvable, "per_budget": res.per_budget,
                       "wall_s": time.perf_counter() - t0, "load_avg": os.getloadavg()}  # fmt: skip
        tot = totals.setdefault(planner, {"random": 0, "cem": 0, "random_distinct": 0, "cem_distinct": 0})
        tot[method] += res.n_solvable
        tot[f"{method}_distinct"] += res.n_distinct
    r, c = row["random"]["solvable_failures"], row["cem"]["solvable_failures"]
    rd, cd = row["random"]["distinct_failures"], row["cem"]["distinct_failures"]
    row["ratio_cem_over_random"] = (c / r) if r else (None if c == 0 else "inf")
    row["ratio_distinct"] = (cd / rd) if rd else (None if cd == 0 else "inf")
    return row


def _ratio(v: float | str | None) -> str:
    """A CEM/random ratio for a progress line: ``5.29x``, ``inf`` (random found none) or ``n/a``."""
    return f"{v:.2f}x" if isinstance(v, float | int) else ("n/a" if v is None else str(v))


def _search_totals(totals: dict[str, dict[str, int]]) -> dict[str, dict]:
    """Per planner: the summed counts and the CEM/random ratios (None when random found none)."""
    return {p: {**t, "ratio": (t["cem"] / t["random"]) if t["random"] else None,
                "ratio_distinct": (t["cem_distinct"] / t["random_distinct"]) if t["random_distinct"] else None}
            for p, t in totals.items()}  # fmt: skip


@bench_app.command("loop")
def bench_loop_cmd(
    out: Path | None = bench_out_option("loop.json", "-o"),
    publish: bool = publish_option(),
    quick: bool = typer.Option(False, "--quick", help="Small budgets and one loop round."),
    work: Path = typer.Option(Path("out/bench-loop"), "--work", callback=out_dir, help="Scratch folder for runs."),
    budget: int | None = typer.Option(None, "--budget", min=1, help="Attack budget per method, planner, base and seed."),
    skip_loop: bool = typer.Option(False, "--skip-loop", help="Only the search comparison."),
    base: list[str] = typer.Option(["scenarios/cut_in_left.yaml", "scenarios/jaywalker.yaml"], "--base", help="Attack bases of the search comparison."),
    planners: str = typer.Option("idm,bc_policy", "--planners", help="Planners of the search comparison."),
    seeds: str = typer.Option("7", "--seeds", help="Search seeds, comma-separated (each a full random-vs-CEM pair)."),
    bc_weights: Path | None = typer.Option(None, "--bc-weights", help="bc_policy weights for the search comparison (default: --work's loop round-0 weights)."),
    threads: int = typer.Option(1, "--threads", min=1, help="torch threads (the machine is shared)."),
) -> None:
    """Search comparison (random vs CEM at equal budget against idm and bc_policy: solvable and
    distinct failures, CEM/random ratio) and the data loop (held-out failure rate and nominal score
    per round); JSON to --out (rewritten after every comparison, so a long run can be watched)."""
    import os
    import sys

    from sim.fsutil import atomic_write_text
    from sim.loop import LoopConfig, check_config, run_loop

    seed_list = parse_int_list(seeds, "--seeds", minimum=0) or []
    if not seed_list:
        raise typer.BadParameter(f"expected comma-separated integers, got {seeds!r}", param_hint="--seeds")
    planner_list = split_names(planners, "--planners")
    for name in planner_list:
        check_planner(name, "--planners")
    if bc_weights is not None:
        bc_weights_option(str(bc_weights), option="--bc-weights")
    dest = bench_output("loop.json", out, publish)
    out = dest.path
    with user_errors():
        for b_file in base:
            _check_scenario_file(Path(b_file))
    import torch

    torch.set_num_threads(threads)
    b = budget or (40 if quick else 200)
    horizon = 6.0
    result: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "quick": quick, "budget": b,
                    "command": "loopdrive " + " ".join(sys.argv[1:]), "load_avg_start": os.getloadavg(), "search": [], "loop": None}  # fmt: skip

    def save() -> None:
        result["load_avg_end"] = os.getloadavg()
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(result, indent=1, default=str))

    with user_errors():
        cfg_loop = LoopConfig(scenarios=("scenarios/lead_brake_hard.yaml", "scenarios/cut_in_left.yaml", "scenarios/stopped_vehicle.yaml"),
                              bases=("scenarios/lead_brake_hard.yaml", "scenarios/cut_in_left.yaml"), rounds=1 if quick else 3,
                              budget=b // 2 if quick else b, horizon_s=horizon, epochs=15)  # fmt: skip
        loop_out = work / "loop"
        w0 = bc_weights or (loop_out / "init" / "bc.safetensors")
        if not skip_loop:
            check_config(cfg_loop)
            t0 = time.perf_counter()
            with console.status("bench loop: data loop") as status:
                rep = run_loop(cfg_loop, loop_out, progress=lambda s: status.update(f"bench loop: {s}"))
            result["loop"] = {"report": rep, "wall_s": time.perf_counter() - t0, "command": "loopdrive bench loop" + (" --quick" if quick else "")}
            save()
        totals: dict[str, dict[str, int]] = {}
        for planner in planner_list:
            if planner == "bc_policy" and not Path(w0).is_file():
                err_console.print(f"no bc_policy weights at {w0}; bc_policy skipped")
                continue
            params = {"weights": str(w0)} if planner == "bc_policy" else {}
            for b_file in base:
                for seed in seed_list:
                    row = _search_row(planner, params, b_file, seed, b, horizon, work, totals)
                    r, c = row["random"]["solvable_failures"], row["cem"]["solvable_failures"]
                    rd, cd = row["random"]["distinct_failures"], row["cem"]["distinct_failures"]
                    result["search"].append(row)
                    result["totals"] = _search_totals(totals)
                    save()
                    console.print(f"{planner} {Path(b_file).stem} seed {seed}: random {r} ({rd} distinct), cem {c} ({cd} distinct), "
                                  f"ratio {_ratio(row['ratio_cem_over_random'])} (distinct {_ratio(row['ratio_distinct'])})", highlight=False)  # fmt: skip
    save()
    dest.publish()
    console.print(dest.wrote(), markup=False, highlight=False)
