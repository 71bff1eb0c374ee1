"""``loopdrive bench env``: closed-loop env throughput against highway-env and MetaDrive."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from sim.cli._app import bench_app, console, parse_int_list, split_names, user_errors
from sim.cli._outputs import BenchOutput, bench_out_option, bench_output, publish_option


def _python_option(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> Path | None:
    """An interpreter to run a simulator's bench process: an existing executable file."""
    if value is None or ctx.resilient_parsing:
        return value
    if not value.is_file() or not os.access(value, os.X_OK):
        raise typer.BadParameter(f"{value}: expected an executable Python interpreter (a file)")
    return value


def _table(res: dict[str, Any]) -> Table:
    """The rich table of the run: random-action rows, the threaded rows, then the labelled
    fixed-action rows."""
    tab = Table(title=f"env throughput ({res['vehicles']} vehicles, dt {res['dt_s']} s, {res['machine']['cpus']} CPUs, load {res['machine']['load_avg_1min_after']}; "
                      f"medians of {res['rounds']} interleaved slices, random actions, resets counted)")
    for col in ("system", "actions", "steps/s per world", "x highway-env", "x MetaDrive", "resets/1000", "reset ms"):
        tab.add_column(col, justify="left" if col in ("system", "actions") else "right")
    refs = {k: res[k].get("steps_per_s") if res[k].get("available") else None for k in ("highway_env", "metadrive")}

    def ratio(v: float, k: str) -> str:
        return f"{v / refs[k]:.1f}" if refs[k] else "n/a"

    for k, title in (("highway_env", "highway-env"), ("metadrive", "MetaDrive")):
        st = res[k]
        if st.get("available"):
            tab.add_row(f"{title} {st.get('version', '')}", "random", f"{st['steps_per_s']:.0f}", ratio(st["steps_per_s"], "highway_env"),
                        ratio(st["steps_per_s"], "metadrive"), f"{st['resets_per_1000_world_steps']:.1f}", f"{st['reset_ms']:.2f}")
        else:
            tab.add_row(f"{title} (unavailable)", "-", "-", "-", "-", "-", "-")
    rows = [res["loopdrive_single"], *res["loopdrive_batched"], *(res.get("loopdrive_threaded") or {}).get("rows", []), *res["fixed_action"]["rows"]]
    for f in rows:
        name = "loopdrive single" if f["num_envs"] == 1 else f"loopdrive vector B={f['num_envs']}"
        if f.get("threads", 1) > 1:
            name += f", {f['threads']} threads"
        tab.add_row(name, f["actions"], f"{f['steps_per_s']:.0f}", ratio(f["steps_per_s"], "highway_env"), ratio(f["steps_per_s"], "metadrive"),
                    f"{f['resets_per_1000_world_steps']:.1f}", f"{f['reset_ms']:.2f}")
    return tab


@bench_app.command("env")
def bench_env_cmd(
    out: Path | None = bench_out_option("env.json", "-o"),
    publish: bool = publish_option(),
    seconds: float = typer.Option(10.0, "--seconds", min=0.1, max=3600.0, help="Wall seconds per system (split into interleaved slices)."),
    rounds: int = typer.Option(5, "--rounds", min=1, max=1000, help="Interleaved rounds; figures are medians over them."),
    batch_sizes: str = typer.Option("16,64,256", "--batch-sizes", help="B of the vector env rows, comma-separated."),
    threads: str = typer.Option("2", "--threads", help="Also the largest B with the engine step shared among this many threads (comma-separated; 1 = none): a labelled row, not per core."),
    fixed: bool = typer.Option(True, "--fixed/--no-fixed", help="Also the labelled fixed-action rows (the same action in every world)."),
    sb3: bool = typer.Option(True, "--sb3/--no-sb3", help="Also the SB3 PPO row (dev extra)."),
    simulators: str = typer.Option("highway_env,metadrive,loopdrive", "--simulators", help="Which to measure (loopdrive always): highway_env, metadrive, loopdrive."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**31 - 1, help="Seed of the random action pools."),
    highway_env_python: Path | None = typer.Option(None, "--highway-env-python", callback=_python_option, help="Python that runs highway-env (default: this one)."),
    metadrive_python: Path | None = typer.Option(None, "--metadrive-python", callback=_python_option, help="Python that runs MetaDrive (default: .venv-metadrive from make bench-setup, else this one)."),
    quick: bool = typer.Option(False, "--quick", help="2 s per system and B up to 64."),
) -> None:
    """Per-world env steps/s with random per-world actions, resets counted: loopdrive single and
    vector env (B = 16, 64, 256) against highway-env highway-v0 and MetaDrive (when installed),
    about 20 vehicles, 0.1 s per step, measured in the same interleaved run."""
    from sim.bench.env import SIMULATORS, run_bench

    sims = tuple(split_names(simulators, "--simulators"))
    if set(sims) - set(SIMULATORS):
        raise typer.BadParameter(f"expected names among {', '.join(SIMULATORS)}, got {simulators!r}", param_hint="--simulators")
    sizes = tuple(parse_int_list(batch_sizes, "--batch-sizes", minimum=1) or ())
    if not sizes or max(sizes) > 4096:
        raise typer.BadParameter(f"expected 1 to 4096 worlds per size, got {batch_sizes!r}", param_hint="--batch-sizes")
    thr = tuple(parse_int_list(threads, "--threads", minimum=1) or ())
    if any(x > 64 for x in thr):
        raise typer.BadParameter(f"expected 1 to 64 threads, got {threads!r}", param_hint="--threads")
    if quick:
        sizes, seconds = tuple(b for b in sizes if b <= 64) or (16,), 2.0
    dest = bench_output("env.json", out, publish)
    pythons = {"highway_env": str(highway_env_python) if highway_env_python else None, "metadrive": str(metadrive_python) if metadrive_python else None}
    with user_errors(), console.status("benchmarking ...") as status:
        res = run_bench(dest.path, seconds=seconds, rounds=rounds, batch_sizes=sizes, threads=thr, fixed=fixed, seed=seed, sb3=sb3, simulators=sims, pythons=pythons,
                        progress=lambda m: status.update(f"benchmarking {m} ..."))
    console.print(_table(res))
    sb = res.get("sb3_ppo") or {}
    if sb.get("available"):
        a, d = sb["loopdrive_sb3_adapter"], sb["dummy_vec_env"]
        console.print(f"SB3 PPO env steps/s, B={sb['num_envs']}: batched adapter {a['train_steps_per_s']:.0f} vs DummyVecEnv {d['train_steps_per_s']:.0f} "
                      f"(rollouts only: {a['rollout_steps_per_s']:.0f} vs {d['rollout_steps_per_s']:.0f})", markup=False)
    for k in ("highway_env", "metadrive"):
        if not res[k].get("available") and res[k].get("reason") != "not requested":
            console.print(f"{k} unavailable ({res[k].get('reason')}); make bench-setup installs it", markup=False)
    dest.publish()
    md = BenchOutput(dest.path.with_suffix(".md"), dest.published.with_suffix(".md") if dest.published else None)
    md.publish()
    console.print(dest.wrote() + f" (markdown table: {md.published or md.path})", markup=False, highlight=False)


@bench_app.command("neighbours")
def bench_neighbours_cmd(
    out: Path | None = bench_out_option("neighbours.json", "-o"),
    publish: bool = publish_option(),
    sizes: str = typer.Option("20,64,160,320", "--sizes", help="Actors per world, comma-separated."),
    worlds: int = typer.Option(16, "--worlds", min=1, max=1024, help="Worlds per size."),
    seconds: float = typer.Option(4.0, "--seconds", min=0.1, max=3600.0, help="Process seconds per size and way."),
    rounds: int = typer.Option(3, "--rounds", min=1, max=100, help="Interleaved rounds; figures are medians over them."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**31 - 1, help="Seed of the worlds and actions."),
) -> None:
    """How the car-following neighbour search scales with the actors in a world: microseconds per
    leader query over every actor and over the per-world grid (checked to give the same bits), and
    the vector env's world-steps/s at each size."""
    from sim.bench.neighbours import run_neighbours_bench

    ns = tuple(parse_int_list(sizes, "--sizes", minimum=2) or ())
    if not ns or max(ns) > 4096:
        raise typer.BadParameter(f"expected 2 to 4096 actors per size, got {sizes!r}", param_hint="--sizes")
    dest = bench_output("neighbours.json", out, publish)
    with user_errors(), console.status("benchmarking ...") as status:
        res = run_neighbours_bench(dest.path, sizes=ns, worlds=worlds, seconds=seconds, rounds=rounds, seed=seed, progress=lambda m: status.update(f"benchmarking {m} ..."))
    tab = Table(title=f"neighbour search ({res['worlds']} worlds, {res['machine']['cpu_count']} CPUs, load {(res['machine']['load_average'] or ['n/a'])[0]}; process time, medians of {res['rounds']} rounds)")
    for col in ("actors", "us/query every actor", "us/query grid", "grid speedup", "same answer", "engine grid", "vector env world-steps/s"):
        tab.add_column(col, justify="right")
    for r in res["rows"]:
        tab.add_row(str(r["actors"]), f"{r['us_per_query_every_actor']:.3f}", f"{r['us_per_query_grid']:.3f}", f"{r['grid_speedup']:.2f}",
                    "yes" if r["same_answer"] else "NO", "yes" if r["engine_uses_grid"] else "no", f"{r['vector_env_world_steps_per_s']:,}")
    console.print(tab)
    dest.publish()
    console.print(dest.wrote(), markup=False, highlight=False)
    if not all(r["same_answer"] for r in res["rows"]):
        raise typer.Exit(1)
