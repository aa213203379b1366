"""The speed suite's cases as pytest-benchmark tests, for comparing runs with
pytest-benchmark's own tooling:

    .venv/bin/python -m pytest benchmarks/test_speed.py --quick -k hat --benchmark-save=before
    .venv/bin/python -m pytest benchmarks/test_speed.py --quick -k hat --benchmark-compare

One test per (op, mode, dtype, size, provider), grouped by op and case (group "hat forward
float32 2^20"), the provider a parameter. The cases are cases.py's (every op in its OPS);
collection builds them once to learn their names, and the tests build them again in the same
order, one at a time. Use run.py for the report, the ratios and the regression check.
"""

from __future__ import annotations

import pytest
import torch

from harness import DTYPES, steady_allocator
from cases import OPS


def _settings(config):
    device = config.getoption("--device") or ("cuda" if torch.cuda.is_available() else "cpu")
    return device, [DTYPES[d] for d in config.getoption("--dtype")], config.getoption("--quick")


def pytest_generate_tests(metafunc):
    if "provider" not in metafunc.fixturenames:
        return
    device, dtypes, quick = _settings(metafunc.config)
    params = []
    for op, cases in OPS.items():
        for case in cases(device, dtypes, quick):
            for provider in case.providers:
                params.append(pytest.param(case.key, provider,
                                           id=f"{' '.join(case.key)} {provider}".replace(" ", "-")))
    metafunc.parametrize(("key", "provider"), params)


class _Cases:
    """Builds the cases again at test time, walking each op's generator in step with the
    tests; holds only the current case."""

    def __init__(self, device, dtypes, quick):
        self.settings = (device, dtypes, quick)
        self.op = self.generator = self.case = None

    def get(self, key):
        if self.case is not None and self.case.key == key:
            return self.case
        for restart in (False, True):
            if restart or self.op != key[0]:
                self.op, self.case = key[0], None
                self.generator = OPS[key[0]](*self.settings)
            for case in self.generator:
                if case.key == key:
                    self.case = case
                    return case
        raise LookupError(f"no case {key}")


@pytest.fixture(scope="session")
def speed_cases(request):
    steady_allocator()
    return _Cases(*_settings(request.config))


def synchronised(fn):
    """fn, then a wait for the GPU: pytest-benchmark's clock does not wait for it."""
    def run():
        fn()
        torch.cuda.synchronize()

    return run


def test_speed(benchmark, speed_cases, key, provider):
    fn = speed_cases.get(key).providers[provider]
    if speed_cases.settings[0] == "cuda":
        fn = synchronised(fn)
    benchmark.group = " ".join(key)
    benchmark.extra_info.update(op=key[0], mode=key[1], dtype=key[2], size=key[3])
    benchmark(fn)
