"""Export to training shards: shapes and labels load back, the expert relabels every step, the
shards feed behaviour cloning, and no unblurred licence-plate pixel reaches a shard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sim.anonymize import SensitiveBox, anonymize, project_boxes, region_mask, sensitive_boxes
from sim.errors import ScenarioError
from sim.export import ExportItem, export_episodes, load_shard, load_training_set
from sim.geometry import project_points
from sim.render.base import ArrayWorld
from sim.scenario import expand
from sim.sensors import CameraSpec, LidarSpec, SensorRig

SCEN = """\
version: 1
name: tiny_lead
scene: {town: tiny, seed: 0}
ego:
  start: {lane: lane_1, s: 4.0, speed: 5.0}
  route: [lane_1, lane_21, lane_5]
actors:
  - {op: insert, id: lead, class: car, spawn: {lane: lane_1, s: 15.0, speed: 5.0}, behavior: {type: idm, v0: 5.0}}
  - {op: insert, id: walker, class: pedestrian, spawn: {pose: [-22.0, -9.5, 1.5708], speed: 0.0}, behavior: {type: constant_velocity}}
planner: {name: idm}
horizon_s: 0.4
seeds: [0]
"""
RIG = SensorRig((CameraSpec(width=160, height=96),), LidarSpec(beams=8, azimuth_steps=128))


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("export")
    f = root / "tiny_lead.yaml"
    f.write_text(SCEN, encoding="utf-8")
    ep = expand(f)[0]
    paths = export_episodes([ExportItem(ep, "idm", {}, trigger="near_miss", weight=1.5, source="mined")], root / "shards",
                            kinds=("bev", "state", "camera", "lidar"), expert="idm", rig=RIG)  # fmt: skip
    assert len(paths) == 1 and paths[0].name == "mined-tiny_lead__s0.npz"
    return {"root": root, "path": paths[0], "data": load_shard(paths[0])}


def test_shapes_and_labels(shard: dict) -> None:
    d = shard["data"]
    T = 4
    assert d["bev"].shape[0] == T and d["bev"].dtype == np.uint8 and d["bev"].ndim == 4
    assert d["ego"].shape == (T, 3) and d["action"].shape == (T, 2) and d["weight"].shape == (T,)
    assert d["camera"].shape == (T, 1, 96, 160, 3) and d["camera"].dtype == np.uint8
    assert d["lidar"].shape == (T, 8, 128, 2)
    assert d["boxes"].shape[:2] == d["box_valid"].shape and d["boxes"].shape[2] == 7
    ids = list(d["box_ids"])
    assert "lead" in ids and "walker" in ids
    assert d["box_cls"][ids.index("lead")] == "car" and d["box_cls"][ids.index("walker")] == "pedestrian"
    k = ids.index("lead")
    assert d["box_valid"][:, k].all()
    # the lead starts 11 m ahead of the ego on the same lane
    assert d["boxes"][0, k, 0] - d["ego_pose"][0, 0] == pytest.approx(11.0, abs=0.05)
    assert d["boxes"][0, k, 3:6] == pytest.approx([4.6, 1.9, 1.5])
    assert d["ego_pose"][0, 3] == pytest.approx(5.0)
    assert np.all(np.diff(d["t_s"]) > 0)
    # expert == planner: the relabelled action is the applied one, and the weight is the miner's
    assert np.allclose(d["action"], d["planner_action"], atol=1e-5)
    assert np.allclose(d["weight"], 1.5)
    m = d["meta"]
    assert m["trigger"] == "near_miss" and m["expert"] == "idm" and m["steps"] == T and m["anonymised_regions"] > 0
    assert (d["lidar"][..., 0] > 0).any()


def test_shards_feed_behaviour_cloning(shard: dict) -> None:
    ds = load_training_set([shard["path"].parent])
    assert len(ds) == 4
    b, feat, a, w = ds[0]
    assert tuple(b.shape) == (4, 64, 64) and tuple(feat.shape) == (3,) and tuple(a.shape) == (2,) and float(w) == pytest.approx(1.5)
    assert (shard["path"].parent / "manifest.json").is_file()


def _plate_rects(world: ArrayWorld, c2w: np.ndarray, K: np.ndarray, w: int, h: int) -> list[tuple[int, int, int, int]]:
    """Pixel rectangles of the exact rear/front plate geometry of the mesh car model
    (``sim.synth.meshes._car``: x at the box ends, |y| <= 0.26 m, z = 0.28 H .. 0.34 H + 0.11 m)."""
    out = []
    for i in range(1, len(world.ids)):
        if world.cls[i] != "car" or not world.valid[i]:
            continue
        L, H = world.length[i], world.height[i]
        for xe, z0 in ((0.5 * L, 0.28 * H), (-0.5 * L, 0.34 * H)):
            pts = np.array([[xe, y, z] for y in (-0.26, 0.26) for z in (z0, z0 + 0.11)])
            c, s = np.cos(world.yaw[i]), np.sin(world.yaw[i])
            P = np.column_stack([world.x[i] + c * pts[:, 0] - s * pts[:, 1], world.y[i] + s * pts[:, 0] + c * pts[:, 1], pts[:, 2]])
            uv, z = project_points(P, c2w, K)
            if np.all(z > 0.1):
                u0, v0 = np.floor(uv.min(0)).astype(int)
                u1, v1 = np.ceil(uv.max(0)).astype(int)
                if u1 > 0 and v1 > 0 and u0 < w and v0 < h:
                    out.append((max(u0, 0), max(v0, 0), min(u1, w), min(v1, h)))
    return out


def test_no_unblurred_plate_pixels_reach_the_shards(shard: dict) -> None:
    """Re-render each stored step from the shard's own labels with the ground-truth renderer: the
    exact plate pixels lie inside the anonymised regions, the shard holds the anonymised image, and
    the plate's original pixels are not in it."""
    from sim import engine
    from sim.batch import _load_scene
    from sim.render.mesh import MeshRenderer

    d = shard["data"]
    ep = expand(shard["root"] / "tiny_lead.yaml")[0]
    compiled = engine.compile_scenario(ep.spec, _load_scene(engine, ep))
    r = MeshRenderer(compiled.scene)
    cam = RIG.cameras[0]
    checked = 0
    for t in range(len(d["t_s"])):
        n = len(d["box_ids"])
        world = ArrayWorld(
            t_us=int(t), ids=("ego", *map(str, d["box_ids"])), cls=("car", *map(str, d["box_cls"])),
            x=np.r_[d["ego_pose"][t, 0], d["boxes"][t, :, 0]], y=np.r_[d["ego_pose"][t, 1], d["boxes"][t, :, 1]], z=np.zeros(n + 1),
            yaw=np.r_[d["ego_pose"][t, 2], d["boxes"][t, :, 2]], length=np.r_[compiled.length[0], d["boxes"][t, :, 3]],
            width=np.r_[compiled.width[0], d["boxes"][t, :, 4]], height=np.r_[compiled.height[0], d["boxes"][t, :, 5]],
            valid=np.r_[True, d["box_valid"][t]],
        )  # fmt: skip
        ci = r.render(world, RIG).cameras[cam.name]
        raw = ci.rgb
        rects = project_boxes(sensitive_boxes(world), ci.c2w, ci.K, cam.width, cam.height)
        mask = region_mask(rects, cam.width, cam.height)
        stored = d["camera"][t, 0]
        # (labels are stored as float32, so the re-render may differ by a few edge pixels)
        diff = np.abs(stored.astype(int) - anonymize(raw, rects).astype(int)).max(-1)
        assert (diff > 8).mean() < 0.002, "the shard must hold the anonymised render"
        assert (np.abs(stored[~mask].astype(int) - raw[~mask].astype(int)).max(-1) > 8).mean() < 0.002
        for u0, v0, u1, v1 in _plate_rects(world, ci.c2w, ci.K, cam.width, cam.height):
            assert mask[v0:v1, u0:u1].all(), "a plate pixel lies outside the anonymised regions"
            # the plate's inner pixels (its projected outline shrunk by one pixel: no body colour)
            p_raw = raw[v0 + 1 : v1 - 1, u0 + 1 : u1 - 1].astype(int)
            p_st = stored[v0 + 1 : v1 - 1, u0 + 1 : u1 - 1].astype(int)
            if p_raw.size >= 3 * 4:
                checked += 1
                # the plate's original pixels do not survive: (almost) every one was replaced
                kept = (np.abs(p_st - p_raw).max(-1) <= 3).mean()
                assert kept < 0.1, f"{kept:.0%} of the plate pixels reached the shard unchanged"
    assert checked >= 2  # the lead's rear plate is visible in the stored steps
    r.close()


def test_anonymize_hides_detail_and_keeps_the_rest() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    out = anonymize(img, [(10, 5, 30, 20)], margin_px=2)
    m = region_mask([(10, 5, 30, 20)], 60, 40, 2)
    assert np.array_equal(out[~m], img[~m])
    assert not np.array_equal(out[m], img[m])
    # nothing inside the region influences the output
    other = img.copy()
    other[m] = 255 - other[m]
    assert np.array_equal(anonymize(other, [(10, 5, 30, 20)], margin_px=2), out)
    # a region touching the image border is filled too
    edge = anonymize(img, [(0, 0, 8, 8)], margin_px=0)
    assert not np.array_equal(edge[:8, :8], img[:8, :8]) and np.array_equal(edge[8:], img[8:])
    # a box straddling the camera's near plane still yields a region; one behind yields none
    cam = CameraSpec(width=64, height=48)
    c2w = np.eye(4)  # OpenGL camera at the origin looking along -z
    front = SensitiveBox((0.0, 0.0, -5.0), (1.0, 1.0, 1.0), 0.0, "plate")
    behind = SensitiveBox((0.0, 0.0, 5.0), (1.0, 1.0, 1.0), 0.0, "plate")
    assert len(project_boxes([front], c2w, cam.K, 64, 48)) == 1
    assert project_boxes([behind], c2w, cam.K, 64, 48) == []


def test_bad_kinds_and_bad_shard(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="kinds"):
        export_episodes([], tmp_path, kinds=("radar",))
    bad = tmp_path / "x.npz"
    np.savez(bad, a=np.zeros(2))
    with pytest.raises(ScenarioError, match="shard"):
        load_shard(bad)
