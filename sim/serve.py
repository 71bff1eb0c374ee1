"""HTTP render server over a scene bundle (``loopdrive serve BUNDLE``), so stacks in other processes
or languages can close the loop (in the spirit of neurad-studio's closed-loop server).

Two APIs, chosen with ``api`` (``loopdrive serve --api both|loopdrive|neurad``, default ``both``):
loopdrive's own (below) and the neurad-studio closed-loop protocol that NeuroNCAP's client speaks
(``/alive`` -> ``true``, ``/get_actors``, ``/update_actors``, ``/render_image``, ``/start_time``,
``/set_actor_scale`` and the ``/render_lidar`` extension; :mod:`sim.serve_neurad`). Their paths do
not collide except ``/alive``, which answers the neurad ``true`` whenever the neurad API is on;
loopdrive's server description is always at ``GET /info`` (and at ``/alive`` with ``--api loopdrive``).
Both APIs act on one actor set.

loopdrive's endpoints (JSON bodies, validated by pydantic; a bad request is answered 422 with the reason):

``GET /info`` (and ``GET /alive`` with ``api="loopdrive"``)
    ``{"alive": true, "bundle": NAME, "api": API, "cameras": [...], "lidar": {...}}``.
``GET /actors``
    The actors: ``id``, ``class``, ``size`` [l, w, h] m, ``pose`` [x, y, z bottom, yaw] world frame
    (m, rad) or null while it follows its logged track, ``source`` (``bundle`` or ``library:KEY``).
``POST /actors``
    ``{"update": [{"id", "pose"}], "insert": [{"id", "class", "size", "pose", "asset"?}],
    "remove": ["id", ...], "reset": false}``: set poses (an actor with a set pose stays there),
    insert actors (rendered from the actor library; ``asset`` = ``source/id`` or the nearest of the
    class), remove actors; ``reset`` first restores the logged actors. Returns the actors.
``POST /render/camera``
    ``{"pose": 4x4 camera-to-world (OpenGL camera axes, world frame, m), "t_us": int,
    "camera": NAME, "format": "png" | "npz"}`` -> a PNG, or an ``.npz`` with ``rgb`` (H, W, 3)
    uint8, ``depth`` (H, W) float32 z-depth m (inf = sky), ``K``, ``c2w``.
``POST /render/lidar``
    ``{"pose": 4x4 sensor-to-world, "t_us": int, "format": "npz" | "json"}`` -> ``points`` (N, 3)
    float32 sensor frame, ``intensity``, ``ray_index``, ``actor_id`` (world slot; -1 static).

Actors without a set pose are drawn at their logged pose at the request's ``t_us`` (absent when
their track has no pose then), or along the trajectory a neurad ``/update_actors`` gave them. Renders and actor edits run one at a time on a single worker
thread (torch is not re-entrant; an OpenGL context is bound to its thread).

Security (:mod:`sim.serve_guard`): the server binds to 127.0.0.1; another address needs
``allow_remote`` and an access token, which every request then carries as
``Authorization: Bearer <token>`` (401 otherwise). Request bodies above 1 MiB are answered 413
before they are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from sim.errors import LoopdriveError
from sim.sensors import CameraSpec, LidarSpec, SensorRig
from sim.serve_guard import MAX_BODY_BYTES, check_bind, guard

__all__ = ["RenderService", "create_app", "serve"]

log = logging.getLogger(__name__)
T = TypeVar("T")


# ------------------------------------------------------------------------------------- requests
def _check_pose(m: list[list[float]]) -> list[list[float]]:
    a = np.asarray(m, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"expected a 4x4 matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("expected finite numbers (no NaN or inf)")
    if not np.allclose(a[3], [0, 0, 0, 1], atol=1e-6):
        raise ValueError("expected the last row [0, 0, 0, 1]")
    r = a[:3, :3]
    if not np.allclose(r.T @ r, np.eye(3), atol=1e-4) or np.linalg.det(r) < 0:
        raise ValueError("expected a rotation (orthonormal, determinant +1) in the upper-left 3x3")
    return m


Pose4 = Annotated[list[list[float]], AfterValidator(_check_pose)]
Vec4 = Annotated[tuple[float, float, float, float], Field(description="x, y, z bottom (m), yaw (rad), world frame")]
Size3 = tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]]


class _Req(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class CameraRequest(_Req):
    pose: Pose4 = Field(description="4x4 camera-to-world, OpenGL camera axes (x right, y up, z back)")
    t_us: int = Field(0, description="time stamp (logged actors without a set pose are drawn at this time)")
    camera: str = Field("front", description="a camera of the server's rig")
    format: Literal["png", "npz"] = "png"


class LidarRequest(_Req):
    pose: Pose4 = Field(description="4x4 sensor-to-world (x forward, y left, z up)")
    t_us: int = 0
    format: Literal["npz", "json"] = "npz"


class ActorUpdate(_Req):
    id: str
    pose: Vec4


class ActorInsert(_Req):
    id: str = Field(min_length=1)
    cls: str = Field("car", alias="class")
    size: Size3 = (4.5, 1.9, 1.5)
    pose: Vec4
    asset: str | None = Field(None, description="library actor 'source/id' (default: nearest of the class)")


class ActorsRequest(_Req):
    reset: bool = False
    update: list[ActorUpdate] = Field(default_factory=list)
    insert: list[ActorInsert] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)


# ------------------------------------------------------------------------------------- service
@dataclass
class _Actor:
    id: str
    cls: str
    size: tuple[float, float, float]
    pose: tuple[float, float, float, float] | None  # None: follow the logged track (or ``track``)
    source: str
    track: Any = None  # a sim.log.Track set by the neurad API's /update_actors, followed instead of the log


class RequestError(LoopdriveError):
    """A request that is well-formed but does not fit the server's state (-> HTTP 422)."""


@dataclass
class RenderService:
    """The server's state and operations, independent of HTTP (also usable in-process).

    Args:
        renderer: a :class:`~sim.render.neural.NeuralRenderer`.
        rig: cameras (names, intrinsics, resolution) and LiDAR pattern offered by the server.
    """

    renderer: Any
    rig: SensorRig
    actors: dict[str, _Actor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reset_actors()

    def reset_actors(self) -> None:
        b = self.renderer.bundle
        self.actors = {a.id: _Actor(a.id, a.cls, tuple(a.size), None, "bundle") for a in b.actors}  # type: ignore[misc]

    def actor_list(self) -> list[dict[str, Any]]:
        return [{"id": a.id, "class": a.cls, "size": list(a.size), "pose": list(a.pose) if a.pose is not None else None, "source": a.source}
                for a in self.actors.values()]

    def edit(self, req: ActorsRequest) -> list[dict[str, Any]]:
        """Apply an :class:`ActorsRequest` all or nothing."""
        new = {k: _Actor(**vars(v)) for k, v in self.actors.items()}
        if req.reset:
            b = self.renderer.bundle
            new = {a.id: _Actor(a.id, a.cls, tuple(a.size), None, "bundle") for a in b.actors}  # type: ignore[misc]
        for i, rid in enumerate(req.remove):
            if rid not in new:
                raise RequestError(f"expected a known actor id, got {rid!r}", field=f"remove[{i}]")
            del new[rid]
        for i, u in enumerate(req.update):
            if u.id not in new:
                raise RequestError(f"expected a known actor id, got {u.id!r}", field=f"update[{i}].id")
            new[u.id].pose = tuple(float(x) for x in u.pose)  # type: ignore[assignment]
        for i, ins in enumerate(req.insert):
            if ins.id in new:
                raise RequestError(f"actor id {ins.id!r} exists already", field=f"insert[{i}].id")
            size = tuple(float(x) for x in ins.size)
            lib = self.renderer.library
            if lib is None:
                raise RequestError("inserting needs an actor library (serve --library DIR)", field=f"insert[{i}]")
            try:
                la = lib.get(ins.asset) if ins.asset else lib.match(ins.cls, size, self.renderer.size_tolerance)
                from sim.actor_library import check_size

                check_size(la, size, self.renderer.size_tolerance, where=f"insert[{i}].size")
            except LoopdriveError as exc:
                raise RequestError(exc.message, field=exc.field or f"insert[{i}]") from None
            if ins.asset:
                self.renderer.assets[ins.id] = ins.asset
            new[ins.id] = _Actor(ins.id, ins.cls, size, tuple(float(x) for x in ins.pose), f"library:{la.key}")  # type: ignore[arg-type]
        self.actors = new
        return self.actor_list()

    def world(self, t_us: int) -> Any:
        """The actors at ``t_us`` as a renderer world (set poses, else logged poses)."""
        tracks = {t.id: t for t in self.renderer.bundle.tracks}
        rows: list[tuple[str, str, tuple[float, ...], tuple[float, ...]]] = []
        for a in self.actors.values():
            pose = a.pose
            if pose is None:
                tr = a.track if a.track is not None else tracks.get(a.id)
                p = tr.pose_at(int(t_us)) if tr is not None else None
                if p is None:
                    continue
                pose = tuple(float(v) for v in p)  # type: ignore[assignment]
            assert pose is not None
            rows.append((a.id, a.cls, pose, a.size))
        n = len(rows) + 1

        def col(f: Callable[[tuple[str, str, tuple[float, ...], tuple[float, ...]]], float]) -> NDArray[np.float64]:
            return np.array([0.0] + [f(r) for r in rows], dtype=np.float64)

        from sim.render.base import ArrayWorld

        return ArrayWorld(int(t_us), ("ego", *(r[0] for r in rows)), ("car", *(r[1] for r in rows)),
                      col(lambda r: r[2][0]), col(lambda r: r[2][1]), col(lambda r: r[2][2]), col(lambda r: r[2][3]),
                      col(lambda r: r[3][0]), col(lambda r: r[3][1]), col(lambda r: r[3][2]), np.ones(n, dtype=bool))

    def camera(self, req: CameraRequest) -> tuple[CameraSpec, Any]:
        names = [c.name for c in self.rig.cameras]
        if req.camera not in names:
            raise RequestError(f"expected a camera in {names}, got {req.camera!r}", field="camera")
        cam = self.rig.camera(req.camera)
        try:
            img = self.renderer.render_camera(self.world(req.t_us), cam, c2w=np.asarray(req.pose, dtype=np.float64))
        except LoopdriveError as exc:
            raise RequestError(exc.message, field=exc.field) from None
        return cam, img

    def lidar(self, req: LidarRequest) -> Any:
        spec: LidarSpec | None = self.rig.lidar
        if spec is None:
            raise RequestError("this server's rig has no LiDAR", field="pose")
        try:
            return self.renderer.render_lidar(self.world(req.t_us), spec, s2w=np.asarray(req.pose, dtype=np.float64))
        except LoopdriveError as exc:
            raise RequestError(exc.message, field=exc.field) from None


def _npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _png(rgb: NDArray[np.uint8]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def create_app(bundle: str | os.PathLike[str] | Any, *, library: Any = None, rig: SensorRig | None = None, threads: int | None = None,
               max_body_bytes: int = MAX_BODY_BYTES, token: str | None = None, api: str = "both") -> Any:
    """The ASGI application serving ``bundle`` (folder or loaded bundle) with the neural backend:
    the FastAPI app behind :func:`sim.serve_guard.guard` (body-size limit, optional bearer token).
    The FastAPI object itself is ``app.fastapi``.

    Args:
        library: actor library for inserted actors (folder; default ``$LOOPDRIVE_ACTORS``/``./actors``).
        rig: cameras and LiDAR offered (default: the bundle's log rig when recorded, else the default rig).
        max_body_bytes: larger request bodies are answered 413 before they are read.
        token: when given, every request needs ``Authorization: Bearer <token>`` (else 401).
        api: ``both`` (default), ``loopdrive`` (loopdrive's endpoints only) or ``neurad`` (the
            neurad/NeuroNCAP protocol only, :mod:`sim.serve_neurad`).
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    from sim.render.neural import NeuralRenderer
    from sim.serve_neurad import add_neurad_routes, check_api, log_origin

    check_api(api)
    renderer = NeuralRenderer(bundle=bundle, library=library, threads=threads)
    meta, meta_file = _log_meta(renderer)
    origin = log_origin(meta, file=meta_file) if api != "loopdrive" else None
    if rig is None:
        rig = _bundle_rig(meta)
    service = RenderService(renderer, rig)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loopdrive-render")

    async def run(fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        pool.shutdown(wait=True)

    app = FastAPI(title="loopdrive render server", version="1", lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": [{"loc": ["body", *(exc.field or "").split(".")], "msg": exc.message, "type": "value_error"}]})

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # the reasons without the offending input (which may hold NaN, not representable in JSON)
        detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": detail})

    @app.get("/info")
    async def info() -> dict[str, Any]:
        li = service.rig.lidar
        return {"alive": True, "bundle": renderer.bundle.root.resolve().name, "api": api,
                "cameras": [{"name": c.name, "width": c.width, "height": c.height, "K": c.K.tolist()} for c in service.rig.cameras],
                "lidar": None if li is None else {"beams": li.beams, "azimuth_steps": li.azimuth_steps, "max_range_m": li.max_range_m}}

    if origin is not None:
        add_neurad_routes(app, service, run, origin)
    if api != "neurad":
        _add_loopdrive_routes(app, service, run, info if api == "loopdrive" else None)

    guarded = guard(app, max_body_bytes=max_body_bytes, token=token)
    guarded.fastapi = app  # type: ignore[attr-defined]
    return guarded


def _add_loopdrive_routes(app: Any, service: RenderService, run: Callable[[Callable[[], Any]], Awaitable[Any]], alive: Any) -> None:
    """loopdrive's own endpoints (``alive``: the ``/info`` handler, also served at ``/alive``)."""
    from fastapi.responses import Response

    if alive is not None:
        app.get("/alive")(alive)

    @app.get("/actors")
    async def get_actors() -> list[dict[str, Any]]:
        return await run(service.actor_list)

    @app.post("/actors")
    async def post_actors(req: ActorsRequest) -> list[dict[str, Any]]:
        return await run(lambda: service.edit(req))

    @app.post("/render/camera", response_model=None)
    async def render_camera(req: CameraRequest) -> Response:
        _, img = await run(lambda: service.camera(req))
        if req.format == "png":
            return Response(_png(img.rgb), media_type="image/png")
        return Response(_npz(rgb=img.rgb, depth=img.depth, K=img.K, c2w=img.c2w), media_type="application/octet-stream")

    @app.post("/render/lidar", response_model=None)
    async def render_lidar(req: LidarRequest) -> Any:
        scan = await run(lambda: service.lidar(req))
        if req.format == "json":
            return {"points": scan.points.tolist(), "intensity": scan.intensity.tolist(), "ray_index": scan.ray_index.tolist(),
                    "actor_id": scan.actor_id.tolist(), "sensor_to_world": scan.sensor_to_world.tolist()}
        return Response(_npz(points=scan.points, intensity=scan.intensity, ray_index=scan.ray_index, actor_id=scan.actor_id,
                             sensor_to_world=scan.sensor_to_world), media_type="application/octet-stream")


#: Cap on a log's ``meta.json`` read by the server (bytes).
_MAX_META_BYTES = 16 * 1024 * 1024


def _log_meta(renderer: Any) -> tuple[dict[str, Any] | None, Path | None]:
    """The ``meta.json`` of the bundle's log (and its path) when the log is still where the bundle
    says it was trained; (None, None) otherwise."""
    import json

    from sim.errors import BundleError
    from sim.fsutil import read_input_bytes

    try:
        doc = json.loads((renderer.bundle.root / "bundle.json").read_text())
        log_path = doc.get("log", {}).get("path")
        meta_file = Path(log_path) / "meta.json" if log_path else None
        if meta_file is None or not meta_file.is_file():
            log.warning("the bundle's log (%s) is not readable: no rig, global offset or time origin from its meta.json", log_path)
            return None, None
        meta = json.loads(read_input_bytes(meta_file, error=BundleError, max_bytes=_MAX_META_BYTES, what="a log meta.json"))
        return (meta, meta_file) if isinstance(meta, dict) else (None, None)
    except (OSError, ValueError, AttributeError, BundleError) as exc:
        log.warning("no meta.json from the bundle's log: %s", exc)
    return None, None


def _bundle_rig(meta: dict[str, Any] | None) -> SensorRig:
    """The rig of the bundle's log when its meta.json was readable, else the default rig."""
    from sim.sensors import default_rig

    if meta is not None:
        try:
            return SensorRig.from_meta(meta["rig"])
        except (ValueError, KeyError, TypeError) as exc:
            log.debug("no rig from the bundle's log: %s", exc)
    return default_rig()


def serve(bundle: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 8000, library: Any = None,
          max_requests: int | None = None, threads: int | None = None, on_ready: Callable[[], None] | None = None,
          allow_remote: bool = False, token: str | None = None, max_body_bytes: int = MAX_BODY_BYTES, api: str = "both") -> None:
    """Run the server with uvicorn until interrupted (or after ``max_requests`` requests);
    ``on_ready`` is called once the bundle is loaded, before listening. A non-loopback ``host``
    needs ``allow_remote=True`` and a ``token`` (:class:`~sim.serve_guard.ServeConfigError`
    otherwise, raised before the bundle is loaded); ``api`` as for :func:`create_app`."""
    import uvicorn

    from sim.serve_neurad import check_api

    check_bind(host, allow_remote=allow_remote, token=token)
    check_api(api)
    app = create_app(bundle, library=library, threads=threads, max_body_bytes=max_body_bytes, token=token, api=api)
    if on_ready is not None:
        on_ready()
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", limit_max_requests=max_requests)
    uvicorn.Server(config).run()
