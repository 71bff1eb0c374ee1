"""The ``composite`` render backend: neural background + actors from the mesh asset library.

The static scene comes from the scene bundle with **no** actor fields (the learned background, as
for removed actors); every valid actor of the world is drawn from the same procedural actor models
the ``mesh`` ground truth uses (:func:`sim.synth.actor_mesh.actor_parts`, rasterised with pyrender and
ray cast with trimesh/Embree), and the two layers are merged by depth: per pixel the smaller
z-depth wins, per LiDAR ray the nearer return. It is the fallback for actors without any
reconstruction (inserted ones), and needs no actor library.

Outputs, frames and units are those of :mod:`sim.render.neural` / :mod:`sim.render.mesh`. The
mesh layer holds an OpenGL context: use a backend from the thread that created it.
"""

from __future__ import annotations

import logging
import types
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from sim.render.base import RENDERERS, CameraImage, LidarScan, RenderBackend, SensorFrame, WorldLike
from sim.render.mesh import MeshRenderer, ordered_scene
from sim.render.neural import NeuralRenderer, _ego_pose, merge_camera, merge_lidar
from sim.sensors import CameraSpec, LidarSpec, SensorRig

__all__ = ["ActorMeshLayer", "CompositeRenderer"]

log = logging.getLogger(__name__)


class _NoHits:
    """A ray intersector of an empty scene (the static town is not part of the actor layer)."""

    def intersects_location(self, origins: Any, dirs: Any, multiple_hits: bool = False) -> tuple[Any, Any, Any]:
        return np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros(0, np.int64)


class ActorMeshLayer(MeshRenderer):
    """The ``mesh`` backend's actors alone (no static town, no sky): camera z-depth is ``inf`` and
    colour black where no actor is hit, and the LiDAR returns only actor hits. Same actor models,
    materials and intensities as :class:`~sim.render.mesh.MeshRenderer`."""

    def __init__(self, *, lidar_engine: str = "auto", znear: float = 0.1, zfar: float = 1500.0) -> None:
        from sim.synth.parts import MATERIAL_IDS, MATERIALS

        # the parent's constructor builds the static town; only the actor machinery is set up here
        self.supersample = 1
        self.scene = None
        self.town = types.SimpleNamespace(ground_mapping=(0.0, 0.0, 1.0, 1.0), sky=np.zeros((1, 1), np.float32),
                                          face_material=np.zeros(1, np.int16))
        self.lidar_engine = lidar_engine
        self.znear, self.zfar = znear, zfar
        self._static_rt = _NoHits()
        self._static_normals = np.zeros((1, 3))
        self._reflectivity = np.array([MATERIALS[m] for m in MATERIAL_IDS], dtype=np.float32)
        self._ground_ids = np.zeros(0, dtype=np.int16)
        self._ground_lum = {}
        self._actors = {}
        self._gl = None
        self._renderers = {}
        self._cam_node = None
        self._ray_cache = {}
        self.last_lidar_materials = np.zeros(0, dtype="<U1")

    def _gl_scene(self) -> Any:
        if self._gl is None:
            self._gl = ordered_scene(bg_color=np.zeros(4), ambient_light=np.ones(3))
        return self._gl

    def sky_color(self, dirs_world: NDArray[np.float64]) -> NDArray[np.float32]:
        return np.zeros((*dirs_world.shape[:-1], 3), dtype=np.float32)


class CompositeRenderer(RenderBackend):
    """Neural background from a bundle + mesh actors, merged by depth (see the module docstring).

    Args:
        scene: the world source the env passes (a bundle folder is accepted here too).
        bundle: the scene bundle (folder or loaded ``Bundle``).
        lidar_engine: ray-casting engine of the actor layer (see :func:`sim.render.mesh.make_intersector`).
        threads: torch threads while rendering the background (default: torch's setting).
        mode: background mode of the neural layer (``auto`` | ``surface`` | ``volume``, see
            :class:`~sim.render.neural.NeuralRenderer`).
    """

    name: ClassVar[str] = "composite"

    def __init__(self, scene: Any = None, *, bundle: Any = None, lidar_engine: str = "auto", threads: int | None = None,
                 mode: str = "auto", **_: Any) -> None:
        self.background = NeuralRenderer(scene, bundle=bundle, library=False, threads=threads, mode=mode)
        self.actors = ActorMeshLayer(lidar_engine=lidar_engine)
        self._empty: dict[int, Any] = {}

    @classmethod
    def from_scenario(cls, spec: Any, scene: Any = None, **options: Any) -> CompositeRenderer:
        """The backend of a :class:`~sim.spec.ScenarioSpec` (its ``scene.bundle``)."""
        from sim.errors import ScenarioError

        if spec.scene.bundle is None and "bundle" not in options:
            raise ScenarioError(f"expected scene.bundle (a scene-bundle folder) for renderer {cls.name!r}", field="scene.bundle")
        options.setdefault("bundle", spec.scene.bundle)
        options.setdefault("mode", getattr(spec.scene, "neural_mode", "auto"))
        return cls(scene, **options)

    def _no_actors(self) -> Any:
        from sim.render.neural import ActorPlan

        return ActorPlan((), (), {})

    def render_camera(self, world: WorldLike, cam: CameraSpec) -> CameraImage:
        """Background from the bundle, actors from meshes, merged per pixel by z-depth."""
        bg = self.background.render_camera(world, cam, self._no_actors())
        fg = self.actors.render_camera(world, cam)
        rgb, depth = merge_camera(bg.rgb, bg.depth, fg.rgb, fg.depth)
        return CameraImage(rgb, depth, bg.c2w, bg.K)

    def render_lidar(self, world: WorldLike, spec: LidarSpec) -> LidarScan:
        """Background returns from the bundle, actor returns from meshes; nearest per ray."""
        n = spec.beams * spec.azimuth_steps
        bg = self.background.render_lidar(world, spec, self._no_actors())
        fg = self.actors.render_lidar(world, spec)
        rng = np.full(n, np.inf, np.float32)
        inten = np.zeros(n, np.float32)
        who = np.full(n, -1, np.int32)
        rng[bg.ray_index] = np.linalg.norm(bg.points, axis=1)
        inten[bg.ray_index] = bg.intensity
        rng2 = np.full(n, np.inf, np.float32)
        inten2 = np.zeros(n, np.float32)
        who2 = np.full(n, -1, np.int32)
        rng2[fg.ray_index] = np.linalg.norm(fg.points, axis=1)
        inten2[fg.ray_index] = fg.intensity
        who2[fg.ray_index] = fg.actor_id
        merge_lidar(rng, inten, who, rng2, inten2, who2)
        idx = np.flatnonzero(np.isfinite(rng))
        dirs = self.background._lidar_dirs(spec)
        pts = (dirs[idx] * rng[idx, None]).astype(np.float32)
        s2w = _ego_pose(world) @ spec.vehicle_from_lidar
        return LidarScan(pts, inten[idx], s2w, idx.astype(np.int32), who[idx])

    def render(self, world: WorldLike, rig: SensorRig) -> SensorFrame:
        """Every camera of ``rig`` and its LiDAR, mounted on the ego (row 0 of ``world``)."""
        cams = {c.name: self.render_camera(world, c) for c in rig.cameras}
        lidar = self.render_lidar(world, rig.lidar) if rig.lidar is not None else None
        return SensorFrame(int(world.t_us), cams, lidar)

    def close(self) -> None:
        """Release the actor layer's OpenGL context."""
        self.actors.close()
        self.background.close()


if "composite" not in RENDERERS:
    RENDERERS.register("composite", CompositeRenderer)
