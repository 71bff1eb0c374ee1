"""The data loop's report (``report.json`` / ``report.md``): failure rate and mean score per policy,
nominal and held-out (:mod:`sim.loop`)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sim.fsutil import atomic_write_text

__all__ = ["all_errored", "rate_cell", "write_report"]

_RETRAIN = {"scratch": "from scratch", "finetune": "fine-tuned from the previous policy",
            "both": "fine-tuned and from-scratch candidates, the better on validation kept"}  # fmt: skip


def rate_cell(ev: Mapping[str, Any]) -> str:
    """A report.md failure-rate cell: ``12.5 %``, ``12.5 % (3 errored)``, ``every episode errored
    (8)`` or ``n/a`` (no episodes)."""
    n, n_err = int(ev.get("episodes") or 0), int(ev.get("errored") or ev.get("errors") or 0)
    rate = ev.get("failure_rate")
    if n and n_err == n:
        return f"every episode errored ({n_err})"
    if rate is None or (isinstance(rate, float) and not math.isfinite(rate)):
        return "n/a"
    return f"{100 * rate:.1f} %" + (f" ({n_err} errored)" if n_err else "")


def all_errored(report: Mapping[str, Any]) -> tuple[int, int]:
    """(episodes, errored episodes) over every evaluation of a loop report; the loop produced no
    result when both are equal and non-zero."""
    n = n_err = 0
    for e in report.get("rounds", []):
        for side in ("nominal", "heldout"):
            ev = e.get(side) or {}
            n += int(ev.get("episodes") or 0)
            n_err += int(ev.get("errored") or ev.get("errors") or 0)
    return n, n_err


def write_report(outp: Path, report: dict[str, Any]) -> None:
    def f(v: Any, pct: bool = False) -> str:
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "n/a"
        return f"{100 * v:.1f} %" if pct else f"{v:.3f}"

    lines = [
        "# Data loop report", "",
        f"planner `{report['config']['planner']}`, {report['config']['rounds']} rounds, attack budget {report['config']['budget']} "
        f"episodes/round ({report['config']['method']}), bases: {', '.join(Path(b).stem for b in report['bases'])}; "
        f"held-out generated cases: {report['heldout_cases']} ({report['config'].get('heldout_method') or report['config']['method']}, "
        f"search seed {report['config']['heldout_seed']}, never trained on)"
        + (f"; sensors: {report['sensors']} (every evaluation, search and export renders them)." if report.get("sensors") else "."), "",
        f"round-0 policy: `{report['config'].get('init_weights') or 'trained on init/shards'}`; retraining: "
        f"{_RETRAIN.get(str(report['config'].get('retrain')), 'from scratch')} on "
        f"{', '.join(report['config'].get('init_shards') or []) or 'no initial shards'} + every round's exported shards.", "",
        "| policy | nominal failure rate | nominal score | held-out failure rate | held-out score |",
        "| --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    for e in report["rounds"]:
        name = "round 0 (initial)" if e["round"] == 0 else f"after round {e['round'] - 1} retraining"
        n, h = e["nominal"], e["heldout"]
        lines.append(f"| {name} | {rate_cell(n)} | {f(n.get('score'))} | {rate_cell(h)} | {f(h.get('score'))} |")
    total, errored = all_errored(report)
    if total and errored == total:
        lines += ["", f"**Every evaluation episode errored ({errored} of {total}): the loop produced no result.**"]
    elif errored:
        lines += ["", f"{errored} of {total} evaluation episodes errored (not counted in the failure rates)."]
    for name, text in (("report.json", json.dumps(report, indent=1)), ("report.md", "\n".join(lines) + "\n")):
        atomic_write_text(outp / name, text)
