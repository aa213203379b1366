"""The parts of the spectral suite (see benchmarks/spectral_suite.py)."""
