// Model hyper-parameters as the bundle manifest records them (text_config, vision_config,
// projector_config: the Python config dataclasses, already normalized by the exporter).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace edgevlm::cpu {

/// Rotary embedding (edgevlm/models/llama/rope.py): base and scaling variant.
struct RopeConfig {
  std::string type = "default";  // default | linear | llama3 | yarn
  double theta = 10000.0;
  double factor = 1.0;
  double low_freq_factor = 1.0, high_freq_factor = 4.0;  // llama3
  int original_max_position_embeddings = 0;              // 0: max_position_embeddings
  double beta_fast = 32.0, beta_slow = 1.0;              // yarn
  double attention_factor = -1.0, mscale = 0.0, mscale_all_dim = 0.0;
  bool truncate = true;
};

struct TextConfig {
  int hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0, vocab = 0;
  int max_position_embeddings = 2048;
  float rms_norm_eps = 1e-6f;
  bool tie_word_embeddings = false, attention_bias = false, mlp_bias = false;
  std::string hidden_act = "silu";
  RopeConfig rope;
  static TextConfig from_json(const nlohmann::json& j);
};

/// Inverse frequencies [head_dim / 2] and the factor on cos/sin (rope.py inverse_frequencies).
std::vector<float> rope_inverse_frequencies(const TextConfig& c, float* scale);

struct VisionConfig {
  int hidden = 0, intermediate = 0, layers = 0, heads = 0, image_size = 0, patch_size = 0, channels = 3;
  std::string hidden_act = "gelu_pytorch_tanh";
  float layer_norm_eps = 1e-6f;
  bool has_feature_layer = false;  // false: last layer + post-layernorm (SigLIP / Idefics3)
  int feature_layer = 0;
  int patches_per_side() const { return image_size / patch_size; }
  int layers_used() const {
    return has_feature_layer ? ((feature_layer % (layers + 1)) + layers + 1) % (layers + 1) : layers;
  }
  static VisionConfig from_json(const nlohmann::json& j);
};

/// A json number, or `def` when the key is absent or null.
double json_number(const nlohmann::json& j, const char* key, double def);

}  // namespace edgevlm::cpu
