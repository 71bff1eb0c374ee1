"""The README's command-line tour, walked as a new user would: every command of the README's
marked tour block(s), extracted from README.md, run in order by bash in a fresh working folder.

How it stays the README's tour and fits CI:

* **Extraction** (:func:`tour_commands`): every fenced code block right after a line starting
  with ``<!-- tour`` in README.md; ``\\``-continued lines are joined, ``# comments`` dropped,
  ``[--optional flags]`` in brackets dropped (the README shows them as options of the command).
* **Data**: the working folder holds ``scenarios/``, a copy of :data:`LIBRARY_SUBSET` of the
  repository's library (the files the tour names, so ``scenarios/`` means the same thing), and
  ``PATH/TO/nuscenes`` is a nuScenes data root that the test exports from a tiny nuScenes-rig
  synth log before the tour starts (:func:`_nuscenes_root`) -- the README cannot ship one.
* **Budgets** (:data:`BUDGETS`): the README's command with some values replaced or flags added
  (tiny town, a few iterations, 1 s episodes); every rule must apply to exactly one command, so
  a README edit that removes or renames a flag fails here instead of silently running the full
  budget or nothing.
* **Exclusions** (:data:`EXCLUDED`): commands that are not run, each with the reason; each must
  match exactly one command of the tour.

Everything else runs exactly as printed. A command that exits non-zero fails the test with its
output. ``LOOPDRIVE_TOUR_FULL=1`` runs the tour without the budget rules (hours; for a release).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
MARK = "<!-- tour"

#: the library files copied to the working folder's scenarios/ (the ones the tour names; every
#: folder-wide command runs on these instead of all 17 files)
LIBRARY_SUBSET = ("cut_in_left.yaml", "stopped_vehicle.yaml")

#: (command prefix, [(README text, replacement)]): small budgets. The prefix must start exactly one
#: tour command (in order: the first still unmatched one) and every README text must occur in it.
#: ``--workers 1``: a second worker process builds the town again, which on CI's two shared cores
#: costs more than it saves on two 1 s episodes.
BUDGETS: list[tuple[str, list[tuple[str, str]]]] = [
    ("loopdrive synth ", [("--town small", "--town tiny"), ("--frames 120", "--frames 20")]),
    ("loopdrive recon ", [("--preset quick", "--preset quick --iterations 20")]),
    ("loopdrive eval-recon bundles/town-s0 --log logs/town-s0", [("--log logs/town-s0", "--log logs/town-s0 --max-frames 1")]),
    ("loopdrive eval-recon bundles/town-s0 --log logs/town-s0 --mode surface", [("--mode surface", "--mode surface --max-frames 1")]),
    ("loopdrive run scenarios/ --out out/run ", [("--workers 2", "--workers 1 --horizon 1")]),
    ("loopdrive run scenarios/ --out out/run-idm", [("--workers 2", "--workers 1 --horizon 1")]),
    ("loopdrive run scenarios/ --out out/run-bc", [("--planner bc_policy", "--planner bc_policy --horizon 1")]),
    ("loopdrive leaderboard ", [("--out out/leaderboard", "--out out/leaderboard --horizon 1")]),
    # one permutation of one type; mesh LiDAR: neural LiDAR at every step of the designed horizon
    # takes minutes on CI's CPU even then (the same protocol and code path otherwise)
    ("loopdrive ncap ", [("--runs 100", "--runs 1 --types stationary --sensors mesh")]),
    ("loopdrive train bc ", [("--seeds 100,101", "--seeds 100 --epochs 1")]),
    ("loopdrive train ppo ", [("--steps 20000", "--steps 64")]),
    ("loopdrive train sensor-policy ", [("--seeds 100,101", "--seeds 100 --epochs 1 --max-steps 5"), ("--dagger-rounds 1", "--dagger-rounds 0")]),
    ("loopdrive attack ", [("--budget 200", "--budget 2 --horizon 1")]),
    ("loopdrive loop ", [("--rounds 2 --budget 90", "--rounds 1 --budget 2 --horizon 1 --epochs 1 --init-random 1")]),
    ("loopdrive bench env", [("bench env", "bench env --seconds 0.2 --rounds 1 --batch-sizes 16 --no-sb3 --no-fixed")]),
    ("loopdrive bench render ", [("--log logs/town-s0", "--log logs/town-s0 --repeats 1")]),
    ("loopdrive bench nuscenes-roundtrip", [("nuscenes-roundtrip", "nuscenes-roundtrip --frames 12 --image-scale 0.03 --azimuth 128 --key-frames-only")]),
]

#: command prefix -> why it is not run here (each must match exactly one tour command)
EXCLUDED: dict[str, str] = {
    "make bench-setup": "installs the bench extra into .venv (network, minutes); CI's set-up is its own",
    "loopdrive serve ": "a server that runs until stopped; tests/test_serve.py starts it and drives its API",
    "loopdrive bench all": "runs every benchmark in turn (tens of minutes even with --quick); tests/test_bench_all.py "
                           "checks its summary and arguments, and this tour runs bench env, render and nuscenes-roundtrip",
}

#: per-command time limit, s (a hung command fails instead of eating CI's budget)
TIMEOUT_S = 600


def tour_commands(text: str) -> list[str]:
    """The commands of every code block that follows a ``<!-- tour`` line, in order."""
    lines = text.splitlines()
    cmds: list[str] = []
    i = 0
    while i < len(lines):
        if lines[i].lstrip().startswith(MARK):
            i += 1
            if i >= len(lines) or not lines[i].startswith("```"):
                raise AssertionError(f"README.md line {i}: a tour mark must be followed by a code block")
            i += 1
            joined = ""
            while i < len(lines) and not lines[i].startswith("```"):
                line = lines[i]
                i += 1
                if line.rstrip().endswith("\\"):
                    joined += line.rstrip()[:-1] + " "
                    continue
                cmd = _clean(joined + line)
                joined = ""
                if cmd:
                    cmds.append(cmd)
        i += 1
    return cmds


def _clean(line: str) -> str:
    """A tour line without its comment and its ``[optional]`` flags, whitespace collapsed."""
    line = re.sub(r"(^|\s)#.*$", "", line)  # a comment starts at a '#' after blank (none inside quotes in the tour)
    line = re.sub(r"\[[^\]]*\]", "", line)
    return " ".join(line.split())


def plan(cmds: list[str], full: bool = False) -> list[tuple[str, str | None]]:
    """(command to run, None) or (README command, reason excluded) for each tour command, with the
    budget rules applied (unless ``full``); an unused or ambiguous rule is an AssertionError."""
    out: list[tuple[str, str | None]] = []
    budgets = list(BUDGETS)
    used_excl: dict[str, int] = dict.fromkeys(EXCLUDED, 0)
    for cmd in cmds:
        excl = [p for p in EXCLUDED if cmd.startswith(p)]
        if excl:
            used_excl[excl[0]] += 1
            out.append((cmd, EXCLUDED[excl[0]]))
            continue
        rule = next((r for r in budgets if cmd.startswith(r[0])), None)
        if rule is not None:
            budgets.remove(rule)
            for old, new in rule[1]:
                assert old in cmd, f"budget rule {rule[0]!r}: {old!r} is not in the README's command {cmd!r}"
                if not full:
                    cmd = cmd.replace(old, new, 1)
        out.append((cmd, None))
    assert not budgets, f"budget rules that match no tour command (README changed?): {[r[0] for r in budgets]}"
    unused = [p for p, n in used_excl.items() if n != 1]
    assert not unused, f"exclusions that match no tour command or more than one: {unused}"
    return out


def test_the_tour_is_extracted_from_the_readme() -> None:
    cmds = tour_commands(README.read_text(encoding="utf-8"))
    assert cmds[0].startswith("loopdrive synth ") and len(cmds) >= 30, cmds
    assert all(c.startswith(("loopdrive ", "make ")) for c in cmds), [c for c in cmds if not c.startswith(("loopdrive ", "make "))]
    assert not any("#" in c or "[" in c or c.endswith("\\") for c in cmds)
    steps = plan(cmds)
    assert sum(reason is not None for _, reason in steps) == len(EXCLUDED)
    # an optional flag and a comment are dropped, a continued line joined
    assert tour_commands("<!-- tour -->\n```bash\n# x\nloopdrive a --b [--c] \\\n   --d 1   # note\n```\n") == ["loopdrive a --b --d 1"]


def _nuscenes_root(work: Path, env: dict[str, str]) -> Path:
    """A nuScenes data root with the tour's scene name, exported from a tiny nuScenes-rig log."""
    root = work / "nuscenes-root"
    for cmd in (f"loopdrive synth --town tiny --rig nuscenes --frames 12 --image-scale 0.03 --azimuth 128 --out {work / 'nusc-log'}",
                f"loopdrive export-nuscenes {work / 'nusc-log'} --scene scene-0061 --out {root}"):
        _run(cmd, work, env)
    return root


def _run(cmd: str, cwd: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert r.returncode == 0, f"tour command failed (exit {r.returncode}): {cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    dt = time.perf_counter() - t0
    print(f"{dt:6.1f} s  {cmd}", flush=True)
    return dt


@pytest.mark.skipif(shutil.which("bash") is None, reason="the tour is bash")
def test_walk_the_readme_tour(tmp_path: Path) -> None:
    full = os.environ.get("LOOPDRIVE_TOUR_FULL") == "1"
    steps = plan(tour_commands(README.read_text(encoding="utf-8")), full=full)
    work = tmp_path / "tour"
    (work / "scenarios").mkdir(parents=True)
    for name in LIBRARY_SUBSET:
        shutil.copy(REPO / "scenarios" / name, work / "scenarios" / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "LOOPDRIVE_ACTORS": str(work / "actors")}
    root = _nuscenes_root(tmp_path, env)
    times: list[tuple[float, str]] = []
    for cmd, reason in steps:
        if reason is not None:
            print(f"not run: {cmd} ({reason})")
            continue
        cmd = cmd.replace("PATH/TO/nuscenes", shlex.quote(str(root)))
        times.append((_run(cmd, work, env), cmd))
    print(f"{sum(t for t, _ in times):6.1f} s  the whole tour ({len(times)} commands; load average {os.getloadavg()[0]:.1f})")
    # what the tour promises to leave behind
    for made in ("logs/town-s0/meta.json", "out/town-s0.rrd", "bundles/town-s0", "scenario.schema.json", "out/run/report.html",
                 "out/leaderboard/leaderboard.md", "out/leaderboard/scenarios.json", "models/bc.safetensors", "models/ppo.json",
                 "out/attack/summary.json", "out/loop", "logs/nusc-0061-front"):
        assert (work / made).exists(), made
    assert not (work / "scenarios" / "generated").exists()  # the attack left the library alone
    assert not list(work.glob("benchmarks")), "a benchmark wrote into benchmarks/ without --publish"
