// The image decoders (core/codec*.cpp) on inputs built here from the specifications: deflate blocks
// of each kind, PNG chunks with their CRCs, JPEG and GIF streams written bit by bit; every
// truncation of small files, corrupt checksums, decompression bombs, huge dimensions, refused
// features and unknown formats. Parity with Pillow on real and generated files is in
// tests/test_native_codecs.py.
#include <sys/stat.h>

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "check.h"
#include "core/codec.h"
#include "core/error.h"
#include "core/image_file.h"

using edgevlm::ErrorCode;
using Bytes = std::vector<uint8_t>;

namespace {

bool throws(ErrorCode code, const char* fragment, const std::function<void()>& fn) {
  try {
    fn();
  } catch (const edgevlm::Error& e) {
    if (e.code() == code && std::strstr(e.what(), fragment) != nullptr) return true;
    std::fprintf(stderr, "  got code %d: %s\n", int(e.code()), e.what());
    return false;
  }
  std::fprintf(stderr, "  no error (expected '%s')\n", fragment);
  return false;
}

edgevlm::Rgb8Image decode(const Bytes& b) { return edgevlm::decode_image_memory(b.data(), b.size(), "test"); }

// Every proper prefix of `file` decodes or fails with kInvalidArgument (never a crash: the sanitizer
// build runs this too); returns how many decoded.
int every_prefix(const Bytes& file) {
  int decoded = 0;
  for (size_t n = 1; n < file.size(); ++n) {
    try {
      decode(Bytes(file.begin(), file.begin() + long(n)));
      ++decoded;
    } catch (const edgevlm::Error& e) {
      CHECK(e.code() == ErrorCode::kInvalidArgument);
    }
  }
  return decoded;
}

// Deflate bits: values least significant bit first, Huffman codes most significant bit first.
struct BitWriter {
  Bytes out;
  int n = 0;
  void bit(int b) {
    if (n % 8 == 0) out.push_back(0);
    out.back() = uint8_t(out.back() | (b & 1) << (n % 8));
    ++n;
  }
  void value(uint32_t v, int bits) {
    for (int i = 0; i < bits; ++i) bit(int(v >> i) & 1);
  }
  void code(uint32_t c, int bits) {
    for (int i = bits - 1; i >= 0; --i) bit(int(c >> i) & 1);
  }
};

void put_be32(Bytes& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
}

Bytes zlib_wrap(const Bytes& deflate, const Bytes& plain) {
  Bytes z = {0x78, 0x01};
  for (uint8_t c : deflate) z.push_back(c);  // (not insert: GCC 12 warns falsely on an empty range)
  put_be32(z, edgevlm::codec::adler32(plain.data(), plain.size()));
  return z;
}

Bytes stored_deflate(const Bytes& plain) {  // one final stored block
  Bytes d = {0x01, uint8_t(plain.size()), uint8_t(plain.size() >> 8), uint8_t(~plain.size()), uint8_t(~plain.size() >> 8)};
  for (uint8_t c : plain) d.push_back(c);
  return d;
}

Bytes decompress(const Bytes& z, size_t n) {
  Bytes out(n);
  edgevlm::codec::zlib_decompress(z.data(), z.size(), out.data(), out.size(), "TEST", "data");
  return out;
}

bool codec_throws(const char* fragment, const std::function<void()>& fn) {
  try {
    fn();
  } catch (const edgevlm::codec::DecodeError& e) {
    if (std::strstr(e.what(), fragment)) return true;
    std::fprintf(stderr, "  got: %s\n", e.what());
    return false;
  }
  std::fprintf(stderr, "  no error (expected '%s')\n", fragment);
  return false;
}

void add_chunk(Bytes& png, const char* type, const Bytes& data) {
  put_be32(png, uint32_t(data.size()));
  Bytes td(type, type + 4);
  td.insert(td.end(), data.begin(), data.end());
  png.insert(png.end(), td.begin(), td.end());
  put_be32(png, edgevlm::codec::crc32(td.data(), td.size()));
}

// A PNG of the given filtered scanlines (filter byte + row), stored (uncompressed) in one IDAT.
Bytes make_png(uint32_t w, uint32_t h, int depth, int color_type, const Bytes& scanlines,
               const std::vector<std::pair<const char*, Bytes>>& extra = {}) {
  Bytes png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  Bytes ihdr;
  put_be32(ihdr, w);
  put_be32(ihdr, h);
  ihdr.insert(ihdr.end(), {uint8_t(depth), uint8_t(color_type), 0, 0, 0});
  add_chunk(png, "IHDR", ihdr);
  for (const auto& [type, data] : extra) add_chunk(png, type, data);
  add_chunk(png, "IDAT", zlib_wrap(stored_deflate(scanlines), scanlines));
  add_chunk(png, "IEND", {});
  return png;
}

void test_inflate() {
  using edgevlm::codec::zlib_decompress;
  const Bytes hello = {'h', 'e', 'l', 'l', 'o'};
  CHECK(decompress(zlib_wrap(stored_deflate(hello), hello), 5) == hello);

  // Fixed Huffman block: literals 'a' 'b' 'c' (8-bit codes 0x30 + byte), length 9 (symbol 263,
  // 7-bit code 263 - 256), distance 3 (5-bit code 2), end of block (7-bit code 0).
  BitWriter f;
  f.value(1, 1), f.value(1, 2);
  for (uint8_t c : {'a', 'b', 'c'}) f.code(0x30u + c, 8);
  f.code(263 - 256, 7), f.code(2, 5), f.code(0, 7);
  const std::string abc = "abcabcabcabc";
  const Bytes abc_bytes(abc.begin(), abc.end());
  CHECK(decompress(zlib_wrap(f.out, abc_bytes), abc.size()) == abc_bytes);

  // Dynamic Huffman block: literal/length codes 'a' 'b' 256 257 of 2 bits, one distance code of 1 bit;
  // their lengths sent with the code-length code {2: "0", 1: "10", 18: "11"} (18 = a run of zeros).
  BitWriter d;
  d.value(1, 1), d.value(2, 2);
  d.value(258 - 257, 5), d.value(1 - 1, 5), d.value(18 - 4, 4);
  const int order[18] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1};
  for (int s : order) d.value(s == 18 ? 2 : s == 2 ? 1 : s == 1 ? 2 : 0, 3);
  const auto two = [&] { d.code(0, 1); };
  const auto one = [&] { d.code(2, 2); };
  const auto zeros = [&](int n) { d.code(3, 2), d.value(uint32_t(n - 11), 7); };
  zeros(97), two(), two(), zeros(138), zeros(19), two(), two(), one();  // 'a' 'b', 256, 257; distance 0
  d.code(0, 2), d.code(1, 2), d.code(3, 2), d.code(0, 1), d.code(2, 2);  // a b <len 3, dist 1> EOB
  const Bytes abbbb = {'a', 'b', 'b', 'b', 'b'};
  CHECK(decompress(zlib_wrap(d.out, abbbb), 5) == abbbb);

  // Checks: header, trailer, lengths, bombs.
  Bytes z = zlib_wrap(f.out, abc_bytes);
  z.back() ^= 1;
  CHECK(codec_throws("Adler-32 checksum mismatch", [&] { decompress(z, abc.size()); }));
  CHECK(codec_throws("zlib header check failed", [&] { decompress({0x78, 0x02, 0x03, 0x00}, 1); }));
  CHECK(codec_throws("preset dictionaries", [&] { decompress({0x78, 0xBB, 0, 0, 0, 0, 3, 0}, 1); }));
  CHECK(codec_throws("more data than the image needs", [&] { decompress(zlib_wrap(f.out, abc_bytes), 11); }));
  CHECK(codec_throws("decompressed to 12 bytes", [&] { decompress(zlib_wrap(f.out, abc_bytes), 13); }));
  Bytes bad_len = stored_deflate(hello);
  bad_len[3] ^= 0xFF;
  CHECK(codec_throws("length check failed", [&] { decompress(zlib_wrap(bad_len, hello), 5); }));
  CHECK(codec_throws("block type 3", [&] { decompress({0x78, 0x01, 0x07, 0, 0, 0, 0}, 1); }));
  CHECK(codec_throws("truncated", [&] { decompress(Bytes(z.begin(), z.end() - 6), abc.size()); }));
  // A bomb: one literal then 258-byte matches at distance 1, far more than the 300 bytes expected.
  BitWriter b;
  b.value(1, 1), b.value(1, 2);
  b.code(0x30, 8);
  for (int i = 0; i < 4000; ++i) b.code(0xC5, 8), b.code(0, 5);  // symbol 285 (8-bit 0xC0 + 5): length 258
  b.code(0, 7);
  CHECK(codec_throws("more data than the image needs", [&] { decompress(zlib_wrap(b.out, {}), 300); }));
  // ... and a size no deflate stream this short can reach is refused before decoding.
  CHECK(codec_throws("cannot hold", [&] { decompress(zlib_wrap(b.out, {}), size_t(1) << 30); }));
}

void test_png() {
  // 2-bit gray 3x1 (values 0, 2, 3 -> 0, 170, 255), filter 0.
  const Bytes gray2 = make_png(3, 1, 2, 0, {0, 0b00101100});
  auto im = decode(gray2);
  CHECK(im.width == 3 && im.height == 1 && im.pixels == Bytes({0, 0, 0, 170, 170, 170, 255, 255, 255}));
  // 16-bit gray clips to 255 (Pillow's I;16 -> L); 16-bit RGB keeps the high byte.
  im = decode(make_png(2, 1, 16, 0, {0, 0x00, 0x64, 0x01, 0x00}));
  CHECK(im.pixels == Bytes({100, 100, 100, 255, 255, 255}));
  im = decode(make_png(1, 1, 16, 2, {0, 0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC}));
  CHECK(im.pixels == Bytes({0x12, 0x56, 0x9A}));
  // Palette: index past PLTE is black; a tRNS alpha of 0 composites to white.
  im = decode(make_png(3, 1, 8, 3, {0, 0, 1, 2}, {{"PLTE", {10, 20, 30, 40, 50, 60}}, {"tRNS", {255, 0}}}));
  CHECK(im.pixels == Bytes({10, 20, 30, 255, 255, 255, 0, 0, 0}));
  // Filters: Sub (1) and Up (2) on a 2x2 RGB image.
  im = decode(make_png(2, 2, 8, 2, {1, 10, 20, 30, 5, 5, 5, 2, 1, 1, 1, 2, 2, 2}));
  CHECK(im.pixels == Bytes({10, 20, 30, 15, 25, 35, 11, 21, 31, 17, 27, 37}));

  Bytes bad = gray2;
  bad[8 + 8 + 13] ^= 1;  // the IHDR CRC
  CHECK(throws(ErrorCode::kInvalidArgument, "CRC mismatch in chunk IHDR", [&] { decode(bad); }));
  bad = gray2;
  bad[bad.size() - 12 - 5] ^= 1;  // inside IDAT: its CRC no longer matches
  CHECK(throws(ErrorCode::kInvalidArgument, "CRC mismatch in chunk IDAT", [&] { decode(bad); }));
  CHECK(throws(ErrorCode::kInvalidArgument, "invalid filter type 5", [&] { decode(make_png(3, 1, 2, 0, {5, 0})); }));
  CHECK(throws(ErrorCode::kInvalidArgument, "invalid bit depth 3", [&] { decode(make_png(3, 1, 3, 0, {0, 0})); }));
  CHECK(throws(ErrorCode::kInvalidArgument, "without a PLTE", [&] { decode(make_png(1, 1, 8, 3, {0, 0})); }));
  CHECK(every_prefix(gray2) == 1);  // the one that ends after IDAT (no IEND) is complete, as for Pillow

  // Dimensions: too large before any allocation; a size the data cannot fill; a bomb in IDAT.
  CHECK(throws(ErrorCode::kInvalidArgument, "image of 20000x20000 pixels is too large",
               [&] { decode(make_png(20000, 20000, 8, 2, {0, 1, 2, 3})); }));
  CHECK(throws(ErrorCode::kInvalidArgument, "too short for a 9000x9000 image",
               [&] { decode(make_png(9000, 9000, 8, 2, {0, 1, 2, 3})); }));
  BitWriter zeros;  // 1x1 gray image whose IDAT inflates to ~1 MB of zeros
  zeros.value(1, 1), zeros.value(1, 2);
  zeros.code(0x30, 8);
  for (int i = 0; i < 4000; ++i) zeros.code(0xC5, 8), zeros.code(0, 5);
  zeros.code(0, 7);
  Bytes bomb = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  add_chunk(bomb, "IHDR", {0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0});
  add_chunk(bomb, "IDAT", zlib_wrap(zeros.out, {}));
  add_chunk(bomb, "IEND", {});
  CHECK(throws(ErrorCode::kInvalidArgument, "more data than the image needs", [&] { decode(bomb); }));
}

// A JPEG by hand: 8x8 gray, all quantizers 1, the Annex K default Huffman tables (no DHT): DC
// difference -224 (category 8, code 111110, bits 00011111), then end of block (code 1010):
// every sample 128 + (-224 * 4 + 16 >> 5) = 100.
const Bytes kJpegHead = {0xFF, 0xD8, 0xFF, 0xDB, 0x00, 0x43, 0x00};
Bytes jpeg_gray(uint8_t sof, int width, bool restart) {
  Bytes j = kJpegHead;
  j.insert(j.end(), 64, 1);
  j.insert(j.end(), {0xFF, sof, 0x00, 0x0B, 0x08, 0x00, 0x08, 0x00, uint8_t(width), 0x01, 0x01, 0x11, 0x00});
  if (restart) j.insert(j.end(), {0xFF, 0xDD, 0x00, 0x04, 0x00, 0x01});
  j.insert(j.end(), {0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00});
  for (int b = 0; b < width / 8; ++b) {
    if (b > 0 && restart) j.insert(j.end(), {0xFF, uint8_t(0xD0 + (b - 1) % 8)});
    j.insert(j.end(), {0xF8, 0x7E, 0xBF});
  }
  j.insert(j.end(), {0xFF, 0xD9});
  return j;
}

void test_jpeg() {
  const Bytes one = jpeg_gray(0xC0, 8, false);
  auto im = decode(one);
  CHECK(im.width == 8 && im.height == 8 && im.pixels == Bytes(8 * 8 * 3, 100));
  // Restart markers between blocks reset the DC prediction: the second block decodes the same.
  im = decode(jpeg_gray(0xC0, 24, true));
  CHECK(im.width == 24 && im.pixels == Bytes(24 * 8 * 3, 100));
  Bytes no_rst = jpeg_gray(0xC0, 24, true);
  no_rst.erase(no_rst.end() - 2 - 3 - 2, no_rst.end() - 2 - 3);  // drop the last RST1
  CHECK(throws(ErrorCode::kInvalidArgument, "restart marker missing", [&] { decode(no_rst); }));
  // Progressive, one DC scan (its Huffman table must come from a DHT: no defaults in progressive mode).
  Bytes prog = kJpegHead;
  prog.insert(prog.end(), 64, 1);
  prog.insert(prog.end(), {0xFF, 0xC4, 0x00, 0x1F, 0x00, 0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0});
  for (uint8_t s = 0; s < 12; ++s) prog.push_back(s);
  prog.insert(prog.end(), {0xFF, 0xC2, 0x00, 0x0B, 0x08, 0x00, 0x08, 0x00, 0x08, 0x01, 0x01, 0x11, 0x00,
                           0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0xF8, 0x7F, 0xFF, 0xD9});
  im = decode(prog);
  CHECK(im.pixels == Bytes(8 * 8 * 3, 100));
  CHECK(every_prefix(one) == 0);
  CHECK(every_prefix(prog) == 0);

  // Refused by name.
  CHECK(throws(ErrorCode::kInvalidArgument, "arithmetic-coded JPEG", [&] { decode(jpeg_gray(0xC9, 8, false)); }));
  CHECK(throws(ErrorCode::kInvalidArgument, "lossless JPEG", [&] { decode(jpeg_gray(0xC3, 8, false)); }));
  CHECK(throws(ErrorCode::kInvalidArgument, "hierarchical", [&] { decode(jpeg_gray(0xC5, 8, false)); }));
  Bytes twelve = one;
  twelve[kJpegHead.size() + 64 + 4] = 12;
  CHECK(throws(ErrorCode::kInvalidArgument, "12-bit samples are not supported", [&] { decode(twelve); }));
  Bytes progressive_default = prog;  // the DC table only from the defaults
  progressive_default.erase(progressive_default.begin() + long(kJpegHead.size() + 64),
                            progressive_default.begin() + long(kJpegHead.size() + 64 + 33));
  CHECK(throws(ErrorCode::kInvalidArgument, "DC Huffman table 0 not defined", [&] { decode(progressive_default); }));
  Bytes huge = one;
  const size_t sof = kJpegHead.size() + 64;
  huge[sof + 5] = huge[sof + 6] = huge[sof + 7] = huge[sof + 8] = 0xFF;
  CHECK(throws(ErrorCode::kInvalidArgument, "image of 65535x65535 pixels is too large", [&] { decode(huge); }));
  huge[sof + 5] = 0x05, huge[sof + 6] = 0x00;  // 65535 x 1280: allowed by size, but this file is far too short
  CHECK(throws(ErrorCode::kInvalidArgument, "file too short for a 65535x1280 image", [&] { decode(huge); }));
}

// A GIF by hand: 2x2, a 2-entry global palette, LZW minimum code size 2 (clear 4, end 5); codes
// clear, 0, 1, 1 (3 bits), then 0, end (4 bits: the table reached 8 entries) -> pixels 0 1 / 1 0.
const Bytes kGif = {'G', 'I', 'F', '8', '9', 'a', 2, 0, 2, 0, 0x80, 0, 0, 10, 20, 30, 200, 100, 50,
                    ',', 0, 0, 0, 0, 2, 0, 2, 0, 0, 2, 3, 0x44, 0x02, 0x05, 0, ';'};

void test_gif_bmp_pnm() {
  auto im = decode(kGif);
  CHECK(im.width == 2 && im.height == 2 && im.pixels == Bytes({10, 20, 30, 200, 100, 50, 200, 100, 50, 10, 20, 30}));
  CHECK(every_prefix(kGif) == 1);  // without the trailer ';' it is still complete, as for Pillow
  Bytes gif = kGif;
  gif[6] = gif[7] = gif[8] = gif[9] = 0xFF;
  CHECK(throws(ErrorCode::kInvalidArgument, "image of 65535x65535 pixels is too large", [&] { decode(gif); }));
  gif = kGif;
  gif[31] = 0x47;  // a code past the table
  CHECK(throws(ErrorCode::kInvalidArgument, "corrupt LZW data", [&] { decode(gif); }));

  const std::string pgm = "P2\n# comment\n3 1\n4\n0 2 4\n";
  im = decode(Bytes(pgm.begin(), pgm.end()));
  CHECK(im.pixels == Bytes({0, 0, 0, 128, 128, 128, 255, 255, 255}));  // round(2 / 4 * 255) = 128 (half to even)
  const std::string big = "P5 100000 100000 255\n";
  CHECK(throws(ErrorCode::kInvalidArgument, "too large", [&] { decode(Bytes(big.begin(), big.end())); }));
  const std::string over = "P2 1 1 4 5\n";
  CHECK(throws(ErrorCode::kInvalidArgument, "over maxval", [&] { decode(Bytes(over.begin(), over.end())); }));

  // BMP: 70000 x 70000 refused by size; 16-bit 5-6-5 channels expand as v * 255 / 31 (or / 63).
  Bytes bmp = {'B', 'M', 0, 0, 0, 0, 0, 0, 0, 0, 66, 0, 0, 0, 40, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 16, 0,
               3, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
               0x00, 0xF8, 0, 0, 0xE0, 0x07, 0, 0, 0x1F, 0, 0, 0, 0x41, 0x08, 0, 0};
  im = decode(bmp);  // pixel 0x0841: r 1, g 2, b 1
  CHECK(im.pixels == Bytes({255 / 31, 2 * 255 / 63, 255 / 31}));
  CHECK(every_prefix(bmp) == 0);
  bmp[18] = bmp[22] = 0x70, bmp[19] = bmp[23] = 0x11, bmp[20] = bmp[24] = 0x01;
  CHECK(throws(ErrorCode::kInvalidArgument, "image of 70000x70000 pixels is too large", [&] { decode(bmp); }));
}

void test_formats_and_files() {
  const std::string webp("RIFF\x10\0\0\0WEBPVP8 ", 16);
  CHECK(throws(ErrorCode::kInvalidArgument, "unknown format: WebP", [&] { decode(Bytes(webp.begin(), webp.end())); }));
  const std::string tiff("II*\0\x08\0\0\0", 8);
  CHECK(throws(ErrorCode::kInvalidArgument, "unknown format: TIFF", [&] { decode(Bytes(tiff.begin(), tiff.end())); }));
  CHECK(throws(ErrorCode::kInvalidArgument, "first bytes 01 02 03", [&] { decode({1, 2, 3}); }));
  CHECK(throws(ErrorCode::kIo, "is a directory", [] { edgevlm::decode_image_file("/tmp"); }));
}

}  // namespace

int main() {
  test_inflate();
  test_png();
  test_jpeg();
  test_gif_bmp_pnm();
  test_formats_and_files();
  return edgevlm_test::finish("test_codecs");
}
