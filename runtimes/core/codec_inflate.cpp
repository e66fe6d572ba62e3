// zlib (RFC 1950) and deflate (RFC 1951) decompression into a buffer of known size, CRC-32 (PNG
// chunks) and Adler-32 (the zlib trailer). See codec.h.
//
// Deflate, in short: the stream is a sequence of blocks, bits packed from the least significant
// bit of each byte; a block is stored (byte-aligned raw bytes), or Huffman-coded with the fixed
// code of the RFC or a dynamic code sent in the block header. Huffman codes are canonical (given
// by their code lengths alone) and sent most significant bit first. Literal/length symbols 0-255
// are bytes, 256 ends the block, 257-285 start a back-reference (length, then a distance symbol).
#include <array>
#include <cstring>

#include "core/codec.h"

namespace edgevlm::codec {
namespace {

// CRC-32 tables for 8 bytes at a time: t[0] is the classic byte table (reflected polynomial
// 0x04C11DB7); t[k][b] is the CRC of byte b followed by k zero bytes.
using CrcTables = std::array<std::array<uint32_t, 256>, 8>;
const CrcTables& crc_tables() {
  static const CrcTables tables = [] {
    CrcTables t{};
    for (uint32_t n = 0; n < 256; ++n) {
      uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[0][n] = c;
    }
    for (int k = 1; k < 8; ++k) {
      for (uint32_t n = 0; n < 256; ++n) t[k][n] = t[0][t[k - 1][n] & 0xFF] ^ (t[k - 1][n] >> 8);
    }
    return t;
  }();
  return tables;
}

// Length symbols 257..285: base length and extra bits; distance symbols 0..29 likewise (RFC 1951 3.2.5).
constexpr uint16_t kLengthBase[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                      31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
constexpr uint8_t kLengthExtra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
constexpr uint16_t kDistBase[30] = {1,   2,   3,   4,   5,   7,    9,    13,   17,   25,   33,   49,   65,    97,    129,
                                    193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
constexpr uint8_t kDistExtra[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
// The order in which the code-length code's lengths are sent.
constexpr uint8_t kCodeLengthOrder[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};

// A canonical Huffman code: a direct table for codes up to kFast bits, the canonical walk for longer ones.
struct Huffman {
  static constexpr int kFast = 10;
  static constexpr int kMaxLen = 15;
  uint16_t fast[1 << kFast];  // symbol << 4 | length; 0 = longer than kFast (or no such code)
  uint16_t count[kMaxLen + 1];
  uint16_t symbol[288];  // symbols in code order

  // lengths[n]: 0 = unused. Returns false for an over-subscribed code, or an incomplete one unless
  // `allow_incomplete` and it has a single code of length 1 (or none), as zlib accepts.
  bool build(const uint8_t* lengths, int n, bool allow_incomplete) {
    std::memset(count, 0, sizeof count);
    for (int i = 0; i < n; ++i) ++count[lengths[i]];
    count[0] = 0;
    int left = 1, max_len = 0;
    for (int len = 1; len <= kMaxLen; ++len) {
      left = (left << 1) - count[len];
      if (left < 0) return false;
      if (count[len]) max_len = len;
    }
    if (left > 0 && max_len > 0 && !(allow_incomplete && max_len == 1)) return false;
    uint16_t offset[kMaxLen + 2] = {0};
    for (int len = 1; len <= kMaxLen; ++len) offset[len + 1] = uint16_t(offset[len] + count[len]);
    uint16_t next[kMaxLen + 1];
    for (int len = 1; len <= kMaxLen; ++len) next[len] = offset[len];
    for (int i = 0; i < n; ++i) {
      if (lengths[i]) symbol[next[lengths[i]]++] = uint16_t(i);
    }
    std::memset(fast, 0, sizeof fast);
    uint32_t code = 0;
    int k = 0;
    for (int len = 1; len <= kMaxLen; ++len, code <<= 1) {
      for (int j = 0; j < count[len]; ++j, ++code, ++k) {
        if (len > kFast) continue;
        uint32_t rev = 0;  // the code's bits reversed: the stream sends them first bit first
        for (int b = 0; b < len; ++b) rev |= ((code >> b) & 1u) << (len - 1 - b);
        for (uint32_t e = rev; e < (1u << kFast); e += 1u << len) fast[e] = uint16_t(symbol[k] << 4 | len);
      }
    }
    return true;
  }
};

class Inflater {
 public:
  Inflater(const uint8_t* in, size_t in_size, uint8_t* out, size_t out_size, const char* format, const char* what)
      : in_(in), in_size_(in_size), out_(out), out_size_(out_size), format_(format), what_(what) {}

  // Decodes blocks up to the final one; returns the number of bytes written.
  size_t run() {
    bool last = false;
    while (!last) {
      refill();
      last = take(1);
      const uint32_t type = take(2);
      if (type == 0) {
        stored();
      } else if (type == 1) {
        huffman(fixed_lit(), fixed_dist());
      } else if (type == 2) {
        dynamic();
      } else {
        error("invalid deflate block type 3");
      }
      check_overrun();
    }
    return out_pos_;
  }

  // After the final block: the next 4 bytes, byte-aligned (the zlib Adler-32 trailer).
  uint32_t trailer_be32() {
    align_to_byte();
    if (in_size_ - pos_ < 4) error("stream truncated before its Adler-32 checksum");
    const uint8_t* p = in_ + pos_;
    return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
  }

  [[noreturn]] void error(const std::string& problem) const { fail(format_, std::string(what_) + ": " + problem); }

 private:
  // Keeps at least 56 bits in bits_; past the end of the input it shifts in zero bytes and counts them.
  void refill() {
    if (count_ > 56) return;
    if (in_size_ - pos_ >= 8) {
      uint64_t w;
      std::memcpy(&w, in_ + pos_, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
      w = __builtin_bswap64(w);
#endif
      bits_ |= w << count_;  // bits past 64 drop; those above count_ are re-ORed identically later
      const int n = (63 - count_) >> 3;
      pos_ += size_t(n);
      count_ += n * 8;
      return;
    }
    while (count_ <= 56) {
      uint64_t byte = 0;
      if (pos_ < in_size_) {
        byte = in_[pos_++];
      } else {
        ++overrun_;
      }
      bits_ |= byte << count_;
      count_ += 8;
    }
    check_overrun();
  }
  void check_overrun() const {
    if (overrun_ * 8 > size_t(count_)) error("compressed data is truncated");
  }
  uint32_t take(int n) {  // n <= count_, n < 32
    const uint32_t v = uint32_t(bits_) & ((1u << n) - 1);
    bits_ >>= n;
    count_ -= n;
    return v;
  }
  // Drops the bits of a partial byte and gives the whole buffered bytes back to the input.
  void align_to_byte() {
    take(count_ & 7);
    size_t virtual_pos = pos_ + overrun_ - size_t(count_ / 8);
    bits_ = 0;
    count_ = 0;
    pos_ = virtual_pos < in_size_ ? virtual_pos : in_size_;
    overrun_ = virtual_pos - pos_;
    if (overrun_) error("compressed data is truncated");
  }

  int decode(const Huffman& h) {  // needs >= 15 bits buffered
    return decode_bits(h, bits_, count_);
  }
  // Decodes one symbol from (bits, count), which hold >= 15 bits; consumes its code.
  int decode_bits(const Huffman& h, uint64_t& bits, int& count) const {
    const uint16_t e = h.fast[bits & ((1u << Huffman::kFast) - 1)];
    if (e) {
      bits >>= e & 15;
      count -= e & 15;
      return e >> 4;
    }
    int code = 0, first = 0, index = 0;  // the canonical walk, one bit (code length) at a time
    for (int len = 1; len <= Huffman::kMaxLen; ++len) {
      code |= int((bits >> (len - 1)) & 1);
      const int c = h.count[len];
      if (code - first < c) {
        bits >>= len;
        count -= len;
        return h.symbol[index + code - first];
      }
      index += c;
      first = (first + c) << 1;
      code <<= 1;
    }
    error("invalid Huffman code");
  }

  void stored() {
    align_to_byte();
    if (in_size_ - pos_ < 4) error("stored block header truncated");
    const uint8_t* p = in_ + pos_;
    const uint32_t len = p[0] | uint32_t(p[1]) << 8, nlen = p[2] | uint32_t(p[3]) << 8;
    if ((len ^ 0xFFFFu) != nlen) error("stored block length check failed");
    pos_ += 4;
    if (in_size_ - pos_ < len) error("stored block truncated");
    if (out_size_ - out_pos_ < len) error("more data than the image needs");
    std::memcpy(out_ + out_pos_, in_ + pos_, len);
    out_pos_ += len;
    pos_ += len;
  }

  void dynamic() {
    refill();
    const int nlit = int(take(5)) + 257, ndist = int(take(5)) + 1, ncode = int(take(4)) + 4;
    if (nlit > 286 || ndist > 30) error("dynamic block with too many length or distance codes");
    uint8_t lengths[286 + 30] = {0};
    uint8_t code_lengths[19] = {0};
    for (int i = 0; i < ncode; ++i) {
      refill();
      code_lengths[kCodeLengthOrder[i]] = uint8_t(take(3));
    }
    Huffman code_code;
    if (!code_code.build(code_lengths, 19, false)) error("invalid code-length code");
    for (int i = 0; i < nlit + ndist;) {
      refill();
      const int sym = decode(code_code);
      if (sym < 16) {
        lengths[i++] = uint8_t(sym);
        continue;
      }
      int repeat = 0;
      uint8_t value = 0;
      if (sym == 16) {
        if (i == 0) error("repeat code with no previous length");
        value = lengths[i - 1];
        repeat = 3 + int(take(2));
      } else if (sym == 17) {
        repeat = 3 + int(take(3));
      } else {
        repeat = 11 + int(take(7));
      }
      if (i + repeat > nlit + ndist) error("code lengths overflow the block header");
      std::memset(lengths + i, value, size_t(repeat));
      i += repeat;
    }
    if (lengths[256] == 0) error("dynamic block without an end-of-block code");
    if (!lit_.build(lengths, nlit, true)) error("invalid literal/length code");
    if (!dist_.build(lengths + nlit, ndist, true)) error("invalid distance code");
    huffman(lit_, dist_);
  }

  static const Huffman& fixed_lit() {
    static const Huffman h = [] {
      uint8_t l[288];
      for (int i = 0; i < 288; ++i) l[i] = i < 144 ? 8 : i < 256 ? 9 : i < 280 ? 7 : 8;
      Huffman t;
      t.build(l, 288, false);
      return t;
    }();
    return h;
  }
  static const Huffman& fixed_dist() {
    static const Huffman h = [] {
      uint8_t l[32];
      std::memset(l, 5, sizeof l);
      Huffman t;
      t.build(l, 32, false);  // symbols 30 and 31 have codes but are invalid
      return t;
    }();
    return h;
  }

  void huffman(const Huffman& lit, const Huffman& dist) {
    // The bit buffer and output position live in locals here (the hot loop); refill() works on the members.
    uint64_t bits = bits_;
    int count = count_;
    size_t o = out_pos_;
    const size_t end = out_size_;
    uint8_t* const out = out_;
    const auto take_bits = [&](int n) {
      const uint32_t v = uint32_t(bits) & ((1u << n) - 1);
      bits >>= n;
      count -= n;
      return v;
    };
    for (;;) {
      if (count < 48) {  // >= 48 bits: a length code, its extra bits, a distance code and its extra bits
        bits_ = bits, count_ = count;
        refill();
        bits = bits_, count = count_;
      }
      const int sym = decode_bits(lit, bits, count);
      if (sym < 256) {
        if (o == end) error("more data than the image needs");
        out[o++] = uint8_t(sym);
        continue;
      }
      if (sym == 256) break;
      const int li = sym - 257;
      if (li >= 29) error("invalid length symbol");
      const size_t len = kLengthBase[li] + take_bits(kLengthExtra[li]);
      const int di = decode_bits(dist, bits, count);
      if (di >= 30) error("invalid distance symbol");
      const size_t d = kDistBase[di] + take_bits(kDistExtra[di]);
      if (d > o) error("back-reference before the start of the data");
      if (len > end - o) error("more data than the image needs");
      uint8_t* dst = out + o;
      const uint8_t* src = dst - d;
      if (d >= 8 && end - o >= len + 8) {  // 8 bytes at a time; the overshoot is rewritten later
        for (size_t i = 0; i < len; i += 8) std::memcpy(dst + i, src + i, 8);
      } else {
        for (size_t i = 0; i < len; ++i) dst[i] = src[i];
      }
      o += len;
    }
    bits_ = bits, count_ = count, out_pos_ = o;
  }

  const uint8_t* in_;
  size_t in_size_;
  size_t pos_ = 0;
  size_t overrun_ = 0;  // zero bytes shifted in past the end of the input
  uint64_t bits_ = 0;
  int count_ = 0;
  uint8_t* out_;
  size_t out_size_;
  size_t out_pos_ = 0;
  const char* format_;
  const char* what_;
  Huffman lit_, dist_;
};

}  // namespace

uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc) {
  const CrcTables& t = crc_tables();
  uint32_t c = crc ^ 0xFFFFFFFFu;
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    const uint8_t* p = data + i;
    const uint32_t lo = c ^ (uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
    c = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^ t[3][p[4]] ^ t[2][p[5]] ^
        t[1][p[6]] ^ t[0][p[7]];
  }
  for (; i < size; ++i) c = t[0][(c ^ data[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t adler32(const uint8_t* data, size_t size, uint32_t adler) {
  constexpr uint32_t kMod = 65521;
  constexpr size_t kBlock = 5552;  // the most bytes before b can overflow 32 bits
  uint32_t a = adler & 0xFFFF, b = adler >> 16;
  while (size > 0) {
    const size_t n = size < kBlock ? size : kBlock;
    for (size_t i = 0; i < n; ++i) {
      a += data[i];
      b += a;
    }
    a %= kMod;
    b %= kMod;
    data += n;
    size -= n;
  }
  return b << 16 | a;
}

void zlib_decompress(const uint8_t* in, size_t in_size, uint8_t* out, size_t out_size, const char* format,
                     const char* what) {
  const auto bad = [&](const std::string& problem) { fail(format, std::string(what) + ": " + problem); };
  if (in_size < 2) bad("zlib stream truncated");
  const uint32_t cmf = in[0], flg = in[1];
  if ((cmf & 15) != 8 || (cmf >> 4) > 7) bad("not a deflate stream (zlib header " + std::to_string(cmf) + ")");
  if ((cmf << 8 | flg) % 31 != 0) bad("zlib header check failed");
  if (flg & 0x20) bad("zlib preset dictionaries are not supported");
  // Deflate expands at most 1032:1 (a 258-byte match in 2 bits), so this much output cannot come from
  // this little input: refused before anything is decoded.
  if (out_size / 1032 > in_size) {
    bad(std::to_string(in_size) + " compressed bytes cannot hold the " + std::to_string(out_size) +
        " bytes the image needs (truncated)");
  }
  Inflater inflater(in + 2, in_size - 2, out, out_size, format, what);
  const size_t n = inflater.run();
  if (n != out_size) {
    bad("decompressed to " + std::to_string(n) + " bytes, the image needs " + std::to_string(out_size));
  }
  if (inflater.trailer_be32() != adler32(out, out_size)) bad("Adler-32 checksum mismatch");
}

}  // namespace edgevlm::codec
