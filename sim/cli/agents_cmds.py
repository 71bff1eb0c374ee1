"""``loopdrive planners``, ``loopdrive leaderboard``, ``loopdrive train bc``, ``loopdrive train ppo``
and ``loopdrive convert-sb3``: thin wrappers over :mod:`sim.leaderboard`, :mod:`sim.collect` and the
trainers of :data:`sim.planning.training.TRAINERS` (``bc``, ``ppo``), found by name like planners."""

from __future__ import annotations

import re
import shlex
import sys
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
from rich.text import Text

from sim.cli._app import (
    LoopdriveGroup,
    app,
    bc_weights_option,
    check_planner,
    console,
    err_console,
    fail,
    horizon_seconds,
    out_dir,
    out_file,
    parse_int_list,
    split_names,
    user_errors,
)
from sim.cli._planner_params import PARAM_HELP, parse_planner_params

train_app = typer.Typer(help="Train learned planners (behaviour cloning, PPO).", no_args_is_help=True, cls=LoopdriveGroup)
app.add_typer(train_app, name="train")


def _progress(label: str) -> Progress:
    return Progress(
        TextColumn(f"[bold]{label}"), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=err_console, transient=False,
    )  # fmt: skip


@app.command("planners")
def planners_cmd() -> None:
    """List the registered planners with the observation kinds each needs."""
    from sim.planning import PLANNERS

    t = Table("planner", "observation kinds", "oracle", "description")
    for name in PLANNERS.names():
        cls = PLANNERS.get(name)
        try:
            kinds = ", ".join(cls().observation_spec().kinds)
        except Exception:
            kinds = "(depends on its params)"
        mod = sys.modules.get(cls.__module__)
        text = (mod.__doc__ if mod is not None and mod.__doc__ else cls.__doc__) or ""
        doc = plain_doc(" ".join(text.strip().split("\n\n")[0].split()), name)
        t.add_row(name, kinds, "yes" if getattr(cls, "requires_scenario", False) else "", Text(doc))
    console.print(t)


_ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")


def plain_doc(text: str, name: str | None = None) -> str:
    """A docstring paragraph as plain text: Sphinx roles as their target (``:class:`~a.B``` -> B),
    ````code```` and ``*emphasis*`` without their marks, and a leading ``name:`` (the planner
    column already says it) dropped."""
    text = _ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    text = re.sub(r"(?<![\w*])\*{1,2}([^*\s][^*]*?)\*{1,2}(?![\w*])", r"\1", text)
    if name and text.startswith(f"{name}:"):
        text = text[len(name) + 1 :].strip()
        text = text[:1].upper() + text[1:]
    return text


@app.command("leaderboard")
def leaderboard_cmd(
    paths: list[Path] = typer.Argument(..., help="Scenario files or folders."),
    planners: str = typer.Option("log_replay,idm,pdm_closed,lidar_stack,bc_policy", "--planners", "-p", help="Comma-separated planner names."),
    out: Path = typer.Option(Path("out/leaderboard"), "--out", "-o", callback=out_dir, help="Folder for the runs and the tables."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Episodes in parallel per planner."),
    resume: bool = typer.Option(False, "--resume", help="Continue interrupted runs in --out."),
    horizon: float | None = typer.Option(None, "--horizon", callback=horizon_seconds, help="Cut every episode to this many seconds (smoke runs)."),
    planner_param: list[str] | None = typer.Option(None, "--planner-param", metavar="[PLANNER.]KEY=VALUE", help=PARAM_HELP),
    planner_params: str | None = typer.Option(None, "--planner-params", help='JSON: planner -> its params, e.g. {"sb3": {"path": "models/ppo.safetensors"}} '
                                              "(--planner-param values apply over it)."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Let the sb3 planner unpickle a stable-baselines3 .zip (can run code: only files you trust)."),
    renderer: str | None = typer.Option(None, "--renderer", help="Sensor backend for camera/LiDAR planners: mesh, neural or composite (default: each scenario's scene.renderer)."),
    bundle: Path | None = typer.Option(None, "--bundle", help="Scene bundle of the scenarios' town, set as every scenario's scene.bundle (for --renderer neural/composite; "
                                       "inserted actors render from scene.actor_library or $LOOPDRIVE_ACTORS)."),
) -> None:
    """Run every planner over the scenarios and write leaderboard.md / leaderboard.html.

    A trained model: --planner-param bc_policy.weights=models/bc.safetensors. On neural LiDAR:
    --renderer neural --bundle bundles/ncap-small-s0 (LOOPDRIVE_ACTORS=out/ncap-actors).

    Exit code 1 when every episode of every planner errored."""
    from sim.leaderboard import leaderboard_episodes, run_leaderboard
    from sim.planning import with_opt_ins

    names = split_names(planners, "--planners")
    for name in names:
        check_planner(name, "--planners")
    prm = parse_planner_params(planner_param, names, json_text=planner_params)
    with user_errors():  # scenario and policy files, sensor backend and bundle checked before anything runs
        leaderboard_episodes(paths, renderer=renderer, bundle=bundle)
        prm = {p: with_opt_ins(p, prm.get(p), trust_pickle=trust_pickle) for p in names}
    with user_errors(), _progress("leaderboard") as prog:
        tasks = {p: prog.add_task(p, total=None, info="") for p in names}

        def cb(planner: str, done: int, failed: int, total: int) -> None:
            prog.update(tasks[planner], completed=done, total=total, info=f"[red]{failed} errored" if failed else "")

        res = run_leaderboard(paths, names, out, planner_params=prm, workers=workers, resume=resume, horizon_s=horizon, progress=cb,
                              renderer=renderer, bundle=bundle)  # fmt: skip
    console.print(res.markdown.read_text(encoding="utf-8"), markup=False, highlight=False)
    console.print(f"wrote {res.markdown} and {res.html}; the scored scenario list: {res.out / 'scenarios.json'}", highlight=False)
    for w in res.warnings:
        err_console.print(f"warning: scenario files changed during the run: {w} (scores are of the list read at the start)",
                          markup=False, highlight=False)  # fmt: skip
    n, n_err = sum(r["episodes"] for r in res.rows), sum(r["errored"] for r in res.rows)
    if n and n_err == n:
        raise fail(f"every episode errored ({n_err} of {n}, all planners); nothing was scored", code=1)


@train_app.command("bc")
def train_bc_cmd(
    episodes: Path = typer.Option(..., "--episodes", callback=out_dir, help="Folder of BC shards (*.npz); filled first when --scenarios is given."),
    out: Path = typer.Option(Path("models/bc.safetensors"), "--out", "-o", callback=out_file, help="Weights (.safetensors); the config goes to .json beside it."),
    scenarios: list[Path] = typer.Option([], "--scenarios", help="Collect expert episodes from these scenario files/folders first."),
    expert: str = typer.Option("pdm_closed", "--expert", help="Planner whose rollouts are cloned."),
    seeds: str | None = typer.Option(None, "--seeds", help="Comma-separated seeds for the collection (default: the scenarios')."),
    epochs: int = typer.Option(10, "--epochs", min=1, help="Passes over the shards per fit."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Samples per gradient step."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate."),
    seed: int = typer.Option(0, "--seed", help="Seed of the network's initialisation and the batch order."),
    dagger_rounds: int = typer.Option(0, "--dagger-rounds", min=0, help="DAgger rounds after the first fit: drive the policy on --scenarios, label its states with --expert, refit on everything."),
    dagger_seeds: str | None = typer.Option(None, "--dagger-seeds", help="Comma-separated seeds of the DAgger roll-outs (default: --seeds)."),
    init_weights: str | None = typer.Option(None, "--init-weights", help="Fine-tune from these weights (a .safetensors file, or `shipped` "
                                            "for agents/weights/bc_policy) instead of training from scratch; every DAgger round starts from them too."),
) -> None:
    """Behaviour cloning from the bev observation; saves weights, config and a loss-curve PNG."""
    from sim.collect import collect_dagger, collect_episodes
    from sim.planning.training import ImitationTrainer, TrainSettings, get_trainer

    trainer = get_trainer("bc", ImitationTrainer)
    seed_list = parse_int_list(seeds, "--seeds", minimum=0)
    d_seeds = parse_int_list(dagger_seeds, "--dagger-seeds", minimum=0) or seed_list
    if dagger_rounds and not scenarios:
        raise typer.BadParameter("--dagger-rounds needs --scenarios to drive the policy on", param_hint="--dagger-rounds")
    if not lr > 0:
        raise typer.BadParameter(f"expected a positive learning rate, got {lr:g}", param_hint="--lr")
    check_planner(expert, "--expert")
    init = bc_weights_option(init_weights)
    with user_errors():
        if scenarios:
            from sim.scenario import expand_paths

            expand_paths(scenarios)  # every file valid before the shard folder is made
        else:
            trainer.load_dataset([episodes])  # shards readable before anything is written
        if scenarios:
            with _progress("collect") as prog:
                t = prog.add_task(expert, total=None, info="")
                collect_episodes(scenarios, episodes, expert=expert, seeds=seed_list, progress=lambda d, n: prog.update(t, completed=d, total=n))
        cfg = TrainSettings(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
        for rnd in range(dagger_rounds + 1):
            if rnd > 0:
                with _progress(f"dagger {rnd}") as prog:
                    t = prog.add_task(f"{expert} labels", total=None, info="")
                    collect_dagger(scenarios, episodes, out, expert=expert, seeds=d_seeds, tag=f"dagger{rnd}", progress=lambda d, n, t=t, prog=prog: prog.update(t, completed=d, total=n))
            ds = trainer.load_dataset([episodes])
            with _progress("train bc" + (f" (round {rnd})" if dagger_rounds else "")) as prog:
                t = prog.add_task(f"{len(ds)} samples", total=epochs, info="")
                res = trainer.train(ds, out, cfg, init_weights=init,
                               progress=lambda e, n, a, b, t=t, prog=prog: prog.update(t, completed=e, info=f"train {a:.4f}  val {b:.4f}"))
    console.print(
        f"validation loss {res.initial_val_loss:.4f} (untrained) -> {min(res.val_loss):.4f} (best); "
        f"wrote {res.weights}, {res.config}" + (f", {res.plot}" if res.plot else ""),
        highlight=False,
    )


@train_app.command("sensor-policy")
def train_sensor_policy_cmd(
    scenarios: list[Path] = typer.Option(..., "--scenarios", help="Scenario files/folders to collect roll-outs on (and drive DAgger rounds on)."),
    episodes: Path = typer.Option(Path("out/sensor-policy-episodes"), "--episodes", callback=out_dir, help="Shard folder (kept: an interrupted run resumes)."),
    out: Path = typer.Option(Path("models/sensor_policy.safetensors"), "--out", "-o", callback=out_file, help="Weights (.safetensors); config + provenance go to .json beside it."),
    seeds: str | None = typer.Option(None, "--seeds", help="Comma-separated seeds of the expert roll-outs (default: the scenarios')."),
    sensors: str = typer.Option("scenario", "--sensors", help="LiDAR source: scenario (each file's scene.renderer), mesh, neural, or box (analytic, no scenery)."),
    dagger_rounds: int = typer.Option(0, "--dagger-rounds", min=0, help="DAgger rounds: the policy drives, pdm_closed labels, refit on everything."),
    dagger_seeds: str | None = typer.Option(None, "--dagger-seeds", help="Comma-separated seeds of the DAgger roll-outs (default: --seeds)."),
    epochs: int = typer.Option(12, "--epochs", min=1, help="Passes over the shards per fit."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Samples per gradient step."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate."),
    seed: int = typer.Option(0, "--seed", help="Seed of the network's initialisation and the batch order."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Stop every roll-out after this many steps."),
    ncap_log: list[Path] = typer.Option([], "--ncap-log", help="Also train on NeuroNCAP-style scenarios (stationary, frontal, side) built from this "
                                        "synthetic drive log (repeatable; use other towns than the evaluation's): written to EPISODES/ncap-scenarios/, "
                                        "driven in the expert roll-outs and every DAgger round."),
    ncap_runs: int = typer.Option(10, "--ncap-runs", min=1, max=1000, help="NCAP permutations per type and --ncap-log."),
    ncap_seed: int = typer.Option(1000, "--ncap-seed", min=0, help="Permutation seed of the NCAP training scenarios (keep it apart from the evaluation's `loopdrive ncap --seed`, 0 by default)."),
) -> None:
    """Train sensor_policy (LiDAR raster + route + ego speed -> waypoints) by imitation of pdm_closed on
    roll-outs with rendered sensors, then DAgger; the trainer is found by name (``sensor-policy``)."""
    from sim.planning.training import ClosedLoopTrainer, TrainSettings, get_trainer
    from sim.rollout import run_planner_episode

    if sensors not in ("scenario", "mesh", "neural", "composite", "box"):
        raise typer.BadParameter(f"expected scenario, mesh, neural, composite or box, got {sensors!r}", param_hint="--sensors")
    if not lr > 0:
        raise typer.BadParameter(f"expected a positive learning rate, got {lr:g}", param_hint="--lr")
    seed_list = parse_int_list(seeds, "--seeds", minimum=0)
    d_seeds = parse_int_list(dagger_seeds, "--dagger-seeds", minimum=0) or seed_list
    # the one command that reproduces the weights (recorded in their JSON), every option spelled out
    command = shlex.join([
        "loopdrive", "train", "sensor-policy", *[a for s in scenarios for a in ("--scenarios", str(s))],
        *(["--seeds", seeds] if seeds else []), "--sensors", sensors, "--dagger-rounds", str(dagger_rounds),
        *(["--dagger-seeds", dagger_seeds] if dagger_seeds else []), "--epochs", str(epochs), "--batch-size", str(batch_size),
        "--lr", f"{lr:g}", "--seed", str(seed), *(["--max-steps", str(max_steps)] if max_steps else []),
        *[a for lg in ncap_log for a in ("--ncap-log", str(lg))], *(["--ncap-runs", str(ncap_runs), "--ncap-seed", str(ncap_seed)] if ncap_log else []),
        "--episodes", str(episodes), "--out", str(out),
    ])  # fmt: skip
    with user_errors():
        trainer = get_trainer("sensor-policy", ClosedLoopTrainer)
        from sim.scenario import expand_paths

        expand_paths(scenarios)  # every file valid before the shard folder is made
        extra: list[Path] = []
        if ncap_log:
            from sim.ncap.training import ncap_training_scenarios, parse_ncap_logs

            logs = parse_ncap_logs(ncap_log)
            extra = ncap_training_scenarios(logs, episodes / "ncap-scenarios", runs=ncap_runs, seed=ncap_seed)
        with _progress("sensor-policy") as prog:
            tasks: dict[str, object] = {}

            def cb(stage: str, done: int, total: int, info: str) -> None:
                if stage not in tasks:
                    tasks[stage] = prog.add_task(stage, total=total, info="")
                prog.update(tasks[stage], completed=done, total=total, info=info)  # type: ignore[arg-type]

            res = trainer.train_closed_loop(
                scenarios, out, episodes, run_episode=run_planner_episode, seeds=seed_list, dagger_rounds=dagger_rounds, dagger_seeds=d_seeds, sensors=sensors,
                settings=TrainSettings(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed), max_steps=max_steps, progress=cb,
                command=command, **({"extra_scenarios": extra} if extra else {}),
            )  # fmt: skip
    console.print(
        f"validation loss {res.initial_val_loss:.4f} (untrained) -> {min(res.val_loss):.4f} (best); "
        f"wrote {res.weights}, {res.config}" + (f", {res.plot}" if res.plot else ""),
        highlight=False,
    )


@train_app.command("ppo")
def train_ppo_cmd(
    scenario: Path = typer.Option(..., "--scenario", help="Scenario YAML to train on."),
    steps: int = typer.Option(20_000, "--steps", min=1, max=100_000_000, help="Environment steps."),
    out: Path = typer.Option(Path("models/ppo.safetensors"), "--out", "-o", callback=out_file, help="Policy weights (.safetensors); the description goes to .json beside it."),
    seed: int = typer.Option(0, "--seed", help="Seed of the policy, the env resets and PPO's sampling."),
) -> None:
    """Train PPO (stable-baselines3) on the Gymnasium env with the state observation; use the result
    with the ``sb3`` planner (``params: {path: models/ppo.safetensors}``). No pickle is written."""
    from sim.errors import ScenarioError
    from sim.fsutil import check_input_file
    from sim.planning.training import RLTrainer, get_trainer
    from sim.scenario import expand_paths

    with user_errors():  # the scenario is a valid file before anything starts
        expand_paths([check_input_file(scenario, error=ScenarioError, what="a scenario YAML file")])
    with user_errors(), _progress("train ppo") as prog:
        t = prog.add_task(str(scenario), total=steps, info="")
        path = get_trainer("ppo", RLTrainer).train(scenario, steps, out, seed=seed, progress=lambda d, n: prog.update(t, completed=d))
    console.print(f"wrote {path}", highlight=False)


@app.command("convert-sb3")
def convert_sb3_cmd(
    zip_path: Path = typer.Argument(..., help="A stable-baselines3 PPO/A2C policy .zip."),
    out: Path = typer.Option(..., "--out", "-o", callback=out_file, help="Policy weights (.safetensors); the description goes to .json beside it."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Required: the zip is unpickled once (can run code: only files you trust)."),
    algo: str = typer.Option("PPO", "--algo", help="PPO or A2C."),
    observation: str = typer.Option("state", "--observation", help="Comma-separated observation kinds the policy was trained on."),
    action_units: str = typer.Option("normalized", "--action-units", help="normalized ([-1, 1]) or si (m/s^2, rad)."),
) -> None:
    """Re-export a stable-baselines3 zip as loopdrive's pickle-free policy format (.safetensors + .json)."""
    from sim.planning.training import RLTrainer, get_trainer

    kinds = [k.strip() for k in observation.split(",") if k.strip()]
    with user_errors():
        path = get_trainer("ppo", RLTrainer).import_policy(zip_path, out, trust_pickle=trust_pickle, algo=algo, observation=kinds, action_units=action_units)
    console.print(f"wrote {path} and {path.with_suffix('.json')}", highlight=False)
