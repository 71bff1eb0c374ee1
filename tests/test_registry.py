"""sim.registry.Registry: code registrations and entry-point plug-ins, lazily loaded, unknown and
broken names reported in one line, and snapshots that tests restore."""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import sim.registry
from sim.errors import RegistryError
from sim.registry import Registry

PLUGIN = """
LOADS = []
class Thing:
    pass
LOADS.append("loaded")
"""


@pytest.fixture()
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module ``loopdrive_test_plugin`` on sys.path with two entry points in group
    ``loopdrive.test_things``: ``good`` (its class) and ``broken`` (a missing attribute)."""
    (tmp_path / "loopdrive_test_plugin.py").write_text(PLUGIN, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [
        importlib.metadata.EntryPoint("good", "loopdrive_test_plugin:Thing", "loopdrive.test_things"),
        importlib.metadata.EntryPoint("broken", "loopdrive_test_plugin:Missing", "loopdrive.test_things"),
    ]
    monkeypatch.setattr(sim.registry, "entry_points", lambda group=None, **kw: [e for e in eps if e.group == group])
    yield "loopdrive_test_plugin"
    sys.modules.pop("loopdrive_test_plugin", None)


def test_entry_points_are_listed_without_importing_and_loaded_on_lookup(plugin: str) -> None:
    reg: Registry[type] = Registry("thing", "loopdrive.test_things")
    assert reg.names() == ["broken", "good"] and "good" in reg
    assert plugin not in sys.modules  # listing does not import the plug-in
    cls = reg.get("good")
    assert cls.__name__ == "Thing" and sys.modules[plugin].LOADS == ["loaded"]
    assert reg.get("good") is cls and sys.modules[plugin].LOADS == ["loaded"]  # loaded once


def test_a_broken_plugin_names_its_entry_point_and_leaves_the_others(plugin: str) -> None:
    reg: Registry[type] = Registry("thing", "loopdrive.test_things")
    with pytest.raises(RegistryError, match=r"thing 'broken' could not be loaded from entry point loopdrive_test_plugin:Missing: AttributeError"):
        reg.get("broken")
    assert reg.names() == ["good"]  # known broken: no longer listed
    assert reg.get("good").__name__ == "Thing"


def test_an_unknown_name_lists_the_known_ones_and_code_shadows_an_entry_point(plugin: str) -> None:
    reg: Registry[type] = Registry("thing", "loopdrive.test_things")
    with pytest.raises(RegistryError, match=r"unknown thing 'nope'; known: broken, good"):
        reg.get("nope")

    class Mine:
        pass

    reg.register("good", Mine)
    assert reg.get("good") is Mine
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("good", object)


def test_restore_forgets_what_was_registered_and_loaded_since_the_snapshot(plugin: str) -> None:
    reg: Registry[type] = Registry("thing", "loopdrive.test_things")
    reg.register("base", int)
    state = reg.snapshot()
    items = reg._items
    reg.register("extra", float)
    reg.get("good")
    reg.restore(state)
    assert reg._items is items and sorted(reg._items) == ["base"]  # in place: references stay valid
    assert reg.names() == ["base", "broken", "good"]
    assert reg.get("good").__name__ == "Thing"  # loads again on demand
    with pytest.raises(RegistryError):
        reg.get("extra")


def test_a_registry_without_a_group_is_only_what_code_registers() -> None:
    reg: Registry[int] = Registry("number")
    reg.register("one", 1)
    assert reg.names() == ["one"] and len(reg) == 1 and list(reg) == ["one"] and 2 not in reg  # type: ignore[operator]
    with pytest.raises(RegistryError, match="known: one"):
        reg.get("two")
