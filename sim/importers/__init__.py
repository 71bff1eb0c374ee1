"""Dataset importers: one adapter per external format, each writing a loopdrive drive log.

Importers are functions ``(source: Path, out: Path, **options) -> Path`` registered by name in
:data:`IMPORTERS`; third-party packages add formats through the ``loopdrive.importers`` entry-point
group. ``loopdrive import NAME SOURCE --out LOG`` runs one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sim.registry import Registry

__all__ = ["IMPORTERS", "Importer", "import_log"]

Importer = Callable[..., Path]

#: name -> importer function; entry-point group ``loopdrive.importers``.
IMPORTERS: Registry[Importer] = Registry("importer", "loopdrive.importers")


def import_log(fmt: str, source: str | Path, out: str | Path, **options: Any) -> Path:
    """Run the importer ``fmt`` on ``source`` and write a drive log to ``out``."""
    from sim.importers import nuscenes  # noqa: F401  (registers the built-in importers)

    return IMPORTERS.get(fmt)(Path(source), Path(out), **options)
