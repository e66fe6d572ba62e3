#include "engines/cpu/linear.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "core/error.h"

namespace edgevlm::cpu {

namespace {

int padded(int k, int g) { return (k + g - 1) / g * g; }

ActScheme parse_act(const std::string& scheme, const std::string& path) {
  const auto at = scheme.find("a=");
  if (at == std::string::npos) return ActScheme::none;
  const std::string a = scheme.substr(at + 2, scheme.find(':', at) == std::string::npos ? std::string::npos
                                                                                         : scheme.find(':', at) - at - 2);
  if (a == "none") return ActScheme::none;
  if (a == "token") return ActScheme::token;
  if (a == "group32") return ActScheme::group32;
  if (a == "static") return ActScheme::static_;
  fail(ErrorCode::kUnsupported, path + ": activation scheme '" + a + "' unknown (scheme " + scheme + ")");
}

Floats to_floats(const TensorView& t) {
  const size_t n = static_cast<size_t>(t.numel());
  Floats out(n);
  if (t.dtype == DType::kF32) {
    std::memcpy(out.data(), t.data, n * 4);
  } else if (t.dtype == DType::kF16 || t.dtype == DType::kBF16) {
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, t.data + 2 * i, 2);
      if (t.dtype == DType::kF16) {
        out[i] = f16_to_f32_scalar(h);
      } else {
        uint32_t b = static_cast<uint32_t>(h) << 16;
        std::memcpy(&out[i], &b, 4);
      }
    }
  } else {
    fail(ErrorCode::kCorruptFile, "tensor '" + t.name + "' is " + dtype_name(t.dtype) + ", expected a float dtype");
  }
  return out;
}

void check_shape(const TensorView& t, const std::vector<int64_t>& shape, const std::string& file) {
  bool ok = t.shape.size() == shape.size();
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || shape[i] == t.shape[i];
  if (!ok) {
    std::string want = "[";
    for (size_t i = 0; i < shape.size(); ++i) want += (i ? ", " : "") + std::to_string(shape[i]);
    fail(ErrorCode::kCorruptFile, file + ": tensor '" + t.name + "' has shape " + t.shape_str() + ", expected " +
                                      want + "]");
  }
}

std::vector<std::pair<std::string, std::string>> family_prefixes(const std::string& family) {
  // (our prefix, checkpoint prefix) as the Python families' PREFIXES tables name them
  if (family == "llama") return {{"language_model.lm_head.", "lm_head."}, {"language_model.", "model."}};
  if (family == "smolvlm") {
    return {{"language_model.lm_head.", "lm_head."}, {"vision_model.", "model.vision_model."},
            {"connector.", "model.connector."}, {"language_model.", "model.text_model."}};
  }
  if (family == "llava") {
    return {{"language_model.lm_head.", "lm_head."}, {"language_model.lm_head.", "language_model.lm_head."},
            {"vision_tower.", "model.vision_tower.vision_model."}, {"vision_tower.", "vision_tower.vision_model."},
            {"vision_tower.", "model.vision_tower."}, {"vision_tower.", "vision_tower."},
            {"multi_modal_projector.", "model.multi_modal_projector."},
            {"language_model.", "model.language_model."}, {"language_model.", "language_model.model."}};
  }
  if (family == "mobilevlm") {
    return {{"language_model.lm_head.", "lm_head."}, {"vision_tower.", "model.vision_tower.vision_tower.vision_model."},
            {"vision_tower.", "model.vision_tower.vision_tower."}, {"mm_projector.", "model.mm_projector."},
            {"language_model.", "model."}};
  }
  return {};
}

}  // namespace

// ---- WeightSource --------------------------------------------------------------------------------

WeightSource::WeightSource(const Bundle& bundle, const std::string& family)
    : st_(bundle.weights()), bundle_(bundle), prefixes_(family_prefixes(family)) {}

std::string WeightSource::resolve(const std::string& ours) const {
  if (st_.contains(ours)) return ours;
  for (const auto& [mine, stored] : prefixes_) {
    if (ours.compare(0, mine.size(), mine) == 0) {
      std::string cand = stored + ours.substr(mine.size());
      if (st_.contains(cand)) return cand;
    }
  }
  return "";
}

bool WeightSource::has(const std::string& name) const { return !resolve(name).empty(); }

const TensorView& WeightSource::get(const std::string& ours) const {
  const std::string name = resolve(ours);
  return st_.get(name.empty() ? ours : name);  // a missing name throws kCorruptFile naming it
}

Floats WeightSource::floats(const std::string& name, const std::vector<int64_t>& shape) const {
  const TensorView& t = get(name);
  check_shape(t, shape, st_.path());
  Floats out = to_floats(t);
  st_.release_pages(t);
  return out;
}

Linear WeightSource::linear(const std::string& path, int out, int in, bool bias) const {
  Linear l;
  l.path = path, l.in = in, l.out = out;
  if (bias) l.bias = floats(path + ".bias", {out});
  const QuantLayer* q = bundle_.quant_layer(path);
  if (q == nullptr) {
    l.kind = WeightKind::f32;
    l.w_owned = floats(path + ".weight", {out, in});
    return l;
  }
  if (q->kind != "linear") fail(ErrorCode::kCorruptFile, path + ": quantized layer of kind '" + q->kind + "', expected linear");
  if (q->shape.size() != 2 || q->shape[0] != out || q->shape[1] != in) {
    fail(ErrorCode::kCorruptFile, path + ": quantized shape does not match the model config");
  }
  l.act = parse_act(q->scheme, path);
  const int g = q->group_size > 0 ? q->group_size : in;
  const TensorView& sc = get(path + ".scales");
  if (sc.dtype != DType::kF32 && sc.dtype != DType::kF16) {
    fail(ErrorCode::kCorruptFile, path + ".scales: dtype " + dtype_name(sc.dtype) + ", expected F32 or F16");
  }
  const bool fp16 = sc.dtype == DType::kF16;
  if (q->bits == 4) {
    const int kp = padded(in, g);
    const uint8_t* qd = st_.expect<uint8_t>(resolve(path + ".qdata"), {out, kp / 2});
    st_.expect_raw(resolve(path + ".scales"), sc.dtype, {out, kp / g});
    const uint8_t* z = q->symmetric ? nullptr : st_.expect<uint8_t>(resolve(path + ".zeros"), {out, kp / g});
    if (l.act == ActScheme::group32 && g % 32) fail(ErrorCode::kUnsupported, path + ": group32 activations need groups of 32k");
    if (l.act == ActScheme::static_) fail(ErrorCode::kUnsupported, path + ": static activations with int4 weights");
    l.kind = WeightKind::q4;
    l.q4 = pack_q4(qd, out, kp, g, sc.data, fp16, z);
    st_.release_pages(get(path + ".qdata"));
  } else if (q->bits == 8) {
    if (g != in) fail(ErrorCode::kUnsupported, path + ": int8 weights with groups (only per-channel int8 is supported)");
    const int8_t* qd = st_.expect<int8_t>(resolve(path + ".qdata"), {out, in});
    st_.expect_raw(resolve(path + ".scales"), sc.dtype, {out, 1});
    if (l.act == ActScheme::group32) fail(ErrorCode::kUnsupported, path + ": int8 weights with group32 activations");
    l.kind = WeightKind::q8;
    l.q8 = pack_q8(qd, out, in, sc.data, fp16);
    st_.release_pages(get(path + ".qdata"));
    if (l.act == ActScheme::static_) {
      l.act_scale = floats(path + ".act_scale", {})[0];
      const int n = q->outliers;
      const int64_t* idx = st_.expect<int64_t>(resolve(path + ".outlier_idx"), {n});
      l.outlier_idx.assign(idx, idx + n);
      for (int64_t i : l.outlier_idx) {
        if (i < 0 || i >= in) fail(ErrorCode::kCorruptFile, path + ".outlier_idx: channel out of range");
      }
      l.outlier_w = floats(path + ".outlier_weight", {out, n});
      l.is_outlier.assign(in, 0);
      for (int64_t i : l.outlier_idx) l.is_outlier[i] = 1;
    }
  } else {
    fail(ErrorCode::kUnsupported, path + ": " + std::to_string(q->bits) + "-bit weights");
  }
  return l;
}

Linear WeightSource::tied_head(const std::string& embed_path, const std::string& head_path, int vocab,
                               int hidden) const {
  const QuantLayer* e = bundle_.quant_layer(embed_path);
  const QuantLayer* h = bundle_.quant_layer(head_path);
  if (e == nullptr) {  // float embedding: the head multiplies by it
    Linear l;
    l.path = head_path, l.in = hidden, l.out = vocab;
    l.w_owned = floats(embed_path + ".weight", {vocab, hidden});
    return l;
  }
  // the head runs weight-only or with per-token activations (quant/modules.py TiedQuantLinear)
  ActScheme act = h ? parse_act(h->scheme, head_path) : ActScheme::none;
  if (act != ActScheme::token) act = ActScheme::none;
  Linear l;
  l.path = head_path, l.in = hidden, l.out = vocab;
  l.act = act;
  const int g = e->group_size > 0 ? e->group_size : hidden;
  const TensorView& sc = get(embed_path + ".scales");
  const bool fp16 = sc.dtype == DType::kF16;
  if (e->bits == 4) {
    const int kp = padded(hidden, g);
    const uint8_t* qd = st_.expect<uint8_t>(resolve(embed_path + ".qdata"), {vocab, kp / 2});
    st_.expect_raw(resolve(embed_path + ".scales"), sc.dtype, {vocab, kp / g});
    const uint8_t* z = e->symmetric ? nullptr : st_.expect<uint8_t>(resolve(embed_path + ".zeros"), {vocab, kp / g});
    l.kind = WeightKind::q4;
    l.q4 = pack_q4(qd, vocab, kp, g, sc.data, fp16, z);
    st_.release_pages(get(embed_path + ".qdata"));  // the embedding's row lookups fault in what they read
  } else if (e->bits == 8 && g == hidden) {
    const int8_t* qd = st_.expect<int8_t>(resolve(embed_path + ".qdata"), {vocab, hidden});
    st_.expect_raw(resolve(embed_path + ".scales"), sc.dtype, {vocab, 1});
    l.kind = WeightKind::q8;
    l.q8 = pack_q8(qd, vocab, hidden, sc.data, fp16);
    st_.release_pages(get(embed_path + ".qdata"));  // the embedding's row lookups fault in what they read
  } else {
    fail(ErrorCode::kUnsupported, embed_path + ": embedding scheme " + e->scheme + " as a tied LM head");
  }
  return l;
}

WeightSource::Embedding WeightSource::embedding(const std::string& path, int vocab, int dim) const {
  Embedding e;
  e.vocab = vocab, e.dim = dim;
  const QuantLayer* q = bundle_.quant_layer(path);
  if (q == nullptr) {
    e.w_owned = floats(path + ".weight", {vocab, dim});
    return e;
  }
  e.group = q->group_size > 0 ? q->group_size : dim;
  e.k_pad = padded(dim, e.group);
  const int G = e.k_pad / e.group;
  e.scales = floats(path + ".scales", {vocab, G});
  if (q->bits == 4) {
    e.kind = WeightKind::q4;
    e.qdata = st_.expect<uint8_t>(resolve(path + ".qdata"), {vocab, e.k_pad / 2});
    if (!q->symmetric) {
      const uint8_t* z = st_.expect<uint8_t>(resolve(path + ".zeros"), {vocab, G});
      e.zeros.assign(z, z + static_cast<size_t>(vocab) * G);
    }
  } else if (q->bits == 8) {
    e.kind = WeightKind::q8;
    e.qdata = reinterpret_cast<const uint8_t*>(st_.expect<int8_t>(resolve(path + ".qdata"), {vocab, e.k_pad}));
  } else {
    fail(ErrorCode::kUnsupported, path + ": " + std::to_string(q->bits) + "-bit embedding");
  }
  return e;
}

void WeightSource::Embedding::row(int64_t id, float* out) const {
  if (id < 0 || id >= vocab) id = 0;  // image slots hold ids outside the vocabulary: features come later
  if (kind == WeightKind::f32) {
    std::memcpy(out, w_owned.data() + id * dim, sizeof(float) * dim);
    return;
  }
  const int G = k_pad / group;
  const float* s = scales.data() + id * G;
  if (kind == WeightKind::q8) {
    const int8_t* q = reinterpret_cast<const int8_t*>(qdata) + id * k_pad;
    for (int k = 0; k < dim; ++k) out[k] = static_cast<float>(q[k]) * s[k / group];
    return;
  }
  const uint8_t* q = qdata + id * (k_pad / 2);
  const uint8_t* z = zeros.empty() ? nullptr : zeros.data() + id * G;
  for (int k = 0; k < dim; ++k) {
    const int u = (k & 1) ? (q[k / 2] >> 4) : (q[k / 2] & 15);
    const int zp = z ? z[k / group] : 8;
    out[k] = static_cast<float>(u - zp) * s[k / group];
  }
}

// ---- fusion --------------------------------------------------------------------------------------

bool fuse_linears(const std::vector<Linear*>& parts, Linear& out) {
  if (parts.empty()) return false;
  const Linear& f = *parts[0];
  for (const Linear* p : parts) {
    bool ok = p->kind == f.kind && p->act == f.act && p->in == f.in && p->bias.empty() == f.bias.empty() &&
              p->act != ActScheme::static_;
    if (ok && p->kind == WeightKind::q4)
      ok = p->q4.O % kBlockO == 0 && p->q4.K == f.q4.K && p->q4.group == f.q4.group && p->q4.asym == f.q4.asym;
    if (ok && p->kind == WeightKind::q8) ok = p->q8.O % kBlockO == 0 && p->q8.K == f.q8.K;
    if (!ok) return false;
  }
  Linear l;
  l.path = f.path + "+fused";
  l.in = f.in, l.kind = f.kind, l.act = f.act;
  if (f.kind == WeightKind::q4) {
    l.q4 = f.q4;
    l.q4.O = 0;
    l.q4.codes.clear(), l.q4.scales.clear(), l.q4.zeros.clear(), l.q4.wsum.clear();
  }
  if (f.kind == WeightKind::q8) {
    l.q8 = f.q8;
    l.q8.O = 0;
    l.q8.codes.clear(), l.q8.scales.clear(), l.q8.wsum.clear();
  }
  auto append = [](auto& dst, auto& src) {
    dst.insert(dst.end(), src.begin(), src.end());
    std::decay_t<decltype(src)>().swap(src);
  };
  for (Linear* p : parts) {
    l.out += p->out;
    append(l.bias, p->bias);
    append(l.w_owned, p->w_owned);
    if (f.kind == WeightKind::q4) {
      l.q4.O += p->q4.O;
      append(l.q4.codes, p->q4.codes), append(l.q4.scales, p->q4.scales);
      append(l.q4.zeros, p->q4.zeros), append(l.q4.wsum, p->q4.wsum);
    }
    if (f.kind == WeightKind::q8) {
      l.q8.O += p->q8.O;
      append(l.q8.codes, p->q8.codes), append(l.q8.scales, p->q8.scales), append(l.q8.wsum, p->q8.wsum);
    }
  }
  out = std::move(l);
  return true;
}

// ---- forward -------------------------------------------------------------------------------------

static void quantize_static(const Linear& l, const float* x, int M, QuantizedActs& a) {
  const int K = l.q8.K;
  a.resize(ActQuant::token, M, K);
  const uint8_t* is_out = l.is_outlier.data();
  for (int m = 0; m < M; ++m) {
    uint8_t* codes = a.codes.data() + static_cast<size_t>(m) * K;
    for (int k = 0; k < K; ++k) {
      float q = 0.f;
      if (k < l.in && !is_out[k]) q = std::min(127.f, std::max(-127.f, std::nearbyint(x[static_cast<size_t>(m) * l.in + k] / l.act_scale)));
      codes[k] = static_cast<uint8_t>(static_cast<int>(q) + 128);
    }
    a.scales[m] = l.act_scale;
    a.zero[m] = 128;
    for (int b = 0; b < K / 16; ++b) {
      int32_t s = 0;
      for (int i = 0; i < 16; ++i) s += codes[b * 16 + i];
      a.sums[static_cast<size_t>(m) * (K / 16) + b] = s;
    }
  }
}

void Linear::forward(Compute& c, const float* x, int M, float* y) const {
  const Kernels& k = *c.k;
  const float* b = bias.empty() ? nullptr : bias.data();
  ThreadPool* pool = c.pool_for(static_cast<int64_t>(M) * in * out);
  switch (kind) {
    case WeightKind::f32:
      linear_f32(k, pool, x, in, M, in, w_owned.data(), in, out, b, y, out);
      return;
    case WeightKind::q4:
      if (act == ActScheme::none) {
        linear_q4_f32(k, pool, x, in, M, in, q4, b, y, out);
      } else {
        quantize_acts(k, pool, act == ActScheme::token ? ActQuant::token : ActQuant::block32, x, in, M, in, q4.K, c.acts);
        linear_q4(k, pool, c.acts, q4, b, y, out);
      }
      return;
    case WeightKind::q8:
      if (act == ActScheme::none) {
        linear_q8_f32(k, pool, x, in, M, in, q8, b, y, out);
      } else if (act == ActScheme::token) {
        quantize_acts(k, pool, ActQuant::token, x, in, M, in, q8.K, c.acts);
        linear_q8(k, pool, c.acts, q8, b, y, out);
      } else {  // static: y = s_x s_w (xq Wq^T) + x[:, outliers] W_out^T + b
        quantize_static(*this, x, M, c.acts);
        linear_q8(k, pool, c.acts, q8, nullptr, y, out);
        const size_t n = outlier_idx.size();
        for (int m = 0; m < M; ++m) {
          const float* xr = x + static_cast<size_t>(m) * in;
          float* yr = y + static_cast<size_t>(m) * out;
          for (int o = 0; o < out; ++o) {
            float s = 0.f;
            for (size_t j = 0; j < n; ++j) s += xr[outlier_idx[j]] * outlier_w[o * n + j];
            yr[o] += s;
            if (b) yr[o] += b[o];
          }
        }
      }
      return;
  }
}

}  // namespace edgevlm::cpu
