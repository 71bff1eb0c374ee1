"""Training ``sensor_policy``: imitation of ``pdm_closed``'s plans on closed-loop roll-outs with
rendered LiDAR, then DAgger rounds in closed loop (the policy drives, the expert labels the states
it reaches, the policy is refitted on everything), behind the planning interface's
:class:`~sim.planning.training.ImitationTrainer` (registered as ``sensor-policy`` in the
``loopdrive.trainers`` entry-point group; ``loopdrive train sensor-policy``).

The fitting loop, the by-episode validation split and the loss plot are behaviour cloning's
(:func:`agents.bc.fit`, :func:`agents.bc.split_samples`): one implementation for both policies;
only the network, the inputs and the targets (waypoints, not controls) differ.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from agents.bc import _plot, fit, split_samples
from agents.sensor_policy import (
    SHIPPED_WEIGHTS,
    SensorDataset,
    SensorPolicyConfig,
    SensorPolicyPlanner,
    build_network,
    load_sensor_policy,
    save_sensor_policy,
)
from agents.sensor_policy_data import LabellingDriver, collect_sensor_episodes
from sim.errors import BundleError, ScenarioError
from sim.fsutil import atomic_write_text
from sim.planning.loop_training import LoopTraining
from sim.planning.training import ClosedLoopTrainer, EpisodeRunner, TrainResult, TrainSettings, collect_shards

__all__ = ["SensorPolicyTrainer", "export_sensor_episodes", "train_closed_loop", "train_sensor_policy"]

log = logging.getLogger(__name__)


def train_sensor_policy(
    dataset: SensorDataset,
    out: str | os.PathLike[str],
    cfg: SensorPolicyConfig = SensorPolicyConfig(),
    *,
    progress: Callable[[int, int, float, float], None] | None = None,
    plot: bool = True,
    init_weights: str | os.PathLike[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> TrainResult:
    """Fit the policy on ``dataset`` (MSE on scaled waypoints, per-sample weights; the epoch with
    the lowest validation loss is kept), save it (:func:`agents.sensor_policy.save_sensor_policy`,
    ``extra`` added to the JSON) and the loss curves (``<out>_loss.png``). ``init_weights``:
    fine-tune from them (their network and raster shape; :class:`BundleError` if the dataset's
    raster differs). Deterministic for a given ``cfg.seed`` on one machine."""
    import torch

    rng = np.random.default_rng(cfg.seed)
    tr_idx, va_idx = split_samples(dataset, cfg.val_fraction, rng)
    sz = dataset.bev_u8.shape
    k = dataset.action.shape[1] // 2
    cfg = replace(cfg, raster_size=int(sz[1]), channels=int(sz[3]), k=k)
    if init_weights is not None:
        net, init_cfg = load_sensor_policy(init_weights)
        if (init_cfg.raster_size, init_cfg.channels, init_cfg.k) != (cfg.raster_size, cfg.channels, cfg.k):
            raise BundleError(f"expected weights for a {cfg.raster_size}-pixel {cfg.channels}-channel raster and {cfg.k} waypoints (the dataset's), got "
                              f"{init_cfg.raster_size}, {init_cfg.channels}, {init_cfg.k}", file=init_weights, field="config")  # fmt: skip
        cfg = replace(init_cfg, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed)
    else:
        with torch.random.fork_rng(devices=[]):  # seeded initial weights, global torch RNG untouched
            torch.manual_seed(cfg.seed)
            net = build_network(cfg)
    tl, vl, init_val = fit(net, dataset, tr_idx, va_idx, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                           weight_decay=cfg.weight_decay, rng=rng, progress=progress)  # fmt: skip
    rec: dict[str, Any] = {"train_loss": tl, "val_loss": vl, "initial_val_loss": init_val, "samples": len(dataset), "shards": list(dataset.names)}
    if init_weights is not None:
        rec["init_weights"] = str(init_weights)
    rec.update(extra or {})
    w_path, c_path = save_sensor_policy(net, cfg, out, rec)
    png = _plot(tl, vl, Path(out).with_name(Path(out).stem + "_loss.png")) if plot else None
    return TrainResult(tl, vl, init_val, w_path, c_path, png)


def train_closed_loop(
    scenarios: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    episodes: str | os.PathLike[str],
    *,
    run_episode: EpisodeRunner,
    seeds: Sequence[int] | None = None,
    dagger_rounds: int = 0,
    dagger_seeds: Sequence[int] | None = None,
    sensors: str = "scenario",
    settings: TrainSettings = TrainSettings(),
    cfg: SensorPolicyConfig = SensorPolicyConfig(),
    max_steps: int | None = None,
    extra_shards: Iterable[str | os.PathLike[str]] = (),
    extra_scenarios: Sequence[str | os.PathLike[str]] = (),
    progress: Callable[[str, int, int, str], None] | None = None,
    command: str | None = None,
) -> TrainResult:
    """The whole recipe: expert roll-outs of ``scenarios`` (x ``seeds``) with ``sensors`` LiDAR
    into ``episodes``; fit; then ``dagger_rounds`` times: the policy drives ``scenarios`` x
    ``dagger_seeds`` while ``pdm_closed`` labels, refit from scratch on everything.
    ``extra_scenarios`` (e.g. the NCAP-style training scenarios of ``--ncap-log``,
    :func:`sim.ncap.training.ncap_training_scenarios`) are driven too, in the expert roll-outs and
    in every DAgger round, each once with its own file's seed (their permutations already vary).
    The JSON beside the weights records ``command`` (default: this process's command line), the
    wall time and the per-round losses. ``progress(stage, done, total, info)``; ``run_episode``
    drives each episode (:class:`sim.planning.training.EpisodeRunner`)."""
    t0 = time.time()
    cfg = replace(cfg, epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr, seed=settings.seed)
    ep_dir = Path(episodes)

    def cb(stage: str) -> Callable[[int, int], None]:
        return lambda d, n: progress(stage, d, n, "") if progress else None

    collect_sensor_episodes(scenarios, ep_dir, run_episode=run_episode, k=cfg.k, geometry=cfg.geometry, seeds=seeds, sensors=sensors, max_steps=max_steps, progress=cb("collect"))
    if extra_scenarios:
        collect_sensor_episodes(extra_scenarios, ep_dir, run_episode=run_episode, k=cfg.k, geometry=cfg.geometry, seeds=None, sensors=sensors,
                                max_steps=max_steps, progress=cb("collect (extra scenarios)"))  # fmt: skip
    rounds: list[dict[str, Any]] = []
    res: TrainResult | None = None
    for rnd in range(dagger_rounds + 1):
        if rnd > 0:
            assert res is not None
            w = res.weights
            collect_sensor_episodes(
                scenarios, ep_dir, run_episode=run_episode, k=cfg.k, geometry=cfg.geometry, seeds=dagger_seeds or seeds, sensors=sensors,
                driver=lambda w=w: SensorPolicyPlanner(weights=str(w)), tag=f"dagger{rnd}", max_steps=max_steps,
                progress=cb(f"dagger {rnd}"),
            )  # fmt: skip
            if extra_scenarios:
                collect_sensor_episodes(
                    extra_scenarios, ep_dir, run_episode=run_episode, k=cfg.k, geometry=cfg.geometry, seeds=None, sensors=sensors,
                    driver=lambda w=w: SensorPolicyPlanner(weights=str(w)), tag=f"dagger{rnd}", max_steps=max_steps,
                    progress=cb(f"dagger {rnd} (extra scenarios)"),
                )  # fmt: skip
        ds = SensorDataset.load([ep_dir, *extra_shards])
        stage = f"train (round {rnd})"
        extra = {
            "command": command or shlex.join(["loopdrive", *sys.argv[1:]]),
            "wall_s": round(time.time() - t0, 1),
            "sensors": sensors,
            "extra_scenarios": len(extra_scenarios),
            "dagger_round": rnd,
            "rounds": rounds,
        }
        res = train_sensor_policy(ds, out, cfg, extra=extra,
                                  progress=(lambda e, n, a, b, s=stage: progress(s, e, n, f"train {a:.4f}  val {b:.4f}")) if progress else None)  # fmt: skip
        rounds.append({"round": rnd, "samples": len(ds), "best_val_loss": min(res.val_loss), "wall_s": round(time.time() - t0, 1)})
    assert res is not None
    # the final record: total wall time and every round (rewritten beside the weights)
    doc = json.loads(res.config.read_text(encoding="utf-8"))
    doc["wall_s"] = round(time.time() - t0, 1)
    doc["rounds"] = rounds
    atomic_write_text(res.config, json.dumps(doc, indent=1))
    return res


@dataclass(frozen=True)
class _Job:
    episode_id: str
    item: Any


def export_sensor_episodes(
    items: Sequence[Any],
    out: str | os.PathLike[str],
    *,
    run_episode: EpisodeRunner,
    expert: str = "pdm_closed",
    expert_params: Mapping[str, Any] | None = None,
    sensors: str = "scenario",
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """The data loop's export for ``sensor_policy`` (:class:`sim.planning.loop_training.ShardExporter`):
    each item's episode is driven again, with its LiDAR rendered by ``sensors``, by the item's
    planner (a ``sensor_policy`` with its weights: what it saw when it failed) or, when the item's
    planner is ``expert``, by the expert itself; ``pdm_closed`` labels every visited state with its
    waypoints (DAgger). One sensor shard per item, ``<source>_<episode_id>.npz`` in ``out``
    (:mod:`agents.sensor_policy_data` format: the rendered ``raster`` the policy saw, ``ego``,
    ``waypoints``, ``action``; plus ``weight`` = the item's weight on every step and ``meta``, a
    JSON string: episode, scenario file, seed, source, trigger, planner, expert, sensors, steps,
    termination). No camera is kept (the policy sees LiDAR only), so there is nothing to
    anonymise. The raster geometry and waypoint count are those of the driving weights (the
    shipped ones for an expert-driven item). Existing shards are kept (a resumed export)."""
    from sim.planning import make_planner

    if expert != "pdm_closed":
        raise ScenarioError(f"sensor_policy learns pdm_closed's waypoints: expected the expert pdm_closed, got {expert!r}", field="expert")
    from agents.sensor_policy import read_config

    def drive(job: _Job) -> dict[str, Any] | None:
        it = job.item
        ep = it.episode
        policy = it.planner != expert
        weights = dict(it.planner_params).get("weights") if policy else None
        cfg = read_config(weights or SHIPPED_WEIGHTS)[0]
        lab = LabellingDriver(make_planner(expert, **dict(expert_params or {})), make_planner(it.planner, **dict(it.planner_params)) if policy else None,
                              k=cfg.k, geometry=cfg.geometry)  # fmt: skip
        res = run_episode(ep.spec, lab, ep.seed, observation=("ego", "lidar", "objects"), max_steps=None, renderer=None if sensors == "box" else sensors)
        if res.status != "ok" or not lab.rows["raster"]:
            log.warning("episode %s could not be re-driven (%s); skipped", ep.episode_id, res.error)
            return None
        arrays: dict[str, Any] = {key: np.stack(v) for key, v in lab.rows.items()}
        n = len(arrays["raster"])
        arrays["weight"] = np.full(n, float(it.weight), np.float32)
        meta = {"episode_id": ep.episode_id, "scenario": ep.scenario, "file": ep.file, "seed": int(ep.seed), "source": it.source,
                "trigger": it.trigger, "planner": it.planner, "planner_params": {k: str(v) for k, v in dict(it.planner_params).items()},
                "expert": expert, "sensors": sensors, "weight": float(it.weight), "steps": n, "termination": getattr(res, "termination", None)}  # fmt: skip
        arrays["meta"] = np.array(json.dumps(meta))
        return arrays

    written: list[Path] = []
    sources = list(dict.fromkeys(str(it.source) for it in items))
    done = 0
    for src in sources:
        jobs = [_Job(_safe(it.episode.episode_id), it) for it in items if str(it.source) == src]
        base = done

        def cb(d: int, n: int, base: int = base) -> None:
            if progress is not None:
                progress(base + d, len(items))

        written += collect_shards(jobs, out, drive, tag=_safe(src), progress=cb)
        done += len(jobs)
    Path(out).mkdir(parents=True, exist_ok=True)
    return written


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)


class SensorPolicyTrainer(ClosedLoopTrainer):
    """``sensor-policy``: the imitation trainer of ``sensor_policy`` (sensor shards, waypoint
    targets); :meth:`train_closed_loop` is the whole collect / fit / DAgger recipe."""

    name = "sensor-policy"
    planner = SensorPolicyPlanner.name
    shipped_weights = SHIPPED_WEIGHTS

    def check_weights(self, path: str | os.PathLike[str]) -> None:
        load_sensor_policy(path)

    def loop_training(self) -> LoopTraining:
        """The data loop retrains ``sensor_policy`` on shards of its own sensor rasters
        (:func:`export_sensor_episodes`): ``sensor_policy.safetensors`` per round, the shipped
        weights' settings (12 epochs, batch 64, lr 1e-3), LiDAR from each file's renderer unless
        told (``mesh``, ``neural``, ``box``), labels by ``pdm_closed``."""
        return LoopTraining(
            weights_name="sensor_policy.safetensors", settings=TrainSettings(epochs=12, batch_size=64, lr=1e-3), sensors="scenario",
            sensor_choices=("scenario", "mesh", "neural", "composite", "box"), experts=("pdm_closed",), export=export_sensor_episodes,
        )  # fmt: skip

    def load_dataset(self, paths: Iterable[str | os.PathLike[str]]) -> SensorDataset:
        return SensorDataset.load(list(paths))

    def train(
        self,
        dataset: Any,
        out: str | os.PathLike[str],
        settings: TrainSettings = TrainSettings(),
        *,
        init_weights: str | os.PathLike[str] | None = None,
        plot: bool = True,
        progress: Callable[[int, int, float, float], None] | None = None,
    ) -> TrainResult:
        cfg = SensorPolicyConfig(epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr, seed=settings.seed)
        return train_sensor_policy(dataset, out, cfg, progress=progress, plot=plot, init_weights=init_weights)

    def train_closed_loop(self, scenarios: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
                          episodes: str | os.PathLike[str], **kwargs: Any) -> TrainResult:  # fmt: skip
        """:func:`train_closed_loop` (the CLI's ``loopdrive train sensor-policy``)."""
        return train_closed_loop(scenarios, out, episodes, **kwargs)
