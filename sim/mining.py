"""Mining a batch run for the episodes worth learning from: a registry of trigger rules.

A trigger looks at the episodes of a run folder (``sim.batch``: ``results.parquet`` plus
``episodes/<id>/metrics.json`` and ``trajectory.parquet``) and says, per episode, whether it fires
and why (a small dict of evidence). Triggers (name: parameters, SI units):

* ``collision`` -- the episode ended in a collision, or the at-fault collision metric scored 0.
* ``near_miss`` (``ttc_s`` = 1.0 s) -- minimum time-to-collision below ``ttc_s`` without a collision.
* ``hard_brake`` (``decel`` = 4.0 m/s²) -- the ego decelerated harder than ``decel`` (from the
  trajectory's ego speed).
* ``offroad`` -- the episode left the drivable area.
* ``disagreement`` (``threshold`` = 0.5, ``expert`` = ``pdm_closed``, ``quantile`` = 0.9) -- the
  planner's action is far from the expert's on the same observation: the episode is re-simulated
  (deterministic) with the expert queried at every step; distance = |Δaccel| / 3 m/s² +
  |Δsteer| / 0.5 rad, fires when its ``quantile`` over the steps exceeds ``threshold`` -- the
  simulator's stand-in for a driver takeover. Costs one expert call per step, so it is opt-in.
* ``rarity`` (``top_fraction`` = 0.2) -- weights episodes by how rare their features are in the run
  (scenario tags, actor classes present, ego mean-speed bin of 2 m/s, how it ended): rarity =
  Σ -log(frequency); fires for the rarest ``top_fraction``.

Every fired episode gets a priority ``weight`` = 1 + its normalised rarity (in [1, 2]), which the
exporter passes on to training as a per-sample weight.

Third parties add triggers through the ``loopdrive.triggers`` entry-point group: a function
``(episodes: Sequence[EpisodeData], **params) -> list[dict | None]``.

Errored episodes (``status`` not ``ok``: the planner or the rollout raised) fire no trigger;
``mined.json`` counts them (``errored``), and ``loopdrive mine`` exits 1 when every episode of the
run errored (there was nothing to mine). The output folder is built next to ``out`` and renamed
into place, so ``out`` holds either a complete selection or nothing new.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import ScenarioError
from sim.fsutil import atomic_write_text
from sim.registry import Registry

__all__ = ["TRIGGERS", "EpisodeData", "MinedEpisode", "load_run", "mine", "parse_trigger", "read_mined"]

log = logging.getLogger(__name__)

TriggerFn = Callable[..., list[dict[str, Any] | None]]
#: name -> trigger function; third parties use the ``loopdrive.triggers`` entry-point group.
TRIGGERS: Registry[TriggerFn] = Registry("trigger", "loopdrive.triggers")
DEFAULT_TRIGGERS = ("collision", "near_miss", "hard_brake", "offroad", "rarity")


@dataclass(frozen=True)
class EpisodeData:
    """One episode of a run: its results row, its ``metrics.json`` content and its folder (the
    trajectory table is read lazily)."""

    row: dict[str, Any]
    details: dict[str, Any]
    folder: Path

    @property
    def episode_id(self) -> str:
        return str(self.row["episode_id"])

    @property
    def ok(self) -> bool:
        return self.row.get("status") == "ok"

    @cached_property
    def trajectory(self) -> Any:
        """The long-format trajectory (polars DataFrame) or None when missing."""
        import polars as pl

        p = self.folder / "trajectory.parquet"
        return pl.read_parquet(p) if p.is_file() else None

    def ego_speed(self) -> tuple[np.ndarray, np.ndarray]:
        """(t_s, speed m/s) of the ego."""
        import polars as pl

        tr = self.trajectory
        if tr is None:
            return np.zeros(0), np.zeros(0)
        e = tr.filter(pl.col("actor_id") == "ego").sort("step")
        return e["t_s"].to_numpy(), e["speed"].to_numpy()


def load_run(run_dir: str | os.PathLike[str]) -> list[EpisodeData]:
    """The episodes of a batch run folder (:class:`~sim.errors.ResultsError` when it is not one or
    its ``results.parquet`` is corrupt, see :func:`sim.report.load_run_table`). An episode whose
    ``metrics.json`` is missing or unreadable keeps its table row with empty details."""
    from sim.batch import read_episode
    from sim.report import load_run_table

    run = Path(run_dir)
    out = []
    for row in load_run_table(run).to_dicts():
        eid = str(row["episode_id"])
        try:
            details = read_episode(run, eid)
        except (OSError, ValueError, RecursionError):
            details = {}
        out.append(EpisodeData(row, details, run / "episodes" / eid))
    return out


def _num(v: Any, default: float = math.nan) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return f


# --------------------------------------------------------------------------------- triggers
def _collision(eps: Sequence[EpisodeData]) -> list[dict[str, Any] | None]:
    out: list[dict[str, Any] | None] = []
    for e in eps:
        term = e.details.get("termination", "")
        at_fault = _num(e.row.get("collision_score"), 1.0) == 0.0
        out.append({"termination": term, "at_fault": at_fault} if e.ok and (term == "collision" or at_fault) else None)
    return out


def _near_miss(eps: Sequence[EpisodeData], ttc_s: float = 1.0) -> list[dict[str, Any] | None]:
    out: list[dict[str, Any] | None] = []
    for e in eps:
        ttc = min(_num(e.row.get("ttc"), math.inf), _num(e.details.get("engine_min_ttc_s"), math.inf))
        hit = e.ok and ttc < float(ttc_s) and e.details.get("termination") != "collision"
        out.append({"min_ttc_s": ttc} if hit else None)
    return out


def _hard_brake(eps: Sequence[EpisodeData], decel: float = 4.0) -> list[dict[str, Any] | None]:
    out: list[dict[str, Any] | None] = []
    for e in eps:
        t, v = e.ego_speed()
        if not e.ok or len(t) < 2:
            out.append(None)
            continue
        a = np.diff(v) / np.maximum(np.diff(t), 1e-6)
        k = int(np.argmin(a))
        out.append({"min_accel": float(a[k]), "t_s": float(t[k])} if a[k] < -float(decel) else None)
    return out


def _offroad(eps: Sequence[EpisodeData]) -> list[dict[str, Any] | None]:
    out: list[dict[str, Any] | None] = []
    for e in eps:
        term = e.details.get("termination", "")
        hit = e.ok and (term == "offroad" or _num(e.row.get("offroad_score"), 1.0) == 0.0)
        out.append({"termination": term} if hit else None)
    return out


def action_disagreement(planner_actions: np.ndarray, expert_actions: np.ndarray) -> np.ndarray:
    """Per-step distance between two (T, 2) [accel m/s², steer rad] sequences:
    |Δaccel| / 3 m/s² + |Δsteer| / 0.5 rad."""
    d = np.abs(np.asarray(planner_actions, np.float64) - np.asarray(expert_actions, np.float64))
    return d[:, 0] / 3.0 + d[:, 1] / 0.5


def _disagreement(eps: Sequence[EpisodeData], threshold: float = 0.5, expert: str = "pdm_closed", quantile: float = 0.9) -> list[dict[str, Any] | None]:
    from sim.planning import make_planner
    from sim.rollout import run_planner_episode
    from sim.scenario import expand

    out: list[dict[str, Any] | None] = []
    for e in eps:
        f = e.row.get("file") or ""
        if not e.ok or not f or not Path(f).is_file():
            out.append(None)
            continue
        match = [x for x in expand(f) if x.seed == int(e.row["seed"]) and x.episode_id == e.episode_id] or [x for x in expand(f) if x.seed == int(e.row["seed"])]
        if not match:
            out.append(None)
            continue
        ep = match[0]
        steps = int(_num(e.row.get("steps"), 0))
        ep = ep.with_horizon(steps * ep.spec.dt_s) if steps > 0 else ep
        params = e.details.get("planner_params") or {}
        res = run_planner_episode(ep.spec, str(e.row["planner"]), ep.seed, params=params, record_observations=True, expert=make_planner(expert))
        if not res.observations:
            out.append(None)
            continue
        exp = np.stack([o["expert_action"] for o in res.observations])
        d = action_disagreement(res.actions[: len(exp)], exp)
        q = float(np.quantile(d, quantile))
        out.append({"disagreement_q": q, "max": float(d.max())} if q > float(threshold) else None)
    return out


def episode_features(e: EpisodeData) -> list[str]:
    """The categorical features rarity is computed over."""
    feats = [f"scenario:{e.row.get('scenario')}", f"end:{e.details.get('termination', '') or 'none'}"]
    f = e.row.get("file") or ""
    if f and Path(f).is_file():
        try:
            from sim.scenario import read_yaml

            data, _ = read_yaml(f)
            feats += [f"tag:{t}" for t in (data.get("tags") or []) if isinstance(t, str) and ":" not in t]
        except Exception:  # a vanished/invalid file only loses its tags
            pass
    tr = e.trajectory
    if tr is not None:
        import polars as pl

        cls = sorted(set(tr.filter((pl.col("actor_id") != "ego") & pl.col("valid"))["cls"].to_list()))
        feats += [f"cls:{c}" for c in cls]
        _, v = e.ego_speed()
        if len(v):
            feats.append(f"speed_bin:{int(np.mean(v) // 2.0)}")
    return feats


def rarity_scores(eps: Sequence[EpisodeData]) -> np.ndarray:
    """Σ -log(frequency of each feature value in the run) per episode."""
    feats = [episode_features(e) for e in eps]
    cnt = Counter(f for fs in feats for f in set(fs))
    n = max(len(eps), 1)
    return np.array([sum(-math.log(cnt[f] / n) for f in set(fs)) for fs in feats], np.float64)


def _rarity(eps: Sequence[EpisodeData], top_fraction: float = 0.2) -> list[dict[str, Any] | None]:
    r = rarity_scores(eps)
    if len(r) == 0:
        return []
    k = max(1, round(float(top_fraction) * len(r)))
    cut = np.sort(r)[::-1][k - 1]
    return [{"rarity": float(x)} if (x >= cut and x > 0 and e.ok) else None for x, e in zip(r, eps, strict=True)]


for _name, _fn in (("collision", _collision), ("near_miss", _near_miss), ("hard_brake", _hard_brake),
                   ("offroad", _offroad), ("disagreement", _disagreement), ("rarity", _rarity)):  # fmt: skip
    TRIGGERS.register(_name, _fn)


# ------------------------------------------------------------------------------------ mining
def parse_trigger(text: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``name:key=value,key=value`` -> (name, params); numbers are parsed as floats."""
    name, _, rest = text.partition(":")
    params: dict[str, Any] = {}
    for kv in filter(None, rest.split(",")):
        k, eq, v = kv.partition("=")
        if not eq:
            raise ScenarioError(f"expected key=value in trigger parameters, got {kv!r}", field=f"trigger {name}")
        try:
            params[k.strip()] = float(v)
        except ValueError:
            params[k.strip()] = v.strip()
    TRIGGERS.get(name.strip())
    return name.strip(), params


@dataclass(frozen=True)
class MinedEpisode:
    """A selected episode: id, scenario file, seed, planner, the triggers that fired (with their
    evidence) and the priority weight."""

    episode_id: str
    scenario: str
    file: str
    seed: int
    planner: str
    planner_params: dict[str, Any]
    steps: int
    triggers: dict[str, dict[str, Any]] = field(default_factory=dict)
    weight: float = 1.0
    metrics: dict[str, float] = field(default_factory=dict)


def mine(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    triggers: Sequence[str] | Mapping[str, Mapping[str, Any]] = DEFAULT_TRIGGERS,
) -> list[MinedEpisode]:
    """Apply ``triggers`` (names, ``name:k=v`` strings or a name -> params mapping) to the run in
    ``run_dir``; return the episodes where at least one fired. With ``out``: write
    ``out/mined.json`` (the selection with triggers, evidence and weights, plus the trigger
    parameters) and copy each selected episode folder to ``out/episodes/<id>``."""
    if isinstance(triggers, Mapping):
        spec = {k: dict(v) for k, v in triggers.items()}
    else:
        spec = dict(parse_trigger(t) for t in triggers)
    for name in spec:
        TRIGGERS.get(name)
    eps = load_run(run_dir)
    fired: dict[str, list[dict[str, Any] | None]] = {n: TRIGGERS.get(n)(eps, **p) for n, p in spec.items()}
    rar = rarity_scores(eps) if eps else np.zeros(0)
    rnorm = (rar - rar.min()) / max(float(np.ptp(rar)), 1e-9) if len(rar) else rar
    metric_names = [k[: -len("_score")] for k in (eps[0].row if eps else {}) if k.endswith("_score")]
    selected: list[MinedEpisode] = []
    for i, e in enumerate(eps):
        hits = {n: f[i] for n, f in fired.items() if f[i] is not None}
        if not hits:
            continue
        selected.append(
            MinedEpisode(
                episode_id=e.episode_id, scenario=str(e.row.get("scenario")), file=str(e.row.get("file") or ""),
                seed=int(e.row.get("seed", 0)), planner=str(e.row.get("planner")),
                planner_params=dict(e.details.get("planner_params") or {}), steps=int(_num(e.row.get("steps"), 0)),
                triggers={n: {k: _clean(v) for k, v in (h or {}).items()} for n, h in hits.items()},
                weight=float(1.0 + rnorm[i]),
                metrics={m: _num(e.row.get(m)) for m in [*metric_names, "score"] if m in e.row},
            )
        )
    if out is not None:
        doc = {"run": str(run_dir), "triggers": spec, "total": len(eps), "errored": sum(1 for e in eps if not e.ok),
               "selected": [_clean(m.__dict__) for m in selected]}  # fmt: skip
        _write_selection(Path(run_dir), Path(out), selected, doc)
    return selected


def _write_selection(run: Path, outp: Path, selected: Sequence[MinedEpisode], doc: Mapping[str, Any]) -> None:
    """Write ``mined.json`` and copies of the selected episode folders into a temporary folder
    next to ``outp``, then put it in place of ``outp`` (which must be new, empty, or an earlier
    selection: a folder holding ``mined.json``)."""
    from sim.fsutil import make_temp_dir, replace_dir

    if outp.exists() and not outp.is_dir():
        raise ScenarioError("expected a folder for the mined selection, got a file", file=outp)
    if outp.is_dir() and any(outp.iterdir()) and not (outp / "mined.json").is_file():
        raise ScenarioError("expected an empty or new folder, or an earlier `loopdrive mine` output (with mined.json)", file=outp)
    outp.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(outp.parent, prefix=f".{outp.name}.tmp-")
    try:
        (tmp / "episodes").mkdir()
        for m in selected:
            src = run / "episodes" / m.episode_id
            if src.is_dir():
                shutil.copytree(src, tmp / "episodes" / m.episode_id)
        atomic_write_text(tmp / "mined.json", json.dumps(doc, indent=1, allow_nan=False))
        replace_dir(tmp, outp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _clean(o: Any) -> Any:
    if isinstance(o, float | np.floating):
        f = float(o)
        return f if math.isfinite(f) else (None if math.isnan(f) else ("inf" if f > 0 else "-inf"))
    if isinstance(o, np.integer | np.bool_):
        return o.item()
    if isinstance(o, Mapping):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    return o


def read_mined(path: str | os.PathLike[str]) -> list[MinedEpisode]:
    """The selection written by :func:`mine` (``path``: the folder or its ``mined.json``)."""
    p = Path(path)
    p = p / "mined.json" if p.is_dir() else p
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ScenarioError(f"expected a mined.json from `loopdrive mine` ({exc})", file=p) from None

    def unclean(v: Any) -> Any:
        return float(v) if v in ("inf", "-inf") else (math.nan if v is None else v)

    return [MinedEpisode(**{**m, "metrics": {k: unclean(v) for k, v in m.get("metrics", {}).items()}}) for m in doc["selected"]]
