"""NeuroNCAP's safety protocol inside loopdrive's closed loop (``loopdrive ncap``).

* :mod:`sim.ncap.scenarios` -- the stationary, frontal and side scenarios built from a drive log and
  their seeded permutations, each an ordinary scenario file;
* :mod:`sim.ncap.reference` -- the no-action ego of the reference runs;
* :mod:`sim.ncap.score` -- NeuroNCAP's score, impact speeds, the per-type summary;
* :mod:`sim.ncap.run` -- the run (checks, scenario files, the two batch runs, results);
* :mod:`sim.ncap.report` -- the report (tables, histograms, videos of the worst runs).

See ``docs/concepts/ncap.md``.
"""

from sim.ncap.run import NcapConfig, NcapSummary, run_ncap
from sim.ncap.score import ncap_score

__all__ = ["NcapConfig", "NcapSummary", "ncap_score", "run_ncap"]
