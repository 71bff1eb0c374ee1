"""``train_bc(init_weights=...)``: fine-tuning starts from the given network, keeps its shape, and
refuses weights made for another raster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agents.bc import BCConfig, BCDataset, load_policy, load_shards, train_bc
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


def test_cli_train_bc_fine_tunes_from_init_weights(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sim.cli import app

    shards = tmp_path / "shards"
    shards.mkdir()
    rng = np.random.default_rng(0)
    for e in range(6):
        bev = rng.integers(0, 256, (12, 32, 32, 4), dtype=np.uint8)
        ego = rng.normal(0.0, 1.0, (12, 3)).astype(np.float32)
        action = np.stack([bev[..., 0].mean(axis=(1, 2)) / 255.0 * 6.0 - 3.0, 0.1 * ego[:, 0]], axis=1).astype(np.float32)
        np.savez_compressed(shards / f"ep{e}.npz", bev=bev, ego=ego, action=action)
    w0 = tmp_path / "w0" / "bc.safetensors"
    first = train_bc(load_shards([shards]), w0, BCConfig(epochs=4, batch_size=16, lr=3e-3, width=8, hidden=32, seed=0), plot=False)
    out = tmp_path / "tuned.safetensors"
    res = CliRunner().invoke(app, ["train", "bc", "--episodes", str(shards), "--out", str(out), "--epochs", "1", "--lr", "1e-4",
                                   "--batch-size", "16", "--init-weights", str(w0)])
    assert res.exit_code == 0, res.output
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["init_weights"] == str(w0)
    _, cfg = load_policy(out)
    assert (cfg.width, cfg.hidden) == (8, 32)  # the init weights' shape, not the default
    assert first.weights.is_file()
    bad = CliRunner().invoke(app, ["train", "bc", "--episodes", str(shards), "--out", str(tmp_path / "x.safetensors"),
                                   "--init-weights", str(tmp_path / "missing.safetensors")])
    assert bad.exit_code == 2 and "--init-weights" in bad.output and not (tmp_path / "x.safetensors").exists()
