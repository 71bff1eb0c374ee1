"""The report of an NCAP run: a markdown and an HTML table (per type and averaged), a histogram of
the scores per type (PNG), and BEV videos of the worst runs -- drawn with the batch reports' own
helpers (:mod:`sim.report`: tables, embedded PNGs, :func:`sim.report.render_video`;
:func:`sim.viz.save_figure_atomic`). The planner's batch run gets its usual ``report.html`` /
``summary.md`` too (:func:`sim.report.write_report`)."""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["summary_rows", "worst_rows", "write_ncap_report"]

#: UniAD on NeuroNCAP (Ljungbergh et al., ECCV 2024, table 2): the published anchor
UNIAD_NEURONCAP = {"stationary": 3.501, "frontal": 1.166, "side": 1.667, "average": 2.111, "collision_rate": 0.604}


def summary_rows(summary: Mapping[str, Any]) -> Any:
    """The summary as a polars table: one row per type and an ``average`` row."""
    import polars as pl

    recs = []
    for k, v in [*summary["types"].items(), ("average", summary["overall"])]:
        recs.append({
            "type": k, "permutations": v["permutations"], "errored": v["errored"],
            "collision_rate": v["collision_rate"], "ncap_score": v["score"],
            "mean_impact_speed_ms": v.get("mean_impact_speed_ms"),
            "offroad_rate": v.get("offroad_rate"), "ncap_score_offroad_as_0": v.get("score_offroad_as_0"),
        })  # fmt: skip
    return pl.DataFrame(recs, infer_schema_length=None)


def worst_rows(rows: Sequence[Mapping[str, Any]], n: int) -> list[Mapping[str, Any]]:
    """The ``n`` scored permutations with the lowest score (then the fastest impact)."""
    ok = [r for r in rows if r["status"] == "ok" and r["collided"]]
    return sorted(ok, key=lambda r: (r["score"], -(r["impact_speed_ms"] or 0.0), r["episode_id"]))[:n]


def _histograms(out: Path, rows: Sequence[Mapping[str, Any]], types: Sequence[str]) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from sim.viz import save_figure_atomic

    paths = {}
    for k in types:
        scores = [float(r["score"]) for r in rows if r["type"] == k and r["status"] == "ok"]
        fig, ax = plt.subplots(figsize=(5, 2.8))
        ax.hist(scores, bins=np.linspace(0, 5, 21), color="#4a7bd0", edgecolor="white")
        ax.set_xlim(0, 5)
        ax.set_xlabel("NeuroNCAP score (5 = no collision)")
        ax.set_ylabel("permutations")
        mean = f"{np.mean(scores):.2f}" if scores else "–"
        ax.set_title(f"{k}: {len(scores)} scored, mean {mean}")
        paths[k] = save_figure_atomic(fig, out / f"hist_{k}.png", dpi=90, bbox_inches="tight")
        plt.close(fig)
    return paths


def _videos(out: Path, worst: Sequence[Mapping[str, Any]]) -> list[Path]:
    from sim.fsutil import atomic_path
    from sim.ncap.score import episode_record
    from sim.report import render_video

    paths = []
    for r in worst:
        try:
            data = render_video(episode_record(out / "run", str(r["episode_id"])))
        except Exception as exc:  # a missing map or codec must not lose the report
            log.warning("no video for %s: %s", r["episode_id"], exc)
            continue
        p = out / "videos" / f"{r['episode_id']}.mp4"
        p.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(p, suffix=".mp4") as tmp:
            Path(tmp).write_bytes(data)
        paths.append(p)
    return paths


def write_ncap_report(out: Path, rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], settings: Mapping[str, Any],
                      designs: Mapping[str, Any], *, videos: int = 3) -> dict[str, Path]:  # fmt: skip
    """Write ``report.md``, ``report.html``, ``hist_<type>.png`` and ``videos/`` into ``out``;
    returns the paths by name."""
    from sim.fsutil import atomic_write_text
    from sim.report import _html_table, _markdown, errored_line, write_report

    types = list(summary["types"])
    tab = summary_rows(summary)
    hists = _histograms(out, rows, types)
    worst = worst_rows(rows, videos)
    vids = _videos(out, worst)
    ov = summary["overall"]
    head = (f"planner `{settings['planner']}` · sensors {settings['sensors']} · {settings['runs']} permutations per type · "
            f"seed {settings['seed']} · {errored_line(ov['permutations'], ov['errored'])}")  # fmt: skip
    every = ov["permutations"] and ov["errored"] == ov["permutations"]
    anchor = ("UniAD on NeuroNCAP (published, nuScenes scenes, neural camera rendering): stationary 3.501, frontal 1.166, "
              "side 1.667, average 2.111, 60.4 % collisions. Different scenes, sensors and planners: a reference point, "
              "not a comparison.")  # fmt: skip
    md = [f"# NeuroNCAP: {out.name}", "", head, "", "## Score and collision rate", "",
          "every permutation errored: nothing was scored" if every else _markdown(tab), "",
          "Score: 5 without a collision, else 4 · max(0, 1 − v_i / v_r), v_i the impact speed, v_r the no-action "
          "reference's (docs/concepts/ncap.md). Average = mean of the type means. NeuroNCAP scores only collisions, so a "
          "run that leaves the road scores 5; offroad_rate and ncap_score_offroad_as_0 (each such run counted 0) show it.", "", anchor, "", "## Scenarios", ""]  # fmt: skip
    md += [f"- **{k}**: {d['source']}; designed impact {d['designed_impact_s']} s, horizon {d['horizon_s']} s, "
           f"ego route {', '.join(d['ego_route'][:4])}" for k, d in designs.items()]  # fmt: skip
    md += ["", "## Worst runs", ""]
    have = {p.stem for p in vids}
    md += [f"- `{r['episode_id']}` ({r['file']}): score {r['score']:.2f}, impact {r['impact_speed_ms']:.2f} m/s "
           f"(reference {r['reference_speed_ms']:.2f} m/s, {r['reference_source']}) with `{r['impact_actor']}`"
           + (f"; video `videos/{r['episode_id']}.mp4`" if r["episode_id"] in have else "") for r in worst] or ["none"]  # fmt: skip
    errs = [r for r in rows if r["status"] != "ok"]
    if errs:
        md += ["", "## Errored permutations", ""] + [f"- `{r['episode_id']}`: {r['error']}" for r in errs[:50]]
    md_path = out / "report.md"
    atomic_write_text(md_path, "\n".join(md) + "\n")

    imgs = "".join(f'<figure><img src="data:image/png;base64,{_png_file(p)}"><figcaption>{html.escape(k)}</figcaption></figure>'
                   for k, p in hists.items())  # fmt: skip
    vlinks = "".join(f'<li><a href="videos/{html.escape(p.name)}">{html.escape(p.stem)}</a></li>' for p in vids) or "<li>none</li>"
    scen = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(d['source'])}</li>" for k, d in designs.items())
    table = "<p>every permutation errored: nothing was scored</p>" if every else _html_table(tab)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>NeuroNCAP: {html.escape(out.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }} td, th {{ border: 1px solid #ccc; padding: 3px 7px; text-align: right; }}
th {{ background: #f0f0f0; }} td:first-child {{ text-align: left; }} figure {{ display: inline-block; margin: 6px; }}
</style></head><body>
<h1>NeuroNCAP: {html.escape(out.name)}</h1><p>{html.escape(head)}</p>
<h2>Score and collision rate</h2>{table}
<p><small>Score: 5 without a collision, else 4 · max(0, 1 − v_i / v_r). {html.escape(anchor)}</small></p>
<h2>Scores per type</h2>{imgs}
<h2>Scenarios</h2><ul>{scen}</ul>
<h2>Worst runs (BEV videos)</h2><ul>{vlinks}</ul>
</body></html>
"""
    html_path = out / "report.html"
    atomic_write_text(html_path, page)
    try:
        write_report(out / "run")
    except Exception as exc:  # the NCAP report stands without the batch report
        log.warning("no batch report for %s: %s", out / "run", exc)
    return {"report_md": md_path, "report_html": html_path, **{f"hist_{k}": p for k, p in hists.items()},
            **{f"video_{p.stem}": p for p in vids}}  # fmt: skip


def _png_file(path: Path) -> str:
    import base64

    return base64.b64encode(path.read_bytes()).decode("ascii")
