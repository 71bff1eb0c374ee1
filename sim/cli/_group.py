"""How the ``loopdrive`` command reports failures: one line on stderr, a documented exit code.

:class:`LoopdriveGroup` is the click group class of the application (and of its sub-groups
``bench``, ``train``, ``actors``). It lives in the app object, so ``typer.testing.CliRunner``
invocations behave exactly as the console entry point:

========================================================  ====  ===========================================
what happened                                             exit  stderr
========================================================  ====  ===========================================
success                                                   0
a usage error (unknown option, missing or bad value)      2     ``error: <what> (see loopdrive CMD --help)``
a :class:`~sim.errors.LoopdriveError` (bad input)         2     ``error: FILE: field.path: what was expected``
an ``OSError`` (unwritable output, full disk, ...)        2     ``error: PATH: <strerror>``
the command's own verdict (e.g. every episode errored)    1     the command's summary
any other exception (a bug)                               1     ``error: unexpected TYPE: message ...``
Ctrl-C                                                    130   ``error: interrupted``
========================================================  ====  ===========================================

No traceback is printed unless the top-level ``--verbose`` / ``-v`` flag is given. Every number
option is checked before the command runs: a float must be finite (``nan``, ``inf`` and values
that overflow to them are usage errors) and an integer must fit in 64 bits.
"""

from __future__ import annotations

import math
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, get_args, get_origin

import typer
from rich.console import Console
from rich.text import Text
from typer._click import exceptions as click_exc
from typer.core import TyperGroup

from sim.errors import LoopdriveError

__all__ = ["LoopdriveGroup", "err_console", "error_line", "one_line", "print_error"]

err_console = Console(stderr=True)

_INT64_MAX = 2**63 - 1
_VERBOSE_FLAGS = ("-v", "--verbose")


def one_line(text: str) -> str:
    """``text`` with every line break (and the blanks around it) folded into one space."""
    return re.sub(r"\s*[\r\n]+\s*", " ", str(text)).strip()


def print_error(message: str) -> None:
    """``error: MESSAGE`` on stderr as exactly one line (newlines folded, the message printed
    verbatim -- no rich markup is read from it -- and never wrapped)."""
    err_console.print(
        Text.assemble(("error:", "bold red"), " ", one_line(message)), highlight=False, soft_wrap=True
    )


def _os_error_line(exc: OSError) -> str:
    what = exc.strerror or str(exc) or type(exc).__name__
    names = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
    return ": ".join([*names, what])


def error_line(exc: BaseException) -> tuple[str, int]:
    """The one-line message and exit code of an exception that ended a command (see the module
    docstring's table)."""
    if isinstance(exc, LoopdriveError):
        return exc.one_line(), 2
    if isinstance(exc, OSError):
        return _os_error_line(exc), 2
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", 130
    text = str(exc) or "(no message)"
    return f"unexpected {type(exc).__name__}: {text} (a bug: rerun with --verbose for the traceback)", 1


def _usage_line(exc: click_exc.UsageError) -> str:
    ctx = exc.ctx
    path = ctx.command_path if ctx is not None else "loopdrive"
    return f"{one_line(exc.format_message())} (see {path} --help)"


def _verbose(args: Sequence[str]) -> bool:
    """Whether the top-level ``--verbose`` / ``-v`` flag precedes the subcommand in ``args``."""
    for a in args:
        if a in _VERBOSE_FLAGS:
            return True
        if not a.startswith("-"):
            return False
    return False


# ------------------------------------------------------------------------- number options
def _number_kind(annotation: Any) -> type | None:
    """``float`` / ``int`` for a number parameter (also a list or tuple of them), else None."""
    if get_origin(annotation) in (list, tuple):
        kinds = {a for a in get_args(annotation) if a is not Ellipsis}
        return next(iter(kinds)) if len(kinds) == 1 and next(iter(kinds)) in (float, int) else None
    return annotation if annotation in (float, int) else None


def _check_number(kind: type, value: Any) -> None:
    if kind is float and isinstance(value, float) and not math.isfinite(value):
        raise typer.BadParameter(f"expected a finite number, got {value}")
    if kind is int and isinstance(value, int) and not -_INT64_MAX <= value <= _INT64_MAX:
        raise typer.BadParameter(
            f"expected an integer of at most 64 bits (|value| <= {_INT64_MAX}), got {value}"
        )


def _guarded(kind: type, callback: Callable[..., Any] | None) -> Callable[..., Any]:
    def check(ctx: Any, param: Any, value: Any) -> Any:
        for v in value if isinstance(value, list | tuple) else (value,):
            _check_number(kind, v)
        return callback(ctx, param, value) if callback is not None else value

    check._loopdrive_guard = True  # type: ignore[attr-defined]
    return check


def guard_numbers(cmd: Any) -> Any:
    """Make every float parameter of ``cmd`` refuse non-finite values and every integer one
    values beyond 64 bits (before its own callback, if any, runs); returns ``cmd``."""
    for p in getattr(cmd, "params", ()):
        desc = getattr(p, "type_descriptor", None)
        kind = _number_kind(desc.annotation) if desc is not None else None
        if kind is None or getattr(p.callback, "_loopdrive_guard", False):
            continue
        p.callback = _guarded(kind, p.callback)
    return cmd


# --------------------------------------------------------------------------------- group
class LoopdriveGroup(TyperGroup):
    """The ``loopdrive`` click group: one-line errors and exit codes for every subcommand (see
    the module docstring)."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        return guard_numbers(cmd) if cmd is not None else None

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            rv = super().main(argv, prog_name, complete_var, False, windows_expand_args, **extra)
        except click_exc.NoArgsIsHelpError as exc:  # the help text was printed already
            if exc.format_message().strip():
                exc.show()
            code = exc.exit_code
        except click_exc.UsageError as exc:
            print_error(_usage_line(exc))
            code = 2
        except click_exc.ClickException as exc:
            print_error(exc.format_message())
            code = exc.exit_code
        except typer.Abort:
            print_error("aborted")
            code = 1
        except Exception as exc:
            if _verbose(argv):
                traceback.print_exception(exc, file=sys.stderr)
            message, code = error_line(exc)
            print_error(message)
        else:
            # non-standalone click returns the command's value, or the code of an Exit it raised
            code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
            if code == 130:  # typer turns Ctrl-C into Exit(130)
                print_error("interrupted")
            if not standalone_mode:
                return rv
        if standalone_mode:
            sys.exit(code)
        return code
