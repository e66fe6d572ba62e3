// SHA-256 (FIPS 180-4) for verifying bundle files against the manifest.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace edgevlm {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  std::array<uint8_t, 32> digest();  // finishes; call once
  std::string hexdigest();           // lowercase hex of digest()

 private:
  void block(const uint8_t* p);
  std::array<uint32_t, 8> h_;
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

std::string sha256_hex(const void* data, size_t size);
// Streams the file; a missing or unreadable file -> Error(kIo).
std::string sha256_file(const std::string& path);

}  // namespace edgevlm
