"""The data loop on a tiny configuration: every stage runs, an interrupted loop resumes without
redoing finished stages, and the report has one evaluation per policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.errors import ScenarioError
from sim.loop import LoopConfig, LoopInterrupted, run_loop

SCEN = """\
version: 1
name: tiny_lead
scene: {town: tiny, seed: 0}
ego:
  start: {lane: lane_1, s: 4.0, speed: 6.0}
  route: [lane_1, lane_21, lane_5]
actors:
  - {op: insert, id: lead, class: car, spawn: {lane: lane_1, s: 18.0, speed: 6.0}, behavior: {type: idm, v0: 6.0}}
planner: {name: idm}
horizon_s: 1.0
seeds: [0]
"""


def _cfg(scen: Path) -> LoopConfig:
    return LoopConfig(
        planner="bc_policy", scenarios=(str(scen),), bases=(str(scen),), rounds=1, budget=2, heldout_budget=2,
        horizon_s=1.0, expert="idm", oracle="idm", epochs=1, init_seeds=(0, 1),
    )  # fmt: skip


def test_loop_runs_and_resumes(tmp_path: Path) -> None:
    scen = tmp_path / "tiny_lead.yaml"
    scen.write_text(SCEN, encoding="utf-8")
    out = tmp_path / "loop"
    seen: list[str] = []
    with pytest.raises(LoopInterrupted):
        run_loop(_cfg(scen), out, progress=seen.append, stop_after="round_0.mine")
    assert seen == ["init", "heldout", "round_0.eval", "round_0.mine"]
    state = json.loads((out / "state.json").read_text())
    assert list(state["done"]) == seen
    w0 = out / "init" / "bc.safetensors"
    mtime = w0.stat().st_mtime_ns
    resumed: list[str] = []
    rep = run_loop(_cfg(scen), out, progress=resumed.append)
    # finished stages are not redone
    assert resumed == ["round_0.generate", "round_0.export", "round_0.train", "final.eval"]
    assert w0.stat().st_mtime_ns == mtime
    assert [r["round"] for r in rep["rounds"]] == [0, 1]
    assert rep["rounds"][0]["policy"] == str(w0)
    assert rep["rounds"][1]["policy"] == str(out / "round_0" / "bc.safetensors")
    assert (out / "round_0" / "bc.safetensors").is_file()
    nominal = rep["rounds"][0]["nominal"]
    assert nominal["episodes"] == 1 and 0.0 <= nominal["failure_rate"] <= 1.0
    assert (out / "round_0" / "shards" / "manifest.json").is_file()
    md = (out / "report.md").read_text()
    assert "held-out failure rate" in md and "round 0 (initial)" in md
    # a finished loop re-run does nothing but rewrite the report
    again: list[str] = []
    assert run_loop(_cfg(scen), out, progress=again.append)["rounds"] == rep["rounds"]
    assert again == []


def test_other_config_in_same_folder_is_refused(tmp_path: Path) -> None:
    scen = tmp_path / "tiny_lead.yaml"
    scen.write_text(SCEN, encoding="utf-8")
    out = tmp_path / "loop"
    out.mkdir()
    (out / "state.json").write_text(json.dumps({"config": {"planner": "other"}, "done": {}}))
    with pytest.raises(ScenarioError, match="another configuration"):
        run_loop(_cfg(scen), out)


def test_init_collects_expert_data_on_uniform_draws_and_failures_carry_their_weight(tmp_path: Path) -> None:
    from dataclasses import replace

    import numpy as np

    from sim.export import export_episodes, items_from_files, load_shard

    scen = tmp_path / "tiny_lead.yaml"
    scen.write_text(SCEN, encoding="utf-8")
    out = tmp_path / "loop"
    cfg = replace(_cfg(scen), init_random=2, init_seeds=(0,), failure_weight=3.0)
    with pytest.raises(LoopInterrupted):
        run_loop(cfg, out, stop_after="init")
    draws = sorted((out / "init" / "scenarios").glob("*.yaml"))
    assert len(draws) == 2
    # one expert episode per nominal file and per draw
    assert len(list((out / "init" / "shards").glob("*.npz"))) == 3
    # exported generated cases are weighted as configured
    items = items_from_files([draws[0]], planner="idm", weight=cfg.failure_weight)
    assert [it.weight for it in items] == [3.0]
    shards = export_episodes(items, tmp_path / "shards", expert="idm")
    w = load_shard(shards[0])["weight"]
    assert len(w) > 0 and np.all(w == 3.0)


def test_candidate_selection_keeps_the_best_policy_on_validation(tmp_path: Path) -> None:
    from dataclasses import replace

    scen = tmp_path / "tiny_lead.yaml"
    scen.write_text(SCEN, encoding="utf-8")
    out = tmp_path / "loop"
    cfg = replace(_cfg(scen), init_random=2, init_seeds=(0,), candidates=2, retrain="both", finetune_lr=1e-4)
    with pytest.raises(LoopInterrupted):
        run_loop(cfg, out, stop_after="round_0.train")
    sel = json.loads((out / "round_0" / "selection.json").read_text())
    assert [c["candidate"] for c in sel["candidates"]] == [0, 1]
    # retrain "both": candidate 0 is fine-tuned from the round-0 policy, candidate 1 from scratch
    w0 = str(out / "init" / "bc.safetensors")
    assert [(c["finetune_from"], c["lr"]) for c in sel["candidates"]] == [(w0, 1e-4), (None, 1e-3)]
    assert json.loads((out / "round_0" / "cand_0" / "bc.json").read_text())["init_weights"] == w0
    # validation = the two uniform draws (+ generated cases): never the nominal file
    assert sel["validation_files"] >= 2
    assert all(c["episodes"] == sel["validation_files"] for c in sel["candidates"])
    keys = [(c["failure_rate"], -c["score"]) for c in sel["candidates"]]
    best = sel["candidates"][keys.index(min(keys))]
    assert sel["chosen"] == best["weights"]
    assert (out / "round_0" / "bc.safetensors").read_bytes() == Path(best["weights"]).read_bytes()
    # the candidates differ (different training seeds)
    assert (out / "round_0" / "cand_0" / "bc.safetensors").read_bytes() != (out / "round_0" / "cand_1" / "bc.safetensors").read_bytes()


def _init_policy(scen: Path, tmp_path: Path) -> tuple[Path, Path, int]:
    """Expert shards of the tiny scenario (two seeds) and weights trained on them: a stand-in for
    the shipped policy and the shards it was trained on."""
    from agents.bc import BCConfig, load_shards, train_bc
    from sim.collect import collect_episodes

    shards = tmp_path / "expert"
    collect_episodes([scen], shards, expert="idm", seeds=[5, 6], max_steps=10)
    data = load_shards([shards])
    w0 = tmp_path / "w0" / "bc.safetensors"
    train_bc(data, w0, BCConfig(epochs=1, seed=0), plot=False)
    return w0, shards, len(data)


def test_retraining_aggregates_the_init_shards_and_resumes(tmp_path: Path) -> None:
    from dataclasses import replace

    from agents.bc import load_shards

    scen = tmp_path / "tiny_lead.yaml"
    scen.write_text(SCEN, encoding="utf-8")
    w0, shards, n_init = _init_policy(scen, tmp_path)
    assert n_init == 20
    # a "hard brake" threshold every episode passes: the nominal episode is mined, round 0 exports it
    cfg = replace(_cfg(scen), init_weights=str(w0), init_shards=(str(shards),), retrain="finetune", triggers=("hard_brake:decel=-100",))
    out = tmp_path / "loop"
    seen: list[str] = []
    with pytest.raises(LoopInterrupted):
        run_loop(cfg, out, progress=seen.append, stop_after="round_0.export")
    # no round-0 collection with given weights; the held-out set is generated against them
    assert seen == ["heldout", "round_0.eval", "round_0.mine", "round_0.generate", "round_0.export"]
    assert not (out / "init").exists()
    resumed: list[str] = []
    rep = run_loop(cfg, out, progress=resumed.append)
    assert resumed == ["round_0.train", "final.eval"]
    assert rep["rounds"][0]["policy"] == str(w0)

    # the retraining set = the init shards + round 0's export, counted sample by sample
    ts = json.loads((out / "round_0" / "training_set.json").read_text())
    n_round = len(load_shards([out / "round_0" / "shards"]))
    assert n_round > 0
    assert ts["folders"][str(shards)]["samples"] == n_init and ts["folders"][str(shards)]["shards"] == 2
    assert ts["folders"][str(out / "round_0" / "shards")]["samples"] == n_round
    assert ts["samples"] == n_init + n_round and ts["finetune_from"] == str(w0)
    trained = json.loads((out / "round_0" / "bc.json").read_text())
    assert trained["samples"] == n_init + n_round and trained["init_weights"] == str(w0)
    assert set(p.name for p in shards.glob("*.npz")) <= set(trained["shards"])
    assert rep["training_sets"]["round_0"]["samples"] == n_init + n_round
    md = (out / "report.md").read_text()
    assert "fine-tuned from the previous policy" in md and str(shards) in md


def test_missing_init_shards_are_a_user_error(tmp_path: Path) -> None:
    from dataclasses import replace

    scen = tmp_path / "tiny_lead.yaml"
    scen.write_text(SCEN, encoding="utf-8")
    cfg = replace(_cfg(scen), init_weights=str(tmp_path / "w0.safetensors"), init_shards=(str(tmp_path / "nope"),))
    with pytest.raises(ScenarioError, match="init_shards"):
        run_loop(cfg, tmp_path / "loop")


def test_cli_loop_resolves_and_checks_the_round0_weights(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sim.cli import app

    # a missing weights file is refused before anything runs (the shipped default exists)
    r = CliRunner().invoke(app, ["loop", "--init-weights", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "loop")])
    assert r.exit_code != 0 and "no weights file" in r.output
    assert not (tmp_path / "loop").exists()
    # retrain 'both' without two candidates is a user error naming the field
    scen = tmp_path / "tiny_lead.yaml"
    scen.write_text(SCEN, encoding="utf-8")
    r = CliRunner().invoke(app, ["loop", "--scenarios", str(scen), "--retrain", "both", "--out", str(tmp_path / "loop")])
    assert r.exit_code != 0 and "candidates" in r.output
