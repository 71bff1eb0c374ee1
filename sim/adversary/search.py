"""Corner-case search: random search and the cross-entropy method over a template's edits.

:func:`attack` evaluates candidate scenarios (each one closed-loop episode of the planner under
test, the *budget* counts those episodes), keeps the ones where the planner fails (collision or
off-road), checks that each failure is **solvable** -- the privileged oracle (``pdm_closed`` on full
state by default) drives the same scenario without failing; otherwise the case is discarded, as in
CAT/STRIVE -- and writes every solvable failure as a scenario file
``<generated_dir>/<base>-<hash>.yaml`` that reproduces the failure exactly when re-run (same seed,
planner and parameters; provenance in the header comment and in ``tags``).

Objective (minimised, graded so the search has a slope toward failure):

* a **solvable failure**: ``-1 - 0.5 * min(impact speed, 10 m/s) / 10 m/s`` (the ego's speed
  relative to the actor it hits at the collision, or its speed when it leaves the road), so the
  search moves into the middle of a failure region rather than its rim;
* an **unsolvable failure** (the oracle fails too): ``+1`` -- no use to anyone, steer away;
* no failure: ``0.5 * min(clearance, 5 m) / 5 m + 0.5 * min(TTC, 3 s) / 3 s`` in [0, 1], with the
  minimum clearance between the ego's and any actor's footprint over the episode (each box
  covered by three discs) and the engine's minimum constant-velocity time-to-collision;
* ``2`` for an episode that errored.

Methods (same budget in episodes of the planner under test; the oracle's solvability runs on
failures are extra and the same rule for both):

* ``random`` -- uniform samples of the unit cube (the honest baseline over the same space).
* ``cem`` -- the cross-entropy method: the first generation is the same uniform draw as
  ``random``; then a diagonal Gaussian on the unit cube (truncated to it by resampling), refitted
  each generation to the elite fraction of the current generation plus the previous elites
  (elitism), smoothed, with a floor on the standard deviation so it keeps finding *distinct*
  failures around the modes it found.

**Distinct failures**: two solvable failures are the same case when their unit-cube points are
within ``dedupe_radius`` of each other in every dimension (L-infinity; default 0.05 = 5 % of each
parameter's range); :attr:`AttackResult.n_distinct` counts failures greedily in evaluation order.
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
from sim.fsutil import atomic_write_text, json_safe

__all__ = [
    "FAILURES",
    "AttackConfig",
    "AttackResult",
    "Candidate",
    "attack",
    "distinct_failures",
    "evaluate_scenario_data",
    "min_clearance_m",
    "read_provenance",
    "rerun_file",
    "sample_cases",
]

log = logging.getLogger(__name__)

#: episode terminations that count as a failure of the planner
FAILURES = ("collision", "offroad")
METHODS = ("random", "cem")
#: normalisation of the graded objective: clearance (m), TTC (s), impact speed (m/s)
CLEAR_CAP_M, TTC_CAP_S, IMPACT_CAP_MPS = 5.0, 3.0, 10.0
#: what the search sees for a failure the oracle cannot avoid either
UNSOLVABLE_OBJECTIVE = 1.0
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
        oracle, oracle_params: the privileged planner(s) that must solve a case: one registry
            name, or several comma-separated (``idm,pdm_closed``) tried in order -- a case is
            solvable as soon as one of them drives it without failure (a cheap privileged planner
            first saves oracle time; ``oracle_params`` go to every listed oracle).
        check_solvable: run the oracle on every failure (False keeps unchecked failures, for
            quick counts; nothing is written then).
        population: CEM population (None = ``clip(round(budget / 20), 8, 30)``: about twenty
            generations; small populations adapt sooner, which matters at a 200-episode budget).
        elite_frac, smoothing, min_std: CEM elite fraction, update smoothing, std floor (unit cube).
        dedupe_radius: L-infinity radius (unit cube) within which two failures are one case.
        renderer: sensors of every episode (``mesh``, ``neural``, ``scenario`` for each file's
            ``scene.renderer``; None: the analytic box LiDAR), for planners that observe them.
    """

    planner: str = "idm"
    planner_params: Mapping[str, Any] = field(default_factory=dict)
    method: str = "cem"
    budget: int = 200
    seed: int = 0
    template: str | None = None
    horizon_s: float | None = None
    oracle: str = "idm,pdm_closed"
    oracle_params: Mapping[str, Any] = field(default_factory=dict)
    check_solvable: bool = True
    population: int | None = None
    elite_frac: float = 0.2
    smoothing: float = 0.7
    min_std: float = 0.06
    dedupe_radius: float = 0.05
    renderer: str | None = None


@dataclass(frozen=True)
class Candidate:
    """One evaluated scenario: its index in evaluation order, unit-cube point, parameter values,
    content hash, objective, failure kind (``collision``/``offroad``/empty), min TTC (s), score,
    solvability (None = not checked), the file written (None unless a solvable failure) and
    whether the episode errored (the planner or rollout raised: neither a failure nor a pass)."""

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
    errored: bool = False


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
    def n_errored(self) -> int:
        return sum(1 for c in self.candidates if c.errored)

    @property
    def n_solvable(self) -> int:
        return sum(1 for c in self.candidates if c.failure and c.solvable)

    @property
    def n_distinct(self) -> int:
        """Distinct solvable failures (see the module docs)."""
        return distinct_failures(self.candidates, self.config.dedupe_radius)

    def summary(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "template": self.template,
            "method": self.config.method,
            "planner": self.config.planner,
            "budget": self.config.budget,
            "seed": self.config.seed,
            "episodes": len(self.candidates),
            "errored": self.n_errored,
            "failures": self.n_failures,
            "solvable_failures": self.n_solvable,
            "distinct_failures": self.n_distinct,
            "dedupe_radius": self.config.dedupe_radius,
            "unsolvable_discarded": sum(1 for c in self.candidates if c.failure and c.solvable is False),
            "files": self.files,
            "per_budget": self.per_budget,
        }


# ------------------------------------------------------------------------------ helpers
def distinct_failures(cands: Sequence[Candidate], radius: float) -> int:
    """Solvable failures counted greedily in evaluation order: one counts when its unit-cube point
    is farther than ``radius`` (L-infinity) from every failure counted before it."""
    kept: list[NDArray[np.float64]] = []
    for c in cands:
        if not (c.failure and c.solvable is not False):
            continue
        u = np.asarray(c.u, np.float64)
        if all(float(np.max(np.abs(u - k))) > radius for k in kept):
            kept.append(u)
    return len(kept)


def _discs(xy: NDArray[np.float64], yaw: NDArray[np.float64], length: NDArray[np.float64], width: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Three discs covering each box: centres (..., 3, 2) m and radii (..., 3) m."""
    off = np.array([-1.0, 0.0, 1.0]) * (length[..., None] / 3.0)
    c = xy[..., None, :] + off[..., None] * np.stack([np.cos(yaw), np.sin(yaw)], -1)[..., None, :]
    r = np.sqrt((length / 6.0) ** 2 + (width / 2.0) ** 2)
    return c, np.broadcast_to(r[..., None], off.shape)


def min_clearance_m(rec: Any) -> float:
    """Minimum gap (m, 0 when touching) between the ego's and any valid actor's footprint over the
    episode, each box covered by three discs (a slight under-estimate of the true gap)."""
    n = len(rec.actor_ids)
    if n == 0:
        return math.inf
    T = len(rec.t_s)
    ec, er = _discs(rec.ego_xy, rec.ego_yaw, np.full(T, rec.ego_size[0]), np.full(T, rec.ego_size[1]))  # (T,3,2)
    size = np.asarray(rec.actor_size, np.float64)
    ac, ar = _discs(rec.actor_xy, rec.actor_yaw, np.broadcast_to(size[:, 0], (T, n)), np.broadcast_to(size[:, 1], (T, n)))  # (T,n,3,2)
    d = np.linalg.norm(ec[:, None, :, None, :] - ac[:, :, None, :, :], axis=-1) - er[:, None, :, None] - ar[:, :, None, :]
    d = np.where(np.asarray(rec.actor_valid, bool)[:, :, None, None], d, np.inf)
    return float(max(0.0, np.min(d)))


def _impact_speed(rec: Any, failure: str) -> float:
    """Speed (m/s) of the failure: the ego's speed relative to the nearest actor at the last step
    for a collision, the ego's speed for an off-road exit."""
    v = float(abs(rec.ego_speed[-1]))
    if failure != "collision" or len(rec.actor_ids) == 0:
        return v
    e = rec.ego_speed[-1] * np.array([math.cos(rec.ego_yaw[-1]), math.sin(rec.ego_yaw[-1])])
    a = rec.actor_speed[-1][:, None] * np.stack([np.cos(rec.actor_yaw[-1]), np.sin(rec.actor_yaw[-1])], -1)
    dist = np.linalg.norm(rec.actor_xy[-1] - rec.ego_xy[-1], axis=-1)
    dist = np.where(np.asarray(rec.actor_valid[-1], bool), dist, np.inf)
    k = int(np.argmin(dist))
    return float(np.linalg.norm(e - a[k]))


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


def _run(ep: Any, planner: str | None = None, params: Mapping[str, Any] | None = None, renderer: str | None = None) -> Any:
    from sim.rollout import run_planner_episode

    name = planner or ep.planner
    prm = dict(params if params is not None else ep.planner_params)
    return run_planner_episode(ep.spec, name, ep.seed, params=prm, renderer=renderer)


def _outcome(res: Any) -> tuple[float, str, float, float]:
    """(objective, failure, min TTC s, score) of an :class:`sim.batch.EpisodeResult`."""
    if res.status != "ok" or res.record is None:
        return 2.0, "", math.nan, math.nan
    ttc = float(res.record.meta.get("engine_min_ttc_s", math.inf))
    failure = res.termination if res.termination in FAILURES else ""
    from sim.metrics import compute_metrics

    _, score = compute_metrics(res.record)
    if failure:
        obj = -1.0 - 0.5 * min(_impact_speed(res.record, failure), IMPACT_CAP_MPS) / IMPACT_CAP_MPS
    else:
        clear = min_clearance_m(res.record)
        obj = 0.5 * min(clear, CLEAR_CAP_M) / CLEAR_CAP_M + 0.5 * min(ttc, TTC_CAP_S) / TTC_CAP_S
    return float(obj), failure, ttc, float(score)


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
    """Proposal distribution of one search: uniform (``random``) or CEM (see the module docs)."""

    def __init__(self, method: str, dim: int, budget: int, cfg: AttackConfig, rng: np.random.Generator) -> None:
        self.method, self.dim, self.cfg, self.rng = method, dim, cfg, rng
        self.pop = cfg.population or int(np.clip(round(budget / 20), 8, 30))
        self.mean = np.full(dim, 0.5)
        self.std = np.full(dim, 0.3)
        self.generation = 0
        self.elite_u = np.zeros((0, dim))
        self.elite_o = np.zeros(0)

    def sample(self) -> NDArray[np.float64]:
        if self.method == "random" or self.generation == 0:
            return self.rng.random(self.dim)
        u = self.mean + self.std * self.rng.standard_normal(self.dim)
        for _ in range(20):  # truncate to the cube by resampling the coordinates outside it
            bad = (u < 0.0) | (u > 1.0)
            if not bad.any():
                break
            u[bad] = self.mean[bad] + self.std[bad] * self.rng.standard_normal(int(bad.sum()))
        return np.clip(u, 0.0, 1.0)

    def update(self, us: NDArray[np.float64], objs: NDArray[np.float64]) -> None:
        self.generation += 1
        if self.method != "cem" or len(us) < 2:
            return
        k = max(3, math.ceil(self.cfg.elite_frac * len(us)))
        pool_u = np.concatenate([self.elite_u, us])
        pool_o = np.concatenate([self.elite_o, objs])
        order = np.argsort(pool_o, kind="stable")[:k]
        self.elite_u, self.elite_o = pool_u[order], pool_o[order]
        a = self.cfg.smoothing
        self.mean = a * self.elite_u.mean(axis=0) + (1 - a) * self.mean
        self.std = np.maximum(a * self.elite_u.std(axis=0) + (1 - a) * self.std, self.cfg.min_std)


def _valid_candidate(sampler: Any, template: Template, info: BaseInfo, cfg: AttackConfig, kinds: Sequence[str], base_name: str, ep_seed: int, gen_dir: Path) -> tuple[dict[str, Any] | None, NDArray[np.float64] | None, Any]:
    """(scenario data, parameters, episode) of the first of 200 samples making a valid scenario (data None: none did)."""
    scen, u, ep = None, None, None
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
    return scen, u, ep


def _solvable_case(scen: dict[str, Any], ep: Any, h: str, seen: dict[str, bool], files: list[str], gen_dir: Path, base_name: str, cfg: AttackConfig, tname: str, obj: float, failure: str) -> tuple[bool, str | None]:
    """(solvable, file written) of a failing case ``h``: the oracles are tried once (``seen``), a
    solvable case written to ``gen_dir`` and listed in ``files``."""
    if h in seen:
        return seen[h], None
    solver = _solver(ep, cfg)
    seen[h] = solver is not None
    if solver is None:
        log.info("discarded unsolvable case %s (no oracle of %s avoids failure)", h, cfg.oracle)
        return False, None
    path = _write_generated(scen, gen_dir, base_name, cfg, tname, obj, failure, solver)
    files.append(path)
    return True, path


def attack(
    base: str | os.PathLike[str],
    config: AttackConfig = AttackConfig(),
    *,
    out: str | os.PathLike[str] | None = None,
    generated_dir: str | os.PathLike[str] | None = None,
    progress: ProgressFn | None = None,
) -> AttackResult:
    """Search for failures of ``config.planner`` around the base scenario file ``base``.

    Writes every solvable failure to ``generated_dir`` (default ``out/generated``, so no scenario
    library changes unless asked) and, when ``out`` is given, ``out/summary.json``
    (:meth:`AttackResult.summary`) and ``out/candidates.jsonl`` (one line per evaluated candidate).
    Deterministic for a given config. Raises:
        ScenarioError: unknown method/template, a base that is not lane-based, a bad budget.
    """
    cfg = config
    if cfg.method not in METHODS:
        raise ScenarioError(f"expected a search method in {list(METHODS)}, got {cfg.method!r}", field="method")
    if cfg.budget < 1:
        raise ScenarioError(f"expected a positive budget (episodes), got {cfg.budget}", field="budget")
    if generated_dir is None and out is None:
        raise ScenarioError("expected out or generated_dir (where the generated cases go)", field="generated_dir")
    base_p, gen_dir = Path(base), Path(generated_dir) if generated_dir is not None else Path(str(out)) / "generated"
    _, base_name, info, tname, template = _prepare(base_p, gen_dir, cfg.template)
    ep_seed = int(cfg.seed)
    from sim.planning import make_planner

    kinds = [k for k in make_planner(cfg.planner, **dict(cfg.planner_params)).observation_spec().kinds if k not in ("ego", "objects")]
    sampler = _Sampler(cfg.method, template.dim, cfg.budget, cfg, np.random.default_rng(cfg.seed))
    cands: list[Candidate] = []
    files: list[str] = []
    seen_solv: dict[str, bool] = {}
    batch_u: list[NDArray[np.float64]] = []
    batch_o: list[float] = []
    checkpoints = sorted({max(1, round(cfg.budget * f)) for f in (0.25, 0.5, 0.75, 1.0)})
    per_budget: list[dict[str, int]] = []
    while len(cands) < cfg.budget:
        scen, u, ep = _valid_candidate(sampler, template, info, cfg, kinds, base_name, ep_seed, gen_dir)
        if scen is None or u is None:
            raise ScenarioError(f"template {tname!r} found no valid edit of this base in 200 tries", file=base_p)
        h = str(scen["name"]).rsplit("-", 1)[-1]
        run = _run(ep, renderer=cfg.renderer)
        obj, failure, ttc, score = _outcome(run)
        solvable, path = _solvable_case(scen, ep, h, seen_solv, files, gen_dir, base_name, cfg, tname, obj, failure) if failure and cfg.check_solvable else (None, None)
        cands.append(Candidate(len(cands), tuple(float(x) for x in u), template.values(u), h, obj, failure, ttc, score, solvable, path,
                               errored=run.status != "ok" or run.record is None))  # fmt: skip
        batch_u.append(u)
        batch_o.append(UNSOLVABLE_OBJECTIVE if solvable is False else obj)
        if len(batch_u) >= sampler.pop:
            sampler.update(np.array(batch_u), np.array(batch_o))
            batch_u, batch_o = [], []
        if len(cands) in checkpoints:
            per_budget.append({"episodes": len(cands), "failures": sum(1 for c in cands if c.failure),
                               "solvable_failures": sum(1 for c in cands if c.failure and c.solvable),
                               "distinct_failures": distinct_failures(cands, cfg.dedupe_radius), "errored": sum(1 for c in cands if c.errored)})  # fmt: skip
        if progress is not None:
            progress(len(cands), cfg.budget, sum(1 for c in cands if c.failure and (c.solvable or not cfg.check_solvable)))
    res = AttackResult(str(base_p), tname, cfg, cands, files, per_budget)
    if out is not None:
        outp = Path(out)
        outp.mkdir(parents=True, exist_ok=True)
        atomic_write_text(outp / "summary.json", json.dumps(json_safe({**res.summary(), "config": asdict(cfg)}, inf_as_str=True), indent=1), parents=True)
        atomic_write_text(outp / "candidates.jsonl", "".join(json.dumps(json_safe(asdict(c), inf_as_str=True)) + "\n" for c in cands), parents=True)
    return res


def _prepare(base_p: Path, gen_dir: Path, template: str | None) -> tuple[dict[str, Any], str, BaseInfo, str, Template]:
    """Read a base scenario (first sweep point), rebase its paths to ``gen_dir`` and pick the
    template: (data, base name, base info, template name, template)."""
    from sim.scenario import _set_path, _split_path, read_yaml, scene_context, sweep_points
    from sim.spec import SceneSpec

    data, _ = read_yaml(base_p)
    if not isinstance(data, dict):
        raise ScenarioError("expected a scenario mapping", file=base_p)
    for k, v in (sweep_points(data.get("sweep") or {}) or [{}])[0].items():
        data = _set_path(data, _split_path(k), v)
    data.pop("sweep", None)
    base_name = str(data.get("name") or base_p.stem)
    _rebase_paths(data, str(base_p), gen_dir)
    sc = data.get("scene") or {}
    lm = scene_context(SceneSpec(town=sc.get("town", "tiny"), seed=int(sc.get("seed", 0)),
                                 log=Path(_abs_log(sc, gen_dir)) if sc.get("log") else None)).lane_map  # fmt: skip
    info = base_info(data, lm, str(base_p))
    tname = template or choose_template(data)
    return data, base_name, info, tname, TEMPLATES.get(tname)()


def sample_cases(
    base: str | os.PathLike[str],
    n: int,
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    planner: str = "pdm_closed",
    template: str | None = None,
    horizon_s: float | None = None,
) -> list[str]:
    """Write ``n`` uniform draws of the base's search space (the broad distribution the search
    explores, e.g. expert training data) as scenario files ``<out_dir>/<base>-<hash>.yaml`` driven
    by ``planner``; deterministic for a given ``seed``. Returns the paths."""
    gen_dir = Path(out_dir)
    _, base_name, info, tname, tpl = _prepare(Path(base), gen_dir, template)
    cfg = AttackConfig(planner=planner, template=tname, horizon_s=horizon_s, seed=seed)
    rng = np.random.default_rng(seed)
    files: list[str] = []
    for _ in range(200 * max(n, 1)):
        if len(files) >= n:
            break
        scen = _candidate_data(tpl, info, rng.random(tpl.dim), cfg, [], base_name, seed)
        if scen is None:
            continue
        try:
            _episode_of(scen, gen_dir)
        except LoopdriveError:
            continue
        path = gen_dir / f"{scen['name']}.yaml"
        atomic_write_text(path, _dump(scen, _modeline(gen_dir) + f"# Uniform draw of the {tname} search space around {base_name} (seed {seed}).\n"), parents=True)
        files.append(str(path))
    return files


def _solver(ep: Any, cfg: AttackConfig) -> str | None:
    """The first oracle of ``cfg.oracle`` that drives episode ``ep`` without failure, or None."""
    for name in [o.strip() for o in cfg.oracle.split(",") if o.strip()]:
        if name == cfg.planner and not cfg.oracle_params and not cfg.planner_params:
            continue  # deterministic: it fails exactly as the planner under test did
        o_obj, o_fail, _, _ = _outcome(_run(ep, name, cfg.oracle_params, cfg.renderer))
        if not o_fail and o_obj < 2.0:
            return name
    return None


def _abs_log(scene: Mapping[str, Any], gen_dir: Path) -> str:
    p = Path(str(scene["log"]))
    return str(p if p.is_absolute() else (gen_dir / p))


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


def _write_generated(scen: dict[str, Any], gen_dir: Path, base_name: str, cfg: AttackConfig, tname: str, obj: float, failure: str, solver: str) -> str:
    h = str(scen["name"]).rsplit("-", 1)[-1]
    out = dict(scen)
    out["description"] = (
        f"Generated by loopdrive attack ({cfg.method}, template {tname}) from {base_name}: "
        f"{cfg.planner} fails ({failure}); the oracle {solver} solves it."
    )
    out["tags"] = [
        "generated", f"base:{base_name}", f"method:{cfg.method}", f"template:{tname}", f"planner:{cfg.planner}",
        f"objective:{obj:.12g}", f"seed:{cfg.seed}", f"failure:{failure}", f"oracle:{solver}",
    ]  # fmt: skip
    keys = ["version", "name", "description", "tags"] + [k for k in out if k not in ("version", "name", "description", "tags")]
    out = {k: out[k] for k in keys}
    header = _modeline(gen_dir) + (
        f"# Generated corner case (loopdrive attack): base {base_name}, method {cfg.method}, template {tname},\n"
        f"# search seed {cfg.seed}, objective {obj:.12g}, failure {failure} of {cfg.planner}; solvable by {solver}.\n"
        f"# Re-run: loopdrive run {gen_dir}/{base_name}-{h}.yaml --out out/rerun-{h}\n"
    )
    path = gen_dir / f"{base_name}-{h}.yaml"
    atomic_write_text(path, _dump(out, header), parents=True)
    return str(path)
