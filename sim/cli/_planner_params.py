"""Planner parameters from the command line: ``--planner-param [PLANNER.]KEY=VALUE`` (repeatable)
and ``--planner-params JSON``, one parser and one check for every command that takes them.

* ``KEY=VALUE`` sets a parameter of the command's one planner; with several planners in play
  (``leaderboard``, or ``run`` over scenarios of different planners) write ``PLANNER.KEY=VALUE``.
* ``VALUE`` is read as JSON (``3``, ``0.5``, ``true``, ``null``, ``"text"``, ``[1, 2]``) and,
  when it is not JSON, as the plain string (``weights=models/bc.safetensors``).
* ``--planner-params`` is a JSON object, either planner -> params (``{"sb3": {"path": ...}}``) or,
  where the command has one planner, the params themselves (``{"weights": ...}``);
  ``--planner-param`` values are applied over it.

Every planner's parameters are then checked against its declared schema (``Planner.Params``,
through the planner registry) exactly as ``planner.params`` of a scenario file is: an unknown key
or a bad value is a one-line usage error (exit 2) naming the option, before anything runs. Keys a
planner takes only from code (:attr:`~sim.planning.Planner.code_params`, e.g. sb3's
``trust_pickle``) are refused too: the opt-in to unpickling is the ``--trust-pickle`` flag alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import typer

__all__ = ["PARAM_HELP", "parse_planner_params", "parse_value"]

#: help text of the ``--planner-param`` option
PARAM_HELP = ("A planner parameter as KEY=VALUE (repeatable; PLANNER.KEY=VALUE when several planners run), e.g. "
              "weights=models/bc.safetensors. VALUE is read as JSON (3, 0.5, true, null, \"x\") else as text; "
              "checked like planner.params of a scenario file.")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a parameter value")


def parse_value(text: str) -> Any:
    """``text`` as a JSON value (``NaN``/``Infinity`` excepted), else ``text`` itself."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return text


def _split(item: str, planners: Sequence[str], option: str) -> tuple[str, str, Any]:
    """(planner, key, value) of one ``[PLANNER.]KEY=VALUE``; planner ``""`` when not named."""
    key, eq, value = item.partition("=")
    key = key.strip()
    if not eq or not key:
        raise typer.BadParameter(f"expected KEY=VALUE or PLANNER.KEY=VALUE, got {item!r}", param_hint=option)
    planner, dot, name = key.rpartition(".")
    if dot and planner not in planners:
        known = ", ".join(planners) or "none"
        raise typer.BadParameter(f"{key!r} names planner {planner!r}, which does not run here (planners: {known})", param_hint=option)
    if not name:
        raise typer.BadParameter(f"expected a parameter name after {key!r}", param_hint=option)
    return planner, name, parse_value(value)


def _json_params(text: str | None, planners: Sequence[str], option: str) -> dict[str, dict[str, Any]]:
    """``--planner-params`` as planner -> params."""
    if not text:
        return {}
    try:
        v = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise typer.BadParameter(f"expected a JSON object ({exc})", param_hint=option) from None
    if not isinstance(v, dict):
        raise typer.BadParameter(f"expected a JSON object, got {type(v).__name__}", param_hint=option)
    if not v:
        return {}
    if all(isinstance(x, dict) for x in v.values()) and (len(planners) != 1 or set(v) <= set(planners)):
        stray = sorted(set(v) - set(planners))
        if stray:
            raise typer.BadParameter(f"params given for {', '.join(map(repr, stray))}, which do not run here (planners: {', '.join(planners)})",
                                     param_hint=option)
        return {str(k): dict(x) for k, x in v.items()}
    if len(planners) == 1:
        return {planners[0]: v}  # the one planner's params themselves
    raise typer.BadParameter(f"expected a JSON object of planner name -> params object (planners: {', '.join(planners)})", param_hint=option)


def _check(planner: str, params: Mapping[str, Any], option: str) -> None:
    """``params`` against ``planner``'s declared schema, as a scenario file's ``planner.params``."""
    from sim.planning import PLANNERS

    cls = PLANNERS.get(planner)
    for k in params:
        if k in getattr(cls, "code_params", ()):
            hint = " (the opt-in is the --trust-pickle flag)" if k == "trust_pickle" else ""
            raise typer.BadParameter(f"{planner}: {k!r} cannot be given on the command line{hint}", param_hint=option)
    problems = cls.param_problems(params, from_file=True)
    if problems:
        loc, msg = problems[0]
        where = ".".join(str(x) for x in loc) or "params"
        raise typer.BadParameter(f"{planner}: {where}: {msg}", param_hint=option)


def parse_planner_params(
    items: Sequence[str] | None,
    planners: Sequence[str],
    *,
    json_text: str | None = None,
    option: str = "--planner-param",
    json_option: str = "--planner-params",
) -> dict[str, dict[str, Any]]:
    """The parameters given on the command line, per planner (only planners given some appear),
    each set checked against its planner's schema. ``planners``: the registered planners the
    command runs (a bare ``KEY=VALUE`` needs exactly one). :class:`typer.BadParameter` (exit 2,
    one line naming the option) on any problem."""
    out = _json_params(json_text, planners, json_option)
    for planner, params in out.items():
        _check(planner, params, json_option)
    for item in items or ():
        planner, key, value = _split(item, planners, option)
        if not planner:
            if len(planners) != 1:
                raise typer.BadParameter(f"{item!r} is ambiguous with several planners ({', '.join(planners)}): write PLANNER.{key}=VALUE",
                                         param_hint=option)
            planner = planners[0]
        out.setdefault(planner, {})[key] = value
    if items:
        for planner, params in out.items():
            _check(planner, params, option)
    return out
