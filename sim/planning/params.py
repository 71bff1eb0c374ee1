"""The parameter schema of a planner (``Planner.Params``): pydantic field types that refuse
coercion, the base model, and the ``(path, message)`` problems a scenario file's
``planner.params`` is checked against (:meth:`sim.planning.Planner.param_problems`)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

__all__ = ["Bool", "Float", "Int", "NoParams", "ParamProblem", "PlannerParams", "file_params", "param_errors"]

#: (path under ``planner.params``, message)
ParamProblem = tuple[tuple[str | int, ...], str]


def _plain_number(v: Any) -> Any:
    """numpy scalars as Python numbers; ``True`` is not a number (strict fields refuse it)."""
    return v.item() if isinstance(v, np.generic) else v


#: a finite float parameter (ints accepted; bools and strings refused)
Float = Annotated[float, BeforeValidator(_plain_number), Field(strict=True, allow_inf_nan=False)]
#: an integer parameter (bools, floats and strings refused)
Int = Annotated[int, BeforeValidator(_plain_number), Field(strict=True)]
#: a boolean parameter (``1`` or ``"yes"`` refused)
Bool = Annotated[bool, BeforeValidator(_plain_number), Field(strict=True)]


class PlannerParams(BaseModel):
    """Base of a planner's declared parameters (``Planner.Params``): unknown keys are errors,
    numbers are finite, nothing is coerced from another type (``true`` is not 1). Fields carry
    their defaults and units; :meth:`sim.planning.Planner.param_problems` reports against this
    schema."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class NoParams(PlannerParams):
    """The parameters of a planner that takes none."""


def file_params(params: Mapping[str, Any], code_params: Iterable[str]) -> dict[str, Any]:
    """The params a ``Params`` model describes: code-only ones dropped, paths as str."""
    code = frozenset(code_params)
    return {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in params.items() if k not in code}


def param_errors(planner: str, schema: type[PlannerParams], exc: ValidationError) -> list[ParamProblem]:
    """pydantic's errors of ``schema`` as one-line problems naming what was expected and got."""
    out: list[ParamProblem] = []
    for e in exc.errors(include_url=False):
        loc = tuple(e["loc"])
        got = repr(e.get("input"))
        got = got if len(got) <= 60 else got[:57] + "..."
        if e["type"] == "extra_forbidden":
            known = sorted(schema.model_fields)
            msg = f"unknown parameter of planner {planner!r}; " + (
                f"known: {', '.join(known)}" if known else "it takes no parameters"
            )
        elif e["type"] == "missing":
            msg = "required parameter is missing"
        elif str(e["msg"]).startswith(("Input should be ", "Value error, ")):
            text = str(e["msg"]).removeprefix("Value error, ").removeprefix("Input should be ")
            msg = f"expected {text}, got {got}"
        else:
            text = str(e["msg"])
            msg = f"{text[:1].lower() + text[1:]} (got {got})"
        out.append((loc, msg))
    return out
