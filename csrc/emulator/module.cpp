// fastact._C_emulated: the CUDA kernels of csrc/cuda run by the SIMT emulator (simt.h) on CPU
// tensors, as torch.ops.fastact_emulated (the schemas of torch.ops.fastact). The module's
// functions choose the schedule the threads of a block run in between barriers.
#include <Python.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "emulator/simt.h"
#include "schemas.h"

namespace {

using fastact::simt::Schedule;

bool parse_schedule(const char* name, Schedule* schedule) {
  for (Schedule s : {Schedule::forward, Schedule::reverse, Schedule::shuffled}) {
    if (std::strcmp(name, fastact::simt::schedule_name(s)) == 0) {
      *schedule = s;
      return true;
    }
  }
  return false;
}

PyObject* set_schedule(PyObject*, PyObject* args) {
  const char* name;
  unsigned long long seed = 0;
  if (!PyArg_ParseTuple(args, "s|K", &name, &seed)) return nullptr;
  Schedule schedule;
  if (!parse_schedule(name, &schedule)) {
    PyErr_Format(PyExc_ValueError,
                 "fastact._C_emulated.set_schedule: unknown schedule '%s'; expected "
                 "'forward', 'reverse' or 'shuffled'",
                 name);
    return nullptr;
  }
  fastact::simt::set_schedule(schedule, seed);
  Py_RETURN_NONE;
}

PyObject* schedule(PyObject*, PyObject*) {
  return Py_BuildValue("(sK)", fastact::simt::schedule_name(fastact::simt::current_schedule()),
                       static_cast<unsigned long long>(fastact::simt::current_seed()));
}

PyMethodDef methods[] = {
    {"set_schedule", set_schedule, METH_VARARGS,
     "set_schedule(name, seed=0): the order of a block's threads between barriers, "
     "'forward', 'reverse' or 'shuffled' (drawn from seed, the launch and the block)."},
    {"schedule", schedule, METH_NOARGS, "The schedule in force: (name, seed)."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C_emulated", nullptr, -1, methods};

}  // namespace

// FASTACT_SIMT_SCHEDULE=name[:seed] chooses the schedule at import (default: shuffled, seed 0).
extern "C" PyMODINIT_FUNC PyInit__C_emulated(void) {
  if (const char* env = std::getenv("FASTACT_SIMT_SCHEDULE"); env != nullptr && *env) {
    const std::string value(env);
    const size_t colon = value.find(':');
    Schedule schedule;
    if (!parse_schedule(value.substr(0, colon).c_str(), &schedule)) {
      PyErr_Format(PyExc_ValueError,
                   "FASTACT_SIMT_SCHEDULE=%s: expected forward, reverse or shuffled, "
                   "optionally with :seed",
                   env);
      return nullptr;
    }
    const uint64_t seed =
        colon == std::string::npos ? 0 : std::strtoull(value.c_str() + colon + 1, nullptr, 10);
    fastact::simt::set_schedule(schedule, seed);
  }
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(fastact_emulated, m) { fastact::define_ops(m); }
