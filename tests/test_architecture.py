"""The layered architecture: every module has a layer, the architecture page is the one generated
from the import-linter contracts, ``sim`` reaches planners and trainers only through the
entry-point registries (whatever was imported first), and no test's registration leaks into the
next test."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GEN = runpy.run_path(str(ROOT / "docs" / "gen_architecture.py"), run_name="gen_architecture")


def _top_level(pkg: str) -> set[str]:
    base = ROOT / pkg
    mods = {f"{pkg}.{p.stem}" for p in base.glob("*.py") if p.stem != "__init__"}
    return mods | {f"{pkg}.{p.parent.name}" for p in base.glob("*/__init__.py")}


def test_every_module_of_sim_is_in_exactly_one_layer() -> None:
    layers = GEN["layers"]()
    assert len(layers) == 6
    placed = [m for layer in layers for m in layer]
    assert len(placed) == len(set(placed))
    unplaced = sorted(m for m in _top_level("sim") if m not in placed)
    assert not unplaced, f"add these modules to a layer of [tool.importlinter] in pyproject.toml: {unplaced}"
    assert "agents" in placed


def test_the_architecture_page_is_generated_from_the_contracts() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert page == GEN["page"](), "run: python docs/gen_architecture.py"
    assert "sim never imports agents" in page and "entry points" in page
    for name in ("SHELLS", "RUNNER", "AGENTS", "PLANNING INTERFACE", "SENSORS", "CORE"):
        assert name in page


_FRESH = """
import sys
import sim.batch, sim.cli, sim.collect, sim.export, sim.leaderboard, sim.loop, sim.mining, sim.rollout
assert not [m for m in sys.modules if m.split('.')[0] == 'agents'], 'importing sim loaded agents'
from sim.env import ClosedLoopEnv
env = ClosedLoopEnv(observation=['ego', 'objects'])
obs, _ = env.reset(seed=0)
assert obs['ego'].shape == (6,) and obs['objects'].shape[1] == 8
assert 'agents' not in sys.modules
from sim.planning import PLANNERS, make_planner
from sim.planning.training import TRAINERS
assert {'idm', 'pdm_closed', 'log_replay', 'lidar_stack', 'bc_policy', 'sb3'} <= set(PLANNERS.names())
assert 'agents' not in sys.modules, 'listing the planners imported them'
assert type(make_planner('idm')).__module__ == 'agents.planners.idm'
assert {'bc', 'ppo'} <= set(TRAINERS.names())
print('ok')
"""


def test_a_fresh_interpreter_finds_planners_and_observation_kinds_whatever_it_imported_first() -> None:
    """The import-order bug of issue 21: ``ClosedLoopEnv(observation=["ego"])`` and
    ``make_planner("idm")`` work in a process that never imported ``agents``, and the runner's
    modules load without it."""
    r = subprocess.run([sys.executable, "-c", _FRESH], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def test_a_registration_in_one_test_is_gone_in_the_next_part_1() -> None:
    from sim.metrics import METRICS
    from sim.planning import PLANNERS

    PLANNERS.register("test_leak_probe", object)  # type: ignore[arg-type]
    METRICS.register("test_leak_probe", object)  # type: ignore[arg-type]
    assert "test_leak_probe" in PLANNERS and "test_leak_probe" in METRICS


def test_a_registration_in_one_test_is_gone_in_the_next_part_2() -> None:
    """Runs after part 1 (same module, file order): tests/conftest.py restored the registries."""
    from sim.metrics import METRICS
    from sim.planning import PLANNERS

    assert "test_leak_probe" not in PLANNERS and "test_leak_probe" not in METRICS
    assert "idm" in PLANNERS  # the entry points are still there
