"""sensor_policy on neural sensors (issue 25's sim-to-real discipline): the neural training variants
of the scenario library stay in sync with it; ``loopdrive leaderboard --renderer/--bundle`` drives
the library's files on another sensor backend (bad values: one line, exit 2, nothing written); and
the cross tests through the real pipeline at a tiny budget -- one command trains on mesh and neural
roll-outs together, a mesh-trained policy drives on neural LiDAR and a mixed-trained one on mesh,
each scored."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from sim.cli import app
from tests.test_render_backends import build_tiny_bundle

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "scenarios"


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("sensor_policy_neural_bench", ROOT / "scripts" / "sensor_policy_neural_bench.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_neural_variants_are_the_library_on_the_bundle(tmp_path: Path) -> None:
    import yaml

    bench = _bench()
    out = tmp_path / "variants"
    written = bench.write_variants(out)
    lib = sorted(p.stem for p in LIBRARY.glob("*.yaml"))
    assert sorted(written) == sorted(f"neural_{n}.yaml" for n in lib)
    assert bench.write_variants(out, check=True) == []  # in sync right after writing
    src = yaml.safe_load((LIBRARY / "lead_brake_hard.yaml").read_text())
    doc = yaml.safe_load((out / "neural_lead_brake_hard.yaml").read_text())
    assert (out / doc["scene"]["bundle"]).resolve() == ROOT / "bundles" / "ncap-small-s0"
    assert (out / doc["scene"]["actor_library"]).resolve() == ROOT / "out" / "ncap-actors"
    assert doc["scene"] == {**src["scene"], "bundle": doc["scene"]["bundle"], "renderer": "neural", "actor_library": doc["scene"]["actor_library"]}
    assert doc["name"] == "neural_lead_brake_hard" and doc["horizon_s"] == 6.0 and doc["actors"] == src["actors"]
    # an edited variant is reported by the check (a stale folder cannot pass silently)
    (out / "neural_lead_brake_hard.yaml").write_text("name: x\n")
    assert bench.write_variants(out, check=True) == ["neural_lead_brake_hard.yaml"]
    assert "horizon_s: 4.0" in bench.variant_text((LIBRARY / "lead_brake_hard.yaml").read_text(), "lead_brake_hard", 4.0)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--renderer", "neural"], "scene.bundle"),  # the library has no bundle: say which field
        (["--renderer", "bogus"], "bogus"),
        (["--renderer", "neural", "--bundle", "nothere"], "bundle.json"),
    ],
    ids=["neural-without-bundle", "unknown-renderer", "missing-bundle"],
)
def test_leaderboard_renderer_bad_values_are_one_line_exit_2(tmp_path: Path, extra: list[str], needle: str) -> None:
    out = tmp_path / "lb"
    res = CliRunner().invoke(app, ["leaderboard", str(LIBRARY / "stopped_vehicle.yaml"), "--planners", "idm", "--out", str(out), *extra])
    assert res.exit_code == 2, res.stdout + res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and needle in res.stderr
    assert not out.exists()


def _train(scenarios: list[Path], eps: Path, out: Path) -> dict[str, Any]:
    args = ["train", "sensor-policy", *[a for s in scenarios for a in ("--scenarios", str(s))], "--seeds", "0", "--sensors", "scenario",
            "--max-steps", "4", "--epochs", "1", "--episodes", str(eps), "--out", str(out)]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.stdout + res.stderr
    return json.loads(out.with_suffix(".json").read_text())


def _leaderboard(path: Path, out: Path, weights: Path, *extra: str) -> dict[str, Any]:
    from sim.leaderboard import leaderboard_tables

    args = ["leaderboard", str(path), "--planners", "sensor_policy", "--planner-param", f"sensor_policy.weights={weights}",
            "--horizon", "0.3", "--out", str(out), *extra]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.stdout + res.stderr
    (row,), _ = leaderboard_tables({"sensor_policy": out / "sensor_policy"})
    return {"row": row, "run": json.loads((out / "sensor_policy" / "run.json").read_text())}


def test_cross_sensor_train_on_one_kind_drive_on_the_other(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, tiny_log: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from sim.render.neural import NeuralRenderer

    bundle = build_tiny_bundle(tmp_path_factory, tiny_log)
    mesh_f, neural_f = tmp_path / "tiny.yaml", tmp_path / "neural_tiny.yaml"
    mesh_f.write_text(f"version: 1\nname: tiny\nscene: {{log: {tiny_log}}}\nhorizon_s: 1.0\n")
    neural_f.write_text(f"version: 1\nname: neural_tiny\nscene: {{log: {tiny_log}, bundle: {bundle}, renderer: neural}}\nhorizon_s: 1.0\n")
    sweeps: list[int] = []
    orig = NeuralRenderer.render_lidar

    def counted(self: Any, *a: Any, **k: Any) -> Any:
        sweeps.append(1)
        return orig(self, *a, **k)

    monkeypatch.setattr(NeuralRenderer, "render_lidar", counted)

    # one command trains on mesh and neural roll-outs: --sensors scenario = each file's own backend
    eps = tmp_path / "eps"
    mixed = _train([mesh_f, neural_f], eps, tmp_path / "mixed.safetensors")
    assert sorted(p.name for p in eps.iterdir()) == ["expert_neural_tiny__s0__x0.npz", "expert_tiny__s0__x0.npz"]
    assert mixed["samples"] == 8 and len(sweeps) == 4  # the neural file's roll-out saw neural LiDAR, the mesh one did not
    with np.load(eps / "expert_tiny__s0__x0.npz") as m, np.load(eps / "expert_neural_tiny__s0__x0.npz") as n:
        assert m["raster"].shape == n["raster"].shape and not np.array_equal(m["raster"], n["raster"])
    mesh_only = _train([mesh_f], tmp_path / "eps_mesh", tmp_path / "mesh.safetensors")
    assert mesh_only["samples"] == 4

    # mesh -> neural: the mesh-trained policy driven on the bundle's neural LiDAR, scored
    sweeps.clear()
    a = _leaderboard(mesh_f, tmp_path / "lb_mesh_on_neural", tmp_path / "mesh.safetensors", "--renderer", "neural", "--bundle", str(bundle))
    assert a["run"]["renderer"] == "neural" and len(sweeps) == 3
    assert 0.0 <= a["row"]["score"] <= 1.0 and a["row"]["episodes"] == 1 and a["row"]["errored"] == 0
    # neural -> mesh: the mixed-trained policy on the neural file's episodes with mesh LiDAR
    sweeps.clear()
    b = _leaderboard(neural_f, tmp_path / "lb_mixed_on_mesh", tmp_path / "mixed.safetensors", "--renderer", "mesh")
    assert b["run"]["renderer"] == "mesh" and sweeps == []
    assert 0.0 <= b["row"]["score"] <= 1.0 and b["row"]["episodes"] == 1 and b["row"]["errored"] == 0
