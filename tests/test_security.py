"""Nothing loaded from a file executes code (issue 20; the loaders are listed in docs/security.md).

Each loader is fed a harmless payload that would create a marker file if it ran: a pickle whose
``__reduce__`` touches the marker (in an SB3 zip, a ``.npy`` object array, bytes named like
weights), a YAML ``!!python/object/apply`` tag (a scenario, a swapped nerfstudio config), JSON
shaped like a serialised object. Every payload is first shown to be live (unpickling or unsafe
YAML loading it here creates a control marker), then each test asserts that the loader refused it
with the expected :class:`~sim.errors.LoopdriveError` subclass and a one-line message, and that the
marker does not exist.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib
import pickle
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import BundleError, LogFormatError, LoopdriveError, ScenarioError

ROOT = Path(__file__).resolve().parents[1]
RUNNER = CliRunner()

SCENARIO = """\
version: 1
name: sec
scene: {{town: tiny, seed: 0}}
ego:
  start: {{lane: lane_1, s: 4.0, speed: 8.0}}
  route: [lane_1, lane_21, lane_5]
planner: {planner}
horizon_s: 0.5
seeds: [0]
"""


class _Touch:
    """Unpickling this creates ``path`` (the payload of every pickle below)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def _pickle_payload(marker: Path) -> bytes:
    return pickle.dumps(_Touch(marker))


def _yaml_payload(marker: Path) -> str:
    return f"!!python/object/apply:io.open ['{marker}', 'w']\n"  # opening for writing creates it


def _one_line(exc: LoopdriveError) -> str:
    msg = str(exc)
    assert "\n" not in msg and msg == exc.one_line()
    return msg


@pytest.fixture()
def marker(tmp_path: Path) -> Path:
    return tmp_path / "MARKER"


def test_the_payloads_are_live(tmp_path: Path) -> None:
    """Control: the same payloads do run when loaded unsafely, so their absence below means refusal."""
    import yaml

    pickle.loads(_pickle_payload(tmp_path / "p"))
    assert (tmp_path / "p").exists()
    yaml.load(_yaml_payload(tmp_path / "y"), Loader=yaml.Loader)  # the control case
    assert (tmp_path / "y").exists()
    np.save(tmp_path / "o.npy", np.array([_Touch(tmp_path / "n")], dtype=object), allow_pickle=True)
    np.load(tmp_path / "o.npy", allow_pickle=True)
    assert (tmp_path / "n").exists()


# ------------------------------------------------------------------------------------ SB3 policies
def _evil_sb3_zip(path: Path, marker: Path) -> Path:
    """An SB3-shaped zip whose ``data`` holds a cloudpickled field (as SB3 writes them)."""
    blob = base64.b64encode(_pickle_payload(marker)).decode()
    data = {"policy_class": {":type:": "<class 'abc.ABCMeta'>", ":serialized:": blob}, "policy_kwargs": {}}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("data", json.dumps(data))
        z.writestr("_stable_baselines3_version", "2.9.2")
    return path


def test_sb3_zip_is_refused_without_the_opt_in(tmp_path: Path, marker: Path) -> None:
    from agents.sb3_planner import SB3Planner, load_sb3

    evil = _evil_sb3_zip(tmp_path / "evil.zip", marker)
    disguised = tmp_path / "policy.bin"
    shutil.copy(evil, disguised)  # a zip by its magic bytes, whatever its name
    for p in (evil, disguised):
        with pytest.raises(BundleError) as ei:
            SB3Planner(path=str(p))
        msg = _one_line(ei.value)
        assert str(p) in msg and "pickle-based" in msg and "--trust-pickle" in msg
    with pytest.raises(BundleError, match="pickle-based"):
        load_sb3(evil)
    # a scenario's params cannot carry the opt-in, whatever the value
    with pytest.raises(ScenarioError, match=r"planner\.params\.trust_pickle"):
        SB3Planner(path=str(evil), trust_pickle=True)
    assert not marker.exists()


def test_pickles_named_like_safe_policy_files_are_never_unpickled(tmp_path: Path, marker: Path) -> None:
    from agents.sb3_format import load_policy

    w = tmp_path / "p.safetensors"
    j = tmp_path / "p.json"
    # a zip or a raw pickle under the weights' name, with a description that pins its sha256
    for payload in (_evil_sb3_zip(tmp_path / "e.zip", marker).read_bytes(), _pickle_payload(marker)):
        w.write_bytes(payload)
        j.write_text(json.dumps(_description(hashlib.sha256(payload).hexdigest())))
        with pytest.raises(BundleError) as ei:
            load_policy(w)
        assert str(w) in _one_line(ei.value)
    # the description itself holding a pickle
    j.write_bytes(_pickle_payload(marker))
    with pytest.raises(BundleError, match="expected valid JSON"):
        load_policy(w)
    assert not marker.exists()


def _description(sha: str) -> dict[str, Any]:
    box = {"type": "box", "shape": [4], "dtype": "float32", "low": -1.0, "high": 1.0}
    return {"format": "loopdrive-sb3-policy", "format_version": 1, "algo": "PPO", "policy_class": "ActorCriticPolicy",
            "net_arch": {"pi": [8], "vf": [8]}, "activation": "Tanh", "features_extractor": "FlattenExtractor",
            "observation_space": box, "action_space": {**box, "shape": [2]}, "observation": ["state"],
            "action_units": "normalized", "weights": {"file": "p.safetensors", "sha256": sha}}


def test_json_descriptions_are_inert(tmp_path: Path, marker: Path) -> None:
    """Object-shaped JSON (jsonpickle's ``py/object``, ``__reduce__``) is data: refused by the schema."""
    from agents.sb3_format import load_policy

    w = tmp_path / "p.safetensors"
    w.write_bytes(b"")
    good = _description(hashlib.sha256(b"").hexdigest())
    for doc, field in (({**good, "py/object": "pathlib.Path.touch"}, "py/object"),
                       ({**good, "activation": {"py/function": "os.system"}}, "activation"),
                       ({**good, "observation_space": {"__reduce__": ["pathlib.Path.touch", [str(marker)]]}}, "observation_space")):
        (tmp_path / "p.json").write_text(json.dumps(doc))
        with pytest.raises(BundleError) as ei:
            load_policy(w)
        assert field in _one_line(ei.value)
    assert not marker.exists()


# ------------------------------------------------------------------------------------ scenario YAML
@pytest.mark.parametrize("tagged", [
    "!!python/object/apply:io.open ['{m}', 'w']",
    "!!python/object/new:pathlib.Path ['{m}']",
    "!!python/name:os.system",
    "{{name: !!python/object/apply:os.system ['touch {m}']}}",
])
def test_scenario_yaml_with_python_tags_is_refused(tmp_path: Path, marker: Path, tagged: str) -> None:
    from sim.scenario import expand, read_yaml

    f = tmp_path / "evil.yaml"
    f.write_text(SCENARIO.format(planner=tagged.format(m=marker)))
    for load in (read_yaml, expand):
        with pytest.raises(ScenarioError) as ei:
            load(f)
        assert str(f) in _one_line(ei.value)
    res = RUNNER.invoke(app, ["validate", str(f)])
    assert res.exit_code == 2
    assert not marker.exists()


# ------------------------------------------------------------------------------------ numpy
def _object_array(path: Path, marker: Path) -> None:
    np.save(path, np.array([_Touch(marker)], dtype=object), allow_pickle=True)


def test_npy_and_npz_object_arrays_are_never_unpickled(tmp_path: Path, marker: Path, tiny_log: Path) -> None:
    from agents.bc import load_shards
    from sim.export import load_shard
    from sim.log import read_log, validate_log

    log = tmp_path / "log"
    shutil.copytree(tiny_log, log)
    sweep = sorted((log / "lidar").glob("*.npy"))[0]
    _object_array(sweep, marker)
    with pytest.raises(LogFormatError) as ei:
        validate_log(log)
    assert "lidar" in _one_line(ei.value)
    with pytest.raises(LogFormatError) as ei:
        read_log(log).lidar(0)  # the reader the renderer and recon use
    assert "lidar" in _one_line(ei.value)
    shards = tmp_path / "shards"
    shards.mkdir()
    np.savez(shards / "evil.npz", bev=np.array([_Touch(marker)], dtype=object), ego=np.zeros((1, 3)),
             action=np.zeros((1, 2)), meta=np.array([_Touch(marker)], dtype=object))
    with pytest.raises(ScenarioError) as ei2:
        load_shards([shards])
    _one_line(ei2.value)
    with pytest.raises(ScenarioError) as ei3:
        load_shard(shards / "evil.npz")
    _one_line(ei3.value)
    assert not marker.exists()


# ------------------------------------------------------------------------------------ nerfstudio config
def _fake_bundle(root: Path, text: str, record: bool = True) -> Path:
    """A folder with only what :func:`nerfstudio_config` reads: bundle.json and the config."""
    rel = "nerfstudio/scene/loopdrive-recon-quick/run/config.yml"
    (root / rel).parent.mkdir(parents=True)
    (root / rel).write_text(text)
    doc: dict[str, Any] = {"format": "loopdrive-scene-bundle", "format_version": 1}
    if record:
        doc["nerfstudio_config"] = {"file": rel, "sha256": hashlib.sha256(text.encode()).hexdigest()}
    (root / "bundle.json").write_text(json.dumps(doc))
    return root / rel


def test_swapped_or_unpinned_nerfstudio_config_is_never_handed_over(tmp_path: Path, marker: Path) -> None:
    from sim.recon.bundle import nerfstudio_config

    b = tmp_path / "b"
    cfg = _fake_bundle(b, "!!python/object:nerfstudio.engine.trainer.TrainerConfig {}\n")
    assert nerfstudio_config(b) == cfg
    res = RUNNER.invoke(app, ["ns-config", str(b)])
    assert res.exit_code == 0 and res.stdout.strip() == str(cfg)
    cfg.write_text(_yaml_payload(marker))  # swapped after the bundle was written
    with pytest.raises(BundleError) as ei:
        nerfstudio_config(b)
    assert str(cfg) in _one_line(ei.value) and "modified" in str(ei.value)
    res = RUNNER.invoke(app, ["ns-config", str(b)])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    # a bundle from before pinning: refused with the way out
    old = tmp_path / "old"
    _fake_bundle(old, "x: 1\n", record=False)
    with pytest.raises(BundleError, match=r"re-run `loopdrive recon`"):
        nerfstudio_config(old)
    # a record pointing outside the bundle
    doc = json.loads((b / "bundle.json").read_text())
    doc["nerfstudio_config"]["file"] = "../outside.yml"
    (b / "bundle.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="inside the bundle"):
        nerfstudio_config(b)
    assert not marker.exists()


def test_recon_never_reads_back_a_config_swapped_during_training(tmp_path: Path, marker: Path) -> None:
    """The attack of issue 20: replace nerfstudio's staged config.yml while recon trains."""
    from sim.recon.bundle import nerfstudio_config
    from sim.recon.run import train_bundle
    from sim.recon.toyscene import write_toy_scene

    log = write_toy_scene(tmp_path / "toy", frames=20)
    swapped: list[Path] = []

    def swap(step: int, total: int) -> None:
        if not swapped:
            staged = next((tmp_path).glob(".b.nerfstudio/scene/*/run/config.yml"))
            staged.write_text(_yaml_payload(marker))
            swapped.append(staged)

    train_bundle(log, tmp_path / "b", iterations=2, progress=swap, overrides={"num_threads": 1})
    assert swapped and not marker.exists()
    cfg = nerfstudio_config(tmp_path / "b")  # the pinned file is the one recon wrote, not the swap
    text = cfg.read_text()
    assert "!!python/object:nerfstudio" in text and "io.open" not in text
    # its output_dir is the bundle's nerfstudio folder (a PosixPath dumped as its parts)
    parts = "".join(f"- {x}\n" for x in (tmp_path / "b" / "nerfstudio").parts)
    assert f"output_dir: !!python/object/apply:pathlib.PosixPath\n{parts}" in text


def test_no_unsafe_loader_in_the_source() -> None:
    """Static guard: no unsafe YAML load, no torch.load without weights_only=True, no pickle or
    allow_pickle=True loads anywhere in sim/ and agents/ (SB3's own loader only behind
    --trust-pickle, in agents/sb3_planner.py)."""
    bad = []
    patterns = [r"pickle\.loads?\(", r"allow_pickle\s*=\s*True", r"\bdill\b", r"joblib\.load", r"cloudpickle\.load",
                r"yaml\.(unsafe_load|full_load)", r"Loader\s*=\s*yaml\.(Loader|UnsafeLoader|FullLoader)"]
    for f in [*sorted((ROOT / "sim").rglob("*.py")), *sorted((ROOT / "agents").rglob("*.py"))]:
        text = f.read_text(encoding="utf-8")
        # PyYAML's load (any loader) is refused outright; ruamel's YAML(typ="rt").load is the safe reader
        pyyaml = re.search(r"^\s*(import yaml|from yaml import)", text, re.M) is not None
        for pat in [*patterns, *([r"yaml\.load\("] if pyyaml else [])]:
            bad += [f"{f.relative_to(ROOT)}: {pat}" for _ in re.finditer(pat, text)]
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in m.group(1):
                bad.append(f"{f.relative_to(ROOT)}: torch.load without weights_only=True")
        if f.name != "sb3_planner.py" and re.search(r"\b(PPO|A2C|SAC|TD3|DDPG|DQN)\.load\(|getattr\(sb3, \w+\)\.load", text):
            bad.append(f"{f.relative_to(ROOT)}: stable-baselines3 zip load")
    assert bad == []


# ------------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def genuine_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (untrained) SB3 PPO zip for the env's state observation."""
    from stable_baselines3 import PPO

    from sim.env import ClosedLoopEnv
    from sim.spec import EgoSpec, ScenarioSpec
    from sim.world import crossroads_scene

    spec = ScenarioSpec(name="t", ego=EgoSpec(route=("E_in_1", "E_1_straight", "E_out_1")), horizon_s=2.0)
    env = ClosedLoopEnv(scenario=spec, observation=["state"], scene=crossroads_scene(actors=(), duration_s=4.0), action_mode="control")
    p = tmp_path_factory.mktemp("zip") / "ppo.zip"
    PPO("MlpPolicy", env, seed=0, device="cpu", n_steps=64).save(p)
    env.close()
    return p


def test_cli_run_refuses_a_scenario_naming_an_sb3_zip(tmp_path: Path, marker: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    evil = _evil_sb3_zip(tmp_path / "evil.zip", marker)
    f = tmp_path / "s.yaml"
    f.write_text(SCENARIO.format(planner=f"{{name: sb3, params: {{path: {evil}}}}}"))
    res = RUNNER.invoke(app, ["run", str(f), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "pickle-based" in lines[0] and "--trust-pickle" in lines[0] and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists() and not marker.exists()
    # the opt-in cannot come from the file
    f.write_text(SCENARIO.format(planner=f"{{name: sb3, params: {{path: {evil}, trust_pickle: true}}}}"))
    res = RUNNER.invoke(app, ["run", str(f), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "trust_pickle" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    # --planner sb3 reads nothing from the working directory
    (tmp_path / "models").mkdir()
    shutil.copy(evil, tmp_path / "models" / "ppo.zip")
    g = tmp_path / "idm.yaml"
    g.write_text(SCENARIO.format(planner="{name: idm}"))
    res = RUNNER.invoke(app, ["run", str(g), "--out", str(tmp_path / "out"), "--planner", "sb3"])
    assert res.exit_code == 2 and "planner.params.path" in res.stderr
    res = RUNNER.invoke(app, ["leaderboard", str(g), "--planners", "sb3", "--out", str(tmp_path / "lb"),
                              "--planner-params", json.dumps({"sb3": {"path": str(evil)}})])
    assert res.exit_code == 2 and "pickle-based" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "lb").exists() and not marker.exists()


def test_cli_run_with_trust_pickle_loads_a_genuine_zip(tmp_path: Path, genuine_zip: Path) -> None:
    from sim.batch import load_results

    f = tmp_path / "s.yaml"
    f.write_text(SCENARIO.format(planner=f"{{name: sb3, params: {{path: {genuine_zip}}}}}"))
    res = RUNNER.invoke(app, ["run", str(f), "--out", str(tmp_path / "out"), "--trust-pickle"])
    assert res.exit_code == 0, res.output
    df = load_results(tmp_path / "out")
    assert df["status"].to_list() == ["ok"], df["error"].to_list()
    assert df["planner"].to_list() == ["sb3"]


def test_convert_sb3_needs_the_opt_in_and_writes_a_policy_that_runs_without_it(tmp_path: Path, genuine_zip: Path) -> None:
    out = tmp_path / "p.safetensors"
    res = RUNNER.invoke(app, ["convert-sb3", str(genuine_zip), "--out", str(out)])
    assert res.exit_code == 2 and "pickle-based" in res.stderr and not out.exists()
    res = RUNNER.invoke(app, ["convert-sb3", str(genuine_zip), "--out", str(out), "--trust-pickle"])
    assert res.exit_code == 0, res.output
    assert out.is_file() and out.with_suffix(".json").is_file()
    f = tmp_path / "s.yaml"
    f.write_text(SCENARIO.format(planner=f"{{name: sb3, params: {{path: {out}}}}}"))
    res = RUNNER.invoke(app, ["run", str(f), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    # tampered weights: refused before the run starts (one line, no run folder), not an errored episode
    out.write_bytes(out.read_bytes()[:-4] + b"\0\0\0\0")
    res = RUNNER.invoke(app, ["run", str(f), "--out", str(tmp_path / "run2")])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1 and "sha256" in res.stderr
    assert not (tmp_path / "run2").exists()
