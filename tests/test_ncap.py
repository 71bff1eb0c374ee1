"""``loopdrive ncap`` (sim/ncap): NeuroNCAP's score on hand-made trajectories, the three scenario types
on a synthetic log, a permutation replayed from its scenario file, and a tiny end-to-end run.

The runs use the ``tiny`` town log of ``tests/conftest.py`` and the state-only ``idm`` planner on
mesh sensors, which never read the scene bundle's weights: the bundle is a stand-in folder holding
only a ``bundle.json`` header (``ncap`` checks that header for mesh sensors, everything for neural)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.metrics import EpisodeRecord
from sim.ncap.score import first_impact, ncap_score, relative_speed, summarize

RUNNER = CliRunner()


# ------------------------------------------------------------------------------ the score
def _record(ego_speed: float, actor_x: float = 30.0, actor_speed: float = 0.0, actor_yaw: float = 0.0,
            steps: int = 60, dt: float = 0.1) -> EpisodeRecord:  # fmt: skip
    """An ego driving +x at ``ego_speed`` from x=0 and one car starting at ``actor_x`` moving along
    ``actor_yaw`` at ``actor_speed``; the record ends at the first overlap, as the engine's episodes do."""
    from sim.map import Lane, LaneMap

    t = np.arange(steps) * dt
    ex = ego_speed * t
    ax = actor_x + actor_speed * math.cos(actor_yaw) * t
    ay = actor_speed * math.sin(actor_yaw) * t
    gap = np.abs(ax - ex)  # centre distance along x; both 4.6 m long
    hit = np.flatnonzero(gap < 4.6)
    T = int(hit[0]) + 1 if len(hit) else steps
    lm = LaneMap([Lane("L", np.array([[-50.0, 0.0], [200.0, 0.0]]), 3.5, 15.0)])
    return EpisodeRecord(
        t_s=t[:T], ego_xy=np.stack([ex, np.zeros(steps)], 1)[:T], ego_yaw=np.zeros(T), ego_speed=np.full(T, ego_speed),
        ego_size=(4.6, 1.9), actor_ids=("car",), actor_cls=("car",), actor_xy=np.stack([ax, ay], 1)[:T, None, :],
        actor_yaw=np.full((T, 1), actor_yaw), actor_speed=np.full((T, 1), actor_speed), actor_size=np.array([[4.6, 1.9]]),
        actor_valid=np.ones((T, 1), bool), lane_map=lm, route=("L",),
    )  # fmt: skip


def _score(run: EpisodeRecord, ref: EpisodeRecord) -> float:
    hit, rhit = first_impact(run), first_impact(ref)
    assert rhit is not None
    return ncap_score(hit is not None, hit.speed_ms if hit else 0.0, rhit.speed_ms)


def test_no_collision_scores_5() -> None:
    run, ref = _record(0.0), _record(10.0)  # the ego stays put; the no-action ego hits the parked car
    assert first_impact(run) is None
    assert _score(run, ref) == 5.0


def test_impact_at_half_the_reference_speed_scores_2() -> None:
    run, ref = _record(5.0), _record(10.0)
    hit = first_impact(run)
    assert hit is not None and hit.actor == "car" and hit.speed_ms == pytest.approx(5.0)
    assert first_impact(ref).speed_ms == pytest.approx(10.0)
    assert _score(run, ref) == pytest.approx(2.0)


def test_impact_faster_than_the_reference_scores_0() -> None:
    assert _score(_record(12.0), _record(10.0)) == 0.0


def test_summary_counts_offroad_ends_and_a_score_that_counts_them_0() -> None:
    def row(k: str, collided: bool, term: str, score: float) -> dict[str, object]:
        return {"type": k, "status": "ok", "collided": collided, "termination": term, "score": score, "impact_speed_ms": 3.0 if collided else None}

    rows = [row("stationary", False, "offroad", 5.0), row("stationary", False, "horizon", 5.0), row("stationary", True, "collision", 2.0),
            row("side", False, "horizon", 5.0), row("side", False, "offroad", 5.0)]  # fmt: skip
    s = summarize(rows, ["stationary", "side"])
    st, sd = s["types"]["stationary"], s["types"]["side"]
    assert st["score"] == pytest.approx(4.0) and st["score_offroad_as_0"] == pytest.approx(7.0 / 3.0)
    assert st["offroad_ends"] == 1 and st["offroad_rate"] == pytest.approx(1 / 3)
    assert sd["score"] == 5.0 and sd["score_offroad_as_0"] == pytest.approx(2.5) and sd["offroad_ends"] == 1
    ov = s["overall"]
    assert ov["offroad_ends"] == 2 and ov["score"] == pytest.approx(4.5)
    assert ov["score_offroad_as_0"] == pytest.approx((7.0 / 3.0 + 2.5) / 2) and ov["offroad_rate"] == pytest.approx((1 / 3 + 0.5) / 2)


def test_impact_speed_is_the_relative_velocity() -> None:
    head_on = first_impact(_record(6.0, actor_x=40.0, actor_speed=4.0, actor_yaw=math.pi))
    assert head_on is not None and head_on.speed_ms == pytest.approx(10.0)  # closing speeds add
    assert relative_speed(5.0, 0.0, 5.0, math.pi / 2) == pytest.approx(5.0 * math.sqrt(2.0))
    assert relative_speed(7.0, 1.0, 7.0, 1.0) == 0.0
    assert ncap_score(True, 1.0, 0.0) == 0.0 and ncap_score(False, 9.0, 0.0) == 5.0


# ------------------------------------------------------------------------ scenario types
@pytest.fixture(scope="module")
def designs(tiny_log: Path):
    from sim.ncap.scenarios import NCAP_TYPES, design, ego_path
    from sim.scenario import scene_context
    from sim.spec import SceneSpec

    ctx = scene_context(SceneSpec(log=tiny_log))
    ego = ego_path(ctx)
    return ctx, ego, {k: design(k, ego, ctx.lane_map, (4.6, 1.9, 1.5)) for k in NCAP_TYPES}


def _frenet(ego, pose):
    s, d = ego.path.project(np.array(pose[:2]))
    _, h = ego.path.interpolate(float(s))
    return float(s), float(d), math.remainder(pose[2] - float(h), 2 * math.pi)


def test_stationary_target_stands_in_the_ego_lane_ahead(designs) -> None:
    from sim.ncap.scenarios import permutation

    _, _, ds = designs
    d = ds["stationary"]
    for k in range(8):
        p = permutation(d, k, 0, (4.6, 1.9, 1.5))
        s, lat, dyaw = _frenet(d.ego, p.pose)
        assert p.speed == 0.0
        assert s > d.ego.s + 0.5 * (d.ego.size[0] + 4.6) + 4.0  # ahead of the ego, not touching it
        assert abs(lat) <= 0.5 + 1e-6 and abs(dyaw) <= 0.5 + 1e-6  # in the ego's lane
        assert p.t_impact_s == pytest.approx((s - 0.5 * (d.ego.size[0] + 4.6) - d.ego.s) / d.ego.speed, abs=0.05)


def test_frontal_target_comes_towards_the_ego_in_its_lane(designs) -> None:
    from sim.ncap.scenarios import MAX_SAGITTA_M, permutation

    _, _, ds = designs
    d = ds["frontal"]
    for k in range(8):
        p = permutation(d, k, 0, (4.6, 1.9, 1.5))
        s, lat, dyaw = _frenet(d.ego, p.pose)
        assert s > d.ego.s + 10.0 and p.speed > 0.0
        assert abs(lat) <= 0.75 + MAX_SAGITTA_M  # in the ego's lane
        assert math.cos(dyaw) < -0.99  # oncoming
        # where it will be at the designed meeting time: still in the ego's lane, ahead of the ego's start
        u = np.array([math.cos(p.pose[2]), math.sin(p.pose[2])])
        s2, lat2, _ = _frenet(d.ego, (*(np.array(p.pose[:2]) + p.speed * p.t_impact_s * u), p.pose[2]))
        assert abs(lat2) <= 0.75 + MAX_SAGITTA_M and d.ego.s < s2 < s


def test_side_target_crosses_the_ego_path_ahead(designs) -> None:
    from shapely.geometry import LineString

    from sim.ncap.scenarios import permutation

    _, _, ds = designs
    d = ds["side"]
    assert "crossing" in d.source
    for k in range(8):
        p = permutation(d, k, 0, (4.6, 1.9, 1.5))
        u = np.array([math.cos(p.pose[2]), math.sin(p.pose[2])])
        line = LineString([p.pose[:2], np.array(p.pose[:2]) + 60.0 * u])
        ahead = LineString(d.ego.path.interpolate(np.arange(d.ego.s, d.ego.path.length, 0.5))[0])
        x = line.intersection(ahead)
        assert not x.is_empty and x.geom_type == "Point"  # its straight path crosses the ego path ahead of the ego
        s_x, _, dyaw = _frenet(d.ego, (x.x, x.y, p.pose[2]))
        assert abs(math.sin(dyaw)) >= math.sin(math.radians(45.0)) - 1e-9  # ... from the side
        assert float(np.hypot(x.x - p.pose[0], x.y - p.pose[1])) > 5.0  # starting off the ego's path
        assert abs(s_x - d.anchor_s) <= 1.0 / abs(math.sin(dyaw)) + 1e-6  # where it was designed to
        # it reaches the crossing when the no-action ego does (within the longitudinal jitter)
        t_target = float(np.hypot(x.x - p.pose[0], x.y - p.pose[1])) / p.speed
        assert abs(t_target - (s_x - d.ego.s) / d.ego.speed) <= 2.0 / p.speed + 1.0 / d.ego.speed + 0.05


def test_permutations_are_seeded_and_prefix_stable(designs) -> None:
    from sim.ncap.scenarios import permutation

    _, _, ds = designs
    a = [permutation(ds["frontal"], k, 7, (4.6, 1.9, 1.5)) for k in range(3)]
    assert a == [permutation(ds["frontal"], k, 7, (4.6, 1.9, 1.5)) for k in range(3)]
    assert a[0] != permutation(ds["frontal"], 0, 8, (4.6, 1.9, 1.5))
    assert len({p.pose for p in a}) == 3


# ------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def stand_in_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    b = tmp_path_factory.mktemp("bundle") / "tiny-bundle"
    b.mkdir()
    (b / "bundle.json").write_text(json.dumps({"format": "loopdrive-scene-bundle"}), encoding="utf-8")
    return b


@pytest.fixture(scope="module")
def ncap_run(tmp_path_factory: pytest.TempPathFactory, tiny_log: Path, stand_in_bundle: Path) -> Path:
    out = tmp_path_factory.mktemp("ncap") / "run"
    res = RUNNER.invoke(app, ["ncap", str(stand_in_bundle), "--log", str(tiny_log), "--planner", "idm", "--runs", "1",
                              "--sensors", "mesh", "--seed", "3", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "average" in res.stdout and "0 errored" in res.stdout
    return out


def test_ncap_run_writes_results_and_report(ncap_run: Path) -> None:
    import polars as pl

    df = pl.read_parquet(ncap_run / "results.parquet")
    assert df.height == 3 and sorted(set(df["type"])) == ["frontal", "side", "stationary"]
    assert (df["status"] == "ok").all()
    # the no-action reference hits the target in every permutation: the scenarios are collision courses
    assert df["reference_collided"].all() and set(df["reference_actor"]) == {"ncap_target"}
    for r in df.iter_rows(named=True):
        v_i = r["impact_speed_ms"] if r["collided"] else 0.0
        assert r["score"] == pytest.approx(ncap_score(r["collided"], v_i, r["reference_speed_ms"]))
    res = json.loads((ncap_run / "results.json").read_text(encoding="utf-8"))
    ov, types = res["summary"]["overall"], res["summary"]["types"]
    assert ov["permutations"] == 3 and ov["errored"] == 0
    assert ov["score"] == pytest.approx(np.mean([types[k]["score"] for k in types]))
    assert types["stationary"]["collision_rate"] == pytest.approx(df.filter(pl.col("type") == "stationary")["collided"].mean())
    md = (ncap_run / "report.md").read_text(encoding="utf-8")
    assert "stationary" in md and "2.111" in md and "| average |" in md
    for k in ("stationary", "frontal", "side"):
        assert (ncap_run / f"hist_{k}.png").read_bytes()[:4] == b"\x89PNG"
    assert "<table>" in (ncap_run / "report.html").read_text(encoding="utf-8")
    assert (ncap_run / "run" / "report.html").is_file()
    # a video of each worst run (the collided ones, at most 3); idm hits the frontal and side targets
    collided = sorted(f"{e}.mp4" for e in df.filter(pl.col("collided"))["episode_id"])
    videos = sorted((ncap_run / "videos").glob("*.mp4"))
    assert len(collided) == 2 and [v.name for v in videos] == collided
    assert all(v.stat().st_size > 0 for v in videos)
    files = sorted((ncap_run / "scenarios").rglob("*.yaml"))
    assert len(files) == 3
    val = RUNNER.invoke(app, ["validate", *map(str, files)])
    assert val.exit_code == 0, val.output


def test_a_permutation_reproduces_its_score_from_its_yaml(ncap_run: Path, tmp_path: Path) -> None:
    import polars as pl

    from sim.batch import run_batch
    from sim.ncap.reference import no_action_rollout
    from sim.ncap.score import episode_record

    df = pl.read_parquet(ncap_run / "results.parquet")
    row = df.sort(["collided", "type"], descending=True).row(0, named=True)  # a collision, if any
    yaml = ncap_run / row["file"]
    res = RUNNER.invoke(app, ["run", str(yaml), "--out", str(tmp_path / "replay")])
    assert res.exit_code == 0, res.output
    ref = run_batch([yaml], tmp_path / "ref", rollout_fn=no_action_rollout)
    assert ref.failed == 0
    hit = first_impact(episode_record(tmp_path / "replay", row["episode_id"]))
    rhit = first_impact(episode_record(tmp_path / "ref", row["episode_id"]))
    assert (hit is not None) == row["collided"] and rhit is not None
    assert rhit.speed_ms == pytest.approx(row["reference_speed_ms"], abs=1e-9)
    assert ncap_score(hit is not None, hit.speed_ms if hit else 0.0, rhit.speed_ms) == pytest.approx(row["score"], abs=1e-9)


def test_resume_skips_finished_work_and_refuses_another_run(ncap_run: Path, tiny_log: Path, stand_in_bundle: Path) -> None:
    before = (ncap_run / "results.parquet").read_bytes()
    base = ["ncap", str(stand_in_bundle), "--log", str(tiny_log), "--runs", "1", "--sensors", "mesh", "--seed", "3",
            "--out", str(ncap_run)]  # fmt: skip
    again = RUNNER.invoke(app, [*base, "--planner", "idm"])
    assert again.exit_code == 2 and "--resume" in again.stderr
    res = RUNNER.invoke(app, [*base, "--planner", "idm", "--resume"])
    assert res.exit_code == 0, res.output
    assert "0 episodes run, 6 already done" in res.stdout
    import polars as pl

    assert pl.read_parquet(ncap_run / "results.parquet").equals(pl.read_parquet(__import__("io").BytesIO(before)))
    other = RUNNER.invoke(app, [*base, "--planner", "pdm_closed", "--resume"])
    assert other.exit_code == 2
    lines = other.stderr.strip().splitlines()
    assert len(lines) == 1 and "planner" in lines[0] and "pdm_closed" in lines[0]


def test_a_run_where_every_permutation_errored_exits_1(tmp_path: Path, tiny_log: Path, stand_in_bundle: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from sim.planning import PLANNERS
    from tests._registry import raising_planner

    Raiser = raising_planner("test_ncap_raiser")
    PLANNERS.names()  # load the entry points first, so restoring the dict loses nothing
    monkeypatch.setitem(PLANNERS._items, Raiser.name, Raiser)
    res = RUNNER.invoke(app, ["ncap", str(stand_in_bundle), "--log", str(tiny_log), "--planner", Raiser.name,
                              "--runs", "1", "--sensors", "mesh", "--out", str(tmp_path / "o")])  # fmt: skip
    assert res.exit_code == 1, res.output
    assert "every permutation errored (3 of 3)" in res.stderr and "3 errored" in res.stdout
    assert "every permutation errored" in (tmp_path / "o" / "report.md").read_text(encoding="utf-8")


def test_a_log_is_refused_before_the_folder_is_made(tmp_path: Path, stand_in_bundle: Path) -> None:
    (tmp_path / "notalog").mkdir()
    res = RUNNER.invoke(app, ["ncap", str(stand_in_bundle), "--log", str(tmp_path / "notalog"), "--planner", "idm",
                              "--sensors", "mesh", "--out", str(tmp_path / "o")])  # fmt: skip
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
