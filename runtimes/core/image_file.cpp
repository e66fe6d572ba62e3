// Image decoding with stb_image (see image_file.h).
#include "core/image_file.h"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <vector>

#include <stb/stb_image.h>

#include "core/error.h"
#include "core/image.h"

namespace edgevlm {
namespace {

struct StbFree {
  void operator()(unsigned char* p) const { stbi_image_free(p); }
};

// Alpha over an opaque white background, in the fixed point Pillow's alpha_composite uses
// (7 fractional bits, divide by 255 as ((v >> 8) + v) >> 8), so RGBA inputs match the Python loader.
uint8_t over_white(uint32_t c, uint32_t a) {
  constexpr uint32_t kBits = 7;
  const uint32_t coef1 = a * (1u << kBits);           // a * 255 * 255 * 2^7 / (255 * 255)
  const uint32_t coef2 = 255u * (1u << kBits) - coef1;
  const uint32_t v = c * coef1 + 255u * coef2 + (0x80u << kBits);
  return uint8_t((((v >> 8) + v) >> 8) >> kBits);
}

}  // namespace

Rgb8Image decode_image_memory(const uint8_t* data, size_t size, const std::string& name) {
  if (data == nullptr || size == 0) fail(ErrorCode::kInvalidArgument, name + ": empty image data");
  if (size > size_t(INT32_MAX)) fail(ErrorCode::kInvalidArgument, name + ": image data over 2 GiB");
  int w = 0, h = 0, comp = 0;
  if (!stbi_info_from_memory(data, int(size), &w, &h, &comp)) {
    fail(ErrorCode::kInvalidArgument, name + ": not a readable image (" + stbi_failure_reason() + ")");
  }
  if (w <= 0 || h <= 0) fail(ErrorCode::kInvalidArgument, name + ": empty image");
  if (int64_t(w) * h > kMaxImagePixels) {
    fail(ErrorCode::kInvalidArgument,
         name + ": image of " + std::to_string(w) + "x" + std::to_string(h) + " pixels is too large");
  }
  const bool alpha = comp == 2 || comp == 4;
  const int want = alpha ? 4 : 3;
  std::unique_ptr<unsigned char, StbFree> px(stbi_load_from_memory(data, int(size), &w, &h, &comp, want));
  if (!px) fail(ErrorCode::kInvalidArgument, name + ": not a readable image (" + stbi_failure_reason() + ")");
  Rgb8Image out{w, h, std::vector<uint8_t>(size_t(w) * h * 3)};
  const unsigned char* src = px.get();
  const size_t n = size_t(w) * h;
  if (!alpha) {
    std::copy_n(src, n * 3, out.pixels.data());
    return out;
  }
  for (size_t i = 0; i < n; ++i) {
    const uint32_t a = src[i * 4 + 3];
    for (int c = 0; c < 3; ++c) out.pixels[i * 3 + c] = over_white(src[i * 4 + c], a);
  }
  return out;
}

Rgb8Image decode_image_file(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) fail(ErrorCode::kIo, path + ": image file not found or not readable");
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, f.get())) > 0) {
    bytes.insert(bytes.end(), buf, buf + got);
    if (bytes.size() > size_t(INT32_MAX)) fail(ErrorCode::kInvalidArgument, path + ": image file over 2 GiB");
  }
  if (std::ferror(f.get())) fail(ErrorCode::kIo, path + ": read error");
  if (bytes.empty()) fail(ErrorCode::kInvalidArgument, path + ": empty file");
  return decode_image_memory(bytes.data(), bytes.size(), path);
}

}  // namespace edgevlm
