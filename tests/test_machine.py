"""sim.machine: the one record of the machine and code that every benchmark JSON carries."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sim.machine import git_output, load_average, machine_info

ROOT = Path(__file__).resolve().parents[1]


def test_machine_info_keys_and_extra() -> None:
    m = machine_info(torch_threads=3)
    assert m["cpu_count"] == os.cpu_count() and m["torch_threads"] == 3
    assert isinstance(m["platform"], str) and m["python"].count(".") == 2
    la = m["load_average"]
    assert la is None or (len(la) == 3 and all(isinstance(x, float) and x >= 0 for x in la))
    assert "git_head" not in m  # no subprocess unless asked


def test_git_state_matches_git() -> None:
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    m = machine_info(git_paths=("no/such/folder",))
    assert m["git_head"] == (head or None)
    assert m["git_dirty"] is False  # nothing can be modified under a path that does not exist
    assert git_output("no-such-git-command") is None  # a failing git call is None, not an exception


def test_load_average_rounded() -> None:
    la = load_average()
    assert la is None or all(round(x, 2) == x for x in la)
