"""``loopdrive train sensor-policy``: one command collects expert roll-outs, runs a DAgger round
and writes weights whose JSON records that very command."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from agents.sensor_policy import load_sensor_policy
from sim.cli import app

LIBRARY = Path(__file__).resolve().parents[1] / "scenarios"


def test_train_sensor_policy_collects_daggers_and_records_the_command(tmp_path: Path) -> None:
    out, eps = tmp_path / "sp.safetensors", tmp_path / "eps"
    args = ["train", "sensor-policy", "--scenarios", str(LIBRARY / "stopped_vehicle.yaml"), "--seeds", "0", "--sensors", "box",
            "--dagger-rounds", "1", "--max-steps", "4", "--epochs", "1", "--episodes", str(eps), "--out", str(out)]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.stderr + res.stdout
    assert sorted(p.name for p in eps.iterdir()) == ["dagger1_stopped_vehicle__s0__x0.npz", "expert_stopped_vehicle__s0__x0.npz"]
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["samples"] == 8 and doc["sensors"] == "box" and [r["round"] for r in doc["rounds"]] == [0, 1]
    assert doc["command"] == "loopdrive " + " ".join(args[:10]) + " --epochs 1 --batch-size 64 --lr 0.001 --seed 0 --max-steps 4 " \
        + f"--episodes {eps} --out {out}"
    load_sensor_policy(out)
