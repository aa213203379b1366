// The fastact operator library (schemas in schemas.h). The kernels register themselves per
// device (csrc/cpu/*.cpp, csrc/cuda/*.cu); autograd in C++ (autograd.cpp), fake kernels in
// Python next to each op (fastact/<op>.py).
#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <Python.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/library.h>

#include <utility>

#include "cpu/isa.h"
#include "schemas.h"

namespace {

PyObject* cpu_isa(PyObject*, PyObject*) {
  return PyUnicode_FromString(fastact::cpu::isa_name(fastact::cpu::active_isa()));
}

// Direct calls for the hot path of small tensors (fastact.hat, fastact.dct.dct_series, when
// _backend.auto_cpu holds): the op through the dispatcher from C++, without Python's operator
// call, whose argument parsing costs as much as the kernel on a few thousand elements. The
// dispatcher is the same (autograd, autocast, vmap, dispatch modes see the same op). Each
// returns None for a call it does not take: a tensor subclass or a __torch_function__ mode
// (which the Python call honours), an argument of another Python type, or one the op rejects;
// the caller then takes the Python path, whose checks raise the clear errors.

// obj as a tensor to call the op with: a torch.Tensor or nn.Parameter on the CPU (a meta
// tensor beside it would select the fake kernel), no torch function mode.
const at::Tensor* plain_cpu_tensor(PyObject* obj) {
  if (!THPVariable_CheckExact(obj) || at::impl::torch_function_mode_enabled()) return nullptr;
  const at::Tensor& tensor = THPVariable_Unpack(obj);
  return tensor.is_cpu() ? &tensor : nullptr;
}

// As Python's operator call: the GIL released around the op, its warnings (TORCH_WARN) raised
// as Python warnings when this returns.
template <class Call>
PyObject* call_or_none(const Call& call) {
  HANDLE_TH_ERRORS
  at::Tensor result;
  bool taken = true;
  Py_BEGIN_ALLOW_THREADS
  try {
    result = call();
  } catch (...) {  // the Python path checks the arguments again and raises
    taken = false;
  }
  Py_END_ALLOW_THREADS
  if (!taken) Py_RETURN_NONE;
  return THPVariable_Wrap(std::move(result));
  END_HANDLE_TH_ERRORS
}

template <class Signature>
c10::TypedOperatorHandle<Signature> typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

PyObject* hat_call(PyObject*, PyObject* x_obj) {
  const at::Tensor* x = plain_cpu_tensor(x_obj);
  if (x == nullptr) Py_RETURN_NONE;
  static const auto op = typed_op<at::Tensor(const at::Tensor&)>("fastact::hat");
  return call_or_none([&] { return op.call(*x); });
}

// dct_call(x, coeffs, channel_dim, lo, hi, odd, clamp): channel_dim may be negative (as in
// Python); a single shared row of coeffs ignores it.
PyObject* dct_call(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 7) Py_RETURN_NONE;
  const at::Tensor* x = plain_cpu_tensor(args[0]);
  const at::Tensor* coeffs = plain_cpu_tensor(args[1]);
  if (x == nullptr || coeffs == nullptr || !PyLong_CheckExact(args[2]) ||
      !PyFloat_CheckExact(args[3]) || !PyFloat_CheckExact(args[4]) || !PyBool_Check(args[5]) ||
      !PyBool_Check(args[6]) || coeffs->dim() != 2) {
    Py_RETURN_NONE;
  }
  int overflow = 0;
  int64_t channel_dim = PyLong_AsLongLongAndOverflow(args[2], &overflow);
  const int64_t dims = x->dim();
  if (coeffs->size(0) == 1) {
    channel_dim = 0;
  } else if (overflow != 0 || channel_dim < -dims || channel_dim >= dims) {
    Py_RETURN_NONE;
  } else if (channel_dim < 0) {
    channel_dim += dims;
  }
  const double lo = PyFloat_AS_DOUBLE(args[3]), hi = PyFloat_AS_DOUBLE(args[4]);
  const bool odd = args[5] == Py_True, clamp = args[6] == Py_True;
  static const auto op =
      typed_op<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, double, double, bool,
                          bool)>("fastact::dct_activation");
  return call_or_none([&] { return op.call(*x, *coeffs, channel_dim, lo, hi, odd, clamp); });
}

PyMethodDef methods[] = {
    {"cpu_isa", cpu_isa, METH_NOARGS,
     "The instruction set the CPU kernels run with (\"avx512\", \"avx2\" or \"portable\")."},
    {"hat_call", hat_call, METH_O, "fastact::hat(x) through the dispatcher, or None."},
    {"dct_call", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(dct_call)),
     METH_FASTCALL,
     "fastact::dct_activation(x, coeffs, channel_dim, lo, hi, odd, clamp) through the "
     "dispatcher (channel_dim may be negative), or None."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};

}  // namespace

// Importing fastact._C runs the static TORCH_LIBRARY registrations of this library.
extern "C" PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }

TORCH_LIBRARY(fastact, m) { fastact::define_ops(m); }
