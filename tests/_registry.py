"""Registering a test's own entries in a global registry for a limited time, so no test depends on
(or is disturbed by) what another test registered."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sim.registry import Registry


@contextmanager
def registered(registry: Registry[Any], *entries: tuple[str, Any]) -> Iterator[None]:
    """Register each ``(name, factory)`` in ``registry`` (replacing an entry of the same name) for
    the ``with`` block; afterwards every name is back to what it was (absent, or its old entry)."""
    items: dict[str, Any] = registry._items
    before = {name: items[name] for name, _ in entries if name in items}
    try:
        for name, obj in entries:
            registry.register(name, obj, replace=True)
        yield
    finally:
        for name, _ in entries:
            items.pop(name, None)
        items.update(before)


def raising_planner(name: str) -> type[Any]:
    """A :class:`sim.planning.Planner` class named ``name`` observing ``ego`` whose every ``plan``
    call raises ``RuntimeError`` (episodes of it end with status ``error``)."""
    from sim.planning import ObservationSpec, Planner

    class Raiser(Planner):
        def observation_spec(self) -> ObservationSpec:
            return ObservationSpec(kinds=("ego",))

        def reset(self, init: object, *, seed: int | None = None) -> None:
            pass

        def plan(self, obs: object) -> object:
            raise RuntimeError("this planner always fails")

    Raiser.name = name
    return Raiser
