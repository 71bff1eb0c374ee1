"""The markdown table of ``loopdrive bench env`` (``env.md`` beside ``env.json``; the README's
env table is this text): one row per simulator and B, the random-action rows first, the
fixed-action rows after them under their label."""

from __future__ import annotations

from typing import Any

__all__ = ["FIXED_LABEL", "THREADS_LABEL", "env_table_markdown"]

#: the label of every fixed-action row (JSON ``label`` and the markdown table)
FIXED_LABEL = "fixed action (the same action in every world and step: worlds stay in lock-step, which flatters the batched env; for comparison with earlier figures only)"


#: the label of every threaded vector-env row (JSON ``label`` and the markdown table)
THREADS_LABEL = "the engine step's worlds shared among worker threads (sim.engine.StepThreads, the same bits as one thread): uses that many cores, so it is not a per-core figure"


def _num(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def _ratio(v: float, ref: dict[str, Any]) -> str:
    r = ref.get("steps_per_s") if ref.get("available") else None
    return f"{v / r:,.1f}" if r else "n/a"


def _sim_desc(name: str, st: dict[str, Any]) -> str:
    if name == "highway_env":
        c = st.get("config", {})
        return f"highway-env {st.get('version', '')} `highway-v0`, {c.get('vehicles_count', '?')} vehicles, {c.get('simulation_frequency', '?')} Hz, Kinematics observation"
    if name == "metadrive":
        c = st.get("config", {})
        return (f"MetaDrive {st.get('version', '')} headless, {c.get('traffic_mode', '?')} traffic (density {c.get('traffic_density', '?')}, map {c.get('map', '?')}), "
                f"{_num(st.get('traffic_vehicles_median'))} traffic vehicles ({_num(st.get('traffic_moving_median'))} driving, mean "
                f"{_num(st.get('traffic_mean_speed_kmh'))} km/h), {st.get('seconds_per_step', '?')} s per step")
    return name


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def env_table_markdown(res: dict[str, Any]) -> str:
    """The bench's figures as a markdown table with a one-paragraph header stating the method,
    the configuration and the machine load."""
    hw, md = res.get("highway_env", {}), res.get("metadrive", {})
    m = res.get("machine", {})
    meth = res.get("method", {})
    lines = [
        f"Per-world env steps per wall second, {res.get('dt_s')} s per step; medians of {res.get('rounds')} interleaved slices of "
        f"{_num(meth.get('slice_s'), 1)} s per system, one warm process per simulator; random actions, seeded and drawn up front per world, "
        f"resets inside the figure and counted. {m.get('cpus')} CPU cores, load average {m.get('load_avg_1min_before')} before / "
        f"{m.get('load_avg_1min_after')} after (`{m.get('uptime_after', '')}`).",
        "",
        _row(["simulator", "actions", "steps/s per world", "× highway-env", "× MetaDrive", "resets / 1000 steps", "reset ms"]),
        _row(["---", "---", "---:", "---:", "---:", "---:", "---:"]),
    ]
    for name, st in (("highway_env", hw), ("metadrive", md)):
        if st.get("available"):
            lines.append(_row([_sim_desc(name, st), "random", _num(st["steps_per_s"]), _ratio(st["steps_per_s"], hw), _ratio(st["steps_per_s"], md),
                               _num(st["resets_per_1000_world_steps"], 1), _num(st["reset_ms"], 2)]))
        else:
            lines.append(_row([f"{'highway-env' if name == 'highway_env' else 'MetaDrive'}: unavailable ({st.get('reason', 'not run')})", "", "", "", "", "", ""]))
    rows = ([res["loopdrive_single"]] if res.get("loopdrive_single") else []) + list(res.get("loopdrive_batched") or [])
    rows += list((res.get("loopdrive_threaded") or {}).get("rows") or [])
    rows += list((res.get("fixed_action") or {}).get("rows") or [])
    for f in rows:
        what = "loopdrive single env" if f["num_envs"] == 1 else f"loopdrive vector env, B = {f['num_envs']}"
        if f.get("threads", 1) > 1:
            what += f", **{f['threads']} threads** (see below)"
        acts = "random" if f["actions"] == "random" else "**fixed** (see below)"
        lines.append(_row([what, acts, _num(f["steps_per_s"]), _ratio(f["steps_per_s"], hw), _ratio(f["steps_per_s"], md),
                           _num(f["resets_per_1000_world_steps"], 1), f"{_num(f['reset_ms'], 2)}" + (f" ({_num(f['reset_ms_per_world'], 3)} per world)" if f["num_envs"] > 1 else "")]))
    lines += ["", f"Rows marked fixed: {FIXED_LABEL}. Rows with threads: {THREADS_LABEL}. Reset ms: the median of single resets; for the vector env one `reset()` of all B worlds.", ""]
    return "\n".join(lines)
