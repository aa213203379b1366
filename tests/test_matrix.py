"""The (backend, device) test matrix on the hosts it must be right on: this CPU-only machine,
and a GPU host (its answers faked), with and without CUDA kernels built."""

from __future__ import annotations

from fastact_testing import BACKEND_DEVICES, Host, backend_device_pairs, this_host


def matrix(host: Host) -> dict[str, str | None]:
    """id -> the skip reason (None: it runs), and whether it is marked gpu."""
    out = {}
    for param in backend_device_pairs(host):
        skips = [m.kwargs["reason"] for m in param.marks if m.name == "skip"]
        gpu = any(m.name == "gpu" for m in param.marks)
        assert gpu == (param.values[1] == "cuda")
        out[param.id] = skips[0] if skips else None
    return out


CPU_HOST = Host(("cpu", "triton", "cuda-emulated", "reference"), has_gpu=False,
                triton_installed=True, triton_interpreting=True, cuda_kernels=False)
GPU_HOST = Host(("cpu", "cuda", "triton", "cuda-emulated", "reference"), has_gpu=True,
                triton_installed=True, triton_interpreting=False, cuda_kernels=True)


def test_a_cpu_host_runs_the_kernels_and_the_interpreter_and_skips_the_gpu_pairs():
    m = matrix(CPU_HOST)
    assert {k for k, v in m.items() if v is None} == {
        "cpu", "triton-interpreter", "cuda-emulated", "reference-cpu"}
    assert {m[k] for k in ("cuda", "triton-cuda", "reference-cuda")} == {"needs a CUDA GPU"}


def test_a_gpu_host_runs_every_gpu_pair_and_skips_only_the_interpreter_saying_why():
    m = matrix(GPU_HOST)
    assert {k for k, v in m.items() if v is None} == {
        "cpu", "cuda-emulated", "reference-cpu", "cuda", "triton-cuda", "reference-cuda"}
    assert "a GPU owns Triton" in m["triton-interpreter"]


def test_a_host_without_the_emulated_kernels_says_how_to_build_them():
    m = matrix(Host(("cpu", "triton", "reference"), has_gpu=False, triton_installed=True,
                    triton_interpreting=True, cuda_kernels=False))
    assert "_C_emulated is not built" in m["cuda-emulated"] and "make build" in m["cuda-emulated"]


def test_a_gpu_host_without_cuda_kernels_says_how_to_build_them():
    m = matrix(Host(("cpu", "triton", "reference"), has_gpu=True, triton_installed=True,
                    triton_interpreting=False, cuda_kernels=False))
    assert "built without CUDA kernels" in m["cuda"] and "make check-gpu" in m["cuda"]
    assert m["triton-cuda"] is None


def test_a_gpu_host_with_the_interpreter_forced_skips_triton_on_cuda():
    m = matrix(Host(GPU_HOST.backends, has_gpu=True, triton_installed=True,
                    triton_interpreting=True, cuda_kernels=True))
    assert m["triton-interpreter"] is None
    assert "TRITON_INTERPRET=1" in m["triton-cuda"]


def test_this_host_matrix_is_the_one_the_tests_use():
    assert [p.id for p in BACKEND_DEVICES] == [p.id for p in backend_device_pairs(this_host())]
