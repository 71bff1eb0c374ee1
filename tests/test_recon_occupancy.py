"""The occupancy grid above the LiDAR's field of view (issue 23): tall structures the LiDAR saw
continue upward through the cells no LiDAR ray crossed (:func:`sim.recon.occupancy.extend_above_lidar`,
:func:`sim.recon.train.occupancy_above_lidar`), and training prunes the added cells the field
learns to be empty (:func:`sim.recon.occupancy.prune_by_density`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sim.log import read_log
from sim.recon.data import ReconData
from sim.recon.occupancy import extend_above_lidar, grow_top, lidar_free_space, occupied, prune_by_density
from sim.recon.scene import SceneConfig, SceneModel
from sim.recon.toyscene import write_toy_scene
from sim.recon.train import BatchSpec, fit, occupancy_above_lidar

CFG = SceneConfig(upsample=2, occ_voxel_m=0.3, hash_log2_size=15, hash_levels=6)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_tall_columns_continue_up_to_the_first_crossed_cell_or_the_bound() -> None:
    occ = torch.zeros(4, 4, 40, dtype=torch.bool)
    occ[1, 1, 0:6] = True  # a 3 m facade column (0.5 m cells)
    occ[2, 2, 0:6] = True  # the same, but a LiDAR ray crossed its cell 10
    occ[3, 3, 0:2] = True  # 1 m: a kerb, not a facade
    occ[0, 0, 0] = occ[0, 0, 3:8] = True  # ground plus a 2.5 m run above a gap: the run counts
    free = torch.zeros_like(occ)
    free[2, 2, 10] = True
    add = extend_above_lidar(occ, free, 0.5, min_run_m=2.0, max_height_m=10.0)
    assert add[1, 1].nonzero().flatten().tolist() == list(range(6, 21))  # up to 10 m above the run's bottom
    assert add[2, 2].nonzero().flatten().tolist() == list(range(6, 10))  # stops below the crossed cell
    assert not add[3, 3].any()
    assert add[0, 0].nonzero().flatten().tolist() == list(range(8, 24))  # bound from the run's bottom (cell 3)
    assert not (add & occ).any() and not add[1:, 0].any()


def test_lidar_rays_mark_free_cells_short_of_their_return_and_to_max_range_without_one() -> None:
    shape = (2, 2, 40)
    o = torch.tensor([[0.25, 0.25, 0.25], [0.75, 0.75, 0.25]])
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    free = lidar_free_space(shape, torch.zeros(3), 0.5, o, d, torch.tensor([5.0, 0.0]), max_range_m=8.0)
    z0 = free[0, 0].nonzero().flatten()
    assert z0.tolist() == list(range(1, 10))  # the return at 5.25 m: points up to 4.4 m (the first half a cell out)
    assert not free[0, 0, 10:].any()  # the return's cell (10) and beyond stay unknown
    z1 = free[1, 1].nonzero().flatten()
    assert int(z1.max()) == 16  # no return: free to 8 m
    assert not free[0, 1].any() and not free[1, 0].any()


def test_pruning_clears_only_added_cells_of_low_density() -> None:
    occ = torch.zeros(3, 3, 6, dtype=torch.bool)
    occ[:, :, :] = True
    cand = torch.zeros_like(occ)
    cand[:, :, 3:] = True  # cells 3.. were added above the LiDAR

    def density(p: torch.Tensor) -> torch.Tensor:  # dense below z = 5 m, empty above
        return torch.where(p[:, 2] < 5.0, 10.0, 0.0)

    n = prune_by_density(density, occ, cand, torch.zeros(3), 1.0, threshold=0.05, generator=torch.Generator().manual_seed(0))
    assert n == 3 * 3
    assert occ[:, :, :5].all() and not occ[:, :, 5:].any()
    occ2 = torch.ones(3, 3, 6, dtype=torch.bool)
    assert prune_by_density(lambda p: torch.zeros(p.shape[0]), occ2, torch.zeros_like(occ2), torch.zeros(3), 1.0, 0.05) == 0
    assert occ2.all()  # the LiDAR's cells are never pruned


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> ReconData:
    root = write_toy_scene(tmp_path_factory.mktemp("occ") / "toy", frames=12)
    return ReconData.from_log(read_log(root), CFG, eval_every=4, use_camera_depth=False)  # a real log: no depth maps


def _high_facade_points(data: ReconData, f: int, above_m: float) -> tuple[torch.Tensor, np.ndarray]:
    """World points of frame ``f``'s depth map higher than ``above_m``, and their pixel mask."""
    dep = data.log.depth(f)
    assert dep is not None
    fr = data.log.frames[f]
    vv, uu = np.mgrid[0 : fr.height, 0 : fr.width]
    x = (uu + 0.5 - fr.cx) / fr.fx * dep
    y = (vv + 0.5 - fr.cy) / fr.fy * dep
    p = np.stack([x, -y, -dep], -1) @ fr.c2w[:3, :3].T + fr.c2w[:3, 3]
    mask = (dep > 0) & (p[..., 2] > above_m)
    return torch.from_numpy(p[mask]).float(), mask


def test_facades_above_the_lidar_field_of_view_get_occupied(toy: ReconData) -> None:
    occ, cfg, added = occupancy_above_lidar(toy, max_height_m=12.0, sweep_stride=1)
    assert cfg.occ_shape == tuple(occ.shape) and occ.shape[2] > toy.occupancy.shape[2]  # the grid grew upward
    assert cfg.aabb_max[2] > toy.cfg.aabb_max[2] and cfg.aabb_min == toy.cfg.aabb_min
    assert (occ == (grow_top(toy.occupancy, occ.shape[2] - toy.occupancy.shape[2]) | added)).all()
    f = toy.eval_frames[1]
    pts, _ = _high_facade_points(toy, f, 6.0)  # the LiDAR (+10 deg, 1.9 m) reaches 6 m on facades 23 m away or more
    assert len(pts) > 50
    amin = torch.tensor(cfg.aabb_min)
    before = occupied(toy.occupancy, amin, cfg.occ_voxel_m, pts).float().mean()
    after = occupied(occ, amin, cfg.occ_voxel_m, pts).float().mean()
    assert before < 0.15 and after > 0.9
    # the street in front of the facades, crossed by the LiDAR's upward rays, stays empty
    street = torch.tensor([[x, -1.75, z] for x in np.arange(0.0, 10.0, 1.0) for z in (4.0, 6.0, 8.0)], dtype=torch.float32)
    assert not occupied(occ, amin, cfg.occ_voxel_m, street).any()


def test_trained_on_the_extended_grid_the_upper_facades_render_as_facade_not_sky(toy: ReconData) -> None:
    occ, cfg, _ = occupancy_above_lidar(toy, max_height_m=12.0)
    f = toy.eval_frames[1]
    _, mask = _high_facade_points(toy, f, 6.0)
    m = torch.from_numpy(mask)
    fr = toy.log.frames[f]
    base = SceneModel(toy.cfg, toy.occupancy)
    r0 = base.render_camera(toy.c2w[f], toy.K[f], fr.width, fr.height, toy.actors_for_frames([f]))
    assert float((r0["acc"][m] > 0.5).float().mean()) < 0.2  # LiDAR-only grid: mostly no sample there, whatever the training
    scene = SceneModel(cfg, occ)
    fit(scene, toy, 150, BatchSpec(patches=4, patch=8, lidar_rays=512, lidar_sweeps=4))
    with torch.no_grad():
        r = scene.render_camera(toy.c2w[f], toy.K[f], fr.width, fr.height, toy.actors_for_frames([f]))
    assert float((r["acc"][m] > 0.5).float().mean()) > 0.8
    dep = torch.from_numpy(toy.log.depth(f)).float()
    err = (r["depth"][m] - dep[m]).abs()
    assert float(err.median()) < 0.15 * float(dep[m].median())


def test_the_recon_method_extends_and_prunes_the_grid(tmp_path: Path) -> None:
    from sim.recon.bundle import load_bundle
    from sim.recon.run import train_bundle

    root = write_toy_scene(tmp_path / "toy", frames=8)
    b0 = train_bundle(root, tmp_path / "b0", preset="quick", iterations=2, overrides={"use_camera_depth": False})
    b1 = train_bundle(root, tmp_path / "b1", preset="quick", iterations=4,
                      overrides={"use_camera_depth": False, "occ_above_lidar_m": 12.0, "occ_prune_every": 2, "occ_prune_density": 1e9})
    s0, s1 = load_bundle(b0["bundle"]).scene, load_bundle(b1["bundle"]).scene
    assert s1.occupancy.shape[2] > s0.occupancy.shape[2]
    # every added cell was pruned (an impossible density threshold): the LiDAR's grid is left, grown upward
    assert torch.equal(s1.occupancy, grow_top(s0.occupancy, s1.occupancy.shape[2] - s0.occupancy.shape[2]))
