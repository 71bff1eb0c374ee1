"""The data loop: evaluate -> mine -> generate -> export -> retrain -> re-evaluate, per round.

``run_loop(LoopConfig(...), out)`` drives a learned planner through rounds. The planner's trainer
is found through the ``loopdrive.trainers`` registry (:mod:`sim.loop_learner`; ``bc_policy``'s is
``bc``, ``sensor_policy``'s ``sensor-policy``), and its ``loop_training()``
(:class:`sim.planning.loop_training.LoopTraining`) says what differs: the weights file ``W`` below
(``bc.safetensors``, ``sensor_policy.safetensors``), the planner parameter that takes it, the
training settings, the sensors its episodes are rendered with (``sensors``: every evaluation,
search and export of a ``sensor_policy`` loop renders mesh / neural LiDAR) and how the selected
episodes become shards (``bc``: :mod:`sim.export`'s privileged ``bev`` shards; ``sensor-policy``:
the LiDAR rasters the policy saw, re-rendered, labelled by ``pdm_closed``)::

    OUT/state.json                     finished stages (the loop resumes from here)
    OUT/init/scenarios                 uniform draws of each base's search space (``init_random``;
                                       with ``init_weights`` only the validation set of ``candidates``)
    OUT/init/shards, init/W            expert (pdm_closed) collection on the nominal files and
                                       those draws + the round-0 policy (skipped with ``init_weights``,
                                       whose own training shards come in as ``init_shards``)
    OUT/heldout/generated/*.yaml       held-out corner cases: generated against the round-0 policy
                                       with other search seeds; never exported nor trained on
    OUT/round_<k>/eval_nominal         batch run of the nominal scenario library (policy k)
    OUT/round_<k>/eval_heldout         batch run of the held-out cases (policy k)
    OUT/round_<k>/mined                mined episodes of eval_nominal (sim.mining)
    OUT/round_<k>/generated            corner cases found against policy k (sim.adversary)
    OUT/round_<k>/shards               mined + generated episodes, relabelled by the expert
    OUT/round_<k>/W                    policy k+1, trained on the aggregate (DAgger): init shards
                                       (or ``init_shards``) + every round's shards; from scratch or
                                       fine-tuned from policy k (``retrain``)
    OUT/round_<k>/training_set.json    that training set: shard folders, samples per folder
    OUT/final/eval_*                   evaluation of the last policy
    OUT/report.json, OUT/report.md     failure rate and mean score per policy, nominal and held-out

A failure is an episode that ends in a collision or off-road (``sim.adversary.FAILURES``). An
errored episode (the planner or the rollout raised) is neither a failure nor a success: failure
rates are over the finished episodes, each evaluation counts its ``errored`` episodes, and an
evaluation whose every episode errored has no failure rate (``None`` in report.json, "every
episode errored" in report.md) -- never "0.0 %". Every stage is recorded in ``state.json`` when it
finishes; a killed loop re-run with the same ``OUT`` skips the finished stages (and the batch runs
/ exports resume inside a stage). The configuration (names, files, numbers) is checked before
``OUT`` is made (:func:`check_config`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import LoopdriveError, ResultsError, ScenarioError
from sim.fsutil import atomic_write_text, json_safe
from sim.loop_learner import Learner, _rates, attack_renderer, evaluate_policy, find_learner, loop_rollout
from sim.loop_report import all_errored
from sim.loop_report import rate_cell as _rate_cell
from sim.loop_report import write_report as _write_report
from sim.planning.training import TrainSettings

__all__ = ["LoopConfig", "LoopInterrupted", "all_errored", "check_config", "evaluate_policy", "loop_rollout", "run_loop"]
__all__ += ["_rate_cell", "_rates", "_write_report"]  # the report's cells, for tests

log = logging.getLogger(__name__)


class LoopInterrupted(LoopdriveError):
    """Raised by ``stop_after`` (tests of resumption)."""


@dataclass(frozen=True)
class LoopConfig:
    """Settings of the data loop.

    Attributes:
        planner: the learned planner (``bc_policy``, ``sensor_policy``: a planner whose trainer
            offers ``loop_training()``; its weights parameter is set per round).
        sensors: sensors of every episode of the planner (evaluation, search, export): ``mesh``,
            ``neural``, ``scenario`` (each file's ``scene.renderer``), ``box`` (analytic LiDAR);
            None = the trainer's default (``sensor_policy``: ``scenario``; ``bc_policy``: none).
        scenarios: nominal scenario files/folders (evaluation and mining).
        bases: base scenarios the adversary attacks (default: the nominal files whose ego starts
            on a lane, at most ``max_bases``).
        rounds, budget: rounds, and attack episodes per round (split over the bases).
        heldout_budget: attack episodes for the held-out set (default ``budget``).
        method: search method (``cem`` / ``random``).  heldout_method: the held-out set's (None =
            ``method``).  seed: training-side search seed;
        heldout_seed: held-out search seed (different seeds -> different cases).
        horizon_s: episode length for every evaluation and generated case (None = the files').
        expert, expert_params: relabelling expert; oracle, oracle_params: solvability oracle.
        init_weights: start from these weights instead of collecting + training round 0 (e.g.
            the shipped ``bc_policy`` weights, the ``bc`` trainer's ``shipped_weights``).
        init_shards: BC shard folders/files the ``init_weights`` were trained on; every retraining
            aggregates them with every round's exported shards (DAgger), so the policy does not
            forget the nominal driving while it learns the failures. Without them a retraining with
            ``init_weights`` sees the exported failures only.
        init_seeds: seeds of the expert collection for round 0.
        init_random: expert episodes per base on uniform draws of the base's search space (the
            broad distribution the adversary explores), added to the round-0 collection; with
            ``init_weights`` the draws are written but not collected (validation set only).
        retrain: ``scratch`` (a random initialisation, ``epochs`` at ``lr``), ``finetune`` (the
            previous round's policy trained further on the aggregated set, ``train(init_weights=
            ...)``, ``finetune_epochs`` at ``finetune_lr``; None = ``epochs`` / ``lr``) or ``both``
            (candidates alternate finetune, scratch, ...; needs ``candidates`` >= 2, the validation
            set decides).
        failure_weight: per-sample training weight of the exported episodes of generated failures
            (their steps are relabelled by the expert, DAgger-style); mined episodes keep the
            miner's priority, expert collections weight 1.
        epochs, batch_size, lr: training settings of a retraining (the CLI defaults them to the
            trainer's ``LoopTraining.settings``).  triggers: mining triggers.  export_kinds: stored kinds.
        workers: batch-run workers.
        candidates: policies trained per round (training seeds ``seed + j``); the one with the
            lowest failure rate (then highest score) on a **validation** set is kept: the round-0
            uniform draws (``init/scenarios``) and the generated cases of the rounds so far --
            never the nominal library nor the held-out set, which are only reported.
    """

    planner: str = "bc_policy"
    scenarios: tuple[str, ...] = ("scenarios",)
    bases: tuple[str, ...] | None = None
    max_bases: int = 3
    rounds: int = 3
    budget: int = 60
    heldout_budget: int | None = None
    method: str = "cem"
    heldout_method: str | None = None
    seed: int = 0
    heldout_seed: int = 1000
    horizon_s: float | None = 6.0
    expert: str = "pdm_closed"
    expert_params: Mapping[str, Any] = field(default_factory=dict)
    oracle: str = "idm,pdm_closed"
    oracle_params: Mapping[str, Any] = field(default_factory=dict)
    init_weights: str | None = None
    init_shards: tuple[str, ...] = ()
    init_seeds: tuple[int, ...] = (0,)
    init_random: int = 0
    retrain: str = "scratch"
    finetune_lr: float | None = None
    finetune_epochs: int | None = None
    failure_weight: float = 1.0
    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    triggers: tuple[str, ...] = ("collision", "near_miss", "hard_brake", "offroad", "rarity")
    export_kinds: tuple[str, ...] = ("bev", "state")
    workers: int = 1
    candidates: int = 1
    sensors: str | None = None


#: the config of a loop made before a field existed holds the field's default (state.json)
_DEFAULTS = json_safe(asdict(LoopConfig()))


class _State:
    def __init__(self, out: Path, cfg: LoopConfig) -> None:
        self.path = out / "state.json"
        self.data: dict[str, Any] = {"config": json_safe(asdict(cfg)), "done": {}}
        if self.path.is_file():
            try:
                prev = json.loads(self.path.read_text(encoding="utf-8"))
                prev["done"].keys()
            except (OSError, ValueError, RecursionError, KeyError, TypeError, AttributeError):
                raise ResultsError("expected the state.json of an earlier loop, got an unreadable file", file=self.path) from None
            old = prev.get("config")
            if isinstance(old, dict):  # fields added since: their defaults
                old = {**{k: _DEFAULTS[k] for k in self.data["config"] if k not in old and k in _DEFAULTS}, **old}
            if old != self.data["config"]:
                raise ScenarioError("holds a loop with another configuration; use another --out", file=out)
            self.data = prev

    def done(self, stage: str) -> bool:
        return stage in self.data["done"]

    def get(self, stage: str) -> Any:
        return self.data["done"][stage]

    def mark(self, stage: str, value: Any = True) -> None:
        self.data["done"][stage] = json_safe(value)
        atomic_write_text(self.path, json.dumps(self.data, indent=1))


def _default_bases(cfg: LoopConfig) -> list[str]:
    from sim.scenario import read_yaml, scenario_files

    out = []
    for f in scenario_files(cfg.scenarios):
        try:
            data, _ = read_yaml(f)
        except LoopdriveError:
            continue
        if isinstance(data, dict) and ((data.get("ego") or {}).get("start") or {}).get("lane") and not data.get("sweep"):
            out.append(str(f))
    return out[: cfg.max_bases]


class _LoopRun:
    """One run of the data loop in ``outp``: its stages (each done once, recorded in state.json)
    and what they share."""

    def __init__(self, cfg: LoopConfig, outp: Path, nominal: list[str], bases: list[str], progress: Callable[[str], None] | None, stop_after: str | None,
                 learner: Learner) -> None:  # fmt: skip
        self.cfg, self.outp, self.nominal, self.bases, self.learner = cfg, outp, nominal, bases, learner
        self.progress, self.stop_after = progress, stop_after
        self.st = _State(outp, cfg)
        dt = 0.1
        self.max_steps = round(cfg.horizon_s / dt) if cfg.horizon_s else None
        self.bc_cfg = TrainSettings(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed)
        self.shard_dirs: list[str] = []

    def stage(self, name: str) -> bool:
        if self.st.done(name):
            return False
        if self.progress is not None:
            self.progress(name)
        return True

    def finished(self, name: str, value: Any = True) -> None:
        self.st.mark(name, value)
        if self.stop_after == name:
            raise LoopInterrupted(f"stopped after stage {name!r}")

    def params(self, weights: str) -> dict[str, Any]:
        return self.learner.params(weights)

    def evaluate(self, files: Sequence[str], out: Path, weights: str) -> dict[str, float]:
        return evaluate_policy(files, out, self.cfg.planner, self.params(weights), self.cfg.horizon_s, self.cfg.workers, self.learner.sensors)

    def generate(self, weights: str, seed: int, budget: int, gen_dir: Path, tag: str, method: str) -> list[str]:
        from sim.adversary import AttackConfig, attack

        cfg = self.cfg
        files: list[str] = []
        per = max(1, budget // len(self.bases))
        for i, b in enumerate(self.bases):
            ac = AttackConfig(planner=cfg.planner, planner_params=self.params(weights), method=method, budget=per, seed=seed + i,
                              horizon_s=cfg.horizon_s, oracle=cfg.oracle, oracle_params=dict(cfg.oracle_params),
                              renderer=attack_renderer(self.learner.sensors))  # fmt: skip
            res = attack(b, ac, out=self.outp / tag / f"attack_{i}", generated_dir=gen_dir)
            files += res.files
        return sorted(set(files))

    def init_policy(self) -> str:
        """Round 0's policy: the given weights, or one trained on the nominal (and sampled) cases."""
        from sim.adversary import sample_cases
        from sim.export import load_training_set

        cfg, outp, bases = self.cfg, self.outp, self.bases
        if cfg.init_weights:
            w0 = str(cfg.init_weights)
            self.shard_dirs += _check_init_shards(cfg)
            if cfg.init_random and self.stage("init"):  # uniform draws: the validation set of the candidates
                for i, b in enumerate(bases):
                    sample_cases(b, cfg.init_random, outp / "init" / "scenarios", seed=cfg.seed + 10_000 + i, planner=cfg.expert, horizon_s=cfg.horizon_s)
                self.finished("init")
            return w0
        w0 = str(outp / "init" / self.learner.spec.weights_name)
        self.shard_dirs.append(str(outp / "init" / "shards"))
        if self.stage("init"):
            init_files = list(self.nominal)
            for i, b in enumerate(bases if cfg.init_random else []):
                init_files += sample_cases(b, cfg.init_random, outp / "init" / "scenarios", seed=cfg.seed + 10_000 + i, planner=cfg.expert, horizon_s=cfg.horizon_s)
            self.learner.collect_expert(init_files, outp / "init" / "shards", expert=cfg.expert, expert_params=cfg.expert_params, seeds=cfg.init_seeds,
                                        horizon_s=cfg.horizon_s, max_steps=self.max_steps)  # fmt: skip
            self.learner.impl.train(load_training_set([outp / "init" / "shards"], trainer=self.learner.trainer), w0, self.bc_cfg, plot=False)
            self.finished("init")
        return w0

    def improve(self, r: int, key: str, rd: Path, weights: str) -> str:
        """Round ``r`` after its evaluation: mine, generate, export, train; returns the new weights."""
        from sim.export import items_from_files, items_from_mined
        from sim.mining import mine, read_mined

        cfg, st = self.cfg, self.st
        if self.stage(f"{key}.mine"):
            mined = mine(rd / "eval_nominal", rd / "mined", list(cfg.triggers))
            self.finished(f"{key}.mine", len(mined))
        if self.stage(f"{key}.generate"):
            files = self.generate(weights, cfg.seed + 100 * (r + 1), cfg.budget, rd / "generated", key, cfg.method)
            self.finished(f"{key}.generate", files)
        if self.stage(f"{key}.export"):
            items = items_from_mined(read_mined(rd / "mined")) + items_from_files(st.get(f"{key}.generate"), planner=cfg.planner, planner_params=self.params(weights), weight=cfg.failure_weight)
            items = [replace(it, episode=it.episode.with_horizon(cfg.horizon_s)) if cfg.horizon_s else it for it in items]
            shards = self.learner.export(items, rd / "shards", expert=cfg.expert, expert_params=cfg.expert_params, kinds=cfg.export_kinds)
            self.finished(f"{key}.export", len(shards))
        self.shard_dirs.append(str(rd / "shards"))
        if self.stage(f"{key}.train"):
            self.finished(f"{key}.train", self.train(r, rd, weights))
        return str(st.get(f"{key}.train"))

    def train(self, r: int, rd: Path, weights: str) -> str:
        """Round ``r``'s training on every shard so far; returns the new weights' path."""
        from sim.export import load_training_set

        cfg, new_w = self.cfg, str(rd / self.learner.spec.weights_name)
        dirs = [d for d in self.shard_dirs if (Path(d).is_dir() and any(Path(d).glob("*.npz"))) or Path(d).is_file()]
        if cfg.init_weights and not dirs:
            return weights
        data = load_training_set(dirs, trainer=self.learner.trainer)
        _write_json(rd / "training_set.json", _training_set_summary(data, dirs, weights if cfg.retrain != "scratch" else None))
        if cfg.candidates <= 1:
            c_cfg, init = _candidate(cfg, self.bc_cfg, 0, weights)
            self.learner.impl.train(data, new_w, c_cfg, plot=False, init_weights=init)
            return new_w
        return _train_and_select(cfg, self.bc_cfg, data, rd, new_w, _validation_files(self.outp, self.st, r), self.learner, weights)


def run_loop(cfg: LoopConfig, out: str | os.PathLike[str], *, progress: Callable[[str], None] | None = None, stop_after: str | None = None) -> dict[str, Any]:
    """Run (or resume) the data loop in ``out``; returns the report (also written as
    ``report.json`` / ``report.md``). ``progress(stage)`` is called as each stage starts."""
    nominal, bases = check_config(cfg)
    learner = find_learner(cfg.planner, cfg.sensors)
    outp = Path(out)
    if outp.exists() and not outp.is_dir():
        raise ScenarioError("expected a folder for the data loop, got a file", file=outp)
    if outp.is_dir() and any(outp.iterdir()) and not (outp / "state.json").is_file():
        raise ScenarioError("expected an empty or new folder, or an earlier loop's (with state.json)", file=outp)
    outp.mkdir(parents=True, exist_ok=True)
    run = _LoopRun(cfg, outp, nominal, bases, progress, stop_after, learner)
    st = run.st
    # ---- round 0 policy
    w0 = run.init_policy()
    # ---- held-out set
    if run.stage("heldout"):
        files = run.generate(w0, cfg.heldout_seed, cfg.heldout_budget or cfg.budget, outp / "heldout" / "generated", "heldout", cfg.heldout_method or cfg.method)
        run.finished("heldout", files)
    heldout = list(st.get("heldout"))
    weights = w0
    evals: list[dict[str, Any]] = []
    for r in range(cfg.rounds + 1):
        rd = outp / ("final" if r == cfg.rounds else f"round_{r}")
        key = "final" if r == cfg.rounds else f"round_{r}"
        if run.stage(f"{key}.eval"):
            nom = run.evaluate(nominal, rd / "eval_nominal", weights)
            held = run.evaluate(heldout, rd / "eval_heldout", weights)
            run.finished(f"{key}.eval", {"policy": weights, "nominal": nom, "heldout": held})
        evals.append({"round": r, **st.get(f"{key}.eval")})
        if r == cfg.rounds:
            break
        weights = run.improve(r, key, rd, weights)
    train_sets = {}
    for r in range(cfg.rounds):
        ts = outp / f"round_{r}" / "training_set.json"
        if ts.is_file():
            train_sets[f"round_{r}"] = json.loads(ts.read_text(encoding="utf-8"))
    report = {"config": json_safe(asdict(cfg)), "trainer": learner.trainer, "sensors": learner.sensors, "bases": bases, "heldout_cases": len(heldout), "rounds": json_safe(evals), "training_sets": train_sets}
    _write_report(outp, report)
    return report


def check_config(cfg: LoopConfig) -> tuple[list[str], list[str]]:
    """Check everything the loop will use before any folder is made or any work starts: the
    search, retraining and planner names, the numbers, every nominal and base scenario file and the
    ``init_shards``. Returns (nominal files, attack bases); raises :class:`ScenarioError` /
    :class:`~sim.errors.RegistryError` naming the setting."""
    from sim.adversary.search import METHODS
    from sim.planning import PLANNERS
    from sim.scenario import expand_paths, scenario_files

    if cfg.retrain not in ("scratch", "finetune", "both"):
        raise ScenarioError(f"expected scratch, finetune or both, got {cfg.retrain!r}", field="retrain")
    if cfg.retrain == "both" and cfg.candidates < 2:
        raise ScenarioError("retrain 'both' trains a fine-tuned and a from-scratch candidate: expected candidates >= 2", field="candidates")
    for fld, method in (("method", cfg.method), ("heldout_method", cfg.heldout_method or cfg.method)):
        if method not in METHODS:
            raise ScenarioError(f"expected a search method in {list(METHODS)}, got {method!r}", field=fld)
    oracles = [o.strip() for o in cfg.oracle.split(",") if o.strip()]
    if not oracles:
        raise ScenarioError(f"expected comma-separated planner names, got {cfg.oracle!r}", field="oracle")
    for fld, name in (("planner", cfg.planner), ("expert", cfg.expert), *(("oracle", o) for o in oracles)):
        if name not in PLANNERS:
            raise ScenarioError(f"unknown planner {name!r}; known: {', '.join(PLANNERS.names())}", field=fld)
    spec = find_learner(cfg.planner, cfg.sensors).spec  # a planner the loop can retrain, sensors it takes
    if spec.experts is not None and cfg.expert not in spec.experts:
        raise ScenarioError(f"{cfg.planner} learns the labels of {', '.join(spec.experts)}, got the expert {cfg.expert!r}", field="expert")
    for fld, v in (("rounds", cfg.rounds), ("budget", cfg.budget), ("epochs", cfg.epochs), ("batch_size", cfg.batch_size), ("candidates", cfg.candidates)):
        if v < 1:
            raise ScenarioError(f"expected a positive integer, got {v}", field=fld)
    for fld, x in (("lr", cfg.lr), ("finetune_lr", cfg.finetune_lr), ("horizon_s", cfg.horizon_s)):
        if x is not None and not (math.isfinite(x) and x > 0):
            raise ScenarioError(f"expected a positive finite number, got {x}", field=fld)
    for d in cfg.init_shards:
        if not Path(d).exists():
            raise ScenarioError("expected a folder of training shards (*.npz) or a shard file", file=d, field="init_shards")
    expand_paths(cfg.scenarios)  # every nominal file valid (also refuses an empty list)
    nominal = [str(f) for f in scenario_files(cfg.scenarios)]
    bases = list(cfg.bases) if cfg.bases is not None else _default_bases(cfg)
    if not bases:
        raise ScenarioError("expected at least one base scenario with a lane-based ego start", field="bases")
    expand_paths(bases)
    return nominal, bases


def _validation_files(outp: Path, st: _State, r: int) -> list[str]:
    """Validation scenarios of round ``r``'s model selection: the round-0 uniform draws and the
    cases generated in rounds 0..r (training-side seeds)."""
    files = sorted(str(p) for p in (outp / "init" / "scenarios").glob("*.yaml"))
    for k in range(r + 1):
        if st.done(f"round_{k}.generate"):
            files += [str(f) for f in st.get(f"round_{k}.generate")]
    return files


def _check_init_shards(cfg: LoopConfig) -> list[str]:
    """The ``init_shards`` that exist (a missing one is a user error), with a warning when the
    ``init_weights``' own record names shards that are not among them."""
    files: set[str] = set()
    for d in cfg.init_shards:
        p = Path(d)
        if p.is_dir():
            files |= {f.name for f in p.glob("*.npz")}
        elif p.is_file():
            files.add(p.name)
        else:
            raise ScenarioError("expected a folder of training shards (*.npz) or a shard file", file=p, field="init_shards")
    cj = Path(str(cfg.init_weights)).with_suffix(".json")
    try:
        trained_on = set(json.loads(cj.read_text(encoding="utf-8")).get("shards", []))
    except (OSError, ValueError, AttributeError):
        trained_on = set()
    if trained_on and not cfg.init_shards:
        log.warning("%s was trained on %d shards but no init_shards are given: retraining sees the exported failures only", cfg.init_weights, len(trained_on))
    elif trained_on - files:
        log.warning("%d of the %d shards %s was trained on are not in init_shards: retraining forgets what they taught (pass the "
                    "folders it was trained on; for the shipped weights scripts/reproduce_loop_rows.sh regenerates them)",
                    len(trained_on - files), len(trained_on), cfg.init_weights)
    return [str(d) for d in cfg.init_shards]


def _training_set_summary(data: Any, dirs: Sequence[str], init: str | None) -> dict[str, Any]:
    """Shards, samples and summed sample weight per shard folder of a retraining set
    (``training_set.json``); the files are listed in the trainer's ``load_dataset`` order."""
    owners: list[str] = []
    for d in dirs:
        p = Path(d)
        owners += [str(p)] * (len(list(p.glob("*.npz"))) if p.is_dir() else 1)
    per: dict[str, dict[str, float]] = {str(d): {"shards": 0, "samples": 0, "weight": 0.0} for d in dirs}
    counts = np.bincount(data.episode, minlength=len(owners))
    wsum = np.bincount(data.episode, weights=data.weight, minlength=len(owners))
    for k, owner in enumerate(owners):
        per[owner]["shards"] += 1
        per[owner]["samples"] += int(counts[k])
        per[owner]["weight"] += float(wsum[k])
    return {"samples": len(data), "finetune_from": init, "folders": per}


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(json_safe(obj), indent=1), parents=True)


def _candidate(cfg: LoopConfig, bc_cfg: Any, j: int, prev: str) -> tuple[Any, str | None]:
    """Training settings and init weights of retraining candidate ``j`` (``cfg.retrain``)."""
    mode = ("finetune", "scratch")[j % 2] if cfg.retrain == "both" else cfg.retrain
    c = replace(bc_cfg, seed=cfg.seed + j)
    if mode == "scratch":
        return c, None
    return replace(c, lr=cfg.finetune_lr if cfg.finetune_lr is not None else cfg.lr, epochs=cfg.finetune_epochs or cfg.epochs), prev


def _train_and_select(cfg: LoopConfig, bc_cfg: Any, data: Any, rd: Path, dst: str, val_files: Sequence[str], learner: Learner, prev: str) -> str:
    """Train ``cfg.candidates`` policies (seeds ``cfg.seed + j``; fine-tuned from ``prev`` or from
    scratch as ``cfg.retrain`` says) into ``rd/cand_<j>``, evaluate each on ``val_files`` and copy
    the best (lowest failure rate, then highest score) to ``dst``."""
    import shutil

    best: tuple[tuple[float, float], Path] | None = None
    summary = []
    for j in range(cfg.candidates):
        w = rd / f"cand_{j}" / learner.spec.weights_name
        c_cfg, init = _candidate(cfg, bc_cfg, j, prev)
        if not w.is_file():
            learner.impl.train(data, w, c_cfg, plot=False, init_weights=init)
        val = evaluate_policy(val_files, rd / f"cand_{j}" / "eval_val", cfg.planner, learner.params(str(w)), cfg.horizon_s, cfg.workers, learner.sensors)
        k = (float(val["failure_rate"]) if math.isfinite(val["failure_rate"]) else 1.0, -float(val["score"]) if math.isfinite(val["score"]) else 0.0)
        summary.append({"candidate": j, "weights": str(w), "finetune_from": init, "epochs": c_cfg.epochs, "lr": c_cfg.lr, **val})
        if best is None or k < best[0]:
            best = (k, w)
    assert best is not None
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(best[1].with_suffix(suffix), Path(dst).with_suffix(suffix))
    atomic_write_text(rd / "selection.json", json.dumps(json_safe({"validation_files": len(val_files), "candidates": summary, "chosen": str(best[1])}), indent=1))
    log.info("kept candidate %s (validation failure rate %.3f)", best[1], best[0][0])
    return dst


