"""The ``mesh`` render backend: exact ground truth of the synthetic town.

Cameras are rasterised headless with pyrender (EGL, chosen here before pyrender is imported) in
flat mode: the town's textures times baked illumination, so a surface looks the same from every
viewpoint; the sky is a direction-dependent gradient with clouds. Depth is metric z-depth along
the optical axis (``inf`` for the sky). The LiDAR is ray cast with trimesh against the static
town's BVH (built once; Embree through ``embreex`` when available, trimesh's pure-numpy
intersector otherwise) and against each actor's model in its box frame, keeping the nearest hit.

Only the static scene is built once; per render, actor nodes are posed from the world arrays (row
0 is the ego, which is not drawn: the sensors are mounted on it), actors that are absent are
hidden. One pyrender ``OffscreenRenderer`` (one GL context) is kept and resized per camera. A renderer must be used from the
thread that created it (OpenGL contexts are per thread).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from sim.errors import LogFormatError
from sim.geometry import OPENCV_FROM_OPENGL
from sim.render.base import RENDERERS, CameraImage, LidarScan, RenderBackend, SensorFrame, WorldLike
from sim.render.mesh_lidar import LIDAR_ENGINES, cast_lidar, make_intersector, static_motion
from sim.sensors import CameraSpec, LidarSpec, SensorRig

if TYPE_CHECKING:
    import trimesh

__all__ = ["LIDAR_ENGINES", "MeshRenderer", "make_intersector"]

log = logging.getLogger(__name__)

SKY_HORIZON = np.array([0.80, 0.85, 0.90], dtype=np.float32)
SKY_HORIZON.flags.writeable = False
SKY_ZENITH = np.array([0.30, 0.50, 0.82], dtype=np.float32)
SKY_ZENITH.flags.writeable = False
CLOUD = np.array([0.96, 0.96, 0.97], dtype=np.float32)
CLOUD.flags.writeable = False


def _pyrender() -> Any:
    """Import pyrender with a headless EGL platform (unless the user chose another one)."""
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    if os.environ.get("PYOPENGL_PLATFORM") == "egl":
        os.environ.setdefault("EGL_PLATFORM", "surfaceless")
    import pyrender

    return pyrender


def ordered_scene(**kwargs: Any) -> Any:
    """A new pyrender Scene (``kwargs`` as for ``pyrender.Scene``) whose mesh nodes iterate in
    insertion order: pyrender keeps them in a set (ordered by object address), so draw order -- and
    which of two equally deep surfaces wins -- would change from run to run.

    The subclass is made per call (pyrender is imported only when a renderer first draws, and
    caching the class would be process state); each renderer calls this once."""
    pr = _pyrender()

    class OrderedScene(pr.Scene):  # type: ignore[misc, name-defined]
        def add_node(self, node: Any, parent_node: Any = None) -> Any:
            if not hasattr(self, "_insertion"):
                self._insertion: dict[Any, int] = {}
            self._insertion.setdefault(node, len(self._insertion))
            return super().add_node(node, parent_node=parent_node)

        @property
        def mesh_nodes(self) -> list[Any]:  # type: ignore[override]
            order = getattr(self, "_insertion", {})
            return sorted(self._mesh_nodes, key=lambda n: order.get(n, 1 << 30))

    return OrderedScene(**kwargs)


def _delete_egl_context_keep_display(platform: Any) -> None:
    """Destroy one renderer's EGL context without ``eglTerminate``.

    pyrender's EGL platform terminates the display when a renderer is deleted; the display handle
    is shared by every context of the process, so that would break all other live renderers
    (two envs with cameras in one process, or a renderer closed by ``check_env``).
    """
    from OpenGL.EGL import EGL_NO_CONTEXT, EGL_NO_SURFACE, eglDestroyContext, eglMakeCurrent

    if platform._egl_display is not None and platform._egl_context is not None:
        eglMakeCurrent(platform._egl_display, EGL_NO_SURFACE, EGL_NO_SURFACE, EGL_NO_CONTEXT)
        eglDestroyContext(platform._egl_display, platform._egl_context)
    platform._egl_context = None
    platform._egl_display = None


def _configure_main_framebuffer_single_sample(self: Any) -> None:
    """pyrender's ``Renderer._configure_main_framebuffer`` with 1 sample instead of 4 (MSAA).

    With MSAA the depth image is one sub-sample of each pixel, a fraction of a pixel away from the
    pixel centre, so it disagrees with the pinhole model (about 0.4 px on llvmpipe) and colour edges
    blend with the background. Ground truth wants the value at the pixel centre.
    """
    from OpenGL import GL

    if self._main_fb is not None and (self.viewport_width, self.viewport_height) != tuple(self._main_fb_dims):
        self._delete_main_framebuffer()
    if self._main_fb is not None:
        return
    w, h = self.viewport_width, self.viewport_height
    fbs = []
    for _ in range(2):  # pyrender renders into the "ms" buffer and blits into the other one
        cb, db = GL.glGenRenderbuffers(2)
        GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, cb)
        GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, GL.GL_RGBA, w, h)
        GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, db)
        GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, GL.GL_DEPTH_COMPONENT24, w, h)
        fb = GL.glGenFramebuffers(1)
        GL.glBindFramebuffer(GL.GL_DRAW_FRAMEBUFFER, fb)
        GL.glFramebufferRenderbuffer(GL.GL_DRAW_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_RENDERBUFFER, cb)
        GL.glFramebufferRenderbuffer(GL.GL_DRAW_FRAMEBUFFER, GL.GL_DEPTH_ATTACHMENT, GL.GL_RENDERBUFFER, db)
        fbs.append((cb, db, fb))
    (self._main_cb, self._main_db, self._main_fb), (self._main_cb_ms, self._main_db_ms, self._main_fb_ms) = fbs
    self._main_fb_dims = (w, h)


def _merge_by_texture(parts: list[Any]) -> list[Any]:
    """Concatenate parts that share a texture (materials only matter to the LiDAR)."""
    from sim.synth.parts import Part

    groups: dict[str | None, list[Any]] = {}
    for p in parts:
        if len(p.faces):
            groups.setdefault(p.texture, []).append(p)
    out = []
    for tkey, ps in groups.items():
        offs = np.cumsum([0] + [len(p.vertices) for p in ps[:-1]])
        uv = None if tkey is None else np.concatenate([p.uv for p in ps])
        out.append(Part("mixed", np.concatenate([p.vertices for p in ps]),
                        np.concatenate([p.faces + o for p, o in zip(ps, offs, strict=True)]),
                        np.concatenate([p.normals for p in ps]), np.concatenate([p.colors for p in ps]), uv, tkey))
    return out


@dataclass
class _ActorModel:
    parts: list[Any]
    mesh: trimesh.Trimesh
    face_material: NDArray[np.int16]
    half: NDArray[np.float64]  # half extents of the model's bounding box (local)
    center: NDArray[np.float64]
    intersector: Any = None
    node: Any = None
    gl_mesh: Any = None


def vehicle_pose_se3(x: float, y: float, yaw: float, z: float = 0.0) -> NDArray[np.float64]:
    """4x4 world-from-box of a planar pose (same as :func:`sim.geometry.vehicle_pose_se3`, without
    scipy's per-call overhead)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0, x], [s, c, 0.0, y], [0.0, 0.0, 1.0, z], [0.0, 0.0, 0.0, 1.0]])


class MeshRenderer(RenderBackend):
    """Ground-truth renderer of a synthetic town.

    Args:
        scene: a :class:`sim.synth.SynthScene`, or a drive log (folder path or
            :class:`sim.log.DriveLog`) written by the synth (``meta.json`` ``source: "synth"`` with
            ``synth: {preset, seed}``), from which the town is regenerated deterministically.
        lidar_engine: ``auto`` | ``embree`` | ``triangle`` (see :func:`make_intersector`).
        znear, zfar: camera clip planes, metres.
        supersample: odd anti-aliasing factor ``s``: colour is the mean of ``s x s`` samples per
            pixel, depth is the sample at the pixel centre (exact for the pinhole model). 1 is fastest.
    """

    name: ClassVar[str] = "mesh"

    def __init__(self, scene: Any, *, lidar_engine: str = "auto", znear: float = 0.1, zfar: float = 1500.0,
                 supersample: int = 1) -> None:
        from sim.synth.scene import SynthScene

        if not (isinstance(supersample, int) and supersample >= 1 and supersample % 2 == 1):
            raise ValueError(f"supersample must be an odd positive integer, got {supersample!r}")
        self.supersample = supersample

        if not isinstance(scene, SynthScene):
            scene = self._scene_from_log(scene)
        self.scene = scene
        self.town = scene.static_town()
        self.lidar_engine = lidar_engine
        self.znear, self.zfar = znear, zfar
        self._static_rt = make_intersector(self.town.mesh, lidar_engine)
        self._static_normals = self.town.mesh.face_normals
        from sim.synth.parts import MATERIAL_IDS, MATERIALS

        self._reflectivity = np.array([MATERIALS[m] for m in MATERIAL_IDS], dtype=np.float32)
        self._ground_ids = np.array([MATERIAL_IDS[m] for m in ("asphalt", "sidewalk", "grass")], dtype=np.int16)
        self._ground_lum = {k: self.town.textures[k].astype(np.float32).mean(axis=2) for k in ("asphalt", "sidewalk", "grass")}
        self._ground_lum = {k: v / max(float(v.mean()), 1e-6) for k, v in self._ground_lum.items()}
        self._actors: dict[tuple[Any, ...], _ActorModel] = {}
        self._gl: Any = None
        self._renderers: dict[tuple[int, int], Any] = {}
        self._cam_node: Any = None
        self._ray_cache: dict[tuple[Any, ...], NDArray[np.float64]] = {}
        #: material name per return of the last :meth:`render_lidar` (ground truth for tests)
        self.last_lidar_materials: NDArray[np.str_] = np.zeros(0, dtype="<U1")

    # ------------------------------------------------------------------------------ construction
    @staticmethod
    def _scene_from_log(log_or_path: Any) -> Any:
        from sim.log import DriveLog, read_log
        from sim.synth.scene import make_scene

        dl = log_or_path if isinstance(log_or_path, DriveLog) else read_log(Path(log_or_path))
        meta = dl.meta
        syn = meta.get("synth")
        if meta.get("source") != "synth" or not isinstance(syn, dict) or "preset" not in syn or "seed" not in syn:
            raise LogFormatError(
                "expected a log written by the synth (source 'synth' with synth.preset and synth.seed) for the mesh renderer",
                file=dl.root / "meta.json",
                field="synth",
            )
        return make_scene(str(syn["preset"]), int(syn["seed"]), frames=1)

    @classmethod
    def from_log(cls, log: Any, **options: Any) -> MeshRenderer:
        """A renderer for the town of a synth drive log (folder or :class:`sim.log.DriveLog`),
        with the log's anti-aliasing (``synth.supersample``) unless ``supersample`` is given, so
        its renders match the log's images."""
        from sim.log import DriveLog, read_log

        dl = log if isinstance(log, DriveLog) else read_log(Path(log))
        syn = dl.meta.get("synth")
        if isinstance(syn, dict) and isinstance(syn.get("supersample"), int):
            options.setdefault("supersample", syn["supersample"])
        return cls(cls._scene_from_log(dl), **options)

    def _actor_model(self, actor_id: str, cls_name: str, size: tuple[float, float, float]) -> _ActorModel:
        key = (actor_id, cls_name, *(round(float(s), 3) for s in size))
        m = self._actors.get(key)
        if m is None:
            from sim.synth.actor_mesh import actor_parts
            from sim.synth.parts import parts_to_trimesh

            parts = actor_parts(cls_name, size, actor_id)
            mesh, mats = parts_to_trimesh(parts)
            lo, hi = mesh.bounds
            m = _ActorModel(parts, mesh, mats, (hi - lo) / 2 + 0.02, (hi + lo) / 2)
            self._actors[key] = m
        return m

    # ------------------------------------------------------------------------------------ camera
    def _gl_scene(self) -> Any:
        if self._gl is not None:
            return self._gl
        pr = _pyrender()
        gl = ordered_scene(bg_color=np.zeros(4), ambient_light=np.ones(3))
        textures: dict[str, Any] = {}
        # one primitive per texture (pyrender's per-primitive Python overhead dominates otherwise)
        for p in _merge_by_texture(self.town.parts):
            gl.add(pr.Mesh([self._primitive(p, textures)]))
        self._gl = gl
        self._gl_textures = textures
        return gl

    def _primitive(self, p: Any, cache: dict[str, Any], textures: dict[str, Any] | None = None) -> Any:
        pr = _pyrender()
        tex = None
        if p.texture is not None:
            tex = cache.get(p.texture)
            if tex is None:
                img = (textures or self.town.textures)[p.texture]
                sampler = pr.Sampler(magFilter=pr.constants.GLTF.LINEAR, minFilter=pr.constants.GLTF.LINEAR_MIPMAP_LINEAR,
                                     wrapS=pr.constants.GLTF.REPEAT, wrapT=pr.constants.GLTF.REPEAT)
                # pyrender flips rows on upload (image row 0 -> v = 1); pre-flip so that v = row / H, and
                # upload RGBA so rows stay 4-byte aligned whatever the width
                rgba = np.concatenate([img, np.full((*img.shape[:2], 1), 255, np.uint8)], axis=2)
                tex = pr.Texture(source=np.ascontiguousarray(rgba[::-1]), source_channels="RGBA", sampler=sampler)
                cache[p.texture] = tex
        mat = pr.MetallicRoughnessMaterial(baseColorFactor=np.ones(4), baseColorTexture=tex, doubleSided=True)
        colors = np.concatenate([p.colors, np.ones((len(p.colors), 1))], axis=1).astype(np.float32)
        return pr.Primitive(
            positions=p.vertices.astype(np.float32),
            normals=p.normals.astype(np.float32),
            texcoord_0=p.uv.astype(np.float32) if p.uv is not None and tex is not None else None,
            color_0=colors,
            indices=p.faces.astype(np.uint32),
            material=mat,
        )

    def _renderer(self, w: int, h: int) -> Any:
        # one GL context per renderer (pyrender binds meshes to a context); resized per camera
        r = self._renderers.get((0, 0))
        if r is None:
            pr = _pyrender()
            r = pr.OffscreenRenderer(w, h)
            import types

            r._renderer._configure_main_framebuffer = types.MethodType(_configure_main_framebuffer_single_sample, r._renderer)
            if hasattr(r._platform, "_egl_display"):
                r._platform.delete_context = types.MethodType(_delete_egl_context_keep_display, r._platform)
            self._renderers[(0, 0)] = r
        if (r.viewport_width, r.viewport_height) != (w, h):
            r.viewport_width, r.viewport_height = w, h
        return r

    def _pose_actors_gl(self, world: WorldLike) -> None:
        pr = _pyrender()
        gl = self._gl_scene()
        for m in self._actors.values():
            if m.gl_mesh is not None:
                m.gl_mesh.is_visible = False
        for i in self._actor_rows(world):
            m = self._actor_model(world.ids[i], world.cls[i], (world.length[i], world.width[i], world.height[i]))
            pose = vehicle_pose_se3(float(world.x[i]), float(world.y[i]), float(world.yaw[i]), float(world.z[i]))
            if m.gl_mesh is None:
                cache: dict[str, Any] = {}
                m.gl_mesh = pr.Mesh([self._primitive(p, cache) for p in _merge_by_texture(m.parts)])
                m.node = gl.add(m.gl_mesh, pose=pose)
            else:
                gl.set_pose(m.node, pose)
            m.gl_mesh.is_visible = True

    @staticmethod
    def _actor_rows(world: WorldLike) -> list[int]:
        return [i for i in range(1, len(world.ids)) if bool(world.valid[i])]

    @staticmethod
    def ego_pose(world: WorldLike) -> NDArray[np.float64]:
        """4x4 world-from-vehicle of row 0 (the ego)."""
        return vehicle_pose_se3(float(world.x[0]), float(world.y[0]), float(world.yaw[0]), float(world.z[0]))

    def _camera_dirs(self, cam: CameraSpec) -> NDArray[np.float64]:
        key = ("cam", cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy)
        d = self._ray_cache.get(key)
        if d is None:
            K = cam.K
            u, v = np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5)
            d = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)
            d /= np.linalg.norm(d, axis=-1, keepdims=True)
            self._ray_cache[key] = d
        return d

    def sky_color(self, dirs_world: NDArray[np.float64]) -> NDArray[np.float32]:
        """Sky RGB in [0, 1] for world directions (..., 3): gradient by elevation plus clouds."""
        d = dirs_world
        el = np.arcsin(np.clip(d[..., 2], -1.0, 1.0))
        t = np.clip(el / (np.pi / 2), 0.0, 1.0) ** 0.6
        base = SKY_HORIZON * (1 - t[..., None]) + SKY_ZENITH * t[..., None]
        clouds = self.town.sky
        hh, ww = clouds.shape
        az = (np.arctan2(d[..., 1], d[..., 0]) % (2 * np.pi)) / (2 * np.pi)
        row = np.clip(((1.0 - np.clip(el, 0, None) / (np.pi / 2)) * (hh - 1)).astype(np.int64), 0, hh - 1)
        col = np.clip((az * ww).astype(np.int64), 0, ww - 1)
        c = clouds[row, col] * np.clip(el / 0.12, 0.0, 1.0) * 0.85
        return (base * (1 - c[..., None]) + CLOUD * c[..., None]).astype(np.float32)

    def render_camera(self, world: WorldLike, cam: CameraSpec) -> CameraImage:
        """RGB (uint8) and z-depth (m, ``inf`` for sky) of camera ``cam`` on the ego of ``world``."""
        pr = _pyrender()
        gl = self._gl_scene()
        self._pose_actors_gl(world)
        c2w = self.ego_pose(world) @ cam.vehicle_from_camera
        K = cam.K
        ss = self.supersample
        if ss == 1:
            camera = pr.IntrinsicsCamera(K[0, 0], K[1, 1], K[0, 2], K[1, 2], znear=self.znear, zfar=self.zfar)
        else:  # continuous pixel coordinates scale by ss; pixel centres of the output are hi-res centres
            camera = pr.IntrinsicsCamera(K[0, 0] * ss, K[1, 1] * ss, K[0, 2] * ss, K[1, 2] * ss, znear=self.znear, zfar=self.zfar)
        if self._cam_node is not None:
            gl.remove_node(self._cam_node)
        self._cam_node = gl.add(camera, pose=c2w)
        h, w = cam.height, cam.width
        r = self._renderer(w * ss, h * ss)
        flags = pr.RenderFlags.FLAT | pr.RenderFlags.SKIP_CULL_FACES
        color, depth_hi = r.render(gl, flags=flags)
        rgb = np.asarray(color[..., :3], dtype=np.float32).reshape(h, ss, w, ss, 3) / 255.0
        sky_hi = np.asarray(depth_hi).reshape(h, ss, w, ss) <= 0
        c = ss // 2
        depth = np.asarray(depth_hi, dtype=np.float32)[c::ss, c::ss].copy()
        any_sky = sky_hi.any(axis=(1, 3))
        if any_sky.any():
            r_cv = (c2w @ OPENCV_FROM_OPENGL)[:3, :3]
            sky_rgb = self.sky_color(self._camera_dirs(cam)[any_sky] @ r_cv.T)
            # sub-pixels that see the sky take the sky colour of their output pixel (the sky is smooth)
            full = np.zeros((h, w, 3), dtype=np.float32)
            full[any_sky] = sky_rgb
            rgb = np.where(sky_hi[..., None], full[:, None, :, None, :], rgb)
        rgb = rgb.mean(axis=(1, 3))
        depth[depth <= 0] = np.inf
        out = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
        return CameraImage(out, depth, c2w, K)

    # ------------------------------------------------------------------------------------- LiDAR
    def render_lidar(self, world: WorldLike, spec: LidarSpec, motion: Any = None) -> LidarScan:
        """One LiDAR sweep from the ego of ``world``: nearest hits within ``max_range_m`` with a
        per-material intensity; ``actor_id`` is the world row of the actor hit (-1 = static).
        The material name of each return is kept in :attr:`last_lidar_materials`.

        ``motion`` (a :class:`sim.render.mesh_lidar.LidarMotion`, e.g. from
        :func:`sim.synth.rigs.lidar_motion`) gives the sensor and actor poses at each column's firing
        time for a spinning LiDAR on a moving ego; the scan is then a
        :class:`~sim.render.mesh_lidar.TimedLidarScan` (points in the sensor frame at the sweep's
        time stamp, firing time and ring per return). Without it every ray fires from the pose of
        ``world``."""
        if motion is None:
            motion = static_motion(world, self.ego_pose(world) @ spec.vehicle_from_lidar)
        return cast_lidar(self, world, spec, motion)

    # ---------------------------------------------------------------------------------- contract
    def render(self, world: WorldLike, rig: SensorRig) -> SensorFrame:
        """Every camera of ``rig`` and its LiDAR, mounted on the ego (row 0 of ``world``)."""
        cams = {c.name: self.render_camera(world, c) for c in rig.cameras}
        lidar = self.render_lidar(world, rig.lidar) if rig.lidar is not None else None
        return SensorFrame(int(world.t_us), cams, lidar)

    def close(self) -> None:
        """Release the OpenGL renderers."""
        for r in self._renderers.values():
            try:
                r.delete()
            except Exception as exc:  # pragma: no cover - best effort at shutdown
                log.debug("could not delete an offscreen renderer: %s", exc)
        self._renderers.clear()
        self._gl = None
        for m in self._actors.values():
            m.gl_mesh = None
            m.node = None
        self._cam_node = None

    def __del__(self) -> None:  # pragma: no cover - garbage collection order is not guaranteed
        with contextlib.suppress(Exception):
            self.close()


if "mesh" not in RENDERERS:
    RENDERERS.register("mesh", MeshRenderer)
