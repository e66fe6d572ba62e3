// Image resizing of RGB8 images, numerically identical to Pillow's Image.resize (the filter the
// Hugging Face image processors use): separable convolution with the filter's support widened by
// the scale when downscaling (antialiasing), weights normalized and rounded to 22-bit fixed point,
// a horizontal pass then a vertical pass, each rounded and clamped to uint8. A dimension that does
// not change skips its pass; an unchanged size is a copy. Pillow 13 runs the vertical pass first when
// the height shrinks much more than the width; so does this (a 1-level difference otherwise).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace edgevlm {

enum class Resample { kNearest, kBox, kBilinear, kHamming, kBicubic, kLanczos };

// "nearest" | "box" | "bilinear" | "hamming" | "bicubic" | "lanczos" (case-insensitive), or the HF
// PILImageResampling id (0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming).
// Unknown -> Error(kInvalidArgument).
Resample resample_from_name(const std::string& name);
Resample resample_from_hf_id(int id);
const char* resample_name(Resample r);

// An RGB8 image, row-major: pixels [height, width, 3].
struct Rgb8Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;
};

// Resize `src` ([height, width, 3] uint8) to out_width x out_height. Sizes must be positive.
Rgb8Image resize_rgb8(const uint8_t* src, int width, int height, int out_width, int out_height, Resample filter);
inline Rgb8Image resize_rgb8(const Rgb8Image& src, int out_width, int out_height, Resample filter) {
  return resize_rgb8(src.pixels.data(), src.width, src.height, out_width, out_height, filter);
}

}  // namespace edgevlm
