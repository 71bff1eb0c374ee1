"""The strict schema of a scene bundle's ``bundle.json``, checked before anything is allocated.

``bundle.json`` is not covered by a checksum (it holds the others'), so every field is checked for
type and range with the drive log's :class:`~sim.log_validate.FieldChecker` (a bool is not an
integer, numbers are finite) and the scene config's sizes are bounded: the large tensors the
config implies (hash table, actor grids and latents) must have exactly the shapes of the tensors
in the sha256-checked weights file *before* the model is built, so a tampered config cannot make
the loader allocate more than the weights it loads. Errors are :class:`~sim.errors.BundleError`
naming ``bundle.json`` (or the weights file) and the field.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import torch

from sim.errors import BundleError
from sim.log import ACTOR_CLASSES
from sim.log_validate import MAX_SIZE, FieldChecker
from sim.recon.scene import SceneConfig

__all__ = ["MAX_WEIGHTS_BYTES", "check_doc", "check_large_tensors", "parse_actors", "parse_scene_config"]

#: cap on the weights file (bytes) and any other file a bundle records a sha256 for.
MAX_WEIGHTS_BYTES = 8 * 1024**3
#: upper bounds of the scene config's integers (per field; others: :data:`_INT_CAP`).
_INT_CAPS = {"hash_log2_size": 26, "n_actors": 100_000, "occ_shape": 1 << 16, "hash_levels": 64, "upsample": 16, "cnn_layers": 64,
             "n_frames": 1_000_000, "n_cameras": 1024}
_INT_CAP = 4096
_HEX64 = re.compile(r"[0-9a-f]{64}")


def check_doc(doc: Any, bj: Path, *, fmt: str, version: int, weights: str) -> dict[str, Any]:
    """The top level of ``bundle.json``: format name, integer ``format_version`` (``true`` is
    refused), the weights record (file name, 64 lowercase hex digits) and an ``info`` object."""
    v = FieldChecker(bj, BundleError)
    doc = v.obj(doc, "")
    if doc.get("format") != fmt:
        v.fail("format", repr(fmt), doc.get("format"))
    ver = v.key(doc, "format_version", "")
    if isinstance(ver, bool) or not isinstance(ver, int) or ver != version:
        v.fail("format_version", f"{version}", ver)
    w = v.obj(v.key(doc, "weights", ""), "weights")
    if w.get("file") != weights:
        v.fail("weights.file", repr(weights), w.get("file"))
    sha = w.get("sha256")
    if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
        v.fail("weights.sha256", "64 lowercase hex digits", sha)
    info = v.obj(doc.get("info", {}), "info")
    if "eval_every" in info:
        v.integer(info["eval_every"], "info.eval_every", 1, 1_000_000)
    if "camera" in info:
        v.string(info["camera"], "info.camera")
    if "cameras" in info:
        v.lst(info["cameras"], "info.cameras")
        for i, c in enumerate(info["cameras"]):
            v.string(c, f"info.cameras[{i}]")
    return doc


def parse_scene_config(raw: Any, bj: Path) -> SceneConfig:
    """``scene_config``: known settings only, each of its default's type (integers are ints,
    flags bools, lengths finite numbers of magnitude at most 1e7), integers within bounds."""
    v = FieldChecker(bj, BundleError)
    raw = v.obj(raw, "scene_config")
    fields = {f.name: f.default for f in dataclasses.fields(SceneConfig)}
    for k, x in raw.items():
        pth = f"scene_config.{k}"
        if k not in fields:
            v.fail(pth, f"a known scene setting (one of {sorted(fields)})", k)
        default = fields[k]
        items = x if isinstance(default, tuple) else [x]
        if isinstance(default, tuple) and (not isinstance(x, list) or len(x) != len(default)):
            v.fail(pth, f"a list of {len(default)}", x)
        proto = default[0] if isinstance(default, tuple) else default
        for i, item in enumerate(items):
            ip = f"{pth}[{i}]" if isinstance(default, tuple) else pth
            if isinstance(proto, bool):
                v.boolean(item, ip)
            elif isinstance(proto, int):
                v.integer(item, ip, 0, _INT_CAPS.get(k, _INT_CAP))
            else:
                v.number(item, ip)
    cfg = SceneConfig.from_json(raw)
    if any(s < 1 for s in cfg.occ_shape) or cfg.occ_voxel_m <= 0:
        v.fail("scene_config.occ_shape", "cells >= 1 and occ_voxel_m > 0", list(cfg.occ_shape))
    if not all(a < b for a, b in zip(cfg.aabb_min, cfg.aabb_max, strict=True)):
        v.fail("scene_config.aabb_max", "greater than aabb_min on every axis", list(cfg.aabb_max))
    return cfg


def _implied_shapes(cfg: SceneConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of the model's large tensors as :class:`~sim.recon.scene.SceneModel` builds them."""
    a = max(cfg.n_actors, 1)
    gz, gy, gx = cfg.actor_grid
    out = {
        "bg_grid.table": (cfg.hash_levels * 2**cfg.hash_log2_size, cfg.hash_features),
        "actor_grid": (1, cfg.actor_channels, a * (gz + 2), gy, gx),
        "actor_latent": (a, cfg.actor_latent),
    }
    if cfg.n_frames > 0 or cfg.n_cameras > 0:  # appearance embeddings (sim.recon.appearance)
        out["appearance.frame_affine"] = (cfg.n_frames, 3, 4)
    return out


def check_large_tensors(sd: dict[str, torch.Tensor], cfg: SceneConfig, wp: Path) -> None:
    """Before the model is built: the large tensors the config implies are in the weights with
    exactly those shapes (so building the model allocates no more than was loaded)."""
    for k, shape in _implied_shapes(cfg).items():
        got = tuple(sd[k].shape) if k in sd else None
        if got != shape:
            raise BundleError(f"expected tensor {k!r} of shape {shape} (from bundle.json scene_config), got {got}", file=wp, field=k)


def parse_actors(raw: Any, cfg: SceneConfig, bj: Path) -> list[dict[str, Any]]:
    """``actors``: ``n_actors`` records in slot order, each id, class, size [l, w, h] m, slot,
    optional static flag and a latent of ``actor_latent`` numbers."""
    v = FieldChecker(bj, BundleError)
    v.lst(raw, "actors")
    if len(raw) != cfg.n_actors:
        v.fail("actors", f"a list of {cfg.n_actors} actors (scene_config.n_actors)", f"{len(raw)} item(s)")
    out = []
    for i, a in enumerate(raw):
        pth = f"actors[{i}]"
        v.obj(a, pth)
        cls = v.key(a, "class", pth)
        if not isinstance(cls, str) or cls not in ACTOR_CLASSES:
            v.fail(f"{pth}.class", f"one of {list(ACTOR_CLASSES)}", cls)
        out.append({
            "id": v.string(v.key(a, "id", pth), f"{pth}.id"),
            "class": cls,
            "size": tuple(v.numbers(v.key(a, "size", pth), f"{pth}.size", 3, positive=True, limit=MAX_SIZE)),
            "slot": v.integer(v.key(a, "slot", pth), f"{pth}.slot", i, i),
            "static": v.boolean(a.get("static", False), f"{pth}.static"),
            "latent": tuple(v.numbers(v.key(a, "latent", pth), f"{pth}.latent", cfg.actor_latent)),
        })
    return out
