"""The documented limits of a scenario file, and the cheap checks that enforce them.

A scenario file is user input that someone else may have written. Before anything expensive
happens (building a synthetic town or reading a drive log, validating every sweep point, expanding
seeds x sweep points into episodes) :mod:`sim.scenario` refuses a file that asks for more work
than :data:`LIMITS` allows, with one :class:`~sim.errors.ScenarioError` naming the file, the
field path, the limit and the value given. Every check here is arithmetic on the parsed file
(O(size of the file)): nothing is O(steps) or O(episodes).

The limits (one place: :class:`Limits`, documented in the scenario reference under
``docs/reference/scenario.md``, which :func:`limits_markdown` generates):

- the file: a regular file of at most ``max_file_bytes`` (no folder, device or FIFO is read) with at
  most ``max_yaml_nodes`` values after YAML aliases;
- numbers anywhere in the file: finite floats (no ``.nan``, ``.inf`` or ``1e400``), integers within
  int64; booleans are not numbers (``version: true`` is refused);
- time: ``dt_s`` in [``min_dt_s``, ``max_dt_s``], ``horizon_s`` and every start time at most
  ``max_time_s``, and at most ``max_steps`` steps per episode counted from the start of the scene
  ((``ego.start.t_s`` + ``horizon_s``) / ``dt_s``: a synthetic town is made that long);
- work per file: at most ``max_seeds`` seeds, ``max_sweep_keys`` sweep keys of at most
  ``max_sweep_values`` values, ``max_sweep_points`` sweep points, ``max_episodes`` episodes (seeds x
  sweep points) and ``max_file_steps`` scene steps summed over the distinct scenes the sweep asks
  for (each is built once to validate the file);
- the world: at most ``max_actor_ops`` actor operations and ``max_actor_slots`` actor slots,
  ``max_route_lanes`` lanes per route, coordinates within ``max_abs_coord_m`` of the origin and
  within ``map_margin_m`` of the map's bounding box, speeds up to ``max_speed_mps``, box sizes up to
  ``max_size_m``, lateral offsets up to ``max_lateral_offset_m``, yaw angles within
  ``max_abs_yaw_rad``;
- the name: at most ``max_name_chars`` characters of ``name_pattern`` (it names folders); the file
  name stands in when ``name`` is not given and must be as short.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

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


@dataclass(frozen=True)
class Limits:
    """What one scenario file may ask for (SI units: bytes, seconds, metres, m/s, radians).

    Attributes:
        max_file_bytes: size of the YAML file (256 KiB; the library's files are about 1 KiB).
        max_yaml_nodes: YAML values after alias expansion (guards against "billion laughs").
        min_int, max_int: range of every integer in the file (int64: seeds, ids as numbers, ...).
        min_dt_s, max_dt_s: simulation step, s.
        max_time_s: ``horizon_s``, ``ego.start.t_s`` and every actor's ``t_s``, s.
        max_steps: steps per episode from the start of the scene, (``ego.start.t_s`` +
            ``horizon_s``) / ``dt_s`` (36 000: one hour at 10 Hz).
        max_file_steps: scene steps summed over the distinct scenes a file's sweep asks for
            (sweeps over ``dt_s``, ``horizon_s``, ``ego.start.t_s`` or ``scene``).
        max_seeds: entries of ``seeds``.
        max_sweep_keys: keys of ``sweep``; max_sweep_values: values per key.
        max_sweep_points: sweep grid points (the product of the value counts).
        max_episodes: seeds x sweep points.
        max_actor_ops: entries of ``actors``; max_actor_slots: ``max_actors``.
        max_route_lanes: lanes in one route.
        max_abs_coord_m: |x|, |y| of any pose and arc lengths ``s``, m.
        map_margin_m: how far outside the map's bounding box a pose may lie, m.
        max_speed_mps: any speed, m/s.  max_size_m: any box dimension, m.
        max_lateral_offset_m: |``spawn.lateral_offset``|, m.  max_abs_yaw_rad: |yaw|, rad.
        max_name_chars: length of the scenario name (the file name when ``name`` is not given).
        name_pattern: characters of ``name`` (letters, digits, ``_``, ``-``, ``.``; it names
            folders and episode ids).
    """

    max_file_bytes: int = 256 * 1024
    max_yaml_nodes: int = 20_000
    min_int: int = -(2**63)
    max_int: int = 2**63 - 1
    min_dt_s: float = 1e-3
    max_dt_s: float = 1.0
    max_time_s: float = 3600.0
    max_steps: int = 36_000
    max_file_steps: int = 100_000
    max_seeds: int = 1_000
    max_sweep_keys: int = 8
    max_sweep_values: int = 1_000
    max_sweep_points: int = 1_000
    max_episodes: int = 10_000
    max_actor_ops: int = 256
    max_actor_slots: int = 1_024
    max_route_lanes: int = 1_000
    max_abs_coord_m: float = 1.0e6
    map_margin_m: float = 1_000.0
    max_speed_mps: float = 100.0
    max_size_m: float = 50.0
    max_lateral_offset_m: float = 50.0
    max_abs_yaw_rad: float = 4.0 * math.pi
    max_name_chars: int = 100
    name_pattern: str = r"^\w[\w.\-]*$"


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
#: a scenario name (names folders)
Name = Annotated[str, Field(min_length=1, max_length=L.max_name_chars, pattern=L.name_pattern)]


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
    episode, sweep grid, episodes, scene steps of the sweep, the name. Arithmetic only."""
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
    elif _steps(t0, h, dt) > L.max_steps:
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
    elif len(m.seeds) * points > L.max_episodes:
        out.append(
            (
                ("seeds",),
                f"expected at most {L.max_episodes} episodes (seeds x sweep points), "
                f"got {len(m.seeds)} x {points} = {len(m.seeds) * points}",
            )
        )
    else:
        total = _sweep_scene_steps(m)
        if total > L.max_file_steps:
            out.append(
                (
                    ("sweep",),
                    f"expected at most {L.max_file_steps} scene steps over the distinct scenes of the "
                    f"sweep (each is built to validate the file), got {total:.6g}",
                )
            )
    return out


def _sweep_scene_steps(m: Any) -> float:
    """Scene steps summed over the distinct scene-changing sweep combinations (bounded by
    ``max_sweep_points`` iterations, checked before)."""
    keys = [k for k in m.sweep if k in _SCENE_KEYS or k.startswith("scene.")]
    if not keys:
        return 0.0
    base = {"ego.start.t_s": m.ego.start.t_s, "horizon_s": m.horizon_s, "dt_s": m.dt_s}
    combos: list[dict[str, Any]] = [{}]
    for k in keys:
        combos = [{**c, k: v} for c in combos for v in m.sweep[k]]
    total = 0.0
    for c in combos:
        vals = {k: _num(c.get(k, b)) for k, b in base.items()}
        if (
            vals["dt_s"] is None
            or vals["dt_s"] <= 0
            or vals["horizon_s"] is None
            or vals["ego.start.t_s"] is None
        ):
            continue  # the point's own validation refuses it
        total += _steps(vals["ego.start.t_s"], vals["horizon_s"], vals["dt_s"])
    return total


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


def counting_composer(budget: int) -> type:
    """A ruamel.yaml ``Composer`` class that stops composing after ``budget`` nodes (aliases count
    once here; their expansion is counted when the document is converted), so a file of many small
    values is refused after ``budget`` nodes instead of being parsed whole."""
    from ruamel.yaml.composer import Composer

    class _Counting(Composer):  # type: ignore[misc]
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
    doc = (Limits.__doc__ or "").split("Attributes:", 1)[-1]
    lines = [
        "## Limits",
        "",
        "A scenario file that asks for more than these is refused by `loopdrive validate` (and by",
        "every command that reads scenarios) before any scene is built, with one line naming the file,",
        "the field path, the limit and the value given. They live in `sim.scenario_limits.LIMITS`.",
        "",
        "| limit | value |",
        "|---|---|",
    ]
    for f in fields(Limits):
        v = getattr(LIMITS, f.name)
        shown = (
            f"`{v}`"
            if isinstance(v, str)
            else (f"{v:g}" if isinstance(v, float) else f"{v:_}".replace("_", " "))
        )
        lines.append(f"| `{f.name}` | {shown.replace('|', chr(92) + '|')} |")
    lines.extend(["", "What each limit covers:", "", "```text", doc.strip("\n"), "```", ""])
    return "\n".join(lines)
