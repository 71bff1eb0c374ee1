"""Corrupt drive logs through ``loopdrive validate-log``, ``recon`` and ``info`` (in-process).

Every row of :data:`CORRUPTIONS` copies the session's tiny synthetic log, breaks one thing and runs
the three commands: each must exit 2 with exactly one line on stderr naming the broken file, no
traceback, and leave nothing new next to the log or under ``--out`` (``recon`` validates the log in
full before it makes a folder or imports nerfstudio, so these cases never train). Rows marked
``deep`` are found only by decoding payloads (``validate-log``, ``recon``); ``info`` reads headers
only and is not run on them. Add a row to extend the suite.

A few scene-bundle corruptions go through :func:`sim.recon.bundle.load_bundle`, the loader behind
``loopdrive serve`` and ``eval-recon``.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import BundleError, LogFormatError
from tests._nuscenes import copy_field, on_key_file

RUNNER = CliRunner()
IMG = "images/front/000001.png"
DEPTH = "depth/front/000001.png"
NPY = "lidar/000001.npy"


class Corruption(NamedTuple):
    id: str
    apply: Callable[[Path], None]
    names: str  # a path fragment the one-line error must contain
    deep: bool = False  # found only by decoding payloads (not by ``info``)


# --------------------------------------------------------------------------------- corruptors
def edit(fname: str, path: list[Any], value: Any) -> Callable[[Path], None]:
    """Set ``path`` inside ``fname`` to ``value`` (NaN/inf written as JSON's NaN/Infinity)."""

    def go(root: Path) -> None:
        doc = json.loads((root / fname).read_text())
        node = doc
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
        (root / fname).write_text(json.dumps(doc))

    return go


def drop(fname: str, path: list[Any]) -> Callable[[Path], None]:
    def go(root: Path) -> None:
        doc = json.loads((root / fname).read_text())
        node = doc
        for k in path[:-1]:
            node = node[k]
        del node[path[-1]]
        (root / fname).write_text(json.dumps(doc))

    return go


def write(rel: str, data: bytes | str) -> Callable[[Path], None]:
    def go(root: Path) -> None:
        p = root / rel
        p.unlink()
        p.write_bytes(data.encode() if isinstance(data, str) else data)

    return go


def replace_with(rel: str, kind: str) -> Callable[[Path], None]:
    """Replace a file by a ``fifo``, a ``dir``, a link to ``/dev/zero``, or delete it (``missing``)."""

    def go(root: Path) -> None:
        p = root / rel
        p.unlink()
        if kind == "fifo":
            os.mkfifo(p)
        elif kind == "dir":
            p.mkdir()
        elif kind == "devzero":
            p.symlink_to("/dev/zero")

    return go


def truncate(rel: str, keep: float) -> Callable[[Path], None]:
    def go(root: Path) -> None:
        p = root / rel
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * keep)])

    return go


def sparse(rel: str, size: int) -> Callable[[Path], None]:
    def go(root: Path) -> None:
        with open(root / rel, "r+b") as fh:
            fh.truncate(size)

    return go


def npy(rel: str, make: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def go(root: Path) -> None:
        a = np.load(root / rel)
        np.save(root / rel, make(a))

    return go


def append(rel: str, data: bytes) -> Callable[[Path], None]:
    def go(root: Path) -> None:
        with open(root / rel, "ab") as fh:
            fh.write(data)

    return go


def image(rel: str, make: Callable[[Image.Image], Image.Image], fmt: str = "PNG") -> Callable[[Path], None]:
    def go(root: Path) -> None:
        with Image.open(root / rel) as im:
            new = make(im.copy())
        new.save(root / rel, format=fmt)

    return go


def corrupt_idat(rel: str) -> Callable[[Path], None]:
    """Garble the compressed pixel data of a PNG and fix the chunk's CRC: the header and the
    ``IEND`` end marker stay valid, only decoding finds it."""

    def go(root: Path) -> None:
        data = bytearray((root / rel).read_bytes())
        i = data.index(b"IDAT")
        n = int.from_bytes(data[i - 4 : i], "big")
        body = bytearray(data[i + 4 : i + 4 + n])
        body[2 : n // 2] = bytes(len(body[2 : n // 2]))  # zero the middle of the zlib stream
        data[i + 4 : i + 4 + n] = body
        data[i + 4 + n : i + 8 + n] = zlib.crc32(b"IDAT" + bytes(body)).to_bytes(4, "big")
        (root / rel).write_bytes(bytes(data))

    return go


class _Payload:
    """Unpickling this creates ``PWNED`` next to the log: it must never happen."""

    marker: Path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def pickled_npy(rel: str) -> Callable[[Path], None]:
    def go(root: Path) -> None:
        p = _Payload()
        p.marker = root.parent / "PWNED"
        np.save(root / rel, np.array([p], dtype=object), allow_pickle=True)

    return go


def fifo_in_folder(root: Path) -> None:
    os.mkfifo(root / "images" / "front" / "stray")


def nested(depth: int) -> str:
    return '{"format_version": 1, "x": ' + "[" * depth + "]" * depth + "}"


CORRUPTIONS: list[Corruption] = [
    # ---- meta.json
    Corruption("meta_format_version_true", edit("meta.json", ["format_version"], True), "format_version"),
    Corruption("meta_format_version_float", edit("meta.json", ["format_version"], 1.0), "format_version"),
    Corruption("meta_format_version_9", edit("meta.json", ["format_version"], 9), "format_version"),
    Corruption("meta_missing", replace_with("meta.json", "missing"), "meta.json"),
    Corruption("meta_not_json", write("meta.json", "{not json"), "meta.json"),
    Corruption("meta_invalid_utf8", write("meta.json", b'{"source": "\xff\xfe"}'), "meta.json"),
    Corruption("meta_top_level_list", write("meta.json", "[]"), "meta.json"),
    Corruption("meta_is_folder", replace_with("meta.json", "dir"), "meta.json"),
    Corruption("meta_is_fifo", replace_with("meta.json", "fifo"), "meta.json"),
    Corruption("meta_links_dev_zero", replace_with("meta.json", "devzero"), "meta.json"),
    Corruption("meta_oversized", sparse("meta.json", 65 * 1024 * 1024), "meta.json"),
    Corruption("meta_deeply_nested", write("meta.json", nested(100_000)), "meta.json"),
    Corruption("meta_nested_past_cap", write("meta.json", nested(40)), "meta.json"),
    Corruption("meta_5000_digit_number", write("meta.json", '{"format_version": 1' + "0" * 5000 + "}"), "meta.json"),
    Corruption("meta_rate_negative", edit("meta.json", ["rates", "lidar_hz"], -1.0), "rates.lidar_hz"),
    Corruption("meta_rate_string", edit("meta.json", ["rates", "camera_hz"], "10"), "rates.camera_hz"),
    Corruption("meta_camera_width_bool", edit("meta.json", ["rig", "cameras", 0, "width"], True), "rig.cameras[0].width"),
    Corruption("meta_camera_width_huge", edit("meta.json", ["rig", "cameras", 0, "width"], 10**9), "rig.cameras[0].width"),
    Corruption("meta_lidar_beams_huge", edit("meta.json", ["rig", "lidar", "beams"], 10**7), "rig.lidar.beams"),
    Corruption("meta_ego_size_nan", edit("meta.json", ["ego", "size", 0], float("nan")), "ego.size[0]"),
    Corruption("meta_depth_format", edit("meta.json", ["depth_format"], "png8"), "depth_format"),
    Corruption("meta_synth_seed_string", edit("meta.json", ["synth", "seed"], "0"), "synth.seed"),
    # ---- transforms.json
    Corruption("frame_t_us_2_64", edit("transforms.json", ["frames", 0, "t_us"], 2**64), "frames[0].t_us"),
    Corruption("frame_t_us_float", edit("transforms.json", ["frames", 0, "t_us"], 1.5), "frames[0].t_us"),
    Corruption("frame_matrix_scaled", edit("transforms.json", ["frames", 2, "transform_matrix", 0, 0], 3.0), "frames[2].transform_matrix"),
    Corruption("frame_path_escapes", edit("transforms.json", ["frames", 0, "file_path"], "../../../etc/passwd"), "frames[0].file_path"),
    Corruption("frame_path_absolute", edit("transforms.json", ["frames", 0, "file_path"], "/etc/hostname"), "frames[0].file_path"),
    Corruption("frame_path_nul", edit("transforms.json", ["frames", 0, "file_path"], "images/\x00.png"), "frames[0].file_path"),
    Corruption("frame_width_not_rig", edit("transforms.json", ["frames", 3, "w"], 100), "frames[3].w"),
    Corruption("frame_no_camera", drop("transforms.json", ["frames", 0, "camera"]), "frames[0].camera"),
    Corruption("frames_empty", edit("transforms.json", ["frames"], []), "frames"),
    Corruption("image_is_fifo", replace_with(IMG, "fifo"), "frames[1].file_path"),
    Corruption("image_is_folder", replace_with(IMG, "dir"), "frames[1].file_path"),
    Corruption("depth_links_dev_zero", replace_with(DEPTH, "devzero"), "frames[1].depth_file_path"),
    # ---- lidar.json
    Corruption("sweeps_not_a_list", edit("lidar.json", ["sweeps"], {}), "sweeps"),
    Corruption("sweep_pose_infinite", edit("lidar.json", ["sweeps", 0, "sensor_to_world", 0, 3], float("inf")), "sweeps[0].sensor_to_world[0][3]"),
    Corruption("sweep_file_missing", replace_with(NPY, "missing"), "sweeps[1].file_path"),
    # ---- tracks.json
    Corruption("track_t_us_above_2_63", edit("tracks.json", ["ego", "t_us", -1], 2**63 + 5), "ego.t_us[19]"),
    Corruption("track_t_us_bool", edit("tracks.json", ["ego", "t_us", 0], False), "ego.t_us[0]"),
    Corruption("track_t_us_not_increasing", edit("tracks.json", ["ego", "t_us", 1], 0), "ego.t_us[1]"),
    Corruption("track_class_list", edit("tracks.json", ["tracks", 0, "class"], ["car"]), "tracks[0].class"),
    Corruption("track_static_string", edit("tracks.json", ["tracks", 0, "static"], "yes"), "tracks[0].static"),
    Corruption("track_x_huge", edit("tracks.json", ["ego", "x", 0], 1e300), "ego.x[0]"),
    Corruption("track_id_is_ego", edit("tracks.json", ["tracks", 0, "id"], "ego"), "tracks[0].id"),
    # ---- map.json
    Corruption("map_crosswalks_int", edit("map.json", ["crosswalks"], 5), "crosswalks"),
    Corruption("map_lanes_missing", drop("map.json", ["lanes"]), "lanes"),
    Corruption("map_lane_width_string", edit("map.json", ["lanes", 0, "width"], "3.5"), "lanes[0].width"),
    Corruption("map_centerline_one_point", edit("map.json", ["lanes", 0, "centerline"], [[1.0, 2.0], [1.0, 2.0]]), "lanes[0].centerline"),
    Corruption("map_successor_unknown", edit("map.json", ["lanes", 0, "successors"], ["nowhere"]), "lanes[0].successors[0]"),
    # ---- LiDAR payloads
    Corruption("npy_truncated", truncate(NPY, 0.5), NPY),
    Corruption("npy_zero_bytes", truncate(NPY, 0.0), NPY),
    Corruption("npy_padded", append(NPY, b"\0" * 64), NPY),
    Corruption("npy_garbage", write(NPY, os.urandom(4096)), NPY),
    Corruption("npy_int32", npy(NPY, lambda a: a.astype(np.int32)), NPY),
    Corruption("npy_float64", npy(NPY, lambda a: a.astype(np.float64)), NPY),
    Corruption("npy_shape_n3", npy(NPY, lambda a: a[:, :3].copy()), NPY),
    Corruption("npy_fortran_order", npy(NPY, lambda a: np.asfortranarray(a)), NPY),
    Corruption("npy_pickled_objects", pickled_npy(NPY), NPY),
    Corruption("npy_oversized", sparse(NPY, 600 * 1024 * 1024), NPY),
    Corruption("npy_nan", npy(NPY, lambda a: np.where(np.arange(len(a))[:, None] == 3, np.nan, a).astype(np.float32)), NPY, deep=True),
    # ---- camera images and depth maps
    Corruption("image_truncated", truncate(IMG, 0.6), IMG),
    Corruption("image_zero_bytes", truncate(IMG, 0.0), IMG),
    Corruption("image_wrong_size", image(IMG, lambda im: im.resize((100, 60))), IMG),
    Corruption("image_greyscale", image(IMG, lambda im: im.convert("L")), IMG),
    Corruption("image_is_jpeg", image(IMG, lambda im: im, fmt="JPEG"), IMG),
    Corruption("image_corrupt_pixels", corrupt_idat(IMG), IMG, deep=True),
    Corruption("depth_8bit", image(DEPTH, lambda im: Image.fromarray((np.asarray(im) // 256).astype(np.uint8))), DEPTH),
    Corruption("depth_wrong_size", image(DEPTH, lambda im: im.resize((160, 96))), DEPTH),
    Corruption("depth_truncated", truncate(DEPTH, 0.5), DEPTH),
    Corruption("depth_corrupt_pixels", corrupt_idat(DEPTH), DEPTH, deep=True),
    Corruption("fifo_in_log_folder", fifo_in_folder, "images/front/stray"),
]


# ------------------------------------------------------------------------------------ helpers
def _snapshot(root: Path) -> set[str]:
    return {str(Path(d, n).relative_to(root)) for d, dirs, files in os.walk(root) for n in (*dirs, *files)}


def _one_clean_line(args: list[str], names: str) -> str:
    res = RUNNER.invoke(app, args)
    err = res.stderr
    assert "Traceback" not in err + res.stdout, err
    assert res.exit_code == 2, f"{args[0]}: exit {res.exit_code}: {err}{res.stdout}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert names in lines[0], f"{args[0]}: the error does not name {names!r}: {lines[0]}"
    return lines[0]


@pytest.fixture()
def broken(tiny_log: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "log"
    shutil.copytree(tiny_log, dst)
    return dst


# -------------------------------------------------------------------------------------- tests
def test_table_is_large_and_ids_unique() -> None:
    assert len(CORRUPTIONS) >= 40
    assert len({c.id for c in CORRUPTIONS}) == len(CORRUPTIONS)


def test_the_uncorrupted_copy_passes(broken: Path) -> None:
    res = RUNNER.invoke(app, ["validate-log", str(broken)])
    assert res.exit_code == 0, res.stderr
    res = RUNNER.invoke(app, ["info", str(broken)])
    assert res.exit_code == 0, res.stderr


@pytest.mark.parametrize("case", CORRUPTIONS, ids=[c.id for c in CORRUPTIONS])
def test_corrupt_log_is_refused_in_one_line_and_leaves_nothing(broken: Path, case: Corruption) -> None:
    case.apply(broken)
    work = broken.parent
    before = _snapshot(work)
    commands = [
        ["validate-log", str(broken)],
        # recon validates the whole log before it makes a folder; the options keep it minimal
        # should a corruption ever slip through
        ["recon", str(broken), "--out", str(work / "bundles" / "b"), "--iterations", "1", "--max-minutes", "0.01"],
    ]
    if not case.deep:
        commands.append(["info", str(broken)])
    for args in commands:
        _one_clean_line(args, case.names)
        after = _snapshot(work)
        assert after == before, f"{args[0]} left behind {sorted(after - before)}, removed {sorted(before - after)}"
    assert not (work / "PWNED").exists()


def test_library_readers_refuse_what_validation_refuses(broken: Path) -> None:
    """``DriveLog.lidar`` / ``image`` / ``depth`` check the file they read (a log changed after it
    was read): a LogFormatError naming the file, never an EOFError or a numpy/PIL error."""
    from sim.log import read_log

    dl = read_log(broken)
    truncate(NPY, 0.0)(broken)
    with pytest.raises(LogFormatError, match=NPY):
        dl.lidar(1)
    truncate(IMG, 0.0)(broken)
    with pytest.raises(LogFormatError, match=IMG):
        dl.image(1)
    image(DEPTH, lambda im: Image.fromarray((np.asarray(im) // 256).astype(np.uint8)))(broken)
    with pytest.raises(LogFormatError, match=DEPTH):
        dl.depth(1)


def test_recon_refuses_a_valid_log_without_training_frames(broken: Path) -> None:
    """A log with only held-out frames (index % eval_every == 0) validates, but recon says why it
    cannot train on it before making any folder."""
    edit("transforms.json", ["frames"], json.loads((broken / "transforms.json").read_text())["frames"][:1])(broken)
    assert RUNNER.invoke(app, ["validate-log", str(broken)]).exit_code == 0
    before = _snapshot(broken.parent)
    _one_clean_line(["recon", str(broken), "--out", str(broken.parent / "bundles" / "b"), "--iterations", "1"], "training frame")
    assert _snapshot(broken.parent) == before


def test_failed_recon_after_validation_removes_its_staging_folder(broken: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the staging folder exists (here: an unknown override) leaves nothing."""
    from sim.recon.run import train_bundle

    work = broken.parent
    before = _snapshot(work)
    with pytest.raises(BundleError, match="overrides"):
        train_bundle(broken, work / "new" / "b", iterations=1, overrides={"no_such_setting": 1})
    assert _snapshot(work) == before

    import sim.recon.method as method

    real = method.make_trainer_config

    def config_then_crash(*a: Any, **k: Any) -> Any:
        cfg = real(*a, **k)

        def boom(*_a: Any, **_k: Any) -> Any:
            (Path(cfg.output_dir) / "partial").mkdir(parents=True)
            raise RuntimeError("trainer set-up failed")

        monkeypatch.setattr(type(cfg), "setup", boom)
        return cfg

    monkeypatch.setattr(method, "make_trainer_config", config_then_crash)
    with pytest.raises(RuntimeError, match="set-up failed"):
        train_bundle(broken, work / "new" / "b", iterations=1)
    assert _snapshot(work) == before


# ------------------------------------------------------------------------------------ bundles
@pytest.fixture(scope="module")
def small_bundle(tiny_log: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained bundle of the tiny log (a small hash grid, no baked surface): loading it is
    what ``loopdrive serve`` and ``eval-recon`` do first."""
    from sim.log import read_log
    from sim.recon.bundle import save_bundle
    from sim.recon.data import ReconData
    from sim.recon.scene import SceneConfig, SceneModel

    dl = read_log(tiny_log)
    data = ReconData.from_log(dl, SceneConfig(hash_log2_size=10, hash_levels=4), load_images=False, use_camera_depth=False)
    out = tmp_path_factory.mktemp("bundle") / "b"
    return save_bundle(out, SceneModel(data.cfg, data.occupancy), dl, data.actor_ids, camera="front",
                       info={"eval_every": 10}, surface=None)


def bundle_edit(path: list[Any], value: Any) -> Callable[[Path], None]:
    return edit("bundle.json", path, value)


BUNDLE_CORRUPTIONS: list[Corruption] = [
    Corruption("format_version_true", bundle_edit(["format_version"], True), "format_version"),
    Corruption("bundle_json_list", write("bundle.json", "[1, 2]"), "bundle.json"),
    Corruption("bundle_json_deeply_nested", write("bundle.json", nested(100_000)), "bundle.json"),
    Corruption("bundle_json_fifo", replace_with("bundle.json", "fifo"), "bundle.json"),
    Corruption("bundle_json_oversized", sparse("bundle.json", 65 * 1024 * 1024), "bundle.json"),
    Corruption("weights_sha_not_hex", bundle_edit(["weights", "sha256"], "zz" * 32), "weights.sha256"),
    Corruption("weights_fifo", replace_with("weights.safetensors", "fifo"), "weights.safetensors"),
    Corruption("weights_dev_zero", replace_with("weights.safetensors", "devzero"), "weights.safetensors"),
    Corruption("config_unknown_setting", bundle_edit(["scene_config", "rm_rf"], 1), "scene_config.rm_rf"),
    Corruption("config_int_as_string", bundle_edit(["scene_config", "upsample"], "2"), "scene_config.upsample"),
    Corruption("config_int_as_float", bundle_edit(["scene_config", "hidden"], 32.0), "scene_config.hidden"),
    Corruption("config_bool_as_int", bundle_edit(["scene_config", "n_actors"], True), "scene_config.n_actors"),
    Corruption("config_hash_table_2_40", bundle_edit(["scene_config", "hash_log2_size"], 40), "scene_config.hash_log2_size"),
    Corruption("config_hash_table_past_weights", bundle_edit(["scene_config", "hash_log2_size"], 24), "bg_grid.table"),
    Corruption("config_actor_grid_past_weights", bundle_edit(["scene_config", "actor_grid"], [256, 256, 256]), "actor_grid"),
    Corruption("config_nan", bundle_edit(["scene_config", "far_m"], float("nan")), "scene_config.far_m"),
    Corruption("actor_slot_string", bundle_edit(["actors", 0, "slot"], "0"), "actors[0].slot"),
    Corruption("actor_class_unknown", bundle_edit(["actors", 0, "class"], "spaceship"), "actors[0].class"),
    Corruption("actor_latent_short", bundle_edit(["actors", 0, "latent"], [0.0]), "actors[0].latent"),
    Corruption("info_not_object", bundle_edit(["info"], 5), "info"),
    Corruption("map_crosswalks_int", edit("map.json", ["crosswalks"], 5), "crosswalks"),
    Corruption("track_t_us_above_2_63", edit("tracks.json", ["ego", "t_us", -1], 2**63 + 5), "ego.t_us"),
]


@pytest.mark.parametrize("case", BUNDLE_CORRUPTIONS, ids=[c.id for c in BUNDLE_CORRUPTIONS])
def test_corrupt_bundle_is_refused_before_the_model_is_built(small_bundle: Path, tmp_path: Path, case: Corruption,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import sim.recon.bundle as bundle_mod

    bad = tmp_path / "b"
    shutil.copytree(small_bundle, bad)
    case.apply(bad)

    def no_model(*a: Any, **k: Any) -> None:
        raise AssertionError("the model was built from a bundle that does not validate")

    monkeypatch.setattr(bundle_mod, "SceneModel", no_model)
    with pytest.raises(BundleError) as ei:
        bundle_mod.load_bundle(bad)
    msg = str(ei.value)
    assert case.names in msg and "\n" not in msg, msg


def test_the_uncorrupted_bundle_loads(small_bundle: Path) -> None:
    from sim.recon.bundle import load_bundle

    b = load_bundle(small_bundle)
    assert len(b.actors) == b.scene.cfg.n_actors and b.info["eval_every"] == 10


def test_eval_recon_refuses_a_corrupt_bundle_in_one_line(small_bundle: Path, tiny_log: Path, tmp_path: Path) -> None:
    bad = tmp_path / "b"
    shutil.copytree(small_bundle, bad)
    bundle_edit(["format_version"], True)(bad)
    before = _snapshot(tmp_path)
    _one_clean_line(["eval-recon", str(bad), "--log", str(tiny_log)], "format_version")
    assert _snapshot(tmp_path) == before


# ---------------------------------------------------------------------------------- importers
def table_edit(table: str, path: list[Any], value: Any) -> Callable[[Path], None]:
    return edit(f"v1.0-mini/{table}.json", path, value)



IMPORT_CORRUPTIONS: list[Corruption] = [
    Corruption("table_deeply_nested", write("v1.0-mini/sample.json", "[" * 100_000 + "]" * 100_000), "sample.json"),
    Corruption("table_fifo", replace_with("v1.0-mini/ego_pose.json", "fifo"), "ego_pose.json"),
    Corruption("table_not_a_list", write("v1.0-mini/scene.json", '{"token": "sc"}'), "scene.json"),
    Corruption("record_missing_field", drop("v1.0-mini/sample_data.json", [0, "filename"]), "[0].filename"),
    Corruption("timestamp_bool", table_edit("sample", [0, "timestamp"], True), "[0].timestamp"),
    Corruption("timestamp_above_2_63", table_edit("sample", [1, "timestamp"], 2**63), "[1].timestamp"),
    Corruption("quaternion_zero", table_edit("ego_pose", [0, "rotation"], [0, 0, 0, 0]), "[0].rotation"),
    Corruption("size_negative", table_edit("sample_annotation", [0, "size", 1], -4.5), "[0].size[1]"),
    Corruption("duplicate_token", copy_field("sample_annotation", [0, "token"], [1, "token"]), "sample_annotation.json"),
    Corruption("sample_cycle", copy_field("sample", [0, "token"], [2, "next"]), "sample.json"),
    Corruption("intrinsic_ragged", table_edit("calibrated_sensor", [0, "camera_intrinsic", 1], [40.0]), "camera_intrinsic[1]"),
    Corruption("filename_escapes", table_edit("sample_data", [0, "filename"], "../../../etc/hostname"), "filename"),
    Corruption("image_garbage", on_key_file("CAM_FRONT", 1, lambda rel: write(rel, os.urandom(512))), "samples/CAM_FRONT/"),
    Corruption("lidar_fifo", on_key_file("LIDAR_TOP", 2, lambda rel: replace_with(rel, "fifo")), "filename"),
    Corruption("lidar_not_n5", on_key_file("LIDAR_TOP", 0, lambda rel: write(rel, b"\0" * 12)), "samples/LIDAR_TOP/"),
    Corruption("lidar_ring_fraction", on_key_file("LIDAR_TOP", 1, lambda rel: write(rel, np.array([[1, 2, 3, 4, 0.5]], np.float32).tobytes())),
               "samples/LIDAR_TOP/"),
    Corruption("key_frame_flag_int", table_edit("sample_data", [0, "is_key_frame"], 1), "[0].is_key_frame"),
    Corruption("scene_log_dangling", table_edit("scene", [0, "log_token"], "f" * 32), "log.json"),
]


@pytest.mark.parametrize("case", IMPORT_CORRUPTIONS, ids=[c.id for c in IMPORT_CORRUPTIONS])
def test_corrupt_nuscenes_source_is_refused_in_one_line(tmp_path: Path, case: Corruption, tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests._nuscenes import write_mini_nuscenes

    src = write_mini_nuscenes(tmp_path / "nuscenes", tmp_path_factory)
    case.apply(src)
    before = _snapshot(tmp_path)
    _one_clean_line(["import", "nuscenes", str(src), "--out", str(tmp_path / "logs" / "imported")], case.names)
    assert _snapshot(tmp_path) == before
