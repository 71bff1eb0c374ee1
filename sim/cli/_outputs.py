"""Checks of command-line values that are not a scenario or a log: output paths and lists.

Every option that names something a command writes (``--out``, ``--work``, ``--results``,
``--generated-dir``, ...) passes :func:`check_out_path` -- as the option's callback, so it runs
while the arguments are parsed, before any work and before any folder is made. An unusable path
is a usage error (one line, exit 2).

Benchmarks write through :func:`bench_output`: by default into a fresh run folder
``runs/bench/<UTC time>/`` (relative to the working directory), or where ``--out`` says, and into
the repository's ``benchmarks/results/`` -- the figures behind the README's tables -- only with
``--publish``. A new ``loopdrive bench`` command takes :func:`bench_out_option` and
:func:`publish_option` and writes to ``bench_output(...).path``, then calls ``.publish()``.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import typer

from sim.fsutil import make_temp_dir

__all__ = [
    "BENCH_RUNS",
    "NAME_MAX",
    "PATH_MAX",
    "BenchOutput",
    "bench_out_option",
    "bench_output",
    "bench_run_dir",
    "check_out_path",
    "check_planner",
    "horizon_seconds",
    "out_dir",
    "out_file",
    "out_problem",
    "parse_int_list",
    "publish_option",
    "repository_results",
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


# ---------------------------------------------------------------------------------- benchmarks
#: the folder under which each benchmark run gets its own ``<UTC time>`` folder by default
BENCH_RUNS = Path("runs") / "bench"


def bench_run_dir(now: float | None = None) -> Path:
    """``runs/bench/<UTC time>`` (``YYYYmmddTHHMMSSZ``) for the time ``now`` (default: now)."""
    return BENCH_RUNS / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def repository_results() -> Path:
    """The ``benchmarks/results/`` folder of the loopdrive checkout this code runs from (found from
    the package's own location, never from the working directory); a :class:`typer.BadParameter`
    for ``--publish`` when loopdrive does not run from a checkout (an installed wheel)."""
    import sim

    root = Path(sim.__file__).resolve().parent.parent
    results = root / "benchmarks" / "results"
    if not ((root / "pyproject.toml").is_file() and results.is_dir()):
        raise typer.BadParameter(
            f"loopdrive runs from {root}, not from a repository checkout with benchmarks/results/; nothing to publish into",
            param_hint="--publish",
        )
    return results


@dataclass(frozen=True)
class BenchOutput:
    """Where a benchmark writes (``path``) and, with ``--publish``, the repository copy it makes
    at the end (``published``, None without ``--publish``)."""

    path: Path
    published: Path | None = None

    def publish(self) -> Path | None:
        """Copy ``path`` onto ``published`` atomically (nothing without ``--publish``); the copy."""
        if self.published is None:
            return None
        from sim.fsutil import atomic_path

        with atomic_path(self.published) as tmp:
            shutil.copyfile(self.path, tmp)
        return self.published

    def wrote(self) -> str:
        """The closing line of a benchmark: what it wrote and, once published, where to."""
        if self.published is None:
            return f"wrote {self.path} (add --publish to copy it into the repository's benchmarks/results/)"
        return f"wrote {self.path}; published to {self.published}"


def bench_output(name: str, out: Path | None, publish: bool, *, run_dir: Path | None = None) -> BenchOutput:
    """The output of a benchmark whose result file is ``name`` (``"env.json"``): ``out`` when
    given, else ``run_dir / name`` (default :func:`bench_run_dir`); with ``publish`` also
    ``benchmarks/results/<name>`` of the checkout (:func:`repository_results`). Checked before
    any work: an unusable path is a :class:`typer.BadParameter`."""
    path = out if out is not None else (run_dir or bench_run_dir()) / name
    if out is None:
        check_out_path(path, "file")
    published = None
    if publish:
        published = repository_results() / name
        problem = out_problem(published, "file")
        if problem is not None:
            raise typer.BadParameter(f"{published}: {problem}", param_hint="--publish")
        if Path(os.path.abspath(path)) == Path(os.path.abspath(published)):
            published = None  # --out is already the published file
    return BenchOutput(path, published)


def bench_out_option(name: str, *flags: str) -> Any:
    """The ``--out`` option of a benchmark writing ``name`` (extra ``flags`` such as ``-o``)."""
    return typer.Option(
        None, "--out", *flags, callback=out_file,
        help=f"Result JSON (default: runs/bench/<UTC time>/{name}; the repository's benchmarks/results/ only with --publish).",
    )


def publish_option() -> Any:
    """The ``--publish`` flag of a benchmark: also copy its result into ``benchmarks/results/``."""
    return typer.Option(
        False, "--publish",
        help="Also copy the result into the repository's benchmarks/results/ (the figures behind the README tables).",
    )
