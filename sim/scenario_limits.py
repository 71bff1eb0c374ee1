"""The documented limits of a scenario file, and the cheap checks that enforce them.

A scenario file is user input that someone else may have written. Before anything expensive
happens (building a synthetic town or reading a drive log, validating every sweep point, expanding
seeds x sweep points into episodes) :mod:`sim.scenario` refuses a file that asks for more work
than :data:`LIMITS` allows, with one :class:`~sim.errors.ScenarioError` naming the file, the
field path, the limit and the value given. Every check here is arithmetic on the parsed file
(O(size of the file)): nothing is O(steps) or O(episodes).

The limits live in one place, :class:`Limits` (the instance :data:`LIMITS`), each field with
what it bounds; the scenario reference (``docs/reference/scenario.md``, section "Limits") is
generated from them by :func:`limits_markdown`. In short: the file (a regular file of bounded
size and node count), numbers (finite floats, int64 integers, no booleans for numbers), time
(``dt_s`` range, steps per episode), work per file (seeds, sweep grid, episodes, scenes built to
validate a sweep), the world (actor count, coordinates also against the map's bounding box,
speeds, sizes) and the scenario name (it names folders).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field

if TYPE_CHECKING:
    from ruamel.yaml.composer import Composer

__all__ = [
    "LIMITS",
    "Coord",
    "Distance",
    "Limits",
    "Name",
    "Offset",
    "Seed",
    "Size",
    "Slots",
    "Speed",
    "Step",
    "Time",
    "TooManyNodes",
    "Version",
    "Yaw",
    "behavior_param_problems",
    "counting_composer",
    "limits_markdown",
    "map_problems",
    "model_problems",
    "plain_problems",
]

Problem = tuple[tuple[str | int, ...], str]


def _lim(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Limits:
    """What one scenario file may ask for (SI units: bytes, seconds, metres, m/s, radians). Each
    field's ``metadata["doc"]`` says what it bounds; :func:`limits_markdown` renders the table of
    the scenario reference from them."""

    max_file_bytes: int = _lim(
        256 * 1024, "size of the YAML file, bytes (the library's files are about 1 KiB)"
    )
    max_yaml_nodes: int = _lim(20_000, "YAML values, counted while parsing and again after alias expansion")
    min_int: int = _lim(-(2**63), "smallest integer anywhere in the file (int64)")
    max_int: int = _lim(2**63 - 1, "largest integer anywhere in the file (int64; seeds are in [0, max_int])")
    min_dt_s: float = _lim(1e-3, "smallest `dt_s`, s")
    max_dt_s: float = _lim(1.0, "largest `dt_s`, s")
    max_time_s: float = _lim(3600.0, "`horizon_s`, `ego.start.t_s` and every actor's `t_s`, s")
    max_steps: int = _lim(
        36_000,
        "steps per episode from the start of the scene, (`ego.start.t_s` + `horizon_s`) / `dt_s` (a synthetic town is made that long; one hour at 10 Hz)",
    )
    max_file_steps: int = _lim(
        36_000,
        "scene steps summed over the distinct scenes a file's sweep asks for (sweeps over `dt_s`, `horizon_s`, `ego.start.t_s` or `scene.*`; each is built to validate the file)",
    )
    max_sweep_scenes: int = _lim(
        16, "distinct scenes a file's sweep asks for (combinations of the keys above)"
    )
    max_seeds: int = _lim(1_000, "entries of `seeds`")
    max_sweep_keys: int = _lim(8, "keys of `sweep`")
    max_sweep_values: int = _lim(1_000, "values of one sweep key")
    max_sweep_points: int = _lim(1_000, "sweep grid points (the product of the value counts)")
    max_episodes: int = _lim(10_000, "episodes of a file: seeds x sweep points")
    max_sweep_work: int = _lim(
        50_000, "sweep points x (entries of `actors` + 1): every point is validated whole"
    )
    max_actor_ops: int = _lim(256, "entries of `actors`")
    max_actor_slots: int = _lim(1_024, "`max_actors` (logged + inserted actor slots)")
    max_route_lanes: int = _lim(1_000, "lanes in one route")
    max_abs_coord_m: float = _lim(1.0e6, "|x|, |y| of any pose and any arc length `s`, m")
    map_margin_m: float = _lim(1_000.0, "how far outside the map's bounding box a pose may lie, m")
    max_speed_mps: float = _lim(100.0, "any speed, m/s")
    max_size_m: float = _lim(50.0, "any box dimension, m")
    max_lateral_offset_m: float = _lim(50.0, "|`spawn.lateral_offset`|, m")
    max_abs_yaw_rad: float = _lim(4.0 * math.pi, "|yaw| of any pose, rad (two turns either way)")
    max_name_chars: int = _lim(
        100, "characters of `name` (of the file name when `name` is not given): it names folders"
    )
    name_pattern: str = _lim(
        r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$", "characters of `name`: ASCII letters, digits, `_`, `-`, `.`; no spaces or slashes"
    )


#: The limits :mod:`sim.scenario` enforces.
LIMITS = Limits()
L = LIMITS


# ------------------------------------------------------------------------- pydantic field types
def _f(**kw: Any) -> Any:
    """A float field in strict mode: YAML ``true`` or ``"5"`` is not a number (pydantic's lax mode
    would take them); integers are accepted."""
    return Annotated[float, Field(strict=True, allow_inf_nan=False, **kw)]


def _int_not_bool(v: Any) -> Any:
    """``version: true`` is not ``version: 1`` (``True == 1`` in Python)."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"1 (an integer), got {v!r}")
    return v


#: schema version: the integer 1, not ``true``
Version = Annotated[Literal[1], BeforeValidator(_int_not_bool)]
#: a seed: a non-negative int64
Seed = Annotated[int, Field(strict=True, ge=0, le=L.max_int)]
#: actor slots
Slots = Annotated[int, Field(strict=True, ge=1, le=L.max_actor_slots)]
#: a time (start time, appearance time, horizon), s
Time = _f(ge=0.0, le=L.max_time_s)
#: a simulation step, s
Step = _f(ge=L.min_dt_s, le=L.max_dt_s)
#: an arc length along a lane, m
Distance = _f(ge=0.0, le=L.max_abs_coord_m)
#: a world coordinate, m
Coord = _f(ge=-L.max_abs_coord_m, le=L.max_abs_coord_m)
#: a heading, rad
Yaw = _f(ge=-L.max_abs_yaw_rad, le=L.max_abs_yaw_rad)
#: a speed, m/s
Speed = _f(ge=0.0, le=L.max_speed_mps)
#: a box dimension, m
Size = _f(gt=0.0, le=L.max_size_m)
#: a lateral offset, m
Offset = _f(ge=-L.max_lateral_offset_m, le=L.max_lateral_offset_m)


def _name(v: str) -> str:
    if not re.fullmatch(L.name_pattern, v):
        raise ValueError(f"a name of ASCII letters, digits, '_', '-' and '.' (it names folders), got {v[:40]!r}")
    return v


#: a scenario name (names folders)
Name = Annotated[
    str,
    Field(min_length=1, max_length=L.max_name_chars, json_schema_extra={"pattern": L.name_pattern}),
    AfterValidator(_name),
]


# ----------------------------------------------------------------------------- plain-data walk
def _walk(node: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    stack = [(path, node)]
    while stack:
        p, n = stack.pop()
        if isinstance(n, dict):
            stack.extend(((*p, k), v) for k, v in reversed(n.items()))
        elif isinstance(n, list):
            stack.extend(((*p, i), v) for i, v in reversed(list(enumerate(n))))
        else:
            yield p, n


def plain_problems(data: Any) -> list[Problem]:
    """Non-finite floats and integers outside int64 anywhere in the plain YAML data (before the
    schema: also inside ``planner.params``, behaviour parameters and sweep values)."""
    out: list[Problem] = []
    for path, v in _walk(data, ()):
        if isinstance(v, bool):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            out.append((path, f"expected a finite number, got {v!r}"))
        elif isinstance(v, int) and not L.min_int <= v <= L.max_int:
            shown = str(v) if len(str(v)) <= 30 else f"an integer of {len(str(abs(v)))} digits"
            out.append((path, f"expected an integer within int64 [-2**63, 2**63-1], got {shown}"))
    return out


def behavior_param_problems(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Behaviour parameters are numbers: ``true`` or ``"5"`` is refused (``float()`` would take them)."""
    return [
        (k, f"expected a number, got {v!r}")
        for k, v in params.items()
        if k not in ("type", "route") and (isinstance(v, bool | str) or v is None)
    ]


# ------------------------------------------------------------------------------- model checks
#: sweep keys that change the scene a file is validated against (each distinct one is built)
_SCENE_KEYS = ("scene", "horizon_s", "dt_s", "ego.start.t_s", "ego.start", "ego")


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _steps(t_s: float, horizon_s: float, dt_s: float) -> float:
    return (t_s + horizon_s) / dt_s


def model_problems(m: Any, *, file_stem: str) -> list[Problem]:
    """Work limits of a schema-valid :class:`sim.scenario.ScenarioModel` ``m``: steps per
    episode (and ``dt_s`` dividing ``horizon_s``), sweep grid, episodes, scenes of the sweep, the
    name. Arithmetic only: nothing here is O(steps) or O(episodes)."""
    out: list[Problem] = []
    if m.name is None and len(file_stem) > L.max_name_chars:
        out.append(
            (
                ("name",),
                f"expected a name of at most {L.max_name_chars} characters (the file name stands in "
                f"when name is not given), got a file name of {len(file_stem)}",
            )
        )
    t0, h, dt = m.ego.start.t_s, m.horizon_s, m.dt_s
    if h / dt > L.max_steps:
        out.append(
            (
                ("horizon_s",),
                f"expected at most {L.max_steps} steps per episode (horizon_s / dt_s), "
                f"got {h / dt:.6g} (horizon_s={h:g} s, dt_s={dt:g} s)",
            )
        )
    elif abs(h / dt - round(h / dt)) > 1e-6 * max(1.0, h / dt):
        out.append(
            (("dt_s",), f"expected a step that divides horizon_s={h:g} s, got {dt:g} s ({h / dt:.4g} steps)")
        )
    if _steps(t0, h, dt) > L.max_steps and h / dt <= L.max_steps:
        out.append(
            (
                ("ego", "start", "t_s"),
                f"expected at most {L.max_steps} steps from the start of the scene "
                f"((ego.start.t_s + horizon_s) / dt_s), got {_steps(t0, h, dt):.6g} "
                f"(t_s={t0:g} s, horizon_s={h:g} s, dt_s={dt:g} s)",
            )
        )
    points = math.prod(len(v) for v in m.sweep.values())
    if points > L.max_sweep_points:
        sizes = " x ".join(str(len(v)) for v in m.sweep.values())
        out.append(
            (("sweep",), f"expected at most {L.max_sweep_points} sweep points, got {points} ({sizes})")
        )
    elif points > 1 and points * (len(m.actors) + 1) > L.max_sweep_work:
        out.append(
            (
                ("sweep",),
                f"expected at most {L.max_sweep_work} sweep points x (actors + 1) (each point is validated "
                f"whole), got {points} x {len(m.actors) + 1} = {points * (len(m.actors) + 1)}",
            )
        )
    elif len(m.seeds) * points > L.max_episodes:
        out.append(
            (
                ("seeds",),
                f"expected at most {L.max_episodes} episodes (seeds x sweep points), "
                f"got {len(m.seeds)} x {points} = {len(m.seeds) * points}",
            )
        )
    else:
        out.extend(_sweep_scene_problems(m))
    return out


def _in_ranges(t0: float, h: float, dt: float) -> bool:
    return L.min_dt_s <= dt <= L.max_dt_s and 0.0 < h <= L.max_time_s and 0.0 <= t0 <= L.max_time_s


def _sweep_scene_problems(m: Any) -> list[Problem]:
    """Distinct scene-changing sweep combinations and their scene steps (at most
    ``max_sweep_points`` iterations, checked before)."""
    keys = [k for k in m.sweep if k in _SCENE_KEYS or k.startswith("scene.")]
    if not keys:
        return []
    scenes = math.prod(len(m.sweep[k]) for k in keys)
    if scenes > L.max_sweep_scenes:
        return [
            (
                ("sweep",),
                f"expected at most {L.max_sweep_scenes} distinct scenes (sweeps over {', '.join(keys)}; each "
                f"is built to validate the file), got {scenes}",
            )
        ]
    base = {"ego.start.t_s": m.ego.start.t_s, "horizon_s": m.horizon_s, "dt_s": m.dt_s}
    combos: list[dict[str, Any]] = [{}]
    for k in keys:
        combos = [{**c, k: v} for c in combos for v in m.sweep[k]]
    total = 0.0
    for c in combos:
        t0, h, dt = (_num(c.get(k, b)) for k, b in base.items())
        if t0 is None or h is None or dt is None or not _in_ranges(t0, h, dt):
            continue  # out of range: the point's own validation refuses it by name
        total += _steps(t0, h, dt)
    if total > L.max_file_steps:
        return [
            (
                ("sweep",),
                f"expected at most {L.max_file_steps} scene steps over the distinct scenes of the sweep "
                f"(each is built to validate the file), got {total:.6g}",
            )
        ]
    return []


def map_problems(m: Any, bounds: Sequence[float]) -> list[Problem]:
    """Poses farther than ``map_margin_m`` outside the map's bounding box (xmin, ymin, xmax, ymax)."""
    xmin, ymin, xmax, ymax = (float(b) for b in bounds)
    mg = L.map_margin_m
    out: list[Problem] = []

    def check(path: tuple[str | int, ...], pose: Sequence[float] | None) -> None:
        if pose is None:
            return
        x, y = float(pose[0]), float(pose[1])
        if not (xmin - mg <= x <= xmax + mg and ymin - mg <= y <= ymax + mg):
            out.append(
                (
                    path,
                    f"expected a pose within {mg:g} m of the map (x in [{xmin - mg:.1f}, {xmax + mg:.1f}], "
                    f"y in [{ymin - mg:.1f}, {ymax + mg:.1f}]), got ({x:g}, {y:g})",
                )
            )

    check(("ego", "start", "pose"), m.ego.start.pose)
    for i, a in enumerate(m.actors):
        sp = getattr(a, "spawn", None)
        if sp is not None:
            check(("actors", i, "spawn", "pose"), sp.pose)
    return out


# ------------------------------------------------------------------------------------- parsing
class TooManyNodes(Exception):
    """Raised by the composer of :func:`counting_composer` past its node budget."""


def counting_composer(budget: int) -> type[Composer]:
    """A ruamel.yaml ``Composer`` class that stops composing after ``budget`` nodes (aliases count
    once here; their expansion is counted when the document is converted), so a file of many small
    values is refused after ``budget`` nodes instead of being parsed whole."""
    from ruamel.yaml.composer import Composer

    class _Counting(Composer):
        _left = budget

        def compose_node(self, parent: Any, index: Any) -> Any:
            self._left -= 1
            if self._left < 0:
                raise TooManyNodes(budget)
            return super().compose_node(parent, index)

    return _Counting


# ------------------------------------------------------------------------------------ the docs
def limits_markdown() -> str:
    """The limits as a Markdown section for the scenario reference page."""
    lines = [
        "## Limits",
        "",
        "A scenario file that asks for more than these is refused by `loopdrive validate` (and by every",
        "command that reads scenarios) before any scene is built or any sweep expanded, with one line",
        "naming the file, the field path, the limit and the value given. Non-finite numbers (`.nan`,",
        "`.inf`, `1e400`) are refused anywhere in the file, and booleans are not numbers",
        "(`version: true` is refused). The values live in `sim.scenario_limits.LIMITS`.",
        "",
        "| limit | value | what it bounds |",
        "|---|---|---|",
    ]
    for f in fields(Limits):
        v = getattr(LIMITS, f.name)
        if isinstance(v, str):
            shown = f"`{v}`"
        elif isinstance(v, int) or float(v).is_integer():
            shown = f"{int(v):_}".replace("_", " ")
        else:
            shown = f"{v:.4g}"
        doc = f.metadata.get("doc", "").replace("|", "\\|")
        lines.append(f"| `{f.name}` | {shown.replace('|', chr(92) + '|')} | {doc} |")
    lines.append("")
    return "\n".join(lines)
