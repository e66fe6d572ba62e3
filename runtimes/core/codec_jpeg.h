// Internals of the JPEG decoder (codec_jpeg*.cpp), shared by its three files:
//   codec_jpeg.cpp        markers, frame and scan headers, the decode driver (decode_jpeg)
//   codec_jpeg_scan.cpp   entropy-coded data: Huffman decoding, sequential and progressive scans
//   codec_jpeg_pixels.cpp the islow IDCT, chroma upsampling and color conversion
//
// The pixel path follows libjpeg-turbo's defaults, which Pillow uses, from their arithmetic:
// the LL&M integer IDCT with 13-bit constants, "fancy" triangle upsampling for 2:1 ratios and
// replication for the others, and YCbCr -> RGB with 16-bit fixed-point tables; CMYK and YCCK end
// in Pillow's CMYK -> RGB conversion.
#pragma once

#include <cstdint>
#include <vector>

#include "core/codec.h"

namespace edgevlm::codec::jpeg {

// Zigzag position -> natural (row-major) position, with 16 extra entries so that a corrupt run
// length past 63 lands on 63 instead of outside the block.
extern const uint8_t kNatural[64 + 16];

struct HuffmanTable {
  static constexpr int kFast = 9;
  bool defined = false;
  bool standard = false;  // T.81 Annex K default (libjpeg-turbo's, sequential frames only)
  uint8_t fast_len[1 << kFast];  // code length of the code starting with these 9 bits, 0 = longer
  uint8_t fast_sym[1 << kFast];
  int32_t maxcode[18];     // largest code of each length (-1: none), maxcode[17] sentinel
  int32_t valoffset[18];   // index in `values` of code c of length l: c + valoffset[l]
  uint8_t values[256];
  // From the DHT counts (codes per length 1..16) and symbols; false if the counts are impossible.
  bool build(const uint8_t counts[16], const uint8_t* symbols, int n);
};

struct Component {
  int id = 0, h = 1, v = 1, tq = 0;
  int width = 0, height = 0;      // samples: ceil(image width * h / hmax), likewise height
  int blocks_w = 0, blocks_h = 0;  // 8x8 blocks allocated: MCU columns * h, MCU rows * v
  uint16_t quant[64] = {0};       // natural order, latched at the component's first scan
  bool quant_latched = false;
  bool seen = false;
  std::vector<int16_t> coefs;  // progressive only: [blocks_h][blocks_w][64], natural order
  std::vector<uint8_t> plane;  // [blocks_h * 8][blocks_w * 8] samples
  int dc_table = 0, ac_table = 0;
  int dc_pred = 0;
};

enum class ColorSpace { kGray, kYCbCr, kRgb, kCmyk, kYcck };

struct Frame {
  int width = 0, height = 0;
  bool progressive = false;
  int ncomp = 0;
  Component comp[4];
  int hmax = 1, vmax = 1;
  int mcus_x = 0, mcus_y = 0;
  ColorSpace color = ColorSpace::kGray;
};

struct Scan {
  int ncomp = 0;
  int comp[4] = {0, 0, 0, 0};  // indices into Frame::comp
  int ss = 0, se = 63, ah = 0, al = 0;
};

struct Tables {
  uint16_t quant[4][64];  // natural order
  bool quant_defined[4] = {false, false, false, false};
  HuffmanTable dc[4], ac[4];
  int restart_interval = 0;
};

// Decodes the entropy-coded segment of one scan starting at data[pos]; returns the position of the
// marker that follows it. Sequential scans write pixels (IDCT) into the component planes;
// progressive scans update the coefficients.
size_t decode_scan(const uint8_t* data, size_t size, size_t pos, Frame& frame, const Tables& tables, const Scan& scan);

// islow IDCT of one block (natural order coefficients, quantizer) into 8x8 samples at out.
void idct_islow(const int16_t* coef, const uint16_t* quant, uint8_t* out, size_t stride);

// The whole image from the component planes: upsampled and converted to RGB [height, width, 3].
void planes_to_rgb(const Frame& frame, uint8_t* rgb);

}  // namespace edgevlm::codec::jpeg
