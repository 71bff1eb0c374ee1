"""The run folder on disk: episode folders written atomically, ``results.parquet``, reading
them back."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sim.batch.episode import EpisodeOutcome
from sim.errors import ScenarioError
from sim.fsutil import atomic_path, atomic_write_text, json_safe, make_temp_dir, replace_dir
from sim.metrics import METRICS

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- persistence
def _json_safe(obj: Any) -> Any:
    """Non-finite floats as strings ("inf", "-inf", "nan") so metrics.json stays strict JSON
    (:func:`sim.fsutil.json_safe`; :func:`_json_unsafe` reads them back)."""
    return json_safe(obj, inf_as_str=True, nan_as_str=True)


def _json_unsafe(obj: Any) -> Any:
    if isinstance(obj, str) and obj in ("inf", "-inf", "nan"):
        return float(obj)
    if isinstance(obj, dict):
        return {k: _json_unsafe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_unsafe(v) for v in obj]
    return obj


def _write_json_atomic(path: Path, obj: Any) -> None:
    atomic_write_text(
        path, json.dumps(_json_safe(obj), indent=1, sort_keys=True, allow_nan=False), fsync=True
    )


def _episodes_dir(out: Path) -> Path:
    return out / "episodes"


def persist(out: Path, outcome: EpisodeOutcome) -> Path:
    """Write one episode's folder atomically (temp folder + rename); returns the folder."""
    eid = outcome.row["episode_id"]
    root = _episodes_dir(out)
    root.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(root, prefix=f".tmp-{eid}-")
    try:
        if outcome.trajectory is not None:
            (tmp / "trajectory.parquet").write_bytes(outcome.trajectory)
        if outcome.video is not None:
            (tmp / "video.mp4").write_bytes(outcome.video)
        with open(tmp / "metrics.json", "w", encoding="utf-8") as f:
            json.dump(
                _json_safe({"row": outcome.row, **outcome.details}),
                f,
                indent=1,
                sort_keys=True,
                allow_nan=False,
            )
            f.flush()
            os.fsync(f.fileno())
        return replace_dir(tmp, root / eid)  # re-running an episode replaces it
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _done_ids(out: Path) -> set[str]:
    root = _episodes_dir(out)
    if not root.is_dir():
        return set()
    return {
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / "metrics.json").is_file()
    }


def _clean_tmp(out: Path) -> None:
    root = _episodes_dir(out)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".tmp-"):
                shutil.rmtree(p, ignore_errors=True)


def read_episode(out: Path, episode_id: str) -> dict[str, Any]:
    """The metrics.json of one finished episode (non-finite floats restored)."""
    with open(_episodes_dir(out) / episode_id / "metrics.json", encoding="utf-8") as f:
        return _json_unsafe(json.load(f))


def write_results(out: Path, episode_ids: Sequence[str]) -> Path:
    """(Re)build ``results.parquet`` from the episode folders, in ``episode_ids`` order."""
    import polars as pl

    rows = [
        read_episode(out, e)["row"]
        for e in episode_ids
        if (_episodes_dir(out) / e / "metrics.json").is_file()
    ]
    cols = _column_order({k for r in rows for k in r})
    series = []
    for c in cols:
        vals = [r.get(c) for r in rows]
        present = [v for v in vals if v is not None]
        if present and all(isinstance(v, bool) for v in present):
            series.append(pl.Series(c, vals, dtype=pl.Boolean))
        elif c in ("seed", "steps") and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
            series.append(pl.Series(c, vals, dtype=pl.Int64))
        elif present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
            series.append(pl.Series(c, [None if v is None else float(v) for v in vals], dtype=pl.Float64))
        else:
            strs = [None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in vals]
            series.append(pl.Series(c, strs, dtype=pl.String))
    df = pl.DataFrame(series) if series else pl.DataFrame({"episode_id": pl.Series([], dtype=pl.String)})
    path = out / "results.parquet"
    with atomic_path(path, suffix=".parquet") as tmp:
        df.write_parquet(tmp)
    return path


def _column_order(keys: set[str]) -> list[str]:
    lead = ["episode_id", "scenario", "file", "seed", "sweep"]
    lead += sorted(k for k in keys if k.startswith("sweep."))
    lead += ["planner"]
    for m in METRICS.names():
        lead += [m, f"{m}_score"]
    lead += ["score", "status", "error", "steps", "sim_time_s"]
    out = [k for k in lead if k in keys]
    return out + sorted(keys - set(out))


def load_results(out: str | os.PathLike[str]) -> Any:
    """``results.parquet`` of a run folder as a polars DataFrame (ScenarioError when missing)."""
    import polars as pl

    p = Path(out) / "results.parquet"
    if not p.is_file():
        raise ScenarioError(
            "expected a run folder with results.parquet (made by `loopdrive run`)", file=str(out)
        )
    return pl.read_parquet(p)
