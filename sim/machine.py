"""What a benchmark records about the machine and the code it ran on.

One implementation for every ``loopdrive bench ...`` result (and the planners' latency bench): the
same keys in every JSON, so a reader compares runs without knowing which benchmark wrote them.

Keys of :func:`machine_info`:

- ``cpu_count``, ``processor``, ``platform``, ``python``: the machine and interpreter;
- ``load_average``: the 1-, 5- and 15-minute load averages (runnable processes) when it was
  called, None where the OS has none. Other processes compete for the CPU, so a speed figure is
  read together with it. A benchmark that takes the record at its start adds
  ``load_average_at_end`` (:func:`load_average`) when it ends;
- whatever the caller adds (``**extra``, e.g. ``torch_threads``: the core does not import torch);
- ``git_head`` and ``git_dirty`` (with ``git_paths``): the commit of this checkout and whether
  any of ``git_paths`` (relative to the repository root; empty: the whole tree) had uncommitted
  changes (``git_head`` None outside a checkout).
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["git_output", "load_average", "machine_info"]

_ROOT = Path(__file__).resolve().parents[1]


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages, rounded to 0.01 (None where the OS has none)."""
    if not hasattr(os, "getloadavg"):
        return None
    return [round(x, 2) for x in os.getloadavg()]


def git_output(*args: str) -> str | None:
    """Output of ``git ARGS`` in the checkout of this package (None when git is unavailable or
    the package is not in a checkout): what benchmarks record as the code they ran."""
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True, timeout=10, cwd=_ROOT).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(*, git_paths: Sequence[str] | None = None, **extra: Any) -> dict[str, Any]:
    """The machine, its load now, optionally the git state, and ``extra`` (module docstring).
    Cheap without ``git_paths`` (no subprocess)."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": load_average(),
    }
    if git_paths is not None:
        info["git_head"] = git_output("rev-parse", "HEAD")
        info["git_dirty"] = bool(git_output("status", "--porcelain", "--", *git_paths))  # no paths: the whole tree
    info.update(extra)
    return info
