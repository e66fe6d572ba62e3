// Test driver for safetensors and bundle loading (driven by tests/test_native_loading.py).
//
//   driver_safetensors list FILE.safetensors
//       {"tensors": [{"name", "dtype", "shape", "offset", "nbytes", "sha256"}...], "metadata": {...}}
//   driver_safetensors bundle DIR [--no-verify]
//       {"family", "tensors": N, "quantized", "layers": {path: {scheme, bits, group_size, ...}}, ...}
//   driver_safetensors sha256 FILE       {"sha256": hex}
//   driver_safetensors expect FILE NAME DTYPE DIM...   checks one tensor (-1: any size)
//
// On an edgevlm::Error prints {"error": code, "message": ...} and exits 2.
#include <cstdio>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/bundle.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "core/sha256.h"

namespace {

using nlohmann::json;

json list(const edgevlm::SafeTensors& st) {
  json tensors = json::array();
  for (const std::string& name : st.names()) {
    const edgevlm::TensorView& t = st.get(name);
    tensors.push_back({{"name", name}, {"dtype", edgevlm::dtype_name(t.dtype)}, {"shape", t.shape},
                       {"offset", t.offset}, {"nbytes", t.nbytes}, {"sha256", edgevlm::sha256_hex(t.data, t.nbytes)}});
  }
  return {{"tensors", tensors}, {"metadata", st.metadata()}};
}

int run(int argc, char** argv) {
  const std::string cmd = argc > 1 ? argv[1] : "";
  json out;
  if (cmd == "list" && argc == 3) {
    out = list(edgevlm::SafeTensors::open(argv[2]));
  } else if (cmd == "sha256" && argc == 3) {
    out = {{"sha256", edgevlm::sha256_file(argv[2])}};
  } else if (cmd == "expect" && argc >= 5) {
    const auto st = edgevlm::SafeTensors::open(argv[2]);
    std::vector<int64_t> shape;
    for (int i = 5; i < argc; ++i) shape.push_back(std::stoll(argv[i]));
    const auto& t = st.expect_raw(argv[3], edgevlm::dtype_from_name(argv[4]), shape);
    out = {{"name", t.name}, {"shape", t.shape}};
  } else if (cmd == "bundle" && (argc == 3 || (argc == 4 && std::string(argv[3]) == "--no-verify"))) {
    const auto b = edgevlm::Bundle::open(argv[2], argc == 3);
    json layers = json::object();
    for (const auto& [path, q] : b.quant_layers()) {
      layers[path] = {{"kind", q.kind}, {"scheme", q.scheme}, {"bits", q.bits}, {"group_size", q.group_size},
                      {"symmetric", q.symmetric}, {"shape", q.shape}, {"algorithm", q.algorithm}, {"outliers", q.outliers}};
    }
    out = {{"family", b.family()}, {"has_weights", b.has_weights()}, {"quantized", b.quantized()},
           {"layers", layers}, {"image_preprocessing", b.image_preprocessing() ? *b.image_preprocessing() : json()}};
    if (b.has_weights()) out["weights"] = list(b.weights());
  } else {
    std::fprintf(stderr, "usage: driver_safetensors list FILE | sha256 FILE | expect FILE NAME DTYPE DIM... | "
                         "bundle DIR [--no-verify]\n");
    return 64;
  }
  std::cout << out.dump() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const edgevlm::Error& e) {
    std::cout << json{{"error", int(e.code())}, {"message", e.what()}}.dump() << std::endl;
    return 2;
  } catch (const std::exception& e) {
    std::cout << json{{"error", -1}, {"message", e.what()}}.dump() << std::endl;
    return 3;
  }
}
