"""Batch runs: results table and episode folders, error rows, kill-and-resume, local vs Ray,
the scenario library end to end, reports and comparisons, resume refusing another run definition,
workers dying with the parent."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from sim.batch import load_results, read_episode, run_batch, run_episode
from sim.bench.batch import bench_episodes
from sim.cli import app
from sim.metrics import METRICS
from sim.report import compare_runs, write_report
from sim.scenario import Episode, expand

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "scenarios"

SCENARIO = """\
version: 1
name: {name}
description: ego follows a slower car in the tiny town
scene: {{town: tiny, seed: 0}}
ego:
  start: {{lane: lane_1, s: 2.0, speed: 6.0}}
  route: [lane_1, lane_22, lane_9]
actors:
  - {{op: insert, id: lead, class: car, spawn: {{lane: lane_1, s: 16.0, speed: 4.0}}, behavior: {{type: idm, v0: 4.0}}}}
planner: {{name: idm}}
horizon_s: {horizon}
seeds: {seeds}
sweep: {{actors.0.spawn.speed: [2.0, 4.0]}}
"""


def _scenarios(tmp: Path, seeds: list[int], horizon: float = 2.0, name: str = "follow") -> Path:
    d = tmp / "scen"
    d.mkdir(exist_ok=True)
    (d / f"{name}.yaml").write_text(SCENARIO.format(name=name, horizon=horizon, seeds=seeds))
    return d


def fail_on_seed_1(ep: Episode, planner: str, params: dict) -> object:
    """A rollout that breaks for seed 1 (module level: picklable for worker processes)."""
    from sim.batch import rollout

    if ep.seed == 1:
        raise RuntimeError("simulated planner crash")
    return rollout(ep, planner, params)


def test_run_writes_rows_and_episode_folders(tmp_path: Path) -> None:
    scen = _scenarios(tmp_path, [0, 1])
    s = run_batch([scen], tmp_path / "run")
    assert (s.total, s.ran, s.failed) == (4, 4, 0)
    df = load_results(tmp_path / "run")
    assert df["episode_id"].to_list() == [
        "follow__s0__p000",
        "follow__s0__p001",
        "follow__s1__p000",
        "follow__s1__p001",
    ]
    assert df["status"].to_list() == ["ok"] * 4
    assert df["sweep.actors.0.spawn.speed"].to_list() == [2.0, 4.0, 2.0, 4.0]
    for m in METRICS.names():
        assert m in df.columns and f"{m}_score" in df.columns
    assert df["score"].is_between(0.0, 1.0).all()
    assert (df["steps"] == 21).all()  # 2 s at 0.1 s, plus the initial state
    ep_dir = tmp_path / "run" / "episodes" / "follow__s1__p001"
    det = read_episode(tmp_path / "run", "follow__s1__p001")
    assert det["row"]["score"] == pytest.approx(df["score"][3])
    assert det["metrics"]["collision"]["unit"] == "count"
    traj = pl.read_parquet(ep_dir / "trajectory.parquet")
    n_actors = traj.filter(pl.col("step") == 0).height
    assert traj.height == 21 * n_actors
    ego = traj.filter(pl.col("actor_id") == "ego").sort("step")
    assert ego["x"][0] == pytest.approx(-43.8 + 2.0, abs=0.2)
    # the inserted lead is in the trajectory with its spawn speed at step 0
    lead = traj.filter((pl.col("actor_id") == "lead") & (pl.col("step") == 0))
    assert lead["speed"][0] == pytest.approx(4.0)
    # same inputs, same rows
    run_batch([scen], tmp_path / "run2")
    assert_frame_equal(df, load_results(tmp_path / "run2"))


def test_exception_in_one_episode_is_an_error_row(tmp_path: Path) -> None:
    scen = _scenarios(tmp_path, [0, 1, 2])
    s = run_batch([scen], tmp_path / "run", rollout_fn=fail_on_seed_1)
    assert s.failed == 2 and s.total == 6
    df = load_results(tmp_path / "run")
    bad = df.filter(pl.col("status") == "error")
    assert bad["seed"].to_list() == [1, 1]
    assert bad["error"].to_list() == ["RuntimeError: simulated planner crash"] * 2
    assert bad["score"].is_nan().all()
    assert df.filter(pl.col("status") == "ok").height == 4
    assert "traceback" in read_episode(tmp_path / "run", "follow__s1__p000")


def test_unknown_planner_gives_error_rows_not_a_crash(tmp_path: Path) -> None:
    scen = _scenarios(tmp_path, [0])
    s = run_batch([scen], tmp_path / "run", planner="no_such_planner")
    assert s.failed == 2
    err = load_results(tmp_path / "run")["error"][0]
    assert "unknown planner 'no_such_planner'" in err and "idm" in err


def test_out_dir_protection(tmp_path: Path) -> None:
    from sim.errors import ScenarioError

    scen = _scenarios(tmp_path, [0])
    run_batch([scen], tmp_path / "run")
    with pytest.raises(ScenarioError, match="--resume"):
        run_batch([scen], tmp_path / "run")
    s = run_batch([scen], tmp_path / "run", resume=True)
    assert s.ran == 0 and s.skipped == 2


def _run_cli(args: list[str]) -> subprocess.Popen[bytes]:
    exe = str(Path(sys.executable).parent / "loopdrive")
    return subprocess.Popen(
        [exe, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )


def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    scen = _scenarios(tmp_path, list(range(6)), horizon=1.5)
    out = tmp_path / "killed"
    proc = _run_cli(["run", str(scen), "--out", str(out), "--workers", "1"])
    eps = out / "episodes"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            done = [p for p in eps.iterdir() if not p.name.startswith(".")] if eps.is_dir() else []
            if len(done) >= 3:
                break
            if proc.poll() is not None:
                pytest.fail(f"the run ended before it could be killed: {proc.stderr.read().decode()[-500:]}")
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    finished = {p.name for p in eps.iterdir() if not p.name.startswith(".")}
    assert 3 <= len(finished) < 12, "the kill should land mid-run"
    assert not (out / "results.parquet").exists()
    # every finished folder is complete (atomic rename)
    for name in finished:
        ok = read_episode(out, name)["row"]["status"] == "ok"
        assert (eps / name / "metrics.json").is_file() and (eps / name / "trajectory.parquet").is_file() == ok
    res = CliRunner().invoke(app, ["run", str(scen), "--out", str(out), "--resume"])
    assert res.exit_code == 0, res.output
    assert f"{len(finished)} already done" in res.output
    resumed = load_results(out)
    ref = tmp_path / "ref"
    run_batch([scen], ref)
    expected = load_results(ref)
    assert resumed.height == 12 and resumed["episode_id"].n_unique() == 12
    assert_frame_equal(resumed, expected)
    assert not [p for p in eps.iterdir() if p.name.startswith(".tmp-")]


def _ray_required() -> bool:
    """A Ray start failure fails the test in CI (``CI`` set, as ``.ci/run`` does) or when
    ``LOOPDRIVE_REQUIRE_RAY=1``; elsewhere it is a skip naming the reason."""
    flag = os.environ.get("LOOPDRIVE_REQUIRE_RAY", os.environ.get("CI", ""))
    return flag.strip().lower() not in ("", "0", "false", "no")


def test_local_pool_and_ray_give_the_same_rows(tmp_path: Path) -> None:
    from sim.ray_executor import RayStartError

    scen = _scenarios(tmp_path, [0, 1], horizon=1.5)
    try:
        run_batch([scen], tmp_path / "ray", workers=2, executor="ray")
    except RayStartError as exc:  # pragma: no cover - depends on the machine's load
        if _ray_required():
            pytest.fail(f"Ray must start here (CI / LOOPDRIVE_REQUIRE_RAY): {exc}")
        pytest.skip(f"a local Ray instance could not start on this machine: {exc}")
    import ray

    assert not ray.is_initialized()  # the instance started for the run is shut down after it
    run_batch([scen], tmp_path / "local", workers=2, executor="local")
    a, b = load_results(tmp_path / "local"), load_results(tmp_path / "ray")
    assert a.height == 4 and (a["status"] == "ok").all()
    assert_frame_equal(a, b)


def test_every_library_scenario_runs(tmp_path: Path) -> None:
    eps = bench_episodes(LIBRARY, horizon_s=1.0, one_per_file=True)
    assert len(eps) >= 15
    s = run_batch(episodes=eps, out=tmp_path / "lib")
    df = load_results(tmp_path / "lib")
    bad = df.filter(pl.col("status") != "ok").select("episode_id", "error").rows()
    assert not bad, bad
    assert s.total == len(eps) and (df["steps"] == 11).all()


def test_report_and_compare(tmp_path: Path) -> None:
    scen = _scenarios(tmp_path, [0], horizon=1.5)
    run_batch([scen], tmp_path / "a")
    run_batch([scen], tmp_path / "b", rollout_fn=fail_on_seed_1)
    (tmp_path / "scen" / "other.yaml").write_text(SCENARIO.format(name="other", horizon=1.5, seeds=[1]))
    run_batch([scen], tmp_path / "c", rollout_fn=fail_on_seed_1)
    html_path, md_path = write_report(tmp_path / "c")
    html = html_path.read_text()
    assert html.count("data:image/png;base64,") >= 3  # histogram, breakdown, at least one thumbnail
    assert "follow__s0__p000" in html and "simulated planner crash" in html
    assert "<script" not in html and 'src="http' not in html  # self-contained
    md = md_path.read_text()
    assert "| scenario |" in md and "| follow |" in md and "| other |" in md
    same = compare_runs(tmp_path / "a", tmp_path / "b")
    assert [d.scenario for d in same] == ["follow"] and same[0].diff == pytest.approx(0.0)
    diffs = {d.scenario: d for d in compare_runs(tmp_path / "a", tmp_path / "c")}
    assert np.isnan(diffs["other"].score_a) and np.isnan(
        diffs["other"].score_b
    )  # absent in A, all errors in C
    res = CliRunner().invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "c")])
    assert res.exit_code == 0 and "follow" in res.output


def test_video_is_an_mp4(tmp_path: Path) -> None:
    ep = expand(_scenarios(tmp_path, [0], horizon=1.0) / "follow.yaml")[0]
    out = run_episode(ep, video=True)
    assert out.row["status"] == "ok", out.row["error"]
    assert out.video is not None and out.video[4:8] == b"ftyp"


def test_metrics_json_is_strict_json(tmp_path: Path) -> None:
    scen = _scenarios(tmp_path, [0], horizon=1.0)
    run_batch([scen], tmp_path / "run")
    raw = (tmp_path / "run" / "episodes" / "follow__s0__p000" / "metrics.json").read_text()
    json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_scenario_on_a_drive_log(tmp_path: Path, tiny_log: Path) -> None:
    """The scene can be a drive log: ids and lanes are checked against its tracks and map, and
    the episode runs among its replayed actors."""
    from sim.log import read_log
    from sim.scenario import validate_file

    dl = read_log(tiny_log)
    victim = next(t.id for t in dl.tracks if not t.static)
    text = f"""\
version: 1
name: on_log
description: the logged drive with one actor removed
scene: {{log: {tiny_log}}}
actors:
  - {{op: remove, id: "{victim}"}}
horizon_s: 1.5
"""
    f = tmp_path / "on_log.yaml"
    f.write_text(text)
    assert validate_file(f) == []
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace(f'id: "{victim}"', 'id: "no_such_actor"'))
    (err,) = validate_file(bad)
    assert err.line == 6 and err.field == "actors[0].id" and "unknown actor id 'no_such_actor'" in err.message
    out = run_episode(expand(f)[0])
    assert out.row["status"] == "ok", out.row["error"]
    traj = pl.read_parquet(io.BytesIO(out.trajectory))
    assert victim not in set(traj.filter(pl.col("valid"))["actor_id"].to_list())
    assert out.row["steps"] == 16


def test_sensor_observer_without_renderer(tmp_path: Path) -> None:
    """The one observer (batch runs, drive_episode) without a render backend: ``state``/``bev`` are
    the registry's arrays with its default configuration (as the batch runner's former private
    observer built them), and ``camera`` is an EpisodeStateError naming the observation field."""
    from sim import engine
    from sim.batch import SensorObserver, episode_scene
    from sim.errors import EpisodeStateError
    from sim.observations import OBSERVATIONS, ObservationConfig
    from sim.sensors import default_rig

    ep = expand(_scenarios(tmp_path, [0]) / "follow.yaml")[0]
    c = engine.compile_scenario(ep.spec, episode_scene(ep.spec))
    rng = np.random.default_rng(0)
    state = engine.step(engine.reset(c, rng), np.array([1.0, 0.05]), rng)
    observe = SensorObserver(c, default_rig())
    obs = observe(("ego", "objects", "state", "bev"), state)
    assert list(obs) == ["ego", "objects", "state", "bev"]
    for k in ("state", "bev"):
        np.testing.assert_array_equal(obs[k], OBSERVATIONS.get(k)(ObservationConfig(), c).compute(state)[0])
    assert obs["bev"].any() and np.isfinite(obs["state"]).all()
    with pytest.raises(EpisodeStateError, match="camera") as err:
        observe(("camera",), state)
    assert err.value.field == "observation"


# ------------------------------------------------------------------ resume: the run definition
def _folder_state(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("change", "field", "mine", "theirs"),
    [
        ({"horizon_s": 0.5}, "options.horizon_s", "0.5", "none"),
        ({"planner": "constant_velocity"}, "planner.name", "'constant_velocity'", "none"),
        ({"planner_params": {"v0": 3.0}}, "planner.params.v0", "3.0", "no such field"),
        ({"video": True}, "options.video", "True", "False"),
        ({"renderer": "composite"}, "options.renderer", "'composite'", "none"),
        ({"rollout_fn": fail_on_seed_1}, "options.rollout", f"'{fail_on_seed_1.__module__}:fail_on_seed_1'", "'sim.batch:rollout'"),
    ],
)
def test_resume_refuses_other_options(
    tmp_path: Path, change: dict, field: str, mine: str, theirs: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resume with other overrides names the first differing field of run.json's definition,
    and changes nothing in the folder."""
    from sim.errors import ResultsError

    scen = _scenarios(tmp_path, [0], horizon=1.0)
    out = tmp_path / "run"
    run_batch([scen], out)
    before = _folder_state(out)
    if "renderer" in change:  # composite needs a bundle: give the scenario none, so the check comes first
        monkeypatch.setattr("sim.batch._check_bundles", lambda eps: None)
    with pytest.raises(ResultsError) as err:
        run_batch([scen], out, resume=True, **change)
    assert err.value.file == str(out / "run.json") and err.value.field == field
    assert err.value.message.startswith(f"this run has {mine}, the folder has {theirs}")
    assert _folder_state(out) == before


def test_resume_refuses_changed_scenarios_and_names_the_field(tmp_path: Path) -> None:
    from sim.errors import ResultsError

    scen = _scenarios(tmp_path, [0, 1], horizon=1.0)
    out = tmp_path / "run"
    run_batch([scen], out)
    f = scen / "follow.yaml"
    text = f.read_text()
    cases = [
        (text.replace("speed: [2.0, 4.0]", "speed: [2.0, 5.0]"),
         'episodes.follow__s0__p001.sweep["actors.0.spawn.speed"]', "this run has 5.0, the folder has 4.0"),
        (text.replace("horizon_s: 1.0", "horizon_s: 1.5"),
         "episodes.follow__s0__p000.spec.horizon_s", "this run has 1.5, the folder has 1.0"),
        (text.replace("v0: 4.0}", "v0: 4.5}"),
         "episodes.follow__s0__p000.spec.actors[0].behavior.params.v0", "this run has 4.5, the folder has 4.0"),
        (text.replace("seeds: [0, 1]", "seeds: [0, 1, 2]"),
         "episodes", "this run has 6 episodes, the folder has 4 episodes (first only in this run: follow__s2__p000)"),
        (text.replace("seeds: [0, 1]", "seeds: [0]"),
         "episodes", "this run has 2 episodes, the folder has 4 episodes (first only in the folder: follow__s1__p000)"),
    ]  # fmt: skip
    for new_text, field, message in cases:
        f.write_text(new_text)
        with pytest.raises(ResultsError) as err:
            run_batch([scen], out, resume=True)
        assert (err.value.field, err.value.message.split(" (--resume")[0]) == (field, message)
    # a comment or a reformatting changes no definition: the resume goes on
    f.write_text("# a comment\n" + text)
    assert run_batch([scen], out, resume=True).skipped == 4


def test_resume_refuses_another_engine_version_and_an_edited_weights_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sim.run_definition as rd
    from sim.errors import ResultsError

    scen = _scenarios(tmp_path, [0], horizon=1.0)
    out = tmp_path / "run"
    run_batch([scen], out)
    monkeypatch.setattr(rd, "ENGINE_VERSION", rd.ENGINE_VERSION + 1)
    with pytest.raises(ResultsError, match=r"engine\.engine_version: this run has 2, the folder has 1"):
        run_batch([scen], out, resume=True)
    monkeypatch.undo()
    # a planner parameter naming a file: its contents are part of the definition
    w = tmp_path / "policy.bin"
    w.write_bytes(b"a" * 64)
    eps = [e.with_planner("idm", {"weights": str(w)}) for e in expand(scen / "follow.yaml")]
    d1 = rd.run_definition(eps, planner=None, planner_params=None, horizon_s=None, renderer=None, video=False, rollout_fn=None, run_format=2)
    w.write_bytes(b"b" * 64)
    d2 = rd.run_definition(eps, planner=None, planner_params=None, horizon_s=None, renderer=None, video=False, rollout_fn=None, run_format=2)
    field, mine, theirs = rd.first_difference(d2, json.loads(json.dumps(d1)))
    assert field == f'files["{w}"]' and mine != theirs and len(mine) == 66
    assert rd.definition_digest(d1) != rd.definition_digest(d2)
    assert rd.first_difference(d1, json.loads(rd.canonical_json(d1))) is None


def test_resume_refuses_folders_it_cannot_check(tmp_path: Path) -> None:
    from sim.errors import ResultsError

    scen = _scenarios(tmp_path, [0], horizon=1.0)
    out = tmp_path / "run"
    run_batch([scen], out)
    rj = out / "run.json"
    old = json.loads(rj.read_text())
    # a folder of an older loopdrive (run.json without a definition)
    rj.write_text(json.dumps({k: v for k, v in old.items() if not k.startswith("definition")} | {"format": 1}))
    with pytest.raises(ResultsError, match="older loopdrive without a run definition") as err:
        run_batch([scen], out, resume=True)
    assert err.value.field == "definition"
    for bad, what in (("{", "unreadable JSON"), ("[1, 2]", "expected a JSON object")):
        rj.write_text(bad)
        with pytest.raises(ResultsError, match=what):
            run_batch([scen], out, resume=True)
    rj.unlink()
    with pytest.raises(ResultsError, match=r"holds episodes but no run\.json"):
        run_batch([scen], out, resume=True)
    rj.mkdir()
    with pytest.raises(ResultsError, match="got a folder"):
        run_batch([scen], out, resume=True)


def test_cli_resume_mismatch_is_one_line_and_exit_2(tmp_path: Path) -> None:
    scen = _scenarios(tmp_path, [0], horizon=1.0)
    out = tmp_path / "run"
    assert CliRunner().invoke(app, ["run", str(scen), "--out", str(out)]).exit_code == 0
    before = _folder_state(out)
    res = CliRunner().invoke(app, ["run", str(scen), "--out", str(out), "--resume", "--horizon", "0.5"])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.output
    assert f"{out / 'run.json'}: options.horizon_s: this run has 0.5, the folder has none" in lines[0]
    assert _folder_state(out) == before
    res = CliRunner().invoke(app, ["run", str(scen), "--out", str(out), "--resume"])
    assert res.exit_code == 0 and "2 already done" in res.output


# ------------------------------------------------------------------- workers die with the parent
#: episodes that run to their horizon (the lead never moves): 12 000 steps each, many seconds of work
STOPPED = """\
version: 1
name: stopped
description: the ego waits behind a car that never moves, for 20 minutes
scene: {town: tiny, seed: 0}
ego:
  start: {lane: lane_1, s: 2.0, speed: 6.0}
  route: [lane_1, lane_22, lane_9]
actors:
  - {op: insert, id: lead, class: car, spawn: {lane: lane_1, s: 20.0, speed: 0.0}, behavior: {type: idm, v0: 0.0}}
planner: {name: idm}
horizon_s: 1200.0
seeds: [0, 1, 2, 3]
"""


def _session_processes(sid: int) -> dict[int, str]:
    """Live (non-zombie) processes of session ``sid``: pid -> command line (Linux /proc)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_bytes()
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if fields[0] != b"Z" and int(fields[3]) == sid:  # state, ppid, pgrp, session
            out[int(d)] = cmd
    return out


def _cpu_s(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from Linux /proc")
def test_sigkill_of_a_run_leaves_no_worker_alive(tmp_path: Path) -> None:
    """SIGKILL of `loopdrive run --workers 2` while both workers are inside long episodes: within
    10 s no process of its session is left (workers, multiprocessing resource tracker)."""
    (tmp_path / "stopped.yaml").write_text(STOPPED)
    proc = _run_cli(["run", str(tmp_path / "stopped.yaml"), "--out", str(tmp_path / "run"), "--workers", "2"])
    try:
        deadline = time.monotonic() + 180
        while True:
            others = {p: c for p, c in _session_processes(proc.pid).items() if p != proc.pid}
            workers = [p for p, c in others.items() if "spawn_main" in c]
            busy = [p for p in workers if _cpu_s(p) > 3.0]  # past the imports, inside an episode
            if len(busy) == 2:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the workers did not get busy: {others} {proc.stderr.read().decode()[-500:]}")
            time.sleep(0.2)
        assert any("resource_tracker" in c for c in others.values()), others
        os.kill(proc.pid, signal.SIGKILL)  # the parent only, not its process group
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while (left := _session_processes(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"still alive 10 s after the parent's SIGKILL: {left}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from Linux /proc")
def test_ray_watchdog_stops_the_instance_when_its_starter_dies(tmp_path: Path) -> None:
    """The watchdog started with a local Ray instance stops the processes it was given (pid and
    start time) and removes the instance's folder when its pipe ends without ``done``, and leaves
    both alone after ``done``."""
    from sim.ray_executor import _alive, _descendants, _end_watchdog, _start_watchdog

    kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]) for _ in range(2)]
    try:
        procs = {p: t for p, t in _descendants().items() if p in {k.pid for k in kids}}
        assert len(procs) == 2
        temp = tmp_path / "ray-instance"
        (temp / "logs").mkdir(parents=True)
        dog = _start_watchdog(procs, temp)
        _end_watchdog(dog)  # a normal shutdown: the processes are left alone
        assert dog.returncode == 0 and _alive(procs) == set(procs) and temp.is_dir()
        dog = _start_watchdog(procs, temp)
        assert dog is not None and dog.stdin is not None
        dog.stdin.close()  # what the kernel does when the starter dies
        dog.wait(timeout=30)
        assert [k.wait(timeout=10) for k in kids] == [-signal.SIGTERM] * 2
        assert not temp.exists()
    finally:
        for k in kids:
            k.kill()
            k.wait()
