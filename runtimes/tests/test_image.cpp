// Image preprocessing without Python: geometry of the three kinds, resize invariants, and every
// bad input an Error(kInvalidArgument) rather than a crash. Parity with Python is in
// tests/test_native_image.py.
#include <cstring>
#include <functional>
#include <vector>

#include <nlohmann/json.hpp>

#include "check.h"
#include "core/error.h"
#include "core/image.h"
#include "core/image_file.h"

using edgevlm::ErrorCode;
using nlohmann::json;

namespace {

bool throws(ErrorCode code, const char* fragment, const std::function<void()>& fn) {
  try {
    fn();
  } catch (const edgevlm::Error& e) {
    if (e.code() == code && std::strstr(e.what(), fragment) != nullptr) return true;
    std::fprintf(stderr, "  got code %d: %s\n", int(e.code()), e.what());
    return false;
  }
  return false;
}

std::vector<uint8_t> gradient(int w, int h) {
  std::vector<uint8_t> px(size_t(w) * h * 3);
  for (size_t i = 0; i < px.size(); ++i) px[i] = uint8_t(i * 31 % 251);
  return px;
}

}  // namespace

int main() {
  const auto idefics = edgevlm::ImageParams::from_json(
      json{{"kind", "idefics3"}, {"image_size", 64}, {"longest_edge", 192}, {"resample", "lanczos"}});
  auto px = gradient(300, 200);
  auto t = edgevlm::preprocess_image(px.data(), px.size(), 300, 200, idefics);
  // 300x200 -> 192x128 -> grid 192x128: 2 rows x 3 cols + the global tile
  CHECK(t.rows == 2 && t.cols == 3 && t.num_tiles == 7 && t.height == 64 && t.width == 64);
  CHECK(t.pixels.size() == size_t(7) * 3 * 64 * 64);
  const auto grid = edgevlm::image_grid(300, 200, idefics);
  CHECK(grid[0] == 2 && grid[1] == 3);

  const auto clip = edgevlm::ImageParams::from_json(json{{"kind", "clip"}, {"image_size", 56}});
  t = edgevlm::preprocess_image(px.data(), px.size(), 300, 200, clip);
  CHECK(t.rows == 0 && t.num_tiles == 1 && t.height == 56 && t.width == 56);
  const auto pad = edgevlm::ImageParams::from_json(json{{"kind", "pad_square"}, {"image_size", 48}});
  CHECK(pad.pad_to_square);
  // a uniform image stays uniform through pad (with its own color as the mean), resize and crop
  std::vector<uint8_t> flat(size_t(30) * 10 * 3, 127);  // int(0.5 * 255): the pad color
  const auto flat_params = edgevlm::ImageParams::from_json(
      json{{"kind", "pad_square"}, {"image_size", 16}, {"mean", {0.5, 0.5, 0.5}}, {"std", {0.5, 0.5, 0.5}}});
  t = edgevlm::preprocess_image(flat.data(), flat.size(), 30, 10, flat_params);
  bool uniform = true;
  for (float v : t.pixels) uniform = uniform && std::fabs(v - (float(127.0 / 255.0) - 0.5f) / 0.5f) < 1e-6f;
  CHECK(uniform);
  // resize: identity is a copy, 1x1 works both ways
  const auto same = edgevlm::resize_rgb8(px.data(), 300, 200, 300, 200, edgevlm::Resample::kBicubic);
  CHECK(same.pixels == px);
  for (auto f : {edgevlm::Resample::kNearest, edgevlm::Resample::kBox, edgevlm::Resample::kBilinear,
                 edgevlm::Resample::kHamming, edgevlm::Resample::kBicubic, edgevlm::Resample::kLanczos}) {
    const auto one = edgevlm::resize_rgb8(px.data(), 300, 200, 1, 1, f);
    const auto big = edgevlm::resize_rgb8(one.pixels.data(), 1, 1, 7, 5, f);
    CHECK(one.pixels.size() == 3 && big.pixels.size() == size_t(7 * 5 * 3) && big.pixels[0] == one.pixels[0]);
  }

  // bad inputs
  CHECK(throws(ErrorCode::kInvalidArgument, "needs 180000 bytes, got 179999",
               [&] { edgevlm::preprocess_image(px.data(), px.size() - 1, 300, 200, clip); }));
  CHECK(throws(ErrorCode::kInvalidArgument, "must be positive", [&] { edgevlm::preprocess_image(px.data(), 0, 0, 200, clip); }));
  CHECK(throws(ErrorCode::kInvalidArgument, "must be positive", [&] { edgevlm::preprocess_image(px.data(), 0, 5, -1, clip); }));
  CHECK(throws(ErrorCode::kInvalidArgument, "too large",
               [&] { edgevlm::preprocess_image(px.data(), px.size(), 1 << 30, 1 << 30, clip); }));
  CHECK(throws(ErrorCode::kInvalidArgument, "null", [&] { edgevlm::preprocess_image(nullptr, 3, 1, 1, clip); }));
  CHECK(throws(ErrorCode::kInvalidArgument, "sizes must be positive",
               [&] { edgevlm::resize_rgb8(px.data(), 300, 200, 0, 5, edgevlm::Resample::kLanczos); }));
  CHECK(throws(ErrorCode::kInvalidArgument, "image_size", [] { edgevlm::ImageParams::from_json(json{{"kind", "clip"}}); }));
  CHECK(throws(ErrorCode::kUnsupported, "unknown kind", [] {
    edgevlm::ImageParams::from_json(json{{"kind", "x"}, {"image_size", 3}});
  }));
  CHECK(throws(ErrorCode::kInvalidArgument, "resample", [] {
    edgevlm::ImageParams::from_json(json{{"kind", "clip"}, {"image_size", 3}, {"resample", 9}});
  }));
  const uint8_t junk[] = {0xff, 0xd8, 0xff, 0xe0, 0, 0x10, 'J', 'F', 'I', 'F', 0, 1, 2};
  CHECK(throws(ErrorCode::kInvalidArgument, "not a readable image", [&] { edgevlm::decode_image_memory(junk, sizeof junk); }));
  CHECK(throws(ErrorCode::kInvalidArgument, "empty", [&] { edgevlm::decode_image_memory(junk, 0); }));
  CHECK(throws(ErrorCode::kIo, "not found", [] { edgevlm::decode_image_file("/nonexistent/x.png"); }));
  // every prefix of a tiny valid BMP decodes or fails cleanly
  std::vector<uint8_t> bmp = {'B', 'M', 70, 0, 0, 0, 0, 0, 0, 0, 54, 0, 0, 0, 40, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0,
                              1, 0, 24, 0, 0, 0, 0, 0, 16, 0, 0, 0, 0x13, 0x0b, 0, 0, 0x13, 0x0b, 0, 0, 0, 0, 0, 0,
                              0, 0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 0, 0, 255, 255, 255, 255, 0, 0};
  const auto im = edgevlm::decode_image_memory(bmp.data(), bmp.size());
  CHECK(im.width == 2 && im.height == 2);
  for (size_t n = 1; n < bmp.size(); ++n) {
    try {
      edgevlm::decode_image_memory(bmp.data(), n);
    } catch (const edgevlm::Error& e) {
      CHECK(e.code() == ErrorCode::kInvalidArgument);
    }
  }
  return edgevlm_test::finish("test_image");
}
