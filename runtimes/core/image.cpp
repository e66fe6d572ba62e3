// Image preprocessing (see image.h). The geometry mirrors edgevlm/models/smolvlm/processing.py
// (longest_edge_size, grid_size, split_grid) and edgevlm/models/clip/processing.py; resizing is
// resample.h; normalization mirrors edgevlm/processing/image.py normalize().
#include "core/image.h"

#include <algorithm>
#include <cmath>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "edgevlm/contract.h"

namespace edgevlm {
namespace {

namespace C = contract;
using nlohmann::json;

constexpr int kIdefics3MaxSide = 4096;  // Idefics3's absolute maximum side after the first resize
constexpr int kMaxParamSide = 8192;
const std::array<float, 3> kClipMean{0.48145466f, 0.4578275f, 0.40821073f};
const std::array<float, 3> kClipStd{0.26862954f, 0.26130258f, 0.27577711f};

[[noreturn]] void bad(const std::string& what) { fail(ErrorCode::kInvalidArgument, "image_preprocessing: " + what); }

int side_value(const json& v, const char* key) {
  if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > kMaxParamSide) {
    bad(std::string(key) + " must be an integer in [1, " + std::to_string(kMaxParamSide) + "], got " + v.dump());
  }
  return v.get<int>();
}

// int or [h, w] -> {h, w}
std::array<int, 2> hw_value(const json& v, const char* key) {
  if (v.is_array()) {
    if (v.size() != 2) bad(std::string(key) + " must be an int or [height, width], got " + v.dump());
    return {side_value(v[0], key), side_value(v[1], key)};
  }
  const int s = side_value(v, key);
  return {s, s};
}

std::array<float, 3> triple(const json& v, const char* key) {
  if (!v.is_array() || v.size() != 3) bad(std::string(key) + " must be a list of 3 numbers, got " + v.dump());
  std::array<float, 3> out{};
  for (int i = 0; i < 3; ++i) {
    if (!v[i].is_number()) bad(std::string(key) + " must be a list of 3 numbers, got " + v.dump());
    out[i] = float(v[i].get<double>());
  }
  return out;
}

bool flag(const json& j, const char* key, bool fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_boolean()) bad(std::string(key) + " must be true or false, got " + j[key].dump());
  return j[key].get<bool>();
}

void check_dims(size_t size, int width, int height) {
  if (width <= 0 || height <= 0) {
    fail(ErrorCode::kInvalidArgument,
         "image: width and height must be positive, got " + std::to_string(width) + "x" + std::to_string(height));
  }
  if (width > kMaxImageSide || height > kMaxImageSide || int64_t(width) * height > kMaxImagePixels) {
    fail(ErrorCode::kInvalidArgument, "image: " + std::to_string(width) + "x" + std::to_string(height) +
                                          " is too large (at most " + std::to_string(kMaxImageSide) +
                                          " per side and " + std::to_string(kMaxImagePixels) + " pixels)");
  }
  const size_t want = size_t(width) * size_t(height) * 3;
  if (size != want) {
    fail(ErrorCode::kInvalidArgument, "image: an RGB8 buffer of " + std::to_string(width) + "x" +
                                          std::to_string(height) + " needs " + std::to_string(want) +
                                          " bytes, got " + std::to_string(size));
  }
}

// Idefics3: size with the longest edge at `longest` (the other truncated, then rounded up to even),
// capped at kIdefics3MaxSide. Returns {height, width}.
std::array<int, 2> longest_edge_size(int height, int width, int longest) {
  double aspect = double(width) / height;
  if (width >= height) {
    width = longest;
    height = int(longest / aspect);
    height += height % 2;
  } else {
    height = longest;
    width = int(longest * aspect);
    width += width % 2;
  }
  height = std::max(height, 1);
  width = std::max(width, 1);
  aspect = double(width) / height;
  if (width >= height && width > kIdefics3MaxSide) {
    width = kIdefics3MaxSide;
    height = int(kIdefics3MaxSide / aspect);
  } else if (height > width && height > kIdefics3MaxSide) {
    height = kIdefics3MaxSide;
    width = int(kIdefics3MaxSide * aspect);
  }
  return {std::max(height, 1), std::max(width, 1)};
}

int ceil_to(int v, int tile) { return (v + tile - 1) / tile * tile; }

// Idefics3: size rounded up to multiples of the tile, the longer side first. Returns {height, width}.
std::array<int, 2> grid_size(int height, int width, int tile) {
  const double aspect = double(width) / height;
  if (width >= height) {
    width = ceil_to(width, tile);
    height = ceil_to(int(width / aspect), tile);
  } else {
    height = ceil_to(height, tile);
    width = ceil_to(int(height * aspect), tile);
  }
  return {std::max(height, tile), std::max(width, tile)};
}

// CLIP: the resize target {height, width} before the crop.
std::array<int, 2> clip_resize_size(int height, int width, const ImageParams& p) {
  if (p.shortest_edge <= 0) return {p.resize_height, p.resize_width};
  const bool portrait = width <= height;
  const int64_t shorter = portrait ? width : height, longer = portrait ? height : width;
  const int new_long = int(double(int64_t(p.shortest_edge) * longer) / double(shorter));
  const int new_short = p.shortest_edge;
  return portrait ? std::array<int, 2>{new_long, new_short} : std::array<int, 2>{new_short, new_long};
}

// Center crop to height x width; zero-pads (centred, the extra pixel after) where the image is smaller.
Rgb8Image center_crop(const Rgb8Image& im, int height, int width) {
  const int ph = std::max(im.height, height), pw = std::max(im.width, width);
  const int pad_top = (ph - im.height + 1) / 2, pad_left = (pw - im.width + 1) / 2;
  const int top = (ph - height) / 2, left = (pw - width) / 2;
  Rgb8Image out{width, height, std::vector<uint8_t>(size_t(width) * height * 3, 0)};
  for (int y = 0; y < height; ++y) {
    const int sy = y + top - pad_top;
    if (sy < 0 || sy >= im.height) continue;
    for (int x = 0; x < width; ++x) {
      const int sx = x + left - pad_left;
      if (sx < 0 || sx >= im.width) continue;
      const uint8_t* s = &im.pixels[(size_t(sy) * im.width + sx) * 3];
      uint8_t* d = &out.pixels[(size_t(y) * width + x) * 3];
      d[0] = s[0], d[1] = s[1], d[2] = s[2];
    }
  }
  return out;
}

// Pad to a centred square of side max(h, w) filled with `fill`.
Rgb8Image expand_to_square(const Rgb8Image& im, const std::array<uint8_t, 3>& fill) {
  if (im.width == im.height) return im;
  const int side = std::max(im.width, im.height);
  const int top = (side - im.height) / 2, left = (side - im.width) / 2;
  Rgb8Image out{side, side, std::vector<uint8_t>(size_t(side) * side * 3)};
  for (size_t i = 0; i < out.pixels.size(); i += 3) {
    out.pixels[i] = fill[0], out.pixels[i + 1] = fill[1], out.pixels[i + 2] = fill[2];
  }
  for (int y = 0; y < im.height; ++y) {
    std::copy_n(&im.pixels[size_t(y) * im.width * 3], size_t(im.width) * 3,
                &out.pixels[(size_t(y + top) * side + left) * 3]);
  }
  return out;
}

// Append the [3, h, w] float tile of rows [y0, y0 + h) x cols [x0, x0 + w) of `im`:
// float32(x * rescale) computed in double, then (x - mean) / std in float32 (as numpy does).
void append_tile(const Rgb8Image& im, int y0, int x0, int h, int w, const ImageParams& p, std::vector<float>& out) {
  float lut[3][256];
  for (int c = 0; c < 3; ++c) {
    for (int v = 0; v < 256; ++v) {
      const float x = float(double(v) * p.rescale_factor);
      lut[c][v] = (x - p.mean[c]) / p.std[c];
    }
  }
  const size_t base = out.size();
  out.resize(base + size_t(3) * h * w);
  for (int c = 0; c < 3; ++c) {
    float* dst = &out[base + size_t(c) * h * w];
    for (int y = 0; y < h; ++y) {
      const uint8_t* src = &im.pixels[(size_t(y0 + y) * im.width + x0) * 3 + c];
      for (int x = 0; x < w; ++x) dst[size_t(y) * w + x] = lut[c][src[size_t(x) * 3]];
    }
  }
}

ImageTiles preprocess_idefics3(Rgb8Image im, const ImageParams& p) {
  const int s = p.tile_height;
  ImageTiles t;
  t.height = t.width = s;
  if (p.do_resize) {
    const auto hw = longest_edge_size(im.height, im.width, p.longest_edge);
    im = resize_rgb8(im, hw[1], hw[0], p.resample);
  }
  if (!p.do_image_splitting) {
    im = resize_rgb8(im, s, s, p.resample);
    append_tile(im, 0, 0, s, s, p, t.pixels);
    t.num_tiles = 1;
    return t;
  }
  const auto hw = grid_size(im.height, im.width, s);
  im = resize_rgb8(im, hw[1], hw[0], p.resample);
  if (im.height > s || im.width > s) {
    t.rows = im.height / s;
    t.cols = im.width / s;
    t.pixels.reserve(size_t(t.rows * t.cols + 1) * 3 * s * s);
    for (int r = 0; r < t.rows; ++r) {
      for (int c = 0; c < t.cols; ++c) append_tile(im, r * s, c * s, s, s, p, t.pixels);
    }
    const Rgb8Image global = resize_rgb8(im, s, s, p.resample);
    append_tile(global, 0, 0, s, s, p, t.pixels);
    t.num_tiles = t.rows * t.cols + 1;
  } else {
    append_tile(im, 0, 0, s, s, p, t.pixels);
    t.num_tiles = 1;
  }
  return t;
}

ImageTiles preprocess_clip(Rgb8Image im, const ImageParams& p) {
  if (p.pad_to_square) {
    std::array<uint8_t, 3> fill{};
    for (int c = 0; c < 3; ++c) {
      const int v = int(double(p.mean[c]) * 255);  // truncation, as int(m * 255)
      fill[c] = uint8_t(std::clamp(v, 0, 255));
    }
    im = expand_to_square(im, fill);
  }
  if (p.do_resize) {
    const auto hw = clip_resize_size(im.height, im.width, p);
    if (hw[0] < 1 || hw[1] < 1) {
      fail(ErrorCode::kInvalidArgument, "image: " + std::to_string(im.width) + "x" + std::to_string(im.height) +
                                            " is too elongated to resize its shortest edge to " +
                                            std::to_string(p.shortest_edge));
    }
    im = resize_rgb8(im, hw[1], hw[0], p.resample);
  }
  if (p.do_center_crop) im = center_crop(im, p.tile_height, p.tile_width);
  ImageTiles t;
  t.height = im.height;
  t.width = im.width;
  t.num_tiles = 1;
  append_tile(im, 0, 0, im.height, im.width, p, t.pixels);
  return t;
}

}  // namespace

ImageParams ImageParams::from_json(const json& j) {
  if (!j.is_object()) bad("expected a JSON object, got " + std::string(j.type_name()));
  ImageParams p;
  if (!j.contains(C::IMAGE_KIND) || !j[C::IMAGE_KIND].is_string()) bad(std::string("missing string key '") + C::IMAGE_KIND + "'");
  const std::string kind = j[C::IMAGE_KIND].get<std::string>();
  if (kind == "idefics3" || kind == "smolvlm") {
    p.kind = ImageKind::kIdefics3;
  } else if (kind == "clip" || kind == "llava") {
    p.kind = ImageKind::kClip;
  } else if (kind == "pad_square" || kind == "mobilevlm") {
    p.kind = ImageKind::kPadSquare;
    p.pad_to_square = true;
  } else {
    fail(ErrorCode::kUnsupported, "image_preprocessing: unknown kind '" + kind + "' (known: idefics3, clip, pad_square)");
  }
  const bool idefics = p.kind == ImageKind::kIdefics3;
  if (!idefics) p.mean = kClipMean, p.std = kClipStd;
  p.resample = idefics ? Resample::kLanczos : Resample::kBicubic;

  const char* size_key = (!idefics && j.contains("crop_size")) ? "crop_size" : C::IMAGE_SIZE;
  if (!j.contains(size_key)) bad(std::string("missing key '") + C::IMAGE_SIZE + "'");
  const auto size = hw_value(j[size_key], size_key);
  p.tile_height = size[0];
  p.tile_width = size[1];
  if (idefics && p.tile_height != p.tile_width) bad("idefics3 tiles must be square, got " + j[size_key].dump());

  if (j.contains(C::IMAGE_MEAN)) p.mean = triple(j[C::IMAGE_MEAN], C::IMAGE_MEAN);
  if (j.contains(C::IMAGE_STD)) p.std = triple(j[C::IMAGE_STD], C::IMAGE_STD);
  for (float s : p.std) {
    if (!(std::fabs(s) > 0.0f) || !std::isfinite(s)) bad("std must be finite and non-zero, got " + j[C::IMAGE_STD].dump());
  }
  if (j.contains(C::IMAGE_RESAMPLE) && !j[C::IMAGE_RESAMPLE].is_null()) {
    const json& r = j[C::IMAGE_RESAMPLE];
    if (r.is_string()) {
      p.resample = resample_from_name(r.get<std::string>());
    } else if (r.is_number_integer()) {
      p.resample = resample_from_hf_id(r.get<int>());
    } else {
      bad("resample must be a filter name or id, got " + r.dump());
    }
  }
  if (j.contains("rescale_factor") && !j["rescale_factor"].is_null()) {
    if (!j["rescale_factor"].is_number()) bad("rescale_factor must be a number");
    p.rescale_factor = j["rescale_factor"].get<double>();
  }
  p.do_resize = flag(j, "do_resize", true);
  p.do_image_splitting = flag(j, C::IMAGE_SPLIT, true);
  p.longest_edge = 4 * p.tile_height;
  if (j.contains(C::IMAGE_LONGEST_EDGE) && !j[C::IMAGE_LONGEST_EDGE].is_null()) {
    p.longest_edge = side_value(j[C::IMAGE_LONGEST_EDGE], C::IMAGE_LONGEST_EDGE);
  }
  if (j.contains(C::IMAGE_TOKENS_PER_TILE) && j[C::IMAGE_TOKENS_PER_TILE].is_number_integer()) {
    p.tokens_per_tile = j[C::IMAGE_TOKENS_PER_TILE].get<int>();
  }
  p.shortest_edge = std::min(p.tile_height, p.tile_width);
  if (j.contains("resize_size") && !j["resize_size"].is_null()) {
    const auto rs = hw_value(j["resize_size"], "resize_size");
    p.shortest_edge = 0;
    p.resize_height = rs[0];
    p.resize_width = rs[1];
  } else if (j.contains("shortest_edge") && !j["shortest_edge"].is_null()) {
    p.shortest_edge = side_value(j["shortest_edge"], "shortest_edge");
  }
  p.do_center_crop = flag(j, "do_center_crop", true);
  p.pad_to_square = flag(j, "pad_to_square", p.pad_to_square);
  return p;
}

std::array<int, 2> image_grid(int width, int height, const ImageParams& p) {
  check_dims(size_t(width > 0 ? width : 0) * size_t(height > 0 ? height : 0) * 3, width, height);
  if (p.kind != ImageKind::kIdefics3 || !p.do_image_splitting) return {0, 0};
  if (p.do_resize) {
    const auto hw = longest_edge_size(height, width, p.longest_edge);
    height = hw[0], width = hw[1];
  }
  const int s = p.tile_height;
  const auto g = grid_size(height, width, s);
  return (g[0] > s || g[1] > s) ? std::array<int, 2>{g[0] / s, g[1] / s} : std::array<int, 2>{0, 0};
}

ImageTiles preprocess_image(const uint8_t* rgb, size_t size, int width, int height, const ImageParams& params) {
  if (rgb == nullptr) fail(ErrorCode::kInvalidArgument, "image: null pixel buffer");
  check_dims(size, width, height);
  if (params.tile_height < 1 || params.tile_width < 1 || params.tile_height > kMaxParamSide ||
      params.tile_width > kMaxParamSide) {
    fail(ErrorCode::kInvalidArgument, "image_preprocessing: tile size " + std::to_string(params.tile_height) + "x" +
                                          std::to_string(params.tile_width) + " is out of range");
  }
  if (params.kind == ImageKind::kIdefics3 && (params.longest_edge < 1 || params.longest_edge > kMaxParamSide)) {
    fail(ErrorCode::kInvalidArgument, "image_preprocessing: longest_edge " + std::to_string(params.longest_edge) +
                                          " is out of range");
  }
  Rgb8Image im{width, height, std::vector<uint8_t>(rgb, rgb + size)};
  return params.kind == ImageKind::kIdefics3 ? preprocess_idefics3(std::move(im), params)
                                             : preprocess_clip(std::move(im), params);
}

}  // namespace edgevlm
