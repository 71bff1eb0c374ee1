"""The ``neural`` render backend: cameras and LiDAR rendered from a scene bundle.

The background (static field on its occupancy grid, sky) comes from the bundle; every actor of the
world is rendered from its reconstructed field at its **current simulated pose** and box size
(fields live in normalised box coordinates, so they follow and stretch with the box). Which field
an actor uses:

* an actor id of the bundle (a logged actor) -> its own field, volume-rendered jointly with the
  background;
* an actor given an ``asset`` (``assets={"cutin_1": "town-s1/12"}``) or, when none is given, the
  library actor of the same class nearest in size (:meth:`sim.actor_library.ActorLibrary.match`)
  -> if the asset comes from this very bundle, its field is used inside the scene like a logged
  actor; otherwise it is rendered by a small model of its source scene (fields + decoders, no
  background, no sky) and merged by depth: per pixel the nearer surface wins (blended by the
  actor's opacity), per LiDAR ray the nearer return;
* anything else is refused with a :class:`~sim.errors.BundleError` naming the actor.

Removed actors are simply absent: the background behind them is whatever the scene learned.

Outputs match the ``mesh`` backend: camera RGB (H, W, 3) uint8 and z-depth (H, W) float32 metres
(``inf`` where the scene is transparent: sky); LiDAR points (N, 3) float32 in the sensor frame,
intensity (N,), ``ray_index`` (N,) int32, ``actor_id`` (N,) int32 (the world row whose box contains
the return when the actor fields dominate the ray, else -1). A ray is returned when the LiDAR head's
drop probability is below 0.5 and its range is within (0.3 m, ``max_range_m``].

Everything pose-independent is cached per backend: the bundle (weights, occupancy grid, candidate
edges), the ray directions per sensor spec, the library source models. A render allocates only the
per-ray tensors of that render. Torch is not re-entrant across threads: serialise renders (the
render server holds a lock).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import NDArray

from sim.errors import BundleError, ScenarioError
from sim.render.base import (
    RENDERERS,
    ArrayWorld,
    CameraImage,
    LidarScan,
    RenderBackend,
    SensorFrame,
    WorldLike,
)
from sim.sensors import CameraSpec, LidarSpec, SensorRig

__all__ = ["NEURAL_MODES", "ActorPlan", "ArrayWorld", "NeuralRenderer", "merge_camera", "merge_lidar"]

log = logging.getLogger(__name__)

MIN_RANGE_M = 0.3
#: background modes of the neural renderers (see :class:`NeuralRenderer`)
NEURAL_MODES = ("auto", "surface", "volume")
#: ``auto`` mode: the surface is used when its calibration's median relative depth difference to
#: the volume renderer is at most this
AUTO_SURFACE_MAX_REL_ERR = 0.05
DROP_THRESHOLD = 0.5
ACTOR_LABEL_OPACITY = 0.5


@dataclass(frozen=True)
class ActorPlan:
    """How the actors of one world are rendered: ``rows`` world rows drawn inside the bundle's
    scene with field ``slots``; ``foreign`` maps a library source name to (rows, slots) drawn by
    that source's model and merged by depth."""

    rows: tuple[int, ...]
    slots: tuple[int, ...]
    foreign: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]]


def _ego_pose(world: WorldLike) -> NDArray[np.float64]:
    """4x4 world-from-vehicle of row 0 (the ego): planar pose, z the box bottom."""
    c, s = np.cos(float(world.yaw[0])), np.sin(float(world.yaw[0]))
    return np.array([[c, -s, 0.0, float(world.x[0])], [s, c, 0.0, float(world.y[0])], [0.0, 0.0, 1.0, float(world.z[0])], [0.0, 0.0, 0.0, 1.0]])


def _actor_state(rows: tuple[int, ...], slots: tuple[int, ...], world: WorldLike) -> Any:
    from sim.recon.scene import ActorState

    r = np.asarray(rows, dtype=np.int64)
    pose = np.stack([np.asarray(world.x)[r], np.asarray(world.y)[r], np.asarray(world.z)[r], np.asarray(world.yaw)[r]], -1) if len(r) else np.zeros((0, 4))
    size = np.stack([np.asarray(world.length)[r], np.asarray(world.width)[r], np.asarray(world.height)[r]], -1) if len(r) else np.zeros((0, 3))
    return ActorState(
        torch.as_tensor(np.asarray(slots, dtype=np.int64)),
        torch.as_tensor(pose, dtype=torch.float32)[None],
        torch.as_tensor(size, dtype=torch.float32),
        torch.ones(1, len(r), dtype=torch.bool),
    )


def merge_camera(base_rgb: NDArray[np.uint8], base_depth: NDArray[np.float32], rgb: NDArray[np.uint8], depth: NDArray[np.float32],
                 alpha: NDArray[np.float32] | None = None) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
    """Merge a layer into a camera image by depth: where the layer's z-depth is nearer, its colour
    is blended over the base with ``alpha`` (default 1) and its depth replaces the base depth."""
    near = depth < base_depth
    if not near.any():
        return base_rgb, base_depth
    out = base_rgb.copy()
    if alpha is None:
        out[near] = rgb[near]
    else:
        a = np.clip(alpha[near], 0.0, 1.0)[:, None]
        out[near] = np.clip(np.round(a * rgb[near].astype(np.float32) + (1 - a) * base_rgb[near].astype(np.float32)), 0, 255).astype(np.uint8)
    d = base_depth.copy()
    d[near] = depth[near]
    return out, d


def merge_lidar(rng: NDArray[np.float32], inten: NDArray[np.float32], who: NDArray[np.int32],
                rng2: NDArray[np.float32], inten2: NDArray[np.float32], who2: NDArray[np.int32]) -> None:
    """Merge per-ray range images in place: each ray keeps the nearer return (range ``inf`` = none)."""
    near = rng2 < rng
    rng[near] = rng2[near]
    inten[near] = inten2[near]
    who[near] = who2[near]


def boxes_containing(points_w: NDArray[np.float64], world: WorldLike, rows: NDArray[np.int64], margin: float = 1.1) -> NDArray[np.int32]:
    """(N,) world row of the box (scaled by ``margin``) containing each world point, -1 for none;
    the box whose centre is nearest wins when several contain a point."""
    out = np.full(len(points_w), -1, dtype=np.int32)
    best = np.full(len(points_w), np.inf)
    for i in rows:
        c, s = np.cos(world.yaw[i]), np.sin(world.yaw[i])
        dx, dy = points_w[:, 0] - world.x[i], points_w[:, 1] - world.y[i]
        lx, ly = c * dx + s * dy, -s * dx + c * dy
        lz = points_w[:, 2] - (world.z[i] + world.height[i] / 2)
        hl, hw, hh = world.length[i] * margin / 2, world.width[i] * margin / 2, world.height[i] * margin / 2
        inside = (np.abs(lx) <= hl) & (np.abs(ly) <= hw) & (np.abs(lz) <= hh)
        d = lx * lx + ly * ly + lz * lz
        take = inside & (d < best)
        out[take] = int(i)
        best[take] = d[take]
    return out


class NeuralRenderer(RenderBackend):
    """Sensors rendered from a scene bundle (see the module docstring).

    Args:
        scene: the world source the env passes (unused except to find a bundle: a bundle folder
            or a loaded :class:`~sim.recon.bundle.Bundle` is accepted here too).
        bundle: the scene bundle (folder or loaded ``Bundle``).
        library: an actor library (folder or :class:`~sim.actor_library.ActorLibrary`) for
            inserted actors; default ``$LOOPDRIVE_ACTORS`` or ``./actors`` when it exists; ``False``
            for none.
        assets: world actor id -> library key (``source/id``) for inserted actors.
        size_tolerance: relative box-size tolerance for library actors (refused beyond).
        threads: torch intra-op threads while rendering (default: leave torch's setting).
        mode: how the static background is drawn: ``surface`` (the bundle's baked iso-surface
            ray-cast with Embree, colours and intensities from the field at the hit; several times
            faster), ``volume`` (full volume rendering of the field; the reference the evaluator
            scores) or ``auto`` (default): ``surface`` when the surface's calibration says it sits
            where the volume renderer puts the background (median relative depth difference
            <= ``AUTO_SURFACE_MAX_REL_ERR``), else ``volume`` -- a briefly trained, diffuse field
            has no clear surface. Actors are volume-rendered from their fields in every mode.
        surface: settings of the baked surface (:class:`sim.recon.surface.SurfaceConfig`).
        parallel: render the sensors of a step in worker threads (torch and Embree release the
            GIL, so they overlap on two cores; the outputs are the same).
        workers: sensor threads of a parallel render (the LiDAR and batches of cameras are spread
            over them; default 2, the machine kind's cores).
        camera_batch: cameras rendered in one batched pass (:meth:`render_cameras`; 1 = one pass
            per camera).
    """

    name: ClassVar[str] = "neural"

    def __init__(self, scene: Any = None, *, bundle: Any = None, library: Any = None, assets: Mapping[str, str] | None = None,
                 size_tolerance: float | None = None, threads: int | None = None, mode: str = "auto",
                 surface: Any = None, parallel: bool = True, workers: int = 2, camera_batch: int = 2) -> None:
        from sim.actor_library import SIZE_TOLERANCE, ActorLibrary, open_library
        from sim.recon.bundle import Bundle, load_bundle

        if bundle is None:
            if isinstance(scene, Bundle) or (isinstance(scene, str | os.PathLike) and (Path(scene) / "bundle.json").is_file()):
                bundle = scene
            else:
                raise BundleError(f"the {self.name!r} renderer needs a scene bundle (scenario: scene.bundle)", field="scene.bundle")
        self.bundle: Bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.model = self.bundle.scene
        self.slot_of = {a.id: a.slot for a in self.bundle.actors}
        self.source_name = self.bundle.root.resolve().name
        self.library: ActorLibrary | None = None
        if library is None:
            lib = open_library()
            self.library = lib if lib.actors else None
        elif library is not False:
            self.library = library if isinstance(library, ActorLibrary) else open_library(library)
        self.assets = dict(assets or {})
        self.size_tolerance = SIZE_TOLERANCE if size_tolerance is None else float(size_tolerance)
        self.threads = threads
        if mode not in NEURAL_MODES:
            raise ScenarioError(f"expected one of {list(NEURAL_MODES)}, got {mode!r}", field="scene.neural_mode")
        self._surface_cfg = surface
        if mode == "auto":
            proxy = self.bundle.surface(surface)
            err = proxy.calib_rel_err
            mode = "volume" if np.isfinite(err) and err > AUTO_SURFACE_MAX_REL_ERR else "surface"
            log.info("neural background mode %s (surface calibration: median relative depth difference %.3f)", mode, err)
        self.mode = mode
        if mode == "surface":
            self.bundle.surface(surface)  # bake (or read) it now, not inside a render
        self.parallel = bool(parallel)
        self.workers = max(int(workers), 1)
        self.camera_batch = max(int(camera_batch), 1)
        self._pool: Any = None
        self._dirs: dict[tuple[Any, ...], NDArray[np.float32]] = {}
        self._resolved: dict[tuple[Any, ...], tuple[str, int]] = {}

    # ------------------------------------------------------------------------------ construction
    @classmethod
    def from_scenario(cls, spec: Any, scene: Any = None, **options: Any) -> NeuralRenderer:
        """The backend of a :class:`~sim.spec.ScenarioSpec`: its ``scene.bundle``, and the
        ``asset`` of each insert op that has one (an additive ``InsertOp`` field)."""
        from sim.spec import InsertOp

        b = spec.scene.bundle
        if b is None and "bundle" not in options:
            raise ScenarioError(f"expected scene.bundle (a scene-bundle folder) for renderer {cls.name!r}", field="scene.bundle")
        assets = dict(options.pop("assets", {}) or {})
        for op in spec.actors:
            a = getattr(op, "asset", None)
            if isinstance(op, InsertOp) and a:
                assets.setdefault(op.id, str(a))
        options.setdefault("bundle", b)
        options.setdefault("mode", getattr(spec.scene, "neural_mode", "auto"))
        if getattr(spec.scene, "actor_library", None) is not None:  # the library the scenario's assets were checked against
            options.setdefault("library", spec.scene.actor_library)
        return cls(scene, assets=assets, **options)

    def _surface(self, model: Any) -> Any:
        """The baked background surface for ``model`` in ``surface`` mode (None: volume
        rendering, or a library source model, which has no background)."""
        if self.mode != "surface" or model is not self.model:
            return None
        return self.bundle.surface(self._surface_cfg)

    # ------------------------------------------------------------------------------ actors
    def _resolve(self, actor_id: str, cls_name: str, size: tuple[float, float, float]) -> tuple[str, int]:
        """(source, slot) of an actor that is not one of the bundle's (``source`` "" = this bundle)."""
        from sim.actor_library import check_size

        key = (actor_id, cls_name, *(round(s, 3) for s in size))
        hit = self._resolved.get(key)
        if hit is not None:
            return hit
        where = f"actors[{actor_id}]"
        if self.library is None:
            raise BundleError(f"actor {actor_id!r} ({cls_name}) has no reconstruction in bundle {self.bundle.root} and no actor library "
                              "is configured (loopdrive actors add BUNDLE, or use renderer composite)", field=where)
        asset = self.assets.get(actor_id)
        la = self.library.get(asset) if asset else self.library.match(cls_name, size, self.size_tolerance)
        check_size(la, size, self.size_tolerance, where=where)
        src = self.library._sources.get(la.source, {})
        same = Path(str(src.get("bundle", ""))).resolve() == self.bundle.root.resolve() and la.id in self.slot_of
        out = ("", self.slot_of[la.id]) if same else (la.source, la.slot)
        log.info("actor %s rendered with library actor %s", actor_id, la.key)
        self._resolved[key] = out
        return out

    def plan(self, world: WorldLike) -> ActorPlan:
        """Which field renders each valid actor row of ``world``."""
        rows, slots = [], []
        foreign: dict[str, tuple[list[int], list[int]]] = {}
        for i in range(1, len(world.ids)):
            if not bool(world.valid[i]):
                continue
            aid = world.ids[i]
            if aid in self.slot_of and aid not in self.assets:
                rows.append(i)
                slots.append(self.slot_of[aid])
                continue
            src, slot = self._resolve(aid, world.cls[i], (float(world.length[i]), float(world.width[i]), float(world.height[i])))
            if src == "":
                rows.append(i)
                slots.append(slot)
            else:
                r, s = foreign.setdefault(src, ([], []))
                r.append(i)
                s.append(slot)
        return ActorPlan(tuple(rows), tuple(slots), {k: (tuple(v[0]), tuple(v[1])) for k, v in foreign.items()})

    # ------------------------------------------------------------------------------ camera
    @staticmethod
    @torch.no_grad()
    def _layer_camera(model: Any, actors: Any, c2w: NDArray[np.float64], cam: CameraSpec) -> tuple[NDArray[np.uint8], NDArray[np.float32], NDArray[np.float32]]:
        """A library source's actors alone: RGB, z-depth of the opaque part (``sum(w t) / acc``,
        without the far-plane term of the scene's expected depth; inf where ``acc < 0.5``) and opacity."""
        s = model.cfg.upsample
        h, w = -(-cam.height // s), -(-cam.width // s)
        o, d, cos = model.camera_rays(torch.as_tensor(c2w, dtype=torch.float32), torch.as_tensor(cam.K, dtype=torch.float32), cam.width, cam.height, s)
        r = model.render_rays(o, d, actors)
        rgb, _ = model.decode(r["feat"].reshape(h, w, -1).permute(2, 0, 1)[None])
        acc = r["acc"]
        depth = (r["w"] * r["t"]).sum(1) / acc.clamp(min=1e-6) * cos
        depth = torch.where(acc > 0.5, depth, torch.full_like(depth, float("inf")))

        def up(x: torch.Tensor) -> NDArray[np.float32]:
            return x.reshape(h, w).repeat_interleave(s, 0).repeat_interleave(s, 1)[: cam.height, : cam.width].numpy().astype(np.float32)

        rgb8 = (rgb[0].permute(1, 2, 0)[: cam.height, : cam.width].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
        return rgb8, up(depth), up(acc)

    def _camera(self, model: Any, world: WorldLike, rows: tuple[int, ...], slots: tuple[int, ...], c2w: NDArray[np.float64],
                cam: CameraSpec, layer: bool = False) -> tuple[NDArray[np.uint8], NDArray[np.float32], NDArray[np.float32]]:
        if layer:
            return self._layer_camera(model, _actor_state(rows, slots, world), c2w, cam)
        r = model.render_camera(torch.as_tensor(c2w, dtype=torch.float32), torch.as_tensor(cam.K, dtype=torch.float32),
                                cam.width, cam.height, _actor_state(rows, slots, world), surface=self._surface(model))
        rgb = (r["rgb"].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
        return rgb, r["depth"].numpy().astype(np.float32), r["acc"].numpy().astype(np.float32)

    def render_camera(self, world: WorldLike, cam: CameraSpec, plan: ActorPlan | None = None, c2w: NDArray[np.float64] | None = None) -> CameraImage:
        """RGB (uint8) and z-depth (m, ``inf`` = sky) of camera ``cam`` on the ego of ``world``, or
        at ``c2w`` (4x4 camera-to-world, OpenGL axes) when given."""
        plan = plan or self.plan(world)
        c2w = _ego_pose(world) @ cam.vehicle_from_camera if c2w is None else np.asarray(c2w, dtype=np.float64)
        rgb, depth, _ = self._camera(self.model, world, plan.rows, plan.slots, c2w, cam)
        for src, (rows, slots) in plan.foreign.items():
            assert self.library is not None
            lrgb, ldepth, lacc = self._camera(self.library.source_model(src), world, rows, slots, c2w, cam, layer=True)
            rgb, depth = merge_camera(rgb, depth, lrgb, ldepth, lacc)
        return CameraImage(rgb, depth, c2w, cam.K)

    def render_cameras(self, world: WorldLike, cams: tuple[CameraSpec, ...], plan: ActorPlan | None = None) -> dict[str, CameraImage]:
        """Every camera of ``cams`` on the ego of ``world`` (name -> image): the bundle's own scene
        renders all of them in one batched pass (:func:`sim.render.multicam.render_cameras`; the
        images of :meth:`render_camera` up to float summation order); library actors are merged
        per camera as in :meth:`render_camera`."""
        if len(cams) < 2:
            return {c.name: self.render_camera(world, c, plan) for c in cams}
        from sim.render.multicam import CameraView, render_cameras

        plan = plan or self.plan(world)
        ego = _ego_pose(world)
        views = [CameraView(ego @ c.vehicle_from_camera, c.K, c.width, c.height) for c in cams]
        outs = render_cameras(self.model, views, _actor_state(plan.rows, plan.slots, world), surface=self._surface(self.model))
        images = {}
        for c, v, r in zip(cams, views, outs, strict=True):
            rgb = (r["rgb"].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
            depth = r["depth"].numpy().astype(np.float32)
            for src, (rows, slots) in plan.foreign.items():
                assert self.library is not None
                lrgb, ldepth, lacc = self._camera(self.library.source_model(src), world, rows, slots, v.c2w, c, layer=True)
                rgb, depth = merge_camera(rgb, depth, lrgb, ldepth, lacc)
            images[c.name] = CameraImage(rgb, depth, v.c2w, c.K)
        return images

    # ------------------------------------------------------------------------------ LiDAR
    def _lidar_dirs(self, spec: LidarSpec) -> NDArray[np.float32]:
        key = (spec.beams, spec.azimuth_steps, tuple(spec.vertical_fov_deg))
        d = self._dirs.get(key)
        if d is None:
            d = spec.ray_directions().reshape(-1, 3).astype(np.float32)
            self._dirs[key] = d
        return d

    def _lidar(self, model: Any, world: WorldLike, rows: tuple[int, ...], slots: tuple[int, ...], s2w: NDArray[np.float64],
               dirs: NDArray[np.float32], max_range: float, layer: bool = False) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int32]]:
        """Per-ray range (inf = no return), intensity and actor row. A ``layer`` (library source, actors
        only) reports the range of its opaque part (without the far-plane term)."""
        surface = self._surface(model)
        r = model.render_lidar(torch.as_tensor(s2w, dtype=torch.float32), torch.from_numpy(dirs), _actor_state(rows, slots, world),
                               surface=surface)
        rng = r["range"].numpy().astype(np.float32)
        if layer:
            a = r["acc_actor"].numpy().astype(np.float32)
            rng = np.where(a > 0.5, (rng - (1.0 - a) * model.cfg.far_m) / np.maximum(a, 1e-6), model.cfg.far_m).astype(np.float32)
        inten = r["intensity"].numpy().astype(np.float32)
        ok = (r["drop_prob"].numpy() < DROP_THRESHOLD) & (rng > MIN_RANGE_M) & (rng <= max_range) & (rng < model.cfg.far_m - 1e-3)
        rng = np.where(ok, rng, np.inf).astype(np.float32)
        who = np.full(len(rng), -1, dtype=np.int32)
        act = ok & (r["acc_actor"].numpy() > ACTOR_LABEL_OPACITY)
        if act.any() and rows:
            pw = dirs[act].astype(np.float64) * rng[act, None].astype(np.float64) @ s2w[:3, :3].T + s2w[:3, 3]
            who[act] = boxes_containing(pw, world, np.asarray(rows, dtype=np.int64))
        return rng, inten, who

    def render_lidar(self, world: WorldLike, spec: LidarSpec, plan: ActorPlan | None = None, s2w: NDArray[np.float64] | None = None) -> LidarScan:
        """One LiDAR sweep from the ego of ``world``, or from ``s2w`` (4x4 sensor-to-world) when
        given; returns in the sensor frame."""
        plan = plan or self.plan(world)
        s2w = _ego_pose(world) @ spec.vehicle_from_lidar if s2w is None else np.asarray(s2w, dtype=np.float64)
        dirs = self._lidar_dirs(spec)
        rng, inten, who = self._lidar(self.model, world, plan.rows, plan.slots, s2w, dirs, spec.max_range_m)
        for src, (rows, slots) in plan.foreign.items():
            assert self.library is not None
            merge_lidar(rng, inten, who, *self._lidar(self.library.source_model(src), world, rows, slots, s2w, dirs, spec.max_range_m, layer=True))
        idx = np.flatnonzero(np.isfinite(rng))
        pts = (dirs[idx] * rng[idx, None]).astype(np.float32)
        return LidarScan(pts, np.clip(inten[idx], 0.0, 1.0).astype(np.float32), s2w, idx.astype(np.int32), who[idx])

    # ------------------------------------------------------------------------------ contract
    def render(self, world: WorldLike, rig: SensorRig) -> SensorFrame:
        """Every camera of ``rig`` and its LiDAR, mounted on the ego (row 0 of ``world``).

        With ``parallel`` the sensors of the step are tasks of ``workers`` threads: the LiDAR
        first (the longest), then the cameras in batches of ``camera_batch`` (one batched pass
        each, :meth:`render_cameras`), so the threads stay busy until the step is done. Same
        outputs as the serial path (each sensor is rendered by the same code)."""
        prev = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            plan = self.plan(world)
            cams = tuple(rig.cameras)
            batches = [cams[i : i + self.camera_batch] for i in range(0, len(cams), self.camera_batch)]
            if self.parallel and self.workers > 1 and len(batches) + (rig.lidar is not None) > 1:
                pool = self._executor()
                n = torch.get_num_threads()
                pending = pool.submit(_in_thread, n, self.render_lidar, world, rig.lidar, plan) if rig.lidar is not None else None
                parts = [pool.submit(_in_thread, n, self.render_cameras, world, b, plan) for b in batches]
                images = {k: v for p in parts for k, v in p.result().items()}
                lidar = pending.result() if pending is not None else None
            else:
                images = {k: v for b in batches for k, v in self.render_cameras(world, b, plan).items()}
                lidar = self.render_lidar(world, rig.lidar, plan) if rig.lidar is not None else None
        finally:
            if self.threads is not None:
                torch.set_num_threads(prev)
        return SensorFrame(int(world.t_us), {c.name: images[c.name] for c in cams}, lidar)

    def _executor(self) -> Any:
        """The sensor worker threads (started at the first parallel render)."""
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="loopdrive-sensors")
        return self._pool

    def close(self) -> None:
        """Stop the sensor worker threads (if any were started)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _in_thread(threads: int, fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` with the caller's torch intra-op thread count (OpenMP's count is per
    thread: a fresh worker would otherwise use every core)."""
    torch.set_num_threads(threads)
    return fn(*args)


if "neural" not in RENDERERS:
    RENDERERS.register("neural", NeuralRenderer)
