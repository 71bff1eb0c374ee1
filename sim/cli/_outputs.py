"""Checks of command-line values that are not a scenario or a log: output paths and lists.

Every option that names something a command writes (``--out``, ``--work``, ``--results``,
``--generated-dir``, ...) passes :func:`check_out_path` -- as the option's callback, so it runs
while the arguments are parsed, before any work and before any folder is made. An unusable path
is a usage error (one line, exit 2).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Literal

import typer

from sim.fsutil import make_temp_dir

__all__ = [
    "NAME_MAX",
    "PATH_MAX",
    "check_out_path",
    "check_planner",
    "horizon_seconds",
    "out_dir",
    "out_file",
    "out_problem",
    "parse_int_list",
    "split_names",
]

#: longest file or folder name (bytes) and longest path (bytes) accepted for an output
NAME_MAX = 255
PATH_MAX = 4095


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    return "a socket or special file"


def _nearest_existing(p: Path) -> Path:
    """The deepest existing ancestor of ``p`` (``p`` made absolute)."""
    a = Path(os.path.abspath(p)).parent
    while not os.path.lexists(a) and a != a.parent:
        a = a.parent
    return a


def _probe(folder: Path) -> str | None:
    """None when a folder can be created (and removed) in ``folder``, else why not."""
    try:
        os.rmdir(make_temp_dir(folder, prefix=".loopdrive-probe-"))
    except OSError as exc:
        return f"cannot write in {folder} ({exc.strerror or exc})"
    return None


def out_problem(path: str | os.PathLike[str], kind: Literal["dir", "file"] = "dir") -> str | None:
    """Why ``path`` cannot be written as a folder (``kind="dir"``) or a file (``"file"``), or None.

    Refused: an empty name, a NUL byte, a name over :data:`NAME_MAX` or a path over
    :data:`PATH_MAX` bytes; an existing path of the wrong kind (a file or device for a folder; a
    folder, device, FIFO or socket for a file -- so ``/dev/full`` is refused); a path under a
    file; a place where nothing can be created (read-only, no permission, ``/proc``): checked by
    creating and removing an empty folder in the deepest existing folder on the way.
    """
    text = os.fspath(path)
    if not text:
        return "expected a path, got an empty string"
    if "\0" in text:
        return "expected a path, got one with a NUL byte"
    if len(os.fsencode(text)) > PATH_MAX:
        return f"path of {len(os.fsencode(text))} bytes (at most {PATH_MAX})"
    p = Path(text)
    for part in p.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            return f"a name of {len(os.fsencode(part))} bytes (at most {NAME_MAX})"
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        st = None
    except OSError as exc:
        return f"cannot use it ({exc.strerror or exc})"
    if st is not None:
        if kind == "dir" and not stat.S_ISDIR(st.st_mode):
            return f"expected a folder, got {_kind_of(st.st_mode)}"
        if kind == "file" and not stat.S_ISREG(st.st_mode):
            return f"expected a file, got {_kind_of(st.st_mode)}"
        return _probe(p if kind == "dir" else Path(os.path.abspath(p)).parent)
    if kind == "file" and text.endswith(os.sep):
        return "expected a file name, got a path ending in a separator"
    anc = _nearest_existing(p)
    if not anc.is_dir():
        return f"cannot create it: {anc} is {_kind_of(os.stat(anc).st_mode) if anc.exists() else 'missing'}, not a folder"
    return _probe(anc)


def check_out_path(
    path: str | os.PathLike[str], kind: Literal["dir", "file"] = "dir", *, option: str = "--out"
) -> Path:
    """``path`` as a Path when it can be written as a folder / file (see :func:`out_problem`);
    otherwise a :class:`typer.BadParameter` naming ``option`` and the path."""
    problem = out_problem(path, kind)
    if problem is not None:
        raise typer.BadParameter(f"{os.fspath(path)!s}: {problem}", param_hint=option)
    return Path(path)


def _callback(kind: Literal["dir", "file"]) -> Any:
    def check(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> Path | None:
        if value is None or ctx.resilient_parsing:
            return value
        problem = out_problem(value, kind)
        if problem is not None:
            raise typer.BadParameter(f"{os.fspath(value)}: {problem}")
        return value

    return check


#: option callback: the value must be writable as a folder (see :func:`out_problem`)
out_dir = _callback("dir")
#: option callback: the value must be writable as a file (see :func:`out_problem`)
out_file = _callback("file")


def parse_int_list(text: str | None, option: str, *, minimum: int | None = None) -> list[int] | None:
    """``"0,1,2"`` as ``[0, 1, 2]`` (None for None/empty); a bad item, or one below ``minimum``
    or beyond 64 bits, is a :class:`typer.BadParameter` naming ``option``."""
    if text is None or not text.strip():
        return None
    out: list[int] = []
    for item in text.split(","):
        s = item.strip()
        try:
            v = int(s)
        except ValueError:
            raise typer.BadParameter(
                f"expected comma-separated integers, got {s!r} in {text!r}", param_hint=option
            ) from None
        if abs(v) > 2**63 - 1 or (minimum is not None and v < minimum):
            bound = f">= {minimum} and " if minimum is not None else ""
            raise typer.BadParameter(
                f"expected integers {bound}of at most 64 bits, got {v}", param_hint=option
            )
        out.append(v)
    return out


def horizon_seconds(ctx: typer.Context, param: typer.CallbackParam, value: float | None) -> float | None:
    """Option callback of an episode length in seconds: in (0, ``LIMITS.max_time_s``] (the
    scenario files' own limit)."""
    if value is None or ctx.resilient_parsing:
        return value
    from sim.scenario_limits import LIMITS

    if not 0.0 < value <= LIMITS.max_time_s:
        raise typer.BadParameter(f"expected seconds in (0, {LIMITS.max_time_s:g}], got {value:g}")
    return value


def split_names(text: str, option: str) -> list[str]:
    """``"a, b,c"`` as ``["a", "b", "c"]``; an empty list is a :class:`typer.BadParameter`."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise typer.BadParameter(f"expected comma-separated names, got {text!r}", param_hint=option)
    return names


def check_planner(name: str | None, option: str = "--planner") -> str | None:
    """``name`` when it is a registered planner (built-ins and entry points), else a
    :class:`typer.BadParameter` listing the known ones; None passes."""
    if name is None:
        return None
    from sim.planning import PLANNERS

    if name not in PLANNERS:
        raise typer.BadParameter(
            f"unknown planner {name!r}; known: {', '.join(PLANNERS.names())}", param_hint=option
        )
    return name
