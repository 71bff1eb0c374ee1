"""``loopdrive train sensor-policy --ncap-log``: NeuroNCAP-style training scenarios (other logs,
other permutation seeds than an evaluation's) written as scenario files and driven in the expert
roll-outs and the DAgger rounds; bad values are one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import ScenarioError

LIBRARY = Path(__file__).resolve().parents[1] / "scenarios"


def test_training_scenarios_are_seeded_valid_files_apart_from_the_evaluation(tiny_log: Path, tmp_path: Path) -> None:
    from sim.ncap.scenarios import TARGET_ID
    from sim.ncap.training import ncap_training_scenarios
    from sim.scenario import expand_paths

    files = ncap_training_scenarios([tiny_log], tmp_path / "a", runs=2, seed=7)
    assert [f.relative_to(tmp_path / "a").as_posix() for f in files] == [
        f"tiny-s0-p7/{k}/ncap_{k}_{i:03d}.yaml" for k in ("frontal", "side", "stationary") for i in (0, 1)
    ]
    eps = expand_paths(files)  # every file passes the scenario validator
    assert len(eps) == 6 and len({e.episode_id for e in eps}) == 6
    doc = yaml.safe_load(files[0].read_text())
    assert doc["name"] == "tiny-s0-p7_ncap_frontal_000" and doc["scene"]["renderer"] == "mesh" and "seed 7" in doc["description"]
    target = [a for a in doc["actors"] if a.get("id") == TARGET_ID]
    assert len(target) == 1 and target[0]["behavior"]["type"] == "constant_velocity"
    # the same seed writes the same files (a resumed training keeps them); another seed other targets
    again = ncap_training_scenarios([tiny_log], tmp_path / "a", runs=2, seed=7)
    assert again == files and all(f.read_text() == g.read_text() for f, g in zip(files, again, strict=True))
    other = ncap_training_scenarios([tiny_log], tmp_path / "b", runs=2, seed=0)
    poses = {yaml.safe_load(f.read_text())["actors"][-1]["spawn"]["pose"][0] for f in files + other}
    assert len(poses) == 12


def test_bad_counts_and_logs_are_refused(tiny_log: Path, tmp_path: Path) -> None:
    from sim.ncap.training import ncap_training_scenarios, parse_ncap_logs

    with pytest.raises(ScenarioError, match="at least 1"):
        ncap_training_scenarios([tiny_log], tmp_path, runs=0)
    with pytest.raises(ScenarioError, match="NCAP types"):
        ncap_training_scenarios([tiny_log], tmp_path, runs=1, types=("rear",))
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ScenarioError, match="drive-log folder"):
        parse_ncap_logs([tmp_path / "f.txt"])
    assert not (tmp_path / "tiny-s0-p1000").exists()


def test_cli_refuses_a_file_as_ncap_log_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "nolog.txt"
    bad.write_text("x")
    res = CliRunner().invoke(app, ["train", "sensor-policy", "--scenarios", str(LIBRARY / "stopped_vehicle.yaml"), "--sensors", "box",
                                   "--ncap-log", str(bad), "--episodes", str(tmp_path / "eps"), "--out", str(tmp_path / "w.safetensors")])  # fmt: skip
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "nolog.txt" in res.stderr
    assert not (tmp_path / "w.safetensors").exists()


def test_train_drives_the_ncap_scenarios_in_expert_and_dagger_rounds(tiny_log: Path, tmp_path: Path) -> None:
    out, eps = tmp_path / "sp.safetensors", tmp_path / "eps"
    args = ["train", "sensor-policy", "--scenarios", str(LIBRARY / "stopped_vehicle.yaml"), "--seeds", "0", "--sensors", "box",
            "--dagger-rounds", "1", "--max-steps", "3", "--epochs", "1", "--ncap-log", str(tiny_log), "--ncap-runs", "1",
            "--episodes", str(eps), "--out", str(out)]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.stderr + res.stdout
    shards = sorted(p.name for p in eps.glob("*.npz"))
    ncap = [s for s in shards if "ncap" in s]
    assert len(ncap) == 6  # 3 types x 1 permutation, expert and DAgger
    assert sorted({s.split("_", 1)[0] for s in ncap}) == ["dagger1", "expert"]
    assert len(list((eps / "ncap-scenarios").rglob("*.yaml"))) == 3
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["extra_scenarios"] == 3 and doc["samples"] == 8 * 3
    assert f"--ncap-log {tiny_log} --ncap-runs 1 --ncap-seed 1000 --episodes {eps}" in doc["command"]


# ----------------------------------------------- loopdrive ncap --planner-param (other weights)
def test_ncap_planner_params_go_into_every_permutation_and_the_definition(tiny_log: Path, tmp_path: Path) -> None:
    from sim.ncap.run import NcapConfig, build_scenarios

    plain = NcapConfig(bundle=tmp_path, log=tiny_log, planner="sensor_policy", runs=1)
    assert "params" not in plain.definition()["planner"]  # run folders of before still resume
    cfg = NcapConfig(bundle=tmp_path, log=tiny_log, planner="sensor_policy", runs=2, planner_params={"safety_decel": 5.0})
    assert cfg.definition()["planner"] == {"name": "sensor_policy", "params": {"safety_decel": 5.0}}
    assert cfg.settings()["planner_params"] == {"safety_decel": 5.0}
    built = build_scenarios(cfg, ("ego", "lidar"))
    assert len(built.items) == 6 and all(d["planner"] == {"name": "sensor_policy", "params": {"safety_decel": 5.0}} for _, d in built.items)


def test_ncap_refuses_a_bad_planner_param_in_one_line(tiny_log: Path, tmp_path: Path) -> None:
    out = tmp_path / "ncap"
    res = CliRunner().invoke(app, ["ncap", str(tmp_path), "--log", str(tiny_log), "--planner", "sensor_policy", "--sensors", "mesh",
                                   "--planner-param", "safety_decel=-1", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 2 and "safety_decel" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not out.exists()
