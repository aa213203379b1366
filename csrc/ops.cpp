// The fastact operator library (schemas in schemas.h). The kernels register themselves per
// device (csrc/cpu/*.cpp, csrc/cuda/*.cu); fake kernels and autograd are registered in Python
// next to each op (fastact/<op>.py).
#include <Python.h>
#include <torch/library.h>

#include "cpu/isa.h"
#include "schemas.h"

namespace {

PyObject* cpu_isa(PyObject*, PyObject*) {
  return PyUnicode_FromString(fastact::cpu::isa_name(fastact::cpu::active_isa()));
}

PyMethodDef methods[] = {
    {"cpu_isa", cpu_isa, METH_NOARGS,
     "The instruction set the CPU kernels run with (\"avx512\", \"avx2\" or \"portable\")."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};

}  // namespace

// Importing fastact._C runs the static TORCH_LIBRARY registrations of this library.
extern "C" PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }

TORCH_LIBRARY(fastact, m) { fastact::define_ops(m); }
