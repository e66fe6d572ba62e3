// Image file decoding for the CLI and the SDK (stb_image: JPEG, PNG, BMP, GIF, TGA, PSD, HDR, PNM).
// Gray becomes RGB; images with alpha are composited over white, as the Python loader does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/resample.h"

namespace edgevlm {

// Errors: a missing or unreadable file -> kIo; not a decodable image, or more than
// kMaxImagePixels pixels -> kInvalidArgument with the decoder's reason.
Rgb8Image decode_image_file(const std::string& path);
Rgb8Image decode_image_memory(const uint8_t* data, size_t size, const std::string& name = "image bytes");

}  // namespace edgevlm
