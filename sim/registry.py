"""One generic name -> factory registry, shared by planners, metrics, behaviours, observations,
render backends and mining triggers.

Third-party packages add entries through an entry-point group (for example
``loopdrive.planners``); those are loaded lazily the first time a name is looked up that the
built-in entries do not know.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from sim.errors import RegistryError

__all__ = ["Registry"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to factories (classes or functions) of one kind.

    Args:
        kind: human name of what is registered ("planner", "metric", ...), used in messages.
        entry_point_group: optional entry-point group scanned for third-party additions.
    """

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
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

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        assert self.entry_point_group is not None
        for ep in entry_points(group=self.entry_point_group):
            if ep.name in self._items:
                continue
            try:
                self._items[ep.name] = ep.load()
            except Exception as exc:  # a broken plugin must not break the built-ins
                log.warning("could not load %s %r from entry point %s: %s", self.kind, ep.name, ep.value, exc)

    def get(self, name: str) -> T:
        """The factory registered as ``name``; :class:`RegistryError` lists the known names."""
        if name not in self._items:
            self._load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        """Sorted names, including those from entry points."""
        self._load_entry_points()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name not in self._items:
            self._load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
