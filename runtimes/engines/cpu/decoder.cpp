#include "engines/cpu/decoder.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"
#include "engines/cpu/threadpool.h"

namespace edgevlm::cpu {

std::shared_ptr<const LlamaWeights> LlamaWeights::load(const WeightSource& ws, const TextConfig& cfg, int max_context) {
  auto w = std::make_shared<LlamaWeights>();
  w->cfg = cfg;
  w->act = act_from_name(cfg.hidden_act);
  w->max_context = max_context;
  const int H = cfg.hidden, hd = cfg.head_dim, I = cfg.intermediate;
  const std::string lm = "language_model.";
  w->embed = ws.embedding(lm + "embed_tokens", cfg.vocab, H);
  w->layers.reserve(cfg.layers);
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
    L.fused_qkv = fuse_linears({&L.q, &L.k, &L.v}, L.qkv);
    L.fused_gate_up = fuse_linears({&L.gate, &L.up}, L.gate_up);
    w->layers.push_back(std::move(L));
  }
  w->final_norm = ws.floats(lm + "norm.weight", {H});
  const bool tied = cfg.tie_word_embeddings;
  w->lm_head = tied ? ws.tied_head(lm + "embed_tokens", lm + "lm_head", cfg.vocab, H)
                    : ws.linear(lm + "lm_head", cfg.vocab, H, false);

  float scale = 1.f;
  const std::vector<float> inv = rope_inverse_frequencies(cfg, &scale);
  const int half = hd / 2;
  w->cos.assign(static_cast<size_t>(max_context) * half, 0.f);
  w->sin.assign(w->cos.size(), 0.f);
  for (int p = 0; p < max_context; ++p) {
    for (int i = 0; i < half; ++i) {
      const float f = static_cast<float>(p) * inv[i];
      w->cos[static_cast<size_t>(p) * half + i] = std::cos(f) * scale;
      w->sin[static_cast<size_t>(p) * half + i] = std::sin(f) * scale;
    }
  }
  return w;
}

LlamaDecoder::LlamaDecoder(std::shared_ptr<const LlamaWeights> weights, KvDtype kv) : w_(std::move(weights)) {
  const TextConfig& cfg = w_->cfg;
  cache_.init(kv, cfg.layers, cfg.kv_heads, w_->max_context, cfg.head_dim);
  last_.assign(cfg.hidden, 0.f);
}

void LlamaDecoder::embed(const int64_t* ids, int n, float* out) const {
  for (int i = 0; i < n; ++i) w_->embed.row(ids[i], out + static_cast<size_t>(i) * w_->cfg.hidden);
}

void LlamaDecoder::ensure_scratch(int C) {
  if (C <= cap_) return;
  const TextConfig& cfg = w_->cfg;
  const size_t H = cfg.hidden, qd = static_cast<size_t>(cfg.heads) * cfg.head_dim,
               kd = static_cast<size_t>(cfg.kv_heads) * cfg.head_dim, I = cfg.intermediate;
  x_.resize(C * H), h_.resize(C * H), qkv_.resize(C * (qd + 2 * kd));
  att_.resize(C * qd), gu_.resize(C * 2 * I), mid_.resize(C * I);
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

// q [C, nh*hd] (row stride ldq) attends over the cache (keys and values of this chunk already
// written) into att_ [C, nh*hd]. Tasks are (kv head, row) pairs split contiguously over the pool;
// a part converts its kv head's keys and values to float once for all its rows, or, with an fp16
// cache and a kernel set that has attend_f16, reads them in place.
void LlamaDecoder::attention(Compute& c, int layer, const int32_t* positions, int C, const float* q, size_t ldq) {
  const TextConfig& cfg = w_->cfg;
  const int nh = cfg.heads, kvh = cfg.kv_heads, hd = cfg.head_dim, groups = nh / kvh;
  const int ctx = cache_.max_context();
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  int64_t work = 0;
  for (int i = 0; i < C; ++i) work += static_cast<int64_t>(positions[i] + 1) * nh * hd * 2;
  const int tasks = kvh * C;
  ThreadPool* pool = c.pool_for(work);
  const int parts = pool ? std::min(pool->size(), tasks) : 1;
  if (static_cast<int>(part_scratch_.size()) < parts) part_scratch_.resize(parts);
  const bool in_place = c.k->attend_f16 != nullptr && cache_.f16_rows(0, layer, 0) != nullptr;
  auto run = [&](int part) {
    std::vector<float>& s = part_scratch_[part];
    const size_t need = (in_place ? 0 : 2 * static_cast<size_t>(hd) * ctx) + static_cast<size_t>(groups) * ctx;
    if (s.size() < need) s.resize(need);
    float* scores = s.data();
    float* kbuf = scores + static_cast<size_t>(groups) * ctx;  // float copies of keys and values (not in place)
    float* vbuf = kbuf + static_cast<size_t>(ctx) * hd;
    const int t0 = static_cast<int>(static_cast<int64_t>(tasks) * part / parts);
    const int t1 = static_cast<int>(static_cast<int64_t>(tasks) * (part + 1) / parts);
    int loaded = -1;
    const float *keys = nullptr, *values = nullptr;
    for (int t = t0; t < t1; ++t) {
      const int kv = t / C, row = t % C;
      const size_t off = static_cast<size_t>(kv) * groups * hd;
      if (in_place) {  // the fp16 cache read where it lies: no float copy of every position
        c.k->attend_f16(q + row * ldq + off, cache_.f16_rows(0, layer, kv), cache_.f16_rows(1, layer, kv), hd,
                        positions[row] + 1, hd, groups, scale, scores, att_.data() + static_cast<size_t>(row) * nh * hd + off);
        continue;
      }
      if (kv != loaded) {
        int n = 0;  // positions this part's rows of kv head `kv` need
        for (int u = t; u < t1 && u / C == kv; ++u) n = std::max(n, positions[u % C] + 1);
        keys = cache_.read_rows(0, layer, kv, n, kbuf, *c.k);
        values = cache_.read_rows(1, layer, kv, n, vbuf, *c.k);
        loaded = kv;
      }
      c.k->attend(q + row * ldq + off, keys, values, hd, positions[row] + 1, hd, groups, scale, scores,
                  att_.data() + static_cast<size_t>(row) * nh * hd + off);
    }
  };
  if (parts > 1) {
    pool->parallel_for(parts, [&](int b, int e) {
      for (int part = b; part < e; ++part) run(part);
    });
  } else {
    run(0);
  }
}

void LlamaDecoder::forward(Compute& c, const float* rows, const int32_t* positions, int C, float* logits,
                           bool all_rows) {
  if (C < 1) fail(ErrorCode::kInvalidArgument, "empty chunk");
  const int ctx = cache_.max_context();
  for (int i = 0; i < C; ++i) {
    if (positions[i] < 0 || positions[i] >= ctx) {
      fail(ErrorCode::kContextOverflow, "position " + std::to_string(positions[i]) + " is outside the context of " +
                                            std::to_string(ctx) + " tokens");
    }
  }
  ensure_scratch(C);
  const LlamaWeights& W = *w_;
  const TextConfig& cfg = W.cfg;
  const int H = cfg.hidden, nh = cfg.heads, kvh = cfg.kv_heads, hd = cfg.head_dim, I = cfg.intermediate;
  const int half = hd / 2;
  const float eps = cfg.rms_norm_eps;
  const size_t qd = static_cast<size_t>(nh) * hd, kd = static_cast<size_t>(kvh) * hd;
  std::copy(rows, rows + static_cast<size_t>(C) * H, x_.begin());
  for (int l = 0; l < cfg.layers; ++l) {
    const DecoderLayer& L = W.layers[l];
    for (int i = 0; i < C; ++i) rms_norm(&x_[static_cast<size_t>(i) * H], L.input_norm.data(), H, eps, &h_[static_cast<size_t>(i) * H]);
    // q, k, v of row i at qkv_ + i*ldq (+ qd, + qd + kd): fused side by side, else three blocks
    float *q = qkv_.data(), *k = q + qd, *v = k + kd;
    size_t ldq = qd + 2 * kd, ldk = ldq;
    if (L.fused_qkv) {
      L.qkv.forward(c, h_.data(), C, qkv_.data());
    } else {
      k = q + C * qd, v = k + C * kd, ldq = qd, ldk = kd;
      L.q.forward(c, h_.data(), C, q);
      L.k.forward(c, h_.data(), C, k);
      L.v.forward(c, h_.data(), C, v);
    }
    for (int i = 0; i < C; ++i) {
      const float* cs = &W.cos[static_cast<size_t>(positions[i]) * half];
      const float* sn = &W.sin[static_cast<size_t>(positions[i]) * half];
      for (int h = 0; h < nh; ++h) rope(q + i * ldq + static_cast<size_t>(h) * hd, cs, sn, half);
      for (int h = 0; h < kvh; ++h) {
        float* kr = k + i * ldk + static_cast<size_t>(h) * hd;
        rope(kr, cs, sn, half);
        cache_.write(0, l, h, positions[i], kr, *c.k);
        cache_.write(1, l, h, positions[i], v + i * ldk + static_cast<size_t>(h) * hd, *c.k);
      }
    }
    attention(c, l, positions, C, q, ldq);
    L.o.forward(c, att_.data(), C, h_.data());
    for (size_t i = 0; i < static_cast<size_t>(C) * H; ++i) x_[i] += h_[i];
    for (int i = 0; i < C; ++i) rms_norm(&x_[static_cast<size_t>(i) * H], L.post_norm.data(), H, eps, &h_[static_cast<size_t>(i) * H]);
    // gate and up of row i at gu_ + i*ldg (+ I)
    float* gate = gu_.data();
    float* up = gate + I;
    size_t ldg = 2 * static_cast<size_t>(I);
    if (L.fused_gate_up) {
      L.gate_up.forward(c, h_.data(), C, gate);
    } else {
      up = gate + static_cast<size_t>(C) * I, ldg = I;
      L.gate.forward(c, h_.data(), C, gate);
      L.up.forward(c, h_.data(), C, up);
    }
    for (int i = 0; i < C; ++i) {
      const float* gi = gate + i * ldg;
      const float* ui = up + i * ldg;
      float* mi = &mid_[static_cast<size_t>(i) * I];
      if (W.act == Act::silu) {
        c.k->silu_mul(gi, ui, mi, I);
      } else {
        for (int j = 0; j < I; ++j) mi[j] = activate(W.act, gi[j]) * ui[j];
      }
    }
    L.down.forward(c, mid_.data(), C, h_.data());
    for (size_t i = 0; i < static_cast<size_t>(C) * H; ++i) x_[i] += h_[i];
  }
  if (all_rows) {
    for (int i = 0; i < C; ++i) rms_norm(&x_[static_cast<size_t>(i) * H], W.final_norm.data(), H, eps, &h_[static_cast<size_t>(i) * H]);
    W.lm_head.forward(c, h_.data(), C, logits);
    return;
  }
  rms_norm(&x_[static_cast<size_t>(C - 1) * H], W.final_norm.data(), H, eps, last_.data());
  W.lm_head.forward(c, last_.data(), 1, logits);
}

}  // namespace edgevlm::cpu
