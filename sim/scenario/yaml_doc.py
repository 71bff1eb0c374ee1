"""YAML reading with line numbers (tags refused, node count capped), field paths, and pydantic
errors turned into ``FILE:LINE: field.path: what was expected`` problems."""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ValidationError

from sim import scenario_limits as lim
from sim.errors import ScenarioError
from sim.scenario.schema import _MAX_NODES, ScenarioModel
from sim.scenario_limits import (
    LIMITS,
)

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- YAML with lines
Path_ = tuple[str | int, ...]


def _fmt_path(path: Sequence[str | int]) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


@dataclass
class _Doc:
    file: str
    data: Any
    lines: dict[Path_, int]

    def line(self, path: Sequence[str | int]) -> int | None:
        """Line of the deepest known node on ``path`` (1-based)."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), None)

    def err(self, path: Sequence[str | int], message: str) -> ScenarioError:
        return ScenarioError(message, file=self.file, field=_fmt_path(path) or None, line=self.line(path))


def _tag_of(node: Any) -> str | None:
    tag = getattr(node, "tag", None)
    value = getattr(tag, "value", tag if isinstance(tag, str) else None)
    return value if value else None


#: the YAML core-schema tags a scenario may use (anything else, e.g. ``!!python/...``, is refused)
_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{t}" for t in ("map", "seq", "str", "int", "float", "bool", "null")
)


def _to_plain(
    node: Any, path: Path_, lines: dict[Path_, int], file: str, budget: list[int], stack: set[int]
) -> Any:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar

    budget[0] -= 1
    if budget[0] < 0:
        raise ScenarioError(
            f"file too large (more than {_MAX_NODES} YAML nodes after aliases)",
            file=file,
            field=_fmt_path(path) or None,
        )
    tag = _tag_of(node)
    if isinstance(node, TaggedScalar) and tag == "tag:yaml.org,2002:str":
        return str(node.value)
    if isinstance(node, TaggedScalar) or (tag is not None and tag not in _PLAIN_TAGS):
        raise ScenarioError(
            f"expected a plain YAML value, got a value tagged {tag!r}",
            file=file,
            field=_fmt_path(path) or None,
            line=lines.get(path),
        )
    if isinstance(node, CommentedMap | CommentedSeq):
        if id(node) in stack:
            raise ScenarioError(
                "expected a finite document, got a recursive alias",
                file=file,
                field=_fmt_path(path) or None,
                line=lines.get(path),
            )
        stack.add(id(node))
        try:
            if isinstance(node, CommentedMap):
                out: dict[str, Any] = {}
                for k in node:
                    try:
                        kl = node.lc.key(k)[0] + 1
                    except Exception:
                        kl = lines.get(path)
                    if not isinstance(k, str):
                        raise ScenarioError(
                            f"expected string keys, got {k!r}",
                            file=file,
                            field=_fmt_path(path) or None,
                            line=kl,
                        )
                    sub = (*path, k)
                    if kl is not None:
                        lines[sub] = kl
                    out[k] = _to_plain(node[k], sub, lines, file, budget, stack)
                return out
            items: list[Any] = []
            for i, v in enumerate(node):
                sub = (*path, i)
                with contextlib.suppress(Exception):
                    lines[sub] = node.lc.item(i)[0] + 1
                items.append(_to_plain(v, sub, lines, file, budget, stack))
            return items
        finally:
            stack.discard(id(node))
    return _scalar_to_plain(node, path, lines, file)


def _scalar_to_plain(node: Any, path: Path_, lines: dict[Path_, int], file: str) -> Any:
    """A YAML scalar as None/bool/int/float/str; dates and other types are refused."""
    if node is None or isinstance(node, bool):
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, datetime | date):
        raise ScenarioError(
            f"expected a number or a string, got a date ({node}); quote it",
            file=file,
            field=_fmt_path(path) or None,
            line=lines.get(path),
        )
    raise ScenarioError(
        f"unsupported YAML value of type {type(node).__name__}",
        file=file,
        field=_fmt_path(path) or None,
        line=lines.get(path),
    )


def _parse_yaml_text(text: str, file: str) -> _Doc:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError

    yaml = YAML(typ="rt", pure=True)
    yaml.allow_duplicate_keys = False
    yaml.Composer = lim.counting_composer(_MAX_NODES)
    try:
        raw = yaml.load(text)
    except lim.TooManyNodes:
        raise ScenarioError(f"file too large (more than {_MAX_NODES} YAML nodes)", file=file) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = (exc.problem or exc.context or "syntax error").strip()
        raise ScenarioError(f"not valid YAML: {what}", file=file, line=line) from None
    except RecursionError:
        raise ScenarioError("not valid YAML: nested too deeply", file=file) from None
    except Exception as exc:  # any other parser failure is still the user's file
        raise ScenarioError(
            f"not valid YAML: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(
                ": "
            ),
            file=file,
        ) from None
    lines: dict[Path_, int] = {(): 1}
    try:
        data = _to_plain(raw, (), lines, file, [_MAX_NODES], set())
    except RecursionError:
        raise ScenarioError("expected a document nested less deeply", file=file) from None
    return _Doc(file=file, data=data, lines=lines)


def read_yaml(path: str | os.PathLike[str]) -> tuple[Any, dict[Path_, int]]:
    """Read a YAML file into plain Python values (dict/list/str/int/float/bool/None) and a map from
    field paths (tuples of keys and indices) to 1-based line numbers. Tags are rejected; no Python
    objects are ever constructed. Raises :class:`ScenarioError`."""
    doc = _read_doc(path)
    return doc.data, doc.lines


def _read_doc(path: str | os.PathLike[str]) -> _Doc:
    from sim.fsutil import read_input_bytes

    file = str(path)
    # a folder, device, FIFO or oversized file is refused before a byte is read
    try:
        data = read_input_bytes(
            path, error=ScenarioError, max_bytes=LIMITS.max_file_bytes, what="a scenario file"
        )
    except ScenarioError as exc:
        raise ScenarioError(exc.message, file=file) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ScenarioError("expected UTF-8 text", file=file) from None
    return _parse_yaml_text(text, file)


# --------------------------------------------------------------------- pydantic errors -> lines
def _unwrap(tp: Any) -> list[Any]:
    """Member types of an annotation (Optional/Union/Annotated stripped)."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin is typing.Union or origin is types.UnionType:
        out: list[Any] = []
        for a in typing.get_args(tp):
            if a is not type(None):
                out.extend(_unwrap(a))
        return out
    return [tp]


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The pydantic model class that an error location points into (for 'known keys' hints)."""
    cur: list[Any] = [ScenarioModel]
    for part in loc:
        nxt: list[Any] = []
        for tp in cur:
            origin = typing.get_origin(tp)
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                if isinstance(part, str):
                    fld = tp.model_fields.get(part)
                    if fld is None:
                        for f in tp.model_fields.values():
                            if f.alias == part:
                                fld = f
                    if fld is not None:
                        nxt.extend(_unwrap(fld.annotation))
            elif origin in (list, tuple) and isinstance(part, int):
                args = [a for a in typing.get_args(tp) if a is not Ellipsis]
                if args:
                    nxt.extend(_unwrap(args[0] if origin is list else args[min(part, len(args) - 1)]))
            elif origin is dict and isinstance(part, str):
                nxt.extend(_unwrap(typing.get_args(tp)[1]))
        # discriminated-union tags appear in pydantic locations as the tag value ('insert')
        if not nxt and isinstance(part, str):
            for tp in cur:
                if (
                    isinstance(tp, type)
                    and issubclass(tp, BaseModel)
                    and "op" in tp.model_fields
                    and part in typing.get_args(tp.model_fields["op"].annotation)
                ):
                    nxt.append(tp)
        if not nxt:
            return None
        cur = [t for t in nxt if not (isinstance(t, type) and t is Any)]
        cur = cur or nxt
    for tp in cur:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return tp
    return None


def _data_path(data: Any, loc: Sequence[str | int]) -> Path_:
    """Map a pydantic error location onto the data (dropping union tags such as 'insert')."""
    out: list[str | int] = []
    cur = data
    for part in loc:
        in_dict = isinstance(cur, dict) and isinstance(part, str) and part in cur
        in_list = isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur)
        if in_dict or in_list:
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, dict) and isinstance(part, str) and cur.get("op") == part:
            continue  # discriminator tag
        elif isinstance(part, str) and (part.startswith("function-") or "[" in part):
            continue
        else:
            out.append(part)
            cur = None
    return tuple(out)


def _describe(err: Mapping[str, Any], loc: Sequence[str | int]) -> str:
    typ = err.get("type", "")
    ctx = err.get("ctx") or {}
    inp = err.get("input")
    msg = str(err.get("msg", "invalid value"))

    def got() -> str:
        r = repr(inp)
        return r if len(r) <= 60 else r[:57] + "..."

    if typ == "extra_forbidden":
        model = _model_at(loc[:-1])
        if model is not None:
            known = sorted(f.alias or n for n, f in model.model_fields.items())
            return f"unknown key; expected one of: {', '.join(known)}"
        return "unknown key"
    if typ == "missing":
        return "required field is missing"
    if typ == "literal_error":
        return f"expected {ctx.get('expected', 'one of the allowed values')}, got {got()}"
    if typ == "union_tag_invalid":
        return f"expected op to be one of {ctx.get('expected_tags', 'insert, remove, reroute')}, got {ctx.get('tag', got())!r}"
    if typ == "union_tag_not_found":
        return "expected an 'op' key (insert, remove or reroute)"
    if typ == "value_error":
        return "expected " + msg.removeprefix("Value error, ")
    if msg.startswith("Input should be "):
        return f"expected {msg.removeprefix('Input should be ')}, got {got()}"
    if typ == "too_short":
        return f"expected at least {ctx.get('min_length', 1)} item(s), got {ctx.get('actual_length', 0)}"
    return f"{msg[0].lower() + msg[1:]} (got {got()})" if msg else f"invalid value {got()}"


def _schema_errors(doc: _Doc, data: Any, exc: ValidationError) -> list[ScenarioError]:
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        dpath = _data_path(data, loc)
        line = doc.line(dpath)
        out.append(
            ScenarioError(_describe(err, loc), file=doc.file, field=_fmt_path(dpath) or None, line=line)
        )
    return out


# ------------------------------------------------------------------------------- sweep helpers
_MISSING = object()


def _split_path(key: str) -> list[str | int]:
    return [int(p) if p.lstrip("-").isdigit() else p for p in key.split(".") if p != ""]


def _get_path(data: Any, parts: Sequence[str | int]) -> Any:
    cur = data
    for p in parts:
        found = (isinstance(cur, dict) and isinstance(p, str) and p in cur) or (
            isinstance(cur, list) and isinstance(p, int) and -len(cur) <= p < len(cur)
        )
        if not found:
            return _MISSING
        cur = cur[p]
    return cur


def _set_path(data: Any, parts: Sequence[str | int], value: Any) -> Any:
    """A copy of ``data`` with the value at ``parts`` replaced (missing mappings on the way, i.e.
    fields left at their defaults, are created)."""
    out = copy.deepcopy(data)
    cur = out
    for p in parts[:-1]:
        if isinstance(cur, dict) and p not in cur:
            cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value
    return out


def sweep_points(sweep: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The grid of a sweep, in file order (last key varies fastest); ``[{}]`` without a sweep."""
    keys = list(sweep)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(sweep[k] for k in keys))]
