"""The notebooks in ``notebooks/`` execute end to end (nbmake), in a child pytest so nbmake's
kernels run with this interpreter's ``python3`` kernel and never with xdist.

nbmake executes copies in memory (the committed notebooks and their outputs are not rewritten);
every notebook writes only into its own ``tempfile.mkdtemp()`` folder, here under the test's
``tmp_path`` (``TMPDIR``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
def test_every_notebook_executes_with_nbmake(tmp_path: Path) -> None:
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_reconstruct.ipynb",
        "03_edit_actors.ipynb",
        "04_batch_and_metrics.ipynb",
        "05_corner_cases.ipynb",
    ]
    cmd = [sys.executable, "-m", "pytest", "--nbmake", "--nbmake-timeout=900", "-p", "no:xdist",
           "-q", "-o", "addopts=", "--rootdir", str(ROOT / "notebooks"), *map(str, NOTEBOOKS)]  # fmt: skip
    # the notebooks' mkdtemp() folders (kept for a reader to look at) go under pytest's tmp_path,
    # which is removed when the test passes
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=2400, env=env, check=False)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, tail
    assert f"{len(NOTEBOOKS)} passed" in proc.stdout, tail
    made = sorted(p.name.split("-")[1] for p in tmp_path.glob("loopdrive-nb*"))
    assert made == ["nb01", "nb02", "nb04", "nb05"], made  # each wrote where it said, nothing in the system temp dir
