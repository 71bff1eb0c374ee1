"""The synthetic town: scene builder (render-free) and, further down, the written drive log."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sim.errors import LoopdriveError, ScenarioError
from sim.map import LaneMap
from sim.synth import PRESETS, make_scene


@pytest.fixture(scope="module")
def tiny():
    return make_scene("tiny", 0)


def test_unknown_preset_names_known_ones():
    with pytest.raises(ScenarioError) as ei:
        make_scene("huge", 0)
    msg = str(ei.value)
    assert "huge" in msg and all(p in msg for p in PRESETS)
    assert isinstance(ei.value, LoopdriveError)


@pytest.mark.parametrize("frames", [0, -3, 2.5])
def test_bad_frames(frames):
    with pytest.raises(ScenarioError, match=rf"frames: expected a positive number of frames, got {frames}"):
        make_scene("tiny", 0, frames=frames)


def test_scene_is_deterministic_and_seed_dependent(tiny):
    again = make_scene("tiny", 0)
    other = make_scene("tiny", 1)
    assert json.dumps(tiny.map) == json.dumps(again.map)
    assert np.array_equal(tiny.ego.pose, again.ego.pose)
    assert len(tiny.tracks) == len(again.tracks)
    for a, b in zip(tiny.tracks, again.tracks, strict=True):
        assert a.id == b.id and np.array_equal(a.pose, b.pose) and np.array_equal(a.t_us, b.t_us)
    assert json.dumps(tiny.map) != json.dumps(other.map)


def test_static_town_does_not_depend_on_frames(tiny):
    longer = make_scene("tiny", 0, frames=50)
    assert json.dumps(tiny.map) == json.dumps(longer.map)
    assert len(longer.t_us) == 50 and len(longer.ego.t_us) == 50


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_network_has_four_way_intersection_and_two_lane_roads(preset):
    sc = make_scene(preset, 2)
    lm = LaneMap.from_dict(sc.map)
    lanes = sc.map["lanes"]
    assert all(isinstance(ln["id"], str) for ln in lanes)
    # at least one node with connectors from 4 approaches
    by_node: dict[str, set[str]] = {}
    for ln in lanes:
        if ln["kind"] == "connector":
            by_node.setdefault(ln["node"], set()).add(ln["predecessors"][0])
    roads_in = {n: {lm.lanes[p].attrs["road"] for p in preds} for n, preds in by_node.items()}
    assert any(len(r) == 4 for r in roads_in.values())
    # two lanes per direction somewhere: a road lane with a same-direction neighbour
    with_neigh = [ln for ln in lanes if ln["kind"] == "road" and (ln["left"] or ln["right"])]
    assert with_neigh
    for ln in with_neigh:
        nb = lm.lanes[ln["left"] or ln["right"]]
        h0 = np.diff(np.asarray(ln["centerline"])[[0, -1]], axis=0)[0]
        h1 = np.diff(nb.centerline[[0, -1]], axis=0)[0]
        assert np.dot(h0, h1) > 0  # same direction
    # both directions exist on a road (two-way)
    roads = {}
    for ln in lanes:
        if ln["kind"] == "road":
            d = np.diff(np.asarray(ln["centerline"])[[0, -1]], axis=0)[0]
            roads.setdefault(ln["road"], []).append(d / np.linalg.norm(d))
    assert any(min(np.dot(a, b) for a in ds for b in ds) < -0.99 for ds in roads.values())
    assert len(sc.map["crosswalks"]) >= 4


def test_ego_route_has_a_turn_and_is_connected(tiny):
    lm = LaneMap.from_dict(tiny.map)
    lm.check_route(list(tiny.ego_route))
    turns = [lm.lanes[r].attrs.get("turn") for r in tiny.ego_route]
    assert "left" in turns or "right" in turns
    assert tiny.ego.id == "ego" and tiny.ego.cls == "car"
    assert len(tiny.ego.t_us) == len(tiny.t_us)
    yaw = np.unwrap(tiny.ego.pose[:, 3])
    assert abs(yaw[-1] - yaw[0]) > np.radians(20)  # the turn happens within the tiny log


def test_actors_are_plausible(tiny):
    classes = {t.cls for t in tiny.tracks}
    assert classes & {"cyclist", "pedestrian"}
    assert any(t.static for t in tiny.tracks)
    assert any(not t.static and t.cls == "car" for t in tiny.tracks)  # the lane check below runs
    lm = LaneMap.from_dict(tiny.map)
    for t in tiny.tracks:
        if t.static:
            assert np.ptp(t.pose[:, 0]) == 0 and np.ptp(t.pose[:, 1]) == 0
            continue
        v = np.linalg.norm(np.diff(t.pose[:, :2], axis=0), axis=1) / np.diff(t.t_us / 1e6)
        limit = {"pedestrian": 2.0, "cyclist": 7.0}.get(t.cls, 15.0)
        assert v.max() < limit
        if t.cls in ("car", "truck", "bus"):
            _lane, _s, d = lm.nearest_lane(*t.pose[0, :2], yaw=t.pose[0, 3])
            assert abs(d) < 0.5


@pytest.mark.parametrize(("preset", "seed"), [("tiny", 0), ("tiny", 5), ("small", 3)])
def test_no_overlapping_actors(preset, seed):
    """Vehicles follow, yield at the intersection and to pedestrians on zebras: no two boxes
    (ego included) ever overlap by more than 0.05 m^2."""
    from shapely.geometry import Polygon

    tiny = make_scene(preset, seed)

    def poly(p, size):
        c, s = np.cos(p[3]), np.sin(p[3])
        hl, hw = size[0] / 2, size[1] / 2
        return Polygon([(p[0] + c * u - s * w, p[1] + s * u + c * w) for u, w in ((hl, hw), (-hl, hw), (-hl, -hw), (hl, -hw))])

    all_tracks = [tiny.ego, *tiny.tracks]
    for t in tiny.t_us:
        present = [(tr, tr.pose_at(int(t))) for tr in all_tracks]
        present = [(tr, p) for tr, p in present if p is not None]
        xy = np.array([p[:2] for _, p in present])
        reach = np.array([np.hypot(tr.size[0], tr.size[1]) / 2 for tr, _ in present])
        for i in range(len(present)):
            for j in range(i + 1, len(present)):
                if np.hypot(*(xy[i] - xy[j])) > reach[i] + reach[j]:
                    continue  # bounding circles apart
                (ti, pi), (tj, pj) = present[i], present[j]
                assert poly(pi, ti.size).intersection(poly(pj, tj.size)).area < 0.05, (t, ti.id, tj.id)


# ------------------------------------------------------------------------------ the written log
def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _small_log(out, seed):
    from sim.sensors import default_rig
    from sim.synth import write_synth_log

    rig = default_rig(("front",), width=160, height=96, beams=16, azimuth_steps=256)
    return write_synth_log("tiny", seed, 5, out=out, rig=rig, name="det", supersample=1)


def test_same_seed_same_bytes_different_seed_different_town(tmp_path):
    a = _files(_small_log(tmp_path / "a", 0))
    b = _files(_small_log(tmp_path / "b", 0))
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        assert a[k] == b[k], k
    # another seed: another road layout and another static town (geometry and textures)
    s0, s1 = make_scene("tiny", 0, frames=2), make_scene("tiny", 1, frames=2)
    assert json.dumps(s0.map) != json.dumps(s1.map)
    t0, t1 = s0.static_town(), s1.static_town()
    assert t0.mesh.vertices.shape != t1.mesh.vertices.shape or not np.allclose(t0.mesh.vertices, t1.mesh.vertices)
    assert not np.array_equal(t0.textures["asphalt"], t1.textures["asphalt"])
    meta = json.loads(a["meta.json"])
    assert meta["source"] == "synth" and meta["synth"]["preset"] == "tiny" and meta["synth"]["seed"] == 0
    # nothing in the log depends on the wall clock
    assert "time" not in json.dumps(meta).lower().replace("dt_s", "")


def test_tiny_log_is_valid(tiny_log):
    from sim.log import validate_log

    dl = validate_log(tiny_log)
    assert len(dl.frames) == 20 and len(dl.sweeps) == 20
    assert dl.meta["rates"] == {"camera_hz": 10.0, "lidar_hz": 10.0}
    assert dl.meta["rig"]["lidar"]["beams"] == 32 and dl.meta["rig"]["lidar"]["azimuth_steps"] == 1024
    assert dl.ego.id == "ego" and len(dl.tracks) >= 5


def test_lidar_agrees_with_rendered_depth(tiny_log):
    """LiDAR returns projected into the camera land where the rendered depth says they should:
    median |lidar z - camera depth| < 0.1 m. The LiDAR sits 1.5 m behind and 0.3 m above the camera,
    so parallax occlusions (a tree crown hiding a wall from one of them) make outliers: at least
    80 % of the points agree within 0.5 m."""
    from sim.geometry import project_points
    from sim.log import read_log

    dl = read_log(tiny_log)
    errs = []
    sweeps = {s.t_us: j for j, s in enumerate(dl.sweeps)}
    for i, fr in enumerate(dl.frames[::4]):
        idx = dl.frames.index(fr)
        depth = dl.depth(idx)
        pts = dl.lidar(sweeps[fr.t_us])
        uv, z = project_points(pts[:, :3], fr.c2w, fr.K)
        ok = (z > 1.0) & (z < 60.0) & (uv[:, 0] >= 0) & (uv[:, 0] < fr.width - 1) & (uv[:, 1] >= 0) & (uv[:, 1] < fr.height - 1)
        u, v = uv[ok, 0], uv[ok, 1]
        # bilinear depth at the projected position (pixel centres at +0.5)
        x0, y0 = np.floor(u - 0.5).astype(int), np.floor(v - 0.5).astype(int)
        ax, ay = u - 0.5 - x0, v - 0.5 - y0
        x0, y0 = np.clip(x0, 0, fr.width - 2), np.clip(y0, 0, fr.height - 2)
        d00, d10 = depth[y0, x0], depth[y0, x0 + 1]
        d01, d11 = depth[y0 + 1, x0], depth[y0 + 1, x0 + 1]
        valid = (d00 > 0) & (d10 > 0) & (d01 > 0) & (d11 > 0)
        d = (1 - ax) * (1 - ay) * d00 + ax * (1 - ay) * d10 + (1 - ax) * ay * d01 + ax * ay * d11
        errs.append(np.abs(d[valid] - z[ok][valid]))
        assert i < 10
    e = np.concatenate(errs)
    assert len(e) > 2000
    assert np.median(e) < 0.1
    assert np.mean(e < 0.5) > 0.8


def test_actor_boxes_contain_their_lidar_returns():
    from sim.render.mesh import MeshRenderer
    from sim.sensors import LidarSpec

    sc = make_scene("tiny", 0, frames=12)
    r = MeshRenderer(sc)
    spec = LidarSpec(beams=32, azimuth_steps=1024)
    seen = set()
    for t in sc.t_us[::4]:
        w = sc.world_at(int(t))
        scan = r.render_lidar(w, spec)
        pw = scan.world_points()
        for i in np.unique(scan.actor_id[scan.actor_id >= 0]):
            p = pw[scan.actor_id == i]
            c, s = np.cos(w.yaw[i]), np.sin(w.yaw[i])
            dx, dy = p[:, 0] - w.x[i], p[:, 1] - w.y[i]
            lx, ly, lz = c * dx + s * dy, -s * dx + c * dy, p[:, 2] - w.z[i]
            tol = 0.05
            inside = (np.abs(lx) <= w.length[i] / 2 + tol) & (np.abs(ly) <= w.width[i] / 2 + tol) & (lz >= -tol) & (lz <= w.height[i] + tol)
            assert inside.all(), (w.ids[i], int((~inside).sum()))
            seen.add(w.ids[i])
        # every actor within 15 m of the LiDAR is hit
        near = [i for i in range(1, len(w.ids)) if w.valid[i] and np.hypot(w.x[i] - w.x[0], w.y[i] - w.y[0]) < 15.0]
        assert set(near) <= set(np.unique(scan.actor_id).tolist())
    assert len(seen) >= 3
    r.close()


def test_nerfstudio_dataparser_loads_transforms(tiny_log):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    tj = json.loads((tiny_log / "transforms.json").read_text())
    dp = NerfstudioDataParserConfig(data=tiny_log, eval_mode="all").setup()
    out = dp.get_dataparser_outputs(split="train")
    assert len(out.image_filenames) == len(tj["frames"]) == 20
    assert float(out.cameras.fx[0]) == pytest.approx(tj["frames"][0]["fl_x"])
    assert int(out.cameras.width[0]) == 320 and int(out.cameras.height[0]) == 192
    assert len(out.metadata["depth_filenames"]) == 20
    # the parser's cameras are our transform_matrix up to its own orientation/scale normalisation
    tf = out.dataparser_transform.numpy()
    scale = float(out.dataparser_scale)
    names = [p.name for p in out.image_filenames]
    for k in (0, 7):
        fr = next(f for f in tj["frames"] if f["file_path"].endswith(names[k]))
        m = np.asarray(fr["transform_matrix"])
        expect = tf @ m
        expect[:3, 3] *= scale
        assert np.allclose(out.cameras.camera_to_worlds[k].numpy(), expect[:3], atol=1e-4)


def test_camera_convention_through_transforms_json(tiny_log):
    """A point given in the ego frame projects, through transforms.json, to the pixel computed by
    hand from the rig (front camera 1.5 m ahead, 1.6 m up, pitched down 0.05 rad, 90 deg hfov);
    the rendered depth there equals the point's depth."""
    from sim.log import read_log

    tj = json.loads((tiny_log / "transforms.json").read_text())
    dl = read_log(tiny_log)
    fr = tj["frames"][0]
    x, y, _z, yaw = dl.ego.pose[0]
    # a point on the road, 9 m ahead of the camera and 1 m to the left, in the ego frame
    fwd, left = 1.5 + 9.0, 1.0
    pw = np.array([x + np.cos(yaw) * fwd - np.sin(yaw) * left, y + np.sin(yaw) * fwd + np.cos(yaw) * left, 0.0])
    # by hand: the optical axis is tilted down by p: forward = (cos p, 0, -sin p), image-down =
    # (-sin p, 0, -cos p), image-right = -y (vehicle frame)
    p = 0.05
    dx, dy, dz = 9.0, 1.0, -1.6  # point relative to the camera in the vehicle frame
    xc = -dy
    yc = -dx * np.sin(p) - dz * np.cos(p)
    zc = dx * np.cos(p) - dz * np.sin(p)
    f = 0.5 * 320 / np.tan(np.radians(45))
    u_hand, v_hand = f * xc / zc + 160.0, f * yc / zc + 96.0
    # through transforms.json: camera-to-world in OpenGL axes (x right, y up, z back)
    m = np.asarray(fr["transform_matrix"])
    pc = m[:3, :3].T @ (pw - m[:3, 3])
    u = fr["fl_x"] * pc[0] / -pc[2] + fr["cx"]
    v = fr["fl_y"] * -pc[1] / -pc[2] + fr["cy"]
    assert u == pytest.approx(u_hand, abs=1e-3) and v == pytest.approx(v_hand, abs=1e-3)
    # the rendered depth there is the point's z-depth: on the flat road 1/depth is affine in the
    # pixel coordinates, so interpolate it between pixel centres (at +0.5); 3 cm tolerance
    depth = dl.depth(0).astype(np.float64)
    c0, r0 = int(np.floor(u - 0.5)), int(np.floor(v - 0.5))
    a, b = u - 0.5 - c0, v - 0.5 - r0
    inv = 1.0 / depth[r0:r0 + 2, c0:c0 + 2]
    inv_uv = (1 - a) * (1 - b) * inv[0, 0] + a * (1 - b) * inv[0, 1] + (1 - a) * b * inv[1, 0] + a * b * inv[1, 1]
    assert abs(1.0 / inv_uv - (-pc[2])) < 0.03


# --------------------------------------------------------------------------------------- the CLI
def _invoke(args):
    from typer.testing import CliRunner

    from sim.cli import app

    return CliRunner().invoke(app, args)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--town", "huge"], "huge"),
        (["--town", "tiny", "--frames", "0"], "--frames"),
        (["--town", "tiny", "--frames", "-5"], "--frames"),
        (["--town", "tiny", "--cameras", "front,top"], "top"),
    ],
)
def test_cli_bad_input_exit_2_one_line_nothing_written(tmp_path, args, needle):
    out = tmp_path / "log"
    res = _invoke(["synth", *args, "--out", str(out)])
    assert res.exit_code == 2
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and needle in err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_cli_unwritable_out(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    res = _invoke(["synth", "--town", "tiny", "--out", str(blocker / "log")])
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "writable" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_cli_existing_out_needs_overwrite(tmp_path):
    out = tmp_path / "log"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = _invoke(["synth", "--town", "tiny", "--frames", "2", "--out", str(out)])
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "--overwrite" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]


def test_cli_synth_writes_a_valid_log(tmp_path):
    from sim.log import validate_log

    out = tmp_path / "log"
    res = _invoke(["synth", "--town", "tiny", "--seed", "3", "--frames", "3", "--out", str(out), "--cameras", "front,left",
                   "--width", "96", "--height", "64", "--beams", "8", "--azimuth", "128"])
    assert res.exit_code == 0, res.output
    dl = validate_log(out)
    assert dl.cameras == ["front", "left"] and len(dl.frames) == 6 and len(dl.sweeps) == 3
    assert dl.frames[0].width == 96 and dl.meta["synth"] == {"preset": "tiny", "seed": 3, "frames": 3, "dt_s": 0.1, "supersample": 3}
    assert "wrote" in res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]  # no temporary folder left
