"""The neural scene reconstructor (sim.recon): nerfstudio integration, training, actor edits, bundles.

Most tests share one scene trained for a few hundred iterations with the plain loop on the analytic
toy log (:mod:`sim.recon.toyscene`: exact boxes, so edits can be checked against projected boxes).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import torch

from sim.errors import BundleError
from sim.log import read_log
from sim.recon.bundle import load_bundle, save_bundle
from sim.recon.data import ReconData
from sim.recon.scene import SceneConfig, SceneModel
from sim.recon.toyscene import write_toy_scene
from sim.recon.train import BatchSpec, fit, psnr

TRAIN_ITERS = 200
CFG = SceneConfig(upsample=2, occ_voxel_m=0.3, hash_log2_size=15, hash_levels=6)
SPEC = BatchSpec(patches=4, patch=8, lidar_rays=512, lidar_sweeps=4)


@pytest.fixture(scope="module")
def toy_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_scene(tmp_path_factory.mktemp("recon") / "toy", frames=20)


def _train_psnr(scene: SceneModel, data: ReconData) -> float:
    vals = []
    for f in data.train_frames[::3]:
        r = scene.render_camera(data.c2w[f], data.K[f], data.width, data.height, data.actors_for_frames([f]))
        vals.append(psnr(r["rgb"], data.image_float(f)))
    return float(np.mean(vals))


def _lidar_err(scene: SceneModel, data: ReconData) -> float:
    errs = []
    for j in data.train_sweeps[::4]:
        assert data.lidar_dirs is not None and data.lidar_range is not None and data.s2w is not None
        r = scene.render_lidar(data.s2w[j], data.lidar_dirs[j], data.actors_for_sweeps([j]))
        hit = data.lidar_range[j] > 0
        errs.append((r["range"][hit] - data.lidar_range[j][hit]).abs())
    return float(torch.cat(errs).median())


@pytest.fixture(scope="module")
def trained(toy_log: Path) -> dict:
    torch.set_num_threads(1)  # the suite shares 2 cores: one thread avoids OpenMP oversubscription
    data = ReconData.from_log(read_log(toy_log), CFG)
    scene = SceneModel(data.cfg, data.occupancy)
    before = (_train_psnr(scene, data), _lidar_err(scene, data))
    fit(scene, data, TRAIN_ITERS, SPEC, seed=0)
    after = (_train_psnr(scene, data), _lidar_err(scene, data))
    return {"data": data, "scene": scene, "before": before, "after": after}


# ------------------------------------------------------------------------------------ nerfstudio
def test_entry_points_resolve_to_nerfstudio_specs() -> None:
    from nerfstudio.plugins.registry_dataparser import DataParserSpecification
    from nerfstudio.plugins.types import MethodSpecification

    from sim.recon.method import LoopdriveDataManagerConfig, LoopdriveReconModelConfig

    methods = {ep.name: ep for ep in entry_points(group="nerfstudio.method_configs")}
    for name in ("loopdrive-recon", "loopdrive-recon-quick"):
        spec = methods[name].load()
        assert isinstance(spec, MethodSpecification)
        assert spec.config.method_name == name
        assert isinstance(spec.config.pipeline.datamanager, LoopdriveDataManagerConfig)
        assert isinstance(spec.config.pipeline.model, LoopdriveReconModelConfig)
        assert spec.config.machine.device_type == "cpu"
        # the grids and networks are stepped by torch's fused CPU Adam (one pass per tensor)
        for group in ("grids", "networks"):
            opt = spec.config.optimizers[group]["optimizer"].setup([torch.nn.Parameter(torch.zeros(3))])
            assert isinstance(opt, torch.optim.Adam) and opt.defaults["fused"] is True
    parsers = {ep.name: ep for ep in entry_points(group="nerfstudio.dataparser_configs")}
    assert isinstance(parsers["loopdrive-log"].load(), DataParserSpecification)


def test_ns_train_runs_quick_method_through_nerfstudio_cli(toy_log: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "ns-train"
    cmd = [str(exe), "loopdrive-recon-quick", "--data", str(toy_log), "--output-dir", str(tmp_path),
           "--max-num-iterations", "4", "--viewer.quit-on-train-completion", "True", "--vis", "tensorboard",
           "--logging.local-writer.enable", "False", "--pipeline.datamanager.patch", "6",
           "--pipeline.datamanager.lidar-rays", "256", "--pipeline.model.num-threads", "1"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    ckpts = list(tmp_path.rglob("*.ckpt"))
    assert len(ckpts) == 1
    # ns-eval loads checkpoints with torch.load (weights_only on torch >= 2.6): no pickled objects
    state = torch.load(ckpts[0], map_location="cpu", weights_only=True)
    assert any(k.endswith("scene.bg_grid.table") for k in state["pipeline"])
    assert (next(tmp_path.rglob("config.yml"))).is_file()


def test_recon_cli_trains_a_bundle_with_the_chosen_decoder(toy_log: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sim.cli import app

    out = tmp_path / "b"
    res = CliRunner().invoke(app, ["recon", str(toy_log), "--out", str(out), "--iterations", "2", "--upsample", "2"])
    assert res.exit_code == 0, res.output
    b = load_bundle(out)
    assert b.scene.cfg.upsample == 2 and b.info["iterations"] == 2
    bad = CliRunner().invoke(app, ["recon", str(toy_log), "--out", str(tmp_path / "c"), "--upsample", "0"])
    assert bad.exit_code == 2 and not (tmp_path / "c").exists()


# ------------------------------------------------------------------------------------ training
def test_training_raises_psnr_and_lowers_lidar_error(trained: dict) -> None:
    (p0, e0), (p1, e1) = trained["before"], trained["after"]
    # bound: +5 dB on the training frames after 200 iterations (measured ~ +6.5 dB)
    assert p1 > p0 + 5.0, (p0, p1)
    # the median LiDAR range error at least halves
    assert e1 < 0.5 * e0, (e0, e1)


def _box_mask(data: ReconData, f: int, pose: np.ndarray, size: np.ndarray, margin_px: int) -> np.ndarray:
    """Pixels of the projected 2D bounding rectangle of a box (x, y, z bottom, yaw), dilated."""
    from sim.geometry import project_points

    l_, w_, h_ = size
    cx, cy, cz, yaw = pose
    corners = np.array([[sx * l_ / 2, sy * w_ / 2, sz * h_] for sx in (-1, 1) for sy in (-1, 1) for sz in (0, 1)])
    c, s = np.cos(yaw), np.sin(yaw)
    world = np.stack([cx + c * corners[:, 0] - s * corners[:, 1], cy + s * corners[:, 0] + c * corners[:, 1], cz + corners[:, 2]], 1)
    uv, z = project_points(world, data.c2w[f].double().numpy(), data.K[f].double().numpy())
    mask = np.zeros((data.height, data.width), dtype=bool)
    if np.all(z <= 0):
        return mask
    u0, v0 = np.floor(uv[z > 0].min(0)).astype(int) - margin_px
    u1, v1 = np.ceil(uv[z > 0].max(0)).astype(int) + margin_px
    mask[max(v0, 0) : max(v1, 0), max(u0, 0) : max(u1, 0)] = True
    return mask


def _render(scene: SceneModel, data: ReconData, f: int, pose: torch.Tensor, valid: torch.Tensor) -> np.ndarray:
    from sim.recon.scene import ActorState

    a = ActorState(torch.arange(pose.shape[0]), pose[None], data.actor_size, valid[None])
    return scene.render_camera(data.c2w[f], data.K[f], data.width, data.height, a)["rgb"].numpy()


# the CNN decoder (three 3x3 convolutions on the feature image) spreads a change by up to 3 feature
# pixels = 3 * upsample output pixels; the projected boxes are dilated by that much
MARGIN = 3 * CFG.upsample + 1


def test_moving_an_actor_moves_its_pixels(trained: dict) -> None:
    data, scene = trained["data"], trained["scene"]
    f = data.train_frames[2]
    a = data.actor_ids.index("car1")
    pose, valid = data.cam_pose[f].clone(), data.cam_valid[f].clone()
    before = _render(scene, data, f, pose, valid)
    moved = pose.clone()
    moved[a, 0] += 3.0
    after = _render(scene, data, f, moved, valid)
    diff = np.abs(after - before).sum(-1)
    size = data.actor_size[a].numpy()
    region = _box_mask(data, f, pose[a].numpy(), size, MARGIN) | _box_mask(data, f, moved[a].numpy(), size, MARGIN)
    assert diff.sum() > 5.0  # the car is visible and its pixels changed
    assert diff[region].sum() / diff.sum() > 0.95
    # and nothing changes far from the boxes
    assert diff[~region].max() < 0.05


def test_removing_an_actor_changes_only_pixels_around_its_box(trained: dict) -> None:
    data, scene = trained["data"], trained["scene"]
    f = data.train_frames[1]
    a = data.actor_ids.index("park1")
    pose, valid = data.cam_pose[f].clone(), data.cam_valid[f].clone()
    before = _render(scene, data, f, pose, valid)
    gone = valid.clone()
    gone[a] = False
    after = _render(scene, data, f, pose, gone)
    diff = np.abs(after - before).sum(-1)
    region = _box_mask(data, f, pose[a].numpy(), data.actor_size[a].numpy(), MARGIN)
    assert diff.sum() > 5.0
    assert diff[region].sum() / diff.sum() > 0.95
    assert diff[~region].max() < 0.05


def test_render_fast_path_matches_the_reference_and_is_deterministic(trained: dict) -> None:
    """Rendering (no grad) culls actors by bounding sphere (box tests only on candidate ray-actor
    pairs) and stops rays early; the reference is
    the training path (grad enabled: every actor tested on every ray, every sample evaluated)."""
    data, scene = trained["data"], trained["scene"]
    f = data.train_frames[2]
    actors = data.actors_for_frames([f])
    o, d, _ = scene.camera_rays(data.c2w[f], data.K[f], data.width, data.height, scene.cfg.upsample)
    with torch.no_grad():
        fast = scene.render_rays(o, d, actors)
        again = scene.render_rays(o, d, actors)
    with torch.enable_grad():
        ref = {k: v.detach() for k, v in scene.render_rays(o, d, actors).items()}
    assert all(torch.equal(fast[k], again[k]) for k in fast)
    assert float(ref["acc_actor"].sum()) > 10.0  # actors are in view: the culling is exercised
    assert torch.allclose(fast["acc_actor"], ref["acc_actor"], atol=1e-4)
    assert torch.allclose(fast["feat"], ref["feat"], atol=1e-3)
    assert torch.allclose(fast["depth"], ref["depth"], atol=0.05)  # early stop: <= 1e-4 of the far plane


# ------------------------------------------------------------------------------------ bundles
@pytest.fixture(scope="module")
def bundle_dir(trained: dict, toy_log: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "toy"
    data = trained["data"]
    return save_bundle(out, trained["scene"], read_log(toy_log), data.actor_ids, camera="front", info={"eval_every": 10})


def test_bundle_round_trip_renders_identically(trained: dict, bundle_dir: Path, toy_log: Path) -> None:
    data, scene = trained["data"], trained["scene"]
    b = load_bundle(bundle_dir)
    assert [a.id for a in b.actors] == data.actor_ids
    assert np.allclose(np.array(b.actors[0].latent), scene.actor_latent[0].detach().numpy(), atol=1e-6)
    dl = read_log(toy_log)
    fr = dl.frames[5]
    rgb_b, depth_b = b.render_camera(fr.c2w, fr.K, fr.width, fr.height, b.actors_at(fr.t_us))
    ref = scene.render_camera(torch.from_numpy(fr.c2w).float(), torch.from_numpy(fr.K).float(), fr.width, fr.height, data.actors_for_frames([5]))
    assert np.array_equal(rgb_b, (ref["rgb"].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy())
    assert np.array_equal(depth_b, ref["depth"].numpy())
    assert b.map == dl.map and [t.id for t in b.tracks] == [t.id for t in dl.tracks]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_tampered_weights_give_bundle_error(bundle_dir: Path, tmp_path: Path) -> None:
    bad = _copy(bundle_dir, tmp_path / "b")
    w = bad / "weights.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-100] ^= 0xFF
    w.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="sha256") as ei:
        load_bundle(bad)
    assert "weights.safetensors" in str(ei.value)


def test_mismatched_config_or_missing_file_gives_bundle_error(bundle_dir: Path, tmp_path: Path) -> None:
    bad = _copy(bundle_dir, tmp_path / "b1")
    doc = json.loads((bad / "bundle.json").read_text())
    doc["scene_config"]["hash_levels"] += 1  # the weights no longer fit the model
    (bad / "bundle.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=r"bg_grid\.table"):
        load_bundle(bad)
    bad2 = _copy(bundle_dir, tmp_path / "b2")
    (bad2 / "tracks.json").unlink()
    with pytest.raises(BundleError, match=r"tracks\.json"):
        load_bundle(bad2)
    bad3 = _copy(bundle_dir, tmp_path / "b3")
    (bad3 / "bundle.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"bundle\.json"):
        load_bundle(bad3)


def test_decoder_depth_is_part_of_the_bundle_config(bundle_dir: Path, tmp_path: Path, toy_log: Path) -> None:
    """Bundles from before ``cnn_layers`` existed (no key) load with the 2-layer decoder they were
    trained with; a depth the weights do not fit is refused naming the mismatched decoder weight."""
    fr = read_log(toy_log).frames[3]
    ref = load_bundle(bundle_dir)
    assert ref.scene.cfg.cnn_layers == 2
    old = _copy(bundle_dir, tmp_path / "old")
    doc = json.loads((old / "bundle.json").read_text())
    del doc["scene_config"]["cnn_layers"]
    (old / "bundle.json").write_text(json.dumps(doc))
    a = load_bundle(old).render_camera(fr.c2w, fr.K, fr.width, fr.height, ref.actors_at(fr.t_us))[0]
    assert np.array_equal(a, ref.render_camera(fr.c2w, fr.K, fr.width, fr.height, ref.actors_at(fr.t_us))[0])
    deeper = _copy(bundle_dir, tmp_path / "deeper")
    doc["scene_config"]["cnn_layers"] = 3
    (deeper / "bundle.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=r"decoder\.4\.weight: expected shape"):
        load_bundle(deeper)
    scene = SceneModel(SceneConfig(cnn_layers=3, upsample=2))
    rgb, _ = scene.decode(torch.zeros(1, scene.cfg.feat_dim, 5, 7))
    assert rgb.shape == (1, 3, 10, 14) and len([m for m in scene.decoder if isinstance(m, torch.nn.Conv2d)]) == 4


def test_eval_recon_scores_held_out_frames_and_lidar(bundle_dir: Path, toy_log: Path, tmp_path: Path) -> None:
    """``loopdrive eval-recon`` writes eval_volume.json (every 10th frame, never trained on, per frame
    and in the mean; held-out LiDAR) and the truth | render | error contact sheet; ``--mode surface``
    into the same folder writes its own pair and leaves the volume-mode files as they were."""
    from PIL import Image
    from typer.testing import CliRunner

    from sim.cli import app

    out = tmp_path / "ev"
    res = CliRunner().invoke(app, ["eval-recon", str(bundle_dir), "--log", str(toy_log), "--out", str(out), "--max-frames", "2"])
    assert res.exit_code == 0, res.output
    ev = json.loads((out / "eval_volume.json").read_text())
    dl = read_log(toy_log)
    h = ev["heldout"]
    assert h["frames"] == [0, 10]
    per = h["psnr_per_frame"]
    assert len(per) == 2 and abs(np.mean(per) - h["psnr"]) < 1e-3 and 12.0 < h["psnr"] < 60.0
    assert 0.0 < ev["lidar"]["median_abs_range_err_m"] < 1.0 and 0.5 < ev["lidar"]["ray_drop_accuracy"] <= 1.0
    sheet = Image.open(out / "contact_sheet_volume.png")
    assert sheet.size[0] == 3 * dl.frames[0].width and sheet.size[1] % dl.frames[0].height == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    surf = CliRunner().invoke(app, ["eval-recon", str(bundle_dir), "--log", str(toy_log), "--out", str(out), "--max-frames", "1", "--mode", "surface"])
    assert surf.exit_code == 0, surf.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in before} == before  # volume files untouched
    assert json.loads((out / "eval_surface.json").read_text())["mode"] == "surface" and (out / "contact_sheet_surface.png").is_file()
    bad = CliRunner().invoke(app, ["eval-recon", str(bundle_dir), "--log", str(toy_log), "--out", str(tmp_path / "x"), "--mode", "fast"])
    assert bad.exit_code == 2 and not (tmp_path / "x").exists()


def test_dataparser_cameras_map_back_to_the_log_frame(toy_log: Path) -> None:
    from sim.recon.ns_dataparser import LoopdriveLogDataParserConfig

    dl = read_log(toy_log)
    dp = LoopdriveLogDataParserConfig(data=toy_log).setup()
    train, val = dp.get_dataparser_outputs("train"), dp.get_dataparser_outputs("val")
    meta = train.metadata["loopdrive"]
    assert meta["frame_indices"] == [i for i in range(len(dl.frames)) if i % 10 != 0]
    assert val.metadata["loopdrive"]["frame_indices"] == [0, 10]
    c2w = train.cameras.camera_to_worlds.double().numpy()
    assert np.abs(c2w[:, :3, 3]).max() <= 1.0 + 1e-5  # auto-scaled for nerfacto-style models
    back = c2w[:, :3, 3] / meta["scale"] + np.asarray(meta["centre"])
    truth = np.stack([dl.frames[i].c2w for i in meta["frame_indices"]])
    assert np.allclose(back, truth[:, :3, 3], atol=1e-4)
    assert np.allclose(c2w[:, :3, :3], truth[:, :3, :3], atol=1e-6)
    assert np.allclose(train.cameras.times.numpy().reshape(-1), [dl.frames[i].t_us * 1e-6 for i in meta["frame_indices"]])


def test_lpips_is_replaced_by_an_offline_metric_before_models_are_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchmetrics.image.lpip as tl

    import sim.recon.method as method  # installs the replacement, as nerfstudio's plugin loading does

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # an empty torch hub cache
    metric = tl.LearnedPerceptualImagePatchSimilarity(normalize=True)
    assert isinstance(metric, method.OfflineLPIPS) and metric._impl is None
    a = torch.rand(1, 3, 32, 32)
    assert torch.isnan(metric(a, a))  # weights not cached: a NaN instead of a crash or a download
    assert not (tmp_path / "hub").exists()

    # weights in the cache: the real metric (a stand-in here) is built with the same arguments and used
    class Real(torch.nn.Module):
        def __init__(self, **kwargs: object) -> None:
            super().__init__()
            self.kwargs = kwargs

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return (x - y).abs().mean()

    ckpt = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    monkeypatch.setattr(tl.LearnedPerceptualImagePatchSimilarity, "real_cls", Real)  # the real class bound at install
    metric = tl.LearnedPerceptualImagePatchSimilarity(normalize=True)
    assert isinstance(metric._impl, Real) and metric._impl.kwargs == {"normalize": True}
    assert float(metric(a, a)) == 0.0 and float(metric(a, a + 1.0)) == pytest.approx(1.0)


# ------------------------------------------------------------------------- time-boxed training
def test_log_linear_decay_fits_its_end_to_a_wall_clock_budget(tmp_path: Path) -> None:
    from sim.recon.method import LogLinearDecay, fit_decay_to_budget

    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))], lr=1e-2)
    sch = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=LogLinearDecay(1e-2, 1e-3, 1000))
    fn = sch.lr_lambdas[0]
    assert fn(0) == pytest.approx(1.0) and fn(500) == pytest.approx(10 ** -0.5) and fn(1000) == pytest.approx(0.1) == fn(5000)
    # 100 steps done at 0.5 s each, 100 s left: the decay now ends at step 300
    assert fit_decay_to_budget({"grids": sch}, 100, 0.5, 100.0) == 300 and fn(300) == pytest.approx(0.1)
    # never later than configured, never before the next step
    assert fit_decay_to_budget({"grids": sch}, 100, 0.01, 1e6) == 1000
    assert fit_decay_to_budget({"grids": sch}, 400, 0.5, 0.0) == 401
    assert fit_decay_to_budget({"other": object()}, 10, 0.5, 1.0) is None
    # the fitted horizon is checkpointed as plain numbers (ns-eval loads with weights_only=True)
    fit_decay_to_budget({"grids": sch}, 100, 0.5, 100.0)
    torch.save(sch.state_dict(), tmp_path / "s.pt")
    sch2 = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=LogLinearDecay(1e-2, 1e-3, 1000))
    sch2.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert sch2.lr_lambdas[0].steps == 300 and sch2.lr_lambdas[0].configured_steps == 1000


def test_training_under_a_budget_stops_and_ends_its_decay_on_time_then_trains_again(toy_log: Path, tmp_path: Path) -> None:
    from sim.recon.run import train_bundle

    info = train_bundle(toy_log, tmp_path / "b", preset="quick", iterations=100_000, max_seconds=4.0)
    assert 10 < info["iterations"] < 100_000 and info["configured_iterations"] == 100_000
    # the decay was moved from 100 000 steps to about where the clock stopped training
    assert info["iterations"] // 2 <= info["lr_decay_steps"] < 3 * info["iterations"] + 20, info
    # a second training in the same process logs to its own folder only (nerfstudio's writers are global)
    again = train_bundle(toy_log, tmp_path / "c", preset="quick", iterations=3)
    assert again["iterations"] == 3 and again["lr_decay_steps"] == 3
    assert list((tmp_path / "c" / "nerfstudio").rglob("events.out.tfevents*"))


def test_footprint_aware_encoding_downweights_levels_finer_than_the_footprint() -> None:
    """Zip-NeRF-style level weights: a point seen with a tiny footprint reads every level as the
    plain grid does; a wide footprint leaves the coarse levels nearly untouched, scales the finest
    towards 0 and passes (almost) no gradient to them; the scene turns it on from its config."""
    from sim.recon.scene import HashGrid

    grid = HashGrid((-10.0, -10.0, -2.0), (10.0, 10.0, 4.0), levels=6, features=2, log2_size=12, coarsest_m=2.0, finest_m=0.05)
    with torch.no_grad():
        grid.table.uniform_(-1.0, 1.0)
    x = torch.rand(64, 3) * torch.tensor([18.0, 18.0, 5.0]) - torch.tensor([9.0, 9.0, 1.5])
    plain = grid(x).reshape(64, 6, 2)
    assert torch.allclose(grid(x, torch.full((64,), 1e-4)).reshape(64, 6, 2), plain, atol=1e-6)
    wide = grid(x, torch.full((64,), 0.5)).reshape(64, 6, 2)
    ratio = (wide.norm(dim=(0, 2)) / plain.norm(dim=(0, 2)))
    assert ratio[0] > 0.95 and ratio[-1] < 0.1 and bool((ratio[1:] <= ratio[:-1] + 1e-6).all())
    grid.table.grad = None
    grid(x, torch.full((64,), 0.5)).sum().backward()
    g = grid.table.grad.reshape(6, -1, 2).abs().sum(dim=(1, 2))
    grid.table.grad = None
    grid(x).sum().backward()
    g0 = grid.table.grad.reshape(6, -1, 2).abs().sum(dim=(1, 2))
    assert g[-1] < 0.1 * g0[-1] and g[0] > 0.95 * g0[0]

    cfg = SceneConfig(footprint_rad=0.01)
    scene = SceneModel(cfg)
    assert SceneConfig.from_json(cfg.to_json()) == cfg and SceneModel(SceneConfig()).footprint(None, 3) is None
    assert torch.allclose(scene.footprint(torch.tensor([2.0, 10.0]), 2), torch.tensor([0.02, 0.1]))
    assert torch.allclose(scene.footprint(None, 2), torch.full((2,), 0.01 * cfg.footprint_ref_m))
    pts = torch.zeros(2, 3)
    assert torch.equal(scene.encode(pts), scene.bg_grid(pts, torch.full((2,), 0.01 * cfg.footprint_ref_m)))
    assert torch.allclose(scene.encode(pts, torch.tensor([2.0, 10.0])), scene.bg_grid(pts, torch.tensor([0.02, 0.1])), atol=1e-7)


def _toy_cast(o: torch.Tensor, d: torch.Tensor, t_s: float) -> tuple[np.ndarray, np.ndarray]:
    from sim.recon.toyscene import render_toy, toy_boxes_at

    rgb, dist, _ = render_toy(o.double().numpy().reshape(-1, 3), d.double().numpy().reshape(-1, 3), toy_boxes_at(t_s))
    return rgb.reshape(*o.shape[:-1], 3), dist.reshape(o.shape[:-1])


@pytest.mark.parametrize("shift_m", [0.0, 3.0])
def test_virtual_view_targets_warp_training_pixels_into_the_true_shifted_view(toy_log: Path, shift_m: float) -> None:
    """Virtual-camera patches (a training camera moved sideways) get the training image warped
    through the scene's depth. Given the exact depth of the analytic toy scene, the supervised
    pixels must match what the moved camera really sees; with no move they are the image itself."""
    from sim.recon.train import sample_batch, virtual_view_targets

    data = ReconData.from_log(read_log(toy_log), CFG)
    scene = SceneModel(data.cfg, data.occupancy)
    spec = BatchSpec(patches=1, patch=8, lidar_rays=0, virtual_patches=8, virtual_shift_m=shift_m)
    batch = sample_batch(data, spec, torch.Generator().manual_seed(3))
    V, p, s = 8, 8, CFG.upsample
    frames = batch["virt_frames"].tolist()
    assert batch["virt_src_rgb"].shape == (V, data.height, data.width, 3)
    moved = (batch["virt_c2w"][:, :3, 3] - batch["virt_src_c2w"][:, :3, 3]).norm(dim=-1)
    assert float(moved.max()) <= shift_m + 1e-5 and (shift_m == 0 or float(moved.max()) > 0.5)
    # the analytic scene's distances along the virtual low-resolution rays stand in for a trained scene's
    depth = np.zeros((V, p * p))
    for k, f in enumerate(frames):
        rows = slice(k * p * p, (k + 1) * p * p)
        _, depth[k] = _toy_cast(batch["virt_origins"][rows], batch["virt_dirs"][rows], data.log.frames[f].t_us / 1e6)
    sky = ~np.isfinite(depth)
    out = {"virt_depth": torch.from_numpy(np.where(sky, CFG.far_m, depth)).float().reshape(V, p, p),
           "virt_acc": torch.from_numpy((~sky).astype(np.float32)).reshape(V, p, p)}

    def source_depth(o: torch.Tensor, d: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = np.zeros(len(o))
        for k, f in enumerate(frames):  # the training cameras' view of the analytic scene
            rows = (group == 1 + k).numpy()  # group 0 is the one real patch
            _, t[rows] = _toy_cast(o[rows], d[rows], data.log.frames[f].t_us / 1e6)
        hit = np.isfinite(t)
        return torch.from_numpy(np.where(hit, t, CFG.far_m)).float(), torch.from_numpy(hit.astype(np.float32))

    target, mask = virtual_view_targets(scene, out, batch, source_depth=source_depth)
    assert target.shape == (V, p * s, p * s, 3) and mask.shape == (V, p * s, p * s)
    # truth: the virtual cameras' full-resolution pixels cast into the analytic scene
    truth = np.zeros((V, p * s, p * s, 3))
    for k, f in enumerate(frames):
        K, c2w = batch["virt_K"][k], batch["virt_c2w"][k]
        vv, uu = torch.meshgrid(torch.arange(p * s) + 0.5, torch.arange(p * s) + 0.5, indexing="ij")
        u, v = uu + batch["virt_xy"][k, 0], vv + batch["virt_xy"][k, 1]
        dc = torch.stack([(u - K[0, 2]) / K[0, 0], -(v - K[1, 2]) / K[1, 1], -torch.ones_like(u)], -1)
        dw = torch.nn.functional.normalize(dc, dim=-1) @ c2w[:3, :3].T
        truth[k], _ = _toy_cast(c2w[:3, 3].expand_as(dw), dw, data.log.frames[f].t_us / 1e6)
    truth_t = torch.from_numpy(truth).float()
    kept = float(mask.float().mean())
    err_kept = float(((target - truth_t)[mask] ** 2).mean())
    if shift_m == 0:
        # no move: every pixel off a depth edge is kept and is the training image's own pixel
        src = torch.stack([data.image_float(f)[int(y): int(y) + p * s, int(x): int(x) + p * s]
                           for f, (x, y) in zip(frames, batch["virt_xy"].tolist(), strict=True)])
        assert kept > 0.7
        assert torch.allclose(target[mask], src[mask], atol=1e-5)
    else:
        assert kept > 0.4
    # measured 59 dB (no move) and 22-34 dB (moves up to 3 m; bilinear resampling of the toy's
    # high-frequency textures) over seeds 1-3; the refused pixels score 11-19 dB
    assert 10 * np.log10(1 / err_kept) > 21.0, (kept, err_kept)
    # the pixels it refuses are the ones a plain warp gets wrong (occlusions, depth edges)
    err_dropped = float(((target - truth_t)[~mask] ** 2).mean()) if (~mask).any() else 0.0
    if shift_m > 0:
        assert err_dropped > err_kept


def test_training_with_virtual_camera_patches_adds_a_finite_loss_that_falls(toy_log: Path) -> None:
    data = ReconData.from_log(read_log(toy_log), CFG)
    scene = SceneModel(data.cfg, data.occupancy)
    spec = BatchSpec(patches=2, patch=8, lidar_rays=256, lidar_sweeps=2, virtual_patches=2, virtual_shift_m=3.0)
    hist = fit(scene, data, 60, spec, seed=0)
    virt = [h["virtual"] for h in hist]
    assert all(np.isfinite(v) and v >= 0 for v in virt)
    assert np.mean(virt[-10:]) < 0.7 * np.mean(virt[:10])
