"""Dataset importers: one plug-in per external format, each writing a loopdrive drive log.

An importer is a function registered by name in :data:`IMPORTERS`::

    def import_myformat(source: Path, out: Path, *, scene: str | None = None, overwrite: bool = False,
                        **format_options) -> Path

It reads the data set at ``source`` and writes one scene as a drive log at ``out`` with
:class:`sim.log.LogWriter` (atomic, validated before it is published), raising
:class:`~sim.errors.LogFormatError` naming the file and field of a bad input before ``out`` is
made. Built in: ``nuscenes`` (:mod:`sim.importers.nuscenes`). A third-party package adds a format
with one module and one entry point in the ``loopdrive.importers`` group::

    [project.entry-points."loopdrive.importers"]
    myformat = "my_package.my_module:import_myformat"

``loopdrive import NAME SOURCE --out LOG`` then runs it. The command passes each option the user
gives as the keyword argument of the same name -- ``--scene`` (``scene``), ``--overwrite``
(``overwrite``), ``--version`` (``version``), ``--cameras`` (``cameras``), ``--sweeps``
(``sweeps``), ``--max-gap`` (``max_gap_s``) -- and refuses one the importer's signature does not
declare (:func:`check_options`). See ``docs/extending.md``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from sim.errors import RegistryError
from sim.importers.registry import IMPORTERS, Importer

__all__ = ["IMPORTERS", "Importer", "check_options", "get_importer", "import_log"]


def get_importer(fmt: str) -> Importer:
    """The importer registered as ``fmt`` (built-ins and entry points; RegistryError listing the known ones)."""
    from sim.importers import nuscenes  # noqa: F401  (registers the built-in importers)

    return IMPORTERS.get(fmt)


def check_options(fmt: str, importer: Importer, options: dict[str, Any], flags: dict[str, str] | None = None) -> None:
    """Refuse an option ``importer`` does not declare (RegistryError naming it -- as ``flags[name]``,
    the command-line option, when given -- and the accepted ones)."""
    params = inspect.signature(importer).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in list(params.items())[2:] if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for name in options:
        if name not in accepted:
            shown = (flags or {}).get(name, repr(name))
            raise RegistryError(f"importer {fmt!r} takes no option {shown} (it takes: {', '.join(accepted) or 'none'})")


def import_log(fmt: str, source: str | Path, out: str | Path, **options: Any) -> Path:
    """Run the importer ``fmt`` on ``source`` and write a drive log to ``out``; ``options`` are
    keyword arguments the importer declares (see the module docstring)."""
    fn = get_importer(fmt)
    check_options(fmt, fn, options)
    return fn(Path(source), Path(out), **options)
