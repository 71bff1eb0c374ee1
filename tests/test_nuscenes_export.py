"""``loopdrive export-nuscenes``: a nuScenes-rig synth log written as a nuScenes data root that the
official ``nuscenes-devkit`` loads, checked through the devkit's own accessors against the
synthetic truth; and the spinning LiDAR of the nuScenes rig (per-point firing time and ring)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from typer.testing import CliRunner

matplotlib.use("Agg")

# nuscenes-devkit is a dev dependency (pyproject [dev]); it imports pyplot, so the backend is set first
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_classes import Box, LidarPointCloud
from nuscenes.utils.geometry_utils import BoxVisibility, points_in_box, view_points
from pyquaternion import Quaternion

from sim.cli import app
from sim.geometry import project_points
from sim.importers.nuscenes_export import DEFAULT_EPOCH_US, export_nuscenes, instance_token
from sim.log import read_log
from sim.synth.rigs import NUSCENES_CAMERAS, track_poses

#: every field of every table of the nuScenes schema (v1.0; ``category.index`` is nuScenes-lidarseg's)
SCHEMA = {
    "attribute": {"token", "name", "description"},
    "calibrated_sensor": {"token", "sensor_token", "translation", "rotation", "camera_intrinsic"},
    "category": {"token", "name", "description", "index"},
    "ego_pose": {"token", "timestamp", "rotation", "translation"},
    "instance": {"token", "category_token", "nbr_annotations", "first_annotation_token", "last_annotation_token"},
    "log": {"token", "logfile", "vehicle", "date_captured", "location"},
    "map": {"token", "log_tokens", "category", "filename"},
    "sample": {"token", "timestamp", "scene_token", "next", "prev"},
    "sample_annotation": {"token", "sample_token", "instance_token", "attribute_tokens", "visibility_token", "translation", "size",
                          "rotation", "num_lidar_pts", "num_radar_pts", "next", "prev"},
    "sample_data": {"token", "sample_token", "ego_pose_token", "calibrated_sensor_token", "timestamp", "fileformat", "is_key_frame",
                    "height", "width", "filename", "next", "prev"},
    "scene": {"token", "name", "description", "log_token", "nbr_samples", "first_sample_token", "last_sample_token"},
    "sensor": {"token", "channel", "modality"},
    "visibility": {"token", "level", "description"},
}
HEX32 = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def ns_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny town, 24 steps of 50 ms: 23 LiDAR sweeps (3 key frames), six 80x45 cameras at 12 Hz."""
    from sim.synth import make_scene, write_synth_log
    from sim.synth.rigs import nuscenes_rig, nuscenes_schedule

    scene = make_scene("tiny", 0, frames=24, dt_s=0.05)
    rig = nuscenes_rig(0.05, azimuth_steps=512)
    out = tmp_path_factory.mktemp("nsrig") / "ns-tiny"
    return write_synth_log(scene, out=out, rig=rig, schedule=nuscenes_schedule(int(scene.t_us[-1]), rig), rig_name="nuscenes", supersample=1)


@pytest.fixture(scope="module")
def root(ns_log: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_nuscenes(ns_log, tmp_path_factory.mktemp("nsroot") / "root")


@pytest.fixture(scope="module")
def nusc(root: Path) -> NuScenes:
    return NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False)


@pytest.fixture(scope="module")
def dl(ns_log: Path):
    return read_log(ns_log)


def _offset(nusc: NuScenes, dl) -> np.ndarray:
    """global - world, from the first LiDAR sample_data's ego pose and the log's sweep pose."""
    sd = nusc.get("sample_data", nusc.sample[0]["data"]["LIDAR_TOP"])
    ep = nusc.get("ego_pose", sd["ego_pose_token"])
    s2w = dl.sweeps[0].sensor_to_world @ np.linalg.inv(np.asarray(dl.meta["rig"]["lidar"]["vehicle_from_lidar"]))
    return np.asarray(ep["translation"]) - s2w[:3, 3]


def _box_corners_world(track, t_us: int) -> np.ndarray:
    """(3, 8) corners of ``track``'s box at ``t_us`` in the devkit's ``Box.corners()`` order."""
    p = track.pose_at(t_us)
    length, width, height = track.size
    x = length / 2 * np.array([1, 1, 1, 1, -1, -1, -1, -1])
    y = width / 2 * np.array([1, -1, -1, 1, 1, -1, -1, 1])
    z = height / 2 * np.array([1, 1, -1, -1, 1, 1, -1, -1])
    c, s = np.cos(p[3]), np.sin(p[3])
    return np.stack([p[0] + c * x - s * y, p[1] + s * x + c * y, p[2] + height / 2 + z])


# ----------------------------------------------------------------------------- schema and chains
def test_all_13_tables_with_every_field_and_hex_tokens(root: Path) -> None:
    tdir = root / "v1.0-mini"
    assert sorted(p.stem for p in tdir.glob("*.json")) == sorted(SCHEMA)
    for table, fields in SCHEMA.items():
        rows = json.loads((tdir / f"{table}.json").read_text())
        assert rows, table
        for r in rows:
            assert set(r) == fields, (table, set(r) ^ fields)
            if table != "visibility":
                assert HEX32.match(r["token"]), (table, r["token"])
    vis = json.loads((tdir / "visibility.json").read_text())
    assert [v["token"] for v in vis] == ["1", "2", "3", "4"]
    assert len(json.loads((tdir / "category.json").read_text())) == 32 and len(json.loads((tdir / "attribute.json").read_text())) == 8


def test_chains_key_frames_and_timestamps(nusc: NuScenes, dl) -> None:
    scene = nusc.scene[0]
    assert scene["nbr_samples"] == len(nusc.sample) == 3
    chain, tok = [], scene["first_sample_token"]
    while tok:
        chain.append(nusc.get("sample", tok))
        tok = chain[-1]["next"]
    assert chain[-1]["token"] == scene["last_sample_token"] and len(chain) == 3
    assert np.all(np.diff([s["timestamp"] for s in chain]) == 500_000)  # 2 Hz key frames
    assert set(chain[0]["data"]) == {*NUSCENES_CAMERAS, "LIDAR_TOP"}
    # every sample_data is on exactly one prev/next chain of its channel, in time order, with its own ego pose
    by_ch: dict[str, list[dict]] = {}
    for sd in nusc.sample_data:
        by_ch.setdefault(sd["channel"], []).append(sd)
        assert nusc.get("ego_pose", sd["ego_pose_token"])["timestamp"] == sd["timestamp"]
    for ch, sds in by_ch.items():
        first = [sd for sd in sds if sd["prev"] == ""]
        assert len(first) == 1, ch
        walk, sd = [], first[0]
        while True:
            walk.append(sd)
            if not sd["next"]:
                break
            sd = nusc.get("sample_data", sd["next"])
        assert len(walk) == len(sds) and np.all(np.diff([s["timestamp"] for s in walk]) > 0), ch
    assert len(by_ch["LIDAR_TOP"]) == len(dl.sweeps) == 23
    assert sum(sd["is_key_frame"] for sd in by_ch["LIDAR_TOP"]) == 3
    for s in chain:
        lid = nusc.get("sample_data", s["data"]["LIDAR_TOP"])
        assert lid["timestamp"] == s["timestamp"] and lid["filename"].startswith("samples/LIDAR_TOP/")
        dt = {ch: s["timestamp"] - nusc.get("sample_data", s["data"][ch])["timestamp"] for ch in NUSCENES_CAMERAS}
        # exposures triggered as the LiDAR crosses each camera: CAM_BACK at the sweep's start, CAM_FRONT half a sweep before its end
        assert dt["CAM_BACK"] == 50_000 and dt["CAM_FRONT"] == 25_000 and all(0 < v <= 50_000 for v in dt.values())
    cams = [sd for sd in nusc.sample_data if sd["channel"] == "CAM_FRONT"]
    assert np.allclose(np.diff([sd["timestamp"] for sd in cams]), 1e6 / 12, atol=1)  # 12 Hz
    sweeps = [sd for sd in cams if not sd["is_key_frame"]]
    assert sweeps and all(sd["filename"].startswith("sweeps/") for sd in sweeps)
    assert all(sd["fileformat"] == "jpg" and (sd["width"], sd["height"]) == (80, 45) for sd in cams)  # JPEG, 0.05 x 1600x900
    assert chain[0]["timestamp"] == DEFAULT_EPOCH_US + dl.sweeps[0].t_us


def test_list_scenes_and_log_and_map(nusc: NuScenes, dl, capsys: pytest.CaptureFixture[str]) -> None:
    nusc.list_scenes()
    out = capsys.readouterr().out
    assert dl.name in out and "loopdrive-tiny-s0" in out and "#anns:" in out
    log_rec = nusc.get("log", nusc.scene[0]["log_token"])
    mask = nusc.get("map", log_rec["map_token"])["mask"]
    # the ego drives on the painted lanes; far outside the town is off the mask
    for sd in nusc.sample_data[::7]:
        ep = nusc.get("ego_pose", sd["ego_pose_token"])
        assert mask.is_on_mask(ep["translation"][0], ep["translation"][1])[0]
    assert not mask.is_on_mask(5.0, 5.0)[0]
    off = _offset(nusc, dl)
    assert off[0] > 250 and off[1] > 550 and off[2] == pytest.approx(0.0, abs=1e-9)  # a real-map-like offset


# ----------------------------------------------------------------------------- devkit accessors vs truth
def test_get_sample_data_boxes_in_the_lidar_frame_match_the_truth(nusc: NuScenes, dl) -> None:
    for n, s in enumerate(nusc.sample):
        sd_tok = s["data"]["LIDAR_TOP"]
        _, boxes, K = nusc.get_sample_data(sd_tok)
        assert K is None and len(boxes) == len(s["anns"]) > 0
        sw = dl.sweeps[10 * n]
        inv = np.linalg.inv(sw.sensor_to_world)
        for b in boxes:
            ann = nusc.get("sample_annotation", b.token)
            tr = next(t for t in dl.tracks if _instance_of(nusc, t) == ann["instance_token"])
            centre = _box_corners_world(tr, sw.t_us).mean(axis=1)
            np.testing.assert_allclose(b.center, inv[:3, :3] @ centre + inv[:3, 3], atol=1e-6)
            np.testing.assert_allclose(b.wlh, [tr.size[1], tr.size[0], tr.size[2]], atol=1e-9)


def _instance_of(nusc: NuScenes, track) -> str:
    return instance_token(nusc.scene[0]["name"], track.id)


def test_devkit_view_points_agree_with_loopdrive_projection(nusc: NuScenes, dl) -> None:
    """Box corners projected by the devkit (get_sample_data boxes in each key camera, view_points)
    land where loopdrive's own projection of the same truth box, with the log's camera pose and K,
    puts them."""
    worst, n_boxes = 0.0, 0
    frame_of = {(f.camera, DEFAULT_EPOCH_US + f.t_us): f for f in dl.frames}
    for s in nusc.sample:
        t_sample = s["timestamp"] - DEFAULT_EPOCH_US
        for ch in NUSCENES_CAMERAS:
            sd = nusc.get("sample_data", s["data"][ch])
            _, boxes, K = nusc.get_sample_data(sd["token"], box_vis_level=BoxVisibility.ANY)
            fr = frame_of[(ch, sd["timestamp"])]
            np.testing.assert_allclose(K, fr.K, atol=1e-9)
            for b in boxes:
                if np.any(b.corners()[2] < 0.5):
                    continue
                dev = view_points(b.corners(), K, normalize=True)[:2]
                tr = next(t for t in dl.tracks if _instance_of(nusc, t) == nusc.get("sample_annotation", b.token)["instance_token"])
                ours, _ = project_points(_box_corners_world(tr, t_sample).T, fr.c2w, fr.K)
                worst = max(worst, float(np.abs(dev - ours.T).max()))
                n_boxes += 1
    assert n_boxes >= 5
    assert worst < 1e-4, worst


def test_get_boxes_interpolates_on_sweeps_and_box_velocity(nusc: NuScenes, dl) -> None:
    s1 = nusc.sample[1]
    sweep = nusc.get("sample_data", nusc.get("sample_data", s1["data"]["LIDAR_TOP"])["prev"])
    assert not sweep["is_key_frame"] and sweep["sample_token"] == s1["token"]
    boxes = nusc.get_boxes(sweep["token"])
    assert len(boxes) == len(s1["anns"])
    checked = 0
    for a in s1["anns"]:
        ann = nusc.get("sample_annotation", a)
        v = nusc.box_velocity(a)
        assert ann["prev"] and ann["next"]  # the middle key frame: every actor annotated before and after
        p0, p1 = (nusc.get("sample_annotation", ann[k]) for k in ("prev", "next"))
        expect = (np.asarray(p1["translation"]) - np.asarray(p0["translation"])) / 1.0
        np.testing.assert_allclose(v, expect, atol=1e-9)
        inst = nusc.get("instance", ann["instance_token"])
        tr = next(t for t in dl.tracks if _instance_of(nusc, t) == inst["token"])
        if not tr.static:
            truth = (tr.pose_at(s1["timestamp"] - DEFAULT_EPOCH_US + 500_000)[:2] - tr.pose_at(s1["timestamp"] - DEFAULT_EPOCH_US - 500_000)[:2])
            np.testing.assert_allclose(v[:2], truth, atol=1e-6)
            checked += 1
    assert checked >= 2


def test_lidar_point_cloud_from_file_is_the_logged_sweep(nusc: NuScenes, dl, root: Path) -> None:
    off = _offset(nusc, dl)
    for n, s in enumerate(nusc.sample):
        sd = nusc.get("sample_data", s["data"]["LIDAR_TOP"])
        pc = LidarPointCloud.from_file(str(root / sd["filename"]))
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        ep = nusc.get("ego_pose", sd["ego_pose_token"])
        pc.rotate(Quaternion(cs["rotation"]).rotation_matrix)
        pc.translate(np.asarray(cs["translation"]))
        pc.rotate(Quaternion(ep["rotation"]).rotation_matrix)
        pc.translate(np.asarray(ep["translation"]))
        logged = dl.lidar(10 * n)
        np.testing.assert_allclose(pc.points[:3].T - off, logged[:, :3], atol=2e-4)
        np.testing.assert_allclose(pc.points[3], logged[:, 3] * 255.0, atol=1e-3)
        raw = np.fromfile(root / sd["filename"], dtype=np.float32).reshape(-1, 5)
        assert set(np.unique(raw[:, 4]).astype(int)) == set(range(32))  # ring 0..31
        np.testing.assert_array_equal(raw[:, 4], dl.lidar_extra(10 * n)[:, 1])
    # LIDAR_TOP is mounted like nuScenes': x to the right (yaw -90 deg)
    cs = nusc.get("calibrated_sensor", nusc.get("sample_data", nusc.sample[0]["data"]["LIDAR_TOP"])["calibrated_sensor_token"])
    assert Quaternion(cs["rotation"]).yaw_pitch_roll[0] == pytest.approx(-np.pi / 2, abs=1e-9)


def test_annotations_count_points_and_visibility(nusc: NuScenes, root: Path) -> None:
    cats = {nusc.get("category", i["category_token"])["name"] for i in nusc.instance}
    assert "vehicle.car" in cats and cats <= {"vehicle.car", "vehicle.truck", "vehicle.bus.rigid", "vehicle.bicycle", "human.pedestrian.adult"}
    attrs = {nusc.get("attribute", t)["name"] for a in nusc.sample_annotation for t in a["attribute_tokens"]}
    assert {"vehicle.parked", "vehicle.moving"} <= attrs
    for a in nusc.sample_annotation:
        assert a["visibility_token"] in {"1", "2", "3", "4"} and a["num_radar_pts"] == 0
    # the devkit's points_in_box on the (ego-motion compensated) cloud, with the exporter's margins
    # (box grown 5 cm sideways and on top, ground returns in its bottom 5 cm left out), finds exactly
    # the counted returns of a still actor, and nearly those of a moving one (counted at firing time)
    n_static = n_moving = 0
    for s in nusc.sample:
        sd_tok = s["data"]["LIDAR_TOP"]
        pts = LidarPointCloud.from_file(nusc.get_sample_data_path(sd_tok)).points[:3]
        _, boxes, _ = nusc.get_sample_data(sd_tok)
        for b in boxes:
            n = nusc.get("sample_annotation", b.token)["num_lidar_pts"]
            grown = Box(b.center, b.wlh + 0.1, b.orientation)
            up = b.orientation.rotation_matrix[:, 2]
            above = (pts - b.center[:, None]).T @ up > -b.wlh[2] / 2 + 0.05
            dev = int((points_in_box(grown, pts) & above).sum())
            if np.linalg.norm(nusc.box_velocity(b.token)) < 0.1:
                assert dev == n
                n_static += 1
            else:
                assert abs(dev - n) <= max(2, 0.2 * n), (dev, n)
                n_moving += 1
    assert n_static >= 5 and n_moving >= 5
    # instances chain their annotations
    for inst in nusc.instance:
        walk, tok = 0, inst["first_annotation_token"]
        while tok:
            walk += 1
            last, tok = tok, nusc.get("sample_annotation", tok)["next"]
        assert walk == inst["nbr_annotations"] and last == inst["last_annotation_token"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the devkit's own int(array) in render_ego_centric_map
def test_render_sample_data_to_files(nusc: NuScenes, tmp_path: Path) -> None:
    s = nusc.sample[1]
    for ch in ("CAM_FRONT", "LIDAR_TOP"):
        out = tmp_path / f"{ch}.png"
        nusc.render_sample_data(s["data"][ch], out_path=str(out), verbose=False)
        assert out.is_file() and out.stat().st_size > 5000
    import matplotlib.pyplot as plt

    plt.close("all")


# ----------------------------------------------------------------------------- the spinning LiDAR
def test_spinning_lidar_points_are_fired_from_the_pose_at_their_own_time(dl) -> None:
    """Each return lies exactly on its beam (ring) and column direction seen from the sensor pose at
    its firing time; seen from the sweep's time-stamp pose (ignoring the ego's motion) it does not."""
    li = dl.meta["rig"]["lidar"]
    assert li["firing"] == "spin_cw" and li["rate_hz"] == 20.0
    v2l = np.asarray(li["vehicle_from_lidar"])
    lo, hi = li["vertical_fov_deg"]
    beam_el = np.radians(np.linspace(hi, lo, li["beams"]))[::-1]  # ring 0 = lowest
    col = 2 * np.pi / li["azimuth_steps"]
    j = 12
    sw = dl.sweeps[j]
    pts, extra = dl.lidar(j).astype(np.float64), dl.lidar_extra(j)
    t = sw.t_us + extra[:, 0].astype(np.int64)
    assert extra[:, 0].min() >= -50_000 and extra[:, 0].max() <= 0 and len(np.unique(t)) > 100

    def residuals(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pose, _ = track_poses((dl.ego,), times)
        e = pose[:, 0]
        c, s = np.cos(e[:, 3]), np.sin(e[:, 3])
        d = pts[:, :3] - e[:, :3]
        veh = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], 1)
        p_s = (veh - v2l[:3, 3]) @ v2l[:3, :3]
        el = np.arctan2(p_s[:, 2], np.hypot(p_s[:, 0], p_s[:, 1]))
        az = np.arctan2(p_s[:, 1], p_s[:, 0]) % (2 * np.pi)
        az_res = np.abs((az / col) - np.round(az / col)) * col
        return np.abs(el - beam_el[extra[:, 1].astype(int)]), az_res

    el_res, az_res = residuals(t)
    assert el_res.max() < 1e-4 and az_res.max() < 1e-4
    _, az_ref = residuals(np.full(len(t), sw.t_us))
    assert np.percentile(az_ref, 99) > 20 * az_res.max()


# ----------------------------------------------------------------------------- CLI and atomicity
def test_cli_export_nuscenes_writes_and_refuses(ns_log: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli_root"
    res = runner.invoke(app, ["export-nuscenes", str(ns_log), "--out", str(out), "--version", "v1.0-loopdrive", "--image-format", "png"])
    assert res.exit_code == 0, res.output
    nusc = NuScenes(version="v1.0-loopdrive", dataroot=str(out), verbose=False)
    sd = nusc.get("sample_data", nusc.sample[0]["data"]["CAM_FRONT"])
    assert sd["fileformat"] == "png" and sd["filename"].endswith(".png")
    res = runner.invoke(app, ["export-nuscenes", str(ns_log), "--out", str(out)])
    assert res.exit_code == 2 and "--overwrite" in res.output and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(app, ["export-nuscenes", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")])
    assert res.exit_code == 2 and "drive-log folder" in res.output
    assert not (tmp_path / "r2").exists()


def test_failed_export_leaves_nothing(ns_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sim.importers import nuscenes_truth

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(nuscenes_truth, "visibility_level", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export_nuscenes(ns_log, tmp_path / "root")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, needle", [
    (["--rig", "nuscenes", "--width", "100"], "--width"),
    (["--rig", "nuscenes", "--rate", "10"], "--rate"),
    (["--rig", "nuscenes", "--cameras", "CAM_FRONT,front"], "--cameras"),
    (["--rig", "nuscenes", "--image-scale", "0"], "--image-scale"),
    (["--rig", "fisheye"], "--rig"),
])
def test_synth_cli_refuses_bad_rig_options_before_rendering(tmp_path: Path, args: list[str], needle: str) -> None:
    res = CliRunner().invoke(app, ["synth", "--town", "tiny", "--frames", "4", "--out", str(tmp_path / "log"), *args])
    assert res.exit_code == 2 and needle in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "log").exists()
