"""Realism knobs (sim.synth.realism): each knob changes what it should and nothing else, same seed
same bytes, the clean truth stays untouched; ``loopdrive realism`` and the recon round-trip
benchmark's plumbing (frame alignment, actor ids, the smoke budget)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sim.errors import ScenarioError
from sim.log import DriveLog, read_log
from sim.synth.realism import REALISM_PRESETS, RealismConfig, apply_realism, get_realism, vehicle_matrix
from tests._nuscenes import ns_export


def _app():  # the whole CLI, imported only by the tests that run it
    from sim.cli import app

    return app


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ns_export(tmp_path_factory)[0]


def _apply(clean: Path, tmp: Path, name: str, **knobs: float) -> DriveLog:
    out = apply_realism(clean, tmp / name, RealismConfig(**knobs))
    return read_log(out)


def _same_images(a: DriveLog, b: DriveLog) -> bool:
    return all(np.array_equal(a.image(i), b.image(i)) for i in range(len(a.frames)))


def _same_cameras(a: DriveLog, b: DriveLog) -> bool:
    return all(f.t_us == g.t_us and np.array_equal(f.c2w, g.c2w) for f, g in zip(a.frames, b.frames, strict=True))


def _same_lidar(a: DriveLog, b: DriveLog) -> bool:
    return all(s.t_us == r.t_us and np.array_equal(s.sensor_to_world, r.sensor_to_world) and np.array_equal(a.lidar(s.index), b.lidar(r.index))
               for s, r in zip(a.sweeps, b.sweeps, strict=True))


def _same_tracks(a: DriveLog, b: DriveLog, ego: bool = True, actors: bool = True) -> bool:
    ok = True
    if ego:
        ok &= np.array_equal(a.ego.pose, b.ego.pose)
    if actors:
        ok &= all(np.array_equal(s.pose, t.pose) and s.size == t.size for s, t in zip(a.tracks, b.tracks, strict=True))
    return bool(ok)


def test_clean_level_copies_every_payload_and_records_the_truth(clean: Path, tmp_path: Path) -> None:
    before = _hashes(clean)
    a, b = read_log(clean), _apply(clean, tmp_path, "copy")
    assert _same_images(a, b) and _same_cameras(a, b) and _same_lidar(a, b) and _same_tracks(a, b)
    assert all(np.array_equal(a.depth(i), b.depth(i)) for i in range(len(a.frames)))
    assert b.meta["synth"]["realism"]["exposure_camera_stops"] == 0 and b.meta["synth"]["truth"] == a.name
    assert _hashes(clean) == before  # the truth is never written


@pytest.mark.parametrize("knob, value", [("exposure_camera_stops", 0.3), ("exposure_frame_stops", 0.1), ("wb_camera", 0.05),
                                         ("wb_frame", 0.02), ("vignetting", 0.25), ("motion_blur_ms", 8.0), ("noise_read", 2.0),
                                         ("noise_shot", 3.0)])
def test_photometric_knob_changes_images_only(clean: Path, tmp_path: Path, knob: str, value: float) -> None:
    a, b = read_log(clean), _apply(clean, tmp_path, knob, **{knob: value})
    assert not _same_images(a, b)
    assert _same_cameras(a, b) and _same_lidar(a, b) and _same_tracks(a, b)


def test_exposure_is_one_gain_per_camera_and_white_balance_leaves_green(clean: Path, tmp_path: Path) -> None:
    a, b = read_log(clean), _apply(clean, tmp_path, "exp", exposure_camera_stops=0.3)
    lin = lambda x: (x.astype(np.float64) / 255.0) ** 2.2  # noqa: E731
    gains: dict[str, list[float]] = {}
    for f in a.frames:
        x, y = lin(a.image(f.index)), lin(b.image(f.index))
        m = (x > 0.02) & (x < 0.3) & (y < 0.95)
        gains.setdefault(f.camera, []).append(float(np.median(y[m] / x[m])))
    per_cam = {c: np.median(g) for c, g in gains.items()}
    assert all(np.ptp(g) < 0.06 for g in gains.values())  # constant within a camera (8-bit rounding)
    assert np.ptp(list(per_cam.values())) > 0.1  # different between cameras
    w = _apply(clean, tmp_path, "wb", wb_camera=0.05)
    assert all(np.array_equal(a.image(i)[..., 1], w.image(i)[..., 1]) for i in range(len(a.frames)))
    assert not all(np.array_equal(a.image(i)[..., 0], w.image(i)[..., 0]) for i in range(len(a.frames)))


def test_vignetting_darkens_corners_not_the_centre(clean: Path, tmp_path: Path) -> None:
    a, b = read_log(clean), _apply(clean, tmp_path, "vig", vignetting=0.3)
    corner = centre = 0.0
    for i in range(len(a.frames)):
        d = b.image(i).astype(np.float64) - a.image(i)
        h, w = d.shape[:2]
        corner += d[:3, :3].mean() + d[-3:, -3:].mean()
        centre += np.abs(d[h // 2 - 1: h // 2 + 1, w // 2 - 1: w // 2 + 1]).mean()
    assert corner < -2.0 * len(a.frames) and centre < 0.5 * len(a.frames)


def test_sensor_noise_has_the_documented_size(clean: Path, tmp_path: Path) -> None:
    a, b = read_log(clean), _apply(clean, tmp_path, "noise", noise_read=2.0)
    d = np.concatenate([(b.image(i).astype(np.float64) - a.image(i)).ravel() for i in range(len(a.frames))])
    assert abs(d.std() - 2.0) < 0.2 and abs(d.mean()) < 0.1


def test_lidar_time_offset_moves_only_the_sweeps(clean: Path, tmp_path: Path) -> None:
    a, b = read_log(clean), _apply(clean, tmp_path, "lt", lidar_time_offset_ms=4.0)
    assert [s.t_us + 4000 for s in a.sweeps] == [s.t_us for s in b.sweeps]
    assert _same_images(a, b) and _same_cameras(a, b) and _same_tracks(a, b)
    # the logged pose is the ego's pose at the late stamp; the points moved with it (the car moves)
    moved = [float(np.linalg.norm(r.sensor_to_world[:3, 3] - s.sensor_to_world[:3, 3])) for s, r in zip(a.sweeps, b.sweeps, strict=True)]
    assert 0.0 < np.median(moved) < 0.2
    for s, r in zip(a.sweeps, b.sweeps, strict=True):
        m = r.sensor_to_world @ np.linalg.inv(s.sensor_to_world)
        p = a.lidar(s.index)[:, :3].astype(np.float64)
        assert np.allclose(p @ m[:3, :3].T + m[:3, 3], b.lidar(r.index)[:, :3], atol=1e-3)


def test_ego_pose_noise_moves_every_sensor_pose_with_the_ego(clean: Path, tmp_path: Path) -> None:
    a, b = read_log(clean), _apply(clean, tmp_path, "ego", ego_position_m=0.05, ego_yaw_deg=0.2)
    err = b.ego.pose - a.ego.pose
    assert 0.01 < np.abs(err[:, :2]).max() < 0.3 and np.abs(err[:, 3]).max() < math.radians(1.0)
    assert _same_images(a, b) and _same_tracks(a, b, ego=False)
    for f, g in zip(a.frames, b.frames, strict=True):
        m = vehicle_matrix(b.ego.pose_at(f.t_us)) @ np.linalg.inv(vehicle_matrix(a.ego.pose_at(f.t_us)))
        assert np.allclose(m @ f.c2w, g.c2w, atol=1e-6)
    assert not _same_lidar(a, b)


def test_box_label_noise_changes_actor_boxes_only(clean: Path, tmp_path: Path) -> None:
    a, b = read_log(clean), _apply(clean, tmp_path, "box", box_position_m=0.1, box_yaw_deg=1.0, box_size_frac=0.03)
    assert _same_images(a, b) and _same_cameras(a, b) and _same_lidar(a, b) and _same_tracks(a, b, actors=False)
    dxy = np.concatenate([(t.pose - s.pose)[:, :2].ravel() for s, t in zip(a.tracks, b.tracks, strict=True)])
    assert 0.07 < dxy.std() < 0.13
    assert all(s.id == t.id and np.array_equal(s.t_us, t.t_us) for s, t in zip(a.tracks, b.tracks, strict=True))
    assert any(s.size != t.size for s, t in zip(a.tracks, b.tracks, strict=True))


def test_same_seed_same_bytes_other_seed_other_bytes(clean: Path, tmp_path: Path) -> None:
    cfg = get_realism("real_like", seed=3)
    h1 = _hashes(apply_realism(clean, tmp_path / "a", cfg, name="x"))
    h2 = _hashes(apply_realism(clean, tmp_path / "b", cfg, name="x"))
    h3 = _hashes(apply_realism(clean, tmp_path / "c", dataclasses.replace(cfg, seed=4), name="x"))
    assert h1 == h2 and h1 != h3


def test_one_knob_never_changes_another_knobs_draws(clean: Path, tmp_path: Path) -> None:
    a = _apply(clean, tmp_path, "boxonly", box_position_m=0.1)
    b = _apply(clean, tmp_path, "boxnoise", box_position_m=0.1, noise_read=2.0, ego_position_m=0.05)
    assert all(np.array_equal(s.pose, t.pose) for s, t in zip(a.tracks, b.tracks, strict=True))


def test_bad_knobs_and_levels_are_refused(clean: Path, tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"realism\.noise_read"):
        RealismConfig(noise_read=-1.0)
    with pytest.raises(ScenarioError, match=r"realism\.motion_blur_ms"):
        RealismConfig(motion_blur_ms=float("nan"))
    with pytest.raises(ScenarioError, match="known: clean, real_like"):
        get_realism("very_real")
    assert REALISM_PRESETS["clean"].is_clean and not REALISM_PRESETS["real_like"].is_clean


def test_realism_command(clean: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(_app(), ["realism", str(clean), "--out", str(tmp_path / "rl"), "--level", "real_like", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert read_log(tmp_path / "rl").meta["synth"]["realism"]["seed"] == 1
    r = CliRunner().invoke(_app(), ["realism", str(clean), "--out", str(tmp_path / "x"), "--level", "nope"])
    assert r.exit_code == 2 and "--level" in r.output and not (tmp_path / "x").exists()
    r = CliRunner().invoke(_app(), ["realism", str(clean), "--out", str(clean), "--overwrite"])
    assert r.exit_code == 2 and "truth stays untouched" in r.output


# ------------------------------------------------------------------------------ the benchmark
def test_imported_log_aligns_with_the_truth(clean: Path, tmp_path: Path) -> None:
    from sim.bench.recon_roundtrip import AlignedScene, actor_id_map, alignment
    from sim.importers import import_log
    from sim.importers.nuscenes_export import DEFAULT_EPOCH_US, export_nuscenes

    root = export_nuscenes(clean, tmp_path / "root", image_format="png")
    imp = read_log(import_log("nuscenes", root, tmp_path / "imp", cameras="all", sweeps=True))
    nat = read_log(clean)
    shift, dt, check = alignment(nat, imp, DEFAULT_EPOCH_US)
    assert check["frame_order_same"] and check["camera_position_max_m"] < 1e-5
    ids = actor_id_map(nat, imp)
    assert ids and all(ids.values())

    class Stub:  # records what the bundle is asked
        def __init__(self) -> None:
            self.info = {"camera": "CAM_FRONT", "eval_every": 10}
            self.actors = [type("A", (), {"id": i})() for v in ids.values() for i in v]
            self.tracks = imp.tracks

        def actors_at(self, t_us: int, remove: tuple[str, ...] = (), moves: dict | None = None) -> tuple:
            return t_us, remove, moves

        def render_camera(self, c2w: np.ndarray, *a: object) -> np.ndarray:
            return c2w

    s = AlignedScene(Stub(), shift, dt, ids, ["CAM_BACK"], 5)
    f, g = nat.frames[3], imp.frames[3]
    assert np.allclose(s.render_camera(f.c2w), g.c2w, atol=1e-6) and s.info["camera"] == "CAM_BACK"
    nid = next(t.id for t in nat.tracks if ids[t.id])
    t, rm, mv = s.actors_at(g.t_us + dt, remove=(nid,), moves={nid: (1.0, 2.0, 0.0, 0.5)})
    assert t == g.t_us and set(rm) == set(ids[nid])
    assert all(np.allclose(np.array(p[:3]) + shift, [1.0, 2.0, 0.0]) for p in mv.values())


def test_bench_command_refuses_bad_budget_and_variant(tmp_path: Path) -> None:
    for args, flag in ((["--budget", "huge"], "--budget"), (["--variants", "clean,nope"], "--variants")):
        r = CliRunner().invoke(_app(), ["bench", "recon-roundtrip", *args, "--work", str(tmp_path / "w"), "--out", str(tmp_path / "r.json")])
        assert r.exit_code == 2 and flag in r.output and not (tmp_path / "r.json").exists()


def test_smoke_budget_runs_the_whole_chain(tmp_path: Path) -> None:
    import json

    r = CliRunner().invoke(_app(), ["bench", "recon-roundtrip", "--budget", "smoke", "--variants", "clean,real_like",
                                 "--work", str(tmp_path / "w"), "--out", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "r.json").read_text())
    for name in ("clean", "real_like"):
        v = res["variants"][name]
        assert v["status"] == "ok" and v["alignment"]["frame_order_same"]
        assert set(v["per_camera"]) == {"CAM_FRONT", "CAM_BACK"} and v["summary"]["mean_heldout_psnr"] is not None
        assert v["lidar"]["median_abs_range_err_m"] is not None
    assert res["comparisons"]["realism_loss_heldout_db"] is not None
    assert read_log(tmp_path / "w" / "native-real_like").meta["synth"]["realism"]["motion_blur_ms"] == 8.0


def test_synth_with_realism_writes_the_truth_beside_the_log(tmp_path: Path) -> None:
    args = ["synth", "--town", "tiny", "--frames", "3", "--width", "48", "--height", "32", "--beams", "4", "--azimuth", "64",
            "--out", str(tmp_path / "log")]
    r = CliRunner().invoke(_app(), [*args, "--realism", "real_like", "--realism-seed", "2"])
    assert r.exit_code == 0, r.output
    noisy, truth = read_log(tmp_path / "log"), read_log(tmp_path / "log-truth")
    assert noisy.meta["synth"]["realism"]["seed"] == 2 and "realism" not in truth.meta["synth"]
    assert not _same_images(truth, noisy) and not _same_tracks(truth, noisy)
    r = CliRunner().invoke(_app(), [*args[:-1], str(tmp_path / "x"), "--realism", "very"])
    assert r.exit_code == 2 and "--realism" in r.output and not (tmp_path / "x").exists()
