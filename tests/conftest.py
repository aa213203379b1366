import os

import torch

# Without a GPU the Triton kernels run on CPU tensors through the interpreter. Triton reads
# this when the kernels are defined, i.e. when fastact is imported, so it is set first.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import fastact  # noqa: E402


def pytest_report_header(config):
    return (
        f"fastact {fastact.__version__}: backends {fastact.available_backends()}, "
        f"CPU kernels {fastact._extension.cpu_isa()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
