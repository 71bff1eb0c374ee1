"""The benchmarks behind ``loopdrive bench ...``; each writes JSON into a run folder
(``runs/bench/<UTC time>/`` or ``--out``) and into ``benchmarks/results/`` only with ``--publish``."""
