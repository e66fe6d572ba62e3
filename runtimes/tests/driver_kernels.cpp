// Runs one quantized linear layer through the CPU kernels, for tests/test_native_kernels.py.
//   driver_kernels DIR
// DIR/meta.txt holds "key value" lines: weight (int4|int8), O, K (padded), K_in, M, group,
// asym (0|1), fp16 (0|1), act (none|token|group32), bias (0|1). Raw little-endian inputs:
// qdata.bin (int4: uint8 [O, K/2]; int8: int8 [O, K]), scales.bin (float32 or fp16 [O, G]),
// zeros.bin (uint8 [O, G], asym), x.bin (float32 [M, K_in]), bias.bin (float32 [O]).
// Writes y.bin (float32 [M, O]) and, for quantized activations, act_codes.bin (int16 [M, K]: the
// integer q - zp the dot products see) and act_scales.bin (float32 [M] or [M, K/32]).
// The kernel set is the one EDGEVLM_KERNELS selects. Errors go to stderr with exit code 1.
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "engines/cpu/kernels.h"
#include "engines/cpu/threadpool.h"

using namespace edgevlm::cpu;

namespace {

template <class T>
std::vector<T> read_raw(const std::string& path, size_t n) {
  std::ifstream f(path, std::ios::binary);
  std::vector<T> v(n);
  if (!f.read(reinterpret_cast<char*>(v.data()), std::streamsize(n * sizeof(T))))
    edgevlm::fail(edgevlm::ErrorCode::kIo, "cannot read " + std::to_string(n * sizeof(T)) + " bytes from " + path);
  return v;
}

template <class T>
void write_raw(const std::string& path, const std::vector<T>& v) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * sizeof(T)));
  if (!f) edgevlm::fail(edgevlm::ErrorCode::kIo, "cannot write " + path);
}

int run(const std::string& dir) {
  std::map<std::string, std::string> meta;
  std::ifstream mf(dir + "/meta.txt");
  for (std::string line; std::getline(mf, line);) {
    std::istringstream ls(line);
    std::string k, v;
    if (ls >> k >> v) meta[k] = v;
  }
  auto num = [&](const char* k) {
    if (!meta.count(k)) edgevlm::fail(edgevlm::ErrorCode::kInvalidArgument, std::string("meta.txt lacks ") + k);
    return std::stoi(meta[k]);
  };
  const bool int4 = meta["weight"] == "int4";
  const int O = num("O"), K = num("K"), K_in = num("K_in"), M = num("M");
  const int group = int4 ? num("group") : K, G = K / group;
  const bool asym = num("asym") != 0, fp16 = num("fp16") != 0, has_bias = num("bias") != 0;
  const std::string act = meta["act"];
  const size_t ns = size_t(O) * G;
  std::vector<float> s32;
  std::vector<uint16_t> s16;
  if (fp16)
    s16 = read_raw<uint16_t>(dir + "/scales.bin", ns);
  else
    s32 = read_raw<float>(dir + "/scales.bin", ns);
  const void* sp = fp16 ? static_cast<const void*>(s16.data()) : s32.data();
  const std::vector<float> x = read_raw<float>(dir + "/x.bin", size_t(M) * K_in);
  const std::vector<float> bias = has_bias ? read_raw<float>(dir + "/bias.bin", size_t(O)) : std::vector<float>();
  const float* bp = has_bias ? bias.data() : nullptr;
  const Kernels& k = kernels();
  ThreadPool pool(2);
  std::vector<float> y(size_t(M) * O);
  QuantizedActs a;
  if (int4) {
    const auto q = read_raw<uint8_t>(dir + "/qdata.bin", size_t(O) * K / 2);
    const auto z = asym ? read_raw<uint8_t>(dir + "/zeros.bin", ns) : std::vector<uint8_t>();
    const PackedQ4 w = pack_q4(q.data(), O, K, group, sp, fp16, asym ? z.data() : nullptr);
    if (act == "none") {
      linear_q4_f32(k, &pool, x.data(), K_in, M, K_in, w, bp, y.data(), O);
    } else {
      quantize_acts(k, &pool, act == "token" ? ActQuant::token : ActQuant::block32, x.data(), K_in, M, K_in, K, a);
      linear_q4(k, &pool, a, w, bp, y.data(), O);
    }
  } else {
    const auto q = read_raw<int8_t>(dir + "/qdata.bin", size_t(O) * K);
    const PackedQ8 w = pack_q8(q.data(), O, K, sp, fp16);
    if (act == "none") {
      linear_q8_f32(k, &pool, x.data(), K_in, M, K_in, w, bp, y.data(), O);
    } else {
      quantize_acts(k, &pool, ActQuant::token, x.data(), K_in, M, K_in, w.K, a);
      linear_q8(k, &pool, a, w, bp, y.data(), O);
    }
  }
  write_raw(dir + "/y.bin", y);
  if (act != "none") {
    std::vector<int16_t> codes(size_t(a.M) * a.K);
    for (int m = 0; m < a.M; ++m)
      for (int i = 0; i < a.K; ++i) codes[size_t(m) * a.K + i] = int16_t(int(a.codes[size_t(m) * a.K + i]) - a.zero[m]);
    write_raw(dir + "/act_codes.bin", codes);
    write_raw(dir + "/act_scales.bin", a.scales);
  }
  std::printf("{\"kernels\": \"%s\", \"act_K\": %d}\n", k.name, a.K);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: driver_kernels DIR\n");
    return 2;
  }
  try {
    return run(argv[1]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
