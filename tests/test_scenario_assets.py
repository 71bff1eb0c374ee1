"""Scenario insert ops with an actor-library ``asset``: validation against the library (fast, an
index-only library) and the neural backend rendering the library actor for the inserted actor (the
tiny bundle of ``test_render_backends``)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sim.errors import ScenarioError
from tests.test_render_backends import RIG, build_tiny_bundle

# an index-only library: validation reads index.json, never the source weights
LIB_ACTORS = [
    ("town-s1", "12", "car", [4.4, 1.8, 1.5]),
    ("town-s1", "13", "car", [4.9, 2.0, 1.6]),
    ("town-s1", "7", "truck", [8.0, 2.5, 3.2]),
    ("town-s2", "3", "pedestrian", [0.6, 0.6, 1.75]),
]
HEAD = """version: 1
scene: {{town: small, seed: 0{lib}}}
ego:
  start: {{lane: lane_1, s: 5.0, speed: 10.0}}
  route: [lane_1, lane_26, lane_5]
actors:
"""


@pytest.fixture()
def lib_dir(tmp_path: Path) -> Path:
    root = tmp_path / "actors"
    root.mkdir()
    doc = {
        "format": "loopdrive-actor-library",
        "format_version": 1,
        "sources": {s: {"scene_config": "{}", "bundle": f"/nonexistent/{s}", "sha256": "0"} for s in ("town-s1", "town-s2")},
        "actors": [{"key": f"{s}/{i}", "source": s, "id": i, "class": c, "size": z, "slot": k, "static": False}
                   for k, (s, i, c, z) in enumerate(LIB_ACTORS)],
    }
    (root / "index.json").write_text(json.dumps(doc))
    return root


def _write(tmp_path: Path, ops: list[str], lib: str | None = "actors") -> Path:
    f = tmp_path / "asset.yaml"
    f.write_text(HEAD.format(lib=f", actor_library: {lib}" if lib else "") + "".join(f"  - {o}\n" for o in ops) + "horizon_s: 2.0\n")
    return f


def test_asset_gives_class_and_size_of_the_library_actor(tmp_path: Path, lib_dir: Path) -> None:
    from sim.scenario import load_scenario

    f = _write(tmp_path, [
        "{op: insert, id: recon_car, asset: town-s1/12, spawn: {lane: lane_1, s: 45.0}, behavior: {type: static}}",
        # source only: the car of town-s1 nearest in size to the given box (4.9 x 2.0 x 1.6 within 25 %)
        "{op: insert, id: big_car, class: car, size: [5.0, 2.0, 1.6], asset: town-s1, spawn: {lane: lane_0, s: 30.0}}",
        "{op: insert, id: plain, class: cyclist, spawn: {lane: lane_0, s: 15.0}}",
    ])
    spec = load_scenario(f)
    a, b, c = spec.actors
    assert (a.cls, a.size, a.asset) == ("car", (4.4, 1.8, 1.5), "town-s1/12")
    assert (b.cls, b.size, b.asset) == ("car", (5.0, 2.0, 1.6), "town-s1/13")
    assert c.asset is None
    assert spec.scene.actor_library == lib_dir  # relative to the scenario file


def test_bad_assets_are_typed_errors_with_field_line_and_what_is_available(tmp_path: Path, lib_dir: Path) -> None:
    from sim.scenario import load_scenario, validate_file

    f = _write(tmp_path, [
        "{op: insert, id: a, asset: town-s1/99, spawn: {lane: lane_1, s: 45.0}}",
        "{op: insert, id: b, class: truck, asset: town-s1/12, spawn: {lane: lane_0, s: 50.0}}",
        "{op: insert, id: c, asset: town-s1/12, size: [9.0, 1.8, 1.5], spawn: {lane: lane_1, s: 20.0}}",
        "{op: insert, id: d, class: bus, asset: town-s1, spawn: {lane: lane_0, s: 20.0}}",
        "{op: insert, id: e, class: car, asset: town-s9, spawn: {lane: lane_0, s: 35.0}}",
    ])
    errs = {e.field: e for e in validate_file(f)}
    assert "town-s1/12, town-s1/13, town-s1/7, town-s2/3" in errs["actors[0].asset"].message
    assert errs["actors[0].asset"].line == 7 and errs["actors[0].asset"].file == str(f)
    assert "expected class 'car'" in errs["actors[1].class"].message
    assert "differs in length by more than 25%" in errs["actors[2].size"].message
    assert "has no actor of class 'bus'; it has: car, truck" in errs["actors[3].asset"].message
    assert "sources: town-s1, town-s2" in errs["actors[4].asset"].message
    with pytest.raises(ScenarioError, match=r"actors\[0\]\.asset: unknown library actor 'town-s1/99'"):
        load_scenario(f)
    # within the rescaling tolerance the box is kept (the field stretches to it)
    ok = _write(tmp_path, ["{op: insert, id: c, asset: town-s1/12, size: [5.2, 1.8, 1.5], spawn: {lane: lane_1, s: 45.0}}"])
    assert load_scenario(ok).actors[0].size == (5.2, 1.8, 1.5)


def test_asset_without_a_library_and_without_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sim.scenario import validate_file

    monkeypatch.setenv("LOOPDRIVE_ACTORS", str(tmp_path / "no-library"))
    f = _write(tmp_path, ["{op: insert, id: a, asset: town-s1/12, spawn: {lane: lane_1, s: 45.0}}"], lib=None)
    (e,) = validate_file(f)
    assert e.field == "actors[0].asset" and "loopdrive actors add" in e.message and "no-library" in e.message
    g = _write(tmp_path, ["{op: insert, id: a, spawn: {lane: lane_1, s: 45.0}}"])
    (e,) = validate_file(g)
    assert e.field == "actors[0]" and "class" in e.message and "asset" in e.message


def test_edits_insert_refuses_a_malformed_asset() -> None:
    from sim import engine
    from sim.edits import insert
    from sim.scenario import load_scenario
    from sim.spec import InsertOp, SpawnSpec

    spec = load_scenario(Path(__file__).parents[1] / "scenarios" / "stopped_vehicle.yaml")
    c = engine.compile_scenario(spec)
    world = engine.reset(c, np.random.default_rng(0)).world(0)
    op = InsertOp(id="x", cls="car", size=(4.5, 1.9, 1.5), spawn=SpawnSpec(lane="lane_1", s=25.0), asset="no-slash")
    with pytest.raises(ScenarioError, match=r"source/id") as ei:
        insert(world, op, c.lane_map, where="actors[0]")
    assert ei.value.field == "actors[0].asset"
    ok = insert(world, dataclasses.replace(op, asset="town-s1/12"), c.lane_map, where="actors[0]")
    assert ok.index("x") is not None


# ------------------------------------------------------------------- the neural backend renders it
@pytest.fixture(scope="module")
def recon_setup(tmp_path_factory: pytest.TempPathFactory, tiny_log: Path):
    """The tiny bundle, and a library harvested from a copy of it under the name ``town-s1``."""
    from sim.actor_library import ActorLibrary

    bundle = build_tiny_bundle(tmp_path_factory, tiny_log)
    root = tmp_path_factory.mktemp("asset-library")
    lib = ActorLibrary(root / "lib")
    lib.add_bundle(shutil.copytree(bundle, root / "town-s1"))
    return bundle, lib


def test_inserted_asset_is_rendered_with_the_library_actor(tmp_path: Path, tiny_log: Path, recon_setup) -> None:
    from sim import engine
    from sim.batch import episode_scene, make_renderer
    from sim.render.base import ArrayWorld
    from sim.render.mesh import MeshRenderer
    from sim.render.neural import NeuralRenderer
    from sim.scenario import load_scenario

    bundle, lib = recon_setup
    car = lib.get("town-s1/7")
    yml = tmp_path / "recon_insert.yaml"
    # 10 m ahead of the logged ego at t = 0 (ego at (-16.5, -5.4) heading +x), turned by 0.3 rad
    yml.write_text(
        f"version: 1\nscene: {{log: {tiny_log}, bundle: {bundle}, renderer: neural, actor_library: {lib.root}}}\n"
        "actors:\n  - {op: insert, id: recon_car, asset: town-s1/7, spawn: {pose: [-6.5, -5.37, 0.3]}, behavior: {type: static}}\n"
        "horizon_s: 1.0\n"
    )
    spec = load_scenario(yml)
    assert spec.actors[0].asset == "town-s1/7" and spec.actors[0].size == car.size
    c = engine.compile_scenario(spec, episode_scene(spec))
    world = engine.reset(c, np.random.default_rng(0)).world(0)
    j = world.index("recon_car")
    assert world.cls[j] == "car" and (world.length[j], world.width[j], world.height[j]) == pytest.approx(car.size)
    r = make_renderer(spec, c.scene)
    assert isinstance(r, NeuralRenderer) and r.assets == {"recon_car": "town-s1/7"} and r.library.root == lib.root
    assert r.plan(world).foreign == {"town-s1": ((j,), (car.slot,))}
    aw = ArrayWorld.of(world)
    valid = aw.valid.copy()
    valid[j] = False
    gone = dataclasses.replace(aw, valid=valid)
    cam = RIG.cameras[0]
    with_car, without = r.render_camera(world, cam), r.render_camera(gone, cam)
    nearer = with_car.depth < without.depth - 0.5
    assert nearer.sum() > 20 and np.all(with_car.depth[nearer] < 16.0)
    assert np.abs(with_car.rgb.astype(np.int16) - without.rgb.astype(np.int16)).sum(-1)[nearer].mean() > 10.0
    li = r.render_lidar(world, RIG.lidar)
    assert (li.actor_id == j).sum() > 5
    # the mesh-based backends draw the class model at the library actor's box
    m = make_renderer(spec, c.scene, name="mesh")
    try:
        assert isinstance(m, MeshRenderer)
        ml = m.render_lidar(world, RIG.lidar)
        hit = ml.world_points()[ml.actor_id == j]
        assert len(hit) > 5
        assert np.abs(hit[:, 0] - world.x[j]).max() < car.size[0] / 2 + 0.3
    finally:
        m.close()
