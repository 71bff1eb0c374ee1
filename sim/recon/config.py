"""Configuration and actor placement of the decomposed neural scene (:mod:`sim.recon.scene`).

Frames and units: the drive log's world frame, metres, z up; actor poses ``(x, y, z, yaw)`` with
``z`` the box bottom and yaw in radians, box sizes ``(length, width, height)`` in metres.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["ActorState", "SceneConfig"]


@dataclass(frozen=True)
class SceneConfig:
    """Hyper-parameters and scene extent of a :class:`SceneModel` (all lengths in metres).

    The scene-dependent fields (``aabb_*``, ``occ_shape``, ``n_actors``) are filled from the log by
    :func:`sim.recon.data.scene_config_for`.
    """

    aabb_min: tuple[float, float, float] = (-50.0, -50.0, -5.0)
    aabb_max: tuple[float, float, float] = (50.0, 50.0, 20.0)
    occ_voxel_m: float = 0.3
    occ_shape: tuple[int, int, int] = (1, 1, 1)  # (nx, ny, nz) cells
    n_actors: int = 0
    # background hash grid
    hash_levels: int = 8
    hash_features: int = 2
    hash_log2_size: int = 17
    hash_coarsest_m: float = 3.0
    hash_finest_m: float = 0.08
    #: footprint-aware encoding (0 = off): a background sample at distance ``t`` stands for a
    #: blob of standard deviation ``footprint_rad * t`` metres, and each hash level's features are
    #: scaled by ``erf(cell / (sqrt(8) * std))`` (Zip-NeRF's level down-weighting), so levels finer
    #: than what a ray resolves are neither read nor trained by it
    footprint_rad: float = 0.0
    #: distance (m) assumed for the footprint of field queries that are not along a ray (baking)
    footprint_ref_m: float = 5.0
    hidden: int = 32
    feat_dim: int = 16
    # actors
    actor_grid: tuple[int, int, int] = (8, 12, 24)  # cells along box (z, y, x)
    actor_channels: int = 8
    actor_latent: int = 8
    actor_margin: float = 1.1
    samples_actor: int = 8
    max_actors_per_ray: int = 2
    # ray marching
    near_m: float = 0.3
    far_m: float = 80.0
    step_min_m: float = 0.1
    step_rel: float = 0.024
    step_max_m: float = 1.5
    occupied_candidates: int = 16
    samples_bg: int = 16
    #: rays through no occupied cell get ``samples_bg`` samples spread from this distance (m) to
    #: ``far_m`` (0 = none: such rays see only sky; :func:`sim.recon.occupancy.background_samples`)
    fallback_from_m: float = 0.0
    # image decoder
    upsample: int = 4
    cnn_hidden: int = 32
    cnn_layers: int = 2  # hidden 3x3 convolutions of the decoder
    #: appearance embeddings (:mod:`sim.recon.appearance`; 0 and 0 = none): rows of per-frame
    #: transforms (one per frame index of the log) and of per-camera transforms
    n_frames: int = 0
    n_cameras: int = 0

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SceneConfig:
        """Build from :meth:`to_json` output; unknown keys raise ``KeyError``, wrong types ``TypeError``."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k not in names:
                raise KeyError(k)
            default = names[k].default
            if isinstance(default, tuple):
                if not isinstance(v, list | tuple) or len(v) != len(default):
                    raise TypeError(f"{k}: expected a list of {len(default)}")
                v = tuple(type(default[0])(x) for x in v)
            elif isinstance(default, bool | int | float):
                if isinstance(v, bool) != isinstance(default, bool) or not isinstance(v, int | float):
                    raise TypeError(f"{k}: expected a number")
                v = type(default)(v)
            kw[k] = v
        return cls(**kw)


@dataclass(frozen=True)
class ActorState:
    """Where the actors are for one render (``A`` actor slots, bundle order).

    Attributes:
        slot: (A,) long, which learned actor field (latent + grid) each box uses.
        pose: (G, A, 4) float, per ray group: x, y, z (box bottom centre, world m), yaw (rad).
        size: (A, 3) float box length, width, height in metres (the field is stretched to it).
        valid: (G, A) bool, whether the actor exists in that group.
    """

    slot: Tensor
    pose: Tensor
    size: Tensor
    valid: Tensor

    @staticmethod
    def empty(groups: int = 1) -> ActorState:
        return ActorState(
            torch.zeros(0, dtype=torch.long),
            torch.zeros(groups, 0, 4),
            torch.zeros(0, 3),
            torch.zeros(groups, 0, dtype=torch.bool),
        )

