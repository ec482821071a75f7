// Makes the compiled library importable as the Python module `pointmae._C`. Importing it loads the
// shared object, which runs the static op registrations (TORCH_LIBRARY in pointmae.cpp and
// TORCH_LIBRARY_IMPL in every kernel file). It defines no Python functions of its own: the ops are
// reached through torch.ops.pointmae.* (see pointmae/ops/). The CMake build for C++ users leaves this
// file out, since libtorch-only programs have no Python.
#include <Python.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
