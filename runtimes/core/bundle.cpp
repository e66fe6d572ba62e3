// Bundle loading (see bundle.h).
#include "core/bundle.h"

#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <iterator>

#include "core/error.h"
#include "core/sha256.h"
#include "edgevlm/contract.h"

namespace edgevlm {
namespace {

namespace C = contract;
using nlohmann::json;

constexpr const char* kWeightsFile = "model.safetensors";
constexpr const char* kConfigFile = "config.json";
constexpr const char* kQuantMethod = "edgevlm";
constexpr int kQuantFormatVersion = 1;

bool is_dir(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

json read_json(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(ErrorCode::kIo, path + ": cannot open");
  const std::string text{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail(ErrorCode::kCorruptFile, path + ": not valid JSON (" + e.what() + ")");
  }
}

// "a/b.bin" stays inside; "", "/x", "a/../../x", "..", "a//b" do not qualify.
bool safe_relative(const std::string& rel) {
  if (rel.empty() || rel[0] == '/' || rel.find('\\') != std::string::npos || rel.find('\0') != std::string::npos) {
    return false;
  }
  size_t start = 0;
  while (start <= rel.size()) {
    const size_t end = std::min(rel.find('/', start), rel.size());
    const std::string part = rel.substr(start, end - start);
    if (part.empty() || part == "..") return false;
    start = end + 1;
  }
  return true;
}

bool is_hex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

QuantLayer parse_layer(const std::string& file, const std::string& path, const json& e) {
  auto bad = [&](const std::string& what) {
    fail(ErrorCode::kCorruptFile, file + ": quantization_config.layers['" + path + "']: " + what);
  };
  if (!e.is_object()) bad("must be an object");
  QuantLayer q;
  q.path = path;
  auto str = [&](const char* k, bool required) -> std::string {
    if (!e.contains(k)) {
      if (required) bad(std::string("missing '") + k + "'");
      return {};
    }
    if (!e[k].is_string()) bad(std::string("'") + k + "' must be a string");
    return e[k].get<std::string>();
  };
  auto integer = [&](const char* k, bool required) -> int {
    if (!e.contains(k)) {
      if (required) bad(std::string("missing '") + k + "'");
      return 0;
    }
    if (!e[k].is_number_integer() || e[k].get<int64_t>() < 0 || e[k].get<int64_t>() > (1 << 30)) {
      bad(std::string("'") + k + "' must be a non-negative integer, got " + e[k].dump());
    }
    return e[k].get<int>();
  };
  q.kind = str("kind", true);
  q.scheme = str("scheme", true);
  q.algorithm = str("algorithm", false);
  if (q.kind == "tied_lm_head") return q;
  if (q.kind != "linear" && q.kind != "embedding") bad("unknown kind '" + q.kind + "'");
  q.bits = integer("bits", true);
  if (q.bits != 4 && q.bits != 8) fail(ErrorCode::kUnsupported, file + ": layer '" + path + "': " + std::to_string(q.bits) + "-bit weights are not supported");
  q.group_size = integer("group_size", true);
  q.outliers = integer("outliers", false);
  if (!e.contains("symmetric") || !e["symmetric"].is_boolean()) bad("'symmetric' must be true or false");
  q.symmetric = e["symmetric"].get<bool>();
  if (!e.contains("shape") || !e["shape"].is_array() || e["shape"].size() != 2) bad("'shape' must be [rows, cols]");
  for (const json& d : e["shape"]) {
    if (!d.is_number_unsigned()) bad("'shape' must hold non-negative integers");
    q.shape.push_back(d.get<int64_t>());
  }
  return q;
}

}  // namespace

void verify_bundle_files(const std::string& dir, const json& manifest) {
  const std::string mpath = dir + "/" + C::MANIFEST_FILE;
  const json& files = manifest[C::KEY_FILES];
  if (!files.is_object() || files.empty()) fail(ErrorCode::kCorruptFile, mpath + ": no file list to verify");
  for (auto it = files.begin(); it != files.end(); ++it) {
    const std::string& rel = it.key();
    if (!safe_relative(rel)) {
      fail(ErrorCode::kCorruptFile, mpath + ": file entry '" + rel + "' points outside the bundle");
    }
    if (!it.value().is_string() || !is_hex64(it.value().get<std::string>())) {
      fail(ErrorCode::kCorruptFile, mpath + ": file entry '" + rel + "' needs a lowercase hex sha256, got " + it.value().dump());
    }
    const std::string p = dir + "/" + rel;
    if (!is_file(p)) fail(ErrorCode::kIo, dir + ": file " + rel + " is missing (listed in the manifest)");
    if (sha256_file(p) != it.value().get<std::string>()) {
      fail(ErrorCode::kCorruptFile, dir + ": file " + rel + " does not match its sha256 in the manifest (modified or corrupt)");
    }
  }
}

Bundle Bundle::open(const std::string& dir_in, bool verify) {
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (!is_dir(dir)) fail(ErrorCode::kIo, dir + ": no such bundle directory");
  const std::string mpath = dir + "/" + C::MANIFEST_FILE;
  if (!is_file(mpath)) fail(ErrorCode::kIo, dir + ": not a bundle (" + C::MANIFEST_FILE + " missing)");
  Bundle b;
  b.dir_ = dir;
  b.manifest_ = read_json(mpath);
  const json& m = b.manifest_;
  if (!m.is_object()) fail(ErrorCode::kCorruptFile, mpath + ": expected a JSON object");
  std::string missing;
  for (const char* key : C::MANIFEST_REQUIRED_KEYS) {
    if (!m.contains(key)) missing += (missing.empty() ? "" : ", ") + std::string(key);
  }
  if (!missing.empty()) fail(ErrorCode::kCorruptFile, mpath + ": missing keys " + missing);
  const json& version = m[C::KEY_SCHEMA_VERSION];
  if (!version.is_number_integer() || version.get<int64_t>() != C::SCHEMA_VERSION) {
    fail(ErrorCode::kUnsupported, mpath + ": schema version " + version.dump() + " unsupported (this runtime reads " +
                                      std::to_string(C::SCHEMA_VERSION) + ")");
  }
  if (!m[C::KEY_FAMILY].is_string()) fail(ErrorCode::kCorruptFile, mpath + ": 'family' must be a string");
  if (!m[C::KEY_FILES].is_object()) fail(ErrorCode::kCorruptFile, mpath + ": 'files' must be an object");
  if (verify) verify_bundle_files(dir, m);

  const std::string wdir = dir + "/" + C::WEIGHTS_DIR;
  if (!is_dir(wdir)) return b;
  const std::string wfile = wdir + "/" + kWeightsFile, cfile = wdir + "/" + kConfigFile;
  if (!is_file(wfile)) fail(ErrorCode::kIo, wdir + ": " + kWeightsFile + " is missing");
  if (!is_file(cfile)) fail(ErrorCode::kIo, wdir + ": " + kConfigFile + " is missing");
  b.weights_ = SafeTensors::open(wfile);
  b.weights_config_ = read_json(cfile);
  if (!b.weights_config_.is_object()) fail(ErrorCode::kCorruptFile, cfile + ": expected a JSON object");
  if (b.weights_config_.contains("quantization_config") && !b.weights_config_["quantization_config"].is_null()) {
    const json& q = b.weights_config_["quantization_config"];
    if (!q.is_object()) fail(ErrorCode::kCorruptFile, cfile + ": quantization_config must be an object");
    const std::string method = q.value("quant_method", std::string());
    if (method != kQuantMethod) {
      fail(ErrorCode::kUnsupported, cfile + ": quant_method '" + method + "' is not supported (only '" + kQuantMethod + "')");
    }
    if (!q.contains("format_version") || q["format_version"] != kQuantFormatVersion) {
      fail(ErrorCode::kUnsupported, cfile + ": quantization format_version " + (q.contains("format_version") ? q["format_version"].dump() : "missing") +
                                        " unsupported (this runtime reads " + std::to_string(kQuantFormatVersion) + ")");
    }
    if (!q.contains("layers") || !q["layers"].is_object()) fail(ErrorCode::kCorruptFile, cfile + ": quantization_config.layers must be an object");
    b.quant_config_ = q;
    for (auto it = q["layers"].begin(); it != q["layers"].end(); ++it) {
      b.quant_layers_.emplace(it.key(), parse_layer(cfile, it.key(), it.value()));
    }
  }
  return b;
}

std::string Bundle::family() const { return manifest_[C::KEY_FAMILY].get<std::string>(); }

const json* Bundle::image_preprocessing() const {
  auto it = manifest_.find(C::KEY_IMAGE_PREPROCESSING);
  return (it == manifest_.end() || it->is_null()) ? nullptr : &*it;
}

const SafeTensors& Bundle::weights() const {
  if (!weights_) fail(ErrorCode::kIo, dir_ + ": the bundle has no " + C::WEIGHTS_DIR + "/ folder");
  return *weights_;
}

const json& Bundle::weights_config() const {
  if (!weights_) fail(ErrorCode::kIo, dir_ + ": the bundle has no " + C::WEIGHTS_DIR + "/ folder");
  return weights_config_;
}

std::string Bundle::weights_path() const { return dir_ + "/" + C::WEIGHTS_DIR + "/" + kWeightsFile; }

const QuantLayer* Bundle::quant_layer(const std::string& path) const {
  auto it = quant_layers_.find(path);
  return it == quant_layers_.end() ? nullptr : &it->second;
}

}  // namespace edgevlm
