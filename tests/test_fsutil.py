"""sim.fsutil: atomic writes that honour the umask and leave nothing behind on failure."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sim.fsutil import (
    atomic_path,
    atomic_savez,
    atomic_write_bytes,
    atomic_write_text,
    make_temp_dir,
    replace_dir,
    sha256_file,
)

ROOT = Path(__file__).resolve().parents[1]


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _in_subprocess(code: str, umask: int, tmp: Path) -> dict[str, int]:
    """Run ``code`` (which fills ``modes``: name -> path) in a fresh interpreter with ``umask``
    set before anything is written; returns the modes of those paths."""
    script = "\n".join(
        [
            "import json, os, stat, sys",
            f"os.umask({umask:#o})",
            "modes = {}",
            textwrap.dedent(code),
            "print(json.dumps({k: stat.S_IMODE(os.stat(v).st_mode) for k, v in modes.items()}))",
        ]
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp, env=env, capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077], ids=oct)
def test_mode_follows_the_umask(tmp_path: Path, umask: int) -> None:
    code = """
        from pathlib import Path
        import numpy as np
        from sim.fsutil import atomic_path, atomic_write_bytes, atomic_write_text, make_temp_dir
        d = Path.cwd()
        modes["bytes"] = atomic_write_bytes(d / "a.bin", b"x")
        modes["text"] = atomic_write_text(d / "a.txt", "y\\n", fsync=True)
        (d / "old.txt").write_text("old")
        os.chmod(d / "old.txt", 0o600)
        modes["replaced"] = atomic_write_text(d / "old.txt", "new")
        with atomic_path(d / "a.npz", suffix=".npz") as t:
            np.savez(t, a=np.arange(3))
        modes["npz"] = d / "a.npz"
        with atomic_path(d / "b.bin") as t:  # a writer that replaces the file with a 0600 one
            os.unlink(t)
            os.close(os.open(t, os.O_WRONLY | os.O_CREAT, 0o600))
        modes["recreated"] = d / "b.bin"
        modes["folder"] = make_temp_dir(d, prefix=".log.tmp-")
    """
    modes = _in_subprocess(code, umask, tmp_path)
    assert modes.pop("folder") == 0o777 & ~umask
    assert modes == {k: 0o666 & ~umask for k in ("bytes", "text", "replaced", "npz", "recreated")}
    assert (tmp_path / "old.txt").read_text() == "new"
    assert np.load(tmp_path / "a.npz")["a"].tolist() == [0, 1, 2]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[0].startswith(".log.tmp-") and names[1:] == ["a.bin", "a.npz", "a.txt", "b.bin", "old.txt"]


def test_contents_and_return_value(tmp_path: Path) -> None:
    p = tmp_path / "f.json"
    assert atomic_write_text(p, "é\n") == p
    assert p.read_bytes() == "é\n".encode()
    assert atomic_write_text(str(p), "é", encoding="latin-1") == p
    assert p.read_bytes() == b"\xe9"
    big = os.urandom(3 << 20)
    atomic_write_bytes(p, big)
    assert p.read_bytes() == big
    assert [q.name for q in tmp_path.iterdir()] == ["f.json"]


def test_failure_mid_write_keeps_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "results.json"
    p.write_text("old")
    calls = []

    def failing_write(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real_write(fd, bytes(data)[:10])  # a short write, then the disk is full

    real_write = os.write
    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(p, b"n" * 100)
    monkeypatch.undo()
    assert len(calls) == 2
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["results.json"]


def test_atomic_path_failure_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "shard.npz"
    p.write_bytes(b"old")
    with pytest.raises(KeyError), atomic_path(p, suffix=".npz") as t:
        assert t.parent == tmp_path and t.name.endswith(".npz") and t.name.startswith(".shard.npz.")
        t.write_bytes(b"half")
        raise KeyError("writer failed")
    assert p.read_bytes() == b"old"
    assert [q.name for q in tmp_path.iterdir()] == ["shard.npz"]


def test_failing_rename_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "x").write_text("keep")  # a non-empty folder cannot be replaced by a file
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert sorted(q.name for q in tmp_path.iterdir()) == ["taken"]
    assert (target / "x").read_text() == "keep"


def test_missing_folder_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "nope" / "f.txt", "x")
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "nope" / "f.txt"):
        pass


def test_real_writers_give_group_and_other_readable_files(tmp_path: Path) -> None:
    """Results table, a JSON log file, a leaderboard page and a generated scenario YAML under
    umask 022 are 0644 (mkstemp made them 0600)."""
    code = """
        from pathlib import Path
        from sim.leaderboard import _write_atomic
        from sim.fsutil import atomic_write_text  # the generated-scenario writer (sim.adversary.search)
        from sim.batch import write_results
        from sim.log import write_json_atomic
        d = Path.cwd()
        modes["results"] = write_results(d, [])
        write_json_atomic(d / "meta.json", {"a": 1})
        modes["json"] = d / "meta.json"
        _write_atomic(d / "leaderboard.md", "| a |\\n")
        modes["md"] = d / "leaderboard.md"
        atomic_write_text(d / "generated" / "cut_in-abc.yaml", "version: 1\\n", parents=True)
        modes["yaml"] = d / "generated" / "cut_in-abc.yaml"
    """
    modes = _in_subprocess(code, 0o022, tmp_path)
    assert modes == {"results": 0o644, "json": 0o644, "md": 0o644, "yaml": 0o644}
    assert json.loads((tmp_path / "meta.json").read_text()) == {"a": 1}
    assert (tmp_path / "generated" / "cut_in-abc.yaml").read_text() == "version: 1\n"


def test_make_temp_dir_gives_distinct_empty_folders(tmp_path: Path) -> None:
    a, b = make_temp_dir(tmp_path), make_temp_dir(tmp_path, prefix="x-")
    assert a != b and a.parent == b.parent == tmp_path and b.name.startswith("x-")
    assert a.is_dir() and not any(a.iterdir())
    with pytest.raises(FileNotFoundError):
        make_temp_dir(tmp_path / "missing")


def test_replace_dir_swaps_a_finished_folder_into_place(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    first = make_temp_dir(tmp_path, prefix=".bundle.tmp-")
    (first / "a.txt").write_text("1")
    assert replace_dir(first, out) == out and (out / "a.txt").read_text() == "1" and not first.exists()
    second = make_temp_dir(tmp_path, prefix=".bundle.tmp-")
    (second / "b.txt").write_text("2")
    replace_dir(second, out)  # an existing folder is replaced whole, nothing of it is left
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temporary or old folder left behind


def test_sha256_file_and_atomic_savez(tmp_path: Path) -> None:
    import hashlib

    data = os.urandom(3 << 20)  # more than one read chunk
    (tmp_path / "w.bin").write_bytes(data)
    assert sha256_file(tmp_path / "w.bin") == hashlib.sha256(data).hexdigest()
    assert sha256_file(tmp_path / "w.bin", chunk=7) == hashlib.sha256(data).hexdigest()
    atomic_savez(tmp_path / "s.npz", {"a": np.arange(5), "b": np.ones((2, 2))})
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["a", "b"] and z["a"].tolist() == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz", "w.bin"]
    atomic_write_text(tmp_path / "x" / "y" / "z.txt", "ok", parents=True)
    assert (tmp_path / "x" / "y" / "z.txt").read_text() == "ok"
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "missing" / "z.txt", "no")


def test_json_safe_one_walker_for_every_results_file() -> None:
    """The one JSON-safe walker (loop, adversary, ncap and batch results): numpy scalars and
    arrays, paths, dataclasses, tuples and non-numeric keys become plain JSON; non-finite floats
    are null by default, or strings where the reader turns them back into floats."""
    from dataclasses import dataclass

    from sim.fsutil import json_safe

    @dataclass
    class Cfg:
        out: Path
        rate: float

    obj = {
        1: (np.float32(0.5), np.int64(3), np.bool_(True)),
        "a": np.array([[1.0, np.nan], [np.inf, -np.inf]]),
        "p": Path("runs") / "x",
        "c": Cfg(Path("o"), float("nan")),
        "f": [np.float64(np.inf), float("-inf"), np.float32(np.nan)],
    }
    strict = json.dumps(json_safe(obj), sort_keys=True, allow_nan=False)
    assert json.loads(strict) == {
        "1": [0.5, 3, True],
        "a": [[1.0, None], [None, None]],
        "p": "runs/x",
        "c": {"out": "o", "rate": None},
        "f": [None, None, None],
    }
    assert json_safe([np.inf, -np.inf, np.nan], inf_as_str=True) == ["inf", "-inf", None]  # adversary files
    assert json_safe([np.inf, -np.inf, np.nan], inf_as_str=True, nan_as_str=True) == ["inf", "-inf", "nan"]  # metrics.json
    assert type(json_safe(np.float64(2.5))) is float and json_safe("nan") == "nan"
