"""One warm process per simulator for ``loopdrive bench env`` (:mod:`sim.bench.env`).

The bench starts this file once per simulator (``loopdrive``, ``highway_env``, ``metadrive``),
each with its own Python: it builds that simulator's systems, then waits for commands, so the
parent can interleave short timed slices of every system while the other processes sit idle.
This file imports only the standard library and numpy at the top and needs nothing of ``sim``
except for the loopdrive systems: it also runs as a plain script (``python env_worker.py``) under
another interpreter, e.g. a venv holding only MetaDrive (``--metadrive-python``).

Protocol: the first argument is a JSON object ``{"simulator": ..., "config": {...}}``. The worker
answers one JSON line on its original stdout (everything the libraries print goes to stderr):
``{"ok": true, "systems": {...}, "info": {...}}`` once set up, or ``{"ok": false, "reason":
...}``. It then reads one JSON command a line on stdin:

* ``{"cmd": "run", "system": NAME, "seconds": S}``: steps the system for about S wall seconds
  (checking the clock every 5 steps) and answers ``steps`` (env steps), ``world_steps``
  (steps x worlds), ``resets`` (episodes that ended and were reset: counted from the
  terminated / truncated flags) and ``wall_s``;
* ``{"cmd": "resets", "system": NAME, "n": N}``: times N resets, answers ``reset_ms`` (each, ms);
* ``{"cmd": "quit"}``.

Actions are drawn up front (never in the timed loop): a seeded pool of ``pool_steps`` steps of
uniform random actions over the action space, one independent draw per world (``random``), or a
single constant action sent to every world (``fixed``: loopdrive's zero action, i.e. keep speed
and heading). The step index walks through the pool cyclically.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __name__ == "__main__" and sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run as a script: sim/bench/ must not shadow installed modules

import numpy as np

#: simulated seconds per env step of every system
DT_S = 0.1
#: MetaDrive's version the stub asset folder declares (the bench extra's pin)
METADRIVE_VERSION = "0.4.3"
#: the one file MetaDrive 0.4.3's asset version check opens besides version.txt
METADRIVE_STUB_FILE = ("textures", "grass1", "GroundGrassGreen002_COL_1K.jpg")
#: MetaDrive configuration of the bench: the 5-block procedural map of scenario 0, respawn traffic
#: (vehicles that reach the end of the map respawn, so the traffic keeps driving; density 0.55
#: gives 21 traffic vehicles on this map), physics at 0.02 s x 5 = 0.1 s per env step, no
#: rendering, no mesh terrain (so no asset file is read), a 400-step (40 s) horizon
METADRIVE_CONFIG: dict[str, Any] = {
    "use_render": False,
    "use_mesh_terrain": False,
    "traffic_mode": "respawn",
    "traffic_density": 0.55,
    "map": 5,
    "num_scenarios": 1,
    "start_seed": 0,
    "physics_world_step_size": 0.02,
    "decision_repeat": 5,
    "horizon": 400,
    "log_level": 50,
}
#: highway-env configuration of the bench (``highway-v0``)
HIGHWAY_ENV_CONFIG: dict[str, Any] = {
    "observation": {"type": "Kinematics"},
    "action": {"type": "DiscreteMetaAction"},
    "simulation_frequency": 10,
    "policy_frequency": 10,
    "vehicles_count": 20,
    "duration": 40,
    "offscreen_rendering": True,
}


class System:
    """One system under test. ``step(i)`` does env step ``i`` (its action is ``pool[i % len]``)
    and returns how many episodes ended (and were or will be reset); ``reset()`` resets it."""

    def __init__(self, name: str, num_envs: int, step: Callable[[int], int], reset: Callable[[], None], close: Callable[[], None], pool: np.ndarray, actions: str, threads: int = 1) -> None:
        self.name = name
        self.num_envs = num_envs
        self.threads = threads
        self.step = step
        self.reset = reset
        self.close = close
        self.pool = pool
        self.actions = actions
        self._i = 0

    def run(self, seconds: float) -> dict[str, Any]:
        """Step for about ``seconds`` wall seconds (clock read every 5 steps)."""
        steps = resets = 0
        t0 = time.perf_counter()
        while True:
            for _ in range(5):
                resets += self.step(self._i)
                self._i += 1
            steps += 5
            wall = time.perf_counter() - t0
            if wall >= seconds:
                break
        return {"steps": steps, "world_steps": steps * self.num_envs, "resets": resets, "wall_s": wall}

    def run_steps(self, n: int) -> dict[str, int]:
        """Exactly ``n`` steps (tests): steps and resets."""
        resets = 0
        for _ in range(n):
            resets += self.step(self._i)
            self._i += 1
        return {"steps": n, "resets": resets}

    def time_resets(self, n: int) -> list[float]:
        """Milliseconds of each of ``n`` resets."""
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.reset()
            out.append((time.perf_counter() - t0) * 1e3)
        return out

    def describe(self) -> dict[str, Any]:
        return {"num_envs": self.num_envs, "actions": self.actions, "threads": self.threads, "pool_shape": list(self.pool.shape), "worlds_distinct_actions": worlds_distinct(self.pool)}


def worlds_distinct(pool: np.ndarray) -> bool:
    """True when every world of a ``(steps, worlds, ...)`` pool gets its own action sequence."""
    if pool.ndim < 3 or pool.shape[1] < 2:
        return False
    flat = pool.reshape(pool.shape[0], pool.shape[1], -1).transpose(1, 0, 2).reshape(pool.shape[1], -1)
    return len({row.tobytes() for row in flat}) == pool.shape[1]


def action_pool(kind: str, low: np.ndarray, high: np.ndarray, num_envs: int, steps: int, seed: int) -> np.ndarray:
    """``(steps, num_envs, *shape)`` float32 actions: uniform in [low, high] drawn independently
    for every step and world (``random``), or one zero / mid-range action for all (``fixed``)."""
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    if kind == "fixed":
        mid = np.clip(np.zeros_like(low), low, high)
        return np.broadcast_to(mid, (1, num_envs, *low.shape)).astype(np.float32)
    rng = np.random.default_rng(seed)
    return rng.uniform(low, high, (steps, num_envs, *low.shape)).astype(np.float32)


# ------------------------------------------------------------------------------ loopdrive
def loopdrive_systems(cfg: dict[str, Any]) -> tuple[list[System], dict[str, Any]]:
    """The loopdrive single env (``gymnasium.make``) and vector env (``make_vec``, the
    ``vector_entry_point``) at each B of ``cfg["batch_sizes"]``, with random per-world actions and,
    when ``cfg["fixed"]``, the same again with one fixed action; for each ``cfg["threads"]`` above 1,
    the largest B again with the engine step shared among that many threads (a labelled row)."""
    import gymnasium as gym

    import sim  # registers the env
    from sim.bench.env import bench_scenario

    spec, scene = bench_scenario(int(cfg.get("vehicles", 20)))
    seed, steps = int(cfg.get("seed", 0)), int(cfg.get("pool_steps", 4096))
    kinds = ["random", "fixed"] if cfg.get("fixed", True) else ["random"]
    sizes = [int(b) for b in cfg.get("batch_sizes", (16, 64, 256))]
    out: list[System] = []
    for kind in kinds:
        suffix = "" if kind == "random" else "_fixed"
        env = gym.make("loopdrive/ClosedLoop-v0", scenario=spec, scene=scene)
        env.reset(seed=seed)
        space = env.action_space
        pool = action_pool(kind, space.low, space.high, 1, steps, seed)
        out.append(_single_system(f"loopdrive_single{suffix}", env, pool, kind))
        pools = {}
        for k, b in enumerate(sizes):
            venv = gym.make_vec("loopdrive/ClosedLoop-v0", num_envs=b, vectorization_mode="vector_entry_point", scenario=spec, scene=scene)
            venv.reset(seed=seed)
            pools[b] = pool = action_pool(kind, space.low, space.high, b, steps, seed + 1 + k)
            out.append(_vector_system(f"loopdrive_B{b}{suffix}", venv, pool, kind))
        if kind != "random" or not sizes:
            continue
        b = max(sizes)  # the threaded rows: the largest B again, with its one-thread row's actions
        for t in (int(x) for x in cfg.get("threads", ()) if int(x) > 1):
            venv = gym.make_vec("loopdrive/ClosedLoop-v0", num_envs=b, vectorization_mode="vector_entry_point", scenario=spec, scene=scene, threads=t)
            venv.reset(seed=seed)
            out.append(_vector_system(f"loopdrive_B{b}_threads{t}", venv, pools[b], kind, t))
    info = {"version": getattr(sim, "__version__", "dev"), "scenario": spec.name, "horizon_s": spec.horizon_s, "vehicles": len(spec.actors),
            "observation": "state", "action": "control, normalized [accel, steer] in [-1, 1]^2",
            "vector_autoreset": "next_step (gymnasium's default: a finished world resets on its next step, which counts as a world step)"}
    return out, info


def _single_system(name: str, env: Any, pool: np.ndarray, kind: str, acts: Any = None) -> System:
    """One Gymnasium env stepped with ``acts`` (default: the pool's single world), reset and
    counted when an episode ends."""
    acts = pool[:, 0] if acts is None else acts
    n = len(acts)

    def step(i: int) -> int:
        _, _, te, tr, _ = env.step(acts[i % n])
        if te or tr:
            env.reset()
            return 1
        return 0

    return System(name, 1, step, lambda: env.reset(), env.close, pool, kind)


def _vector_system(name: str, venv: Any, pool: np.ndarray, kind: str, threads: int = 1) -> System:
    n = len(pool)

    def step(i: int) -> int:
        _, _, te, tr, _ = venv.step(pool[i % n])  # finished worlds reset on their next step
        return int(np.count_nonzero(te | tr))

    return System(name, int(pool.shape[1]), step, lambda: venv.reset(), venv.close, pool, kind, threads)


# ------------------------------------------------------------------------------ highway-env
def highway_env_systems(cfg: dict[str, Any]) -> tuple[list[System], dict[str, Any]]:
    """highway-env ``highway-v0`` (:data:`HIGHWAY_ENV_CONFIG`) with uniform random discrete
    meta-actions drawn up front."""
    import gymnasium as gym
    import highway_env

    env = gym.make("highway-v0", config=HIGHWAY_ENV_CONFIG)
    seed = int(cfg.get("seed", 0))
    env.reset(seed=seed)
    n_act = int(env.action_space.n)
    pool = np.random.default_rng(seed).integers(0, n_act, (int(cfg.get("pool_steps", 4096)), 1))
    info = {"version": str(getattr(highway_env, "__version__", "unknown")), "env": "highway-v0", "config": HIGHWAY_ENV_CONFIG, "actions": f"uniform over the {n_act} DiscreteMetaAction actions"}
    return [_single_system("highway_env", env, pool, "random", acts=[int(a) for a in pool[:, 0]])], info


# ------------------------------------------------------------------------------ MetaDrive
def metadrive_stub(folder: str | os.PathLike[str]) -> Path:
    """Write MetaDrive's stub asset folder in ``folder`` (made if missing) and return it:
    ``version.txt`` saying :data:`METADRIVE_VERSION` and the empty texture file its version
    check looks for. Headless MetaDrive (no rendering, no mesh terrain) reads no other asset."""
    root = Path(folder)
    tex = root.joinpath(*METADRIVE_STUB_FILE)
    tex.parent.mkdir(parents=True, exist_ok=True)
    tex.touch()
    (root / "version.txt").write_text(METADRIVE_VERSION + "\n")
    return root


def _use_metadrive_stub(stub_dir: str | None) -> str:
    """Point MetaDrive at a stub asset folder unless its real assets are installed; says which."""
    import pathlib

    import metadrive.version as mv
    from metadrive.engine.asset_loader import AssetLoader

    if os.path.exists(os.path.join(str(AssetLoader.asset_path), "version.txt")):
        return f"installed assets at {AssetLoader.asset_path}"
    if not stub_dir:
        raise RuntimeError("MetaDrive's assets are not installed and no stub folder was given")
    root = metadrive_stub(stub_dir)
    AssetLoader.asset_path = pathlib.PurePosixPath(str(root))
    version = (root / "version.txt").read_text().strip()
    mv.asset_version = lambda: version  # the check reads the package folder otherwise
    return f"stub asset folder {root} (version.txt + {'/'.join(METADRIVE_STUB_FILE)}), nothing downloaded"


def metadrive_systems(cfg: dict[str, Any]) -> tuple[list[System], dict[str, Any]]:
    """MetaDrive headless (:data:`METADRIVE_CONFIG`) with uniform random [steering, throttle]
    actions drawn up front; the info counts the traffic vehicles, those driving and their mean
    speed over 100 untimed steps after a reset."""
    import metadrive

    assets = _use_metadrive_stub(cfg.get("metadrive_stub"))
    from metadrive.envs.metadrive_env import MetaDriveEnv

    env = MetaDriveEnv(dict(METADRIVE_CONFIG))
    seed = int(cfg.get("seed", 0))
    env.reset(seed=0)
    space = env.action_space
    pool = action_pool("random", space.low, space.high, 1, int(cfg.get("pool_steps", 4096)), seed)
    acts = pool[:, 0]
    n = len(acts)
    counts, moving, speeds = [], [], []
    for i in range(100):  # untimed: how many traffic vehicles there are and how many drive
        env.step(acts[i % n])
        kmh = np.array([float(v.speed_km_h) for v in env.engine.traffic_manager._traffic_vehicles])
        counts.append(len(kmh))
        moving.append(int(np.count_nonzero(kmh > 5.0)))
        speeds.append(float(kmh.mean()) if len(kmh) else 0.0)
    env.reset(seed=0)
    info = {
        "version": str(getattr(metadrive, "__version__", METADRIVE_VERSION)),
        "env": "MetaDriveEnv",
        "config": METADRIVE_CONFIG,
        "assets": assets,
        "traffic_vehicles_median": float(np.median(counts)),
        "traffic_vehicles_min_max": [min(counts), max(counts)],
        "traffic_moving_median": float(np.median(moving[50:])),
        "traffic_mean_speed_kmh": round(float(np.mean(speeds[50:])), 1),
        "traffic_probe": "100 untimed steps of the random actions after a reset; moving = over 5 km/h, median and mean over steps 50-100",
        "seconds_per_step": METADRIVE_CONFIG["physics_world_step_size"] * METADRIVE_CONFIG["decision_repeat"],
        "actions": "uniform [steering, throttle] in [-1, 1]^2",
    }
    return [_single_system("metadrive", env, pool, "random")], info


BUILDERS: dict[str, Callable[[dict[str, Any]], tuple[list[System], dict[str, Any]]]] = {
    "loopdrive": loopdrive_systems,
    "highway_env": highway_env_systems,
    "metadrive": metadrive_systems,
}


def _versions() -> dict[str, Any]:
    import platform

    out: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable, "numpy": np.__version__}
    try:
        import gymnasium

        out["gymnasium"] = gymnasium.__version__
    except ImportError:
        pass
    return out


def serve(simulator: str, cfg: dict[str, Any], proto: Any, commands: Any) -> None:
    """Build ``simulator``'s systems, answer on ``proto``, then serve ``commands`` (line by line)."""

    def say(obj: dict[str, Any]) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    t0 = time.perf_counter()
    try:
        systems, info = BUILDERS[simulator](cfg)
    except Exception as exc:  # not installed or broken: the bench reports it unavailable
        say({"ok": False, "reason": f"{type(exc).__name__}: {exc}"})
        return
    by = {s.name: s for s in systems}
    say({"ok": True, "systems": {s.name: s.describe() for s in systems}, "info": {**info, **_versions(), "setup_s": round(time.perf_counter() - t0, 2)}})
    for line in commands:
        msg = json.loads(line)
        if msg["cmd"] == "quit":
            break
        s = by[msg["system"]]
        if msg["cmd"] == "run":
            say({"ok": True, **s.run(float(msg["seconds"]))})
        elif msg["cmd"] == "resets":
            say({"ok": True, "reset_ms": s.time_resets(int(msg["n"]))})
    for s in systems:
        with contextlib.suppress(Exception):  # closing is best effort at exit
            s.close()


def main() -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the simulators print goes to stderr, not into the protocol
    arg = json.loads(sys.argv[1])
    serve(arg["simulator"], arg.get("config", {}), proto, sys.stdin)


if __name__ == "__main__":
    main()
