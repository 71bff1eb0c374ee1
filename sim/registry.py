"""One generic name -> factory registry, shared by planners, trainers, metrics, behaviours,
observations, render backends, importers and mining triggers.

Entries come from two places: code (:meth:`Registry.register`, for a module's own built-ins and
for tests) and an entry-point group (for example ``loopdrive.planners``), which is how plug-ins --
loopdrive's own reference planners among them -- register. The group is scanned once, lazily, the
first time a name is looked up that code did not register, or the names are listed; an entry point
is imported only when its name is first looked up, so what a caller imported before never decides
what a registry knows. A name registered in code shadows an entry point of the same name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from sim.errors import RegistryError

__all__ = ["Registry", "RegistryState"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RegistryState:
    """A copy of a registry's contents (:meth:`Registry.snapshot`), for :meth:`Registry.restore`."""

    items: dict[str, Any]
    plugins: dict[str, Any]
    broken: dict[str, str]
    entry_points: dict[str, EntryPoint] | None
    entry_points_loaded: bool


class Registry(Generic[T]):
    """A mapping from names to factories (classes or functions) of one kind.

    Args:
        kind: human name of what is registered ("planner", "metric", ...), used in messages.
        entry_point_group: optional entry-point group scanned for plug-ins.
    """

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}  # registered in code
        self._plugins: dict[str, T] = {}  # loaded from entry points
        self._broken: dict[str, str] = {}  # entry points that failed to load -> why
        self._eps: dict[str, EntryPoint] | None = None
        self._entry_points_loaded = entry_point_group is None

    def register(self, name: str, obj: T | None = None, *, replace: bool = False) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""

        def _do(o: T) -> T:
            if name in self._items and not replace and self._items[name] is not o:
                raise RegistryError(f"{self.kind} {name!r} is already registered")
            self._items[name] = o
            return o

        if obj is None:
            return _do
        return _do(obj)

    def _entry_points(self) -> dict[str, EntryPoint]:
        """The group's entry points by name, scanned once (again after ``_entry_points_loaded``
        is reset)."""
        if not self._entry_points_loaded or self._eps is None:
            self._entry_points_loaded = True
            group = self.entry_point_group
            self._eps = {ep.name: ep for ep in entry_points(group=group)} if group is not None else {}
        return self._eps

    def _load(self, name: str) -> T | None:
        """The entry point ``name`` loaded (once), or None when there is none or it is broken."""
        if name in self._plugins:
            return self._plugins[name]
        ep = self._entry_points().get(name)
        if ep is None or name in self._broken:
            return None
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plug-in must not break the others
            self._broken[name] = f"entry point {ep.value}: {type(exc).__name__}: {exc}"
            log.warning("could not load %s %r from entry point %s: %s", self.kind, name, ep.value, exc)
            return None
        self._plugins[name] = obj
        return obj

    def get(self, name: str) -> T:
        """The factory registered as ``name``; :class:`RegistryError` lists the known names."""
        if name in self._items:
            return self._items[name]
        obj = self._load(name)
        if obj is not None:
            return obj
        if name in self._broken:
            raise RegistryError(f"{self.kind} {name!r} could not be loaded from {self._broken[name]}")
        known = ", ".join(self.names()) or "(none)"
        raise RegistryError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        """Sorted names, including the entry points' (not imported by listing them)."""
        eps = self._entry_points() if self.entry_point_group is not None else {}
        return sorted({*self._items, *self._plugins, *(n for n in eps if n not in self._broken)})

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return name in self._items or name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    # ------------------------------------------------------------------ test isolation
    def snapshot(self) -> RegistryState:
        """A copy of the contents (code registrations, loaded plug-ins, scanned entry points)."""
        return RegistryState(dict(self._items), dict(self._plugins), dict(self._broken),
                             None if self._eps is None else dict(self._eps), self._entry_points_loaded)  # fmt: skip

    def restore(self, state: RegistryState) -> None:
        """Put back the contents of :meth:`snapshot` (in place: references to the registry stay
        valid); what was registered since is forgotten."""
        self._items.clear()
        self._items.update(state.items)
        self._plugins.clear()
        self._plugins.update(state.plugins)
        self._broken.clear()
        self._broken.update(state.broken)
        self._eps = None if state.entry_points is None else dict(state.entry_points)
        self._entry_points_loaded = state.entry_points_loaded
