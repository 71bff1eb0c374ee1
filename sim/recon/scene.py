"""The decomposed neural scene (pure torch, no nerfstudio): UniSim-style background + actors + sky.

Frames and units: everything is in the drive log's **world** frame (metres, z up). Camera poses are
camera-to-world with OpenGL axes (x right, y up, z back) as in ``transforms.json``; LiDAR rays are
origins + unit directions in the world frame; actor poses are ``(x, y, z, yaw)`` with ``z`` the box
bottom and yaw in radians, box sizes ``(length, width, height)`` in metres.

:class:`SceneModel` holds the fields and heads (its parameters are the bundle's weights) and is the
render API; the work is done in one module per part (see ``DESIGN.md``):

* :mod:`sim.recon.config` -- :class:`SceneConfig` (hyper-parameters, extent) and
  :class:`ActorState` (where the actors are for one render);
* **background** (:mod:`sim.recon.encoding`, :mod:`sim.recon.occupancy`): a multi-resolution hash
  grid (:class:`HashGrid`) + a tiny MLP giving density and a feature vector, sampled only in cells
  of an occupancy grid built from the log's static LiDAR (and training depth). With
  ``footprint_rad`` > 0 the encoding is footprint-aware: hash levels finer than a sample's
  footprint (growing with its distance) are down-weighted, for reading and for training.
* **actors** (:mod:`sim.recon.actor_boxes`): one small dense feature grid per tracked actor in its
  box frame (coordinates normalised to the box, so a field follows its box wherever it is put) and
  a per-actor latent code, decoded by one shared MLP; samples only where a ray crosses a box.
* **sky**: an MLP on the ray direction, filling the transmittance left after the last sample.
* :mod:`sim.recon.volume` -- samples of all fields merged by depth and volume-rendered into a
  feature vector, expected depth and opacity (:meth:`SceneModel.render_rays`).
* :mod:`sim.recon.sensor_render` -- cameras (a low-resolution feature image decoded to RGB by a
  small CNN) and LiDARs (a head turning a ray's feature into intensity and ray-drop probability;
  the range is the expected depth).

Moving, removing or inserting an actor is a change of the actor poses given to
:meth:`SceneModel.render_rays`; nothing is retrained. On the shared 2-core machine one torch thread
is much faster than two under load (threads wait on each other).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sim.recon import sensor_render, volume
from sim.recon.appearance import Appearance
from sim.recon.config import ActorState, SceneConfig
from sim.recon.encoding import HashGrid, dir_encoding, trunc_exp
from sim.recon.occupancy import (
    OccupancyIndex,
    background_samples,
    candidate_edges,
    occupied,
    pack_occupancy,
    unpack_occupancy,
)

if TYPE_CHECKING:
    from sim.recon.surface import SurfaceProxy

__all__ = ["ActorState", "HashGrid", "SceneConfig", "SceneModel", "pack_occupancy", "unpack_occupancy"]


class SceneModel(nn.Module):
    """The neural scene: background, actor and sky fields, image decoder and LiDAR head, and the
    render API (rays, cameras, LiDARs) over them.

    Args:
        cfg: hyper-parameters and extent.
        seed: seed of the weight initialisation.
        occupancy: (nx, ny, nz) bool occupancy of the static background (``cfg.occ_voxel_m`` cells
            from ``cfg.aabb_min``). Stored as a buffer (saved with the weights).
    """

    def __init__(self, cfg: SceneConfig, occupancy: Tensor | None = None, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # deterministic initialisation, global RNG untouched
            torch.manual_seed(seed)
            self._build(cfg, occupancy)

    def _build(self, cfg: SceneConfig, occupancy: Tensor | None) -> None:
        """Create buffers and parameters (in a fixed order: it fixes the initial weights of a seed)."""
        self.cfg = cfg
        if occupancy is None:
            occupancy = torch.zeros(cfg.occ_shape, dtype=torch.bool)
        if tuple(occupancy.shape) != tuple(cfg.occ_shape):
            raise ValueError(f"occupancy shape {tuple(occupancy.shape)} != config {cfg.occ_shape}")
        self.register_buffer("occupancy", occupancy.to(torch.bool))
        #: rendering only: stop evaluating a ray's background samples once its transmittance is
        #: below this (0 = evaluate every sample, the reference path)
        self.early_stop = 1e-4
        self._occ = OccupancyIndex()
        self.register_buffer("aabb_min", torch.tensor(cfg.aabb_min, dtype=torch.float32), persistent=False)
        self.register_buffer("edges", candidate_edges(cfg), persistent=False)
        C, H = cfg.feat_dim, cfg.hidden
        self.bg_grid = HashGrid(
            cfg.aabb_min, cfg.aabb_max, cfg.hash_levels, cfg.hash_features, cfg.hash_log2_size,
            cfg.hash_coarsest_m, cfg.hash_finest_m,
        )
        self.bg_mlp = nn.Sequential(nn.Linear(self.bg_grid.out_dim, H), nn.ReLU(), nn.Linear(H, 1 + C))
        A = max(cfg.n_actors, 1)
        gz, gy, gx = cfg.actor_grid
        g = torch.Generator().manual_seed(1)
        self.actor_grid = nn.Parameter(torch.randn(1, cfg.actor_channels, A * (gz + 2), gy, gx, generator=g) * 0.1)
        self.actor_latent = nn.Parameter(torch.randn(A, cfg.actor_latent, generator=g) * 0.1)
        self.actor_mlp = nn.Sequential(nn.Linear(cfg.actor_channels + cfg.actor_latent, H), nn.ReLU(), nn.Linear(H, 1 + C))
        self.sky_mlp = nn.Sequential(nn.Linear(3 * 7, H), nn.ReLU(), nn.Linear(H, C))
        self.lidar_head = nn.Sequential(nn.Linear(C + 1, H), nn.ReLU(), nn.Linear(H, 2))
        self.rgb_head = nn.Linear(C, 3)
        s, ch = cfg.upsample, cfg.cnn_hidden
        convs: list[nn.Module] = [nn.Conv2d(C, ch, 3, padding=1), nn.ReLU()]
        for _ in range(cfg.cnn_layers - 1):
            convs += [nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU()]
        self.decoder = nn.Sequential(*convs, nn.Conv2d(ch, 3 * s * s, 3, padding=1))
        with torch.no_grad():  # start the density near 1/m and the decoder near the aux head
            self.bg_mlp[-1].bias[0] = 0.0
            self.actor_mlp[-1].bias[0] = 0.0
            self.decoder[-1].weight.mul_(0.1)
            self.decoder[-1].bias.zero_()
        #: per-frame / per-camera colour transforms (None: no embeddings; all renders canonical)
        self.appearance = Appearance(cfg.n_frames, cfg.n_cameras) if cfg.n_frames > 0 or cfg.n_cameras > 0 else None

    # ------------------------------------------------------------------------------ parameters
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters split into ``grids`` (feature tables, high LR) and ``networks`` (MLPs/CNN)."""
        grids = [self.bg_grid.table, self.actor_grid, self.actor_latent]
        ids = {id(p) for p in grids}
        return {"grids": grids, "networks": [p for p in self.parameters() if id(p) not in ids]}


    # ------------------------------------------------------------------------------ sampling
    def occupied(self, p: Tensor) -> Tensor:
        """(..., 3) world points -> (...) bool: inside an occupied background cell."""
        return occupied(self.occupancy, self.aabb_min, self.cfg.occ_voxel_m, p)

    def background_samples(self, o: Tensor, d: Tensor, jitter: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Background sample distances (R, K) m, interval lengths (R, K) m and validity (R, K) of
        rays (R, 3) in the occupied cells (see :func:`sim.recon.occupancy.background_samples`)."""
        e = self.edges
        occ = self._occ.along(self.occupancy, self.aabb_min, self.cfg.occ_voxel_m, o, d, 0.5 * (e[1:] + e[:-1]))
        return background_samples(self.cfg, e, occ, jitter)

    # ------------------------------------------------------------------------------ fields
    def footprint(self, t: Tensor | None, n: int) -> Tensor | None:
        """Footprint std (m) of ``n`` background queries at ray distances ``t`` (N,) m (None:
        queries not along a ray, taken at ``footprint_ref_m``); None when the encoding is off."""
        cfg = self.cfg
        if cfg.footprint_rad <= 0:
            return None
        if t is None:
            return torch.full((n,), cfg.footprint_rad * cfg.footprint_ref_m)
        return cfg.footprint_rad * t.clamp(min=cfg.near_m)

    def encode(self, p: Tensor, t: Tensor | None = None) -> Tensor:
        """The background grid's encoding of (N, 3) world points at ray distances ``t`` (N,) m,
        footprint-aware when the config asks for it (see :meth:`footprint`)."""
        std = self.footprint(t, p.shape[0])
        return self.bg_grid(p) if std is None else self.bg_grid(p, std)

    def background(self, p: Tensor, t: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(N, 3) world points at ray distances ``t`` (N,) m (for the footprint-aware encoding;
        see :attr:`SceneConfig.footprint_rad`) -> density (N,) 1/m and features (N, C)."""
        h = self.bg_mlp(self.encode(p, t))
        return trunc_exp(h[:, 0]), h[:, 1:]

    def actor(self, pn: Tensor, slot: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 3) points in normalised box coordinates ([-1, 1]^3 = box * margin) and actor slots
        (N,) -> density (N,) and features (N, C)."""
        gz = self.cfg.actor_grid[0]
        A = max(self.cfg.n_actors, 1)
        D = A * (gz + 2)
        zi = slot.to(pn.dtype) * (gz + 2) + 1 + (pn[:, 2].clamp(-1, 1) + 1) * 0.5 * (gz - 1)
        grid = torch.stack([pn[:, 0].clamp(-1, 1), pn[:, 1].clamp(-1, 1), zi / (D - 1) * 2 - 1], -1)
        f = F.grid_sample(self.actor_grid, grid[None, :, None, None, :], mode="bilinear", align_corners=True)
        f = f[0, :, :, 0, 0].T  # (N, Ca)
        h = self.actor_mlp(torch.cat([f, self.actor_latent[slot]], -1))
        return trunc_exp(h[:, 0]), h[:, 1:]

    def sky(self, dirs: Tensor) -> Tensor:
        """(N, 3) unit world directions -> sky features (N, C)."""
        return self.sky_mlp(dir_encoding(dirs))

    # ------------------------------------------------------------------------------ rendering
    def render_rays(
        self,
        origins: Tensor,
        dirs: Tensor,
        actors: ActorState,
        group: Tensor | None = None,
        generator: torch.Generator | None = None,
        surface: SurfaceProxy | None = None,
        surface_samples: int = 1,
        surface_t: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Volume-render rays (world frame, unit ``dirs``).

        Args:
            origins, dirs: (R, 3).
            actors: actor boxes per ray group; ``group`` (R,) long picks each ray's group
                (default: all group 0).
            generator: when given, sample positions are jittered inside their intervals (training).
            surface: a baked background surface (:mod:`sim.recon.surface`; rendering only): the
                background becomes opaque at the ray's first surface hit, its features the
                weighted mean of ``surface_samples`` field evaluations around the hit;
                ``surface_t`` (R,) are the rays' surface hit distances when already known.

        Returns:
            ``feat`` (R, C), ``depth`` (R,) expected distance along the ray with the remaining
            transmittance at ``far_m``, ``acc`` (R,) opacity, ``acc_actor`` (R,) opacity from actor
            fields, ``t``/``w`` (R, S) sorted sample distances and weights.
        """
        return volume.render_rays(self, origins, dirs, actors, group, generator, surface, surface_samples, surface_t)

    def lidar_outputs(self, r: dict[str, Tensor]) -> dict[str, Tensor]:
        """LiDAR head on rendered rays: ``range`` (m), ``intensity`` [0, 1], ``drop_logit``."""
        h = self.lidar_head(torch.cat([r["feat"], r["acc"][:, None]], -1))
        return {"range": r["depth"], "intensity": torch.sigmoid(h[:, 0]), "drop_logit": h[:, 1]}

    def decode(self, feat_img: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, h, w) feature image -> RGB (B, 3, h*s, w*s) in [0, 1] and the low-res auxiliary
        RGB (B, 3, h, w)."""
        s = self.cfg.upsample
        aux = self.rgb_head(feat_img.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        base = F.interpolate(aux, scale_factor=s, mode="bilinear", align_corners=False)
        res = F.pixel_shuffle(self.decoder(feat_img), s)
        return torch.sigmoid(base + res), torch.sigmoid(aux)

    # ------------------------------------------------------------------------------ sensors
    @staticmethod
    def camera_rays(c2w: Tensor, K: Tensor, width: int, height: int, s: int) -> tuple[Tensor, Tensor, Tensor]:
        """World rays through the centres of ``s`` x ``s`` pixel blocks of a pinhole camera (see
        :func:`sim.recon.sensor_render.camera_rays`)."""
        return sensor_render.camera_rays(c2w, K, width, height, s)

    def render_camera(
        self, c2w: Tensor, K: Tensor, width: int, height: int, actors: ActorState, chunk: int | None = None,
        surface: SurfaceProxy | None = None, appearance: tuple[int, int] | None = None,
    ) -> dict[str, Tensor]:
        """Render a camera (see :meth:`camera_rays`): ``rgb`` (H, W, 3) float in [0, 1], ``depth``
        (H, W) z-depth along the optical axis (m, nearest-upsampled from the feature image),
        ``acc`` (H, W) opacity and ``acc_actor`` (H, W) actor opacity. With a ``surface`` proxy
        the background is its baked surface (:mod:`sim.recon.surface`). ``appearance``: (frame
        row, camera row) of the embeddings to apply (-1: that term off; None: the log's mean
        appearance, :meth:`sim.recon.appearance.Appearance.apply_mean`)."""
        r = sensor_render.render_camera(self, c2w, K, width, height, actors, chunk, surface)
        if appearance is not None and self.appearance is not None:
            r["rgb"] = self.apply_appearance(r["rgb"], K, appearance)
        elif self.appearance is not None:  # no frame named: the log's mean appearance
            r["rgb"] = self.appearance.apply_mean(r["rgb"]).clamp(0, 1)
        return r

    @torch.no_grad()
    def apply_appearance(self, rgb: Tensor, K: Tensor, appearance: tuple[int, int]) -> Tensor:
        """A full image (H, W, 3) in [0, 1] through the embeddings (frame row, camera row)."""
        if self.appearance is None:
            return rgb
        from sim.recon.appearance import radius2

        H, W = rgb.shape[:2]
        v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32) + 0.5, torch.arange(W, dtype=torch.float32) + 0.5, indexing="ij")
        fr, cam = (torch.tensor([int(x)]) for x in appearance)
        out = self.appearance(rgb[None], fr, cam, radius2(u, v, K.float())[None])[0]
        return out.clamp(0, 1)

    def render_lidar(
        self, sensor_to_world: Tensor, dirs_sensor: Tensor, actors: ActorState, chunk: int | None = None,
        surface: SurfaceProxy | None = None, origin_offset: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Render LiDAR rays from a sensor pose (4x4) along (N, 3) unit directions in the sensor
        frame: ``range`` (N,) m, ``intensity`` (N,), ``drop_prob`` (N,), ``acc_actor`` (N,). With a
        ``surface`` proxy the background is its baked surface (:mod:`sim.recon.surface`).
        ``origin_offset`` (N, 3): world offsets (m) of each ray's origin from the sensor's."""
        return sensor_render.render_lidar(self, sensor_to_world, dirs_sensor, actors, chunk, surface, origin_offset)
