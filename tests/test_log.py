"""Drive-log format: round trip, atomic writing, validation errors that name the field."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.errors import LogFormatError
from sim.log import LogWriter, copy_log, read_log, validate_log
from tests._logfixture import MAP, RIG, write_toy_log


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_log(tmp_path_factory.mktemp("log") / "toy")


def test_round_trip_preserves_every_field(toy: Path, tmp_path: Path) -> None:
    a = validate_log(toy)
    b = copy_log(a, tmp_path / "copy")
    assert [f.t_us for f in a.frames] == [f.t_us for f in b.frames] and len(a.frames) == 3
    assert [s.t_us for s in a.sweeps] == [s.t_us for s in b.sweeps] and len(a.sweeps) == 3
    for i in range(len(a.frames)):
        np.testing.assert_array_equal(a.image(i), b.image(i))
        np.testing.assert_array_equal(a.depth(i), b.depth(i))
        np.testing.assert_allclose(a.frames[i].c2w, b.frames[i].c2w, atol=1e-9)
        np.testing.assert_allclose(a.frames[i].K, b.frames[i].K)
    for j in range(len(a.sweeps)):
        np.testing.assert_array_equal(a.lidar(j), b.lidar(j))
    assert a.tracks[0].id == b.tracks[0].id == "7"
    np.testing.assert_allclose(a.tracks[0].pose, b.tracks[0].pose)
    assert a.map == b.map
    # and the files are byte-identical (deterministic writer)
    for p in sorted(toy.rglob("*")):
        if p.is_file():
            assert (tmp_path / "copy" / p.relative_to(toy)).read_bytes() == p.read_bytes(), p


def test_written_log_folder_follows_the_umask(toy: Path, tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        out = copy_log(validate_log(toy), tmp_path / "shared")
    finally:
        os.umask(old)
    # a folder renamed into place keeps os.mkdir's mode (tempfile.mkdtemp would make it 0700)
    assert stat.S_IMODE(out.root.stat().st_mode) == 0o755


def test_depth_png_keeps_millimetres(toy: Path) -> None:
    d = read_log(toy).depth(0)
    assert d.dtype == np.float32
    assert d[0, 0] == 0.0  # 80 m does not fit 16-bit millimetres: stored as "no return"
    rest = d.ravel()[1:]
    assert rest.min() >= 1.0 - 1e-3 and rest.max() <= 60.0 + 1e-3
    assert np.allclose(d * 1000, np.round(d * 1000), atol=1e-2)


def test_writer_refuses_non_empty_target_and_leaves_nothing_on_error(toy: Path, tmp_path: Path) -> None:
    with pytest.raises(LogFormatError, match="empty or new folder"):
        LogWriter(toy, {"rig": RIG.to_meta()})
    out = tmp_path / "broken"
    with pytest.raises(RuntimeError, match="boom"), LogWriter(out, {"rig": RIG.to_meta()}) as w:
        w.set_map(MAP)
        raise RuntimeError("boom")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_writer_validates_before_publishing(tmp_path: Path) -> None:
    out = tmp_path / "bad"
    meta = {"source": "test", "rates": {"camera_hz": 10.0, "lidar_hz": -1.0}, "rig": RIG.to_meta(), "ego": {"size": [4, 2, 1.5]}}
    with pytest.raises(LogFormatError, match=r"rates\.lidar_hz"):  # noqa: SIM117
        with LogWriter(out, meta) as w:
            cam = RIG.cameras[0]
            w.add_frame(cam.name, 0, np.eye(4), cam.K, np.zeros((cam.height, cam.width, 3), np.uint8))
            from sim.log import Track

            t = Track("ego", "car", (4.0, 2.0, 1.5), np.array([0]), np.zeros((1, 4)))
            w.set_tracks(t, [])
            w.set_map(MAP)
    assert not out.exists()


def test_unknown_version_is_refused(toy: Path, tmp_path: Path) -> None:
    dst = tmp_path / "v9"
    shutil.copytree(toy, dst)
    meta = json.loads((dst / "meta.json").read_text())
    meta["format_version"] = 9
    (dst / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(LogFormatError) as ei:
        read_log(dst)
    assert "meta.json" in str(ei.value) and "format_version" in str(ei.value) and "9" in str(ei.value)


# Field corruptions: (file, path into the JSON, bad value, the field path the error must name)
CORRUPTIONS = [
    ("meta.json", ["source"], 5, "source"),
    ("meta.json", ["rig", "cameras", 0, "fx"], -3.0, "rig.cameras[0].fx"),
    ("meta.json", ["rig", "lidar", "beams"], 0, "rig.lidar.beams"),
    ("meta.json", ["ego", "size"], [1, 2], "ego.size"),
    ("transforms.json", ["frames", 1, "transform_matrix"], [[1, 0], [0, 1]], "frames[1].transform_matrix"),
    ("transforms.json", ["frames", 0, "camera"], "nope", "frames[0].camera"),
    ("transforms.json", ["frames", 2, "file_path"], "images/missing.png", "frames[2].file_path"),
    ("transforms.json", ["frames", 0, "t_us"], -1, "frames[0].t_us"),
    ("transforms.json", ["frames", 0, "file_path"], "../../etc/passwd", "frames[0].file_path"),
    ("lidar.json", ["sweeps", 0, "sensor_to_world"], [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "sweeps[0].sensor_to_world"),
    ("tracks.json", ["tracks", 0, "class"], "spaceship", "tracks[0].class"),
    ("tracks.json", ["tracks", 0, "size", 2], -1.5, "tracks[0].size[2]"),
    ("tracks.json", ["tracks", 0, "t_us", 1], 0, "tracks[0].t_us[1]"),
    ("tracks.json", ["tracks", 0, "x"], [1.0], "tracks[0].x"),
    ("tracks.json", ["tracks", 0, "id"], "ego", "tracks[0].id"),
    ("tracks.json", ["ego", "yaw", 0], "north", "ego.yaw[0]"),
    ("map.json", ["lanes", 0, "successors", 0], "zzz", "lanes[0].successors[0]"),
    ("map.json", ["lanes", 1, "width"], 0, "lanes[1].width"),
    ("map.json", ["lanes", 0, "centerline"], [[0, 0]], "lanes[0].centerline"),
    ("map.json", ["crosswalks", 0, "polygon", 1], [1.0], "crosswalks[0].polygon[1]"),
]


def _set(doc: object, path: list, value: object) -> None:
    for k in path[:-1]:
        doc = doc[k]  # type: ignore[index]
    doc[path[-1]] = value  # type: ignore[index]


@pytest.mark.parametrize(("fname", "path", "value", "field"), CORRUPTIONS, ids=[c[3] for c in CORRUPTIONS])
def test_each_corrupted_field_is_named(toy: Path, tmp_path: Path, fname: str, path: list, value: object, field: str) -> None:
    dst = tmp_path / "c"
    shutil.copytree(toy, dst)
    doc = json.loads((dst / fname).read_text())
    _set(doc, path, value)
    (dst / fname).write_text(json.dumps(doc))
    with pytest.raises(LogFormatError) as ei:
        read_log(dst)
    err = ei.value
    assert err.file is not None and err.file.endswith(fname)
    assert err.field == field, str(err)
    assert "expected" in err.message


@pytest.mark.parametrize("fname", ["meta.json", "transforms.json", "tracks.json", "map.json"])
def test_missing_or_garbled_file(toy: Path, tmp_path: Path, fname: str) -> None:
    dst = tmp_path / "m"
    shutil.copytree(toy, dst)
    (dst / fname).write_text("{not json")
    with pytest.raises(LogFormatError, match="valid JSON"):
        read_log(dst)
    (dst / fname).unlink()
    with pytest.raises(LogFormatError, match="exist"):
        read_log(dst)


def test_payload_checks(toy: Path, tmp_path: Path) -> None:
    dst = tmp_path / "p"
    shutil.copytree(toy, dst)
    np.save(dst / "lidar" / "000001.npy", np.zeros((5, 3), np.float32))
    read_log(dst)  # metadata alone is fine
    with pytest.raises(LogFormatError, match=r"shape \(N, 4\)"):
        validate_log(dst)


_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=4))
_json = st.recursive(_json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3), max_leaves=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fname=st.sampled_from(["meta.json", "transforms.json", "lidar.json", "tracks.json", "map.json"]), data=st.data())
def test_fuzzed_json_only_raises_log_format_error(toy: Path, tmp_path_factory: pytest.TempPathFactory, fname: str, data: st.DataObject) -> None:
    dst = tmp_path_factory.mktemp("fz") / "log"
    shutil.copytree(toy, dst)
    doc = json.loads((dst / fname).read_text())
    # replace a random subtree of the document with random JSON
    node, path = doc, []
    for _ in range(data.draw(st.integers(0, 4))):
        if isinstance(node, dict) and node:
            k = data.draw(st.sampled_from(sorted(node)))
        elif isinstance(node, list) and node:
            k = data.draw(st.integers(0, len(node) - 1))
        else:
            break
        path.append(k)
        node = node[k]
    new = data.draw(_json)
    if path:
        _set(doc, path, new)
    else:
        doc = new
    (dst / fname).write_text(json.dumps(doc))
    with contextlib.suppress(LogFormatError):
        read_log(dst)
