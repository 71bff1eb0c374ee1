"""NCAP-style *training* scenarios (``loopdrive train sensor-policy --ncap-log``): NeuroNCAP's
permutations of other drive logs and other seeds than an evaluation's, for a learned planner to
imitate its expert on.

The scenario library has no parked car in the ego's lane to swerve around, no oncoming car in it
and no car crossing its path, so a policy imitating ``pdm_closed`` on the library only ever learns
to brake. These functions write NeuroNCAP-style permutations (:mod:`sim.ncap.scenarios`: the same
three types, the same designs and jitters as ``loopdrive ncap``) of *training* drive logs as
ordinary scenario files, so the expert roll-outs and the DAgger rounds also visit those states.

No test-set leakage by construction: use logs of other towns than the evaluation's (``loopdrive
synth --town small --seed 1``; the README's figure is town seed 0) and permutation seeds other than
the evaluation's (``loopdrive ncap --seed``, 0 in the README); :func:`ncap_training_scenarios`
records both in the files' names and descriptions. (This module sits with the protocol in the
runner layer; the CLI hands the files to the trainer, so ``agents`` never imports it.) The files use the ``mesh`` renderer (a
synthetic log's exact meshes) unless told; ``--sensors`` of the trainer overrides it anyway.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from sim.errors import ScenarioError

__all__ = ["NCAP_TRAIN_DEFAULT_SEED", "ncap_training_scenarios", "parse_ncap_logs"]

log = logging.getLogger(__name__)

#: default permutation seed of the training scenarios (the evaluation's, ``loopdrive ncap``'s default, is 0)
NCAP_TRAIN_DEFAULT_SEED = 1000


def _set_name(log_dir: Path, seed: int) -> str:
    base = "".join(c if c.isalnum() or c in "-_." else "_" for c in log_dir.resolve().name)
    return f"{base}-p{seed}"


def ncap_training_scenarios(
    logs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    runs: int,
    seed: int = NCAP_TRAIN_DEFAULT_SEED,
    types: Sequence[str] = ("stationary", "frontal", "side"),
    renderer: str = "mesh",
) -> list[Path]:
    """Write ``runs`` permutations per type (``types``) of every drive log in ``logs`` (synthetic
    logs for the ``mesh`` renderer) into ``out/<log name>-p<seed>/<type>/ncap_<type>_<k>.yaml``
    and return the files, sorted. The planner in the files is ``pdm_closed`` (the trainer
    replaces it: the expert or the policy drives). Permutation ``k`` of a type draws from
    ``default_rng([seed, type, k])`` exactly as ``loopdrive ncap --seed`` does. Files already
    there with the same content are kept (a resumed training). Raises :class:`ScenarioError` for
    a bad count or a log without an ego track; the log's own errors name its file."""
    import yaml

    from sim.fsutil import atomic_write_text
    from sim.log import validate_log
    from sim.ncap.scenarios import NCAP_TYPES, permutation_scenarios
    from sim.scenario import DEFAULT_SIZES, scene_context
    from sim.spec import SceneSpec

    if runs < 1:
        raise ScenarioError(f"expected at least 1 NCAP permutation per type, got {runs}", field="ncap_runs")
    if not 0 <= seed < 2**63:
        raise ScenarioError(f"expected an NCAP seed in [0, 2^63), got {seed}", field="ncap_seed")
    bad = [t for t in types if t not in NCAP_TYPES]
    if bad or not types:
        raise ScenarioError(f"expected NCAP types among {', '.join(NCAP_TYPES)}, got {list(types)}", field="ncap_types")
    size = DEFAULT_SIZES["car"]
    target = {"class": "car", "size": list(size)}
    files: list[Path] = []
    for lg in logs:
        lp = Path(lg)
        validate_log(lp, check_payloads=False)
        ctx = scene_context(SceneSpec(log=lp.resolve()))
        scene = {"log": str(lp.resolve()), "renderer": renderer}
        root = Path(out) / _set_name(lp, seed)
        _, items = permutation_scenarios(ctx, types, runs, seed, size, scene=scene, planner="pdm_closed", observation=("ego", "objects"), target=target)
        for p, data in items:
            data["name"] = f"{_set_name(lp, seed)}_{p.name}"
            path = root / p.kind / f"{p.name}.yaml"
            text = f"# sensor_policy NCAP training scenario: {p.kind} permutation {p.index}, seed {seed}, log {lp.resolve()}\n"
            text += yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110)
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                atomic_write_text(path, text)
            files.append(path)
        log.info("NCAP training scenarios: %d files of %s (seed %d) in %s", runs * len(types), lp, seed, root)
    return sorted(files)


def parse_ncap_logs(value: Sequence[str | os.PathLike[str]] | None) -> list[Path]:
    """The ``--ncap-log`` folders as paths (none: an empty list); each must be a folder."""
    out = []
    for v in value or ():
        p = Path(v)
        if not p.is_dir():
            raise ScenarioError("expected a drive-log folder (made by `loopdrive synth`)", file=str(p), field="ncap_log")
        out.append(p)
    return out
