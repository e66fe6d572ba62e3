#include "engines/cpu/vision.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace edgevlm::cpu {

void VitEncoder::load(const WeightSource& ws, const VisionConfig& cfg, const std::string& prefix, bool clip) {
  cfg_ = cfg;
  clip_ = clip;
  act_ = act_from_name(cfg.hidden_act);
  const int D = cfg.hidden, p = cfg.patch_size, C = cfg.channels, F = cfg.intermediate;
  const std::string e = prefix + "embeddings.";
  patch_w_ = ws.floats(e + "patch_embedding.weight", {D, C, p, p});
  patch_b_.clear();
  if (!clip) patch_b_ = ws.floats(e + "patch_embedding.bias", {D});
  pos_emb_ = ws.floats(e + "position_embedding.weight", {tokens(), D});
  if (clip) {
    class_emb_ = ws.floats(e + "class_embedding", {D});
    pre_w_ = ws.floats(prefix + "pre_layrnorm.weight", {D});
    pre_b_ = ws.floats(prefix + "pre_layrnorm.bias", {D});
  }
  post_norm_ = !clip && !cfg.has_feature_layer;
  if (post_norm_) {
    post_w_ = ws.floats(prefix + "post_layernorm.weight", {D});
    post_b_ = ws.floats(prefix + "post_layernorm.bias", {D});
  }
  layers_.clear();
  for (int i = 0; i < cfg.layers_used(); ++i) {
    const std::string l = prefix + "encoder.layers." + std::to_string(i) + ".";
    VitLayer L;
    L.ln1_w = ws.floats(l + "layer_norm1.weight", {D});
    L.ln1_b = ws.floats(l + "layer_norm1.bias", {D});
    L.ln2_w = ws.floats(l + "layer_norm2.weight", {D});
    L.ln2_b = ws.floats(l + "layer_norm2.bias", {D});
    L.q = ws.linear(l + "self_attn.q_proj", D, D, true);
    L.k = ws.linear(l + "self_attn.k_proj", D, D, true);
    L.v = ws.linear(l + "self_attn.v_proj", D, D, true);
    L.out = ws.linear(l + "self_attn.out_proj", D, D, true);
    L.fc1 = ws.linear(l + "mlp.fc1", F, D, true);
    L.fc2 = ws.linear(l + "mlp.fc2", D, F, true);
    layers_.push_back(std::move(L));
  }
  const int T = tokens(), P = cfg.patches_per_side() * cfg.patches_per_side();
  patches_.resize(static_cast<size_t>(P) * C * p * p);
  x_.resize(static_cast<size_t>(T) * D), h_.resize(x_.size()), q_.resize(x_.size()), k_.resize(x_.size());
  v_.resize(x_.size()), att_.resize(x_.size()), f_.resize(static_cast<size_t>(T) * F);
  scores_.resize(static_cast<size_t>(T) * T), vt_.resize(static_cast<size_t>(T) * (D / cfg.heads));
}

void VitEncoder::forward(Compute& c, const float* tile, float* out) {
  const int D = cfg_.hidden, p = cfg_.patch_size, C = cfg_.channels, S = cfg_.image_size;
  const int side = cfg_.patches_per_side(), P = side * side, T = tokens(), K = C * p * p;
  const float eps = cfg_.layer_norm_eps;
  for (int r = 0; r < side; ++r) {  // im2col in the convolution weight's (c, kh, kw) order
    for (int col = 0; col < side; ++col) {
      float* dst = &patches_[static_cast<size_t>(r * side + col) * K];
      for (int ch = 0; ch < C; ++ch) {
        for (int kh = 0; kh < p; ++kh) {
          const float* src = tile + (static_cast<size_t>(ch) * S + r * p + kh) * S + col * p;
          std::copy(src, src + p, dst + (ch * p + kh) * p);
        }
      }
    }
  }
  const int first = clip_ ? 1 : 0;
  linear_f32(*c.k, c.pool_for(static_cast<int64_t>(P) * K * D), patches_.data(), K, P, K, patch_w_.data(), K, D, patch_b_.empty() ? nullptr : patch_b_.data(),
             x_.data() + static_cast<size_t>(first) * D, D);
  if (clip_) std::copy(class_emb_.begin(), class_emb_.end(), x_.begin());
  for (size_t i = 0; i < static_cast<size_t>(T) * D; ++i) x_[i] += pos_emb_[i];
  if (clip_) {
    for (int t = 0; t < T; ++t) layer_norm(&x_[t * D], pre_w_.data(), pre_b_.data(), D, eps, &x_[t * D]);
  }
  const int heads = cfg_.heads, hd = D / heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (VitLayer& L : layers_) {
    for (int t = 0; t < T; ++t) layer_norm(&x_[t * D], L.ln1_w.data(), L.ln1_b.data(), D, eps, &h_[t * D]);
    L.q.forward(c, h_.data(), T, q_.data());
    L.k.forward(c, h_.data(), T, k_.data());
    L.v.forward(c, h_.data(), T, v_.data());
    for (int h = 0; h < heads; ++h) {
      linear_f32(*c.k, c.pool_for(static_cast<int64_t>(T) * T * hd), q_.data() + h * hd, D, T, hd, k_.data() + h * hd, D, T, nullptr, scores_.data(), T);
      for (int i = 0; i < T; ++i) {
        float* s = &scores_[static_cast<size_t>(i) * T];
        float mx = -INFINITY;
        for (int j = 0; j < T; ++j) mx = std::max(mx, s[j] *= scale);
        float sum = 0.f;
        for (int j = 0; j < T; ++j) sum += (s[j] = std::exp(s[j] - mx));
        const float inv = 1.0f / sum;
        for (int j = 0; j < T; ++j) s[j] *= inv;
      }
      for (int j = 0; j < T; ++j) {
        for (int d = 0; d < hd; ++d) vt_[static_cast<size_t>(d) * T + j] = v_[static_cast<size_t>(j) * D + h * hd + d];
      }
      linear_f32(*c.k, c.pool_for(static_cast<int64_t>(T) * T * hd), scores_.data(), T, T, T, vt_.data(), T, hd, nullptr, att_.data() + h * hd, D);
    }
    L.out.forward(c, att_.data(), T, h_.data());
    for (size_t i = 0; i < static_cast<size_t>(T) * D; ++i) x_[i] += h_[i];
    for (int t = 0; t < T; ++t) layer_norm(&x_[t * D], L.ln2_w.data(), L.ln2_b.data(), D, eps, &h_[t * D]);
    L.fc1.forward(c, h_.data(), T, f_.data());
    for (float& v : f_) v = activate(act_, v);
    L.fc2.forward(c, f_.data(), T, h_.data());
    for (size_t i = 0; i < static_cast<size_t>(T) * D; ++i) x_[i] += h_[i];
  }
  if (post_norm_) {
    for (int t = 0; t < T; ++t) layer_norm(&x_[t * D], post_w_.data(), post_b_.data(), D, eps, out + static_cast<size_t>(t) * D);
  } else {
    std::copy(x_.begin(), x_.begin() + static_cast<size_t>(T) * D, out);
  }
}

void VisionPipeline::load(const WeightSource& ws, const std::string& family, const nlohmann::json& vision_config,
                          const nlohmann::json& projector_config, int text_hidden) {
  family_ = family;
  text_hidden_ = text_hidden;
  const VisionConfig vc = VisionConfig::from_json(vision_config);
  const nlohmann::json pc = projector_config.is_object() ? projector_config : nlohmann::json::object();
  const int D = vc.hidden;
  if (family == "smolvlm") {
    encoder_.load(ws, vc, "vision_model.", false);
    scale_factor_ = static_cast<int>(json_number(pc, "scale_factor", 2));
    const int side = vc.patches_per_side();
    if (scale_factor_ < 1 || side % scale_factor_) fail(ErrorCode::kCorruptFile, "pixel shuffle scale does not divide the patch grid");
    const int out_side = side / scale_factor_;
    tokens_per_tile_ = out_side * out_side;
    proj_ = ws.linear("connector.modality_projection.proj", text_hidden, D * scale_factor_ * scale_factor_, false);
    shuffled_.resize(static_cast<size_t>(tokens_per_tile_) * D * scale_factor_ * scale_factor_);
  } else if (family == "llava") {
    const std::string tower = pc.value("vision_model_type", std::string("clip_vision_model"));
    const bool clip = tower == "clip_vision_model";
    if (!clip && tower != "siglip_vision_model") fail(ErrorCode::kUnsupported, "LLaVA vision tower " + tower);
    encoder_.load(ws, vc, "vision_tower.", clip);
    drop_class_ = clip && pc.value("select_strategy", std::string("default")) == "default";
    tokens_per_tile_ = encoder_.tokens() - (drop_class_ ? 1 : 0);
    proj_act_ = act_from_name(pc.value("projector_act", std::string("gelu")));
    const bool bias = json_number(pc, "projector_bias", 1) != 0;
    linear1_ = ws.linear("multi_modal_projector.linear_1", text_hidden, D, bias);
    linear2_ = ws.linear("multi_modal_projector.linear_2", text_hidden, text_hidden, bias);
    mid_.resize(static_cast<size_t>(tokens_per_tile_) * text_hidden);
  } else {
    fail(ErrorCode::kUnsupported, "vision for model family '" + family + "' is not in the CPU engine yet");
  }
  hidden_.resize(static_cast<size_t>(encoder_.tokens()) * D);
}

void VisionPipeline::forward(Compute& c, const float* tile, float* out) {
  encoder_.forward(c, tile, hidden_.data());
  const int D = encoder_.config().hidden;
  if (family_ == "smolvlm") {
    const int s = scale_factor_, side = encoder_.config().patches_per_side(), os = side / s;
    float* dst = shuffled_.data();
    for (int r = 0; r < os; ++r) {
      for (int col = 0; col < os; ++col) {
        for (int i = 0; i < s; ++i) {
          for (int j = 0; j < s; ++j) {
            const float* src = &hidden_[static_cast<size_t>((r * s + i) * side + col * s + j) * D];
            dst = std::copy(src, src + D, dst);
          }
        }
      }
    }
    proj_.forward(c, shuffled_.data(), tokens_per_tile_, out);
    return;
  }
  const float* feats = hidden_.data() + (drop_class_ ? D : 0);
  linear1_.forward(c, feats, tokens_per_tile_, mid_.data());
  for (float& v : mid_) v = activate(proj_act_, v);
  linear2_.forward(c, mid_.data(), tokens_per_tile_, out);
}

}  // namespace edgevlm::cpu
