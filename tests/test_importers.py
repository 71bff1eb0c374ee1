"""The nuScenes importer on data roots written by the exporter (``tests/_nuscenes.py``): every root
is loaded with the official devkit first, and the importer's output is checked against the devkit's
reading of the same root and against the synthetic truth it was exported from."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from typer.testing import CliRunner

matplotlib.use("Agg")

# nuscenes-devkit is a dev dependency; it imports pyplot, so the backend is set first
from nuscenes.nuscenes import NuScenes
from pyquaternion import Quaternion

from sim.cli import app
from sim.errors import LogFormatError, RegistryError
from sim.geometry import opencv_to_opengl_c2w
from sim.importers import IMPORTERS, import_log
from sim.log import read_log, validate_log
from sim.sensors import SensorRig
from tests._nuscenes import VERSION, drop_annotation, ns_export, table, write_mini_nuscenes

HEX32 = re.compile(r"^[0-9a-f]{32}$")
CAMS = ["CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return ns_export(tmp_path_factory)


@pytest.fixture(scope="module")
def root(shared: tuple[Path, Path]) -> Path:
    return shared[1]


@pytest.fixture(scope="module")
def nusc(root: Path) -> NuScenes:
    return NuScenes(version=VERSION, dataroot=str(root), verbose=False)


@pytest.fixture(scope="module")
def keyframes(root: Path, tmp_path_factory: pytest.TempPathFactory):
    return validate_log(import_log("nuscenes", root, tmp_path_factory.mktemp("imp") / "key"))


@pytest.fixture(scope="module")
def with_sweeps(root: Path, tmp_path_factory: pytest.TempPathFactory):
    return validate_log(import_log("nuscenes", root, tmp_path_factory.mktemp("imp") / "sweeps", cameras="CAM_FRONT,CAM_BACK", sweeps=True))


def _devkit_c2w(nusc: NuScenes, sd: dict) -> np.ndarray:
    """Camera/LiDAR-to-global of a sample_data as the devkit composes it (ego_pose @ calibrated_sensor)."""
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    ep = nusc.get("ego_pose", sd["ego_pose_token"])
    m = np.eye(4)
    m[:3, :3] = Quaternion(cs["rotation"]).rotation_matrix
    m[:3, 3] = cs["translation"]
    e = np.eye(4)
    e[:3, :3] = Quaternion(ep["rotation"]).rotation_matrix
    e[:3, 3] = ep["translation"]
    return e @ m


# ----------------------------------------------------------------------------- what is imported
def test_key_frames_of_every_camera_and_lidar_each_with_its_own_time_and_pose(keyframes, nusc: NuScenes) -> None:
    dl = keyframes
    off = np.asarray(dl.meta["origin"]["global_offset_m"])
    t0 = dl.meta["origin"]["t0_us"]
    assert dl.cameras == CAMS and len(dl.frames) == 6 * len(nusc.sample) == 18 and len(dl.sweeps) == 3
    by_key = {(f.camera, f.t_us + t0): f for f in dl.frames}
    for s in nusc.sample:
        for ch in CAMS:
            sd = nusc.get("sample_data", s["data"][ch])
            f = by_key[(ch, sd["timestamp"])]  # the camera's own time stamp (not the sample's)
            c2w = opencv_to_opengl_c2w(_devkit_c2w(nusc, sd))
            c2w[:3, 3] -= off
            np.testing.assert_allclose(f.c2w, c2w, atol=2e-8)  # ... and its own ego pose
            np.testing.assert_allclose(f.K, nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])["camera_intrinsic"], atol=0)
        lid = nusc.get("sample_data", s["data"]["LIDAR_TOP"])
        sw = next(w for w in dl.sweeps if w.t_us + t0 == lid["timestamp"] == s["timestamp"])
        s2w = _devkit_c2w(nusc, lid)
        s2w[:3, 3] -= off
        np.testing.assert_allclose(sw.sensor_to_world, s2w, atol=2e-8)
    # frames of one sample are not at one time: exposures 25 ms (CAM_FRONT), 50 ms (CAM_BACK) before the sample
    t = {f.camera: f.t_us for f in dl.frames[:6]}
    assert len(set(t.values())) == 6
    assert dl.meta["rates"] == {"camera_hz": 2.0, "lidar_hz": 2.0} and dl.meta["nuscenes"]["sweeps"] is False
    # the ego track holds the ego pose of every imported capture
    assert len(dl.ego.t_us) == len({f.t_us for f in dl.frames} | {s.t_us for s in dl.sweeps})


def test_sweeps_and_chosen_cameras(with_sweeps, nusc: NuScenes) -> None:
    dl = with_sweeps
    chans = {ch: [sd for sd in nusc.sample_data if sd["channel"] == ch] for ch in ("CAM_FRONT", "CAM_BACK", "LIDAR_TOP")}
    assert dl.cameras == ["CAM_FRONT", "CAM_BACK"]
    assert len(dl.frames_of("CAM_FRONT")) == len(chans["CAM_FRONT"]) > 6 and len(dl.frames_of("CAM_BACK")) == len(chans["CAM_BACK"])
    assert len(dl.sweeps) == len(chans["LIDAR_TOP"]) == 21
    t0 = dl.meta["origin"]["t0_us"]
    assert [s.t_us + t0 for s in dl.sweeps] == sorted(sd["timestamp"] for sd in chans["LIDAR_TOP"])
    assert t0 == min(sd["timestamp"] for sds in chans.values() for sd in sds)
    assert dl.meta["rates"] == {"camera_hz": 12.0, "lidar_hz": 20.0}


def test_full_intrinsics_and_rotation_with_roll_through_sensor_rig(keyframes, nusc: NuScenes) -> None:
    rig = SensorRig.from_meta(keyframes.meta["rig"])
    for c in rig.cameras:
        sd = nusc.get("sample_data", nusc.sample[0]["data"][c.name])
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        np.testing.assert_allclose(c.K, cs["camera_intrinsic"], atol=1e-12)
        assert c.fx != c.fy and c.cx != c.width / 2 and c.intrinsics is not None
        cal = np.eye(4)
        cal[:3, :3], cal[:3, 3] = Quaternion(cs["rotation"]).rotation_matrix, cs["translation"]
        np.testing.assert_allclose(c.vehicle_from_camera @ np.diag([1.0, -1.0, -1.0, 1.0]), cal, atol=2e-9)  # OpenGL -> OpenCV axes
        assert abs(c.roll) > 1e-3  # nuScenes-like cameras are rolled a little; the roll survives


def test_origin_record_and_track_ids_are_instance_tokens(keyframes, nusc: NuScenes, shared: tuple[Path, Path]) -> None:
    from sim.importers.nuscenes_export import instance_token
    from sim.serve_neurad import log_origin

    dl = keyframes
    first = nusc.get("sample_data", nusc.sample[0]["data"]["LIDAR_TOP"])
    ep = nusc.get("ego_pose", first["ego_pose_token"])
    origin = log_origin(dl.meta)
    assert origin.global_offset_m == tuple(ep["translation"]) and dl.meta["nuscenes"]["origin"] == ep["translation"]
    assert origin.t0_us == min(nusc.get("sample_data", s["data"][ch])["timestamp"] for s in nusc.sample for ch in CAMS)
    assert {t.id for t in dl.tracks} == {i["token"] for i in nusc.instance}
    assert dl.tracks and all(HEX32.match(t.id) for t in dl.tracks)
    native = read_log(shared[0])
    assert {t.id for t in dl.tracks} <= {instance_token(dl.name, t.id) for t in native.tracks}  # the exporter's token of each truth track
    rec = {r["id"]: r for r in dl.meta["nuscenes"]["tracks"]}
    for inst in nusc.instance:
        tr = dl.track_by_id[inst["token"]]
        assert rec[tr.id]["category"] == nusc.get("category", inst["category_token"])["name"]
        anns = nusc.field2token("sample_annotation", "instance_token", inst["token"])
        assert len(tr.t_us) == len(anns) == inst["nbr_annotations"]  # sampled at the annotation key frames only
        for a in anns:
            ann = nusc.get("sample_annotation", a)
            t = nusc.get("sample", ann["sample_token"])["timestamp"] - origin.t0_us
            p = tr.pose_at(t)
            w, length, h = ann["size"]
            np.testing.assert_allclose(p[:3] + origin.offset + [0, 0, h / 2], ann["translation"], atol=1e-6)
            assert p[3] == pytest.approx(Quaternion(ann["rotation"]).yaw_pitch_roll[0], abs=1e-6)
            assert tr.size == pytest.approx((length, w, h))


def test_lidar_reaches_the_rig_and_the_reconstructor(keyframes, shared: tuple[Path, Path]) -> None:
    from sim.recon.data import ReconData
    from sim.recon.scene import SceneConfig

    li = keyframes.meta["rig"]["lidar"]
    truth = read_log(shared[0]).meta["rig"]["lidar"]
    assert li["beams"] == 32 and li["azimuth_steps"] == truth["azimuth_steps"] and li["firing"] == "spin_cw" and li["rate_hz"] == 20.0
    np.testing.assert_allclose(li["elevation_deg"], np.linspace(*truth["vertical_fov_deg"], 32), atol=1e-3)
    np.testing.assert_allclose(li["vertical_fov_deg"], truth["vertical_fov_deg"], atol=1e-3)
    assert li["cut_azimuth_deg"] == pytest.approx(truth["cut_azimuth_deg"], abs=0.1)
    extra = keyframes.lidar_extra(1)
    assert extra is not None and set(np.unique(extra[:, 1]).astype(int)) <= set(range(32)) and -50_000 <= extra[:, 0].min() < extra[:, 0].max() <= 0
    data = ReconData.from_log(keyframes, SceneConfig(occ_voxel_m=0.5), load_images=False, use_camera_depth=False, camera="CAM_FRONT")
    assert data.lidar_spec is not None and data.lidar_range is not None
    hits = float((data.lidar_range > 0).float().mean())
    assert hits > 0.5  # every return lands in its own cell of the rebuilt ray grid
    no_lidar = json.loads(json.dumps(keyframes.meta))
    no_lidar["rig"]["lidar"] = None
    ground_only = ReconData.from_log(dataclasses.replace(keyframes, meta=no_lidar), SceneConfig(occ_voxel_m=0.5),
                                     load_images=False, use_camera_depth=False, camera="CAM_FRONT")
    assert data.occupancy.sum() > 2 * ground_only.occupancy.sum()  # the LiDAR fills the occupancy grid


def test_annotation_gaps_are_not_interpolated_past_the_limit(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    root = write_mini_nuscenes(tmp_path / "root", tmp_path_factory)
    samples = sorted(table(root, "sample"), key=lambda s: s["timestamp"])
    middle = next(a for a in table(root, "sample_annotation") if a["sample_token"] == samples[1]["token"])
    drop_annotation(root, middle["token"])
    NuScenes(version=VERSION, dataroot=str(root), verbose=False)  # still a root the devkit loads
    tok = middle["instance_token"]
    bridged = read_log(import_log("nuscenes", root, tmp_path / "a"))  # a 1 s gap (one missed key frame) < 1.5 s
    assert len(bridged.track_by_id[tok].t_us) == 2 and bridged.track_by_id[tok].pose_at(samples[1]["timestamp"] - bridged.meta["origin"]["t0_us"]) is not None
    split = read_log(import_log("nuscenes", root, tmp_path / "b", max_gap_s=0.75))
    t0 = split.meta["origin"]["t0_us"]
    first, second = split.track_by_id[tok], split.track_by_id[f"{tok}-2"]
    assert first.pose_at(samples[1]["timestamp"] - t0) is None and second.pose_at(samples[1]["timestamp"] - t0) is None
    assert first.t_us[-1] + t0 == samples[0]["timestamp"] and second.t_us[0] + t0 == samples[2]["timestamp"]
    recs = {r["id"]: r for r in split.meta["nuscenes"]["tracks"]}
    assert recs[f"{tok}-2"]["instance_token"] == tok and recs[f"{tok}-2"]["segment"] == 2


# ----------------------------------------------------------------------------- ids through bundle and server
def test_instance_tokens_survive_bundle_actor_api_and_neurad_protocol(keyframes, tmp_path: Path) -> None:
    import torch
    from fastapi.testclient import TestClient

    from sim.recon.bundle import save_bundle
    from sim.recon.data import ReconData
    from sim.recon.scene import SceneConfig, SceneModel
    from sim.serve import create_app

    torch.set_num_threads(1)
    data = ReconData.from_log(keyframes, SceneConfig(occ_voxel_m=0.5, hash_log2_size=12, hash_levels=4), load_images=False, camera="CAM_FRONT")
    bundle = save_bundle(tmp_path / "bundle", SceneModel(data.cfg, data.occupancy), keyframes, data.actor_ids, camera="CAM_FRONT", surface=None)
    tokens = {t.id for t in keyframes.tracks}
    t0, off = keyframes.meta["origin"]["t0_us"], np.asarray(keyframes.meta["origin"]["global_offset_m"])
    with TestClient(create_app(bundle, library=tmp_path / "no-lib")) as c:
        assert {a["id"] for a in c.get("/actors").json()} == tokens
        got = c.get("/get_actors").json()
        assert {a["uuid"] for a in got} == tokens
        for a in got:
            tr = keyframes.track_by_id[a["uuid"]]
            assert a["timestamps"] == [int(t) + t0 for t in tr.t_us]  # absolute time
            np.testing.assert_allclose(np.asarray(a["poses"])[:, :3, 3], tr.pose[:, :3] + off + [0, 0, tr.size[2] / 2], atol=1e-3)
        assert c.get("/start_time").json() == int(keyframes.ego.t_us[0]) + t0


# ----------------------------------------------------------------------------- bad input, CLI, plug-ins
def test_bad_sources_name_the_table_and_write_nothing(root: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    with pytest.raises(LogFormatError, match="scene named 'nope'"):
        import_log("nuscenes", root, tmp_path / "a", scene="nope")
    with pytest.raises(LogFormatError, match=r"camera channels of the scene .*CAM_NOPE"):
        import_log("nuscenes", root, tmp_path / "a", cameras="CAM_FRONT,CAM_NOPE")
    with pytest.raises(LogFormatError, match="max_gap_s"):
        import_log("nuscenes", root, tmp_path / "a", max_gap_s=float("nan"))
    bad = write_mini_nuscenes(tmp_path / "bad", tmp_path_factory)
    (bad / VERSION / "ego_pose.json").write_text("[]")
    with pytest.raises(LogFormatError, match="ego_pose record") as ei:
        import_log("nuscenes", bad, tmp_path / "b")
    assert ei.value.file is not None and ei.value.file.endswith("ego_pose.json")
    rows = table(bad, "sample_data")
    del rows[3]["is_key_frame"]
    (bad / VERSION / "sample_data.json").write_text(json.dumps(rows))
    with pytest.raises(LogFormatError, match=r"\[3\]\.is_key_frame"):
        import_log("nuscenes", bad, tmp_path / "b")
    with pytest.raises(RegistryError, match=r"known: .*nuscenes"):
        import_log("kitti", root, tmp_path / "c")
    with pytest.raises(RegistryError, match="no option 'bogus'"):
        import_log("nuscenes", root, tmp_path / "c", bogus=1)
    assert "nuscenes" in IMPORTERS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_cli_import_options_and_refusals(root: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "log"
    res = runner.invoke(app, ["import", "nuscenes", str(root), "--out", str(out), "--cameras", "CAM_BACK", "--sweeps", "--scene", "ns-tiny"])
    assert res.exit_code == 2 and "scene named 'ns-tiny'" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    name = table(root, "scene")[0]["name"]
    res = runner.invoke(app, ["import", "nuscenes", str(root), "--out", str(out), "--cameras", "CAM_BACK", "--sweeps", "--scene", name,
                              "--max-gap", "2.5"])
    assert res.exit_code == 0, res.output
    dl = read_log(out)
    assert dl.cameras == ["CAM_BACK"] and dl.meta["nuscenes"]["sweeps"] and dl.meta["nuscenes"]["max_gap_s"] == 2.5 and len(dl.sweeps) == 21
    res = runner.invoke(app, ["import", "nuscenes", str(root), "--out", str(out)])
    assert res.exit_code == 2 and "empty or new folder" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = runner.invoke(app, ["import", "nuscenes", str(root), "--out", str(tmp_path / "x"), "--cameras", "CAM_NOPE"])
    assert res.exit_code == 2 and "CAM_NOPE" in res.stderr and not (tmp_path / "x").exists()


TOY_IMPORTER = '''
"""A second format in one file: a folder holding one drive log, copied."""
from pathlib import Path

from sim.log import copy_log, read_log


def import_copy(source: Path, out: Path, *, scene: str | None = None, overwrite: bool = False) -> Path:
    return copy_log(read_log(Path(source) / (scene or "log")), out, overwrite=overwrite).root
'''


def test_a_second_format_is_one_file_and_an_entry_point(tmp_path: Path, keyframes, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata
    import shutil
    import sys

    import sim.registry

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "loopdrive_copyfmt.py").write_text(TOY_IMPORTER)
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    ep = importlib.metadata.EntryPoint("copyfmt", "loopdrive_copyfmt:import_copy", "loopdrive.importers")

    def eps(group: str | None = None, **kw: object) -> list:
        return [ep] if group == "loopdrive.importers" else []

    monkeypatch.setattr(sim.registry, "entry_points", eps)
    monkeypatch.setattr(IMPORTERS, "_entry_points_loaded", False)
    monkeypatch.delitem(IMPORTERS._items, "copyfmt", raising=False)
    shutil.copytree(keyframes.root, tmp_path / "src" / "log")
    runner = CliRunner()
    res = runner.invoke(app, ["import", "copyfmt", str(tmp_path / "src"), "--out", str(tmp_path / "copied")])
    assert res.exit_code == 0, res.output
    assert read_log(tmp_path / "copied").meta["nuscenes"]["scene"] == keyframes.meta["nuscenes"]["scene"]
    res = runner.invoke(app, ["import", "copyfmt", str(tmp_path / "src"), "--out", str(tmp_path / "c2"), "--sweeps"])
    assert res.exit_code == 2 and "takes no option --sweeps" in res.stderr and "scene, overwrite" in res.stderr
    assert not (tmp_path / "c2").exists()
    sys.modules.pop("loopdrive_copyfmt", None)


def test_ego_path_lane_follows_a_densely_sampled_drive() -> None:
    """Ego poses every 10 ms (a few cm apart, as nuScenes' ego_pose table) still give a lane
    along the whole drive: points are thinned against the last kept one, not their neighbour."""
    from sim.importers.nuscenes.tracks import ego_path_lane
    from sim.log import Track

    t = np.arange(0, 5_000_000, 10_000, dtype=np.int64)  # 5 s at 100 Hz
    s = 10.0 * t / 1e6  # 10 m/s along a gentle arc
    x, y = 100.0 * np.sin(s / 100.0), 100.0 * (1 - np.cos(s / 100.0))
    pose = np.stack([x, y, np.zeros_like(x), s / 100.0], axis=1)
    lane = ego_path_lane(Track("ego", "car", (4.5, 1.9, 1.6), t, pose))["lanes"][0]
    c = np.asarray(lane["centerline"])
    steps = np.linalg.norm(np.diff(c, axis=0), axis=1)
    assert len(c) > 80  # ~50 m at one point per 0.5 m
    assert steps.max() < 0.65  # 0.5 m plus one 0.1 m sample step
    assert np.allclose(c[0], pose[0, :2]) and np.allclose(c[-1], pose[-1, :2], atol=1e-6)
