// Read-only, zero-copy access to a .safetensors file: the file is mmapped, the JSON header parsed,
// and every size, offset and dtype checked before any tensor is exposed (header within the file,
// offsets within the data section, begin <= end, no overlaps, byte size == numel * dtype size,
// known dtype). Malformed files -> Error(kCorruptFile) naming the file and key; unreadable -> kIo;
// a dtype this runtime does not know -> kUnsupported.
//
// Layout: u64 little-endian N | N bytes of JSON header | data section. The header maps each name
// to {"dtype", "shape", "data_offsets": [begin, end]} (relative to the data section) and may hold
// "__metadata__": {string: string}.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"

namespace edgevlm {

enum class DType { kBool, kU8, kI8, kF8E5M2, kF8E4M3, kI16, kU16, kF16, kBF16, kI32, kU32, kF32, kF64, kI64, kU64 };

const char* dtype_name(DType d);  // the safetensors spelling: "F32", "BF16", "U8", ...
size_t dtype_size(DType d);       // bytes per element
// Unknown name -> Error(kUnsupported).
DType dtype_from_name(const std::string& name);

// C++ element type -> the dtype expect<T>() accepts (uint16_t is U16; use expect_raw for F16/BF16).
template <typename T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::kF32; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::kF64; };
template <> struct DTypeOf<int8_t> { static constexpr DType value = DType::kI8; };
template <> struct DTypeOf<uint8_t> { static constexpr DType value = DType::kU8; };
template <> struct DTypeOf<int16_t> { static constexpr DType value = DType::kI16; };
template <> struct DTypeOf<uint16_t> { static constexpr DType value = DType::kU16; };
template <> struct DTypeOf<int32_t> { static constexpr DType value = DType::kI32; };
template <> struct DTypeOf<uint32_t> { static constexpr DType value = DType::kU32; };
template <> struct DTypeOf<int64_t> { static constexpr DType value = DType::kI64; };
template <> struct DTypeOf<uint64_t> { static constexpr DType value = DType::kU64; };

// A tensor inside the mapping; valid while its SafeTensors (or a copy of it) lives.
struct TensorView {
  std::string name;
  DType dtype = DType::kU8;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // nbytes bytes, read-only
  size_t nbytes = 0;
  size_t offset = 0;  // from the start of the data section

  int64_t numel() const;
  std::string shape_str() const;  // "[2, 3]"
};

class SafeTensors {
 public:
  // Maps and validates `path`. Copies share the mapping.
  static SafeTensors open(const std::string& path);
  // Validates an in-memory image of a file (kept alive by the caller while views are used).
  static SafeTensors from_buffer(const uint8_t* data, size_t size, const std::string& name);

  const std::string& path() const { return path_; }
  size_t size() const;  // of the whole file
  const std::vector<std::string>& names() const { return names_; }  // in header order of offsets
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  // Missing name -> Error(kCorruptFile) naming the file and the key.
  const TensorView& get(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Drops the mapped pages this process has touched from its resident set (MADV_DONTNEED on the
  // read-only private mapping): views stay valid, a later read faults the page in again from the
  // page cache. For after weights were repacked into owned buffers. No-op for from_buffer.
  void release_pages() const;
  // The same for the whole pages inside one tensor's bytes (after it was copied out), so the
  // mapping and the copy are never both resident: peak memory stays near the model's size.
  void release_pages(const TensorView& t) const;

  // The tensor `name`, checked to have `dtype` and `shape` (-1 = any size in that dimension; an
  // empty `shape` argument with any_shape = true skips the shape check). Throws Error(kCorruptFile)
  // naming file, key, expected vs got.
  const TensorView& expect_raw(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                               bool any_shape = false) const;
  // Typed pointer to the data of `name` (dtype DTypeOf<T>, or `dtype` when given; checked as
  // above, and for alignment of T).
  template <typename T>
  const T* expect(const std::string& name, const std::vector<int64_t>& shape) const {
    return static_cast<const T*>(aligned(expect_raw(name, DTypeOf<T>::value, shape), alignof(T)));
  }
  template <typename T>
  const T* expect(const std::string& name, DType dtype, const std::vector<int64_t>& shape) const {
    if (dtype_size(dtype) != sizeof(T)) {
      fail(ErrorCode::kInternal, "expect<T>: element size " + std::to_string(sizeof(T)) + " does not fit dtype " +
                                     dtype_name(dtype));
    }
    return static_cast<const T*>(aligned(expect_raw(name, dtype, shape), alignof(T)));
  }

 private:
  struct Mapping;
  const void* aligned(const TensorView& t, size_t alignment) const;
  void parse(const uint8_t* data, size_t size);

  std::shared_ptr<Mapping> map_;
  std::string path_;
  std::vector<std::string> names_;
  std::map<std::string, TensorView> index_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace edgevlm
