"""The importer registry: name -> importer function (entry-point group ``loopdrive.importers``).

Kept apart from :mod:`sim.importers` so a built-in importer registers itself without importing
the package that loads it (no import cycle).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sim.registry import Registry

__all__ = ["IMPORTERS", "Importer"]

#: ``importer(source, out, **options) -> the drive-log folder written``
Importer = Callable[..., Path]

#: name -> importer function; entry-point group ``loopdrive.importers``.
IMPORTERS: Registry[Importer] = Registry("importer", "loopdrive.importers")
