"""The neurad-studio closed-loop protocol on ``loopdrive serve``, so NeuroNCAP's client (and anything
written for neurad-studio's ``closed_loop`` server) drives a loopdrive bundle unchanged.

:func:`add_neurad_routes` adds these endpoints at the root of :func:`sim.serve.create_app`'s app
(``loopdrive serve --api both`` (default) or ``--api neurad``). They act on the same actor set as
loopdrive's ``/actors`` and render with the same :class:`~sim.serve.RenderService`.

``GET /alive``
    ``true``.
``GET /get_actors``
    ``[{"uuid", "poses": T x 4 x 4, "timestamps": [int us], "dims": [width, length, height] m}]``,
    one per actor of the current set. ``uuid`` is the actor's id (the nuScenes instance token of an
    imported log, the track id of a synthetic one). ``poses`` are box-centre poses (x along the
    box's length, y left, z up; the nuScenes box frame) in the **global frame**; ``timestamps``
    are **absolute**. An actor pinned to one pose (loopdrive's ``/actors``) is given at the log's
    first and last time stamps.
``POST /update_actors``
    A list of such trajectories **replaces** the whole actor set (an actor left out is no longer
    drawn); other fields (NeuroNCAP's ``is_target_actor``) are ignored. Between two samples an actor
    is interpolated linearly in position and along the shorter arc in yaw (the slerp of an upright
    box); outside its first..last time stamp it is **absent**; pitch and roll are dropped (boxes are
    drawn upright; a pose whose z axis is more than 30 degrees off vertical is refused). A uuid
    that is not one of the server's actors is drawn with the actor library's actor of its class
    nearest in size (class from the optional loopdrive field ``class``, default ``car``; 422
    without a library). Answers ``null``. All or nothing: a bad trajectory changes nothing.
``POST /render_image``
    ``{"pose": 4x4, "timestamp": int us, "camera_name": "CAM_FRONT" | ..., "image_format":
    "raw" | "png" | "jpg" | "jpeg"}`` (default ``raw``). ``pose`` is camera-to-global with
    **OpenCV camera axes** (x right, y down, z forward), i.e. nuScenes' ``ego2world @ cam2ego``.
    ``raw`` answers text/plain: base64 of ``torch.save`` of a uint8 (H, W, 3) tensor; ``png`` and
    ``jpg``/``jpeg`` the encoded image. The header ``X-Loopdrive-Actors-Drawn`` says how many actors
    were drawn (0 for a time stamp outside every trajectory, e.g. a relative time sent to a log
    with an absolute time origin, which is also logged as a warning).
``GET /start_time``
    The log's first (ego) time stamp, us, absolute.
``POST /set_actor_scale``
    Accepts a number and ignores it (neurad-studio answers 404, which NeuroNCAP ignores).
``POST /render_lidar`` (loopdrive extension, not part of neurad's protocol)
    ``{"pose": 4x4 LiDAR-to-global (x forward, y left, z up), "timestamp": int us, "format":
    "raw" | "npz" | "json"}`` (default ``raw``): the server rig's LiDAR scan. ``raw``: base64 of
    ``torch.save`` of a float32 (N, 4) tensor x, y, z (m, LiDAR frame), intensity (0..1); ``npz``
    / ``json``: ``points`` (N, 3), ``intensity``, ``ray_index``, ``actor_uuid`` ("" = static scene).

Camera names: a ``camera_name`` equal to a rig camera's name is used as is (a nuScenes rig's
``CAM_FRONT`` ... map 1:1); otherwise ``CAM_X`` maps to the rig camera ``x`` (lower case, e.g.
``CAM_FRONT`` -> ``front``, ``CAM_FRONT_LEFT`` -> ``front_left``, ``CAM_BACK`` -> ``back`` or
``rear``). An unknown name is answered 422 with the names this server accepts.

Frames: global = the log's world frame + ``global_offset_m`` (a translation; an importer shifts
the log so its first ego pose is near the origin), absolute time = the log's ``t_us`` + ``t0_us``.
Both come from the log's ``meta.json``: ``origin: {"global_offset_m": [x, y, z], "t0_us": int}``,
else the offset from ``nuscenes.origin`` (what the nuScenes importer records); a synthetic log has
neither (zero offset, time origin 0).
"""

from __future__ import annotations

import base64
import io
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from sim.errors import BundleError, LoopdriveError
from sim.geometry import opencv_to_opengl_c2w
from sim.log import Track
from sim.sensors import SensorRig
from sim.serve import CameraRequest, LidarRequest, Pose4, RenderService, RequestError, _Actor, _npz, _png
from sim.serve_guard import ServeConfigError

__all__ = ["API_CHOICES", "NUSCENES_CAMERAS", "LogOrigin", "add_neurad_routes", "box_poses", "check_api", "log_origin",
           "rig_camera", "trajectory_track"]

log = logging.getLogger(__name__)

#: ``loopdrive serve --api`` values.
API_CHOICES = ("both", "loopdrive", "neurad")
#: The six cameras NeuroNCAP renders every step.
NUSCENES_CAMERAS = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
#: Time stamps (us) within int64 with room for the origin shift.
_T_LIMIT = 2**62
#: A box pose whose z axis is further than this from vertical is refused (a convention mix-up).
_MAX_TILT_RAD = math.radians(30.0)
#: Renders this far (us) outside the log's time span are logged as a likely time-origin mix-up.
_SPAN_SLACK_US = 60_000_000

TimeUs = Annotated[int, Field(ge=-_T_LIMIT, le=_T_LIMIT)]
PosFloat = Annotated[float, Field(gt=0)]


def check_api(api: str) -> None:
    """Refuse an ``--api`` value outside :data:`API_CHOICES` (:class:`ServeConfigError`)."""
    if api not in API_CHOICES:
        raise ServeConfigError(f"expected one of {list(API_CHOICES)}, got {api!r}", field="--api")


# ------------------------------------------------------------------------------------- frames
@dataclass(frozen=True)
class LogOrigin:
    """Where the log's frame sits: global = world + ``global_offset_m`` (m), absolute time = ``t_us`` + ``t0_us``."""

    global_offset_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    t0_us: int = 0

    @property
    def offset(self) -> NDArray[np.float64]:
        return np.asarray(self.global_offset_m, dtype=np.float64)


def _vec3(v: Any, file: Path | None, field: str) -> tuple[float, float, float]:
    ok = isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    if not ok or not all(math.isfinite(float(x)) for x in v):
        raise BundleError(f"expected [x, y, z] in metres (3 finite numbers), got {v!r}", file=file, field=field)
    return (float(v[0]), float(v[1]), float(v[2]))


def log_origin(meta: Mapping[str, Any] | None, *, file: Path | None = None) -> LogOrigin:
    """The :class:`LogOrigin` recorded in a log's ``meta.json`` (see the module docstring for the
    keys); the identity when ``meta`` is None or records none. A malformed record raises
    :class:`~sim.errors.BundleError` naming ``file`` and the field."""
    if meta is None:
        return LogOrigin()
    off: tuple[float, float, float] | None = None
    t0 = 0
    org = meta.get("origin")
    if org is not None:
        if not isinstance(org, dict):
            raise BundleError("expected an object {global_offset_m: [x, y, z], t0_us: int}", file=file, field="origin")
        if "global_offset_m" in org:
            off = _vec3(org["global_offset_m"], file, "origin.global_offset_m")
        if "t0_us" in org:
            t0 = org["t0_us"]
            if not isinstance(t0, int) or isinstance(t0, bool) or abs(t0) > _T_LIMIT:
                raise BundleError(f"expected an integer time stamp in microseconds, got {t0!r}", file=file, field="origin.t0_us")
    ns = meta.get("nuscenes")
    if off is None and isinstance(ns, dict) and "origin" in ns:
        off = _vec3(ns["origin"], file, "nuscenes.origin")
    return LogOrigin(off or (0.0, 0.0, 0.0), int(t0))


def box_poses(pose: NDArray[np.float64], height_m: float, origin: LogOrigin) -> NDArray[np.float64]:
    """(T, 4, 4) global box-centre poses of (T, 4) log poses x, y, z bottom (m), yaw (rad)."""
    p = np.asarray(pose, dtype=np.float64).reshape(-1, 4)
    c, s = np.cos(p[:, 3]), np.sin(p[:, 3])
    m = np.zeros((len(p), 4, 4))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    m[:, 2, 2] = m[:, 3, 3] = 1.0
    m[:, :3, 3] = p[:, :3] + origin.offset
    m[:, 2, 3] += height_m / 2.0
    return m


# ------------------------------------------------------------------------------------- requests
def _check_box_poses(poses: list[list[list[float]]]) -> list[list[list[float]]]:
    a = np.asarray(poses, dtype=np.float64)
    if a.ndim != 3 or a.shape[1:] != (4, 4) or len(a) == 0:
        raise ValueError(f"expected a list of 4x4 matrices (T x 4 x 4, T >= 1), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("expected finite numbers (no NaN or inf)")
    if not np.allclose(a[:, 3], [0, 0, 0, 1], atol=1e-5):
        raise ValueError("expected the last row [0, 0, 0, 1] in every pose")
    r = a[:, :3, :3]
    if not np.allclose(np.swapaxes(r, 1, 2) @ r, np.eye(3), atol=1e-3) or np.any(np.linalg.det(r) < 0):
        raise ValueError("expected rotations (orthonormal, determinant +1) in the upper-left 3x3")
    bad = np.flatnonzero(r[:, 2, 2] < math.cos(_MAX_TILT_RAD))
    if len(bad):
        raise ValueError(f"expected upright boxes (z axis within 30 degrees of vertical, as in the nuScenes box frame); pose {int(bad[0])} "
                         f"has its z axis at {math.degrees(math.acos(float(np.clip(r[bad[0], 2, 2], -1, 1)))):.0f} degrees")
    return poses


class ActorTrajectory(BaseModel):
    """One actor's trajectory (neurad's ``ActorTrajectory``; unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, populate_by_name=True)

    uuid: str = Field(min_length=1, max_length=256, description="actor id (nuScenes instance token / track id)")
    poses: Annotated[list[list[list[float]]], AfterValidator(_check_box_poses)] = Field(description="T x 4 x 4 box-centre poses, global frame (m)")
    timestamps: list[TimeUs] = Field(description="T absolute time stamps, us")
    dims: tuple[PosFloat, PosFloat, PosFloat] = Field(description="[width, length, height], m")
    cls: str | None = Field(None, alias="class", description="loopdrive extension: class of an actor new to the server (default car)")

    @model_validator(mode="after")
    def _same_length(self) -> ActorTrajectory:
        if len(self.poses) != len(self.timestamps):
            raise ValueError(f"expected as many timestamps as poses, got {len(self.timestamps)} and {len(self.poses)}")
        return self


class RenderImageRequest(BaseModel):
    """neurad's ``RenderInput`` (unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    pose: Pose4 = Field(description="4x4 camera-to-global, OpenCV camera axes (x right, y down, z forward), m")
    timestamp: TimeUs = Field(description="absolute time stamp, us")
    camera_name: str = Field(max_length=64, description="CAM_FRONT, CAM_FRONT_LEFT, ... or a rig camera's name")
    image_format: Literal["raw", "png", "jpg", "jpeg"] = "raw"


class RenderLidarRequest(BaseModel):
    """loopdrive extension: a LiDAR scan in the protocol's frames."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    pose: Pose4 = Field(description="4x4 LiDAR-to-global (x forward, y left, z up), m")
    timestamp: TimeUs = Field(description="absolute time stamp, us")
    format: Literal["raw", "npz", "json"] = "raw"


# ------------------------------------------------------------------------------------- mapping
def _protocol_name(rig_name: str) -> str:
    if rig_name.upper().startswith("CAM_"):
        return rig_name
    return "CAM_" + ("BACK" if rig_name == "rear" else rig_name.upper())


def rig_camera(rig: SensorRig, camera_name: str) -> str:
    """The rig camera a protocol ``camera_name`` addresses (see the module docstring), else a
    :class:`~sim.serve.RequestError` listing the names this rig accepts."""
    names = [c.name for c in rig.cameras]
    if camera_name in names:
        return camera_name
    base = (camera_name[4:] if camera_name.upper().startswith("CAM_") else camera_name).lower()
    for cand in (base, "rear" if base == "back" else None):
        if cand is not None and cand in names:
            return cand
    accepted = [_protocol_name(n) for n in names]
    raise RequestError(f"expected a camera_name in {accepted} (this server's rig cameras: {names}), got {camera_name!r}", field="camera_name")


def trajectory_track(traj: ActorTrajectory, origin: LogOrigin, cls: str) -> Track:
    """The log-frame :class:`~sim.log.Track` (box bottom centre, yaw; relative time) of a protocol
    trajectory, samples sorted by time; a repeated time stamp raises ``ValueError``."""
    p = np.asarray(traj.poses, dtype=np.float64)
    t = np.asarray(traj.timestamps, dtype=np.int64) - np.int64(origin.t0_us)
    order = np.argsort(t, kind="stable")
    t, p = t[order], p[order]
    if np.any(np.diff(t) == 0):
        raise ValueError(f"expected distinct timestamps, {int(t[np.flatnonzero(np.diff(t) == 0)[0]] + origin.t0_us)} repeats")
    w, length, h = (float(x) for x in traj.dims)
    xyz = p[:, :3, 3] - origin.offset
    xyz[:, 2] -= h / 2.0
    yaw = np.arctan2(p[:, 1, 0], p[:, 0, 0])
    return Track(traj.uuid, cls, (length, w, h), t, np.column_stack([xyz, yaw]))


def actor_trajectories(service: RenderService, origin: LogOrigin) -> list[dict[str, Any]]:
    """``GET /get_actors``: the current actor set as protocol trajectories."""
    bundle = service.renderer.bundle
    tracks = {t.id: t for t in bundle.tracks}
    ego_t = np.asarray(bundle.ego.t_us, dtype=np.int64)
    out = []
    for a in service.actors.values():
        length, w, h = a.size
        if a.pose is not None:
            t = np.unique(ego_t[[0, -1]])
            pose = np.repeat(np.asarray(a.pose, dtype=np.float64)[None], len(t), axis=0)
        else:
            tr = a.track if a.track is not None else tracks.get(a.id)
            if tr is None or len(tr.t_us) == 0:
                continue
            t, pose = np.asarray(tr.t_us, dtype=np.int64), tr.pose
        out.append({"uuid": a.id, "poses": box_poses(pose, h, origin).tolist(), "timestamps": [int(v) + origin.t0_us for v in t],
                    "dims": [float(w), float(length), float(h)]})
    return out


def replace_actors(service: RenderService, origin: LogOrigin, trajectories: Sequence[ActorTrajectory]) -> None:
    """``POST /update_actors``: the service's actor set becomes exactly ``trajectories`` (all or nothing)."""
    from sim.actor_library import check_size

    bundle_actors = {a.id: a for a in service.renderer.bundle.actors}
    new: dict[str, _Actor] = {}
    for i, tr in enumerate(trajectories):
        w, length, h = (float(x) for x in tr.dims)
        size = (length, w, h)
        if tr.uuid in new:
            raise RequestError(f"expected each uuid once, {tr.uuid!r} repeats", field=f"{i}.uuid")
        if tr.uuid in bundle_actors:
            cls, source = bundle_actors[tr.uuid].cls, "bundle"
        else:  # drawn from the library: its asset (loopdrive's /actors insert) or the nearest of its class, checked at these dims
            cur = service.actors.get(tr.uuid)
            cls = tr.cls or (cur.cls if cur is not None else "car")
            lib = service.renderer.library
            if lib is None:
                known = sorted(bundle_actors)
                shown = f"{known[:8]}{' ...' if len(known) > 8 else ''}"
                raise RequestError(f"expected the uuid of one of this server's actors {shown}, got {tr.uuid!r} (a new actor needs an actor "
                                   "library: loopdrive serve --library DIR)", field=f"{i}.uuid")
            asset = service.renderer.assets.get(tr.uuid)
            try:
                la = lib.get(asset) if asset else lib.match(cls, size, service.renderer.size_tolerance)
            except LoopdriveError as exc:
                raise RequestError(exc.message, field=str(i)) from None  # no class or no size match
            try:
                check_size(la, size, service.renderer.size_tolerance, where=f"{i}.dims")
            except LoopdriveError as exc:
                raise RequestError(exc.message, field=f"{i}.dims") from None
            source = f"library:{la.key}"
        try:
            track = trajectory_track(tr, origin, cls)
        except ValueError as exc:
            raise RequestError(str(exc), field=f"{i}.timestamps") from None
        new[tr.uuid] = _Actor(tr.uuid, cls, size, None, source, track)
    service.actors = new


# ------------------------------------------------------------------------------------- encoding
def _torch_b64(arr: NDArray[Any]) -> bytes:
    """base64 of ``torch.save`` of ``arr`` as a tensor (neurad's ``raw`` format)."""
    import torch

    buf = io.BytesIO()
    torch.save(torch.from_numpy(np.ascontiguousarray(arr)), buf)
    return base64.b64encode(buf.getvalue())


def _jpeg(rgb: NDArray[np.uint8]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------- routes
def add_neurad_routes(app: Any, service: RenderService, run: Callable[[Callable[[], Any]], Awaitable[Any]], origin: LogOrigin) -> None:
    """Add the protocol's endpoints (module docstring) to the FastAPI ``app``; ``run`` executes a
    callable on the server's single render thread."""
    from fastapi import Body
    from fastapi.responses import Response

    ego_t = np.asarray(service.renderer.bundle.ego.t_us, dtype=np.int64)
    span = (int(ego_t[0]), int(ego_t[-1]))
    warned: list[bool] = [False]  # per app: warn once about a time far outside the log

    def log_time(timestamp: int) -> int:
        t = int(timestamp) - origin.t0_us
        if not warned[0] and not span[0] - _SPAN_SLACK_US <= t <= span[1] + _SPAN_SLACK_US:
            warned[0] = True
            log.warning("render at %d us (absolute) is %.0f s outside the log (%d..%d us absolute): no logged actor is drawn; "
                        "the protocol's time stamps are absolute (GET /start_time)", timestamp,
                        (span[0] - t if t < span[0] else t - span[1]) / 1e6, span[0] + origin.t0_us, span[1] + origin.t0_us)
        return t

    def log_pose(pose: list[list[float]]) -> NDArray[np.float64]:
        m = np.asarray(pose, dtype=np.float64).copy()
        m[:3, 3] -= origin.offset
        return m

    @app.get("/alive", tags=["neurad"])
    async def alive() -> bool:
        return True

    @app.get("/get_actors", tags=["neurad"])
    async def get_actors() -> list[dict[str, Any]]:
        return await run(lambda: actor_trajectories(service, origin))

    @app.post("/update_actors", tags=["neurad"])
    async def update_actors(trajectories: list[ActorTrajectory]) -> None:
        await run(lambda: replace_actors(service, origin, trajectories))

    @app.post("/set_actor_scale", tags=["neurad"])
    async def set_actor_scale(scale: float | None = Body(None)) -> None:
        log.info("set_actor_scale(%s) ignored: actors are drawn at their boxes' dims", scale)

    @app.get("/start_time", tags=["neurad"])
    async def start_time() -> int:
        return span[0] + origin.t0_us

    @app.post("/render_image", tags=["neurad"], response_model=None,
              responses={200: {"content": {"text/plain": {}, "image/png": {}, "image/jpeg": {}}}})
    async def render_image(req: RenderImageRequest) -> Response:
        cam = rig_camera(service.rig, req.camera_name)
        creq = CameraRequest(pose=opencv_to_opengl_c2w(log_pose(req.pose)).tolist(), t_us=log_time(req.timestamp), camera=cam, format="png")
        img, drawn = await run(lambda: (service.camera(creq)[1], len(service.world(creq.t_us).ids) - 1))
        headers = {"X-Loopdrive-Actors-Drawn": str(drawn)}
        if req.image_format == "raw":
            return Response(_torch_b64(img.rgb), media_type="text/plain", headers=headers)
        if req.image_format == "png":
            return Response(_png(img.rgb), media_type="image/png", headers=headers)
        return Response(_jpeg(img.rgb), media_type="image/jpeg", headers=headers)

    @app.post("/render_lidar", tags=["loopdrive extension"], response_model=None)
    async def render_lidar_extension(req: RenderLidarRequest) -> Any:
        """loopdrive extension (not in neurad-studio): a LiDAR scan of the server rig's LiDAR."""
        lreq = LidarRequest(pose=log_pose(req.pose).tolist(), t_us=log_time(req.timestamp), format="npz")
        scan, ids = await run(lambda: (service.lidar(lreq), service.world(lreq.t_us).ids))
        uuid = np.array([ids[i] if i > 0 else "" for i in scan.actor_id.tolist()], dtype=str)
        if req.format == "raw":
            return Response(_torch_b64(np.column_stack([scan.points, scan.intensity]).astype(np.float32)), media_type="text/plain")
        if req.format == "json":
            return {"points": scan.points.tolist(), "intensity": scan.intensity.tolist(), "ray_index": scan.ray_index.tolist(),
                    "actor_uuid": uuid.tolist()}
        return Response(_npz(points=scan.points, intensity=scan.intensity, ray_index=scan.ray_index, actor_uuid=uuid),
                        media_type="application/octet-stream")
