// Test driver for image decoding and preprocessing (driven by tests/test_native_image.py).
//
//   driver_image preprocess PARAMS.json INPUT OUT.f32     INPUT: an image file, or raw:W:H:FILE (RGB8)
//       writes float32 tiles [num_tiles, 3, h, w]; prints {"rows","cols","num_tiles","height","width"}
//   driver_image decode FILE OUT.rgb                      writes RGB8; prints {"width","height"}
//   driver_image bench FILE N                             decodes FILE (read once) N times; prints
//                                                         {"ms": [per-decode wall ms]}
//   driver_image resize raw:W:H:FILE OUT_W OUT_H FILTER OUT.rgb
//
// On an edgevlm::Error prints {"error": code, "message": ...} and exits 2.
#include <chrono>
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
    std::vector<double> ms;
    for (int i = 0, n = std::stoi(argv[3]); i < n; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      const edgevlm::Rgb8Image im = edgevlm::decode_image_memory(bytes.data(), bytes.size(), argv[2]);
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      if (im.pixels.empty()) return 1;
    }
    out = {{"ms", ms}};
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
    std::fprintf(stderr, "usage: driver_image preprocess PARAMS.json INPUT OUT | decode FILE OUT | bench FILE N | "
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
