// A NAME.evlm/ bundle (export/bundle.py): manifest.json with the keys of edgevlm/contract.h, the
// sha256 of every file, and weights/ (the quantized model directory: config.json with
// quantization_config, model.safetensors).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/safetensors.h"

namespace edgevlm {

// One quantized layer's scheme, as quant/storage.py records it under
// config.json["quantization_config"]["layers"][path].
struct QuantLayer {
  std::string path;      // module path, e.g. "language.layers.0.attn.q_proj"
  std::string kind;      // "linear" | "embedding" | "tied_lm_head"
  std::string scheme;    // e.g. "w4g32-sym"
  int bits = 0;          // 0 when not recorded (tied_lm_head)
  int group_size = 0;
  bool symmetric = true;
  std::vector<int64_t> shape;  // [out, in] or [num_embeddings, dim]
  std::string algorithm;       // "rtn" | "gptq" | "awq" | "" when not recorded
  int outliers = 0;
};

class Bundle {
 public:
  // Reads and checks dir/manifest.json (valid JSON object, every required key, the schema
  // version) and, with `verify`, every file listed under "files" against its sha256. Then opens
  // weights/model.safetensors and weights/config.json when the bundle has weights.
  // Errors: no directory or a listed file missing -> kIo; bad manifest, tampered file, bad
  // weights -> kCorruptFile; another schema version or quant_method -> kUnsupported.
  static Bundle open(const std::string& dir, bool verify = true);

  const std::string& dir() const { return dir_; }
  const nlohmann::json& manifest() const { return manifest_; }
  std::string family() const;
  // manifest["image_preprocessing"], or nullptr for text-only bundles.
  const nlohmann::json* image_preprocessing() const;

  bool has_weights() const { return weights_.has_value(); }
  // Throw kIo when the bundle has no weights/.
  const SafeTensors& weights() const;
  const nlohmann::json& weights_config() const;  // weights/config.json
  std::string weights_path() const;              // dir/weights/model.safetensors

  bool quantized() const { return !quant_layers_.empty() || quant_config_.is_object(); }
  const nlohmann::json& quantization_config() const { return quant_config_; }  // null when not quantized
  const std::map<std::string, QuantLayer>& quant_layers() const { return quant_layers_; }
  const QuantLayer* quant_layer(const std::string& path) const;

 private:
  std::string dir_;
  nlohmann::json manifest_;
  std::optional<SafeTensors> weights_;
  nlohmann::json weights_config_;
  nlohmann::json quant_config_;
  std::map<std::string, QuantLayer> quant_layers_;
};

// Checks every file listed in manifest["files"] under `dir` against its sha256 (paths must stay
// inside the bundle). The manifest must already be a parsed object.
void verify_bundle_files(const std::string& dir, const nlohmann::json& manifest);

}  // namespace edgevlm
