"""``sensor_policy``: the planner contract, the sensor raster, a short training run, the shipped
policy stopping short of an obstacle it sees only in its LiDAR, and bad inputs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from agents.planners.common import EgoView, ego_from_obs
from agents.sensor_policy import (
    SHIPPED_WEIGHTS,
    SensorDataset,
    SensorPolicyConfig,
    SensorPolicyPlanner,
    build_network,
    load_sensor_policy,
    save_sensor_policy,
)
from agents.sensor_policy_data import RasterGeometry, SensorRaster, load_sensor_shards
from agents.sensor_policy_train import train_sensor_policy
from sim import engine
from sim.errors import BundleError, ScenarioError
from sim.metrics import compute_metrics
from sim.planning import PLANNERS, PlannerInit, Trajectory
from sim.planning.training import TRAINERS, ImitationTrainer
from sim.render.box_lidar import simulate_lidar
from sim.rollout import run_planner_episode
from sim.sensors import default_rig
from sim.spec import EgoSpec, ScenarioSpec
from sim.world import crossroads_scene

ROUTE = ("E_in_1", "E_1_straight", "E_out_1")


@pytest.fixture(scope="module")
def scene() -> Any:
    return crossroads_scene(actors=(), duration_s=8.0)


def _tiny_policy(tmp: Path, seed: int = 0) -> Path:
    import torch

    cfg = SensorPolicyConfig(width=4, hidden=16)
    torch.manual_seed(seed)
    out = tmp / "tiny.safetensors"
    save_sensor_policy(build_network(cfg), cfg, out)
    return out


def _sweep(*cars: tuple[float, float]) -> np.ndarray:
    """A box-LiDAR sweep from an ego at the origin heading +x, with cars at ego-frame (x, y)."""
    n = 1 + len(cars)
    xy = np.array([(0.0, 0.0), *cars], np.float64)
    w = SimpleNamespace(x=xy[:, 0], y=xy[:, 1], yaw=np.zeros(n), z=np.zeros(n), length=np.full(n, 4.6), width=np.full(n, 1.9),
                        height=np.full(n, 1.6), valid=np.ones(n, bool))  # fmt: skip
    return simulate_lidar(w, default_rig().lidar)


# ---------------------------------------------------------------------------------- contract
def test_registered_with_its_trainer_and_declares_only_sensor_kinds() -> None:
    cls = PLANNERS.get("sensor_policy")
    assert cls is SensorPolicyPlanner
    spec = cls().observation_spec()
    assert set(spec.kinds) == {"ego", "lidar"}  # never objects / state / bev (privileged)
    tr = TRAINERS.get("sensor-policy")
    assert issubclass(tr, ImitationTrainer) and tr.planner == "sensor_policy"
    # parameters: a file may name weights / runtime, never the in-memory network
    assert cls.param_problems({"runtime": "onnx_int8"}) == []
    assert cls.param_problems({"runtime": "tensorrt"})
    assert any("only from code" in m for _, m in cls.param_problems({"network": "x"}))


class _Spy(SensorPolicyPlanner):
    name = "sensor_policy_spy"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.seen: list[set[str]] = []

    def plan(self, obs: Any) -> Trajectory:
        self.seen.append(set(obs))
        return super().plan(obs)


def test_contract_gets_only_what_it_declared_and_returns_a_finite_trajectory(scene: Any, tmp_path: Path) -> None:
    spec = ScenarioSpec(name="t", ego=EgoSpec(route=ROUTE), horizon_s=1.5)
    c = engine.compile_scenario(spec, scene)
    net, cfg = load_sensor_policy(_tiny_policy(tmp_path))
    spy = _Spy(network=net, config=cfg)
    res = run_planner_episode(spec, spy, 0, compiled=c, observation=("state", "objects", "lidar", "bev"), raise_errors=True)
    assert res.status == "ok" and len(res.actions) == 15
    assert spy.seen and all(s == {"ego", "lidar"} for s in spy.seen)
    out = spy.plan_raster(spy.last_raster, np.array([0, 0, 0, 5.0, 0, 0]))
    assert isinstance(out, Trajectory) and out.is_finite() and len(out.t_s) == cfg.k
    assert np.all(np.diff(out.t_s) > 0) and np.all(np.diff(out.xy[:, 0]) >= 0)  # never plans backwards
    # the route channel is drawn from the map: the ego's own lane is on it, right in front
    assert spy.last_raster[..., 4].mean() > 0


def test_raster_puts_an_obstacle_where_it_is() -> None:
    g = RasterGeometry()
    ras = SensorRaster(g)
    ras.reset(None)
    img = ras(_sweep((15.0, 0.0)), EgoView(0.0, 0.0, 0.0, 0.0))
    occ = img[..., 0]
    rows, cols = np.nonzero(occ)
    assert len(rows) > 3
    # the car's rear face at x = 12.7 m, across y = -0.95..0.95 m: rows of x in [12, 14], central columns
    x = (g.origin_row - rows - 0.5) * g.res_m
    y = (g.size / 2 - cols - 0.5) * g.res_m
    assert 12.0 <= x.min() <= 13.5 and np.abs(y).max() <= 1.5
    assert img[..., 3].sum() > 0 and img[..., 4].sum() == 0  # ground seen; no route without a map
    empty = ras(_sweep(), EgoView(0.0, 0.0, 0.0, 0.0))
    assert empty[..., 0].sum() == 0


def _random_sweep(rng: np.random.Generator, beams: int, steps: int) -> np.ndarray:
    """A range image with every case the raster meets: misses (0), negative, NaN and infinite
    ranges, returns in and far out of the raster, on the ground, on obstacles and above 3 m, and
    points exactly on cell edges (ranges of whole multiples of the cell size)."""
    a = np.zeros((beams, steps, 2), np.float32)
    a[..., 0] = rng.uniform(0.5, 90.0, (beams, steps))
    a[..., 0] *= rng.random((beams, steps)) < 0.8
    edges = rng.random((beams, steps)) < 0.1
    a[..., 0][edges] = 0.75 * rng.integers(1, 60, edges.sum())
    bad = rng.random((beams, steps))
    a[..., 0][bad < 0.01] = -3.0
    a[..., 0][(bad >= 0.01) & (bad < 0.015)] = np.nan
    a[..., 0][(bad >= 0.015) & (bad < 0.02)] = np.inf
    a[..., 1] = rng.random((beams, steps))
    return a


def test_compiled_raster_equals_the_numpy_reference_byte_for_byte(scene: Any) -> None:
    """The compiled raster (what the planner runs) is the numpy definition the shipped weights
    were trained on: equal byte for byte on every channel, the route included, at several poses,
    on box-LiDAR sweeps and on random range images with misses, NaN and cell-edge points."""
    from sim.map import LaneMap

    init = PlannerInit(lane_map=LaneMap.from_dict(scene.map), route=ROUTE, dt_s=0.1, horizon_s=5.0)
    rng = np.random.default_rng(7)
    for geom in (RasterGeometry(), GEOM):
        ras = SensorRaster(geom)
        ras.reset(init)
        spec = ras.lidar
        sweeps = [_sweep((15.0, 0.0), (6.0, 3.5)), _sweep()] + [_random_sweep(rng, spec.beams, spec.azimuth_steps) for _ in range(4)]
        poses = [EgoView(0.0, 0.0, 0.0, 5.0), EgoView(-30.0, -1.75, 0.0, 5.0), EgoView(12.3, -40.1, 1.2, 8.0), EgoView(1e4, 1e4, -2.5, 0.0)]
        for sw in sweeps:
            for ego in poses:
                with np.errstate(invalid="ignore"):  # the reference casts NaN / inf cells to int (then drops them)
                    fast, ref = ras(sw, ego), ras.reference(sw, ego)
                assert fast.dtype == ref.dtype == np.uint8 and fast.shape == ref.shape == (geom.size, geom.size, 5)
                np.testing.assert_array_equal(fast, ref)
        assert ras(sweeps[0], poses[1])[..., 4].any()  # the route channel was exercised
        assert ras(sweeps[2], poses[0])[..., 2].any() and ras(sweeps[2], poses[0])[..., 1].any()
    ras = SensorRaster(RasterGeometry())
    ras.reset(None)  # no route: channel 4 empty in both
    sw = _random_sweep(rng, ras.lidar.beams, ras.lidar.azimuth_steps)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(ras(sw, poses[0]), ras.reference(sw, poses[0]))
    with pytest.raises(ValueError, match="LiDAR range image"):
        ras(sw[:, :10], poses[0])


# ---------------------------------------------------------------------------------- training
GEOM = RasterGeometry(size=32, res_m=1.5, behind_m=6.0)  # small raster: fast tests
T_K = np.arange(1, 7) * (2.0 / 3.0)


def _stop_label(v: float, gap: float | None) -> np.ndarray:
    """Keep going at v, or stop with the ego's front 3 m short of a car centred ``gap`` m ahead."""
    x = v * T_K if gap is None else np.minimum(v * T_K, max(gap - 2.3 - 2.3 - 3.0, 0.0))
    return np.stack([x, np.zeros(6)], 1).astype(np.float32)


def _obstacle_shards(tmp: Path, n_eps: int = 5, t: int = 40, seed: int = 0) -> Path:
    """Shards from box-LiDAR sweeps: half the samples have a car in the ego's lane (label: stop
    short of it), some a car in the next lane (label: keep going)."""
    rng = np.random.default_rng(seed)
    ras = SensorRaster(GEOM)
    ras.reset(None)
    out = tmp / "shards"
    out.mkdir()
    for e in range(n_eps):
        rows: dict[str, list[Any]] = {"raster": [], "ego": [], "waypoints": []}
        for _ in range(t):
            v = float(rng.uniform(3.0, 12.0))
            gap = float(rng.uniform(9.0, 30.0)) if rng.random() < 0.5 else None
            cars = ([(gap, 0.0)] if gap is not None else []) + ([(float(rng.uniform(6, 30)), 3.5)] if rng.random() < 0.4 else [])
            rows["raster"].append(ras(_sweep(*cars), EgoView(0.0, 0.0, 0.0, v)))
            rows["ego"].append(np.array([v, 0.0, 0.0], np.float32))
            rows["waypoints"].append(_stop_label(v, gap))
        np.savez(out / f"ep{e}.npz", **{k: np.stack(x) for k, x in rows.items()})
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A short training on LiDAR sweeps (the data path of a real run: raster, shards, loader,
    the shared fitting loop, safetensors)."""
    import torch

    tmp = tmp_path_factory.mktemp("sp-train")
    ds = SensorDataset.load([_obstacle_shards(tmp)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = SensorPolicyConfig(raster_size=32, raster_res_m=1.5, raster_behind_m=6.0, epochs=40, batch_size=16, lr=2e-3, width=8, hidden=64)
        res = train_sensor_policy(ds, tmp / "w" / "sp.safetensors", cfg, plot=False)
    finally:
        torch.set_num_threads(threads)
    return res, tmp


def test_a_short_training_lowers_the_validation_loss(trained: tuple[Any, Path]) -> None:
    res, _ = trained
    assert min(res.val_loss) < 0.3 * res.initial_val_loss
    assert res.train_loss[-1] < res.train_loss[0]
    _net, cfg = load_sensor_policy(res.weights)  # written as safetensors + JSON, reloads
    assert cfg.k == 6 and cfg.width == 8 and cfg.raster_size == 32 and cfg.raster_res_m == 1.5


@pytest.mark.parametrize("gap", [14.0, 22.0])
def test_plans_to_stop_short_of_an_obstacle_in_its_lane(trained: tuple[Any, Path], gap: float) -> None:
    res, _ = trained
    pl = SensorPolicyPlanner(weights=str(res.weights))
    pl.reset(PlannerInit(lane_map=None, route=(), dt_s=0.1, horizon_s=5.0))
    ego = np.array([0.0, 0.0, 0.0, 10.0, 0.0, 0.0])
    free = pl.plan({"lidar": _sweep(), "ego": ego}).xy
    blocked = pl.plan({"lidar": _sweep((gap, 0.0)), "ego": ego}).xy
    beside = pl.plan({"lidar": _sweep((gap, 3.5)), "ego": ego}).xy
    assert free[-1, 0] > 30.0  # 10 m/s for 4 s is 40 m
    # the ego's front (2.3 m ahead of its centre) stays short of the car's rear (2.3 m behind its centre)
    assert blocked[:, 0].max() + 2.3 < gap - 2.3
    assert beside[-1, 0] > 30.0  # a car in the next lane does not stop it


# ------------------------------------------------------------------------- shipped weights
def test_shipped_weights_record_how_they_were_made() -> None:
    import json

    doc = json.loads(SHIPPED_WEIGHTS.with_suffix(".json").read_text())
    assert doc["command"].startswith("loopdrive train sensor-policy ")
    assert doc["wall_s"] <= 3600.0 and doc["samples"] > 1000
    assert min(doc["val_loss"]) < 0.5 * doc["initial_val_loss"]


def test_drives_a_free_route_without_leaving_the_road(scene: Any) -> None:
    spec = ScenarioSpec(name="t", ego=EgoSpec(route=ROUTE), horizon_s=5.0)
    c = engine.compile_scenario(spec, scene)
    res = run_planner_episode(spec, "sensor_policy", 0, compiled=c, raise_errors=True)
    values, _ = compute_metrics(res.record)
    assert values["collision"].score == 1.0 and values["offroad"].score == 1.0
    assert float(np.hypot(*(res.record.ego_xy[-1] - res.record.ego_xy[0]))) > 25.0


# -------------------------------------------------------------------------------- bad input
def test_bad_shards_and_weights_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, raster=np.zeros((3, 8, 8, 5), np.uint8), ego=np.zeros((3, 3), np.float32))
    with pytest.raises(ScenarioError, match=r"bad\.npz.*waypoints"):
        load_sensor_shards([bad])
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ScenarioError, match=r"junk\.npz"):
        load_sensor_shards([tmp_path / "junk.npz"])
    with pytest.raises(ScenarioError, match=r"empty_dir_does_not_exist.*does not exist"):
        load_sensor_shards([tmp_path / "empty_dir_does_not_exist"])
    w = _tiny_policy(tmp_path)
    w.write_bytes(b"\x00" * 64)
    with pytest.raises(BundleError, match=r"tiny\.safetensors.*weights"):
        load_sensor_policy(w)
    w.with_suffix(".json").write_text("{}")
    with pytest.raises(BundleError, match=r"tiny\.json"):
        load_sensor_policy(w)


def test_plan_fills_the_network_input_in_the_raster_pass_and_plans_as_from_the_raster(tmp_path: Path) -> None:
    """``plan`` (raster and network input in one compiled pass) gives the same trajectory as
    ``plan_raster`` on the reference raster (numpy, then / 255 in numpy)."""
    pl = SensorPolicyPlanner(weights=str(_tiny_policy(tmp_path)))
    pl.reset(PlannerInit(lane_map=None, route=(), dt_s=0.1, horizon_s=5.0))
    ego = np.array([0.0, 0.0, 0.0, 7.0, 0.3, 0.01])
    sweep = _random_sweep(np.random.default_rng(3), pl.raster.lidar.beams, pl.raster.lidar.azimuth_steps)
    fast = pl.plan({"lidar": sweep, "ego": ego})
    with np.errstate(invalid="ignore"):
        ref_raster = pl.raster.reference(sweep, ego_from_obs({"ego": ego}))
    np.testing.assert_array_equal(pl.last_raster, ref_raster)
    np.testing.assert_array_equal(pl._x, pl.net_input(ref_raster))
    slow = pl.plan_raster(ref_raster, ego)
    np.testing.assert_array_equal(fast.xy, slow.xy)
    np.testing.assert_array_equal(fast.t_s, slow.t_s)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        pl.raster(sweep, ego_from_obs({"ego": ego}), np.zeros((1, 5, 64, 64), np.float64))
