"""``loopdrive bench env``: closed-loop env throughput against highway-env."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from sim.cli._app import bench_app, console, out_file, user_errors


@bench_app.command("env")
def bench_env_cmd(
    out: Path = typer.Option(Path("benchmarks/results/env.json"), "--out", "-o", callback=out_file, help="Where to write the JSON result."),
    seconds: float = typer.Option(10.0, "--seconds", min=0.5, max=3600.0, help="Wall seconds per system (split into interleaved slices)."),
    rounds: int = typer.Option(5, "--rounds", min=1, max=1000, help="Interleaved rounds; figures are medians over them."),
    quick: bool = typer.Option(False, "--quick", help="2 s per system and B up to 64."),
) -> None:
    """Env steps/s and simulated s per wall s: loopdrive single and batched (B = 1, 16, 64, 256)
    against highway-env highway-v0, 20 vehicles, dt 0.1 s, measured in the same run."""
    from sim.bench.env import run_bench

    sizes = (1, 16, 64) if quick else (1, 16, 64, 256)
    with user_errors(), console.status("benchmarking ...") as status:
        res = run_bench(out, seconds=2.0 if quick else seconds, rounds=rounds, batch_sizes=sizes, progress=lambda m: status.update(f"benchmarking {m} ..."))
    tab = Table(title=f"env throughput ({res['vehicles']} vehicles, dt {res['dt_s']} s, {res['machine']['cpus']} CPUs; medians of {res['rounds']} interleaved slices)")
    for col in ("simulator", "steps/s", "sim s / wall s", "x highway-env"):
        tab.add_column(col, justify="right" if col != "simulator" else "left")
    hw = res["highway_env"]
    ref = hw.get("sim_s_per_wall_s") if hw.get("available") else None

    def ratio(v: float) -> str:
        return f"{v / ref:.1f}" if ref else "n/a"

    if hw.get("available"):
        tab.add_row(f"highway-env {hw.get('version', '')} highway-v0", f"{hw['steps_per_s']:.0f}", f"{hw['sim_s_per_wall_s']:.1f}", "1.0")
    else:
        tab.add_row("highway-env (unavailable)", "-", "-", "-")
    s = res["loopdrive_single"]
    tab.add_row("loopdrive single env", f"{s['steps_per_s']:.0f}", f"{s['sim_s_per_wall_s']:.1f}", ratio(s["sim_s_per_wall_s"]))
    for b in res["loopdrive_batched"]:
        tab.add_row(f"loopdrive batched B={b['num_envs']}", f"{b['world_steps_per_s']:.0f}", f"{b['sim_s_per_wall_s']:.1f}", ratio(b["sim_s_per_wall_s"]))
    console.print(tab)
    sb = res.get("sb3_ppo") or {}
    if sb.get("available"):
        a, d = sb["loopdrive_sb3_adapter"], sb["dummy_vec_env"]
        console.print(f"SB3 PPO env steps/s, B={sb['num_envs']}: batched adapter {a['train_steps_per_s']:.0f} vs DummyVecEnv {d['train_steps_per_s']:.0f} "
                      f"(rollouts only: {a['rollout_steps_per_s']:.0f} vs {d['rollout_steps_per_s']:.0f})", markup=False)
    if not hw.get("available"):
        console.print(f"highway-env unavailable ({hw.get('reason')}); install the bench extra: make bench-setup", markup=False)
    console.print(f"wrote {out}")
