"""The actor library: reconstructed actors harvested from scene bundles, for insertion elsewhere.

A library is a folder::

    LIBRARY/
      index.json                     format, format_version, sources (name -> scene_config, bundle
                                     path, sha256 of its weights) and actors (key, source, id,
                                     class, size [l, w, h] m, slot, static)
      sources/<name>.safetensors     per source bundle: the actor feature grids and latent codes of
                                     all its actors, and the networks that decode them (shared actor
                                     MLP, RGB head, CNN decoder, LiDAR head)

An actor is addressed as ``<source>/<actor id>`` (``town-s1/12``: actor ``12`` of the bundle
harvested under the name ``town-s1``, by default the bundle's folder name).

Why the decoders travel with the fields: a reconstructed actor's features only mean something to
the networks it was trained with, so an inserted library actor is rendered by a small model of its
source scene (its fields, its decoders, no background, no sky) and merged by depth into the target
render (:mod:`sim.render.neural`). An actor of the target bundle itself is rendered inside the
target scene instead (joint volume rendering).

Size mismatch: the field lives in normalised box coordinates, so it stretches to any box. A target
box whose length, width or height differs from the source's by more than ``size_tolerance``
(relative, default :data:`SIZE_TOLERANCE` = 0.25, i.e. within x0.75 .. x1.25 per dimension, measured
as ``|target / source - 1|``) is refused with a :class:`~sim.errors.BundleError`; within it the
field is rescaled. Loading reads JSON and safetensors only (no code from the files).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import BundleError
from sim.fsutil import atomic_write_bytes, sha256_file

__all__ = [
    "DEFAULT_LIBRARY",
    "SIZE_TOLERANCE",
    "ActorLibrary",
    "LibraryActor",
    "check_size",
    "open_library",
]

log = logging.getLogger(__name__)

LIBRARY_FORMAT = "loopdrive-actor-library"
LIBRARY_VERSION = 1
#: relative size tolerance per dimension for rescaling a library actor to a target box
SIZE_TOLERANCE = 0.25
#: the library folder used when none is given (``$LOOPDRIVE_ACTORS`` overrides it)
DEFAULT_LIBRARY = Path("actors")
#: tensor-name prefixes of a SceneModel harvested into a library source
_HARVEST = ("actor_grid", "actor_latent", "actor_mlp.", "rgb_head.", "decoder.", "lidar_head.")


@dataclass(frozen=True)
class LibraryActor:
    """One reconstructed actor: ``key`` = ``source/id``, class, box size (l, w, h) m, field slot in
    its source, and whether it was parked in its log."""

    key: str
    source: str
    id: str
    cls: str
    size: tuple[float, float, float]
    slot: int
    static: bool


def check_size(actor: LibraryActor, size: Sequence[float], tolerance: float = SIZE_TOLERANCE, *, where: str = "size") -> None:
    """Raise :class:`BundleError` when ``size`` (l, w, h) m differs from the actor's by more than
    ``tolerance`` (relative) in any dimension."""
    src = np.asarray(actor.size, dtype=np.float64)
    tgt = np.asarray(size, dtype=np.float64)
    ratio = tgt / np.maximum(src, 1e-6)
    bad = np.abs(ratio - 1.0) > tolerance + 1e-9
    if bad.any():
        dims = ", ".join(n for n, b in zip(("length", "width", "height"), bad, strict=True) if b)
        raise BundleError(
            f"library actor {actor.key!r} is {tuple(round(float(s), 2) for s in src)} m; the box "
            f"{tuple(round(float(s), 2) for s in tgt)} m differs in {dims} by more than {tolerance:.0%} "
            f"(rescaling is allowed within x{1 - tolerance:.2f}..x{1 + tolerance:.2f})",
            field=where,
        )


class ActorLibrary:
    """A folder of reconstructed actors (see the module docstring). Cheap to open; the source
    models are built on first use and cached."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._sources: dict[str, dict[str, Any]] = {}
        self._actors: dict[str, LibraryActor] = {}
        self._models: dict[str, Any] = {}
        idx = self.root / "index.json"
        if idx.is_file():
            self._read_index(idx)

    # ------------------------------------------------------------------------------- reading
    def _read_index(self, idx: Path) -> None:
        try:
            doc = json.loads(idx.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"expected valid JSON ({exc})", file=idx) from None
        if not isinstance(doc, dict) or doc.get("format") != LIBRARY_FORMAT:
            raise BundleError(f"expected format {LIBRARY_FORMAT!r}", file=idx, field="format")
        if doc.get("format_version") != LIBRARY_VERSION:
            raise BundleError(f"expected format_version {LIBRARY_VERSION}, got {doc.get('format_version')!r}", file=idx, field="format_version")
        srcs = doc.get("sources")
        acts = doc.get("actors")
        if not isinstance(srcs, dict) or not isinstance(acts, list):
            raise BundleError("expected 'sources' (object) and 'actors' (list)", file=idx)
        self._sources = srcs
        for i, a in enumerate(acts):
            try:
                la = LibraryActor(str(a["key"]), str(a["source"]), str(a["id"]), str(a["class"]),
                                  tuple(float(x) for x in a["size"]), int(a["slot"]), bool(a.get("static", False)))  # type: ignore[arg-type]
            except (KeyError, TypeError, ValueError) as exc:
                raise BundleError(f"expected key, source, id, class, size, slot ({exc})", file=idx, field=f"actors[{i}]") from None
            if la.source not in srcs or len(la.size) != 3:
                raise BundleError(f"expected a known source and a size [l, w, h], got {la.source!r}", file=idx, field=f"actors[{i}]")
            self._actors[la.key] = la

    @property
    def actors(self) -> tuple[LibraryActor, ...]:
        """All actors, sorted by key."""
        return tuple(self._actors[k] for k in sorted(self._actors))

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(sorted(self._sources))

    def get(self, key: str) -> LibraryActor:
        """The actor ``source/id``; an unknown key raises :class:`BundleError` listing some known ones."""
        a = self._actors.get(key)
        if a is None:
            known = ", ".join(sorted(self._actors)[:12]) or "(the library is empty)"
            raise BundleError(f"expected a library actor 'source/id', got {key!r}; known: {known}", file=self.root / "index.json", field="actors")
        return a

    def match(self, cls: str, size: Sequence[float], tolerance: float = SIZE_TOLERANCE, *, exclude_source: str | None = None) -> LibraryActor:
        """The actor of class ``cls`` whose size is nearest to ``size`` (log-ratio distance; ties by
        key) and within ``tolerance``; :class:`BundleError` when there is none."""
        cands = [a for a in self.actors if a.cls == cls and a.source != exclude_source]
        tgt = np.log(np.maximum(np.asarray(size, dtype=np.float64), 1e-6))
        best, best_d = None, np.inf
        for a in cands:
            d = float(np.max(np.abs(tgt - np.log(np.asarray(a.size)))))
            if d < best_d - 1e-12:
                best, best_d = a, d
        if best is None:
            raise BundleError(f"expected a library actor of class {cls!r}; the library at {self.root} has classes "
                              f"{sorted({a.cls for a in self.actors}) or '(none)'}", field="cls")
        check_size(best, size, tolerance)
        return best

    def source_model(self, source: str) -> Any:
        """A :class:`~sim.recon.scene.SceneModel` holding only ``source``'s actor fields and decoders
        (no background: an empty occupancy grid; no sky: zero sky features), eval mode, cached."""
        m = self._models.get(source)
        if m is not None:
            return m
        import torch
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from sim.recon.scene import SceneConfig, SceneModel

        info = self._sources.get(source)
        if info is None:
            raise BundleError(f"expected a library source in {self.sources}, got {source!r}", file=self.root / "index.json", field="sources")
        path = self.root / "sources" / f"{source}.safetensors"
        if not path.is_file():
            raise BundleError("expected this file to exist", file=path)
        digest = sha256_file(path)
        if digest != info.get("sha256"):
            raise BundleError(f"expected sha256 {info.get('sha256')} (recorded in index.json), got {digest}", file=path)
        try:
            sd = load_file(str(path))
            cfg = SceneConfig.from_json(info["scene_config"])
        except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"expected a readable library source ({exc})", file=path) from None
        far = cfg.far_m
        # no background to march: one candidate interval, an empty occupancy grid, a 1-level hash grid
        cfg = dataclasses.replace(cfg, occ_shape=(1, 1, 1), hash_levels=1, hash_log2_size=2, step_min_m=far, step_max_m=far,
                                  occupied_candidates=1, samples_bg=1)
        model = SceneModel(cfg)
        own = model.state_dict()
        for k, v in sd.items():
            if k not in own or tuple(own[k].shape) != tuple(v.shape):
                raise BundleError(f"expected tensor {k!r} to fit the source's config", file=path, field=k)
        with torch.no_grad():
            model.load_state_dict(sd, strict=False)
            for p in model.sky_mlp.parameters():
                p.zero_()
        model.eval()
        self._models[source] = model
        return model

    # ------------------------------------------------------------------------------- writing
    def add_bundle(self, bundle: str | os.PathLike[str] | Any, name: str | None = None, *, overwrite: bool = False) -> list[LibraryActor]:
        """Harvest every actor of a scene bundle (folder or loaded :class:`~sim.recon.bundle.Bundle`)
        under ``name`` (default: the bundle folder's name). Writes the source file and the index
        atomically; an existing source of that name needs ``overwrite``."""
        from safetensors.torch import save

        from sim.recon.bundle import Bundle, load_bundle

        b: Bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        name = name or b.root.resolve().name
        if not name or "/" in name or name.startswith("."):
            raise BundleError(f"expected a source name without '/' that does not start with '.', got {name!r}", field="name")
        if name in self._sources and not overwrite:
            raise BundleError(f"the library already has a source {name!r} (pass overwrite to replace it)", file=self.root / "index.json", field="sources")
        sd = {k: v.detach().cpu().contiguous() for k, v in b.scene.state_dict().items() if k.startswith(_HARVEST)}
        payload = save(sd)
        path = self.root / "sources" / f"{name}.safetensors"
        atomic_write_bytes(path, payload, parents=True)
        self._sources[name] = {"scene_config": b.scene.cfg.to_json(), "bundle": str(b.root.resolve()),
                               "sha256": hashlib.sha256(payload).hexdigest()}
        self._models.pop(name, None)
        self._actors = {k: a for k, a in self._actors.items() if a.source != name}
        added = []
        for a in b.actors:
            la = LibraryActor(f"{name}/{a.id}", name, a.id, a.cls, tuple(float(x) for x in a.size), a.slot, a.static)  # type: ignore[arg-type]
            self._actors[la.key] = la
            added.append(la)
        self._write_index()
        log.info("harvested %d actors of %s into %s", len(added), b.root, self.root)
        return added

    def _write_index(self) -> None:
        doc = {
            "format": LIBRARY_FORMAT,
            "format_version": LIBRARY_VERSION,
            "sources": self._sources,
            "actors": [{"key": a.key, "source": a.source, "id": a.id, "class": a.cls, "size": list(a.size), "slot": a.slot, "static": a.static}
                       for a in self.actors],
        }
        atomic_write_bytes(self.root / "index.json", (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode(), parents=True)


def open_library(root: str | os.PathLike[str] | None = None) -> ActorLibrary:
    """The library at ``root`` (default ``$LOOPDRIVE_ACTORS`` or ``./actors``); a folder that does
    not exist yet is an empty library."""
    if root is None:
        root = os.environ.get("LOOPDRIVE_ACTORS", str(DEFAULT_LIBRARY))
    p = Path(root)
    if p.exists() and not p.is_dir():
        raise BundleError("expected an actor-library folder", file=p)
    return ActorLibrary(p)
