// Image file decoding for the CLI and the SDK, with the runtime's own decoders (codec.h): PNG, JPEG
// (Huffman-coded, 8-bit: baseline, extended, progressive), BMP, GIF (first frame), PNM. The pixels
// equal the Python loader's (edgevlm/processing/image.py load_image, i.e. Pillow's decoding, then
// convert("RGB")); gray becomes RGB; alpha and transparency are composited over white as there.
// EXIF orientation is not applied (load_image does not apply it either).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/resample.h"

namespace edgevlm {

// Errors: a missing or unreadable file, or a directory -> kIo; not a decodable image ("<name>: not a
// readable image (<FORMAT>: <problem>)"), or more than kMaxImagePixels pixels ("<name>: image of WxH
// pixels is too large", checked before decoding) -> kInvalidArgument.
Rgb8Image decode_image_file(const std::string& path);
Rgb8Image decode_image_memory(const uint8_t* data, size_t size, const std::string& name = "image bytes");

}  // namespace edgevlm
