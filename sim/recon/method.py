"""The ``loopdrive-recon`` nerfstudio method: datamanager, model and method specifications.

``ns-train loopdrive-recon --data LOG`` (or ``loopdrive-recon-quick``) trains
:class:`sim.recon.scene.SceneModel` through nerfstudio's own trainer, pipeline
(``VanillaPipeline``) and CLI; ``ns-eval`` and ``ns-render`` work on the output. The method configs
run on the CPU (``machine.device_type cpu``, no mixed precision) and log to tensorboard (no viewer).

* :class:`LoopdriveDataManager` reads the log with the ``loopdrive-log`` dataparser (nerfstudio
  cameras for evaluation and rendering) and with :class:`sim.recon.data.ReconData` (metric world
  frame) for training batches: camera **patches** (for the CNN decoder) and **LiDAR rays**. The
  scene's structure (extent, occupancy, actors) depends on model hyper-parameters, so the model
  asks the datamanager to prepare it through the dataset metadata entry ``loopdrive_prepare``.
* :class:`LoopdriveReconModel` wraps the scene; ``get_outputs_for_camera`` converts a nerfstudio
  camera back to the metric log frame (inverse dataparser transform) and places the actors at the
  camera's time (``Cameras.times``, seconds).

Importing this module also makes nerfstudio's LPIPS metric offline-safe (see
:func:`install_offline_lpips`): nerfacto constructs LPIPS when it is built, which downloads AlexNet
weights; offline, that crashes ``ns-train nerfacto``. Our method never constructs LPIPS.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.configs.base_config import MachineConfig
from nerfstudio.data.datamanagers.base_datamanager import DataManager, VanillaDataManagerConfig
from nerfstudio.data.datasets.base_dataset import InputDataset
from nerfstudio.data.utils.dataloaders import FixedIndicesEvalDataloader
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import Scheduler, SchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification
from torch import Tensor

from sim.log import read_log
from sim.recon.data import ReconData, actor_poses_at
from sim.recon.ns_dataparser import LoopdriveLogDataParserConfig
from sim.recon.occupancy import prune_by_density
from sim.recon.pose_refine import PoseRefiner
from sim.recon.presets import adopt_changed, preset_settings, several_cameras
from sim.recon.scene import ActorState, SceneConfig, SceneModel
from sim.recon.train import BatchSpec, LossWeights, compute_losses, forward_batch, psnr, sample_batch
from sim.recon.train import occupancy_above_lidar as _occupancy_above_lidar

__all__ = [
    "LoopdriveDataManager",
    "LoopdriveDataManagerConfig",
    "LoopdriveReconModel",
    "LoopdriveReconModelConfig",
    "install_offline_lpips",
    "loopdrive_recon",
    "loopdrive_recon_quick",
    "make_trainer_config",
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------- LPIPS
class OfflineLPIPS(torch.nn.Module):
    """Drop-in for torchmetrics' LPIPS: the real metric (``real_cls``, set on the subclass that
    :func:`install_offline_lpips` installs) when its AlexNet weights are already in the torch hub
    cache, otherwise a metric that returns NaN (no download is ever attempted)."""

    real_cls: ClassVar[type[torch.nn.Module] | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self._impl: torch.nn.Module | None = None
        ckpt = Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"
        if ckpt.is_file() and self.real_cls is not None:
            self._impl = self.real_cls(*args, **kwargs)
        else:
            log.warning("LPIPS disabled (NaN): its AlexNet weights are not cached and loopdrive never downloads them")

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        if self._impl is None:
            return torch.tensor(float("nan"))
        return self._impl(a, b)


def install_offline_lpips() -> None:
    """Make torchmetrics' ``LearnedPerceptualImagePatchSimilarity`` (which nerfacto and other
    built-in nerfstudio models construct inside ``populate_modules``) an offline-safe
    :class:`OfflineLPIPS` bound to the real class, before any model is built. Idempotent; affects
    only processes that load this plugin (the ``ns-*`` commands, ``loopdrive recon``/``bench
    recon``). The real class is kept on the installed subclass, not in module state."""
    import torchmetrics.image
    import torchmetrics.image.lpip as tl

    current = tl.LearnedPerceptualImagePatchSimilarity
    if isinstance(current, type) and issubclass(current, OfflineLPIPS):
        return
    offline = type("OfflineLPIPS", (OfflineLPIPS,), {"real_cls": current, "__module__": __name__})
    tl.LearnedPerceptualImagePatchSimilarity = offline  # type: ignore[misc]
    if hasattr(torchmetrics.image, "LearnedPerceptualImagePatchSimilarity"):
        torchmetrics.image.LearnedPerceptualImagePatchSimilarity = offline  # type: ignore[attr-defined,misc]


install_offline_lpips()


# ------------------------------------------------------------------------------------- schedule
@dataclass
class LogLinearDecaySchedulerConfig(SchedulerConfig):
    """Learning rate decaying exponentially from the optimizer's to ``lr_final`` over ``max_steps``
    (pure-Python floats, so checkpoints load with ``torch.load(weights_only=True)`` -- nerfstudio's
    own exponential scheduler stores numpy floats, which ``ns-eval`` on torch >= 2.6 refuses)."""

    _target: type = field(default_factory=lambda: LogLinearDecayScheduler)
    lr_final: float = 1e-3
    max_steps: int = 1000


class LogLinearDecay:
    """The learning-rate factor of :class:`LogLinearDecayScheduler`: ``lr_init`` at step 0 decaying
    exponentially to ``lr_final`` at step ``steps`` (then constant). ``steps`` may be shortened while
    training (:meth:`LoopdriveReconModel.get_training_callbacks` fits it to a wall-clock budget); it
    is saved in the scheduler's state (a plain ``__dict__`` of floats, so checkpoints still load
    with ``weights_only=True``)."""

    def __init__(self, lr_init: float, lr_final: float, steps: int) -> None:
        self.lr_init, self.lr_final, self.steps = float(lr_init), float(lr_final), max(int(steps), 1)
        self.configured_steps = self.steps
        """The horizon it was built with; :func:`fit_decay_to_budget` never moves ``steps`` past it."""

    def __call__(self, step: int) -> float:
        t = min(max(step / self.steps, 0.0), 1.0)
        return float(math.exp(math.log(self.lr_init) * (1 - t) + math.log(self.lr_final) * t) / self.lr_init)


class LogLinearDecayScheduler(Scheduler):
    config: LogLinearDecaySchedulerConfig

    def get_scheduler(self, optimizer: torch.optim.Optimizer, lr_init: float) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=LogLinearDecay(lr_init, self.config.lr_final, self.config.max_steps))


def fit_decay_to_budget(schedulers: Any, step: int, seconds_per_step: float, remaining_s: float) -> int | None:
    """Shorten every :class:`LogLinearDecay` among ``schedulers`` (a mapping of LR schedulers) so
    its decay ends at the step training is expected to reach when the wall-clock budget runs out:
    ``step`` (the current one) plus ``remaining_s`` seconds at ``seconds_per_step``. The horizon
    never grows past the configured one and never falls below ``step + 1``. Returns the new
    horizon, or ``None`` when there is no such scheduler."""
    fns = [fn for sch in dict(schedulers).values() for fn in getattr(sch, "lr_lambdas", []) if isinstance(fn, LogLinearDecay)]
    if not fns:
        return None
    reach = step + int(max(remaining_s, 0.0) / max(seconds_per_step, 1e-9))
    out = None
    for fn in fns:
        fn.steps = max(min(fn.configured_steps, reach), step + 1)
        out = fn.steps
    return out


@dataclass
class FusedAdamOptimizerConfig(AdamOptimizerConfig):
    """nerfstudio's Adam config with torch's fused CPU kernel (one pass over each parameter: about
    3x faster than the multi-tensor ``foreach`` update on the hash table's ~8M entries, which
    made up a sixth of a full-preset iteration)."""

    fused: bool = True


# ------------------------------------------------------------------------------------- data
@dataclass
class LoopdriveDataManagerConfig(VanillaDataManagerConfig):
    """Camera patches + LiDAR rays from a drive log. (A ``VanillaDataManagerConfig`` so
    ``ns-render dataset`` accepts it; the inherited pixel-sampler fields are not used.)"""

    _target: type = field(default_factory=lambda: LoopdriveDataManager)
    dataparser: LoopdriveLogDataParserConfig = field(default_factory=LoopdriveLogDataParserConfig)
    patches: int = 4
    """Camera patches per batch."""
    patch: int = 12
    """Patch edge in low-resolution rays (``patch * upsample`` pixels)."""
    lidar_rays: int = 1024
    """LiDAR rays per batch."""
    lidar_sweeps: int = 4
    """Sweeps the LiDAR rays of a batch come from."""
    virtual_patches: int = 0
    """Camera patches per batch seen from virtual cameras: a training camera moved sideways by up to
    ``virtual_shift_m`` metres, supervised by its training image warped through the scene's depth
    (:func:`sim.recon.train.virtual_view_targets`; model weight ``w_virtual``)."""
    virtual_shift_m: float = 3.0
    """Largest sideways move (m, either side) of a virtual camera."""
    first_camera_weight: float = 1.0
    """Draw camera patches from the first camera's frames this many times as often as from another's."""
    use_camera_depth: bool = True
    """Add the training frames' depth maps to the occupancy grid (synthetic logs have them)."""
    lidar_motion_compensation: bool = True
    """Cast each LiDAR return's ray from the sensor's position at its firing time (logs with
    per-point times, ``lidar/<i>.extra.npy``; :mod:`sim.recon.lidar_motion`)."""
    seed: int = 0
    """Seed of the batch sampler."""


class LoopdriveDataManager(DataManager):
    """See :class:`LoopdriveDataManagerConfig`. Batches are dicts of tensors (metric log frame)."""

    config: LoopdriveDataManagerConfig

    def __init__(
        self,
        config: LoopdriveDataManagerConfig,
        device: torch.device | str = "cpu",
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        **kwargs: Any,
    ) -> None:
        self.config = config
        self.device = device
        self.test_mode = test_mode
        self.world_size = world_size
        self.local_rank = local_rank
        self.test_split = "val" if test_mode == "val" else "test"
        if config.data is not None:
            config.dataparser.data = Path(config.data)
        self.dataparser = config.dataparser.setup()
        self.train_dataparser_outputs = self.dataparser.get_dataparser_outputs(split="train")
        self.train_dataset = InputDataset(self.train_dataparser_outputs)
        self.eval_dataset = InputDataset(self.dataparser.get_dataparser_outputs(split="val" if test_mode == "val" else "test"))
        self.recon: ReconData | None = None
        self._gen = torch.Generator().manual_seed(config.seed)
        self._eval_gen = torch.Generator().manual_seed(config.seed + 1)
        self.train_dataset.metadata["loopdrive_prepare"] = self.prepare
        super().__init__()
        self.fixed_indices_eval_dataloader = FixedIndicesEvalDataloader(self.eval_dataset, device=device)

    def setup_train(self) -> None:  # batches come from ReconData, prepared by the model
        pass

    def setup_eval(self) -> None:
        pass

    def prepare(self, base: SceneConfig) -> ReconData:
        """Build (once) the metric training data for a scene configuration."""
        if self.recon is None or dataclasses.replace(self.recon.cfg, **_structural(base)) != self.recon.cfg:
            dl = read_log(self.config.dataparser.data)
            self.recon = ReconData.from_log(
                dl, base, eval_every=self.config.dataparser.eval_every, load_images=self.test_mode == "val",
                use_camera_depth=self.config.use_camera_depth, camera=self.config.dataparser.camera or None,
                motion_compensation=self.config.lidar_motion_compensation,
            )
        return self.recon

    @property
    def spec(self) -> BatchSpec:
        c = self.config
        return BatchSpec(c.patches, c.patch, c.lidar_rays, c.lidar_sweeps, c.virtual_patches, c.virtual_shift_m, c.first_camera_weight)

    def _need(self) -> ReconData:
        if self.recon is None:
            raise RuntimeError("the loopdrive datamanager is used by the loopdrive-recon model only")
        return self.recon

    def next_train(self, step: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        self.train_count += 1
        b = sample_batch(self._need(), self.spec, self._gen)
        return b, b

    def next_eval(self, step: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        self.eval_count += 1
        d = self._need()
        d.load_images(d.eval_frames)
        b = sample_batch(d, self.spec, self._eval_gen, frames=d.eval_frames, sweeps=d.eval_sweeps or d.train_sweeps)
        return b, b

    def next_eval_image(self, step: int) -> tuple[Cameras, dict[str, Any]]:
        i = step % len(self.eval_dataset)
        return self.eval_dataset.cameras[i : i + 1], self.eval_dataset[i]

    def get_train_rays_per_batch(self) -> int:
        c = self.config
        return (c.patches + c.virtual_patches) * c.patch * c.patch + c.lidar_rays

    def get_eval_rays_per_batch(self) -> int:
        return self.get_train_rays_per_batch()

    def get_datapath(self) -> Path:
        return self.config.dataparser.data

    def get_param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return {}


def _structural(base: SceneConfig) -> dict[str, Any]:
    """The fields of a scene config that the data preparation depends on."""
    return {"occ_voxel_m": base.occ_voxel_m, "actor_margin": base.actor_margin, "upsample": base.upsample}


# ------------------------------------------------------------------------------------- model
@dataclass
class LoopdriveReconModelConfig(ModelConfig):
    """UniSim-style decomposed scene (see :mod:`sim.recon.scene`); lengths in metres."""

    _target: type = field(default_factory=lambda: LoopdriveReconModel)
    enable_collider: bool = False
    occ_voxel_m: float = 0.3
    hash_levels: int = 8
    hash_features: int = 2
    hash_log2_size: int = 17
    hash_finest_m: float = 0.08
    hidden: int = 32
    feat_dim: int = 16
    actor_grid: tuple[int, int, int] = (8, 12, 24)
    actor_latent: int = 8
    samples_bg: int = 16
    occupied_candidates: int = 16
    samples_actor: int = 8
    fallback_from_m: float = 0.0
    """Rays through no occupied cell of the LiDAR occupancy grid get ``samples_bg`` samples spread
    from this distance (m) to ``far_m`` (0: none, they see only sky); see
    :attr:`sim.recon.config.SceneConfig.fallback_from_m`."""
    occ_above_lidar_m: float = 0.0
    """Continue the occupancy grid's tall structures (facades) upward through the cells no LiDAR ray
    crossed, up to this height (m) above their base (0: off): building tops above the LiDAR's field of
    view are then sampled and learned from the cameras (:func:`sim.recon.train.occupancy_above_lidar`)."""
    occ_prune_every: int = 0
    """Every this many steps, drop the cells added above the LiDAR whose density the field has
    learned to be below ``occ_prune_density`` (1/m) (instant-NGP's grid update; 0: never)."""
    occ_prune_density: float = 0.05
    far_m: float = 80.0
    upsample: int = 4
    """Output pixels per rendered feature pixel (per axis); the CNN decodes the rest."""
    cnn_hidden: int = 32
    cnn_layers: int = 2
    """Hidden 3x3 convolutions of the CNN decoder (each ``cnn_hidden`` channels)."""
    w_depth: float = 0.02
    w_line_of_sight: float = 0.05
    w_intensity: float = 0.05
    w_drop: float = 0.01
    w_rgb_aux: float = 0.5
    w_virtual: float = 0.5
    """Weight of the virtual-camera patches' warped-image MSE (when the datamanager draws them)."""
    footprint_scale: float = 0.0
    """Footprint-aware hash encoding (0: off): a background sample's footprint std is
    ``footprint_scale`` x half a rendered feature pixel's angle x its distance, and hash levels
    finer than it are down-weighted (:attr:`sim.recon.scene.SceneConfig.footprint_rad`). Far
    samples then do not train the fine levels, which close views (lane shifts) read."""
    num_threads: int = 1
    """torch CPU threads (0: torch's default). One by default: on the shared 2-core machine two wait for
    each other (1.57 against 0.14 s/iter at load ~10); idle, two are about 1.4x faster."""
    max_train_seconds: float = 0.0
    """Stop training after this wall-clock time (0: run all iterations). With a budget the
    learning-rate decay is fitted to the clock: every 10 steps its end moves to the step the budget
    is expected to reach (never later than the configured one), so a run the budget cuts short
    still ends annealed. Training under a budget is not bit-for-bit repeatable."""
    appearance: bool = True
    """Per-camera and per-frame appearance embeddings (exposure, white balance, vignetting;
    :mod:`sim.recon.appearance`); held-out frames use the nearest training frame of their camera."""
    w_appearance: float = 1e-3
    """Weight of the embeddings' prior (squared deviation from the identity)."""
    refine_actors: bool = True
    """Learn per-sample corrections (dx, dy, dyaw) of the actor boxes (:mod:`sim.recon.pose_refine`);
    the bundle stores the refined tracks."""
    refine_ego: bool = False
    """Learn per-sample corrections (dx, dy, dz, dyaw) of the ego pose, moving every sensor with it
    (for logs with ego-pose noise); the bundle stores the refined ego track."""
    w_actor_prior: float = 1e-3
    """Weight of the actor corrections' prior (mean over track samples of dx^2 + dy^2 + dyaw^2, m^2 and rad^2)."""
    w_ego_prior: float = 1e-3
    """Weight of the ego corrections' prior (mean over ego samples of dx^2 + dy^2 + dz^2 + dyaw^2)."""
    refine_time: bool = False
    """Learn a constant time offset per camera (camera-LiDAR synchronisation error; first-order
    ego and actor motion over it, :mod:`sim.recon.pose_refine`); bundle info records it."""
    w_time_prior: float = 1e-8
    """Weight of the time offsets' prior (mean over cameras of the squared offset in ms^2)."""
    seed: int = 0

    def scene_config(self) -> SceneConfig:
        return SceneConfig(
            occ_voxel_m=self.occ_voxel_m, hash_levels=self.hash_levels, hash_features=self.hash_features,
            hash_log2_size=self.hash_log2_size, hash_finest_m=self.hash_finest_m, hidden=self.hidden,
            feat_dim=self.feat_dim, actor_grid=tuple(self.actor_grid), actor_latent=self.actor_latent,  # type: ignore[arg-type]
            samples_bg=self.samples_bg, occupied_candidates=self.occupied_candidates,
            samples_actor=self.samples_actor, fallback_from_m=self.fallback_from_m, far_m=self.far_m, upsample=self.upsample, cnn_hidden=self.cnn_hidden, cnn_layers=self.cnn_layers,
        )


class LoopdriveReconModel(Model):
    """nerfstudio face of :class:`SceneModel` (the scene lives in ``self.scene``)."""

    config: LoopdriveReconModelConfig

    def populate_modules(self) -> None:
        if self.config.num_threads > 0:
            torch.set_num_threads(self.config.num_threads)
        meta = self.kwargs.get("metadata") or {}
        prepare: Callable[[SceneConfig], ReconData] | None = meta.get("loopdrive_prepare")
        if prepare is None:
            raise RuntimeError("loopdrive-recon needs the loopdrive datamanager (a drive log)")
        self.data = prepare(self.config.scene_config())
        self.ld_meta = dict(meta["loopdrive"])
        cfg, occ = self.data.cfg, self.data.occupancy
        self.occ_prunable: Tensor | None = None
        """Cells added above the LiDAR's view (:attr:`LoopdriveReconModelConfig.occ_above_lidar_m`), prunable while training."""
        if self.config.occ_above_lidar_m > 0:
            occ, cfg, self.occ_prunable = _occupancy_above_lidar(self.data, self.config.occ_above_lidar_m)
        if self.config.footprint_scale > 0:
            fx = float(self.data.K[self.data.train_frames[0], 0, 0])
            cfg = dataclasses.replace(cfg, footprint_rad=self.config.footprint_scale * 0.5 * cfg.upsample / fx)
        if self.config.appearance:
            cfg = dataclasses.replace(cfg, n_frames=len(self.data.log.frames), n_cameras=len(self.data.cameras))
        self.scene = SceneModel(cfg, occ)
        if self.scene.appearance is not None and self.data.frame_camera is not None:  # zero-mean gauge (sim.recon.appearance)
            self.scene.appearance.set_gauge(self.data.frame_camera, self.data.train_frames)
        self.refiner: PoseRefiner | None = None
        if self.config.refine_actors or self.config.refine_ego or self.config.refine_time:
            self.refiner = PoseRefiner(self.data.log.ego, self.data.log.tracks, actors=self.config.refine_actors, ego_poses=self.config.refine_ego,
                                       time_cameras=len(self.data.cameras) if self.config.refine_time else 0)
        self.weights = LossWeights(self.config.w_rgb_aux, self.config.w_depth, self.config.w_line_of_sight, self.config.w_intensity, self.config.w_drop,
                                  self.config.w_virtual, self.config.w_appearance, self.config.w_actor_prior, self.config.w_ego_prior,
                                  self.config.w_time_prior)
        self._gen = torch.Generator().manual_seed(self.config.seed)
        self._t_start: float | None = None
        self._step0 = 0
        self.fitted_decay_steps: int | None = None
        """The learning-rate decay's horizon after fitting it to ``max_train_seconds`` (None: not fitted)."""
        self.progress_hook: Callable[[int], None] | None = None

    def get_param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        groups = self.scene.param_groups()
        if self.refiner is not None and self.refiner.enabled:
            groups["pose"] = list(self.refiner.parameters())
        return groups

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> list[TrainingCallback]:
        trainer = training_callback_attributes.trainer

        def after(step: int) -> None:
            if self.scene.appearance is not None:  # back onto the embeddings' zero-mean gauge after the step
                self.scene.appearance.center_()
            if self._t_start is None:
                self._t_start, self._step0 = time.perf_counter(), step
            if self.progress_hook is not None:
                self.progress_hook(step)
            every = self.config.occ_prune_every
            if self.occ_prunable is not None and every > 0 and step > 0 and step % every == 0:
                scene, g = self.scene, torch.Generator().manual_seed(step)
                n = prune_by_density(lambda p: scene.background(p)[0], scene.occupancy, self.occ_prunable,  # type: ignore[arg-type]
                                     scene.aabb_min, scene.cfg.occ_voxel_m, self.config.occ_prune_density, generator=g)  # type: ignore[arg-type]
                log.info("step %d: %d cells above the LiDAR pruned (density < %g /m)", step, n, self.config.occ_prune_density)
            budget = self.config.max_train_seconds
            if budget > 0 and trainer is not None:
                elapsed = time.perf_counter() - self._t_start
                if elapsed > budget:
                    trainer.stop_training = True
                elif step > self._step0 and (step % 10 == 0 or step - self._step0 <= 10):
                    # end the learning-rate decay where the budget will stop training (a loaded
                    # machine completes fewer steps than the preset's count); every step of the
                    # first ten, so a budget that ends after a few steps still fits it
                    self.fitted_decay_steps = fit_decay_to_budget(
                        trainer.optimizers.schedulers, step, elapsed / (step - self._step0), budget - elapsed)

        return [TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], after)]

    # -------------------------------------------------------------------------------- outputs
    def get_outputs(self, ray_bundle: Any) -> dict[str, Tensor]:
        if isinstance(ray_bundle, dict):
            return forward_batch(self.scene, ray_bundle, self._gen if self.training else None, self.refiner)
        assert isinstance(ray_bundle, RayBundle)
        return self._outputs_for_rays(ray_bundle)

    def _to_metric(self, c2w_ns: Tensor) -> Tensor:
        """3x4 camera-to-world in nerfstudio's frame -> 4x4 in the log's metric frame."""
        m = torch.eye(4)
        m[:3, :4] = c2w_ns.detach().cpu().float()
        m[:3, 3] = m[:3, 3] / float(self.ld_meta["scale"]) + torch.tensor(self.ld_meta["centre"], dtype=torch.float32)
        return m

    def actors_at(self, t_us: int) -> ActorState:
        pose, valid = actor_poses_at(self.data.log, t_us)
        A = pose.shape[0]
        return ActorState(torch.arange(A), torch.from_numpy(pose).float()[None], self.data.actor_size, torch.from_numpy(valid)[None])

    def _time_of(self, camera: Cameras) -> int:
        if camera.times is not None:
            return round(float(camera.times.reshape(-1)[0]) * 1e6)
        return int(self.data.log.frames[self.data.train_frames[0]].t_us)

    def _outputs_for_rays(self, rb: RayBundle) -> dict[str, Tensor]:
        shape = rb.origins.shape[:-1]
        o = rb.origins.reshape(-1, 3).float() / float(self.ld_meta["scale"]) + torch.tensor(self.ld_meta["centre"])
        d = torch.nn.functional.normalize(rb.directions.reshape(-1, 3).float(), dim=-1)
        t_us = round(float(rb.times.reshape(-1)[0]) * 1e6) if rb.times is not None else int(self.data.log.frames[0].t_us)
        r = self.scene.render_rays(o, d, self.actors_at(t_us))
        rgb = torch.sigmoid(self.scene.rgb_head(r["feat"]))
        return {"rgb": rgb.reshape(*shape, 3), "depth": r["depth"].reshape(*shape, 1), "accumulation": r["acc"].reshape(*shape, 1)}

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box: Any = None) -> dict[str, Tensor]:
        cam = camera.flatten()[0]
        c2w = self._to_metric(cam.camera_to_worlds.reshape(3, 4))
        K = torch.tensor([[float(cam.fx), 0.0, float(cam.cx)], [0.0, float(cam.fy), float(cam.cy)], [0.0, 0.0, 1.0]])
        r = self.scene.render_camera(c2w, K, int(cam.width), int(cam.height), self.actors_at(self._time_of(camera)))
        depth = torch.nan_to_num(r["depth"], posinf=self.scene.cfg.far_m)
        return {"rgb": r["rgb"], "depth": depth[..., None], "accumulation": r["acc"][..., None]}

    # -------------------------------------------------------------------------------- losses
    def get_metrics_dict(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Any]:
        m: dict[str, Any] = {"psnr": psnr(outputs["rgb"].detach(), batch["cam_rgb"])}
        if "lidar_range" in outputs:
            hit = batch["lidar_range"] > 0
            if hit.any():
                m["lidar_median_range_err"] = float((outputs["lidar_range"][hit].detach() - batch["lidar_range"][hit]).abs().median())
        return m

    def get_loss_dict(self, outputs: dict[str, Tensor], batch: dict[str, Tensor], metrics_dict: dict[str, Any] | None = None) -> dict[str, Tensor]:
        return compute_losses(self.scene, outputs, batch, self.weights, self.refiner)

    def get_image_metrics_and_images(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> tuple[dict[str, float], dict[str, Tensor]]:
        from torchmetrics.functional import structural_similarity_index_measure

        gt = batch["image"][..., :3].float().to(outputs["rgb"].device)
        if gt.max() > 1.5:
            gt = gt / 255.0
        pred = outputs["rgb"].clamp(0, 1)
        ssim = structural_similarity_index_measure(pred.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None], data_range=1.0)
        metrics = {"psnr": psnr(pred, gt), "ssim": float(ssim)}  # type: ignore[arg-type]
        depth = outputs["depth"][..., 0]
        dn = (depth / max(float(depth.max()), 1e-6))[..., None].expand(-1, -1, 3)
        return metrics, {"img": torch.cat([gt, pred], 1), "depth": dn}


# ------------------------------------------------------------------------------------- methods
@dataclass
class LoopdriveTrainerConfig(TrainerConfig):
    """A preset's trainer config. Built (``ns-train``) for data and cameras (dataparser ``camera``) that
    select several cameras of the log, it takes the preset's multi-camera settings where it still has
    the single-camera value (a command-line flag set to another value wins; one set to the single-camera value does not)."""

    preset: str = "quick"
    """The preset it was made from (``quick`` / ``full``)."""
    multi_camera: bool = False
    """The preset's multi-camera settings are in."""

    def __post_init__(self) -> None:
        data = self.data or self.pipeline.datamanager.data
        if not self.multi_camera and data is not None and several_cameras(data, self.pipeline.datamanager.dataparser.camera):
            changed = adopt_changed(self, make_trainer_config(self.preset), make_trainer_config(self.preset, multi_camera=True))
            self.multi_camera = True
            log.info("several cameras: the %s preset's multi-camera settings (%s)", self.preset, ", ".join(c for c in changed if c != "multi_camera"))


def make_trainer_config(preset: str = "quick", *, data: Path | None = None, iterations: int | None = None,
                        multi_camera: bool = False) -> TrainerConfig:
    """The nerfstudio :class:`TrainerConfig` of a preset (``quick`` or ``full``), with its
    multi-camera settings when training on more than one camera (:func:`preset_settings`)."""
    p = preset_settings(preset, multi_camera)
    iters = int(iterations if iterations is not None else p["iterations"])
    name = "loopdrive-recon-quick" if preset == "quick" else "loopdrive-recon"

    def opt(lr: float) -> dict[str, Any]:
        return {"optimizer": FusedAdamOptimizerConfig(lr=lr, eps=1e-15),
                "scheduler": LogLinearDecaySchedulerConfig(lr_final=lr * 0.1, max_steps=max(iters, 1))}

    return LoopdriveTrainerConfig(
        preset=preset, multi_camera=multi_camera, method_name=name,
        steps_per_eval_batch=500,
        steps_per_eval_image=500,
        steps_per_eval_all_images=10**9,
        steps_per_save=max(iters, 1),
        max_num_iterations=iters,
        mixed_precision=False,
        save_only_latest_checkpoint=True,
        pipeline=VanillaPipelineConfig(
            datamanager=LoopdriveDataManagerConfig(data=data, **p["datamanager"]),
            model=LoopdriveReconModelConfig(**p["model"]),
        ),
        optimizers={"grids": opt(p["lr_grid"]), "networks": opt(p["lr_net"]), "pose": opt(p.get("lr_pose", 2e-3))},
        vis="tensorboard",
        machine=MachineConfig(device_type="cpu", num_devices=1),
    )


loopdrive_recon = MethodSpecification(
    config=make_trainer_config("full"),
    description="loopdrive's UniSim-style decomposed scene (background + actors + sky), CPU, full preset.",
)
loopdrive_recon_quick = MethodSpecification(
    config=make_trainer_config("quick"),
    description="loopdrive's UniSim-style decomposed scene, CPU, quick preset (minutes).",
)

