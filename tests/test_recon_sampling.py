"""Where the six-camera reconstructor samples and which boxes it trains with (issue 23): fallback
samples on rays the LiDAR occupancy grid misses, and tracks extended from the first / last
keyframe to the log's sensor span."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from sim.log import read_log, track_to_json
from sim.recon.config import SceneConfig
from sim.recon.data import ReconData, extend_tracks_to_log
from sim.recon.occupancy import background_samples, candidate_edges
from sim.recon.toyscene import write_toy_scene


def _rays(cfg: SceneConfig) -> tuple[torch.Tensor, torch.Tensor]:
    e = candidate_edges(cfg)
    occ = torch.zeros(2, e.shape[0] - 1, dtype=torch.bool)
    occ[0, 40:50] = True  # ray 0 crosses occupied cells; ray 1 none
    return e, occ


def test_a_ray_through_no_occupied_cell_gets_spread_samples_only_with_the_fallback() -> None:
    off = SceneConfig()
    e, occ = _rays(off)
    t0, w0, v0 = background_samples(off, e, occ, None)
    assert int(v0[0].sum()) == 10 and not v0[1].any()  # off: only the occupied cells, the miss sees sky
    on = dataclasses.replace(off, fallback_from_m=5.0)
    t1, w1, v1 = background_samples(on, e, occ, None)
    # the ray with occupied cells is sampled exactly as before
    assert torch.equal(v1[0], v0[0]) and torch.equal(t1[0][v1[0]], t0[0][v0[0]]) and torch.equal(w1[0][v1[0]], w0[0][v0[0]])
    # the miss: samples_bg samples in increasing order from 5 m to far, their intervals tiling it
    assert bool(v1[1].all()) and v1.shape[1] == on.samples_bg
    t, w = t1[1], w1[1]
    assert float(t[0]) >= 5.0 - 1e-4 and float(t[-1]) < on.far_m and bool((t[1:] > t[:-1]).all())
    assert abs(float(w.sum()) - (on.far_m - 5.0)) < 0.5
    assert float(t[-1]) > 0.6 * on.far_m  # spread to the far end, not bunched near the start


def test_jittered_fallback_samples_stay_inside_their_own_interval() -> None:
    cfg = SceneConfig(fallback_from_m=3.0)
    e, occ = _rays(cfg)
    mid, w, _ = background_samples(cfg, e, occ, None)
    lo, _, _ = background_samples(cfg, e, occ, torch.zeros(2, cfg.samples_bg))
    hi, _, _ = background_samples(cfg, e, occ, torch.full((2, cfg.samples_bg), 0.999))
    assert bool((lo[1] < mid[1]).all() and (mid[1] < hi[1]).all())
    assert bool((hi[1, :-1] <= lo[1, 1:] + 1e-4).all())  # neighbouring samples' intervals do not overlap
    assert torch.allclose(hi[1] - lo[1], 0.999 * w[1], rtol=1e-3)


def _keyframed(root: Path) -> tuple[object, object]:
    """The toy log and a copy whose tracks start one step late and end one step early (boxes only
    between the first and last 'keyframe', as an imported nuScenes log has them)."""
    dl = read_log(root)
    cut = tuple(dataclasses.replace(t, t_us=t.t_us[1:-1], pose=t.pose[1:-1]) for t in dl.tracks)
    return dl, dataclasses.replace(dl, tracks=cut)


def test_tracks_are_extended_from_the_first_and_last_keyframe_to_the_sensors(tmp_path: Path) -> None:
    full, cut = _keyframed(write_toy_scene(tmp_path / "toy", frames=8))
    assert extend_tracks_to_log(full) is full  # tracks already spanning the sensors: unchanged
    ts = [f.t_us for f in full.frames] + [s.t_us for s in full.sweeps]
    lo, hi = min(ts), max(ts)
    assert all(t.pose_at(lo) is None and t.pose_at(hi) is None for t in cut.tracks)
    ext = extend_tracks_to_log(cut)
    for a, b in zip(full.tracks, ext.tracks, strict=True):
        assert b.t_us[0] == lo and b.t_us[-1] == hi
        # the toy's actors move at constant velocity: the extrapolated boxes are the true ones
        np.testing.assert_allclose(b.pose_at(lo), a.pose_at(lo), atol=1e-6)
        np.testing.assert_allclose(b.pose_at(hi), a.pose_at(hi), atol=1e-6)
    # a track that starts after the first keyframe really appears later: left alone
    late = dataclasses.replace(cut.tracks[0], t_us=cut.tracks[0].t_us[2:], pose=cut.tracks[0].pose[2:])
    mixed = extend_tracks_to_log(dataclasses.replace(cut, tracks=(late, *cut.tracks[1:])))
    assert mixed.tracks[0].t_us[0] == late.t_us[0] and mixed.tracks[0].t_us[-1] == hi
    # more than max_us to fill: left alone
    assert extend_tracks_to_log(cut, max_us=1) is cut


def test_training_data_places_the_boxes_at_frames_before_the_first_keyframe(tmp_path: Path) -> None:
    root = write_toy_scene(tmp_path / "toy", frames=8)
    full, cut = _keyframed(root)
    # write the cut tracks back as the log's tracks.json, as an importer would
    (root / "tracks.json").write_text(json.dumps({"ego": track_to_json(full.ego), "tracks": [track_to_json(t) for t in cut.tracks]}))
    data = ReconData.from_log(read_log(root), SceneConfig(occ_voxel_m=0.3, hash_log2_size=12, hash_levels=4), load_images=False)
    assert bool(data.cam_valid[0].all()) and bool(data.cam_valid[len(full.frames) - 1].all())
    for a, t in enumerate(full.tracks):
        np.testing.assert_allclose(data.cam_pose[0, a].numpy(), t.pose_at(full.frames[0].t_us), atol=1e-4)


def test_the_quick_preset_has_its_own_settings_for_several_cameras() -> None:
    from sim.recon.method import make_trainer_config
    from sim.recon.presets import PRESETS, preset_settings

    one, many = preset_settings("quick"), preset_settings("quick", multi_camera=True)
    assert "multi_camera" not in one and one == {k: v for k, v in PRESETS["quick"].items() if k != "multi_camera"}
    # merged field by field: the single-camera settings it does not name are kept
    assert many["model"]["footprint_scale"] == one["model"]["footprint_scale"] and many["datamanager"]["patches"] == one["datamanager"]["patches"]
    assert "first_camera_weight" not in one["datamanager"] and many["datamanager"]["first_camera_weight"] > 1
    assert many["iterations"] > one["iterations"] and many["model"]["max_train_seconds"] > one["model"]["max_train_seconds"]
    assert preset_settings("full", multi_camera=True) == preset_settings("full")  # the full preset has none
    single, multi = make_trainer_config("quick"), make_trainer_config("quick", multi_camera=True)
    assert single.pipeline.model.upsample == 4 and multi.pipeline.model.upsample == 2
    assert single.pipeline.datamanager.first_camera_weight == 1.0 and single.pipeline.model.w_rgb_aux == 0.5  # one camera: unchanged
    assert multi.pipeline.datamanager.first_camera_weight == 2.0 and multi.pipeline.model.w_rgb_aux == 0.1
    assert multi.max_num_iterations == many["iterations"] and multi.pipeline.model.max_train_seconds == many["model"]["max_train_seconds"]
    assert multi.optimizers["grids"]["optimizer"].lr == many["lr_grid"] and single.optimizers["grids"]["optimizer"].lr == one["lr_grid"]


def test_train_bundle_uses_the_single_camera_settings_for_one_camera(tmp_path: Path) -> None:
    from sim.recon.run import train_bundle

    root = write_toy_scene(tmp_path / "toy", frames=6)
    info = train_bundle(root, tmp_path / "b", preset="quick", iterations=2, camera=None,
                        overrides={"patch": 8, "hash_log2_size": 12, "hash_levels": 4, "lidar_rays": 128})
    assert not info["multi_camera"] and info["cameras"] == ["front"]
    from sim.recon.bundle import load_bundle

    assert load_bundle(tmp_path / "b").scene.cfg.upsample == 4  # the single-camera decoder


def test_ns_train_takes_the_multi_camera_settings_when_the_data_selects_several_cameras(tmp_path: Path) -> None:
    import tyro

    from sim.recon.method import LoopdriveTrainerConfig, make_trainer_config
    from sim.recon.presets import preset_settings

    root = write_toy_scene(tmp_path / "toy2", frames=4, cameras=2)
    many = preset_settings("quick", multi_camera=True)

    def cli(*args: str) -> LoopdriveTrainerConfig:  # as ns-train builds it: tyro over the method's default config
        return tyro.cli(LoopdriveTrainerConfig, default=make_trainer_config("quick"), args=["--data", str(root), *args])

    one = cli()  # the dataparser's default: the rig's first camera only
    assert not one.multi_camera and one.max_num_iterations == preset_settings("quick")["iterations"] and one.pipeline.model.upsample == 4
    both = cli("--pipeline.datamanager.dataparser.camera", "all")
    assert both.multi_camera and both.max_num_iterations == many["iterations"] and both.pipeline.model.upsample == 2
    assert both.optimizers["grids"]["optimizer"].lr == many["lr_grid"] and both.pipeline.model.max_train_seconds == many["model"]["max_train_seconds"]
    assert both.optimizers["grids"]["scheduler"].max_steps == many["iterations"]
    # a flag given on the command line (to another value than the single-camera one) wins
    mine = cli("--pipeline.datamanager.dataparser.camera", "front,left", "--max-num-iterations", "7", "--pipeline.model.upsample", "1")
    assert mine.multi_camera and mine.max_num_iterations == 7 and mine.pipeline.model.upsample == 1
    assert mine.pipeline.model.max_train_seconds == many["model"]["max_train_seconds"]
    assert not cli("--data", str(tmp_path / "missing"), "--pipeline.datamanager.dataparser.camera", "all").multi_camera  # unreadable: left to training
