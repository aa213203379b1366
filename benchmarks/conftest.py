"""pytest options of the pytest-benchmark tests (test_speed.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_addoption(parser):
    group = parser.getgroup("fastact speed suite")
    group.addoption("--quick", action="store_true", help="the --quick sizes of run.py")
    group.addoption("--device", default=None, help="cpu or cuda (default: cuda if present)")
    group.addoption("--dtype", nargs="+", default=["float32", "bfloat16"],
                    help="dtypes (default: float32 bfloat16)")
    group.addoption("--threads", type=int, default=None, help="torch threads (default: torch's)")


def pytest_configure(config):
    threads = config.getoption("--threads", default=None)
    if threads:
        import torch

        torch.set_num_threads(threads)
