"""``loopdrive recon``: the preset's wall-clock cap applies (overridable), the known third-party
warnings are filtered narrowly, and the paths printed at the end exist (no staging folder)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.cli.recon_cmds import known_warnings_filtered
from sim.recon.toyscene import write_toy_scene


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_scene(tmp_path_factory.mktemp("recon-cli") / "toy", frames=20)


def test_known_third_party_warnings_are_hidden_and_others_are_not() -> None:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with known_warnings_filtered():
            warnings.warn_explicit("`torch.cuda.amp.GradScaler(args...)` is deprecated", FutureWarning, "trainer.py", 137,
                                   module="nerfstudio.engine.trainer")
            warnings.warn_explicit("Converting a tensor with requires_grad=True to a scalar may lead to unexpected behavior.",
                                   UserWarning, "writer.py", 272, module="nerfstudio.utils.writer")
            warnings.warn_explicit("Importing `spectral_angle_mapper` from `torchmetrics.functional` was deprecated", FutureWarning,
                                   "prints.py", 70, module="torchmetrics.utilities.prints")
            warnings.warn_explicit("another nerfstudio warning", UserWarning, "writer.py", 300, module="nerfstudio.utils.writer")
            warnings.warn_explicit("deprecated in loopdrive", FutureWarning, "run.py", 1, module="sim.recon.run")
        warnings.warn_explicit("`torch.cuda.amp.GradScaler(args...)` is deprecated", FutureWarning, "trainer.py", 137,
                               module="nerfstudio.engine.trainer")  # the filter ends with the block
    assert [str(w.message) for w in rec] == ["another nerfstudio warning", "deprecated in loopdrive",
                                             "`torch.cuda.amp.GradScaler(args...)` is deprecated"]


def test_recon_states_its_cap_and_prints_only_existing_paths(toy: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    res = CliRunner().invoke(app, ["recon", str(toy), "--out", str(out), "--iterations", "3"])
    assert res.exit_code == 0, res.output
    assert "wall-clock cap 9 min" in res.output
    assert ".nerfstudio" not in res.output and not list(tmp_path.glob(".*"))  # the staging folder is gone and never named
    printed = re.findall(re.escape(str(tmp_path)) + r"\S*", res.output.replace("\n", ""))
    assert printed and all(Path(p.rstrip(":")).exists() for p in printed), printed
    assert str(out / "nerfstudio") in res.output  # the config ns-eval / ns-render load
    # --max-minutes / --time-cap overrides the preset's cap; 0 lifts it
    res = CliRunner().invoke(app, ["recon", str(toy), "--out", str(tmp_path / "c"), "--iterations", "3", "--time-cap", "0"])
    assert res.exit_code == 0, res.output
    assert "wall-clock cap" not in res.output and "3 of 3 iterations" in " ".join(res.output.split())
    bad = CliRunner().invoke(app, ["recon", str(toy), "--out", str(tmp_path / "d"), "--max-minutes", "-1"])
    assert bad.exit_code == 2 and not (tmp_path / "d").exists()
