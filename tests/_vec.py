"""Shared by the vector-env tests: a scenario with episode boundaries, scripted actions, and a
bit-for-bit comparison of env outputs."""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.spec import ScenarioSpec

B = 4
SPEC = ScenarioSpec(horizon_s=4.0)  # 40 steps: collisions, off-road exits and truncations within 100 steps


def scripted_actions(n: int, shape: tuple[int, ...]) -> np.ndarray:
    """World 0 drives into car_1 (collision), world 1 accelerates while steering, 2..B-1 random."""
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (n, B, *shape)).astype(np.float32)
    if shape == (2,):
        a[:, 0] = [1.0, 0.0]
        a[:, 1] = [1.0, 1.0]
    else:  # trajectory: worlds 0 and 1 straight on at 8 and 6 m/s (normalized by K * 0.5 s * 30 m/s)
        k = shape[0]
        for b, v in ((0, 8.0), (1, 6.0)):
            a[:, b, :, 0] = v * 0.5 * (np.arange(k) + 1) / (k * 0.5 * 30.0)
            a[:, b, :, 1] = 0.0
    return a


def assert_same(a: Any, b: Any, path: str = "") -> None:
    """Bit-identical: same dict keys, array dtypes, shapes and bytes; object arrays element by element."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, tuple | list):
        assert type(a) is type(b) and len(a) == len(b), f"{path}: {type(a)} != {type(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), f"{path}: {type(b)} is not an array"
        assert a.dtype == b.dtype and a.shape == b.shape, f"{path}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        if a.dtype == object:
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                assert_same(x, y, f"{path}[{i}]")
        else:
            assert a.tobytes() == b.tobytes(), f"{path}: {a} != {b}"
    else:
        assert type(a) is type(b) and a == b, f"{path}: {a!r} != {b!r}"
