"""The reconstructor's presets (``quick``, ``full``): iterations, model and datamanager settings,
learning rates, and the multi-camera settings a preset applies when more than one camera of a rig
trains. Plain data, importable without nerfstudio; :func:`sim.recon.method.make_trainer_config`
turns a preset into a nerfstudio trainer config.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS", "preset_settings"]

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
        "multi_camera": {
            "iterations": 9000,
            "model": {"upsample": 2, "max_train_seconds": 840.0},
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
