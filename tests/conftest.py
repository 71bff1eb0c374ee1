"""Shared test fixtures."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from sim.registry import Registry

# hypothesis draws the same examples on every run (CI must not pass or fail by chance) and keeps no
# example database in the working tree
settings.register_profile("loopdrive", derandomize=True, database=None, print_blob=True)
settings.load_profile("loopdrive")

#: modules holding the global registries (imported once, so every test starts from their contents)
REGISTRY_MODULES = (
    "sim.planning.registry", "sim.planning.training", "sim.observations", "sim.metrics", "sim.behavior",
    "sim.render.base", "sim.importers", "sim.mining", "sim.adversary.space",
)  # fmt: skip


def _registries() -> list[Registry]:
    """Every :class:`sim.registry.Registry` held by a loaded module of sim, agents or tests."""
    found: dict[int, Registry] = {}
    for name, mod in list(sys.modules.items()):
        if mod is None or name.split(".")[0] not in ("sim", "agents", "tests"):
            continue
        for v in list(vars(mod).values()):
            if isinstance(v, Registry):
                found[id(v)] = v
    return list(found.values())


@pytest.fixture(scope="session", autouse=True)
def _registry_baseline() -> None:
    """Import the registry modules and scan their entry-point groups once (names only: no plug-in
    is imported), so the per-test snapshots start from the same, complete state."""
    for m in REGISTRY_MODULES:
        importlib.import_module(m)
    for r in _registries():
        r.names()


@pytest.fixture(autouse=True)
def _restore_registries(_registry_baseline: None) -> Iterator[None]:
    """Every registry (planners, trainers, observations, metrics, behaviours, renderers, importers,
    triggers, templates, ...) is put back after each test: what a test registers never leaks into
    the next one. Entries that a module imported during the test registered (a built-in backend
    loaded on first use, say) stay: that module will not run again to register them."""
    modules = set(sys.modules)
    saved = [(r, r.snapshot()) for r in _registries()]
    yield
    imported = set(sys.modules) - modules
    for r, state in saved:
        now = r.snapshot().items
        keep = {n: o for n, o in now.items() if n not in state.items and getattr(o, "__module__", None) in imported}
        r.restore(state)
        for name, obj in keep.items():
            r.register(name, obj)


@pytest.fixture(scope="session")
def tiny_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``tiny`` synthetic drive log written once per test session (per xdist worker) and shared.

    Town ``tiny``, seed 0, 20 frames at 10 Hz (2 s): front camera 320x192 (RGB + 16-bit depth),
    LiDAR 32x1024, exact tracks and lane map; ``meta.json`` has ``source: synth`` and
    ``synth: {preset: tiny, seed: 0}``. Treat it as read-only.
    """
    from sim.synth import write_synth_log

    out = tmp_path_factory.mktemp("synth") / "tiny-s0"
    return write_synth_log("tiny", 0, 20, out=out)


@pytest.fixture()
def tiny_follow_base(tmp_path: Path) -> Path:
    """``tmp_path/base/tiny_follow.yaml``: the corner-case search tests' base scenario (tiny town,
    ego at 8 m/s 18 m behind a car; see ``tests/_adversary.py``)."""
    from tests._adversary import BASE

    p = tmp_path / "base" / "tiny_follow.yaml"
    p.parent.mkdir()
    p.write_text(BASE, encoding="utf-8")
    return p
