"""The typer application objects and the shared error handling of the ``loopdrive`` command.

Each subcommand module (``sim/cli/<area>.py``) adds its commands to :data:`app` (or to a group such as
:data:`bench_app`) and stays thin: it parses arguments, calls the library function that tests
and notebooks also call, and prints a summary with rich.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import typer
from rich.console import Console

from sim.cli._group import LoopdriveGroup, err_console, print_error
from sim.cli._outputs import (
    check_out_path,
    check_planner,
    horizon_seconds,
    out_dir,
    out_file,
    parse_int_list,
    split_names,
)
from sim.errors import LoopdriveError

__all__ = [
    "LazyProgress",
    "LoopdriveGroup",
    "app",
    "bench_app",
    "check_bundle_and_log",
    "check_out_path",
    "check_planner",
    "console",
    "err_console",
    "fail",
    "horizon_seconds",
    "out_dir",
    "out_file",
    "parse_int_list",
    "print_error",
    "split_names",
    "user_errors",
]

app = typer.Typer(
    name="loopdrive",
    help="loopdrive: a closed-loop driving simulator (synthetic towns, neural scenes, Gymnasium env, metrics).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=LoopdriveGroup,
)
bench_app = typer.Typer(
    help="Benchmarks; each writes JSON into runs/bench/<UTC time>/ (or --out), and into the repository's benchmarks/results/ "
    "only with --publish.", no_args_is_help=True, cls=LoopdriveGroup)
app.add_typer(bench_app, name="bench")

console = Console()


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error to stderr and return the Exit to raise (exit code 2 = usage/input)."""
    print_error(message)
    return typer.Exit(code)


def bc_weights_option(value: str | None, *, scratch: bool = False, option: str = "--init-weights") -> str | None:
    """The file an ``--init-weights`` value names: ``shipped`` is the shipped ``bc_policy``
    weights, ``scratch`` (where ``scratch`` allows it) and None are no weights, anything else a
    weights path that must exist and load into the network its ``.json`` config describes (every
    tensor name and shape checked, nothing executed); :class:`typer.BadParameter` otherwise, before
    any work starts."""
    if value is None or (scratch and value == "scratch"):
        return None
    from sim.planning.training import ImitationTrainer, get_trainer

    trainer = get_trainer("bc", ImitationTrainer)
    path = str(trainer.shipped_weights) if value == "shipped" else value
    if not os.path.isfile(path):
        choices = "a path, `shipped` or `scratch`" if scratch else "a .safetensors path or `shipped`"
        raise typer.BadParameter(f"no weights file {path} ({choices})", param_hint=option)
    try:
        trainer.check_weights(path)
    except LoopdriveError as exc:
        raise typer.BadParameter(exc.one_line(), param_hint=option) from None
    return path


def check_bundle_and_log(bundle: str | os.PathLike[str] | None, log: str | os.PathLike[str] | None) -> None:
    """Refuse an unusable drive log (:class:`~sim.errors.LogFormatError`, headers checked) or scene
    bundle (:class:`~sim.errors.BundleError`, fully loaded: weights against their recorded sha256
    and the model) before a benchmark or evaluation starts any work."""
    if log is not None:
        from sim.log import validate_log

        validate_log(log, check_payloads=False)
    if bundle is not None:
        from sim.recon.bundle import load_bundle

        load_bundle(bundle)


class LazyProgress:
    """A one-task rich progress display that starts at its first :meth:`update`: a command whose
    library call fails its checks inside the ``with`` block prints its one error line and nothing
    else (a started rich ``Progress`` prints its bar when it stops)."""

    def __init__(self, make: Callable[[], Any], description: str, total: float | None = None, **fields: Any) -> None:
        self._make, self._description, self._total, self._fields = make, description, total, fields
        self._progress: Any = None
        self._task: Any = None

    def update(self, **kwargs: Any) -> None:
        """``Progress.update`` of the task (the display starts on the first call)."""
        if self._progress is None:
            self._progress = self._make()
            self._progress.start()
            self._task = self._progress.add_task(self._description, total=self._total, **self._fields)
        self._progress.update(self._task, **kwargs)

    def __enter__(self) -> LazyProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a :class:`LoopdriveError` into a one-line message and exit code 2."""
    try:
        yield
    except LoopdriveError as exc:
        raise fail(exc.one_line()) from None


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level.")) -> None:
    # one intra-op thread for torch (read when torch is first imported, so it costs nothing here):
    # the commands that render or train are fastest with one thread on two shared cores, and the
    # neural renderer overlaps camera and LiDAR in two threads itself; OMP_NUM_THREADS set by the
    # user wins, and the commands with --threads set their own count
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
