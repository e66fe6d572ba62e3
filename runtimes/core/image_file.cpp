// Image file decoding (see image_file.h): picks the decoder of codec.h by the file's signature,
// turns its errors into edgevlm::Error and composites alpha over white.
#include "core/image_file.h"

#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "core/codec.h"
#include "core/error.h"
#include "core/image.h"

namespace edgevlm {
namespace codec {

TooLarge::TooLarge(int64_t w, int64_t h)
    : DecodeError("image of " + std::to_string(w) + "x" + std::to_string(h) + " pixels is too large"), width(w), height(h) {}

void fail(const char* format, const std::string& problem) { throw DecodeError(std::string(format) + ": " + problem); }

void check_size(const char* format, int64_t w, int64_t h) {
  if (w <= 0 || h <= 0) fail(format, "empty image (" + std::to_string(w) + "x" + std::to_string(h) + ")");
  if (w > kMaxImagePixels || h > kMaxImagePixels || w * h > kMaxImagePixels) throw TooLarge(w, h);
}

Pixels new_pixels(const char* format, int64_t w, int64_t h, int channels) {
  check_size(format, w, h);
  Pixels p;
  p.width = int(w);
  p.height = int(h);
  p.channels = channels;
  p.data.assign(size_t(w) * size_t(h) * size_t(channels), 0);
  return p;
}

}  // namespace codec

namespace {

// Alpha over an opaque white background, in the fixed point Pillow's alpha_composite uses
// (7 fractional bits, divide by 255 as ((v >> 8) + v) >> 8), so RGBA inputs match the Python loader.
uint8_t over_white(uint32_t c, uint32_t a) {
  constexpr uint32_t kBits = 7;
  const uint32_t coef1 = a * (1u << kBits);  // a * 255 * 255 * 2^7 / (255 * 255)
  const uint32_t coef2 = 255u * (1u << kBits) - coef1;
  const uint32_t v = c * coef1 + 255u * coef2 + (0x80u << kBits);
  return uint8_t((((v >> 8) + v) >> 8) >> kBits);
}

bool starts_with(const uint8_t* data, size_t size, const char* magic, size_t n, size_t at = 0) {
  return size >= at + n && std::memcmp(data + at, magic, n) == 0;
}

// A name for a format this runtime does not decode, from its signature; empty if unrecognized.
std::string unsupported_format_name(const uint8_t* d, size_t n) {
  if (starts_with(d, n, "RIFF", 4) && starts_with(d, n, "WEBP", 4, 8)) return "WebP";
  if (starts_with(d, n, "II*\0", 4) || starts_with(d, n, "MM\0*", 4)) return "TIFF";
  if (starts_with(d, n, "8BPS", 4)) return "Photoshop PSD";
  if (starts_with(d, n, "#?RADIANCE", 10) || starts_with(d, n, "#?RGBE", 6)) return "Radiance HDR";
  if (starts_with(d, n, "\0\0\1\0", 4)) return "Windows icon (ICO)";
  if (starts_with(d, n, "qoif", 4)) return "QOI";
  if (starts_with(d, n, "DDS ", 4)) return "DirectDraw surface (DDS)";
  if (starts_with(d, n, "\x76\x2f\x31\x01", 4)) return "OpenEXR";
  if (starts_with(d, n, "\xff\x4f\xff\x51", 4) || starts_with(d, n, "\0\0\0\x0cjP  ", 8)) return "JPEG 2000";
  if (starts_with(d, n, "\xff\x0a", 2) || starts_with(d, n, "\0\0\0\x0cJXL ", 8)) return "JPEG XL";
  if (starts_with(d, n, "ftyp", 4, 4)) {
    if (starts_with(d, n, "avif", 4, 8) || starts_with(d, n, "avis", 4, 8)) return "AVIF";
    if (starts_with(d, n, "hei", 3, 8) || starts_with(d, n, "mif1", 4, 8) || starts_with(d, n, "msf1", 4, 8)) return "HEIF/HEIC";
    return "an ISO media file";
  }
  if (starts_with(d, n, "%PDF", 4)) return "PDF";
  if (starts_with(d, n, "<svg", 4) || starts_with(d, n, "<?xml", 5)) return "SVG/XML text";
  if (starts_with(d, n, "P", 1) && n >= 2 && (d[1] == '0' || d[1] == 'f' || d[1] == 'F' || d[1] == 'y')) {
    return "a PNM variant (PFM float, CMYK or Pillow-private)";
  }
  if (n >= 18 && d[1] <= 1 && (d[2] == 1 || d[2] == 2 || d[2] == 3 || d[2] == 9 || d[2] == 10 || d[2] == 11) &&
      (d[16] == 8 || d[16] == 15 || d[16] == 16 || d[16] == 24 || d[16] == 32)) {
    return "possibly TGA";
  }
  return "";
}

std::string first_bytes(const uint8_t* d, size_t n) {
  std::string s;
  char buf[4];
  for (size_t i = 0; i < n && i < 8; ++i) {
    std::snprintf(buf, sizeof buf, "%s%02x", i ? " " : "", d[i]);
    s += buf;
  }
  return s;
}

codec::Pixels decode_any(const uint8_t* d, size_t n) {
  if (starts_with(d, n, "\x89PNG\r\n\x1a\n", 8)) return codec::decode_png(d, n);
  if (starts_with(d, n, "\xff\xd8\xff", 3)) return codec::decode_jpeg(d, n);
  if (starts_with(d, n, "BM", 2)) return codec::decode_bmp(d, n);
  if (starts_with(d, n, "GIF87a", 6) || starts_with(d, n, "GIF89a", 6)) return codec::decode_gif(d, n);
  if (n >= 2 && d[0] == 'P' && d[1] >= '1' && d[1] <= '6') return codec::decode_pnm(d, n);
  const std::string known = unsupported_format_name(d, n);
  if (!known.empty()) throw codec::DecodeError("unknown format: " + known + ", which this runtime does not decode");
  throw codec::DecodeError("unknown format; first bytes " + first_bytes(d, n) +
                           " (reads PNG, JPEG, BMP, GIF, PNM)");
}

}  // namespace

Rgb8Image decode_image_memory(const uint8_t* data, size_t size, const std::string& name) {
  if (data == nullptr || size == 0) fail(ErrorCode::kInvalidArgument, name + ": empty image data");
  codec::Pixels px;
  try {
    px = decode_any(data, size);
  } catch (const codec::TooLarge& e) {
    fail(ErrorCode::kInvalidArgument, name + ": " + e.what());
  } catch (const codec::DecodeError& e) {
    fail(ErrorCode::kInvalidArgument, name + ": not a readable image (" + e.what() + ")");
  } catch (const std::bad_alloc&) {
    fail(ErrorCode::kInvalidArgument, name + ": not enough memory to decode the image");
  }
  Rgb8Image out{px.width, px.height, {}};
  if (px.channels == 3) {
    out.pixels = std::move(px.data);
    return out;
  }
  const size_t n = size_t(px.width) * size_t(px.height);
  out.pixels.resize(n * 3);
  const uint8_t* src = px.data.data();
  for (size_t i = 0; i < n; ++i) {
    const uint32_t a = src[i * 4 + 3];
    for (int c = 0; c < 3; ++c) out.pixels[i * 3 + c] = over_white(src[i * 4 + c], a);
  }
  return out;
}

Rgb8Image decode_image_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    fail(ErrorCode::kIo, path + ": is a directory, not an image file");
  }
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
