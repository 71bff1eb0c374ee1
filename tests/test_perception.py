"""LiDAR perception: the analytic box LiDAR, ground removal, clustering and tracking."""

from __future__ import annotations

import numpy as np

from agents.perception import LidarPerception, cluster_obstacles, lidar_points, remove_ground
from sim.render.box_lidar import simulate_lidar
from sim.sensors import LidarSpec
from sim.spec import BehaviorSpec
from sim.world import WorldState

SPEC = LidarSpec(beams=32, azimuth_steps=512)


def _world(actors: list[tuple[float, float, float]]) -> WorldState:
    """Ego at the origin heading +x; cars (x, y, yaw) of 4.5 x 1.9 x 1.5 m."""
    n = 1 + len(actors)
    xs = [0.0] + [a[0] for a in actors]
    ys = [0.0] + [a[1] for a in actors]
    yaws = [0.0] + [a[2] for a in actors]
    return WorldState(
        t_us=0, ids=("ego", *[f"c{i}" for i in range(len(actors))]), cls=("car",) * n,
        x=np.array(xs), y=np.array(ys), z=np.zeros(n), yaw=np.array(yaws), speed=np.zeros(n),
        length=np.array([4.6] + [4.5] * len(actors)), width=np.array([1.9] * n), height=np.array([1.6] + [1.5] * len(actors)),
        valid=np.ones(n, bool), t_spawn_us=np.zeros(n, np.int64), behavior=(BehaviorSpec("ego"),) + (BehaviorSpec("static"),) * len(actors),
    )  # fmt: skip


def test_box_lidar_hits_the_box_faces_and_the_ground() -> None:
    img = simulate_lidar(_world([(15.0, 0.0, 0.0)]), SPEC)
    assert img.shape == (32, 512, 2) and img.dtype == np.float32
    pts = lidar_points(img, SPEC) + np.asarray(SPEC.mount_xyz)
    ground = np.abs(pts[:, 2]) < 1e-4
    assert ground.mean() > 0.5  # most downward rays reach the flat ground
    obj = remove_ground(pts)
    # every non-ground return lies on the car (rear face at x = 12.75, within its width and height)
    assert len(obj) > 20
    assert np.all(np.abs(obj[:, 0] - 12.75) < 0.05) and np.all(np.abs(obj[:, 1]) <= 0.951) and np.all(obj[:, 2] <= 1.501)


def test_clustering_separates_two_cars() -> None:
    img = simulate_lidar(_world([(15.0, 0.0, 0.0), (12.0, 6.0, np.pi / 2)]), SPEC)
    pts = remove_ground(lidar_points(img, SPEC) + np.asarray(SPEC.mount_xyz))
    dets = cluster_obstacles(pts[:, :2])
    assert len(dets) == 2
    near = sorted(dets, key=lambda d: d.y)
    assert abs(near[0].y) < 0.5 and abs(near[1].y - (6.0 - 0.95)) < 0.6  # visible faces of each car


def test_tracker_estimates_velocity_of_a_moving_car() -> None:
    perc = LidarPerception(SPEC, None, dt_s=0.1)
    v = 6.0
    for k in range(15):
        view = perc(simulate_lidar(_world([(10.0 + v * 0.1 * k, 0.0, 0.0)]), SPEC), np.zeros(2), 0.0)
    assert view.n == 1
    assert abs(view.vel()[0, 0] - v) < 0.6 and abs(view.vel()[0, 1]) < 0.3
    # the constant-velocity prediction 1 s ahead lands near where the car will be
    pred = view.predict(np.array([1.0]))[0, 0]
    assert abs(pred[0] - (view.xy[0, 0] + v)) < 0.7
