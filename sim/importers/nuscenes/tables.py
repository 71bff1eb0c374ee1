"""The nuScenes tables the importer reads, checked before anything is converted.

Each table ``DATAROOT/<version>/<table>.json`` is read through the drive log's size- and
nesting-capped JSON reader (at most :data:`MAX_TABLE_BYTES`) and every record field the importer
uses is checked against :data:`FIELDS`; a problem raises :class:`~sim.errors.LogFormatError`
naming the table file, the record and the field. :class:`Tables` then answers the importer's
questions (the scene, its samples in order, its ``sample_data`` per channel) and turns a dangling
token into the same kind of one-line error.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from sim.errors import LogFormatError
from sim.geometry import se3_matrix
from sim.log_validate import FieldChecker, load_json

__all__ = ["FIELDS", "MAX_TABLE_BYTES", "TABLES", "Tables", "load_tables", "pose_matrix"]

#: cap on one JSON table (bytes): the full data set's largest tables are a few hundred MB.
MAX_TABLE_BYTES = 2 * 1024**3

#: fields each table's records must have, with their kind: ``str`` (non-empty), ``link`` (a token
#: or "" for none), ``int`` (int64 >= 0, e.g. timestamps in microseconds, image sizes in pixels),
#: ``bool``, ``vec3`` (3 finite numbers, m), ``quat`` (w, x, y, z, non-zero), ``size`` (3 positive
#: numbers, m), ``list``. A table the importer reads and the fields it reads of it, nothing else.
FIELDS: dict[str, dict[str, str]] = {
    "scene": {"token": "str", "name": "str", "first_sample_token": "str", "log_token": "str"},
    "log": {"token": "str", "location": "str", "date_captured": "str"},
    "sample": {"token": "str", "timestamp": "int", "next": "link"},
    "sample_data": {"token": "str", "sample_token": "str", "ego_pose_token": "str", "calibrated_sensor_token": "str",
                    "timestamp": "int", "filename": "str", "is_key_frame": "bool", "width": "int", "height": "int"},
    "ego_pose": {"token": "str", "rotation": "quat", "translation": "vec3"},
    "calibrated_sensor": {"token": "str", "sensor_token": "str", "rotation": "quat", "translation": "vec3", "camera_intrinsic": "list"},
    "sensor": {"token": "str", "channel": "str", "modality": "str"},
    "sample_annotation": {"token": "str", "sample_token": "str", "instance_token": "str", "translation": "vec3", "size": "size",
                          "rotation": "quat"},
    "instance": {"token": "str", "category_token": "str"},
    "category": {"token": "str", "name": "str"},
}
#: the tables read, in reading order
TABLES = tuple(FIELDS)


def _check_record(v: FieldChecker, r: Any, i: int, fields: dict[str, str]) -> None:
    pth = f"[{i}]"
    v.obj(r, pth)
    for name, kind in fields.items():
        f = f"{pth}.{name}"
        x = v.key(r, name, pth)
        if kind == "str":
            v.string(x, f)
        elif kind == "link":
            if not isinstance(x, str):
                v.fail(f, "a token string (empty for none)", x)
        elif kind == "int":
            v.integer(x, f, 0)
        elif kind == "bool":
            v.boolean(x, f)
        elif kind == "list":
            v.lst(x, f)
        elif kind in ("vec3", "size"):
            v.numbers(x, f, 3, positive=kind == "size")
        elif kind == "quat" and not np.linalg.norm(v.numbers(x, f, 4)) > 1e-9:
            v.fail(f, "a non-zero quaternion [w, x, y, z]", x)


def pose_matrix(rotation_wxyz: list[float], translation: list[float]) -> NDArray[np.float64]:
    """4x4 of a nuScenes rotation (quaternion w, x, y, z; normalised here) and translation (m)."""
    w, x, y, z = rotation_wxyz
    return se3_matrix(Rotation.from_quat([x, y, z, w]).as_matrix(), translation)


@dataclass
class Tables:
    """The checked tables of one data root, by token."""

    root: Path
    version: str
    t: dict[str, dict[str, dict[str, Any]]]
    #: calibrated_sensor token -> (channel, modality)
    channel_of: dict[str, tuple[str, str]] = field(default_factory=dict)

    def file(self, table: str) -> Path:
        return self.root / self.version / f"{table}.json"

    def get(self, table: str, token: str, where: str) -> dict[str, Any]:
        """The ``table`` record ``token``; LogFormatError naming ``where`` (the referring field) otherwise."""
        try:
            return self.t[table][token]
        except KeyError:
            raise LogFormatError(f"expected a {table} record with token {token!r}", file=self.file(table), field=where) from None

    def scene(self, name: str | None) -> dict[str, Any]:
        """The scene called ``name`` (the first by name when None)."""
        scenes = sorted(self.t["scene"].values(), key=lambda s: s["name"])
        if name is not None:
            scenes = [s for s in scenes if s["name"] == name]
            if not scenes:
                names = sorted(s["name"] for s in self.t["scene"].values())
                shown = f"{names[:20]}{' ...' if len(names) > 20 else ''}"
                raise LogFormatError(f"expected a scene named {name!r} (have: {shown})", file=self.file("scene"))
        if not scenes:
            raise LogFormatError("expected at least one scene", file=self.file("scene"))
        return scenes[0]

    def samples(self, scene: dict[str, Any]) -> list[dict[str, Any]]:
        """The scene's key-frame samples from ``first_sample_token`` along ``next``, in strictly
        increasing time (a cycle or a step back in time is refused)."""
        out: list[dict[str, Any]] = []
        tok = scene["first_sample_token"]
        while tok:
            s = self.get("sample", tok, f"{out[-1]['token']}.next" if out else f"{scene['token']}.first_sample_token")
            if out and s["timestamp"] <= out[-1]["timestamp"]:
                raise LogFormatError("expected samples linked by next in strictly increasing time (no cycle)",
                                     file=self.file("sample"), field=f"{out[-1]['token']}.next")
            out.append(s)
            tok = s["next"]
        return out

    def scene_data(self, samples: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """Every ``sample_data`` of the scene (key frames and sweeps: those whose ``sample_token``
        is one of ``samples``) per channel, in time order; two captures of one channel at the same
        time stamp are refused."""
        in_scene = {s["token"] for s in samples}
        by_ch: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for sd in self.t["sample_data"].values():
            if sd["sample_token"] in in_scene:
                ch, _ = self.channel(sd["calibrated_sensor_token"], f"{sd['token']}.calibrated_sensor_token")
                by_ch[ch].append(sd)
        for ch, sds in by_ch.items():
            sds.sort(key=lambda sd: sd["timestamp"])
            t = np.array([sd["timestamp"] for sd in sds], dtype=np.int64)
            if np.any(np.diff(t) == 0):
                k = int(np.flatnonzero(np.diff(t) == 0)[0])
                raise LogFormatError(f"expected one {ch} capture per time stamp, {int(t[k])} repeats", file=self.file("sample_data"),
                                     field=f"{sds[k + 1]['token']}.timestamp")
        return dict(by_ch)

    def channel(self, cs_token: str, where: str) -> tuple[str, str]:
        """(channel, modality) of a calibrated_sensor token."""
        if cs_token not in self.channel_of:
            cs = self.get("calibrated_sensor", cs_token, where)
            sen = self.get("sensor", cs["sensor_token"], f"{cs_token}.sensor_token")
            self.channel_of[cs_token] = (sen["channel"], sen["modality"])
        return self.channel_of[cs_token]

    def ego(self, sd: dict[str, Any]) -> NDArray[np.float64]:
        """4x4 global-from-ego at ``sd``'s capture (its own ego_pose)."""
        ep = self.get("ego_pose", sd["ego_pose_token"], f"{sd['token']}.ego_pose_token")
        return pose_matrix(ep["rotation"], ep["translation"])

    def calib(self, sd: dict[str, Any]) -> dict[str, Any]:
        return self.get("calibrated_sensor", sd["calibrated_sensor_token"], f"{sd['token']}.calibrated_sensor_token")

    def intrinsics(self, cs: dict[str, Any]) -> NDArray[np.float64]:
        """3x3 pinhole K of a camera's calibrated_sensor (no skew; positive focal lengths)."""
        kv = FieldChecker(self.file("calibrated_sensor"))
        where = f"{cs['token']}.camera_intrinsic"
        k_raw = kv.lst(cs["camera_intrinsic"], where, 3)
        if len(k_raw) != 3:
            kv.fail(where, "a 3x3 matrix", f"{len(k_raw)} rows")
        K = np.asarray([kv.numbers(r, f"{where}[{i}]", 3) for i, r in enumerate(k_raw)])
        if not (K[0, 0] > 0 and K[1, 1] > 0) or abs(K[0, 1]) > 1e-6 * K[0, 0] or K[1, 0] != 0 or list(K[2]) != [0.0, 0.0, 1.0]:
            kv.fail(where, "a pinhole matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0", k_raw)
        return K


def load_tables(root: Path, version: str) -> Tables:
    """Read and check :data:`TABLES` of ``root/version`` (LogFormatError naming the table, the
    record and the field; duplicate tokens refused)."""
    tdir = root / version
    if not tdir.is_dir():
        raise LogFormatError(f"expected a nuScenes table folder {version}/", file=root)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for t in TABLES:
        p = tdir / f"{t}.json"
        v = FieldChecker(p)
        rows = v.lst(load_json(p, max_bytes=MAX_TABLE_BYTES), "")
        for i, r in enumerate(rows):
            _check_record(v, r, i, FIELDS[t])
        out[t] = {r["token"]: r for r in rows}
        if len(out[t]) != len(rows):
            v.fail("token", "unique tokens", f"{len(rows) - len(out[t])} duplicate(s)")
    return Tables(root, version, out)
