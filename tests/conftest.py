"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``tiny`` synthetic drive log written once per test session (per xdist worker) and shared.

    Town ``tiny``, seed 0, 20 frames at 10 Hz (2 s): front camera 320x192 (RGB + 16-bit depth),
    LiDAR 32x1024, exact tracks and lane map; ``meta.json`` has ``source: synth`` and
    ``synth: {preset: tiny, seed: 0}``. Treat it as read-only.
    """
    from sim.synth import write_synth_log

    out = tmp_path_factory.mktemp("synth") / "tiny-s0"
    return write_synth_log("tiny", 0, 20, out=out)


@pytest.fixture()
def tiny_follow_base(tmp_path: Path) -> Path:
    """``tmp_path/base/tiny_follow.yaml``: the corner-case search tests' base scenario (tiny town,
    ego at 8 m/s 18 m behind a car; see ``tests/_adversary.py``)."""
    from tests._adversary import BASE

    p = tmp_path / "base" / "tiny_follow.yaml"
    p.parent.mkdir()
    p.write_text(BASE, encoding="utf-8")
    return p
