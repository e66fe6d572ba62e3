// Test driver for image decoding and preprocessing (driven by tests/test_native_image.py).
//
//   driver_image preprocess PARAMS.json INPUT OUT.f32     INPUT: an image file, or raw:W:H:FILE (RGB8)
//       writes float32 tiles [num_tiles, 3, h, w]; prints {"rows","cols","num_tiles","height","width"}
//   driver_image decode FILE OUT.rgb                      writes RGB8; prints {"width","height"}
//   driver_image bench FILE N                             decodes FILE (read once) N times; prints
//                                                         {"ms": [wall ms], "cpu_ms": [thread CPU ms]}
//   driver_image resize raw:W:H:FILE OUT_W OUT_H FILTER OUT.rgb
//   driver_image mutate FILE N SEED                       decodes N corrupted copies of FILE (truncated,
//                                                         bytes overwritten or flipped; N = "prefixes":
//                                                         every truncation); prints {"images","errors",
//                                                         "unexpected": [messages of non-Error exceptions]}
//
// On an edgevlm::Error prints {"error": code, "message": ...} and exits 2.
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/image.h"
#include "core/image_file.h"

namespace {

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) edgevlm::fail(edgevlm::ErrorCode::kIo, path + ": cannot open");
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& path, const void* data, size_t n) {
  std::ofstream f(path, std::ios::binary);
  f.write(static_cast<const char*>(data), std::streamsize(n));
  if (!f) edgevlm::fail(edgevlm::ErrorCode::kIo, path + ": cannot write");
}

// "raw:W:H:FILE" -> the raw buffer, unchecked (the library checks its size); else a decoded file.
struct Input {
  std::vector<uint8_t> bytes;
  int width = 0, height = 0;
};

Input load_input(const std::string& spec) {
  Input in;
  if (spec.rfind("raw:", 0) == 0) {
    const size_t a = spec.find(':', 4), b = spec.find(':', a + 1);
    in.width = std::stoi(spec.substr(4, a - 4));
    in.height = std::stoi(spec.substr(a + 1, b - a - 1));
    in.bytes = read_file(spec.substr(b + 1));
    return in;
  }
  edgevlm::Rgb8Image im = edgevlm::decode_image_file(spec);
  in.width = im.width, in.height = im.height, in.bytes = std::move(im.pixels);
  return in;
}

// splitmix64: a small deterministic generator for the mutations.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return n ? size_t(next() % n) : 0; }
};

std::vector<uint8_t> mutated(const std::vector<uint8_t>& in, Rng& rng) {
  std::vector<uint8_t> m = in;
  switch (rng.below(4)) {
    case 0:  // truncated
      m.resize(rng.below(in.size()));
      break;
    case 1:  // a few bytes replaced by random ones
      for (size_t k = 0, n = 1 + rng.below(4); k < n && !m.empty(); ++k) m[rng.below(m.size())] = uint8_t(rng.next());
      break;
    case 2:  // one bit flipped, biased to the headers at the start
      if (!m.empty()) m[rng.below(rng.below(2) ? std::min<size_t>(m.size(), 512) : m.size())] ^= uint8_t(1u << rng.below(8));
      break;
    default: {  // a run of 0x00 or 0xFF bytes
      const size_t at = rng.below(m.size()), len = 1 + rng.below(16);
      const uint8_t v = rng.below(2) ? 0xFF : 0x00;
      for (size_t i = at; i < m.size() && i < at + len; ++i) m[i] = v;
    }
  }
  return m;
}

nlohmann::json mutate(const std::string& path, const std::string& count, uint64_t seed) {
  const std::vector<uint8_t> bytes = read_file(path);
  Rng rng{seed};
  int images = 0, errors = 0;
  nlohmann::json unexpected = nlohmann::json::array();
  const bool prefixes = count == "prefixes";
  const size_t n = prefixes ? bytes.size() : size_t(std::stoul(count));
  for (size_t i = 0; i < n; ++i) {
    const std::vector<uint8_t> m = prefixes ? std::vector<uint8_t>(bytes.begin(), bytes.begin() + long(i)) : mutated(bytes, rng);
    try {
      const edgevlm::Rgb8Image im = edgevlm::decode_image_memory(m.data(), m.size(), "mutant");
      if (im.pixels.size() != size_t(im.width) * size_t(im.height) * 3) unexpected.push_back("wrong pixel count");
      ++images;
    } catch (const edgevlm::Error& e) {
      if (e.code() != edgevlm::ErrorCode::kInvalidArgument) unexpected.push_back(e.what());
      ++errors;
    } catch (const std::exception& e) {
      unexpected.push_back(e.what());
    }
  }
  return {{"images", images}, {"errors", errors}, {"unexpected", unexpected}};
}

int run(int argc, char** argv) {
  const std::string cmd = argc > 1 ? argv[1] : "";
  nlohmann::json out;
  if (cmd == "preprocess" && argc == 5) {
    std::ifstream pf(argv[2]);
    const auto params = edgevlm::ImageParams::from_json(nlohmann::json::parse(pf));
    const Input in = load_input(argv[3]);
    const edgevlm::ImageTiles t = edgevlm::preprocess_image(in.bytes.data(), in.bytes.size(), in.width, in.height, params);
    const auto grid = edgevlm::image_grid(in.width, in.height, params);
    write_file(argv[4], t.pixels.data(), t.pixels.size() * sizeof(float));
    out = {{"rows", t.rows}, {"cols", t.cols}, {"num_tiles", t.num_tiles}, {"height", t.height},
           {"width", t.width}, {"grid", {grid[0], grid[1]}}};
  } else if (cmd == "decode" && argc == 4) {
    const edgevlm::Rgb8Image im = edgevlm::decode_image_file(argv[2]);
    write_file(argv[3], im.pixels.data(), im.pixels.size());
    out = {{"width", im.width}, {"height", im.height}};
  } else if (cmd == "bench" && argc == 4) {
    const std::vector<uint8_t> bytes = read_file(argv[2]);
    std::vector<double> ms, cpu_ms;
    const auto thread_cpu_ms = [] {
      timespec t{};
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
      return double(t.tv_sec) * 1e3 + double(t.tv_nsec) * 1e-6;
    };
    for (int i = 0, n = std::stoi(argv[3]); i < n; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      const double c0 = thread_cpu_ms();
      const edgevlm::Rgb8Image im = edgevlm::decode_image_memory(bytes.data(), bytes.size(), argv[2]);
      cpu_ms.push_back(thread_cpu_ms() - c0);
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      if (im.pixels.empty()) return 1;
    }
    out = {{"ms", ms}, {"cpu_ms", cpu_ms}};
  } else if (cmd == "mutate" && argc == 5) {
    out = mutate(argv[2], argv[3], std::stoull(argv[4]));
  } else if (cmd == "resize" && argc == 7) {
    const Input in = load_input(argv[2]);
    if (in.bytes.size() != size_t(in.width) * in.height * 3) {
      edgevlm::fail(edgevlm::ErrorCode::kInvalidArgument, "resize: raw buffer of the wrong size");
    }
    const auto im = edgevlm::resize_rgb8(in.bytes.data(), in.width, in.height, std::stoi(argv[3]),
                                         std::stoi(argv[4]), edgevlm::resample_from_name(argv[5]));
    write_file(argv[6], im.pixels.data(), im.pixels.size());
    out = {{"width", im.width}, {"height", im.height}};
  } else {
    std::fprintf(stderr, "usage: driver_image preprocess PARAMS.json INPUT OUT | decode FILE OUT | bench FILE N | mutate FILE N SEED | "
                         "resize raw:W:H:FILE OUT_W OUT_H FILTER OUT\n");
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
    std::cout << nlohmann::json{{"error", int(e.code())}, {"message", e.what()}}.dump() << std::endl;
    return 2;
  } catch (const std::exception& e) {
    std::cout << nlohmann::json{{"error", -1}, {"message", e.what()}}.dump() << std::endl;
    return 3;
  }
}
