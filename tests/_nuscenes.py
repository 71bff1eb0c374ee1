"""nuScenes inputs for the importer's tests, written by the exporter (never by hand).

:func:`ns_export` synthesises a tiny town with the nuScenes rig and exports it with
``export_nuscenes`` once per test session (per xdist worker), so every root the importer's tests
read is a data root the official devkit loads; :func:`write_mini_nuscenes` copies it for a test that
changes it. Helpers address key-frame files and records by what they are, not by name.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

#: steps of 50 ms of the shared log: 21 LiDAR sweeps at 20 Hz (key frames at sweeps 0, 10, 20 -> 3
#: samples), six cameras at 12 Hz, 64x36 images
FRAMES = 22
SCALE = 0.04
AZIMUTH = 256
VERSION = "v1.0-mini"


def ns_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(native drive log, exported nuScenes root) of the shared tiny nuScenes-rig town; read-only."""
    base = tmp_path_factory.getbasetemp() / "nuscenes-shared"
    log_dir, root = base / "native", base / "root"
    if (root / VERSION / "scene.json").is_file():
        return log_dir, root
    from sim.importers.nuscenes_export import export_nuscenes
    from sim.synth import make_scene, write_synth_log
    from sim.synth.rigs import nuscenes_rig, nuscenes_schedule

    scene = make_scene("tiny", 0, frames=FRAMES, dt_s=0.05)
    rig = nuscenes_rig(SCALE, azimuth_steps=AZIMUTH)
    write_synth_log(scene, out=log_dir, rig=rig, schedule=nuscenes_schedule(int(scene.t_us[-1]), rig), rig_name="nuscenes", supersample=1,
                    overwrite=True)
    export_nuscenes(log_dir, root, image_format="png", overwrite=True)
    return log_dir, root


def write_mini_nuscenes(dest: Path, tmp_path_factory: pytest.TempPathFactory | None = None) -> Path:
    """A private copy of the shared exported root at ``dest`` (a test may corrupt it)."""
    if tmp_path_factory is None:
        raise ValueError("write_mini_nuscenes needs the session's tmp_path_factory")
    _, root = ns_export(tmp_path_factory)
    shutil.copytree(root, dest)
    return dest


def table(root: Path, name: str) -> list[dict[str, Any]]:
    return json.loads((root / VERSION / f"{name}.json").read_text())


def write_table(root: Path, name: str, rows: list[dict[str, Any]]) -> None:
    (root / VERSION / f"{name}.json").write_text(json.dumps(rows))


def key_file(root: Path, channel: str, k: int) -> str:
    """The file (relative to ``root``) of ``channel``'s key frame in the ``k``-th sample (time order)."""
    samples = sorted(table(root, "sample"), key=lambda s: s["timestamp"])
    cal = {c["token"]: c["sensor_token"] for c in table(root, "calibrated_sensor")}
    ch = {s["token"]: s["channel"] for s in table(root, "sensor")}
    for sd in table(root, "sample_data"):
        if sd["is_key_frame"] and sd["sample_token"] == samples[k]["token"] and ch[cal[sd["calibrated_sensor_token"]]] == channel:
            return str(sd["filename"])
    raise KeyError((channel, k))


def on_key_file(channel: str, k: int, action: Callable[[str], Callable[[Path], None]]) -> Callable[[Path], None]:
    """A root corruption applying ``action(relative file name)`` to ``channel``'s ``k``-th key frame file."""

    def go(root: Path) -> None:
        action(key_file(root, channel, k))(root)

    return go


def copy_field(name: str, src: list[Any], dst: list[Any]) -> Callable[[Path], None]:
    """A root corruption setting ``dst`` of table ``name`` to the value at ``src`` (e.g. a token)."""

    def go(root: Path) -> None:
        rows: Any = table(root, name)
        val = rows
        for k in src:
            val = val[k]
        node = rows
        for k in dst[:-1]:
            node = node[k]
        node[dst[-1]] = val
        write_table(root, name, rows)

    return go


def drop_annotation(root: Path, ann_token: str) -> None:
    """Remove one annotation and mend its instance's chain (``prev`` / ``next``, counts, first /
    last): the devkit still loads the root, and the instance has a gap where it was."""
    anns = table(root, "sample_annotation")
    by_tok = {a["token"]: a for a in anns}
    a = by_tok[ann_token]
    if a["prev"]:
        by_tok[a["prev"]]["next"] = a["next"]
    if a["next"]:
        by_tok[a["next"]]["prev"] = a["prev"]
    insts = table(root, "instance")
    for inst in insts:
        if inst["token"] == a["instance_token"]:
            inst["nbr_annotations"] -= 1
            if inst["first_annotation_token"] == ann_token:
                inst["first_annotation_token"] = a["next"]
            if inst["last_annotation_token"] == ann_token:
                inst["last_annotation_token"] = a["prev"]
    write_table(root, "sample_annotation", [x for x in anns if x["token"] != ann_token])
    write_table(root, "instance", insts)
