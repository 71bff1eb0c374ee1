"""``train_bc(init_weights=...)``: fine-tuning starts from the given network, keeps its shape, and
refuses weights made for another raster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agents.bc import BCConfig, BCDataset, load_policy, train_bc
from sim.errors import BundleError


def _data(n_eps: int, size: int, seed: int) -> BCDataset:
    """Synthetic shards: the target acceleration is the mean of the first channel (learnable)."""
    rng = np.random.default_rng(seed)
    t = 12
    bev = rng.integers(0, 256, (n_eps * t, size, size, 4), dtype=np.uint8)
    ego = rng.normal(0.0, 1.0, (n_eps * t, 3)).astype(np.float32)
    action = np.stack([bev[..., 0].mean(axis=(1, 2)) / 255.0 * 6.0 - 3.0, 0.1 * ego[:, 0]], axis=1).astype(np.float32)
    return BCDataset(bev, ego, action, np.repeat(np.arange(n_eps), t))


def test_finetuning_starts_from_the_given_weights(tmp_path: Path) -> None:
    data = _data(10, 32, 0)
    w0 = tmp_path / "w0" / "bc.safetensors"
    first = train_bc(data, w0, BCConfig(epochs=6, batch_size=16, lr=3e-3, width=8, hidden=32, seed=0), plot=False)
    # same validation split (same seed): fine-tuning starts where the first training ended
    tuned = train_bc(data, tmp_path / "w1" / "bc.safetensors", BCConfig(epochs=1, batch_size=16, lr=1e-4, seed=0), plot=False, init_weights=w0)
    scratch = train_bc(data, tmp_path / "w2" / "bc.safetensors", BCConfig(epochs=1, batch_size=16, lr=1e-4, width=8, hidden=32, seed=0), plot=False)
    assert tuned.initial_val_loss == pytest.approx(min(first.val_loss), rel=1e-5)
    assert tuned.initial_val_loss < 0.5 * scratch.initial_val_loss
    assert tuned.val_loss[0] < scratch.val_loss[0]
    # the network shape is the init weights' (width 8, hidden 32), not the default config's
    _, cfg = load_policy(tuned.weights)
    assert (cfg.width, cfg.hidden, cfg.epochs, cfg.lr) == (8, 32, 1, 1e-4)
    rec = json.loads(tuned.config.read_text())
    assert rec["init_weights"] == str(w0) and rec["samples"] == len(data)


def test_finetuning_refuses_weights_for_another_raster(tmp_path: Path) -> None:
    w0 = tmp_path / "bc.safetensors"
    train_bc(_data(3, 32, 0), w0, BCConfig(epochs=1, width=8, hidden=16), plot=False)
    with pytest.raises(BundleError, match="16-pixel"):
        train_bc(_data(3, 16, 1), tmp_path / "other.safetensors", BCConfig(epochs=1), plot=False, init_weights=w0)
