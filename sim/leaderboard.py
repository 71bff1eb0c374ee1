"""The planner leaderboard: the batch runner (``sim.batch.run_batch``) once per planner over the
same scenario files, then one table of the aggregate score and every metric per planner.

``OUT/<planner>/`` holds each planner's run folder (``results.parquet``, episodes);
``OUT/leaderboard.md`` and ``OUT/leaderboard.html`` the tables: per planner the mean score
(errored episodes count as 0, as a crash does in nuPlan), episodes and errored episodes, and the
mean score of every multiplier/weighted metric over the finished episodes; then the mean score per
scenario and planner. A planner whose every episode errored is named under the table ("every
episode errored") instead of being ranked on zeros alone.

Every planner is scored on one fixed list of episodes, read once before the first planner runs.
``OUT/scenarios.json`` records that list (each file with its sha256 and episode count, and one
sha256 of the whole list), and ``leaderboard.md`` / ``.html`` name it. A folder scored on another
list is refused before any work (``--resume`` could not continue it); scenario files that are
added, removed or changed while the leaderboard runs (a concurrent ``loopdrive attack`` writing
into the library, an edit) are named in a warning, in the tables and in ``scenarios.json`` --
the scores stay those of the recorded list.

Sensors: each episode offers the kinds its scenario configures plus what the default rig can sense
(``lidar``; ``bev`` from the engine) -- the rig carries a LiDAR, so a sensor-only planner can run
on every scenario. ``lidar`` uses the analytic box LiDAR unless a render backend is wired (see
:mod:`sim.rollout`).
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.errors import EpisodeStateError, ScenarioError
from sim.fsutil import atomic_write_text, sha256_file

__all__ = [
    "RIG_KINDS",
    "LeaderboardResult",
    "leaderboard_episodes",
    "leaderboard_tables",
    "list_differences",
    "run_leaderboard",
    "scenario_list",
    "sensor_rollout",
]

log = logging.getLogger(__name__)

#: kinds the default rig / engine can always provide in a leaderboard episode
RIG_KINDS = ("lidar", "bev", "state")


def sensor_rollout(ep: Any, planner: str, params: Mapping[str, Any]) -> Any:
    """``sim.batch`` rollout function offering the scenario's kinds plus :data:`RIG_KINDS`; rendered
    kinds (``lidar``, ``camera``) come from the scenario's ``scene.renderer`` (``mesh``: the exact
    ray-cast town, buildings, trees and parked cars included)."""
    from sim.rollout import run_planner_episode

    res = run_planner_episode(
        ep.spec, planner, ep.seed, params=params, observation=(*ep.observation, *RIG_KINDS), raise_errors=True,
        renderer="scenario",
    )
    if res.record is None:  # pragma: no cover - raise_errors covers failures
        raise EpisodeStateError("the episode ended before its second step")
    return res.record


@dataclass(frozen=True)
class LeaderboardResult:
    """Where the tables went and the rows (one dict per planner, keys as the table columns)."""

    out: Path
    markdown: Path
    html: Path
    rows: list[dict[str, Any]]
    per_scenario: dict[str, dict[str, float]]
    #: the scored list as in ``OUT/scenarios.json`` (see :func:`scenario_list`)
    scenarios: dict[str, Any]
    #: one line per difference between the scored list and the files found after the run
    warnings: list[str]


#: name of the scenario-list record in a leaderboard folder
LIST_FILE = "scenarios.json"


def scenario_list(paths: Sequence[str | os.PathLike[str]], episodes: Sequence[Any] | None = None) -> dict[str, Any]:
    """The scenario files under ``paths`` as a record: ``files`` (each ``file``, ``sha256`` of its
    bytes and, when ``episodes`` are given, its episode count), ``n_files``, ``n_episodes`` and
    ``sha256``, one digest of the sorted (file, sha256) pairs, equal for equal lists."""
    from sim.scenario import scenario_files

    counts: dict[str, int] = {}
    for ep in episodes or ():
        counts[str(ep.file)] = counts.get(str(ep.file), 0) + 1
    files = []
    for f in scenario_files(paths):
        try:
            digest = sha256_file(f)
        except OSError:  # vanished or unreadable since the list was read: named by its missing hash
            digest = "unreadable"
        files.append({"file": str(f), "sha256": digest, **({"episodes": counts.get(str(f), 0)} if episodes is not None else {})})
    files.sort(key=lambda r: r["file"])
    whole = hashlib.sha256("".join(f"{r['file']}\0{r['sha256']}\n" for r in files).encode("utf-8")).hexdigest()
    return {"paths": [str(p) for p in paths], "n_files": len(files),
            "n_episodes": len(episodes) if episodes is not None else None, "sha256": whole, "files": files}  # fmt: skip


def list_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Lines naming the files added, removed and changed (other sha256) from ``old`` to ``new``
    (two :func:`scenario_list` records); empty when the lists are equal."""
    a = {r["file"]: r["sha256"] for r in old.get("files", [])}
    b = {r["file"]: r["sha256"] for r in new.get("files", [])}

    def line(what: str, names: list[str]) -> list[str]:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        return [f"{len(names)} file(s) {what}: {shown}"] if names else []

    return (line("added", sorted(set(b) - set(a))) + line("removed", sorted(set(a) - set(b)))
            + line("changed", sorted(f for f in set(a) & set(b) if a[f] != b[f])))  # fmt: skip


def _list_line(rec: Mapping[str, Any]) -> str:
    return (f"Scenario list: {rec['n_files']} files, {rec['n_episodes']} episodes, the same for every planner "
            f"(list sha256 {rec['sha256'][:12]}; {LIST_FILE} names each file with its sha256).")  # fmt: skip


def _check_folder_list(outp: Path, rec: Mapping[str, Any]) -> None:
    """Refuse a leaderboard folder that was scored on another list (its runs could not be resumed)."""
    prev = outp / LIST_FILE
    if not prev.is_file():
        return
    try:
        old = json.loads(prev.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ScenarioError(f"unreadable scenario-list record ({exc}); choose another --out", file=prev) from None
    diff = list_differences(old, rec) if isinstance(old, dict) else ["not a scenario-list record"]
    if diff:
        raise ScenarioError(f"this leaderboard folder was scored on another scenario list ({'; '.join(diff)}); "
                            "choose another --out", file=prev)  # fmt: skip


def _metric_columns() -> list[str]:
    from sim.metrics import METRICS

    kinds = {n: METRICS.get(n).kind for n in METRICS.names()}
    return [n for n in METRICS.names() if kinds[n] == "multiplier"] + [n for n in METRICS.names() if kinds[n] == "weighted"]


def leaderboard_tables(runs: Mapping[str, Path]) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
    """Rows per planner and mean score per (scenario, planner) from run folders."""
    from sim.batch import load_results

    metrics = _metric_columns()
    rows: list[dict[str, Any]] = []
    per_scen: dict[str, dict[str, float]] = {}
    for name, run in runs.items():
        df = load_results(run)
        recs = df.to_dicts()
        n = len(recs)
        ok = [r for r in recs if r.get("status") == "ok"]
        score = sum(float(r["score"]) for r in ok) / n if n else math.nan
        row: dict[str, Any] = {"planner": name, "score": score, "episodes": n, "errored": n - len(ok)}
        for m in metrics:
            vals = [float(r[f"{m}_score"]) for r in ok if r.get(f"{m}_score") is not None and not math.isnan(float(r[f"{m}_score"]))]
            row[m] = sum(vals) / len(vals) if vals else math.nan
        rows.append(row)
        by: dict[str, list[float]] = {}
        for r in recs:
            by.setdefault(str(r["scenario"]), []).append(float(r["score"]) if r.get("status") == "ok" else 0.0)
        for sc, v in by.items():
            per_scen.setdefault(sc, {})[name] = sum(v) / len(v)
    return rows, per_scen


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def _changed_note(warnings: Sequence[str]) -> list[str]:
    if not warnings:
        return []
    return [f"Warning: the scenario files changed while the leaderboard ran ({'; '.join(warnings)}); "
            f"every planner was scored on the list read at the start ({LIST_FILE})."]  # fmt: skip


def _markdown(rows: list[dict[str, Any]], per: dict[str, dict[str, float]], planners: Sequence[str], title: str,
              rec: Mapping[str, Any], warnings: Sequence[str] = ()) -> str:  # fmt: skip
    cols = list(rows[0]) if rows else ["planner", "score"]
    out = [f"# {title}", "", _list_line(rec), *(["", *_changed_note(warnings)] if warnings else []), "",
           "Mean per planner (metric columns: mean metric score in [0, 1] over finished episodes; "
           "score: mean aggregate score, errored episodes count as 0).", ""]
    out.append("| " + " | ".join(cols) + " |")
    out.append("|" + "|".join("---" for _ in cols) + "|")
    for r in rows:
        out.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    out += ["", *_errored_notes(rows)]
    out += ["", "## Score per scenario", "", "| scenario | " + " | ".join(planners) + " |", "|---|" + "|".join("---" for _ in planners) + "|"]
    for sc in sorted(per):
        out.append(f"| {sc} | " + " | ".join(_fmt(per[sc].get(p, math.nan)) for p in planners) + " |")
    return "\n".join(out) + "\n"


def _html(rows: list[dict[str, Any]], per: dict[str, dict[str, float]], planners: Sequence[str], title: str,
          rec: Mapping[str, Any], warnings: Sequence[str] = ()) -> str:  # fmt: skip
    def table(head: list[str], body: list[list[Any]], best_cols: set[int]) -> str:
        best = {}
        for j in best_cols:
            vals = [b[j] for b in body if isinstance(b[j], float) and not math.isnan(b[j])]
            best[j] = max(vals) if vals else None
        h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
        trs = []
        for b in body:
            tds = []
            for j, v in enumerate(b):
                cls = ' class="best"' if j in best and best[j] is not None and v == best[j] else ""
                tds.append(f"<td{cls}>{html.escape(_fmt(v))}</td>")
            trs.append("<tr>" + "".join(tds) + "</tr>")
        return f"<table><thead><tr>{h}</tr></thead><tbody>{''.join(trs)}</tbody></table>"

    cols = list(rows[0]) if rows else ["planner", "score"]
    main = table(cols, [[r[c] for c in cols] for r in rows], {j for j, c in enumerate(cols) if c not in ("planner", "episodes", "errored")})
    notes = "".join(f"<p><b>{html.escape(line)}</b></p>" for line in _errored_notes(rows))
    notes = "".join(f"<p><b>{html.escape(line)}</b></p>" for line in _changed_note(warnings)) + notes
    scen = table(["scenario", *planners], [[sc, *(per[sc].get(p, math.nan) for p in planners)] for sc in sorted(per)], set(range(1, len(planners) + 1)))
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
             ".best{background:#d9f2d9;font-weight:bold}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head>"
            f"<body><h1>{html.escape(title)}</h1><p>{html.escape(_list_line(rec))}</p><p>Metric columns: mean metric score in [0, 1] over finished episodes; "
            f"score: mean aggregate score (errored episodes count as 0). Best per column highlighted.</p>{main}{notes}"
            f"<h2>Score per scenario</h2>{scen}</body></html>\n")


def _errored_notes(rows: list[dict[str, Any]]) -> list[str]:
    """One line per planner with errored episodes: how many, and when all of them errored, that
    its score stands for nothing driven."""
    out = []
    for r in rows:
        if r["errored"] and r["errored"] == r["episodes"]:
            out.append(f"{r['planner']}: every episode errored ({r['errored']} of {r['episodes']}); its score is not a result")
        elif r["errored"]:
            out.append(f"{r['planner']}: {r['errored']} of {r['episodes']} episodes errored (counted as score 0)")
    return out


def _write_atomic(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def leaderboard_episodes(
    paths: Sequence[str | os.PathLike[str]], *, renderer: str | None = None, bundle: str | os.PathLike[str] | None = None
) -> list[Any]:
    """The episodes of the scenario files under ``paths`` on sensor backend ``renderer`` (None: each
    file's) with ``bundle`` as their ``scene.bundle`` (None: each file's). Raises ScenarioError for
    an invalid file, an unknown backend, or a neural/composite episode without a bundle folder."""
    import dataclasses

    from sim.batch import _check_bundles, with_renderer
    from sim.scenario import expand_paths

    episodes = expand_paths(list(paths))
    if bundle is None and renderer is None:
        return episodes

    def scene(e: Any) -> Any:
        spec = with_renderer(e.spec, renderer)
        return spec if bundle is None else dataclasses.replace(spec, scene=dataclasses.replace(spec.scene, bundle=Path(bundle)))

    episodes = [dataclasses.replace(e, spec=scene(e)) for e in episodes]
    _check_bundles(episodes)
    return episodes


def run_leaderboard(
    paths: Sequence[str | os.PathLike[str]],
    planners: Sequence[str],
    out: str | os.PathLike[str],
    *,
    planner_params: Mapping[str, Mapping[str, Any]] | None = None,
    workers: int = 1,
    resume: bool = False,
    horizon_s: float | None = None,
    progress: Callable[[str, int, int, int], None] | None = None,
    renderer: str | None = None,
    bundle: str | os.PathLike[str] | None = None,
) -> LeaderboardResult:
    """Run every planner over the scenario files under ``paths`` and write the tables.

    Args:
        planners: registry names (unknown ones raise ``RegistryError`` before anything runs).
        planner_params: optional params per planner name.
        workers: parallel episodes per planner run.
        resume: continue existing per-planner runs in ``out``.
        horizon_s: cut every episode to this many seconds (smoke runs).
        progress: called as ``progress(planner, done, failed, total)``.
        renderer: sensor backend of every episode (``mesh``, ``neural``, ``composite``; None: each
            file's ``scene.renderer``), as ``loopdrive run --renderer``.
        bundle: scene-bundle folder set as every episode's ``scene.bundle`` (a ``neural`` /
            ``composite`` run of files without one, e.g. the scenario library on its town's
            reconstruction; inserted actors render from ``scene.actor_library`` /
            ``$LOOPDRIVE_ACTORS``).
    """
    from sim.batch import run_batch
    from sim.planning import PLANNERS

    if not planners:
        raise ScenarioError("expected at least one planner", field="planners")
    for p in planners:
        PLANNERS.get(p)
    episodes = leaderboard_episodes(paths, renderer=renderer, bundle=bundle)  # all valid before any folder is made; read once
    rec = scenario_list(list(paths), episodes)
    outp = Path(out)
    if outp.exists() and not outp.is_dir():
        raise ScenarioError("expected a folder for the leaderboard, got a file", file=outp)
    _check_folder_list(outp, rec)
    outp.mkdir(parents=True, exist_ok=True)
    atomic_write_text(outp / LIST_FILE, json.dumps(rec, indent=1) + "\n")
    runs: dict[str, Path] = {}
    for p in planners:
        run_dir = outp / p
        cb = (lambda d, f, t, _p=p: progress(_p, d, f, t)) if progress is not None else None
        run_batch(
            None, run_dir, episodes=episodes, planner=p, planner_params=dict((planner_params or {}).get(p, {})),
            workers=workers, resume=resume or run_dir.exists(), progress=cb, rollout_fn=sensor_rollout, renderer=renderer,
            **({"horizon_s": horizon_s} if horizon_s is not None else {}),
        )  # fmt: skip
        runs[p] = run_dir
    warnings = list_differences(rec, scenario_list(list(paths)))
    if warnings:
        log.warning("the scenario files changed while the leaderboard ran (%s); every planner was scored on the list read "
                    "at the start (%s)", "; ".join(warnings), outp / LIST_FILE)  # fmt: skip
        atomic_write_text(outp / LIST_FILE, json.dumps({**rec, "changed_during_run": warnings}, indent=1) + "\n")
    rows, per = leaderboard_tables(runs)
    rows.sort(key=lambda r: -r["score"] if not math.isnan(r["score"]) else math.inf)
    title = "loopdrive leaderboard"
    md = outp / "leaderboard.md"
    ht = outp / "leaderboard.html"
    _write_atomic(md, _markdown(rows, per, list(planners), title, rec, warnings))
    _write_atomic(ht, _html(rows, per, list(planners), title, rec, warnings))
    return LeaderboardResult(outp, md, ht, rows, per, rec, warnings)
