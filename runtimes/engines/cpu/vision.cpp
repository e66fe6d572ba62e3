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

namespace {

// MobileNetV3's squeeze width (mobilevlm/projector.py squeeze_channels): channels / 4 rounded to a
// multiple of 8, never more than 10% below.
int squeeze_channels(int channels) {
  const int v = channels / 4;
  const int rounded = std::max(8, (v + 4) / 8 * 8);
  return rounded < 0.9 * v ? rounded + 8 : rounded;
}

float hardsigmoid(float x) { return std::min(std::max(x + 3.0f, 0.0f), 6.0f) / 6.0f; }

// Depthwise 3x3 conv, padding 1, on channels-last grids: in [side, side, C] -> out [os, os, C],
// os = (side - 1) / stride + 1; w [C, 9]; bias [C] or null.
void depthwise3x3(const float* in, int side, int C, int stride, const float* w, const float* bias, float* out) {
  const int os = (side - 1) / stride + 1;
  for (int i = 0; i < os; ++i) {
    for (int j = 0; j < os; ++j) {
      float* o = out + (static_cast<size_t>(i) * os + j) * C;
      for (int ch = 0; ch < C; ++ch) o[ch] = bias ? bias[ch] : 0.0f;
      for (int di = 0; di < 3; ++di) {
        const int r = i * stride + di - 1;
        if (r < 0 || r >= side) continue;
        for (int dj = 0; dj < 3; ++dj) {
          const int col = j * stride + dj - 1;
          if (col < 0 || col >= side) continue;
          const float* x = in + (static_cast<size_t>(r) * side + col) * C;
          for (int ch = 0; ch < C; ++ch) o[ch] += w[ch * 9 + di * 3 + dj] * x[ch];
        }
      }
    }
  }
}

}  // namespace

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
  } else if (family == "mobilevlm") {
    const std::string type = pc.value("projector_type", std::string("ldpnetv2"));
    if (type != "ldpnet" && type != "ldpnetv2") fail(ErrorCode::kUnsupported, "MobileVLM projector '" + type + "'");
    if (pc.value("select_feature", std::string("patch")) != "patch") {
      fail(ErrorCode::kUnsupported, "MobileVLM select_feature other than 'patch'");
    }
    encoder_.load(ws, vc, "vision_tower.", true);
    drop_class_ = true;  // select_feature "patch"
    const int side = vc.patches_per_side(), H = text_hidden;
    ldp_v2_ = type == "ldpnetv2";
    proj_act_ = Act::gelu;  // nn.GELU between the two MLP linears
    const std::string mlp = ldp_v2_ ? "mm_projector.mlp.mlp." : "mm_projector.model.mlp.";
    linear1_ = ws.linear(mlp + (ldp_v2_ ? "0" : "1"), H, D, true);
    linear2_ = ws.linear(mlp + (ldp_v2_ ? "2" : "3"), H, H, true);
    if (ldp_v2_) {
      peg_w_ = ws.floats("mm_projector.peg.peg.0.weight", {H, 1, 3, 3});
      peg_b_ = ws.floats("mm_projector.peg.peg.0.bias", {H});
      tokens_per_tile_ = 144;  // LDPv2 pools to 12 x 12
    } else {
      const int S = squeeze_channels(H);
      for (int i = 1; i <= 2; ++i) {
        const std::string b = "mm_projector.model.mb_block." + std::to_string(i) + ".block.";
        LdpBlock blk;
        blk.stride = i;  // the first keeps the grid (residual), the second halves it
        blk.squeeze = S;
        blk.dw = ws.floats(b + "0.0.weight", {H, 1, 3, 3});
        blk.ln1_w = ws.floats(b + "0.1.weight", {H});
        blk.ln1_b = ws.floats(b + "0.1.bias", {H});
        blk.se1_w = ws.floats(b + "1.fc1.weight", {S, H, 1, 1});
        blk.se1_b = ws.floats(b + "1.fc1.bias", {S});
        blk.se2_w = ws.floats(b + "1.fc2.weight", {H, S, 1, 1});
        blk.se2_b = ws.floats(b + "1.fc2.bias", {H});
        blk.pw.path = b + "2.0", blk.pw.in = H, blk.pw.out = H;
        blk.pw.w_owned = ws.floats(b + "2.0.weight", {H, H, 1, 1});
        blk.ln2_w = ws.floats(b + "2.1.weight", {H});
        blk.ln2_b = ws.floats(b + "2.1.bias", {H});
        ldp_blocks_.push_back(std::move(blk));
      }
      const int os = (side - 1) / 2 + 1;
      tokens_per_tile_ = os * os;
    }
    const size_t cells = static_cast<size_t>(side) * side * H;
    mid_.resize(cells);
    grid_a_.resize(cells);
    grid_b_.resize(cells);
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
  if (family_ == "mobilevlm") {
    ldp_forward(c, feats, out);
    return;
  }
  linear1_.forward(c, feats, tokens_per_tile_, mid_.data());
  for (float& v : mid_) v = activate(proj_act_, v);
  linear2_.forward(c, mid_.data(), tokens_per_tile_, out);
}

// MobileVLM: the MLP on every patch token, the tokens as a channels-last grid, then LDP's two
// inverted-residual blocks (v1) or 12 x 12 average pooling and the positional conv (v2).
void VisionPipeline::ldp_forward(Compute& c, const float* feats, float* out) {
  const int H = text_hidden_, side = encoder_.config().patches_per_side();
  const int n = side * side;
  linear1_.forward(c, feats, n, grid_a_.data());
  for (size_t i = 0; i < static_cast<size_t>(n) * H; ++i) grid_a_[i] = activate(proj_act_, grid_a_[i]);
  linear2_.forward(c, grid_a_.data(), n, mid_.data());  // [side, side, H]
  if (ldp_v2_) {
    constexpr int G = 12;  // adaptive average pooling to 12 x 12 (2 x 2 windows on the usual 24 x 24)
    for (int i = 0; i < G; ++i) {
      const int r0 = i * side / G, r1 = ((i + 1) * side + G - 1) / G;
      for (int j = 0; j < G; ++j) {
        const int c0 = j * side / G, c1 = ((j + 1) * side + G - 1) / G;
        float* o = &grid_a_[(static_cast<size_t>(i) * G + j) * H];
        std::fill(o, o + H, 0.0f);
        for (int r = r0; r < r1; ++r)
          for (int col = c0; col < c1; ++col) {
            const float* x = &mid_[(static_cast<size_t>(r) * side + col) * H];
            for (int ch = 0; ch < H; ++ch) o[ch] += x[ch];
          }
        const float inv = 1.0f / static_cast<float>((r1 - r0) * (c1 - c0));
        for (int ch = 0; ch < H; ++ch) o[ch] *= inv;
      }
    }
    depthwise3x3(grid_a_.data(), G, H, 1, peg_w_.data(), peg_b_.data(), out);
    for (size_t i = 0; i < static_cast<size_t>(G) * G * H; ++i) out[i] += grid_a_[i];
    return;
  }
  float* x = mid_.data();
  int s = side;
  for (size_t bi = 0; bi < ldp_blocks_.size(); ++bi) {
    const LdpBlock& b = ldp_blocks_[bi];
    const int os = (s - 1) / b.stride + 1, cells = os * os;
    float* t = grid_a_.data();  // depthwise conv, LayerNorm, Hardswish
    depthwise3x3(x, s, H, b.stride, b.dw.data(), nullptr, t);
    for (int p = 0; p < cells; ++p) {
      float* row = t + static_cast<size_t>(p) * H;
      layer_norm(row, b.ln1_w.data(), b.ln1_b.data(), H, 1e-5f, row);
      for (int ch = 0; ch < H; ++ch) row[ch] *= hardsigmoid(row[ch]);  // hardswish = x * hardsigmoid(x)
    }
    std::vector<float> mean(H, 0.0f), sq(b.squeeze), scale(H);  // squeeze-excitation
    for (int p = 0; p < cells; ++p)
      for (int ch = 0; ch < H; ++ch) mean[ch] += t[static_cast<size_t>(p) * H + ch];
    for (float& m : mean) m /= static_cast<float>(cells);
    for (int k = 0; k < b.squeeze; ++k) {
      float v = b.se1_b[k];
      for (int ch = 0; ch < H; ++ch) v += b.se1_w[static_cast<size_t>(k) * H + ch] * mean[ch];
      sq[k] = std::max(v, 0.0f);
    }
    for (int ch = 0; ch < H; ++ch) {
      float v = b.se2_b[ch];
      for (int k = 0; k < b.squeeze; ++k) v += b.se2_w[static_cast<size_t>(ch) * b.squeeze + k] * sq[k];
      scale[ch] = hardsigmoid(v);
    }
    for (int p = 0; p < cells; ++p)
      for (int ch = 0; ch < H; ++ch) t[static_cast<size_t>(p) * H + ch] *= scale[ch];
    const bool last = bi + 1 == ldp_blocks_.size();
    float* y = last ? out : grid_b_.data();  // pointwise conv, LayerNorm, residual at stride 1
    b.pw.forward(c, t, cells, y);
    for (int p = 0; p < cells; ++p) {
      float* row = y + static_cast<size_t>(p) * H;
      layer_norm(row, b.ln2_w.data(), b.ln2_b.data(), H, 1e-5f, row);
      if (b.stride == 1)
        for (int ch = 0; ch < H; ++ch) row[ch] += x[static_cast<size_t>(p) * H + ch];
    }
    if (!last) {
      std::copy(y, y + static_cast<size_t>(cells) * H, mid_.data());
      x = mid_.data();
    }
    s = os;
  }
}

}  // namespace edgevlm::cpu
