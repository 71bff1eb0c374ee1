"""The loopdrive error hierarchy.

Every user mistake (a bad drive log, scenario file, bundle, action or name) raises a subclass of
:class:`LoopdriveError` whose message names the file (when there is one), the field path inside it
and what was expected, so the CLI can print it as a single line::

    logs/town-s0/tracks.json: tracks[3].boxes[0].l: expected a positive number, got -1.0
"""

from __future__ import annotations

import os

__all__ = [
    "BundleError",
    "EpisodeStateError",
    "LogFormatError",
    "LoopdriveError",
    "RegistryError",
    "ResultsError",
    "ScenarioError",
]


class LoopdriveError(Exception):
    """Base class of every error loopdrive raises on purpose.

    Args:
        message: what was expected / what went wrong.
        file: the file (or folder) the problem is in, if any.
        field: dotted field path inside that file (``frames[3].transform_matrix``), if any.
        line: 1-based line number inside ``file`` when known (YAML files).
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | os.PathLike[str] | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.field = field
        self.line = line
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """``FILE[:LINE]: field.path: message`` with the missing parts left out."""
        parts: list[str] = []
        if self.file is not None:
            parts.append(f"{self.file}:{self.line}" if self.line is not None else self.file)
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
        return ": ".join(parts)


class LogFormatError(LoopdriveError):
    """A drive log folder is missing, malformed, or of an unknown format version."""


class ScenarioError(LoopdriveError):
    """A scenario (YAML file or in-code spec) or a world edit is invalid."""


class BundleError(LoopdriveError):
    """A scene bundle is missing, corrupt, tampered with, or does not match its log."""


class RegistryError(LoopdriveError):
    """An unknown name was asked of a registry (planner, metric, behaviour, renderer, ...)."""


class ResultsError(LoopdriveError):
    """A benchmark results file given as input is missing, malformed or was measured on another
    drive log."""


class EpisodeStateError(LoopdriveError):
    """The environment or engine was used out of order or with a non-finite action."""
