// The runtime's own image decoders, written from the format specifications: PNG (with zlib and
// deflate, RFC 1950/1951), JPEG (ITU T.81: baseline, extended and progressive Huffman, 8-bit),
// BMP, GIF (the first frame) and PNM. Each gives the 8-bit pixels Pillow gives for the file, before
// the Python loader's last step: RGB, or RGBA where Pillow's image has alpha or transparency.
// image_file.cpp picks the decoder by the file's signature and composites alpha over white.
//
// Every read is bounds-checked; a bad or truncated file throws DecodeError("<FORMAT>: <problem>"),
// dimensions past kMaxImagePixels throw TooLarge before any pixel buffer is allocated.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace edgevlm::codec {

// Decoded pixels: data [height, width, channels] uint8, channels 3 (RGB) or 4 (RGBA, straight alpha).
struct Pixels {
  int width = 0;
  int height = 0;
  int channels = 3;
  std::vector<uint8_t> data;
};

// What is wrong with the file, starting with the format name ("PNG: CRC mismatch in chunk IDAT").
class DecodeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The image has more than kMaxImagePixels pixels.
class TooLarge : public DecodeError {
 public:
  TooLarge(int64_t w, int64_t h);
  int64_t width, height;
};

[[noreturn]] void fail(const char* format, const std::string& problem);

// Fails unless 1 <= w, h; throws TooLarge when w * h > kMaxImagePixels.
void check_size(const char* format, int64_t w, int64_t h);
// check_size, then a zeroed [h, w, channels] buffer.
Pixels new_pixels(const char* format, int64_t w, int64_t h, int channels);

// Bounds-checked reads over [data, data + size); a read past the end fails with
// "<format>: file truncated (<what>)".
class Reader {
 public:
  Reader(const uint8_t* data, size_t size, const char* format) : data_(data), size_(size), format_(format) {}
  size_t pos() const { return pos_; }
  size_t size() const { return size_; }
  size_t left() const { return size_ - pos_; }
  const uint8_t* data() const { return data_; }
  void seek(size_t pos, const char* what) {
    if (pos > size_) truncated(what);
    pos_ = pos;
  }
  const uint8_t* take(size_t n, const char* what) {
    if (n > size_ - pos_) truncated(what);
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  void skip(size_t n, const char* what) { take(n, what); }
  uint8_t u8(const char* what) { return *take(1, what); }
  uint32_t be16(const char* what) {
    const uint8_t* p = take(2, what);
    return uint32_t(p[0]) << 8 | p[1];
  }
  uint32_t be32(const char* what) {
    const uint8_t* p = take(4, what);
    return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
  }
  uint32_t le16(const char* what) {
    const uint8_t* p = take(2, what);
    return uint32_t(p[1]) << 8 | p[0];
  }
  uint32_t le32(const char* what) {
    const uint8_t* p = take(4, what);
    return uint32_t(p[3]) << 24 | uint32_t(p[2]) << 16 | uint32_t(p[1]) << 8 | p[0];
  }
  [[noreturn]] void truncated(const char* what) const { fail(format_, std::string("file truncated (") + what + ")"); }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const char* format_;
};

// ---- zlib / deflate (codec_inflate.cpp) --------------------------------------------------------
uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc = 0);
uint32_t adler32(const uint8_t* data, size_t size, uint32_t adler = 1);
// Decompresses a zlib stream into exactly `out_size` bytes, checking the Adler-32 trailer. A stream
// that would produce more fails as soon as it passes out_size (decompression bombs stop there), one
// that produces fewer fails too. Errors name `format` and `what` ("PNG: image data: ...").
void zlib_decompress(const uint8_t* in, size_t in_size, uint8_t* out, size_t out_size, const char* format,
                     const char* what);

// ---- decoders ------------------------------------------------------------------------------------
Pixels decode_png(const uint8_t* data, size_t size);
Pixels decode_jpeg(const uint8_t* data, size_t size);
Pixels decode_bmp(const uint8_t* data, size_t size);
Pixels decode_gif(const uint8_t* data, size_t size);
Pixels decode_pnm(const uint8_t* data, size_t size);

}  // namespace edgevlm::codec
