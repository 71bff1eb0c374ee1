"""Corner-case search: random search and the cross-entropy method over a template's edits.

:func:`attack` evaluates candidate scenarios (each one closed-loop episode of the planner under
test, the *budget* counts those episodes), keeps the ones where the planner fails (collision or
off-road), checks that each failure is **solvable** -- the privileged oracle (``pdm_closed`` on full
state by default) drives the same scenario without failing; otherwise the case is discarded, as in
CAT/STRIVE -- and writes every solvable failure as a scenario file
``<generated_dir>/<base>-<hash>.yaml`` that reproduces the failure exactly when re-run (same seed,
planner and parameters; provenance in the header comment and in ``tags``).

Objective (minimised): ``-1`` for a failure; otherwise ``min(TTC, 5 s) / 5 s`` with the engine's
minimum constant-velocity time-to-collision over the episode (so near misses guide the search);
``2`` for an episode that errored.

Methods (same budget in episodes):

* ``random`` -- uniform samples of the unit cube (the baseline).
* ``cem`` -- the cross-entropy method: a diagonal Gaussian on the unit cube, refitted to the elite
  fraction of each population (smoothed, with a floor on the standard deviation so it keeps
  finding *distinct* failures around the modes it found).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sim.adversary.space import TEMPLATES, BaseInfo, Template, base_info, choose_template
from sim.errors import LoopdriveError, ScenarioError

__all__ = [
    "FAILURES",
    "AttackConfig",
    "AttackResult",
    "Candidate",
    "attack",
    "evaluate_scenario_data",
    "read_provenance",
    "rerun_file",
]

log = logging.getLogger(__name__)

#: episode terminations that count as a failure of the planner
FAILURES = ("collision", "offroad")
METHODS = ("random", "cem")
#: progress(episodes done, budget, solvable failures so far)
ProgressFn = Callable[[int, int, int], None]


@dataclass(frozen=True)
class AttackConfig:
    """Settings of one attack.

    Attributes:
        planner, planner_params: the planner under test (registry name and parameters).
        method: ``random`` or ``cem``.  budget: episodes of the planner under test.
        seed: seed of the search's ``np.random.Generator`` (and of every episode).
        template: edit family (``lead_brake``, ``cut_in``, ``crossing``, ``perturb``; None = chosen
            from the base by :func:`~sim.adversary.space.choose_template`).
        horizon_s: episode length of the generated cases (None = the base's).
        oracle, oracle_params: the privileged planner that must solve a case.
        check_solvable: run the oracle on every failure (False keeps unchecked failures, for
            quick counts; nothing is written then).
        population: CEM population (None = ``max(6, round(2 * sqrt(budget)))``).
        elite_frac, smoothing, min_std: CEM elite fraction, update smoothing, std floor (unit cube).
    """

    planner: str = "idm"
    planner_params: Mapping[str, Any] = field(default_factory=dict)
    method: str = "cem"
    budget: int = 200
    seed: int = 0
    template: str | None = None
    horizon_s: float | None = None
    oracle: str = "pdm_closed"
    oracle_params: Mapping[str, Any] = field(default_factory=dict)
    check_solvable: bool = True
    population: int | None = None
    elite_frac: float = 0.25
    smoothing: float = 0.7
    min_std: float = 0.05


@dataclass(frozen=True)
class Candidate:
    """One evaluated scenario: its index in evaluation order, unit-cube point, parameter values,
    content hash, objective, failure kind (``collision``/``offroad``/empty), min TTC (s), score,
    solvability (None = not checked) and the file written (None unless a solvable failure)."""

    index: int
    u: tuple[float, ...]
    values: dict[str, float]
    hash: str
    objective: float
    failure: str
    min_ttc_s: float
    score: float
    solvable: bool | None = None
    file: str | None = None


@dataclass(frozen=True)
class AttackResult:
    """Outcome: the base file, config, every candidate, the written files, and the failures found
    per budget checkpoint (list of ``{"episodes", "failures", "solvable_failures"}``)."""

    base: str
    template: str
    config: AttackConfig
    candidates: list[Candidate]
    files: list[str]
    per_budget: list[dict[str, int]]

    @property
    def n_failures(self) -> int:
        return sum(1 for c in self.candidates if c.failure)

    @property
    def n_solvable(self) -> int:
        return sum(1 for c in self.candidates if c.failure and c.solvable)

    def summary(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "template": self.template,
            "method": self.config.method,
            "planner": self.config.planner,
            "budget": self.config.budget,
            "seed": self.config.seed,
            "episodes": len(self.candidates),
            "failures": self.n_failures,
            "solvable_failures": self.n_solvable,
            "unsolvable_discarded": sum(1 for c in self.candidates if c.failure and c.solvable is False),
            "files": self.files,
            "per_budget": self.per_budget,
        }


# ------------------------------------------------------------------------------ helpers
def content_hash(data: Mapping[str, Any]) -> str:
    """10 hex digits of the SHA-256 of the scenario content (name, description, tags excluded)."""
    core = {k: v for k, v in data.items() if k not in ("name", "description", "tags")}
    return hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _rebase_paths(data: dict[str, Any], base_file: str, target_dir: Path) -> None:
    """Make the scene's relative ``log``/``bundle`` paths point to the same folders from ``target_dir``."""
    from sim.scenario import _resolve_log

    scene = data.get("scene") or {}
    for key in ("log", "bundle"):
        p = scene.get(key)
        if isinstance(p, str) and not Path(p).is_absolute():
            scene[key] = os.path.relpath(_resolve_log(p, base_file).resolve(), target_dir.resolve())


def _dump(data: Mapping[str, Any], header: str = "") -> str:
    import yaml

    body = yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=False, default_flow_style=None, width=110)
    return header + body


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _episode_of(data: Mapping[str, Any], where: Path) -> Any:
    """Validate scenario ``data`` as a file in folder ``where`` and return its first episode."""
    from sim.scenario import expand

    where.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=where, prefix=".cand-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(_dump(data))
        return expand(tmp)[0]
    finally:
        Path(tmp).unlink(missing_ok=True)


def _run(ep: Any, planner: str | None = None, params: Mapping[str, Any] | None = None) -> Any:
    from agents.rollout import run_planner_episode

    name = planner or ep.planner
    prm = dict(params if params is not None else ep.planner_params)
    return run_planner_episode(ep.spec, name, ep.seed, params=prm)


def _outcome(res: Any) -> tuple[float, str, float, float]:
    """(objective, failure, min TTC s, score) of an :class:`agents.rollout.EpisodeResult`."""
    if res.status != "ok" or res.record is None:
        return 2.0, "", math.nan, math.nan
    ttc = float(res.record.meta.get("engine_min_ttc_s", math.inf))
    failure = res.termination if res.termination in FAILURES else ""
    from sim.metrics import compute_metrics

    _, score = compute_metrics(res.record)
    obj = -1.0 if failure else min(ttc, 5.0) / 5.0
    return obj, failure, ttc, float(score)


def evaluate_scenario_data(data: Mapping[str, Any], where: str | os.PathLike[str], planner: str | None = None, params: Mapping[str, Any] | None = None) -> tuple[float, str, float, float]:
    """Run the scenario ``data`` (as a file in folder ``where``) once and return (objective,
    failure, min TTC s, score)."""
    return _outcome(_run(_episode_of(data, Path(where)), planner, params))


def read_provenance(path: str | os.PathLike[str]) -> dict[str, str]:
    """The provenance of a generated file (``base``, ``method``, ``objective``, ``seed``,
    ``template``, ``planner``, ``failure``) from its ``tags`` (``key:value``)."""
    from sim.scenario import read_yaml

    data, _ = read_yaml(path)
    out: dict[str, str] = {}
    for t in data.get("tags") or []:
        if isinstance(t, str) and ":" in t:
            k, v = t.split(":", 1)
            out[k] = v
    return out


def rerun_file(path: str | os.PathLike[str]) -> tuple[float, str, float, float]:
    """Re-run a (generated) scenario file with its own planner and seed: (objective, failure,
    min TTC s, score)."""
    from sim.scenario import expand

    return _outcome(_run(expand(path)[0]))


# ------------------------------------------------------------------------------ the search
class _Sampler:
    def __init__(self, method: str, dim: int, budget: int, cfg: AttackConfig, rng: np.random.Generator) -> None:
        self.method, self.dim, self.cfg, self.rng = method, dim, cfg, rng
        self.pop = cfg.population or max(6, round(2.0 * math.sqrt(budget)))
        self.mean = np.full(dim, 0.5)
        self.std = np.full(dim, 0.3)

    def sample(self) -> NDArray[np.float64]:
        if self.method == "random":
            return self.rng.random(self.dim)
        return np.clip(self.mean + self.std * self.rng.standard_normal(self.dim), 0.0, 1.0)

    def update(self, us: NDArray[np.float64], objs: NDArray[np.float64]) -> None:
        if self.method != "cem" or len(us) < 2:
            return
        k = max(2, math.ceil(self.cfg.elite_frac * len(us)))
        elite = us[np.argsort(objs, kind="stable")[:k]]
        a = self.cfg.smoothing
        self.mean = a * elite.mean(axis=0) + (1 - a) * self.mean
        self.std = np.maximum(a * elite.std(axis=0) + (1 - a) * self.std, self.cfg.min_std)


def attack(
    base: str | os.PathLike[str],
    config: AttackConfig = AttackConfig(),
    *,
    out: str | os.PathLike[str] | None = None,
    generated_dir: str | os.PathLike[str] = "scenarios/generated",
    progress: ProgressFn | None = None,
) -> AttackResult:
    """Search for failures of ``config.planner`` around the base scenario file ``base``.

    Writes every solvable failure to ``generated_dir`` and, when ``out`` is given,
    ``out/summary.json`` (:meth:`AttackResult.summary`) and ``out/candidates.jsonl`` (one line per
    evaluated candidate). Deterministic for a given config.

    Raises:
        ScenarioError: unknown method/template, a base that is not lane-based, a bad budget.
    """
    from sim.scenario import _set_path, _split_path, read_yaml, scene_context, sweep_points
    from sim.spec import SceneSpec

    cfg = config
    if cfg.method not in METHODS:
        raise ScenarioError(f"expected a search method in {list(METHODS)}, got {cfg.method!r}", field="method")
    if cfg.budget < 1:
        raise ScenarioError(f"expected a positive budget (episodes), got {cfg.budget}", field="budget")
    base_p = Path(base)
    data, _ = read_yaml(base_p)
    if not isinstance(data, dict):
        raise ScenarioError("expected a scenario mapping", file=base_p)
    for k, v in (sweep_points(data.get("sweep") or {}) or [{}])[0].items():
        data = _set_path(data, _split_path(k), v)
    data.pop("sweep", None)
    base_name = str(data.get("name") or base_p.stem)
    gen_dir = Path(generated_dir)
    _rebase_paths(data, str(base_p), gen_dir)
    sc = data.get("scene") or {}
    lm = scene_context(SceneSpec(town=sc.get("town", "tiny"), seed=int(sc.get("seed", 0)),
                                 log=Path(_abs_log(sc, gen_dir)) if sc.get("log") else None)).lane_map  # fmt: skip
    info = base_info(data, lm, str(base_p))
    tname = cfg.template or choose_template(data)
    template: Template = TEMPLATES.get(tname)()
    ep_seed = int(cfg.seed)
    from agents.base import make_planner

    kinds = [k for k in make_planner(cfg.planner, **dict(cfg.planner_params)).observation_spec().kinds if k not in ("ego", "objects")]
    rng = np.random.default_rng(cfg.seed)
    sampler = _Sampler(cfg.method, template.dim, cfg.budget, cfg, rng)
    cands: list[Candidate] = []
    files: list[str] = []
    seen_solv: dict[str, bool] = {}
    batch_u: list[NDArray[np.float64]] = []
    batch_o: list[float] = []
    checkpoints = sorted({max(1, round(cfg.budget * f)) for f in (0.25, 0.5, 0.75, 1.0)})
    per_budget: list[dict[str, int]] = []
    while len(cands) < cfg.budget:
        scen, u = None, None
        for _ in range(200):
            u = sampler.sample()
            scen = _candidate_data(template, info, u, cfg, kinds, base_name, ep_seed)
            if scen is not None:
                try:
                    ep = _episode_of(scen, gen_dir)
                    break
                except LoopdriveError as exc:
                    log.debug("candidate rejected: %s", exc)
                    scen = None
        if scen is None or u is None:
            raise ScenarioError(f"template {tname!r} found no valid edit of this base in 200 tries", file=base_p)
        h = str(scen["name"]).rsplit("-", 1)[-1]
        obj, failure, ttc, score = _outcome(_run(ep))
        solvable: bool | None = None
        path: str | None = None
        if failure and cfg.check_solvable:
            if h not in seen_solv:
                o_obj, o_fail, _, _ = _outcome(_run(ep, cfg.oracle, cfg.oracle_params))
                seen_solv[h] = (not o_fail) and o_obj < 2.0
                if seen_solv[h]:
                    path = _write_generated(scen, gen_dir, base_name, cfg, tname, obj, failure)
                    files.append(path)
                else:
                    log.info("discarded unsolvable case %s (oracle %s: %s)", h, cfg.oracle, o_fail or "error")
            solvable = seen_solv[h]
        cands.append(Candidate(len(cands), tuple(float(x) for x in u), template.values(u), h, obj, failure, ttc, score, solvable, path))
        batch_u.append(u)
        batch_o.append(obj)
        if len(batch_u) >= sampler.pop:
            sampler.update(np.array(batch_u), np.array(batch_o))
            batch_u, batch_o = [], []
        if len(cands) in checkpoints:
            per_budget.append({
                "episodes": len(cands),
                "failures": sum(1 for c in cands if c.failure),
                "solvable_failures": sum(1 for c in cands if c.failure and c.solvable),
            })  # fmt: skip
        if progress is not None:
            progress(len(cands), cfg.budget, sum(1 for c in cands if c.failure and (c.solvable or not cfg.check_solvable)))
    res = AttackResult(str(base_p), tname, cfg, cands, files, per_budget)
    if out is not None:
        outp = Path(out)
        outp.mkdir(parents=True, exist_ok=True)
        _write_text_atomic(outp / "summary.json", json.dumps(_jsonable({**res.summary(), "config": asdict(cfg)}), indent=1))
        _write_text_atomic(outp / "candidates.jsonl", "".join(json.dumps(_jsonable(asdict(c))) + "\n" for c in cands))
    return res


def _abs_log(scene: Mapping[str, Any], gen_dir: Path) -> str:
    p = Path(str(scene["log"]))
    return str(p if p.is_absolute() else (gen_dir / p))


def _jsonable(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None if math.isnan(o) else ("inf" if o > 0 else "-inf")
    if isinstance(o, Mapping):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_jsonable(v) for v in o]
    return o


def _candidate_data(template: Template, info: BaseInfo, u: NDArray[np.float64], cfg: AttackConfig, kinds: Sequence[str], base_name: str, seed: int) -> dict[str, Any] | None:
    d = template.edit(info, u)
    if d is None:
        return None
    d["planner"] = {"name": cfg.planner, "params": copy.deepcopy(dict(cfg.planner_params))}
    d["observation"] = list(dict.fromkeys(["state", *kinds]))
    d["seeds"] = [seed]
    if cfg.horizon_s is not None:
        d["horizon_s"] = float(cfg.horizon_s)
    d.pop("name", None)
    d.pop("description", None)
    d.pop("tags", None)
    h = content_hash(d)
    return {"version": 1, "name": f"{base_name}-{h}", **{k: v for k, v in d.items() if k != "version"}}


def _modeline(gen_dir: Path) -> str:
    """The editor modeline pointing at the library's ``scenario.schema.json`` (in ``gen_dir`` or
    one of its two parents), or nothing when there is none."""
    for up in (gen_dir, gen_dir.parent, gen_dir.parent.parent):
        if (up / "scenario.schema.json").is_file():
            rel = os.path.relpath(up / "scenario.schema.json", gen_dir)
            return f"# yaml-language-server: $schema={Path(rel).as_posix()}\n"
    return ""


def _write_generated(scen: dict[str, Any], gen_dir: Path, base_name: str, cfg: AttackConfig, tname: str, obj: float, failure: str) -> str:
    h = str(scen["name"]).rsplit("-", 1)[-1]
    out = dict(scen)
    out["description"] = (
        f"Generated by loopdrive attack ({cfg.method}, template {tname}) from {base_name}: "
        f"{cfg.planner} fails ({failure}); the oracle {cfg.oracle} solves it."
    )
    out["tags"] = [
        "generated", f"base:{base_name}", f"method:{cfg.method}", f"template:{tname}", f"planner:{cfg.planner}",
        f"objective:{obj:.6g}", f"seed:{cfg.seed}", f"failure:{failure}", f"oracle:{cfg.oracle}",
    ]  # fmt: skip
    keys = ["version", "name", "description", "tags"] + [k for k in out if k not in ("version", "name", "description", "tags")]
    out = {k: out[k] for k in keys}
    header = _modeline(gen_dir) + (
        f"# Generated corner case (loopdrive attack): base {base_name}, method {cfg.method}, template {tname},\n"
        f"# search seed {cfg.seed}, objective {obj:.6g}, failure {failure} of {cfg.planner}; solvable by {cfg.oracle}.\n"
        f"# Re-run: loopdrive run {gen_dir}/{base_name}-{h}.yaml --out out/rerun-{h}\n"
    )
    path = gen_dir / f"{base_name}-{h}.yaml"
    _write_text_atomic(path, _dump(out, header))
    return str(path)
