"""``loopdrive bench recon-roundtrip --iterations N --section NAME`` (issue 23): iteration-matched
runs train exactly N iterations with no wall-clock cap and record it; a named section of the result
file survives later runs into the same file (``--merge``, ``--no-merge``, a ``--publish`` copy)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.bench.recon_roundtrip import run_recon_roundtrip
from sim.errors import ScenarioError

SECTION = "ablation_iteration_matched"


def _app():  # the whole CLI, imported only by the tests that run it
    from sim.cli import app

    return app


def _bench(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(_app(), ["bench", "recon-roundtrip", "--budget", "smoke", "--variants", "clean", *args])
    return r.exit_code, r.output


@pytest.fixture(scope="module")
def matched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """A smoke run with --iterations 3 into a section of a file that already holds a capped run."""
    tmp = tmp_path_factory.mktemp("rr")
    out = tmp / "r.json"
    earlier = {"benchmark": "recon_roundtrip", "settings": {"budget": "quick"}, "variants": {"clean": {"status": "ok", "marker": 1}}}
    out.write_text(json.dumps(earlier))
    code, text = _bench("--iterations", "3", "--section", SECTION, "--work", str(tmp / "w"), "--out", str(out))
    assert code == 0, text
    return tmp, out, earlier


def test_iterations_trains_exactly_n_without_cap_into_its_section(matched: tuple[Path, Path, dict]) -> None:
    _, out, earlier = matched
    doc = json.loads(out.read_text())
    assert {k: doc[k] for k in earlier} == earlier  # the capped run in the same file is untouched
    sec = doc[SECTION]
    assert sec["settings"]["iterations"] == 3 and sec["settings"]["max_train_seconds"] == 0.0 and sec["settings"]["iterations_matched"]
    v = sec["variants"]["clean"]
    assert v["status"] == "ok" and v["iterations_run"] == 3 and v["recon"]["iterations"] == 3
    assert sec["comparisons"]["iterations_run"] == {"clean": 3} and sec["comparisons"]["iterations_matched"] is True
    assert sec["comparisons"]["realism_loss"] is None  # one level only: nothing to compare


@pytest.mark.parametrize("merge", ["--merge", "--no-merge"])
def test_a_later_top_level_run_keeps_the_section(matched: tuple[Path, Path, dict], merge: str) -> None:
    tmp, out, _ = matched
    before = json.loads(out.read_text())[SECTION]
    code, text = _bench(merge, "--reuse-bundles", "--work", str(tmp / "w"), "--out", str(out))
    assert code == 0, text
    doc = json.loads(out.read_text())
    assert doc[SECTION] == before
    assert doc["settings"]["budget"] == "smoke" and "iterations_matched" not in doc["settings"]  # a capped run's settings as before
    assert doc["variants"]["clean"]["status"] == "ok" and doc["variants"]["clean"]["iterations_run"] == 3


def test_a_copy_that_replaces_the_published_file_carries_its_sections(matched: tuple[Path, Path, dict]) -> None:
    tmp, out, _ = matched
    other = tmp / "elsewhere.json"
    run_recon_roundtrip(work=tmp / "w", out=other, budget="smoke", variants=("clean",), reuse_bundles=True, keep_sections_from=(out,))
    assert json.loads(other.read_text())[SECTION] == json.loads(out.read_text())[SECTION]


def test_runs_of_other_variants_into_the_same_file_meanwhile_are_kept(matched: tuple[Path, Path, dict]) -> None:
    tmp, out, _ = matched
    shared = tmp / "shared.json"
    shared.write_text(json.dumps({SECTION: json.loads(out.read_text())[SECTION]}))
    other = {"status": "ok", "iterations_run": 3, "summary": {"mean_heldout_psnr": 1.0}, "marker": "other run"}

    def meanwhile(_: str) -> None:  # another process finishes a variant while this one runs
        doc = json.loads(shared.read_text())
        doc[SECTION]["variants"]["real_like"] = other
        shared.write_text(json.dumps(doc))

    run_recon_roundtrip(work=tmp / "w", out=shared, budget="smoke", variants=("clean",), reuse_bundles=True, iterations=3,
                        section=SECTION, echo=meanwhile)
    sec = json.loads(shared.read_text())[SECTION]
    assert sec["variants"]["real_like"] == other and sec["variants"]["clean"]["status"] == "ok"
    assert sec["comparisons"]["iterations_run"] == {"clean": 3, "real_like": 3}


def test_bad_iterations_and_section_are_refused(tmp_path: Path) -> None:
    for args, flag in ((["--iterations", "0"], "--iterations"), (["--section", "variants"], "section"), (["--section", "a b"], "section")):
        code, text = _bench(*args, "--work", str(tmp_path / "w"), "--out", str(tmp_path / "r.json"))
        assert code == 2 and flag in text and not (tmp_path / "r.json").exists()
    with pytest.raises(ScenarioError, match="iteration count"):
        run_recon_roundtrip(work=tmp_path / "w", out=None, budget="smoke", iterations=0)
