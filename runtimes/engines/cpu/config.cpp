#include "engines/cpu/config.h"

#include <cmath>

#include "core/error.h"

namespace edgevlm::cpu {

double json_number(const nlohmann::json& j, const char* key, double def) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (it->is_boolean()) return it->get<bool>() ? 1.0 : 0.0;
  if (!it->is_number()) fail(ErrorCode::kCorruptFile, std::string("config key '") + key + "' is not a number");
  return it->get<double>();
}

static std::string json_string(const nlohmann::json& j, const char* key, const std::string& def) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_string()) fail(ErrorCode::kCorruptFile, std::string("config key '") + key + "' is not a string");
  return it->get<std::string>();
}

static int positive(const nlohmann::json& j, const char* key, int def = -1) {
  const double v = json_number(j, key, def);
  if (!(v >= 1) || v > 1e8) fail(ErrorCode::kCorruptFile, std::string("config key '") + key + "' missing or not positive");
  return static_cast<int>(v);
}

TextConfig TextConfig::from_json(const nlohmann::json& j) {
  if (!j.is_object()) fail(ErrorCode::kCorruptFile, "text_config is not an object");
  TextConfig c;
  c.hidden = positive(j, "hidden_size");
  c.intermediate = positive(j, "intermediate_size");
  c.layers = positive(j, "num_hidden_layers");
  c.heads = positive(j, "num_attention_heads");
  c.kv_heads = positive(j, "num_key_value_heads", c.heads);
  c.head_dim = positive(j, "head_dim", c.hidden / c.heads);
  c.vocab = positive(j, "vocab_size");
  c.max_position_embeddings = positive(j, "max_position_embeddings", 2048);
  c.rms_norm_eps = static_cast<float>(json_number(j, "rms_norm_eps", 1e-6));
  c.tie_word_embeddings = json_number(j, "tie_word_embeddings", 0) != 0;
  c.attention_bias = json_number(j, "attention_bias", 0) != 0;
  c.mlp_bias = json_number(j, "mlp_bias", 0) != 0;
  c.hidden_act = json_string(j, "hidden_act", "silu");
  if (c.heads % c.kv_heads) fail(ErrorCode::kCorruptFile, "num_attention_heads is not a multiple of num_key_value_heads");
  if (c.head_dim % 2) fail(ErrorCode::kCorruptFile, "head_dim must be even");
  if (c.hidden_act != "silu" && c.hidden_act != "gelu" && c.hidden_act != "gelu_pytorch_tanh" && c.hidden_act != "relu") {
    fail(ErrorCode::kUnsupported, "decoder activation '" + c.hidden_act + "'");
  }
  const nlohmann::json r = j.contains("rope") && j["rope"].is_object() ? j["rope"] : nlohmann::json::object();
  RopeConfig& p = c.rope;
  p.type = json_string(r, "rope_type", "default");
  p.theta = json_number(r, "rope_theta", json_number(j, "rope_theta", 10000.0));
  p.factor = json_number(r, "factor", 1.0);
  p.low_freq_factor = json_number(r, "low_freq_factor", 1.0);
  p.high_freq_factor = json_number(r, "high_freq_factor", 4.0);
  p.original_max_position_embeddings = static_cast<int>(json_number(r, "original_max_position_embeddings", 0));
  p.beta_fast = json_number(r, "beta_fast", 32.0);
  p.beta_slow = json_number(r, "beta_slow", 1.0);
  p.attention_factor = json_number(r, "attention_factor", -1.0);
  p.mscale = json_number(r, "mscale", 0.0);
  p.mscale_all_dim = json_number(r, "mscale_all_dim", 0.0);
  p.truncate = json_number(r, "truncate", 1) != 0;
  if (p.type != "default" && p.type != "linear" && p.type != "llama3" && p.type != "yarn") {
    fail(ErrorCode::kUnsupported, "rope_type '" + p.type + "'");
  }
  return c;
}

static double yarn_mscale(double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; }

std::vector<float> rope_inverse_frequencies(const TextConfig& c, float* scale) {
  const RopeConfig& r = c.rope;
  const int d = c.head_dim, half = d / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(d);
    inv[i] = 1.0f / std::pow(static_cast<float>(r.theta), e);
  }
  *scale = 1.0f;
  const double original = r.original_max_position_embeddings > 0 ? r.original_max_position_embeddings
                                                                  : c.max_position_embeddings;
  if (r.type == "linear") {
    for (float& f : inv) f = f / static_cast<float>(r.factor);
  } else if (r.type == "llama3") {
    const double low_wavelen = original / r.low_freq_factor, high_wavelen = original / r.high_freq_factor;
    for (float& f : inv) {
      const float wavelen = static_cast<float>(2 * M_PI) / f;
      const float scaled = wavelen > low_wavelen ? f / static_cast<float>(r.factor) : f;
      const float smooth = static_cast<float>((original / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor));
      const float blended = (1 - smooth) * scaled / static_cast<float>(r.factor) + smooth * scaled;
      f = (wavelen >= high_wavelen && wavelen <= low_wavelen) ? blended : scaled;
    }
  } else if (r.type == "yarn") {
    double attention;
    if (r.attention_factor >= 0) {
      attention = r.attention_factor;
    } else if (r.mscale != 0 && r.mscale_all_dim != 0) {
      attention = yarn_mscale(r.factor, r.mscale) / yarn_mscale(r.factor, r.mscale_all_dim);
    } else {
      attention = yarn_mscale(r.factor, 1.0);
    }
    auto correction = [&](double rot) { return d * std::log(original / (rot * 2 * M_PI)) / (2 * std::log(r.theta)); };
    double low = correction(r.beta_fast), high = correction(r.beta_slow);
    if (r.truncate) low = std::floor(low), high = std::ceil(high);
    low = std::max(low, 0.0), high = std::min(high, static_cast<double>(d - 1));
    if (low == high) high += 0.001;
    for (int i = 0; i < half; ++i) {
      float ramp = static_cast<float>((static_cast<float>(i) - low) / (high - low));
      ramp = std::min(1.f, std::max(0.f, ramp));
      const float extra = 1 - ramp;
      inv[i] = (inv[i] / static_cast<float>(r.factor)) * (1 - extra) + inv[i] * extra;
    }
    *scale = static_cast<float>(attention);
  }
  return inv;
}

VisionConfig VisionConfig::from_json(const nlohmann::json& j) {
  if (!j.is_object()) fail(ErrorCode::kCorruptFile, "vision_config is not an object");
  VisionConfig c;
  c.hidden = positive(j, "hidden_size");
  c.intermediate = positive(j, "intermediate_size");
  c.layers = positive(j, "num_hidden_layers");
  c.heads = positive(j, "num_attention_heads");
  c.image_size = positive(j, "image_size");
  c.patch_size = positive(j, "patch_size");
  c.channels = positive(j, "num_channels", 3);
  c.hidden_act = json_string(j, "hidden_act", "gelu_pytorch_tanh");
  c.layer_norm_eps = static_cast<float>(json_number(j, "layer_norm_eps", 1e-6));
  auto it = j.find("feature_layer");
  c.has_feature_layer = it != j.end() && !it->is_null();
  if (c.has_feature_layer) c.feature_layer = it->get<int>();
  if (c.hidden % c.heads || c.image_size % c.patch_size) fail(ErrorCode::kCorruptFile, "inconsistent vision_config");
  if (c.has_feature_layer && (c.feature_layer < -c.layers - 1 || c.feature_layer > c.layers)) {
    fail(ErrorCode::kCorruptFile, "vision feature_layer out of range");
  }
  return c;
}

}  // namespace edgevlm::cpu
