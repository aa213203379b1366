import hashlib
import os
import tempfile

import torch

# Without a GPU the Triton kernels run on CPU tensors through the interpreter. Triton reads
# this when the kernels are defined, i.e. when fastact is imported, so it is set first.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

import fastact  # noqa: E402


def _schemas_identity() -> str:
    """The schemas of every fastact op registered (C++, emulated, Triton), hashed."""
    names = sorted(name for name in torch._C._dispatch_get_all_op_names()
                   if name.split("::")[0].startswith("fastact"))
    schemas = ";".join(str(torch._C._get_schema(name, "")) for name in names)
    return hashlib.sha256(schemas.encode()).hexdigest()[:16]


# torch.compile's on-disk caches find a graph of fastact ops by the ops' names, not their
# schemas: after a change of schema, a cached graph would call an op with its old arguments.
# One cache directory per set of schemas (a rebuild that keeps them keeps the cache warm).
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"torchinductor-fastact-{_schemas_identity()}"))

# Hypothesis profiles, chosen by HYPOTHESIS_PROFILE (or pytest --hypothesis-profile):
#  - "ci", the default (make test): derandomized and without the example database, so every run
#    of every checkout tests the same examples: max_examples per property and backend, times the
#    test's weight (test_properties.property_settings);
#  - "fast": a tenth of them, for a quick tier;
#  - "fuzz" (make fuzz, tools/fuzz.py): fresh random examples, FUZZ_EXAMPLES of them; a failure
#    prints the seed and the @reproduce_failure blob that replay it.
_PROPERTY_SETTINGS = dict(deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", derandomize=True, max_examples=100, **_PROPERTY_SETTINGS)
settings.register_profile("fast", derandomize=True, max_examples=10, **_PROPERTY_SETTINGS)
settings.register_profile("fuzz", derandomize=False,
                          max_examples=int(os.environ.get("FUZZ_EXAMPLES", "1000")),
                          **_PROPERTY_SETTINGS)


def pytest_configure(config):
    # pytest's option wins over the environment, whichever of the two loads first.
    settings.load_profile(config.getoption("hypothesis_profile", None)
                          or os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_report_header(config):
    return (
        f"fastact {fastact.__version__}: backends {fastact.available_backends()}, "
        f"CPU kernels {fastact._extension.cpu_isa()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, hypothesis profile "
        f"{settings.get_current_profile_name()!r}"
    )


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
