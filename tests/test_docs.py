"""The documentation site builds strictly and its generated references match the code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    mkdocs = Path(sys.executable).with_name("mkdocs")
    # exactly the README's command (no -q: warnings must not be hidden), into a temporary site
    r = subprocess.run([str(mkdocs), "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "WARNING" not in r.stderr, r.stderr[-3000:]
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    # every top-level command of the CLI has its own section, generated from typer
    for cmd in ("synth", "run", "validate", "recon", "import", "bench synth"):
        assert f"loopdrive {cmd}</code>" in cli, cmd
    scen = (tmp_path / "site" / "reference" / "scenario" / "index.html").read_text()
    assert "horizon_s" in scen and "sweep" in scen
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "read_log" in api and "ClosedLoopEnv" in api
