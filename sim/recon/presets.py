"""The reconstructor's presets (``quick``, ``full``): iterations, model and datamanager settings,
learning rates, and the multi-camera settings a preset applies when more than one camera of a rig
trains. Plain data, importable without nerfstudio; :func:`sim.recon.method.make_trainer_config`
turns a preset into a nerfstudio trainer config.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

__all__ = ["PRESETS", "adopt_changed", "preset_settings", "several_cameras"]

#: ``quick`` decodes a 1/4-resolution feature image (fast to render: a 320x192 frame in about
#: 31 ms in surface mode) and fits the 10-minute budget; ``full`` decodes a 1/2-resolution one
#: with a larger field (sharper, about 5x slower to render) in under an hour. On the small town a
#: 1/2-resolution quick run (4000 iterations) scored 26.6 dB held-out vs 25.1 dB at 1/4 (4500),
#: and a 1/1-resolution one 24.7 dB (2500 iterations: its patches cover too little of the image).
#: Full-preset variants trained for 15 minutes each (two at a time, small town, held-out frames
#: 10..80): 32 instead of 16 feature channels with 8 camera patches and 1024 LiDAR rays a batch
#: instead of 6 and 2048 scored 26.40 vs 25.93 dB (the LiDAR error has a wide margin, the image
#: error does not); a 4-layer 64-channel decoder on top 26.31 dB (slower), a 2^20-entry hash table
#: 25.71 dB (0.7 s/iteration: cache misses). On top of that, 16 instead of 24 background samples
#: per ray (0.29 instead of 0.37 s/iteration) and a grid learning rate of 2e-2 scored 26.93 dB
#: together (26.70 each alone); 4 hash features per level 26.50 dB and a 2 cm finest level 26.71
#: dB (both slower); an auxiliary low-resolution RGB loss weight of 0.1 instead of 0.5 27.08 dB.
#: Both presets use the footprint-aware hash encoding (``footprint_scale`` 1): in the full
#: preset's 15-minute trial +0.30 dB held-out and +0.28 dB at a 2 m lane shift, in the quick
#: preset's benchmark +0.16 and +0.27 dB.
#: The quick preset carries a 9-minute training cap (``max_train_seconds``: on the idle machine it
#: completes its 4500 iterations in about 4 minutes, so the cap only acts on a busy one).
#: The full preset carries its own 55-minute training cap (``max_train_seconds``) and fits its
#: learning-rate decay to it: with 2 torch threads on the idle machine it completes about 15 600
#: iterations (0.21 s each; one thread: about 10 500 at 0.31 s), so its 16 000 are an upper bound.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "iterations": 4500,
        "model": {"footprint_scale": 1.0, "max_train_seconds": 540.0},
        "datamanager": {"patches": 8, "lidar_rays": 512},
        "lr_grid": 1e-2,
        "lr_net": 3e-3,
        # training on several cameras of a rig (the six-camera nuScenes round trip): each camera gets
        # a sixth of the patches, so the quick preset spends more of its 20-minute round trip on
        # training (9000 iterations under a 14-minute cap), decodes at 1/2 resolution and trains
        # the grids at twice the learning rate (see the comment above and docs/concepts/scene-bundle.md)
        # -- and continues the LiDAR's occupancy grid above its field of view (occ_above_lidar_m: an
        # imported log has no camera depth; +0.39 dB mean held-out at 1200 iterations, docs/concepts/realism.md)
        # -- and, iteration-matched at 4500 on the imported clean log (one thread, load 1-3.5; 22.67 dB
        # mean held-out before): the first camera's frames drawn twice as often (first_camera_weight:
        # CAM_FRONT 22.44 -> 22.77, mean 22.71), an auxiliary low-resolution RGB weight of 0.1 as in
        # the full preset (mean 22.72), and 11 000 iterations (23.63 against 23.46 dB at 9 000, round
        # trip 967 s on the quiet machine; docs/concepts/realism.md)
        "multi_camera": {
            "iterations": 11000,
            "model": {"upsample": 2, "max_train_seconds": 840.0, "occ_above_lidar_m": 24.0, "w_rgb_aux": 0.1},
            "datamanager": {"first_camera_weight": 2.0},
            "lr_grid": 2e-2,
        },
    },
    "full": {
        "iterations": 16000,
        "model": {"upsample": 2, "w_rgb_aux": 0.1, "footprint_scale": 1.0, "max_train_seconds": 3300.0, "occ_voxel_m": 0.25, "hash_levels": 12, "hash_log2_size": 18, "hash_finest_m": 0.04, "hidden": 64,
                  "feat_dim": 32, "samples_bg": 16, "occupied_candidates": 16, "samples_actor": 12, "actor_grid": (12, 16, 32),
                  "cnn_hidden": 48},
        "datamanager": {"patches": 8, "patch": 16, "lidar_rays": 1024},
        "lr_grid": 2e-2,
        "lr_net": 3e-3,
    },
}


def preset_settings(preset: str, multi_camera: bool = False) -> dict[str, Any]:
    """The settings of a preset (:data:`PRESETS`); with ``multi_camera`` (training on more than one
    camera of a rig) its ``multi_camera`` entry merged over them (``model`` and ``datamanager``
    field by field, the rest replaced)."""
    p = {k: v for k, v in PRESETS[preset].items() if k != "multi_camera"}
    extra = PRESETS[preset].get("multi_camera") if multi_camera else None
    for k, v in (extra or {}).items():
        p[k] = {**p.get(k, {}), **v} if isinstance(v, dict) else v
    return p


def adopt_changed(target: Any, ref: Any, new: Any, path: str = "") -> list[str]:
    """Move ``target`` (nested dataclasses and dicts, e.g. a nerfstudio trainer config) from the
    settings of ``ref`` to those of ``new`` (two configs of the same structure): every leaf where
    ``ref`` and ``new`` differ and ``target`` still has ``ref``'s value takes ``new``'s; a leaf
    ``target`` changed itself (a command-line flag) is kept. Returns the dotted paths changed."""
    if dataclasses.is_dataclass(target) and not isinstance(target, type):
        items = [(f.name, getattr(ref, f.name, None), getattr(new, f.name, None)) for f in dataclasses.fields(target) if not f.name.startswith("_")]
        get, put = (lambda k: getattr(target, k)), (lambda k, v: setattr(target, k, v))
    elif isinstance(target, dict) and isinstance(ref, dict) and isinstance(new, dict):
        items = [(k, ref.get(k), new.get(k)) for k in target]
        get, put = target.__getitem__, target.__setitem__
    else:
        return []
    changed: list[str] = []
    for k, r, n in items:
        cur, here = get(k), f"{path}.{k}" if path else str(k)
        if dataclasses.is_dataclass(cur) or isinstance(cur, dict):
            changed += adopt_changed(cur, r, n, here)
        elif r != n and cur == r:
            put(k, n)
            changed.append(here)
    return changed


def several_cameras(data: str | os.PathLike[str], camera: str | None) -> bool:
    """Whether ``camera`` (one name, a comma-separated list or ``all``; empty: the rig's first)
    selects more than one camera of the drive log at ``data`` (False when it cannot be read: the
    training that follows reports the error)."""
    from sim.errors import LoopdriveError
    from sim.log import read_log
    from sim.recon.split import select_cameras

    try:
        return len(select_cameras(read_log(data), camera or None)) > 1
    except (LoopdriveError, OSError, ValueError):
        return False
