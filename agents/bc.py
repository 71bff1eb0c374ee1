"""Behaviour cloning: a small torch policy from the ``bev`` raster (plus the ego's speed, acceleration
and steering) to the expert's control, trained on expert (``pdm_closed``) rollouts.

**Shard format** (one ``.npz`` per episode, the planning interface's
:mod:`sim.planning.training`; written by ``sim.collect`` -- expert and DAgger collections -- and
by the data loop's exporter ``sim.export``):

* ``bev``: (T, H, W, C) uint8, the ``bev`` observation (``sim.observations.BevObservation``:
  channels drivable area, route, actors, ego; ego heading up);
* ``ego``: (T, 3) float32, speed (m/s), acceleration (m/s²), steering angle (rad);
* ``action``: (T, 2) float32, the expert control: acceleration (m/s²), steering angle (rad);
* optional ``weight`` (T,) float32 per-sample weights; anything else is ignored.

:func:`load_shards` reads shards into a :class:`BCDataset` (a torch ``Dataset``); :func:`train_bc`
trains and saves the weights as safetensors plus a JSON config next to them (``bc.safetensors`` +
``bc.json``) and the loss curves as a PNG; :func:`load_policy` rebuilds the network from those two
files without executing anything from them. ``bc_policy`` is the planner.

Normalisation (fixed, in the config): speed / 10 m/s, accel / 3 m/s², steer / 0.5 rad.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from sim.errors import BundleError, ScenarioError
from sim.fsutil import atomic_path, atomic_write_text
from sim.planning import Control, Observation, ObservationSpec, Planner, PlannerInit, PlannerParams
from sim.planning.loop_training import LoopTraining
from sim.planning.observe import ego_features
from sim.planning.training import ImitationTrainer, TrainResult, TrainSettings

__all__ = [
    "SHIPPED_WEIGHTS",
    "BCConfig",
    "BCDataset",
    "BCPolicyPlanner",
    "BCTrainer",
    "TrainResult",
    "build_network",
    "ego_features",
    "fit",
    "load_policy",
    "load_shards",
    "save_policy",
    "split_samples",
    "train_bc",
]

log = logging.getLogger(__name__)

FEAT_SCALE = np.array([10.0, 3.0, 0.5], np.float32)  # speed m/s, accel m/s², steer rad
ACTION_SCALE = np.array([3.0, 0.5], np.float32)  # accel m/s², steer rad
CONFIG_VERSION = 1
#: the ``bc_policy`` weights that ship with the package (``agents/weights/``; how they were trained
#: is recorded in the ``.json`` beside them and in the README's leaderboard section)
SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "bc_policy.safetensors"


@dataclass(frozen=True)
class BCConfig:
    """Network and training settings (saved as JSON next to the weights).

    Attributes:
        bev_size, bev_channels: the raster's size (pixels) and channels.
        width: channels of the first conv layer (doubled after it).  hidden: MLP width.
        epochs, batch_size, lr (Adam), weight_decay, val_fraction (episodes held out), seed.
    """

    bev_size: int = 64
    bev_channels: int = 4
    width: int = 16
    hidden: int = 128
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-5
    val_fraction: float = 0.2
    seed: int = 0
    version: int = CONFIG_VERSION
    feat_scale: tuple[float, ...] = field(default_factory=lambda: tuple(float(v) for v in FEAT_SCALE))
    action_scale: tuple[float, ...] = field(default_factory=lambda: tuple(float(v) for v in ACTION_SCALE))


def build_network(cfg: BCConfig) -> Any:
    """The policy network: 3 strided conv layers over the BEV, concatenated with the scaled ego
    features, then a 2-layer MLP to the scaled [accel, steer]."""
    import torch
    from torch import nn

    class BCNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = cfg.width
            self.conv = nn.Sequential(
                nn.Conv2d(cfg.bev_channels, w, 5, stride=2, padding=2), nn.ReLU(),
                nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            )  # fmt: skip
            self.head = nn.Sequential(nn.Linear(2 * w * 16 + 3, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 2))

        def forward(self, bev: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
            return self.head(torch.cat([self.conv(bev), feat], dim=1))

    return BCNet()


# ------------------------------------------------------------------------------------ data
class BCDataset:
    """Samples of BC shards in memory: ``bev`` (N, C, H, W) float32 in [0, 1], ``feat`` (N, 3) and
    ``action`` (N, 2) scaled, ``weight`` (N,), ``episode`` (N,) shard index. A torch ``Dataset``
    (``len`` / indexing give tensors)."""

    def __init__(self, bev: NDArray[np.uint8], ego: NDArray[np.float32], action: NDArray[np.float32], episode: NDArray[np.int64], weight: NDArray[np.float32] | None = None, names: Sequence[str] = ()) -> None:
        self.bev_u8 = bev
        self.feat = (ego / FEAT_SCALE).astype(np.float32)
        self.action = (action / ACTION_SCALE).astype(np.float32)
        self.episode = episode
        self.weight = np.ones(len(bev), np.float32) if weight is None else weight.astype(np.float32)
        self.names = tuple(names)

    def __len__(self) -> int:
        return len(self.bev_u8)

    def tensors(self, idx: NDArray[np.int64]) -> tuple[Any, Any, Any, Any]:
        import torch

        b = torch.from_numpy(self.bev_u8[idx]).permute(0, 3, 1, 2).float() / 255.0
        return b, torch.from_numpy(self.feat[idx]), torch.from_numpy(self.action[idx]), torch.from_numpy(self.weight[idx])

    def __getitem__(self, i: int) -> tuple[Any, Any, Any, Any]:
        b, f, a, w = self.tensors(np.array([i]))
        return b[0], f[0], a[0], w[0]

    def split(self, val_fraction: float, rng: np.random.Generator) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Train / validation sample indices, split **by episode** (no leakage between them)."""
        eps = np.unique(self.episode)
        rng.shuffle(eps)
        n_val = max(1, round(val_fraction * len(eps))) if len(eps) > 1 else 0
        val_eps = set(eps[:n_val].tolist())
        is_val = np.array([e in val_eps for e in self.episode])
        idx = np.arange(len(self))
        return idx[~is_val], idx[is_val]


def load_shards(paths: Iterable[str | os.PathLike[str]]) -> BCDataset:
    """Read BC shards (``.npz`` files, or folders of them, sorted by name) into a :class:`BCDataset`.

    Raises:
        ScenarioError: no shard found, or a shard missing a key / with inconsistent shapes.
    """
    files: list[Path] = []
    for p in paths:
        pp = Path(p)
        files += sorted(pp.glob("*.npz")) if pp.is_dir() else [pp]
    if not files:
        raise ScenarioError("expected BC episode shards (*.npz)", file=", ".join(str(p) for p in paths), field="episodes")
    bevs, egos, acts, wts, epi = [], [], [], [], []
    for k, f in enumerate(files):
        try:
            with np.load(f, allow_pickle=False) as z:
                b, e, a = z["bev"], z["ego"], z["action"]
                w = z["weight"] if "weight" in z.files else np.ones(len(b), np.float32)
        except (OSError, ValueError, KeyError) as exc:
            raise ScenarioError(f"expected a BC shard with bev, ego and action arrays ({exc})", file=f) from None
        if not (b.ndim == 4 and e.shape == (len(b), 3) and a.shape == (len(b), 2) and b.dtype == np.uint8):
            raise ScenarioError(f"inconsistent shapes bev {b.shape} {b.dtype}, ego {e.shape}, action {a.shape}", file=f)
        if len(b) == 0:
            continue
        bevs.append(b)
        egos.append(e.astype(np.float32))
        acts.append(a.astype(np.float32))
        wts.append(w.astype(np.float32))
        epi.append(np.full(len(b), k, np.int64))
    if not bevs:
        raise ScenarioError("every BC shard is empty", field="episodes")
    return BCDataset(np.concatenate(bevs), np.concatenate(egos), np.concatenate(acts), np.concatenate(epi), np.concatenate(wts), [f.name for f in files])


# ----------------------------------------------------------------------------------- training
def _loss(net: Any, ds: Any, idx: NDArray[np.int64], bs: int = 256) -> float:
    import torch

    if len(idx) == 0:
        return math.nan
    tot, n = 0.0, 0.0
    with torch.no_grad():
        for i in range(0, len(idx), bs):
            b, f, a, w = ds.tensors(idx[i : i + bs])
            err = ((net(b, f) - a) ** 2).mean(dim=1)
            tot += float((err * w).sum())
            n += float(w.sum())
    return tot / max(n, 1e-9)


def save_policy(net: Any, cfg: Any, out: str | os.PathLike[str], extra: dict[str, Any] | None = None, *, fmt: str = "loopdrive-bc", version: int = CONFIG_VERSION) -> tuple[Path, Path]:
    """Write ``out`` (safetensors weights, metadata ``format`` = ``fmt``) and ``out`` with suffix
    ``.json`` (``cfg``, a dataclass, under ``config``; plus ``extra``) atomically."""
    from safetensors.torch import save_file

    outp = Path(out)
    outp.parent.mkdir(parents=True, exist_ok=True)
    cfg_path = outp.with_suffix(".json")
    with atomic_path(outp) as tmp:
        save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(tmp), metadata={"format": fmt, "version": str(version)})
    atomic_write_text(cfg_path, json.dumps({"config": asdict(cfg), **(extra or {})}, indent=1))
    return outp, cfg_path


def load_policy(path: str | os.PathLike[str]) -> tuple[Any, BCConfig]:
    """The network and config from ``path`` (safetensors) and its ``.json`` config. Nothing in the
    files is executed (safetensors + JSON). Raises :class:`BundleError` for a missing, corrupt or
    mismatched pair."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    cj = p.with_suffix(".json")
    if not p.is_file() or not cj.is_file():
        raise BundleError("expected BC weights (.safetensors) and their .json config (train one with `loopdrive train bc`)", file=p)
    try:
        raw = json.loads(cj.read_text(encoding="utf-8"))["config"]
        if int(raw.get("version", -1)) != CONFIG_VERSION:
            raise BundleError(f"expected config version {CONFIG_VERSION}, got {raw.get('version')}", file=cj, field="config.version")
        raw["feat_scale"] = tuple(raw["feat_scale"])
        raw["action_scale"] = tuple(raw["action_scale"])
        cfg = BCConfig(**raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"expected a BC config JSON ({exc})", file=cj) from None
    net = build_network(cfg)
    try:
        state = load_file(str(p))
        net.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise BundleError(f"weights do not match the config ({str(exc).splitlines()[0]})", file=p) from None
    net.eval()
    return net, cfg


def _plot(train: list[float], val: list[float], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ep = np.arange(1, len(train) + 1)
    ax.plot(ep, train, label="train")
    ax.plot(ep, val, label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (scaled actions)")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_path(out, suffix=".png") as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
    return out


def split_samples(dataset: Any, val_fraction: float, rng: np.random.Generator) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Train / validation indices of ``dataset`` (a :class:`BCDataset`-like set) split by episode
    (:meth:`BCDataset.split`); a single episode holds out its last 20 % instead.
    :class:`ScenarioError` when nothing is left to train on."""
    tr_idx, va_idx = dataset.split(val_fraction, rng)
    if len(tr_idx) == 0:
        raise ScenarioError("no training samples after the validation split", field="episodes")
    if len(va_idx) == 0:  # a single episode: hold out its last 20 % instead
        cut = int(0.8 * len(tr_idx))
        tr_idx, va_idx = tr_idx[:cut], tr_idx[cut:]
    return tr_idx, va_idx


def fit(
    net: Any,
    dataset: Any,
    tr_idx: NDArray[np.int64],
    va_idx: NDArray[np.int64],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    rng: np.random.Generator,
    progress: Callable[[int, int, float, float], None] | None = None,
) -> tuple[list[float], list[float], float]:
    """The imitation loop shared by the learned planners: Adam on the per-sample-weighted MSE
    between ``net(*inputs)`` and the scaled targets of ``dataset.tensors(idx)`` (inputs..., target,
    weight), keeping (loading into ``net``) the weights of the epoch with the lowest validation
    loss. Returns per-epoch train and validation losses and the untrained validation loss."""
    import torch

    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    net.eval()
    init_val = _loss(net, dataset, va_idx)
    best = (math.inf, None)
    tl, vl = [], []
    for epoch in range(epochs):
        net.train()
        perm = rng.permutation(tr_idx)
        tot, n = 0.0, 0.0
        for i in range(0, len(perm), batch_size):
            b, f, a, w = dataset.tensors(perm[i : i + batch_size])
            loss_each = ((net(b, f) - a) ** 2).mean(dim=1)
            loss = (loss_each * w).sum() / w.sum().clamp_min(1e-9)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * float(w.sum())
            n += float(w.sum())
        net.eval()
        tl.append(tot / max(n, 1e-9))
        vl.append(_loss(net, dataset, va_idx))
        if vl[-1] < best[0]:
            best = (vl[-1], {k: v.clone() for k, v in net.state_dict().items()})
        if progress is not None:
            progress(epoch + 1, epochs, tl[-1], vl[-1])
    if best[1] is not None:
        net.load_state_dict(best[1])
    return tl, vl, init_val


def train_bc(
    dataset: BCDataset,
    out: str | os.PathLike[str],
    cfg: BCConfig = BCConfig(),
    *,
    progress: Callable[[int, int, float, float], None] | None = None,
    plot: bool = True,
    init_weights: str | os.PathLike[str] | None = None,
) -> TrainResult:
    """Train the policy (Adam, MSE on scaled actions, per-sample weights), keeping the weights of
    the epoch with the lowest validation loss; save them (:func:`save_policy`) and the loss curves
    (``<out>_loss.png``). ``progress(epoch, epochs, train_loss, val_loss)`` after each epoch.
    Deterministic for a given ``cfg.seed`` on one machine.

    ``init_weights``: fine-tune from these weights (safetensors + ``.json``, :func:`load_policy`)
    instead of a seeded random initialisation; the network shape (``width``, ``hidden``) is theirs,
    the training settings (epochs, lr, ...) are ``cfg``'s. Their raster size and channels must
    match the dataset's (:class:`BundleError` otherwise)."""
    import torch

    rng = np.random.default_rng(cfg.seed)
    tr_idx, va_idx = split_samples(dataset, cfg.val_fraction, rng)
    sz = dataset.bev_u8.shape
    cfg = BCConfig(**{**asdict(cfg), "bev_size": int(sz[1]), "bev_channels": int(sz[3])})
    if init_weights is not None:
        net, init_cfg = load_policy(init_weights)
        if (init_cfg.bev_size, init_cfg.bev_channels) != (cfg.bev_size, cfg.bev_channels):
            raise BundleError(f"expected weights for a {cfg.bev_size}-pixel {cfg.bev_channels}-channel raster (the dataset's), got "
                              f"{init_cfg.bev_size} pixels, {init_cfg.bev_channels} channels", file=init_weights, field="config")  # fmt: skip
        cfg = BCConfig(**{**asdict(cfg), "width": init_cfg.width, "hidden": init_cfg.hidden, "feat_scale": init_cfg.feat_scale, "action_scale": init_cfg.action_scale})
    else:
        with torch.random.fork_rng(devices=[]):  # seeded initial weights, global torch RNG untouched
            torch.manual_seed(cfg.seed)
            net = build_network(cfg)
    tl, vl, init_val = fit(net, dataset, tr_idx, va_idx, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                           weight_decay=cfg.weight_decay, rng=rng, progress=progress)  # fmt: skip
    extra: dict[str, Any] = {"train_loss": tl, "val_loss": vl, "initial_val_loss": init_val, "samples": len(dataset), "shards": list(dataset.names)}
    if init_weights is not None:
        extra["init_weights"] = str(init_weights)
    w_path, c_path = save_policy(net, cfg, out, extra)
    png = _plot(tl, vl, Path(out).with_name(Path(out).stem + "_loss.png")) if plot else None
    return TrainResult(tl, vl, init_val, w_path, c_path, png)


# ------------------------------------------------------------------------------------ planner
class BCPolicyParams(PlannerParams):
    """Parameters of ``bc_policy`` a file may give (``network`` and ``config`` are code-only)."""

    weights: str | None = Field(None, min_length=1, description="safetensors weights file (default: the shipped policy)")


class BCPolicyPlanner(Planner):
    """``bc_policy``: the cloned policy. Params: ``weights`` (path to the safetensors file, default
    :data:`SHIPPED_WEIGHTS`, the policy trained on the scenario library that ships with the
    package); or ``network`` + ``config`` objects (tests, the data loop)."""

    name = "bc_policy"
    Params = BCPolicyParams
    code_params = frozenset({"network", "config"})
    input_files = frozenset({"weights"})  # checked before a run starts

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.net = params.get("network")
        self.cfg: BCConfig | None = params.get("config")
        self.weights = params.get("weights") or SHIPPED_WEIGHTS

    def observation_spec(self) -> ObservationSpec:
        return ObservationSpec(kinds=("bev", "ego"))

    def reset(self, init: PlannerInit, *, seed: int | None = None) -> None:
        if self.net is None:
            self.net, self.cfg = load_policy(self.weights)
        if self.cfg is None:
            self.cfg = BCConfig()

    def plan(self, obs: Observation) -> Control:
        import torch

        assert self.net is not None, "reset() first"
        bev = np.asarray(obs["bev"], np.uint8)
        b = torch.from_numpy(bev[None]).permute(0, 3, 1, 2).float() / 255.0
        f = torch.from_numpy((ego_features(obs["ego"]) / FEAT_SCALE)[None].astype(np.float32))
        with torch.no_grad():
            a = self.net(b, f)[0].numpy() * ACTION_SCALE
        return Control(float(a[0]), float(a[1]))


# ------------------------------------------------------------------------------------ trainer
class BCTrainer(ImitationTrainer):
    """``bc``: the :class:`~sim.planning.training.ImitationTrainer` of ``bc_policy`` (registered
    through the ``loopdrive.trainers`` entry-point group): :func:`load_shards`, :func:`train_bc`
    and :func:`load_policy` behind the planning interface."""

    name = "bc"
    planner = BCPolicyPlanner.name
    shipped_weights = SHIPPED_WEIGHTS

    def check_weights(self, path: str | os.PathLike[str]) -> None:
        load_policy(path)

    def loop_training(self) -> LoopTraining:
        """The data loop retrains ``bc_policy`` on the runner's behaviour-cloning exports
        (privileged ``bev``, no rendered sensor): ``bc.safetensors`` per round, 15 epochs."""
        return LoopTraining(weights_name="bc.safetensors", settings=TrainSettings(epochs=15, batch_size=64, lr=1e-3))

    def load_dataset(self, paths: Iterable[str | os.PathLike[str]]) -> BCDataset:
        return load_shards(list(paths))

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
        cfg = BCConfig(epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr, seed=settings.seed)
        return train_bc(dataset, out, cfg, progress=progress, plot=plot, init_weights=init_weights)
