"""Reports over batch runs: a self-contained HTML page, a markdown summary, and run comparisons.

``write_report(DIR)`` reads ``DIR/results.parquet`` (from :func:`sim.batch.run_batch`) and writes

* ``DIR/report.html``: score distribution, mean metric scores per scenario, and the worst episodes
  with bird's-eye-view (BEV) thumbnails -- every plot embedded as a base64 PNG, no external files;
* ``DIR/summary.md``: one table row per scenario (episodes, errored episodes, mean / min score,
  collision and off-road rates, mean progress, min TTC).

Errored episodes (the planner or the rollout raised: ``status`` is not ``ok``) are counted and
listed, never scored: rates and means are over the finished episodes, and a run whose every
episode errored says so ("every episode errored") instead of showing figures computed over
nothing. A run folder whose ``results.parquet`` is missing, unreadable or lacks the columns
:func:`sim.batch.write_results` writes raises :class:`~sim.errors.ResultsError` naming the file.

``compare_runs(A, B)`` lists per-scenario mean score differences (B - A) of two runs.

The BEV drawings (:func:`bev_image`) are plain raster drawings with PIL in the world frame centred
on the ego (x right, y up, ``metres_per_px`` resolution): lanes grey, the ego's route light, actors
blue, the ego red, the ego's past path orange.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sim.errors import ResultsError
from sim.fsutil import atomic_write_text, check_input_file
from sim.metrics import METRICS, EpisodeRecord, box_corners

__all__ = [
    "RESULT_COLUMNS",
    "ScenarioDiff",
    "bev_image",
    "compare_runs",
    "errored_line",
    "load_run_table",
    "render_video",
    "summary_table",
    "write_report",
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------- BEV
def bev_image(
    lane_map: Any,
    ego_xy: NDArray[np.float64],
    ego_yaw: float,
    ego_size: Sequence[float],
    actors: Sequence[tuple[float, float, float, float, float]],
    *,
    route: Sequence[str] = (),
    path: NDArray[np.float64] | None = None,
    size_px: int = 256,
    metres_per_px: float = 0.25,
    highlight: int | None = None,
) -> NDArray[np.uint8]:
    """An RGB (size_px, size_px, 3) uint8 BEV centred on the ego.

    Args:
        ego_xy: ego centre (2,) world m; ``ego_yaw`` rad; ``ego_size`` (length, width) m.
        actors: boxes (x, y, yaw, length, width), world frame.
        route: lane ids drawn lighter; ``path``: (K, 2) ego positions drawn as a line.
        highlight: index into ``actors`` drawn in yellow (a collision partner, say).
    """
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size_px, size_px), (34, 38, 34))
    d = ImageDraw.Draw(img)
    cx, cy = float(ego_xy[0]), float(ego_xy[1])
    half = size_px * metres_per_px / 2.0

    def px(p: NDArray[np.float64]) -> list[tuple[float, float]]:
        p = np.asarray(p, np.float64).reshape(-1, 2)
        u = (p[:, 0] - cx) / metres_per_px + size_px / 2.0
        v = size_px / 2.0 - (p[:, 1] - cy) / metres_per_px
        return list(zip(u.tolist(), v.tolist(), strict=True))

    route_set = set(route)
    for lid in lane_map.lane_ids:
        ln = lane_map.lanes[lid]
        pts = ln.centerline
        if np.all(np.abs(pts[:, 0] - cx) > half + 30) or np.all(np.abs(pts[:, 1] - cy) > half + 30):
            continue
        poly = ln.polygon
        geoms = getattr(poly, "geoms", [poly])
        colour = (120, 120, 128) if lid in route_set else (78, 78, 84)
        for g in geoms:
            if g.is_empty:
                continue
            d.polygon(px(np.asarray(g.exterior.coords)), fill=colour)
    for lid in lane_map.lane_ids:
        ln = lane_map.lanes[lid]
        d.line(px(ln.centerline), fill=(150, 150, 90) if lid in route_set else (100, 100, 100), width=1)
    if path is not None and len(path) > 1:
        d.line(px(path), fill=(255, 150, 40), width=2)
    for k, (x, y, yaw, ln_, wd) in enumerate(actors):
        if abs(x - cx) > half + 10 or abs(y - cy) > half + 10:
            continue
        c = box_corners(x, y, yaw, ln_, wd)
        d.polygon(px(c), fill=(240, 210, 40) if k == highlight else (70, 130, 230), outline=(230, 230, 230))
    c = box_corners(cx, cy, ego_yaw, float(ego_size[0]), float(ego_size[1]))
    d.polygon(px(c), fill=(225, 50, 50), outline=(255, 255, 255))
    nose = np.array([cx, cy]) + 0.5 * float(ego_size[0]) * np.array([math.cos(ego_yaw), math.sin(ego_yaw)])
    d.line(px(np.stack([np.array([cx, cy]), nose])), fill=(255, 255, 255), width=2)
    return np.asarray(img)


def _bev_from_record(rec: EpisodeRecord, step: int, **kw: Any) -> NDArray[np.uint8]:
    valid = rec.actor_valid[step]
    actors = [
        (
            float(rec.actor_xy[step, j, 0]),
            float(rec.actor_xy[step, j, 1]),
            float(rec.actor_yaw[step, j]),
            float(rec.actor_size[j, 0]),
            float(rec.actor_size[j, 1]),
        )
        for j in np.flatnonzero(valid)
    ]
    return bev_image(
        rec.lane_map,
        rec.ego_xy[step],
        float(rec.ego_yaw[step]),
        rec.ego_size,
        actors,
        route=rec.route,
        path=rec.ego_xy[: step + 1],
        **kw,
    )


def render_video(rec: EpisodeRecord, *, fps: float | None = None, size_px: int = 256) -> bytes:
    """An H.264 mp4 (bytes) of the episode's BEV, one frame per step."""
    import imageio.v2 as imageio

    fps = fps or 1.0 / rec.dt_s
    frames = [_bev_from_record(rec, t, size_px=size_px) for t in range(rec.n_steps)]
    fd, tmp = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    try:
        with imageio.get_writer(
            tmp, fps=fps, codec="libx264", quality=7, macro_block_size=16, ffmpeg_log_level="error"
        ) as w:
            for f in frames:
                w.append_data(f)
        return Path(tmp).read_bytes()
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _episode_thumbnail(run: Path, episode_id: str, size_px: int = 220) -> NDArray[np.uint8] | None:
    """BEV of the critical step of an episode (first collision, else minimum TTC, else the last
    step), from its trajectory.parquet and the scene's lane map."""
    import polars as pl

    from sim.batch import read_episode, scene_lane_map

    folder = run / "episodes" / episode_id
    tp = folder / "trajectory.parquet"
    if not tp.is_file():
        return None
    det = read_episode(run, episode_id)
    lm = scene_lane_map(det)
    t = pl.read_parquet(tp).to_dict(as_series=False)
    steps = np.asarray(t["step"])
    T = int(steps.max()) + 1
    mets = det.get("metrics", {})
    step, partner = T - 1, None
    ev = (mets.get("any_collision") or mets.get("collision") or {}).get("details", {}).get("events") or []
    if ev:
        step, partner = int(ev[0]["step"]), ev[0]["actor"]
    elif (
        isinstance((mets.get("ttc") or {}).get("details", {}).get("step"), int)
        and mets["ttc"]["details"]["step"] >= 0
    ):
        step, partner = int(mets["ttc"]["details"]["step"]), mets["ttc"]["details"].get("actor")
    sel = steps == step
    ids = np.asarray(t["actor_id"], dtype=object)[sel]
    cols = {k: np.asarray(t[k])[sel] for k in ("x", "y", "yaw", "length", "width", "valid")}
    ego = int(np.flatnonzero(ids == "ego")[0])
    actors, highlight = [], None
    for j in range(len(ids)):
        if j == ego or not cols["valid"][j]:
            continue
        if ids[j] == partner:
            highlight = len(actors)
        actors.append(tuple(float(cols[k][j]) for k in ("x", "y", "yaw", "length", "width")))
    ego_sel = np.asarray(t["actor_id"], dtype=object) == "ego"
    path = np.stack([np.asarray(t["x"])[ego_sel], np.asarray(t["y"])[ego_sel]], axis=1)[: step + 1]
    return bev_image(
        lm,
        np.array([cols["x"][ego], cols["y"][ego]]),
        float(cols["yaw"][ego]),
        (float(cols["length"][ego]), float(cols["width"][ego])),
        actors,
        route=det.get("route", ()),
        path=path,
        size_px=size_px,
        highlight=highlight,
    )


# ---------------------------------------------------------------------------------- tables
#: columns (and their kind) every non-empty ``results.parquet`` of :func:`sim.batch.write_results` has
RESULT_COLUMNS: dict[str, str] = {"episode_id": "text", "scenario": "text", "planner": "text", "score": "number", "status": "text"}


def load_run_table(run: str | os.PathLike[str]) -> Any:
    """``results.parquet`` of the run folder ``run`` as a polars DataFrame, checked before use:
    :class:`ResultsError` naming the file when the folder or the table is missing, is not a
    regular file, cannot be read as parquet, or lacks a column of :data:`RESULT_COLUMNS` (or has
    it with another type). An empty table (a run that finished no episode) is returned as is."""
    import polars as pl

    folder = Path(run)
    if not folder.is_dir():
        raise ResultsError("expected a run folder with results.parquet (made by `loopdrive run`)", file=folder)
    path = check_input_file(folder / "results.parquet", error=ResultsError, max_bytes=None,
                            what="a results.parquet written by `loopdrive run`")  # fmt: skip
    try:
        df = pl.read_parquet(path)
    except Exception as exc:  # polars raises its own error types for every kind of corruption
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ResultsError(f"expected a parquet table written by `loopdrive run`, cannot read it ({first})", file=path) from None
    if df.height == 0:
        return df
    for col, kind in RESULT_COLUMNS.items():
        if col not in df.columns:
            raise ResultsError(f"expected a column {col!r} (a table written by `loopdrive run`)", file=path, field=col)
        dtype = df.schema[col]
        ok = dtype.is_numeric() if kind == "number" else dtype == pl.String
        if not ok:
            raise ResultsError(f"expected {kind} values, got {dtype}", file=path, field=col)
    return df


def _load(run: str | os.PathLike[str]) -> Any:
    return load_run_table(run)


def errored_line(n: int, n_err: int) -> str:
    """``"12 episodes (0 errored)"``, ``"12 episodes (3 errored)"`` or, when all did,
    ``"3 episodes: every episode errored (3 errored), nothing was scored"``."""
    if n and n_err == n:
        return f"{n} episodes: every episode errored ({n_err} errored), nothing was scored"
    return f"{n} episodes ({n_err} errored)"


def summary_table(df: Any) -> Any:
    """Per-scenario aggregate (polars DataFrame): episodes, errored episodes, mean/min score,
    collision rate (at-fault), off-road rate, mean progress (m), min TTC (s); the rates and means
    are over the finished episodes (null, shown as "–", where every episode errored)."""
    import polars as pl

    ok = pl.col("status") == "ok"
    aggs = [
        pl.len().alias("episodes"),
        (~ok).sum().alias("errored"),
        pl.col("score").filter(ok).mean().alias("mean_score"),
        pl.col("score").filter(ok).min().alias("min_score"),
    ]
    if "collision" in df.columns:
        aggs.append((pl.col("collision").filter(ok) > 0).mean().alias("collision_rate"))
    if "offroad_score" in df.columns:
        aggs.append((pl.col("offroad_score").filter(ok) < 1).mean().alias("offroad_rate"))
    if "progress" in df.columns:
        aggs.append(pl.col("progress").filter(ok).mean().alias("mean_progress_m"))
    if "ttc" in df.columns:
        aggs.append(pl.col("ttc").filter(ok).min().alias("min_ttc_s"))
    return df.group_by("scenario", maintain_order=True).agg(aggs).sort("scenario")


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "∞"
        return f"{v:.3f}"
    return str(v)


def _markdown(df: Any) -> str:
    cols = df.columns
    out = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for row in df.iter_rows():
        out.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(out)


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img_png(a: NDArray[np.uint8]) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


@dataclass(frozen=True)
class _RunFacts:
    """What the report says about a run: its results table, the finished episodes, the
    per-scenario summary and the headline figures."""

    run: Path
    df: Any
    ok: Any
    summ: Any
    meta: dict[str, Any]
    n: int
    n_err: int
    mean_score: float
    planners: str


def _run_facts(run: Path) -> _RunFacts:
    """Read the run's results (refused when no episode finished) and ``run.json`` when present."""
    import polars as pl

    df = _load(run)
    if df.height == 0:
        raise ResultsError("the run holds no finished episode; nothing to report", file=run / "results.parquet")
    meta: dict[str, Any] = {}
    if (run / "run.json").is_file():
        from sim.run_definition import read_run_json

        meta = read_run_json(run / "run.json")
    ok = df.filter(pl.col("status") == "ok")
    mean_score = float(ok["score"].mean()) if ok.height else float("nan")
    planners = ", ".join(sorted(set(df["planner"].to_list()))) if df.height else "–"
    return _RunFacts(run, df, ok, summary_table(df), meta, df.height, df.height - ok.height, mean_score, planners)


def _errored_rows(df: Any) -> list[tuple[Any, Any]]:
    """(episode id, error) of every errored episode."""
    import polars as pl

    return list(df.filter(pl.col("status") != "ok").select("episode_id", "error").iter_rows())


def _summary_markdown(f: _RunFacts) -> str:
    """``summary.md``: headline, per-scenario table, scenario descriptions, errored episodes."""
    md = [
        f"# loopdrive run: {f.run.name}",
        "",
        f"- planner: {f.planners}",
        f"- episodes: {errored_line(f.n, f.n_err)}",
        f"- mean score: {_fmt(f.mean_score)}",
        "",
        "## Per scenario",
        "",
        _markdown(f.summ),
        "",
    ]
    descriptions = _descriptions(f.run, f.df)
    if descriptions:
        md += ["## Scenarios", ""]
        md += [f"- `{name}`: {text}" for name, text in descriptions.items()]
        md.append("")
    if f.n_err:
        md += ["## Errored episodes", ""]
        for r in _errored_rows(f.df):
            md.append(f"- `{r[0]}`: {r[1]}")
        md.append("")
    return "\n".join(md)


def _score_histogram(ok: Any) -> str:
    """Base64 PNG of the finished episodes' score distribution."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(ok["score"].to_numpy(), bins=np.linspace(0, 1, 21), color="#4a7bd0", edgecolor="white")
    ax.set_xlabel("episode score")
    ax.set_ylabel("episodes")
    ax.set_title("Score distribution")
    return _png(fig)


def _metric_heatmap(ok: Any) -> str:
    """Base64 PNG of the mean score of every scored metric (and the total) per scenario."""
    import matplotlib.pyplot as plt
    import polars as pl

    score_cols = [f"{m}_score" for m in METRICS.names() if METRICS.get(m).kind != "info" and f"{m}_score" in ok.columns]
    cols = [*score_cols, "score"]
    per = ok.group_by("scenario", maintain_order=True).agg([pl.col(c).mean() for c in cols]).sort("scenario")
    mat = per.select(cols).to_numpy().astype(float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * mat.shape[1], 0.8 + 0.35 * max(1, mat.shape[0])))
    im = ax.imshow(mat, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(mat.shape[1]), [c.removesuffix("_score") for c in cols], rotation=45, ha="right")
    ax.set_yticks(range(mat.shape[0]), per["scenario"].to_list())
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            if np.isfinite(mat[i, j]):
                ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.03)
    ax.set_title("Mean metric score per scenario")
    return _png(fig)


def _worst_cards(run: Path, ok: Any, worst: int) -> list[str]:
    """HTML cards (BEV thumbnail, score, key metrics) of the ``worst`` lowest-scoring finished
    episodes; a thumbnail that cannot be drawn is left out, not fatal."""
    worst_rows = ok.sort(["score", "episode_id"]).head(worst) if ok.height else ok
    cards = []
    for r in worst_rows.iter_rows(named=True):
        thumb = None
        try:
            thumb = _episode_thumbnail(run, r["episode_id"])
        except Exception as exc:  # a missing map or file must not break the report
            log.warning("no thumbnail for %s: %s", r["episode_id"], exc)
        img = (
            f'<img src="data:image/png;base64,{_img_png(thumb)}" width="220" height="220">'
            if thumb is not None
            else "<div>(no trajectory)</div>"
        )
        facts = " · ".join(f"{m} {_fmt(r.get(m))}" for m in ("collision", "ttc", "progress", "offroad") if m in r)
        cards.append(
            f'<div class="card">{img}<div><b>{html.escape(r["episode_id"])}</b><br>score {_fmt(r["score"])}<br>'
            f"<small>{html.escape(facts)}</small></div></div>"
        )
    return cards


def _report_page(f: _RunFacts, figs: list[tuple[str, str]], cards: list[str]) -> str:
    """The self-contained ``report.html``."""
    errors_html = ""
    if f.n_err:
        items = "".join(f"<li><code>{html.escape(a)}</code>: {html.escape(str(b))}</li>" for a, b in _errored_rows(f.df))
        errors_html = f"<h2>Errored episodes</h2><ul>{items}</ul>"
    body = "\n".join(f'<h2>{html.escape(t)}</h2><img src="data:image/png;base64,{b}">' for t, b in figs)
    executor = (" · executor " + html.escape(str(f.meta.get("executor")))) if f.meta.get("executor") else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>loopdrive report: {html.escape(f.run.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }} td, th {{ border: 1px solid #ccc; padding: 3px 7px; text-align: right; }}
th {{ background: #f0f0f0; }} td:first-child {{ text-align: left; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 14px; }} .card {{ width: 230px; font-size: 13px; }}
</style></head><body>
<h1>loopdrive run: {html.escape(f.run.name)}</h1>
<p>planner <b>{html.escape(f.planners)}</b> · {html.escape(errored_line(f.n, f.n_err))} · mean score <b>{_fmt(f.mean_score)}</b>
{executor}</p>
<h2>Per scenario</h2>{_html_table(f.summ)}
{body}
<h2>Worst episodes</h2><div class="cards">{"".join(cards) or "<p>none</p>"}</div>
{errors_html}
<p><small>Score = Π multipliers (collision, offroad, driving_direction, making_progress) × weighted mean of
progress (5), ttc (5), speed_limit (4), comfort (2) — nuPlan CLS structure; see docs/metrics.md.</small></p>
</body></html>
"""


def write_report(run: str | os.PathLike[str], *, worst: int = 6) -> tuple[Path, Path]:
    """Write ``report.html`` and ``summary.md`` into the run folder; returns both paths."""
    import matplotlib

    matplotlib.use("Agg")
    facts = _run_facts(Path(run))
    md_path = facts.run / "summary.md"
    _atomic_text(md_path, _summary_markdown(facts))
    figs: list[tuple[str, str]] = []
    if facts.ok.height:
        figs.append(("Score distribution", _score_histogram(facts.ok)))
        figs.append(("Metric breakdown per scenario", _metric_heatmap(facts.ok)))
    html_path = facts.run / "report.html"
    _atomic_text(html_path, _report_page(facts, figs, _worst_cards(facts.run, facts.ok, worst)))
    return html_path, md_path


def _descriptions(run: Path, df: Any) -> dict[str, str]:
    """Scenario name -> its description (from the first episode of each scenario)."""
    import polars as pl

    from sim.batch import read_episode

    out: dict[str, str] = {}
    firsts = df.group_by("scenario", maintain_order=True).agg(pl.col("episode_id").first()).sort("scenario")
    for sc, eid in firsts.iter_rows():
        try:
            text = " ".join(str(read_episode(run, eid).get("description") or "").split())
        except (OSError, ValueError):
            continue
        if text:
            out[sc] = text
    return out


def _html_table(df: Any) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>" for r in df.iter_rows()
    )
    return f"<table><tr>{head}</tr>{rows}</table>"


def _atomic_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


# ---------------------------------------------------------------------------------- compare
@dataclass(frozen=True)
class ScenarioDiff:
    """Mean scores of one scenario in two runs (NaN when absent or all errors) and B - A."""

    scenario: str
    episodes_a: int
    episodes_b: int
    score_a: float
    score_b: float

    @property
    def diff(self) -> float:
        return self.score_b - self.score_a


def compare_runs(run_a: str | os.PathLike[str], run_b: str | os.PathLike[str]) -> list[ScenarioDiff]:
    """Per-scenario mean score of two runs and their difference, sorted by scenario."""
    import polars as pl

    a, b = _load(run_a), _load(run_b)

    def means(df: Any) -> Mapping[str, tuple[int, float]]:
        g = df.group_by("scenario").agg(
            pl.len().alias("n"), pl.col("score").filter(pl.col("status") == "ok").mean().alias("m")
        )
        return {r[0]: (int(r[1]), float(r[2]) if r[2] is not None else float("nan")) for r in g.iter_rows()}

    ma, mb = means(a) if a.height else {}, means(b) if b.height else {}
    if not ma and not mb:
        raise ResultsError("both runs are empty", file=f"{run_a}, {run_b}")
    out = []
    for sc in sorted(set(ma) | set(mb)):
        na, sa = ma.get(sc, (0, float("nan")))
        nb, sb = mb.get(sc, (0, float("nan")))
        out.append(ScenarioDiff(sc, na, nb, sa, sb))
    return out
