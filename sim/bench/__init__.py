"""The benchmarks behind ``loopdrive bench ...``; each writes JSON under ``benchmarks/results/``."""
