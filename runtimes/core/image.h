// Image preprocessing from an RGB8 buffer to the float32 tiles a vision encoder takes, identical
// (within 1/255) to edgevlm's Python processors, which match the Hugging Face ones:
//
//   idefics3    (SmolVLM)  resize the longest edge to `longest_edge`; with splitting, resize to
//                          multiples of the tile size S, cut into rows x cols tiles of S x S and
//                          append the whole image resized to S x S (the global tile)
//   clip        (LLaVA)    resize the shortest edge to `shortest_edge`, center crop to image_size
//   pad_square  (MobileVLM) pad to a centred square filled with the mean color, then as clip
//
// then rescale (x * rescale_factor) and normalize ((x - mean) / std) to CHW float32.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/resample.h"

namespace edgevlm {

enum class ImageKind { kIdefics3, kClip, kPadSquare };

// Preprocessing parameters; from_json reads the manifest's `image_preprocessing` dict.
struct ImageParams {
  ImageKind kind = ImageKind::kClip;
  int tile_height = 0;   // idefics3: the encoder tile S; clip/pad_square: the crop size
  int tile_width = 0;
  Resample resample = Resample::kBicubic;
  std::array<float, 3> mean{0.5f, 0.5f, 0.5f};
  std::array<float, 3> std{0.5f, 0.5f, 0.5f};
  double rescale_factor = 1.0 / 255.0;
  bool do_resize = true;
  // idefics3
  int longest_edge = 0;  // 0: 4 * S
  bool do_image_splitting = true;
  // clip / pad_square: resize to shortest_edge, or (when 0) exactly resize_height x resize_width
  int shortest_edge = 0;
  int resize_height = 0;
  int resize_width = 0;
  bool do_center_crop = true;
  bool pad_to_square = false;
  int tokens_per_tile = 0;  // recorded for the caller; not used by the preprocessing

  // Keys: kind ("idefics3" | "clip" | "pad_square"), image_size (int or [h, w]; required), mean,
  // std, resample (name or HF id), longest_edge, do_image_splitting, tokens_per_tile, and the
  // optional shortest_edge (default: image_size), resize_size ([h, w], instead of shortest_edge),
  // crop_size (int or [h, w], overrides image_size for clip), pad_to_square, do_center_crop,
  // do_resize, rescale_factor. Unknown keys are ignored; bad values -> Error(kInvalidArgument).
  static ImageParams from_json(const nlohmann::json& j);
};

// Tiles of one image: pixels [num_tiles, 3, height, width]. With idefics3 splitting, rows x cols
// grid tiles in row-major order and then the global tile (num_tiles = rows * cols + 1); rows ==
// cols == 0 means a single tile.
struct ImageTiles {
  int rows = 0;
  int cols = 0;
  int num_tiles = 0;
  int height = 0;
  int width = 0;
  std::vector<float> pixels;
};

// Largest accepted input: 100 M pixels (as the Python loader), sides up to 65535.
constexpr int kMaxImageSide = 65535;
constexpr int64_t kMaxImagePixels = 100000000;

// `rgb` holds width * height * 3 bytes (row-major RGB8); `size` is its length, checked.
ImageTiles preprocess_image(const uint8_t* rgb, size_t size, int width, int height, const ImageParams& params);
inline ImageTiles preprocess_image(const Rgb8Image& image, const ImageParams& params) {
  return preprocess_image(image.pixels.data(), image.pixels.size(), image.width, image.height, params);
}

// The idefics3 tile grid (rows, cols) for an input of width x height, without resizing pixels:
// what the caller needs to lay out the image tokens.
std::array<int, 2> image_grid(int width, int height, const ImageParams& params);

}  // namespace edgevlm
