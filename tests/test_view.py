"""``loopdrive view``: rerun recordings load back with the expected entities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rerun as rr

from sim.batch import run_batch
from sim.errors import LogFormatError, ScenarioError
from sim.view import write_recording

ROOT = Path(__file__).resolve().parents[1]


def _entities(path: Path) -> set[str]:
    rec = rr.dataframe.load_recording(str(path))
    return {c.entity_path for c in rec.schema().component_columns()}


def test_log_recording(tiny_log: Path, tmp_path: Path) -> None:
    out = write_recording(tiny_log, tmp_path / "log.rrd", max_points=500)
    ents = _entities(out)
    assert {"/world/lanes", "/world/actors", "/world/ego/path", "/world/lidar", "/world/camera/front"} <= ents
    rec = rr.dataframe.load_recording(str(out))
    view = rec.view(index="time", contents="/world/lidar")
    table = view.select().read_all()
    col = next(c for c in table.column_names if c.endswith(":Position3D"))
    sizes = [len(v) for v in table[col].to_pylist() if v is not None]
    assert len(sizes) == 20 and max(sizes) <= 500  # one sweep per frame, subsampled


def test_episode_recording(tmp_path: Path) -> None:
    run_batch([ROOT / "scenarios" / "stopped_vehicle.yaml"], tmp_path / "run", planner="idm", horizon_s=1.0)
    ep = next((tmp_path / "run" / "episodes").iterdir())
    out = write_recording(ep, tmp_path / "ep.rrd")
    ents = _entities(out)
    assert {"/world/actors", "/world/ego/path", "/world/lanes", "/metrics/speed", "/metrics/accel", "/metrics/jerk"} <= ents
    rec = rr.dataframe.load_recording(str(out))
    table = rec.view(index="time", contents="/metrics/speed").select().read_all()
    col = next(c for c in table.column_names if "Scalar" in c)
    speeds = np.array([v[0] for v in table[col].to_pylist() if v is not None])
    assert len(speeds) == 11 and np.all(speeds >= 0)


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(LogFormatError, match="drive-log folder"):
        write_recording(tmp_path, tmp_path / "x.rrd")
    (tmp_path / "meta.json").write_text("{}")
    with pytest.raises(ScenarioError, match=r"\.rrd"):
        write_recording(tmp_path, tmp_path / "x.mp4")
    assert not list(tmp_path.glob("*.rrd"))
