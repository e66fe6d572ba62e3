// Pillow-compatible resampling (see resample.h). Reimplemented from the documented algorithm:
// for output index o the source window is centred at (o + 0.5) * scale, spans support * max(scale, 1)
// on each side, and each tap weighs filter((i - center + 0.5) / max(scale, 1)).
#include "core/resample.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "core/error.h"

namespace edgevlm {
namespace {

constexpr int kFracBits = 22;  // fixed-point weight precision for 8-bit images (32 - 8 - 2)
constexpr double kPi = 3.14159265358979323846;

double sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= kPi;
  return std::sin(x) / x;
}

double filter_value(Resample f, double x) {
  switch (f) {
    case Resample::kBox:
      return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0;
    case Resample::kBilinear:
      x = std::fabs(x);
      return x < 1.0 ? 1.0 - x : 0.0;
    case Resample::kHamming:
      x = std::fabs(x);
      if (x == 0.0) return 1.0;
      if (x >= 1.0) return 0.0;
      x *= kPi;
      return std::sin(x) / x * (double(0.54f) + double(0.46f) * std::cos(x));
    case Resample::kBicubic: {
      constexpr double a = -0.5;  // Keys' cubic with a = -0.5
      x = std::fabs(x);
      if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
      if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
      return 0.0;
    }
    case Resample::kLanczos:
      return (x >= -3.0 && x < 3.0) ? sinc(x) * sinc(x / 3.0) : 0.0;
    case Resample::kNearest:
      break;
  }
  return 0.0;
}

double filter_support(Resample f) {
  switch (f) {
    case Resample::kBox: return 0.5;
    case Resample::kBilinear: return 1.0;
    case Resample::kHamming: return 1.0;
    case Resample::kBicubic: return 2.0;
    case Resample::kLanczos: return 3.0;
    case Resample::kNearest: break;
  }
  return 0.0;
}

// Fixed-point weights of one axis: output o reads source [first[o], first[o] + count[o]) with
// weights[o * taps + i].
struct AxisWeights {
  int taps = 0;
  std::vector<int> first, count;
  std::vector<int32_t> weights;
};

AxisWeights axis_weights(int in_size, int out_size, Resample f) {
  const double scale = double(in_size) / out_size;
  const double widen = std::max(scale, 1.0);
  const double inv_widen = 1.0 / widen;
  const double support = filter_support(f) * widen;
  AxisWeights aw;
  aw.taps = int(std::ceil(support)) * 2 + 1;
  aw.first.resize(out_size);
  aw.count.resize(out_size);
  aw.weights.assign(size_t(out_size) * aw.taps, 0);
  std::vector<double> w(aw.taps);
  for (int o = 0; o < out_size; ++o) {
    const double center = (o + 0.5) * scale;
    // (int) truncates toward zero, as the reference does; negatives clamp to 0 either way.
    const int lo = std::max(int(center - support + 0.5), 0);
    const int hi = std::min(int(center + support + 0.5), in_size);
    const int n = hi - lo;
    double total = 0.0;
    for (int i = 0; i < n; ++i) {
      w[i] = filter_value(f, (i + lo - center + 0.5) * inv_widen);
      total += w[i];
    }
    int32_t* dst = &aw.weights[size_t(o) * aw.taps];
    for (int i = 0; i < n; ++i) {
      const double k = total != 0.0 ? w[i] / total : w[i];
      const double fixed = k * double(1 << kFracBits);
      dst[i] = int32_t(k < 0 ? fixed - 0.5 : fixed + 0.5);
    }
    aw.first[o] = lo;
    aw.count[o] = n;
  }
  return aw;
}

inline uint8_t round_clamp(int64_t acc) {
  const int64_t v = acc >> kFracBits;  // arithmetic shift: floor division
  return uint8_t(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// src [rows, in_w, 3] -> dst [rows, out_w, 3]
void pass_horizontal(const uint8_t* src, int in_w, int rows, const AxisWeights& aw, int out_w, uint8_t* dst) {
  const int64_t half = int64_t(1) << (kFracBits - 1);
  for (int y = 0; y < rows; ++y) {
    const uint8_t* row = src + size_t(y) * in_w * 3;
    uint8_t* out = dst + size_t(y) * out_w * 3;
    for (int x = 0; x < out_w; ++x) {
      const int32_t* k = &aw.weights[size_t(x) * aw.taps];
      const uint8_t* p = row + size_t(aw.first[x]) * 3;
      int64_t r = half, g = half, b = half;
      for (int i = 0; i < aw.count[x]; ++i, p += 3) {
        r += int64_t(p[0]) * k[i];
        g += int64_t(p[1]) * k[i];
        b += int64_t(p[2]) * k[i];
      }
      out[x * 3 + 0] = round_clamp(r);
      out[x * 3 + 1] = round_clamp(g);
      out[x * 3 + 2] = round_clamp(b);
    }
  }
}

// src [in_h, width, 3] -> dst [out_h, width, 3]
void pass_vertical(const uint8_t* src, int width, const AxisWeights& aw, int out_h, uint8_t* dst) {
  const int64_t half = int64_t(1) << (kFracBits - 1);
  const size_t stride = size_t(width) * 3;
  std::vector<int64_t> acc(stride);
  for (int y = 0; y < out_h; ++y) {
    std::fill(acc.begin(), acc.end(), half);
    const int32_t* k = &aw.weights[size_t(y) * aw.taps];
    for (int i = 0; i < aw.count[y]; ++i) {
      const uint8_t* row = src + size_t(aw.first[y] + i) * stride;
      for (size_t j = 0; j < stride; ++j) acc[j] += int64_t(row[j]) * k[i];
    }
    uint8_t* out = dst + size_t(y) * stride;
    for (size_t j = 0; j < stride; ++j) out[j] = round_clamp(acc[j]);
  }
}

// Nearest neighbour as Pillow's resize does it: an affine map sampled at pixel centres, the source
// coordinate accumulated step by step in double and truncated.
std::vector<int> nearest_index(int in_size, int out_size) {
  const double step = double(in_size) / out_size;
  std::vector<int> idx(out_size);
  double v = step * 0.5;
  for (int o = 0; o < out_size; ++o, v += step) idx[o] = std::min(int(v), in_size - 1);
  return idx;
}

Rgb8Image resize_nearest(const uint8_t* src, int width, int height, int out_w, int out_h) {
  const std::vector<int> xs = nearest_index(width, out_w), ys = nearest_index(height, out_h);
  Rgb8Image out{out_w, out_h, std::vector<uint8_t>(size_t(out_w) * out_h * 3)};
  for (int y = 0; y < out_h; ++y) {
    const uint8_t* row = src + size_t(ys[y]) * width * 3;
    uint8_t* q = &out.pixels[size_t(y) * out_w * 3];
    for (int x = 0; x < out_w; ++x, q += 3) {
      const uint8_t* p = row + size_t(xs[x]) * 3;
      q[0] = p[0], q[1] = p[1], q[2] = p[2];
    }
  }
  return out;
}

}  // namespace

Resample resample_from_name(const std::string& name) {
  std::string s;
  for (char c : name) s += char(std::tolower(static_cast<unsigned char>(c)));
  if (s == "nearest") return Resample::kNearest;
  if (s == "box") return Resample::kBox;
  if (s == "bilinear") return Resample::kBilinear;
  if (s == "hamming") return Resample::kHamming;
  if (s == "bicubic") return Resample::kBicubic;
  if (s == "lanczos") return Resample::kLanczos;
  fail(ErrorCode::kInvalidArgument,
       "unknown resample filter '" + name + "' (known: nearest, box, bilinear, hamming, bicubic, lanczos)");
}

Resample resample_from_hf_id(int id) {
  switch (id) {
    case 0: return Resample::kNearest;
    case 1: return Resample::kLanczos;
    case 2: return Resample::kBilinear;
    case 3: return Resample::kBicubic;
    case 4: return Resample::kBox;
    case 5: return Resample::kHamming;
    default: break;
  }
  fail(ErrorCode::kInvalidArgument, "unknown resample filter id " + std::to_string(id) + " (known: 0..5)");
}

const char* resample_name(Resample r) {
  switch (r) {
    case Resample::kNearest: return "nearest";
    case Resample::kBox: return "box";
    case Resample::kBilinear: return "bilinear";
    case Resample::kHamming: return "hamming";
    case Resample::kBicubic: return "bicubic";
    case Resample::kLanczos: return "lanczos";
  }
  return "?";
}

Rgb8Image resize_rgb8(const uint8_t* src, int width, int height, int out_width, int out_height, Resample filter) {
  if (width <= 0 || height <= 0 || out_width <= 0 || out_height <= 0) {
    fail(ErrorCode::kInvalidArgument, "resize: sizes must be positive (from " + std::to_string(width) + "x" +
                                          std::to_string(height) + " to " + std::to_string(out_width) + "x" +
                                          std::to_string(out_height) + ")");
  }
  const size_t in_bytes = size_t(width) * height * 3;
  if (out_width == width && out_height == height) return Rgb8Image{width, height, {src, src + in_bytes}};
  if (filter == Resample::kNearest) return resize_nearest(src, width, height, out_width, out_height);

  const bool horizontal = out_width != width, vertical = out_height != height;
  if (!vertical) {
    Rgb8Image out{out_width, height, std::vector<uint8_t>(size_t(out_width) * height * 3)};
    pass_horizontal(src, width, height, axis_weights(width, out_width, filter), out_width, out.pixels.data());
    return out;
  }
  AxisWeights vw = axis_weights(height, out_height, filter);
  Rgb8Image out{out_width, out_height, std::vector<uint8_t>(size_t(out_width) * out_height * 3)};
  if (!horizontal) {
    pass_vertical(src, width, vw, out_height, out.pixels.data());
    return out;
  }
  const AxisWeights hw = axis_weights(width, out_width, filter);
  // Pillow 13 runs the vertical pass first when the height shrinks much more than the width
  // (the width grows, or the height loses more than twice as many pixels); else horizontal first.
  const bool vertical_first = out_height < height && (out_width > width || (height - out_height) > 2 * (width - out_width));
  if (vertical_first) {
    std::vector<uint8_t> tmp(size_t(width) * out_height * 3);
    pass_vertical(src, width, vw, out_height, tmp.data());
    pass_horizontal(tmp.data(), width, out_height, hw, out_width, out.pixels.data());
    return out;
  }
  // Only the source rows the vertical pass reads need the horizontal pass.
  const int row0 = vw.first.front();
  const int rows = vw.first.back() + vw.count.back() - row0;
  std::vector<uint8_t> tmp(size_t(rows) * out_width * 3);
  pass_horizontal(src + size_t(row0) * width * 3, width, rows, hw, out_width, tmp.data());
  for (int& f : vw.first) f -= row0;
  pass_vertical(tmp.data(), out_width, vw, out_height, out.pixels.data());
  return out;
}

}  // namespace edgevlm
