"""``loopdrive bench env``: closed-loop env throughput against highway-env and MetaDrive, one run.

Every simulator steps about 20 vehicles besides the ego at 0.1 simulated seconds per env step,
rendering off, with **random actions** -- seeded, drawn up front per world (never in the timed
loop) -- and resets whenever an episode ends, as an RL loop does: the reset cost is inside the
figure and the resets are counted. Systems:

* loopdrive single env (``gymnasium.make``, ``state`` observation) and vector env
  (``gymnasium.make_vec(..., vectorization_mode="vector_entry_point")``) at B = 16, 64, 256
  (per-world steps per wall second = B x vector steps / s);
* the same with one **fixed action** in every world (a labelled second row only: all worlds then
  stay in lock-step, which flatters the batched env; kept to compare with earlier figures);
* highway-env ``highway-v0`` (the ``bench`` extra), :data:`sim.bench.env_worker.HIGHWAY_ENV_CONFIG`;
* MetaDrive 0.4.3 headless with respawn traffic (:data:`sim.bench.env_worker.METADRIVE_CONFIG`),
  run offline from a stub asset folder made in a temporary folder for the run (see
  :func:`sim.bench.env_worker.metadrive_stub`; MetaDrive's package folder is not touched);
* SB3 PPO environment steps per wall second (``sb3_ppo``, :mod:`sim.bench.env_sb3`).

A simulator that is not installed (or fails to start) is reported unavailable with the reason.

**Method.** One warm process per simulator (:mod:`sim.bench.env_worker`, each with its own
Python: ``--highway-env-python`` / ``--metadrive-python``); after an untimed warm-up, ``rounds``
rounds give every system a slice of ``seconds / rounds`` wall seconds in turn while the other
processes wait idle; a figure is the median over a system's slices (the best slice is reported
too). Reset time is timed separately after the rounds (median of single resets; for the vector
env, ``reset()`` of all B worlds). The machine's load average before and after is in the JSON.

The loopdrive world is the built-in crossroads (:func:`sim.world.crossroads_scene`): 20 IDM +
MOBIL cars on the approach lanes driving through a 4-way intersection (yielding at its conflict
points), the ego starting on its lane straight on.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import select
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sim.bench.env_report import FIXED_LABEL, THREADS_LABEL, env_table_markdown
from sim.bench.env_sb3 import bench_sb3_ppo
from sim.fsutil import atomic_write_text
from sim.spec import BehaviorSpec, InsertOp, ScenarioSpec, SpawnSpec

__all__ = ["FIXED_LABEL", "THREADS_LABEL", "bench_sb3_ppo", "bench_scenario", "env_table_markdown", "run_bench"]

log = logging.getLogger(__name__)

DT_S = 0.1
N_VEHICLES = 20
SCHEMA_VERSION = 2
#: every simulator the bench knows (``simulators`` picks some; loopdrive is always measured)
SIMULATORS = ("highway_env", "metadrive", "loopdrive")
_WORKER = Path(__file__).with_name("env_worker.py")


def bench_scenario(n_vehicles: int = N_VEHICLES, horizon_s: float = 40.0) -> tuple[ScenarioSpec, Any]:
    """The benchmark scenario: the crossroads with ``n_vehicles`` IDM/MOBIL cars (every fourth
    one MOBIL) spread over the eight approach lanes, 16 m apart, and the scene; ``horizon_s``
    seconds. The arms are 80 m long, longer when more than 24 cars need room."""
    from sim.map import LaneMap
    from sim.world import crossroads_scene

    rows = -(-n_vehicles // 8)
    arm = 80.0 + 16.0 * max(0, rows - 3)
    scene = crossroads_scene(arm=arm, actors=(), ego_lane="W_in_1", ego_s=10.0, ego_speed=8.0, duration_s=horizon_s + 1.0, dt_s=DT_S)
    lm = LaneMap.from_dict(scene.map)
    lanes = [ln for ln in lm.lane_ids if "_in_" in ln]
    rng = np.random.default_rng(0)
    ops = []
    for i in range(n_vehicles):
        ln = lanes[i % len(lanes)]
        row = i // len(lanes)
        s = 25.0 + 16.0 * row + float(rng.uniform(0.0, 3.0))
        succ = lm.lanes[ln].successors
        route = (ln, succ[int(rng.integers(len(succ)))])
        beh = "mobil" if i % 4 == 3 else "idm"
        ops.append(InsertOp(f"v{i}", "car", (4.5, 1.9, 1.5), SpawnSpec(lane=ln, s=s, speed=8.0), BehaviorSpec(beh, {"v0_jitter": 0.1}, route=route)))
    spec = ScenarioSpec(name="bench-crossroads", actors=tuple(ops), horizon_s=horizon_s, dt_s=DT_S, max_actors=n_vehicles)
    return spec, scene


class _Worker:
    """A warm simulator process speaking :mod:`sim.bench.env_worker`'s line protocol."""

    def __init__(self, simulator: str, python: str, config: dict[str, Any]) -> None:
        self.simulator = simulator
        self.python = python
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - the worker's stderr, closed by close()
        stderr = self._stderr
        arg = json.dumps({"simulator": simulator, "config": config})
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([python, str(_WORKER), arg], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)

    def reply(self, timeout_s: float = 600.0) -> dict[str, Any]:
        """The worker's next answer; a RuntimeError when it exits or says nothing for
        ``timeout_s`` seconds (it is then killed)."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"{self.simulator} worker did not answer within {timeout_s:g} s: {self._stderr_tail()}")
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise RuntimeError(f"{self.simulator} worker exited with code {self.proc.returncode}: {self._stderr_tail()}")
        out: dict[str, Any] = json.loads(line)
        return out

    def ask(self, **msg: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        return self.reply(timeout_s=600.0 + 10.0 * float(msg.get("seconds", 0.0)))

    def _stderr_tail(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        lines = [ln.strip() for ln in self._stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        return lines[-1][:300] if lines else "no message"

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


def _start(pythons: dict[str, str], config: dict[str, Any], say: Callable[[str], None]) -> tuple[dict[str, _Worker], dict[str, dict[str, Any]]]:
    """Start every simulator's process (in parallel: set-up is not timed) and collect what each
    says: its systems and info, or why it is unavailable."""
    workers: dict[str, _Worker] = {}
    status: dict[str, dict[str, Any]] = {}
    for name, py in pythons.items():
        say(f"starting {name}")
        workers[name] = _Worker(name, py, config)
    for name, w in list(workers.items()):
        try:
            ready = w.reply()
        except (RuntimeError, json.JSONDecodeError) as exc:
            ready = {"ok": False, "reason": str(exc)}
        if not ready.get("ok"):
            status[name] = {"available": False, "reason": ready.get("reason", "unknown"), "executable": w.python}
            w.close()
            del workers[name]
        else:
            status[name] = {"available": True, **ready["info"], "systems": ready["systems"]}
    return workers, status


def _measure(workers: dict[str, _Worker], status: dict[str, dict[str, Any]], seconds: float, rounds: int, reset_n: int, say: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Warm-up, interleaved rounds and reset timing of every system: raw slices per system."""
    order = [(sim_name, sys_name) for sim_name in workers for sys_name in status[sim_name]["systems"]]
    slice_s = seconds / max(1, rounds)
    raw: dict[str, dict[str, Any]] = {n: {"simulator": s, "slices": []} for s, n in order}
    for s, n in order:
        say(f"warm-up: {n}")
        workers[s].ask(cmd="run", system=n, seconds=min(1.0, max(0.2, slice_s / 2)))
    for k in range(rounds):
        for s, n in order:
            say(f"round {k + 1}/{rounds}: {n}")
            raw[n]["slices"].append(workers[s].ask(cmd="run", system=n, seconds=slice_s))
    for s, n in order:
        say(f"reset timing: {n}")
        b = status[s]["systems"][n]["num_envs"]
        raw[n]["reset_ms"] = workers[s].ask(cmd="resets", system=n, n=reset_n if b == 1 else max(2, reset_n // 4))["reset_ms"]
    return raw


def _figure(name: str, raw: dict[str, Any], desc: dict[str, Any]) -> dict[str, Any]:
    """Median / best per-world steps per wall second of a system's slices, resets counted."""
    sl = raw["slices"]
    rates = [x["world_steps"] / x["wall_s"] for x in sl]
    steps = sum(x["steps"] for x in sl)
    world_steps = sum(x["world_steps"] for x in sl)
    resets = sum(x["resets"] for x in sl)
    med = float(np.median(rates))
    b = int(desc["num_envs"])
    fixed = desc["actions"] == "fixed"
    return {
        "name": name,
        "num_envs": b,
        "actions": desc["actions"],
        "label": FIXED_LABEL if fixed else "random per-world actions (seeded, drawn up front), resets counted",
        "worlds_distinct_actions": desc["worlds_distinct_actions"],
        "threads": int(desc.get("threads", 1)),
        "steps_per_s": med,
        "steps_per_s_best": float(max(rates)),
        "sim_s_per_wall_s": med * DT_S,
        "env_steps": steps,
        "world_steps": world_steps,
        "resets": resets,
        "resets_per_1000_world_steps": 1000.0 * resets / max(1, world_steps),
        "reset_ms": float(np.median(raw["reset_ms"])),
        "reset_ms_per_world": float(np.median(raw["reset_ms"])) / b,
        "slices_steps_per_s": [round(r, 1) for r in rates],
    }


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _assemble(status: dict[str, dict[str, Any]], figs: dict[str, dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON: simulators' status and configuration, one row per system, and the ratios."""
    random_rows = [f for f in figs.values() if f["actions"] == "random"]
    single = figs.get("loopdrive_single")
    batched = sorted((f for f in random_rows if f["name"].startswith("loopdrive_B") and f["threads"] == 1), key=lambda f: f["num_envs"])
    threaded = sorted((f for f in random_rows if f["name"].startswith("loopdrive_B") and f["threads"] > 1), key=lambda f: f["threads"])
    fixed = [f for f in figs.values() if f["actions"] == "fixed"]
    res: dict[str, Any] = {"benchmark": "env", "schema_version": SCHEMA_VERSION, **meta}
    for sim_name in ("highway_env", "metadrive", "loopdrive"):
        st = dict(status.get(sim_name, {"available": False, "reason": "not requested"}))
        st.pop("systems", None)
        if sim_name in figs:
            st.update(figs[sim_name])
        res[sim_name] = st
    res["loopdrive_single"] = single
    res["loopdrive_batched"] = batched
    res["loopdrive_threaded"] = {"label": THREADS_LABEL, "rows": threaded}
    res["fixed_action"] = {"label": FIXED_LABEL, "rows": fixed}
    ratios: dict[str, float] = {}
    for ref in ("highway_env", "metadrive"):
        if ref in figs and single is not None:
            r = figs[ref]["steps_per_s"]
            ratios[f"single_vs_{ref}"] = single["steps_per_s"] / r
            if batched:
                ratios[f"batched_best_vs_{ref}"] = max(b["steps_per_s"] for b in batched) / r
            for b in batched:
                ratios[f"batched_B{b['num_envs']}_vs_{ref}"] = b["steps_per_s"] / r
    res["ratios"] = ratios
    res["random_vs_fixed"] = {f["name"]: figs[f["name"].removesuffix("_fixed")]["steps_per_s"] / f["steps_per_s"] for f in fixed if f["name"].removesuffix("_fixed") in figs}
    return res


def run_bench(
    out: str | os.PathLike[str],
    *,
    seconds: float = 10.0,
    batch_sizes: tuple[int, ...] = (16, 64, 256),
    threads: tuple[int, ...] = (2,),
    rounds: int = 5,
    fixed: bool = True,
    seed: int = 0,
    reset_n: int = 20,
    sb3: bool = True,
    simulators: tuple[str, ...] = SIMULATORS,
    pythons: dict[str, str | None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure every system in one run, write the JSON (atomically) to ``out`` and the markdown
    table beside it (``.md``); returns the JSON.

    ``seconds``: wall seconds per system, split into ``rounds`` interleaved slices. ``threads``:
    the largest B again with the engine step shared among that many threads (values above 1; a
    labelled row outside the per-core comparison). ``pythons``:
    the interpreter of each simulator's process (``loopdrive``, ``highway_env``, ``metadrive``;
    None or missing = the default of :func:`default_pythons`). ``sb3``: also the SB3 PPO row.
    ``simulators``: which of :data:`SIMULATORS` to measure (loopdrive always; one not asked for
    is reported unavailable, "not requested").
    """

    def say(msg: str) -> None:
        if progress is not None:
            progress(msg)

    chosen = default_pythons()
    chosen.update({k: v for k, v in (pythons or {}).items() if v})
    chosen = {k: v for k, v in chosen.items() if k in simulators or k == "loopdrive"}
    load0 = os.getloadavg()[0]
    stub = Path(tempfile.mkdtemp(prefix="loopdrive-metadrive-assets-"))
    config = {"seed": seed, "pool_steps": 4096, "batch_sizes": list(batch_sizes), "threads": [int(x) for x in threads], "fixed": fixed, "vehicles": N_VEHICLES, "metadrive_stub": str(stub / "assets")}
    workers: dict[str, _Worker] = {}
    try:
        workers, status = _start(chosen, config, say)
        raw = _measure(workers, status, seconds, rounds, reset_n, say)
    finally:
        for w in workers.values():
            w.close()
        shutil.rmtree(stub, ignore_errors=True)
    figs = {n: _figure(n, r, status[r["simulator"]]["systems"][n]) for n, r in raw.items()}
    spec, _ = bench_scenario()
    meta = {
        "dt_s": DT_S,
        "vehicles": N_VEHICLES,
        "scenario": f"built-in crossroads, {N_VEHICLES} IDM/MOBIL cars (sim.bench.env.bench_scenario), state observation, {spec.horizon_s:g} s episodes",
        "actions": {"kind": "random", "seed": seed, "pool_steps": config["pool_steps"], "drawn": "up front, uniform over each action space, independently per step and world; the timed loop walks the pool"},
        "method": {"wall_s_per_system": seconds, "rounds": rounds, "slice_s": seconds / max(1, rounds), "figure": "median over slices of per-world steps per wall second, resets included", "processes": "one warm process per simulator, interleaved slices, others idle"},
        "wall_s_per_system": seconds,
        "rounds": rounds,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
                    "load_avg_1min_before": round(load0, 2), "load_avg_1min_after": round(os.getloadavg()[0], 2), "uptime_after": _uptime()},
    }
    res = _assemble(status, figs, meta)
    res["sb3_ppo"] = bench_sb3_ppo(quick=seconds < 5.0, progress=progress) if sb3 else {"available": False, "reason": "not requested (--no-sb3)"}
    outp = Path(out)
    atomic_write_text(outp, json.dumps(res, indent=2), parents=True)
    atomic_write_text(outp.with_suffix(".md"), env_table_markdown(res), parents=True)
    return res


def default_pythons() -> dict[str, str]:
    """Each simulator's interpreter by default: this one, and for MetaDrive the separate venv
    ``make bench-setup`` makes beside this one (``.venv-metadrive`` next to ``.venv``) when it
    exists: MetaDrive's opencv-python and pygame would overwrite the main venv's
    opencv-python-headless and highway-env's pygame-ce files."""
    md = Path(sys.prefix).parent / ".venv-metadrive" / "bin" / "python"
    return {"highway_env": sys.executable, "metadrive": str(md.absolute()) if md.exists() else sys.executable, "loopdrive": sys.executable}
