#include "engines/cpu/decoder.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"
#include "engines/cpu/threadpool.h"

namespace edgevlm::cpu {

void LlamaDecoder::load(const WeightSource& ws, const TextConfig& cfg, int max_context, KvDtype kv) {
  cfg_ = cfg;
  act_ = act_from_name(cfg.hidden_act);
  const int H = cfg.hidden, hd = cfg.head_dim, I = cfg.intermediate;
  const std::string lm = "language_model.";
  embed_ = ws.embedding(lm + "embed_tokens", cfg.vocab, H);
  layers_.clear();
  layers_.reserve(cfg.layers);
  for (int i = 0; i < cfg.layers; ++i) {
    const std::string p = lm + "layers." + std::to_string(i) + ".";
    DecoderLayer L;
    L.input_norm = ws.floats(p + "input_layernorm.weight", {H});
    L.post_norm = ws.floats(p + "post_attention_layernorm.weight", {H});
    L.q = ws.linear(p + "self_attn.q_proj", cfg.heads * hd, H, cfg.attention_bias);
    L.k = ws.linear(p + "self_attn.k_proj", cfg.kv_heads * hd, H, cfg.attention_bias);
    L.v = ws.linear(p + "self_attn.v_proj", cfg.kv_heads * hd, H, cfg.attention_bias);
    L.o = ws.linear(p + "self_attn.o_proj", H, cfg.heads * hd, cfg.attention_bias);
    L.gate = ws.linear(p + "mlp.gate_proj", I, H, cfg.mlp_bias);
    L.up = ws.linear(p + "mlp.up_proj", I, H, cfg.mlp_bias);
    L.down = ws.linear(p + "mlp.down_proj", H, I, cfg.mlp_bias);
    layers_.push_back(std::move(L));
  }
  final_norm_ = ws.floats(lm + "norm.weight", {H});
  const bool tied = cfg.tie_word_embeddings;
  lm_head_ = tied ? ws.tied_head(lm + "embed_tokens", lm + "lm_head", cfg.vocab, H)
                  : ws.linear(lm + "lm_head", cfg.vocab, H, false);

  float scale = 1.f;
  const std::vector<float> inv = rope_inverse_frequencies(cfg, &scale);
  const int half = hd / 2;
  cos_.assign(static_cast<size_t>(max_context) * half, 0.f);
  sin_.assign(cos_.size(), 0.f);
  for (int p = 0; p < max_context; ++p) {
    for (int i = 0; i < half; ++i) {
      const float f = static_cast<float>(p) * inv[i];
      cos_[static_cast<size_t>(p) * half + i] = std::cos(f) * scale;
      sin_[static_cast<size_t>(p) * half + i] = std::sin(f) * scale;
    }
  }
  cache_.init(kv, cfg.layers, cfg.kv_heads, max_context, hd);
  cap_ = 0;
  last_.assign(H, 0.f);
}

void LlamaDecoder::embed(const int64_t* ids, int n, float* out) const {
  for (int i = 0; i < n; ++i) embed_.row(ids[i], out + static_cast<size_t>(i) * cfg_.hidden);
}

void LlamaDecoder::ensure_scratch(int C) {
  if (C <= cap_) return;
  const size_t H = cfg_.hidden, qd = static_cast<size_t>(cfg_.heads) * cfg_.head_dim,
               kd = static_cast<size_t>(cfg_.kv_heads) * cfg_.head_dim, I = cfg_.intermediate;
  x_.resize(C * H), h_.resize(C * H), q_.resize(C * qd), k_.resize(C * kd), v_.resize(C * kd);
  att_.resize(C * qd), g_.resize(C * I), u_.resize(C * I);
  cap_ = C;
}

// Rotates one head vector x [hd] in place ("rotate half": dim i pairs with i + hd/2).
static inline void rope(float* x, const float* cs, const float* sn, int half) {
  for (int i = 0; i < half; ++i) {
    const float a = x[i], b = x[i + half];
    x[i] = a * cs[i] - b * sn[i];
    x[i + half] = b * cs[i] + a * sn[i];
  }
}

void LlamaDecoder::attention(Compute& c, int layer, const int32_t* positions, int C) {
  const int nh = cfg_.heads, kvh = cfg_.kv_heads, hd = cfg_.head_dim, groups = nh / kvh;
  const int ctx = cache_.max_context();
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  int64_t work = 0;
  for (int i = 0; i < C; ++i) work += static_cast<int64_t>(positions[i] + 1) * nh * hd * 2;
  ThreadPool* pool = c.pool_for(work);
  const int parts = pool ? pool->size() : 1;
  if (static_cast<int>(part_scratch_.size()) < parts) part_scratch_.resize(parts);
  const int tasks = kvh * C;
  auto run = [&](int part) {
    std::vector<float>& s = part_scratch_[part];
    const size_t need = static_cast<size_t>(groups) * ctx + 2 * hd;
    if (s.size() < need) s.resize(need);
    float* scores = s.data();
    float* tmp = s.data() + static_cast<size_t>(groups) * ctx;
    const int t0 = static_cast<int>(static_cast<int64_t>(tasks) * part / parts);
    const int t1 = static_cast<int>(static_cast<int64_t>(tasks) * (part + 1) / parts);
    for (int t = t0; t < t1; ++t) {
      const int kv = t / C, row = t % C;
      const int p = positions[row];
      const float* q = q_.data() + (static_cast<size_t>(row) * nh + kv * groups) * hd;  // [groups, hd]
      for (int j = 0; j <= p; ++j) {
        const float* kj = cache_.read(0, layer, kv, j, tmp, *c.k);
        for (int g = 0; g < groups; ++g) scores[static_cast<size_t>(g) * ctx + j] = c.k->dot_f32(q + g * hd, kj, hd) * scale;
      }
      for (int g = 0; g < groups; ++g) {
        float* sc = scores + static_cast<size_t>(g) * ctx;
        float mx = sc[0];
        for (int j = 1; j <= p; ++j) mx = std::max(mx, sc[j]);
        float sum = 0.f;
        for (int j = 0; j <= p; ++j) {
          sc[j] = std::exp(sc[j] - mx);
          sum += sc[j];
        }
        const float inv = 1.0f / sum;
        for (int j = 0; j <= p; ++j) sc[j] *= inv;
      }
      float* out = att_.data() + (static_cast<size_t>(row) * nh + kv * groups) * hd;
      std::fill(out, out + static_cast<size_t>(groups) * hd, 0.f);
      for (int j = 0; j <= p; ++j) {
        const float* vj = cache_.read(1, layer, kv, j, tmp + hd, *c.k);
        for (int g = 0; g < groups; ++g) {
          const float w = scores[static_cast<size_t>(g) * ctx + j];
          float* o = out + g * hd;
          for (int d = 0; d < hd; ++d) o[d] += w * vj[d];
        }
      }
    }
  };
  if (pool && parts > 1 && tasks > 1) {
    pool->parallel_for(parts, [&](int b, int e) {
      for (int part = b; part < e; ++part) run(part);
    });
  } else {
    for (int part = 0; part < parts; ++part) run(part);
  }
}

void LlamaDecoder::forward(Compute& c, const float* rows, const int32_t* positions, int C, float* logits) {
  if (C < 1) fail(ErrorCode::kInvalidArgument, "empty chunk");
  const int ctx = cache_.max_context();
  for (int i = 0; i < C; ++i) {
    if (positions[i] < 0 || positions[i] >= ctx) {
      fail(ErrorCode::kContextOverflow, "position " + std::to_string(positions[i]) + " is outside the context of " +
                                            std::to_string(ctx) + " tokens");
    }
  }
  ensure_scratch(C);
  const int H = cfg_.hidden, nh = cfg_.heads, kvh = cfg_.kv_heads, hd = cfg_.head_dim, I = cfg_.intermediate;
  const int half = hd / 2;
  const float eps = cfg_.rms_norm_eps;
  std::copy(rows, rows + static_cast<size_t>(C) * H, x_.begin());
  for (int l = 0; l < cfg_.layers; ++l) {
    DecoderLayer& L = layers_[l];
    for (int i = 0; i < C; ++i) rms_norm(&x_[static_cast<size_t>(i) * H], L.input_norm.data(), H, eps, &h_[static_cast<size_t>(i) * H]);
    L.q.forward(c, h_.data(), C, q_.data());
    L.k.forward(c, h_.data(), C, k_.data());
    L.v.forward(c, h_.data(), C, v_.data());
    for (int i = 0; i < C; ++i) {
      const float* cs = &cos_[static_cast<size_t>(positions[i]) * half];
      const float* sn = &sin_[static_cast<size_t>(positions[i]) * half];
      for (int h = 0; h < nh; ++h) rope(&q_[(static_cast<size_t>(i) * nh + h) * hd], cs, sn, half);
      for (int h = 0; h < kvh; ++h) {
        float* kr = &k_[(static_cast<size_t>(i) * kvh + h) * hd];
        rope(kr, cs, sn, half);
        cache_.write(0, l, h, positions[i], kr, *c.k);
        cache_.write(1, l, h, positions[i], &v_[(static_cast<size_t>(i) * kvh + h) * hd], *c.k);
      }
    }
    attention(c, l, positions, C);
    L.o.forward(c, att_.data(), C, h_.data());
    for (size_t i = 0; i < static_cast<size_t>(C) * H; ++i) x_[i] += h_[i];
    for (int i = 0; i < C; ++i) rms_norm(&x_[static_cast<size_t>(i) * H], L.post_norm.data(), H, eps, &h_[static_cast<size_t>(i) * H]);
    L.gate.forward(c, h_.data(), C, g_.data());
    L.up.forward(c, h_.data(), C, u_.data());
    for (size_t i = 0; i < static_cast<size_t>(C) * I; ++i) g_[i] = activate(act_, g_[i]) * u_[i];
    L.down.forward(c, g_.data(), C, h_.data());
    for (size_t i = 0; i < static_cast<size_t>(C) * H; ++i) x_[i] += h_[i];
  }
  rms_norm(&x_[static_cast<size_t>(C - 1) * H], final_norm_.data(), H, eps, last_.data());
  lm_head_.forward(c, last_.data(), 1, logits);
}

}  // namespace edgevlm::cpu
