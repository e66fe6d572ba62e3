// edgevlm._native: the Python binding of the C++ runtime.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "edgevlm/contract.h"

namespace py = pybind11;

namespace {

// Every constant of contract.h by name, in the same shape as edgevlm.contract.as_dict().
py::dict contract_dict() {
  using namespace edgevlm::contract;
  py::dict d;
#define EDGEVLM_PUT_SCALAR(name, value) d[#name] = name;
#define EDGEVLM_PUT_LIST(name, ...) \
  d[#name] = std::vector<std::string>(std::begin(name), std::end(name));
  EDGEVLM_CONTRACT_INTS(EDGEVLM_PUT_SCALAR)
  EDGEVLM_CONTRACT_STRINGS(EDGEVLM_PUT_SCALAR)
  EDGEVLM_CONTRACT_LISTS(EDGEVLM_PUT_LIST)
#undef EDGEVLM_PUT_SCALAR
#undef EDGEVLM_PUT_LIST
  return d;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "edgevlm C++ runtime binding";
  m.def("contract", &contract_dict, "Every bundle-contract constant of the C++ header, by name.");
}
