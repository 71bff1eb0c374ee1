"""Scene bundles: a trained neural scene on disk, loadable without nerfstudio and without pickle.

Layout (``format_version`` 1)::

    BUNDLE/
      bundle.json          format, format_version, scene_config (SceneConfig fields), weights file
                           name + sha256, actors (id, class, size [l, w, h] m, slot, static, latent
                           code), log name/path, camera name, training summary
      weights.safetensors  SceneModel tensors (the occupancy grid bit-packed as ``occupancy_packed``)
      tracks.json          the log's tracks (ego + actors, sim.log format)
      map.json             the log's lane map
      surface.npz          optional: the background's baked iso-surface (``sim.recon.surface``:
                           vertices, faces), recorded in bundle.json ``surface`` with its sha256
                           and settings; bundles without it bake the surface on first use
      nerfstudio/          from ``loopdrive recon``: nerfstudio's own output (checkpoint and
                           ``config.yml``) for ``ns-eval`` / ``ns-render``; the config's path and
                           sha256 are recorded in bundle.json ``nerfstudio_config``

:func:`load_bundle` reads JSON and safetensors only (no code is executed from the files), checks
the weights' sha256 against ``bundle.json`` and every tensor name and shape against the model the
config describes; anything missing, corrupt, tampered with or mismatched raises
:class:`sim.errors.BundleError` naming the file, the field and what was expected.

nerfstudio reads its ``config.yml`` with PyYAML's unsafe loader (a YAML-serialised TrainerConfig
with Python tags), so that file can run code. loopdrive never reads it; before anything hands it
to nerfstudio, :func:`nerfstudio_config` checks its sha256 against the one ``bundle.json``
records (``loopdrive ns-config BUNDLE`` prints the checked path for ``ns-eval --load-config``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from sim.errors import BundleError
from sim.fsutil import (
    atomic_path,
    atomic_write_text,
    check_input_file,
    make_temp_dir,
    replace_dir,
    sha256_file,
)
from sim.log import DriveLog, Track, dumps_json, track_to_json
from sim.log_validate import load_json
from sim.recon.occupancy import pack_occupancy, unpack_occupancy
from sim.recon.scene import ActorState, SceneModel
from sim.recon.surface import BAKE_VERSION, SurfaceConfig, SurfaceProxy, bake_surface, bake_vertex_lidar

__all__ = ["BUNDLE_FORMAT", "Bundle", "BundleActor", "load_bundle", "nerfstudio_config", "save_bundle", "write_surface"]

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "loopdrive-scene-bundle"
BUNDLE_VERSION = 1
WEIGHTS = "weights.safetensors"
SURFACE = "surface.npz"


@dataclass(frozen=True)
class BundleActor:
    """A reconstructed actor: its log id, class, box size (l, w, h) m, field slot and latent code."""

    id: str
    cls: str
    size: tuple[float, float, float]
    slot: int
    static: bool
    latent: tuple[float, ...]


@dataclass
class Bundle:
    """A loaded scene bundle: the model (eval mode, CPU), its actors, and the log's tracks and map."""

    root: Path
    scene: SceneModel
    actors: tuple[BundleActor, ...]
    ego: Track
    tracks: tuple[Track, ...]
    map: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    _surfaces: dict[SurfaceConfig, SurfaceProxy] = field(default_factory=dict, repr=False, compare=False)

    def surface(self, cfg: SurfaceConfig | None = None) -> SurfaceProxy:
        """The background's baked surface for ``cfg`` (default settings when None): the bundle's
        ``surface.npz`` when it was baked with these settings, else baked now (a few seconds; kept
        for this loaded bundle)."""
        cfg = cfg or SurfaceConfig()
        hit = self._surfaces.get(cfg)
        if hit is None:
            hit = _read_surface(self.root, cfg)
            if hit is None:
                hit = bake_surface(self.scene, cfg, origins=_track_origins(self.ego))
            elif hit.vertex_lidar is None:
                bake_vertex_lidar(self.scene, hit)
            self._surfaces[cfg] = hit
        return hit

    def actor_index(self, actor_id: str) -> int:
        for a in self.actors:
            if a.id == actor_id:
                return a.slot
        raise BundleError(f"expected one of the bundle's actor ids {[a.id for a in self.actors]}, got {actor_id!r}", file=self.root / "bundle.json", field="actors")

    def actors_at(self, t_us: int, *, remove: tuple[str, ...] = (), moves: dict[str, tuple[float, float, float, float]] | None = None) -> ActorState:
        """Actors at their logged poses at ``t_us`` (world frame), minus ``remove`` ids, with
        ``moves`` overriding poses (id -> x, y, z bottom, yaw)."""
        moves = moves or {}
        A = len(self.actors)
        pose = np.zeros((A, 4))
        valid = np.zeros(A, dtype=bool)
        by_id = {t.id: t for t in self.tracks}
        for a in self.actors:
            if a.id in remove:
                continue
            if a.id in moves:
                pose[a.slot], valid[a.slot] = moves[a.id], True
                continue
            p = by_id[a.id].pose_at(int(t_us)) if a.id in by_id else None
            if p is not None:
                pose[a.slot], valid[a.slot] = p, True
        return self.actor_state(pose, valid)

    def actor_state(self, pose: NDArray[np.floating], valid: NDArray[np.bool_], size: NDArray[np.floating] | None = None) -> ActorState:
        """ActorState of all bundle actors from poses (A, 4), validity (A,) and optional sizes (A, 3)."""
        A = len(self.actors)
        sz = np.array([a.size for a in self.actors], dtype=np.float32).reshape(A, 3) if size is None else size
        return ActorState(torch.arange(A), torch.as_tensor(pose, dtype=torch.float32)[None], torch.as_tensor(sz, dtype=torch.float32), torch.as_tensor(valid)[None])

    def render_camera(self, c2w: NDArray[np.floating], K: NDArray[np.floating], width: int, height: int, actors: ActorState,
                      surface: SurfaceProxy | None = None, appearance: tuple[int, int] | None = None) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
        """RGB (H, W, 3) uint8 and z-depth (H, W) float32 m (inf = sky) of a pinhole camera
        (``c2w`` 4x4 camera-to-world, OpenGL axes; ``K`` 3x3); the background from ``surface``
        (:meth:`surface`) when given, else volume-rendered. ``appearance``: (frame row, camera
        row) of the scene's appearance embeddings (None: canonical colour; see
        :mod:`sim.recon.split` for which rows a held-out frame uses)."""
        r = self.scene.render_camera(torch.as_tensor(c2w, dtype=torch.float32), torch.as_tensor(K, dtype=torch.float32), width, height, actors,
                                     surface=surface, appearance=appearance)
        rgb = (r["rgb"].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
        return rgb, r["depth"].numpy().astype(np.float32)

    def render_lidar(self, sensor_to_world: NDArray[np.floating], dirs_sensor: NDArray[np.floating], actors: ActorState,
                     surface: SurfaceProxy | None = None, origin_offset: NDArray[np.floating] | None = None) -> dict[str, NDArray[np.float32]]:
        """LiDAR along (N, 3) sensor-frame unit directions: ``range`` m, ``intensity``, ``drop_prob``,
        ``acc_actor`` (opacity from actor fields), each (N,); the background from ``surface`` when
        given. ``origin_offset`` (N, 3): world offsets (m) of each ray's origin from the sensor's
        (a spinning LiDAR's firing-time positions; :mod:`sim.recon.lidar_motion`)."""
        off = None if origin_offset is None else torch.as_tensor(np.asarray(origin_offset, dtype=np.float32))
        r = self.scene.render_lidar(torch.as_tensor(sensor_to_world, dtype=torch.float32), torch.as_tensor(dirs_sensor, dtype=torch.float32), actors,
                                    surface=surface, origin_offset=off)
        return {k: v.numpy().astype(np.float32) for k, v in r.items()}


def _verified_file(path: Path, sha256: str, what: str) -> Path:
    """``path`` if it is a regular file (capped size) whose sha256 is the one ``bundle.json``
    records for ``what``; else :class:`BundleError` naming the file."""
    from sim.recon.bundle_schema import MAX_WEIGHTS_BYTES

    check_input_file(path, error=BundleError, max_bytes=MAX_WEIGHTS_BYTES, what=f"a regular file (recorded in bundle.json {what})")
    digest = sha256_file(path)
    if digest != sha256:
        raise BundleError(f"expected sha256 {sha256} (recorded in bundle.json {what}), got {digest}: the file was modified or corrupted", file=path)
    return path


def _state_for_disk(scene: SceneModel) -> dict[str, torch.Tensor]:
    sd = {k: v.detach().cpu().contiguous() for k, v in scene.state_dict().items() if k != "occupancy"}
    sd["occupancy_packed"] = torch.from_numpy(pack_occupancy(scene.occupancy))
    return sd


def save_bundle(
    out: str | os.PathLike[str],
    scene: SceneModel,
    dl: DriveLog,
    actor_ids: list[str],
    *,
    camera: str,
    info: dict[str, Any] | None = None,
    overwrite: bool = False,
    surface: SurfaceConfig | None = SurfaceConfig(),
    nerfstudio: tuple[str, str] | None = None,
) -> Path:
    """Write a bundle atomically (temp folder + rename). ``actor_ids`` are in slot order; with
    ``surface`` (default settings unless None) the background's iso-surface is baked into
    ``surface.npz`` for the fast ``surface`` render mode. ``nerfstudio``: (path inside the bundle,
    sha256) of the nerfstudio ``config.yml`` that will be placed there, recorded as
    ``nerfstudio_config`` for :func:`nerfstudio_config`."""
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise BundleError("expected an empty or new folder (pass overwrite to replace it)", file=out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out.parent, prefix=f".{out.name}.tmp-")
    try:
        save_file(_state_for_disk(scene), str(tmp / WEIGHTS))
        by_id = dl.track_by_id
        latent = scene.actor_latent.detach().cpu().numpy()
        actors = [
            {"id": a, "class": by_id[a].cls, "size": [float(x) for x in by_id[a].size], "slot": i, "static": bool(by_id[a].static),
             "latent": [round(float(x), 7) for x in latent[i]]}
            for i, a in enumerate(actor_ids)
        ]
        doc = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_VERSION,
            "scene_config": scene.cfg.to_json(),
            "weights": {"file": WEIGHTS, "sha256": sha256_file(tmp / WEIGHTS)},
            "actors": actors,
            "log": {"name": dl.name, "path": str(dl.root.resolve()), "camera": camera},
            "info": info or {},
        }
        if nerfstudio is not None:
            doc["nerfstudio_config"] = {"file": Path(nerfstudio[0]).as_posix(), "sha256": nerfstudio[1]}
        if surface is not None:
            doc["surface"] = _write_surface_file(tmp, bake_surface(scene, surface, origins=_track_origins(dl.ego)))
        (tmp / "bundle.json").write_text(dumps_json(doc))
        (tmp / "tracks.json").write_text(dumps_json({"ego": track_to_json(dl.ego), "tracks": [track_to_json(t) for t in dl.tracks]}))
        (tmp / "map.json").write_text(dumps_json(dl.map))
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_surface_file(folder: Path, proxy: SurfaceProxy) -> dict[str, Any]:
    """Write ``surface.npz`` (temp + rename) into ``folder``; returns its bundle.json record."""
    arrays = {"vertices": proxy.vertices, "faces": proxy.faces}
    if proxy.vertex_lidar is not None:
        arrays["lidar"] = proxy.vertex_lidar
    with atomic_path(folder / SURFACE, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return {"file": SURFACE, "sha256": sha256_file(folder / SURFACE), "config": dataclasses.asdict(proxy.cfg), "level": proxy.level,
            "bake_version": BAKE_VERSION,
            "calibration": {"median_depth_diff_m": _finite(proxy.calib_err_m), "median_rel_depth_diff": _finite(proxy.calib_rel_err)}}


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _track_origins(ego: Track, n: int = 8, height_m: float = 1.8) -> NDArray[np.float64]:
    """Calibration origins of the surface bake: ``n`` poses spread over the logged ego path,
    ``height_m`` above it (world frame, m)."""
    t = np.asarray(ego.t_us, dtype=np.int64)
    idx = np.linspace(0, len(t) - 1, min(n, len(t))).round().astype(int)
    out = []
    for k in idx:
        p = ego.pose_at(int(t[k]))
        if p is not None:
            out.append((float(p[0]), float(p[1]), float(p[2]) + height_m))
    return np.asarray(out, dtype=np.float64).reshape(-1, 3)


def write_surface(path: str | os.PathLike[str], cfg: SurfaceConfig | None = None) -> SurfaceProxy:
    """Bake the background surface of the bundle at ``path`` with ``cfg`` and store it in the
    bundle (``surface.npz`` and the ``surface`` record of ``bundle.json``, each replaced
    atomically). Raises :class:`BundleError` if the bundle does not load."""
    b = load_bundle(path)
    proxy = bake_surface(b.scene, cfg or SurfaceConfig(), origins=_track_origins(b.ego))
    rec = _write_surface_file(b.root, proxy)
    doc = _json(b.root / "bundle.json")
    doc["surface"] = rec
    atomic_write_text(b.root / "bundle.json", dumps_json(doc))
    return proxy


def _read_surface(root: Path, cfg: SurfaceConfig) -> SurfaceProxy | None:
    """The bundle's stored surface if it was baked with ``cfg``'s geometry settings (None when
    absent or baked differently; a recorded but corrupt file raises :class:`BundleError`)."""
    bj = root / "bundle.json"
    rec = _json(bj).get("surface")
    if rec is None:
        return None
    if not isinstance(rec, dict) or rec.get("file") != SURFACE or not isinstance(rec.get("sha256"), str) or not isinstance(rec.get("config"), dict):
        raise BundleError(f"expected {{'file': {SURFACE!r}, 'sha256': hex, 'config': {{...}}}}", file=bj, field="surface")
    stored = rec["config"]
    if stored.get("level") != cfg.level or stored.get("subdivide") != cfg.subdivide or not isinstance(rec.get("level"), int | float):
        log.info("the bundle's surface was baked with other settings (%s); baking %s", stored, cfg)
        return None
    if rec.get("bake_version", 1) != BAKE_VERSION:
        log.info("the bundle's surface was baked by version %s of the procedure; baking it again (version %d)", rec.get("bake_version", 1), BAKE_VERSION)
        return None
    fp = _verified_file(root / SURFACE, rec["sha256"], "surface")
    cal = rec.get("calibration") or {}
    if not isinstance(cal, dict) or not all(x is None or (isinstance(x, int | float) and not isinstance(x, bool)) for x in cal.values()):
        raise BundleError("expected an object of numbers or nulls", file=bj, field="surface.calibration")
    _check_npz_members(fp)
    level, err_m, rel_err = float(rec["level"]), float(cal.get("median_depth_diff_m") or np.nan), float(cal.get("median_rel_depth_diff") or np.nan)
    key = (rec["sha256"], cfg, level, err_m, rel_err)
    proxy = _SURFACES.get(key)
    if proxy is not None:
        return proxy
    try:
        with np.load(fp, allow_pickle=False) as z:
            v, f = np.asarray(z["vertices"], np.float32), np.asarray(z["faces"], np.int32)
            vl = np.asarray(z["lidar"], np.float32) if "lidar" in z.files else None
    except (OSError, ValueError, KeyError, EOFError, MemoryError) as exc:
        raise BundleError(f"expected an npz with vertices and faces ({type(exc).__name__}: {str(exc)[:80]})", file=fp) from None
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3 or (len(f) and (f.min() < 0 or f.max() >= len(v))):
        raise BundleError("expected vertices (V, 3) and faces (F, 3) indexing them", file=fp)
    if vl is not None and vl.shape != (len(v), 2):
        raise BundleError(f"expected lidar values ({len(v)}, 2), got {vl.shape}", file=fp, field="lidar")
    proxy = SurfaceProxy(v, f, cfg, level)
    proxy.vertex_lidar = vl
    proxy.calib_err_m, proxy.calib_rel_err = err_m, rel_err
    if vl is not None:  # complete as stored (no per-model baking left): share it
        _SURFACES.put(key, proxy)
    return proxy


def _check_npz_members(fp: Path) -> None:
    """Refuse an ``.npz`` whose members would expand past the file-size cap (a zip bomb) before
    numpy reads it."""
    import zipfile

    from sim.recon.bundle_schema import MAX_WEIGHTS_BYTES

    try:
        with zipfile.ZipFile(fp) as zf:
            total = sum(i.file_size for i in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BundleError(f"expected an npz (zip) file ({exc})", file=fp) from None
    if total > MAX_WEIGHTS_BYTES:
        raise BundleError(f"expected npz members of at most {MAX_WEIGHTS_BYTES} bytes in all, got {total}", file=fp)


class _SurfaceMemo:
    """Surfaces read from bundles in this process, by (sha256 of surface.npz, settings, level,
    calibration), least recently used first out: every episode of a batch run on one bundle opens
    the same file, and reading it and building its Embree scene takes about a second (781k
    triangles). The one process-wide memo of the renderers, deliberately: it is keyed by content
    and its entries are complete and never modified (Embree queries are thread-safe), so it saves
    time and changes no result; thread-safe."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[Any, ...], SurfaceProxy] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> SurfaceProxy | None:
        """The surface stored under ``key`` (now the most recently used), or None."""
        with self._lock:
            proxy = self._entries.get(key)
            if proxy is not None:
                self._entries.move_to_end(key)
            return proxy

    def put(self, key: tuple[Any, ...], proxy: SurfaceProxy) -> None:
        """Store a complete surface, dropping the least recently used beyond the size."""
        with self._lock:
            self._entries[key] = proxy
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


_SURFACES = _SurfaceMemo(4)


def _json(path: Path) -> Any:
    """A bundle's JSON file through the drive log's reader (regular file, size and nesting caps)."""
    return load_json(path, error=BundleError)


def nerfstudio_config(path: str | os.PathLike[str]) -> Path:
    """The bundle's nerfstudio ``config.yml``, once its sha256 matches ``bundle.json``
    ``nerfstudio_config`` -- call before handing it to nerfstudio (``ns-eval``, ``ns-render``,
    ``eval_setup``), which loads it with an unsafe YAML loader. The file itself is only hashed here,
    never parsed. :class:`BundleError` for a swapped or missing file, or a bundle that records no
    sha256 (written before configs were pinned: re-run ``loopdrive recon``)."""
    root = Path(path)
    bj = root / "bundle.json"
    doc = _json(bj)
    rec = doc.get("nerfstudio_config") if isinstance(doc, dict) else None
    if rec is None:
        raise BundleError("records no sha256 of nerfstudio's config.yml (bundle written before configs were pinned), so it is not "
                          "handed to nerfstudio's unsafe YAML loader: re-run `loopdrive recon` to write a verifiable bundle", file=bj, field="nerfstudio_config")
    rel = rec.get("file") if isinstance(rec, dict) else None
    sha = rec.get("sha256") if isinstance(rec, dict) else None
    parts = Path(rel).parts if isinstance(rel, str) else ()
    if not parts or Path(rel).is_absolute() or ".." in parts or not isinstance(sha, str) or len(sha) != 64:
        raise BundleError("expected {'file': a path inside the bundle, 'sha256': 64 hex digits}", file=bj, field="nerfstudio_config")
    cfg = root / rel
    if cfg.is_symlink() or not cfg.is_file():
        raise BundleError("expected a regular file (recorded in bundle.json nerfstudio_config)", file=cfg)
    return _verified_file(cfg, sha, "nerfstudio_config")


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Load a bundle (CPU, eval mode). Raises :class:`BundleError` on any problem."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from sim.log_schema import parse_map, parse_tracks
    from sim.recon import bundle_schema

    root = Path(path)
    if not root.is_dir():
        raise BundleError("expected a scene-bundle folder", file=root)
    bj = root / "bundle.json"
    doc = _json(bj)
    doc = bundle_schema.check_doc(doc, bj, fmt=BUNDLE_FORMAT, version=BUNDLE_VERSION, weights=WEIGHTS)
    cfg = bundle_schema.parse_scene_config(doc.get("scene_config"), bj)
    raw_actors = bundle_schema.parse_actors(doc.get("actors"), cfg, bj)
    ego, tracks = parse_tracks(root, BundleError)
    lane_map = parse_map(root, BundleError)
    wp = _verified_file(root / WEIGHTS, doc["weights"]["sha256"], "weights")
    try:
        sd = load_file(str(wp))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"expected a readable safetensors file ({exc})", file=wp) from None
    packed = sd.pop("occupancy_packed", None)
    if packed is None:
        raise BundleError("expected a tensor 'occupancy_packed'", file=wp, field="occupancy_packed")
    n = int(np.prod(cfg.occ_shape))
    if packed.dtype != torch.uint8 or packed.numel() != (n + 7) // 8:
        raise BundleError(f"expected {(n + 7) // 8} uint8 bytes for occupancy {cfg.occ_shape}", file=wp, field="occupancy_packed")
    bundle_schema.check_large_tensors(sd, cfg, wp)
    scene = SceneModel(cfg, unpack_occupancy(packed.numpy(), cfg.occ_shape))
    want = {k: v for k, v in scene.state_dict().items() if k != "occupancy"}
    for k, v in want.items():
        if k not in sd:
            raise BundleError(f"expected tensor {k!r} of shape {tuple(v.shape)}", file=wp, field=k)
        if tuple(sd[k].shape) != tuple(v.shape) or sd[k].dtype != v.dtype:
            raise BundleError(f"expected shape {tuple(v.shape)} {v.dtype}, got {tuple(sd[k].shape)} {sd[k].dtype}", file=wp, field=k)
    extra = sorted(set(sd) - set(want))
    if extra:
        raise BundleError(f"expected no tensor {extra[0]!r} (not part of this model)", file=wp, field=extra[0])
    sd["occupancy"] = scene.occupancy
    scene.load_state_dict(sd, strict=True)
    scene.eval()
    actors = [BundleActor(a["id"], a["class"], a["size"], a["slot"], a["static"], a["latent"]) for a in raw_actors]
    return Bundle(root, scene, tuple(actors), ego, tracks, lane_map, doc.get("info", {}))
