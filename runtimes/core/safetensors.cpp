// .safetensors loading (see safetensors.h).
#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

namespace edgevlm {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeader = 100u << 20;  // 100 MiB, as the reference implementation

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::kBool, "BOOL", 1}, {DType::kU8, "U8", 1},   {DType::kI8, "I8", 1},   {DType::kF8E5M2, "F8_E5M2", 1},
    {DType::kF8E4M3, "F8_E4M3", 1}, {DType::kI16, "I16", 2}, {DType::kU16, "U16", 2}, {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2}, {DType::kI32, "I32", 4}, {DType::kU32, "U32", 4}, {DType::kF32, "F32", 4},
    {DType::kF64, "F64", 8},   {DType::kI64, "I64", 8}, {DType::kU64, "U64", 8},
};

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

const char* dtype_name(DType d) {
  for (const auto& i : kDTypes) {
    if (i.dtype == d) return i.name;
  }
  return "?";
}

size_t dtype_size(DType d) {
  for (const auto& i : kDTypes) {
    if (i.dtype == d) return i.size;
  }
  return 0;
}

DType dtype_from_name(const std::string& name) {
  for (const auto& i : kDTypes) {
    if (name == i.name) return i.dtype;
  }
  fail(ErrorCode::kUnsupported, "unknown safetensors dtype '" + name + "'");
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorView::shape_str() const { return shape_string(shape); }

// A read-only mmap of a whole file (or, for from_buffer, nothing: the caller owns the bytes).
struct SafeTensors::Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr != nullptr && addr != MAP_FAILED) munmap(addr, size);
  }
};

SafeTensors SafeTensors::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(ErrorCode::kIo, path + ": cannot open (" + std::strerror(errno) + ")");
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(ErrorCode::kIo, path + ": not a regular file");
  }
  SafeTensors t;
  t.path_ = path;
  t.map_ = std::make_shared<Mapping>();
  t.map_->size = size_t(st.st_size);
  if (t.map_->size < 8) {
    ::close(fd);
    fail(ErrorCode::kCorruptFile, path + ": truncated safetensors file (" + std::to_string(t.map_->size) +
                                      " bytes, the header length alone takes 8)");
  }
  t.map_->addr = mmap(nullptr, t.map_->size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);
  if (t.map_->addr == MAP_FAILED) {
    t.map_->addr = nullptr;
    fail(ErrorCode::kIo, path + ": mmap failed (" + std::strerror(err) + ")");
  }
  t.parse(static_cast<const uint8_t*>(t.map_->addr), t.map_->size);
  return t;
}

void SafeTensors::release_pages() const {
  if (map_ && map_->addr != nullptr) madvise(map_->addr, map_->size, MADV_DONTNEED);
}

void SafeTensors::release_pages(const TensorView& t) const {
  if (!map_ || map_->addr == nullptr || t.nbytes == 0) return;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(t.data) + page - 1) / page * page;
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(t.data) + t.nbytes) / page * page;
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

SafeTensors SafeTensors::from_buffer(const uint8_t* data, size_t size, const std::string& name) {
  SafeTensors t;
  t.path_ = name;
  t.map_ = std::make_shared<Mapping>();
  t.map_->size = size;
  if (data == nullptr || size < 8) {
    fail(ErrorCode::kCorruptFile, name + ": truncated safetensors file (" + std::to_string(size) + " bytes)");
  }
  t.parse(data, size);
  return t;
}

size_t SafeTensors::size() const { return map_ ? map_->size : 0; }

void SafeTensors::parse(const uint8_t* data, size_t size) {
  const std::string& f = path_;
  auto corrupt = [&f](const std::string& what) { fail(ErrorCode::kCorruptFile, f + ": " + what); };
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > kMaxHeader) corrupt("header length " + std::to_string(n) + " is over the 100 MiB limit");
  if (n > size - 8) {
    corrupt("truncated: the header claims " + std::to_string(n) + " bytes but only " + std::to_string(size - 8) +
            " follow the length");
  }
  const char* hbegin = reinterpret_cast<const char*>(data + 8);
  json header;
  try {
    header = json::parse(hbegin, hbegin + n);
  } catch (const json::exception& e) {
    corrupt(std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (!header.is_object()) corrupt(std::string("header must be a JSON object, got ") + header.type_name());
  const uint8_t* base = data + 8 + n;
  const uint64_t data_size = size - 8 - n;

  std::vector<const TensorView*> by_offset;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    if (key == "__metadata__") {
      if (!v.is_object()) corrupt("__metadata__ must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) corrupt("__metadata__['" + m.key() + "'] must be a string, got " + m.value().type_name());
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& what) { corrupt("tensor '" + key + "': " + what); };
    if (!v.is_object()) bad(std::string("entry must be an object, got ") + v.type_name());
    if (!v.contains("dtype") || !v["dtype"].is_string()) bad("missing string 'dtype'");
    if (!v.contains("shape") || !v["shape"].is_array()) bad("missing list 'shape'");
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2) {
      bad("'data_offsets' must be [begin, end]");
    }
    TensorView t;
    t.name = key;
    try {
      t.dtype = dtype_from_name(v["dtype"].get<std::string>());
    } catch (const Error& e) {
      fail(ErrorCode::kUnsupported, f + ": tensor '" + key + "': " + e.what());
    }
    uint64_t numel = 1;
    bool overflow = false;
    for (const json& d : v["shape"]) {
      if (!d.is_number_unsigned()) bad("shape " + v["shape"].dump() + " must hold non-negative integers");
      const uint64_t dim = d.get<uint64_t>();
      if (dim > uint64_t(std::numeric_limits<int64_t>::max())) bad("shape " + v["shape"].dump() + " is too large");
      t.shape.push_back(int64_t(dim));
      if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / dim) overflow = true;
      numel *= dim;
    }
    const json& off = v["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      bad("data_offsets " + off.dump() + " must be non-negative integers");
    }
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end) bad("data_offsets " + off.dump() + ": begin > end");
    if (end > data_size) {
      bad("data_offsets " + off.dump() + " run past the data section (" + std::to_string(data_size) + " bytes)");
    }
    const uint64_t esize = dtype_size(t.dtype);
    if (overflow || numel > std::numeric_limits<uint64_t>::max() / esize || numel * esize != end - begin) {
      bad("shape " + shape_string(t.shape) + " of " + dtype_name(t.dtype) + " needs " +
          (overflow ? std::string("too many") : std::to_string(numel * esize)) + " bytes but data_offsets " + off.dump() +
          " hold " + std::to_string(end - begin));
    }
    t.offset = size_t(begin);
    t.nbytes = size_t(end - begin);
    t.data = base + begin;
    auto ins = index_.emplace(key, std::move(t));
    by_offset.push_back(&ins.first->second);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorView* a, const TensorView* b) {
    return a->offset != b->offset ? a->offset < b->offset : a->nbytes < b->nbytes;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorView& a = *by_offset[i - 1];
    const TensorView& b = *by_offset[i];
    if (a.offset + a.nbytes > b.offset && b.nbytes > 0 && a.nbytes > 0) {
      corrupt("tensors '" + a.name + "' [" + std::to_string(a.offset) + ", " + std::to_string(a.offset + a.nbytes) +
              ") and '" + b.name + "' [" + std::to_string(b.offset) + ", " + std::to_string(b.offset + b.nbytes) +
              ") overlap");
    }
  }
  for (const TensorView* t : by_offset) names_.push_back(t->name);
}

const TensorView& SafeTensors::get(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail(ErrorCode::kCorruptFile, path_ + ": no tensor named '" + name + "'");
  return it->second;
}

const TensorView& SafeTensors::expect_raw(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                                          bool any_shape) const {
  const TensorView& t = get(name);
  bool ok = t.dtype == dtype;
  if (!any_shape) {
    ok = ok && t.shape.size() == shape.size();
    for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || shape[i] == t.shape[i];
  }
  if (!ok) {
    fail(ErrorCode::kCorruptFile, path_ + ": tensor '" + name + "': expected " + dtype_name(dtype) +
                                      (any_shape ? std::string() : " " + shape_string(shape)) + ", got " +
                                      dtype_name(t.dtype) + " " + t.shape_str());
  }
  return t;
}

const void* SafeTensors::aligned(const TensorView& t, size_t alignment) const {
  if (reinterpret_cast<uintptr_t>(t.data) % alignment != 0) {
    fail(ErrorCode::kCorruptFile, path_ + ": tensor '" + t.name + "' at data offset " + std::to_string(t.offset) +
                                      " is not aligned to " + std::to_string(alignment) + " bytes");
  }
  return t.data;
}

}  // namespace edgevlm
