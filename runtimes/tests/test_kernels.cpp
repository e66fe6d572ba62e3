// CPU kernels: every SIMD set equals the scalar reference bit for bit on the integer and the
// weight-only paths (random shapes, ragged M and O, padded K tails); the scalar reference equals a
// naive computation straight from the stored (unpacked) weights; activation quantization matches
// hand-computed codes; 1 and 2 threads agree; fp16 conversion is IEEE round-to-nearest-even.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "core/error.h"
#include "engines/cpu/kernels.h"
#include "engines/cpu/threadpool.h"

using namespace edgevlm::cpu;

namespace {

std::mt19937 rng(1234);

std::vector<float> randn(size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

struct Q4Layer {
  int O, K_in, K, group;
  bool asym, fp16;
  std::vector<uint8_t> qdata, zeros;
  std::vector<float> scales32;
  std::vector<uint16_t> scales16;
  std::vector<float> bias;
  int code(int o, int k) const { return k % 2 ? qdata[size_t(o) * (K / 2) + k / 2] >> 4 : qdata[size_t(o) * (K / 2) + k / 2] & 15; }
  int zero(int o, int g) const { return asym ? zeros[size_t(o) * (K / group) + g] : 8; }
  float scale(int o, int g) const {
    return fp16 ? f16_to_f32_scalar(scales16[size_t(o) * (K / group) + g]) : scales32[size_t(o) * (K / group) + g];
  }
  PackedQ4 pack() const {
    return pack_q4(qdata.data(), O, K, group, fp16 ? static_cast<const void*>(scales16.data()) : scales32.data(), fp16,
                   asym ? zeros.data() : nullptr);
  }
};

Q4Layer make_q4(int O, int K_in, int group, bool asym, bool fp16) {
  Q4Layer L{O, K_in, (K_in + group - 1) / group * group, group, asym, fp16, {}, {}, {}, {}, {}};
  std::uniform_int_distribution<int> nib(0, 15);
  std::uniform_real_distribution<float> sd(0.001f, 0.05f);
  L.qdata.resize(size_t(O) * L.K / 2);
  for (int o = 0; o < O; ++o)
    for (int k = 0; k < L.K; k += 2) {
      int lo = k < K_in ? nib(rng) : (asym ? 0 : 8), hi = k + 1 < K_in ? nib(rng) : (asym ? 0 : 8);
      L.qdata[size_t(o) * (L.K / 2) + k / 2] = uint8_t(lo | hi << 4);
    }
  const size_t ng = size_t(O) * (L.K / group);
  for (size_t i = 0; i < ng; ++i) {
    float s = sd(rng);
    L.scales32.push_back(s);
    L.scales16.push_back(f32_to_f16_scalar(s));
    L.zeros.push_back(uint8_t(nib(rng)));
  }
  L.bias = randn(size_t(O), 0.1f);
  return L;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

bool same_acts(const QuantizedActs& a, const QuantizedActs& b) {
  return a.codes == b.codes && a.zero == b.zero && a.sums == b.sums &&
         std::memcmp(a.scales.data(), b.scales.data(), a.scales.size() * 4) == 0 && a.scales.size() == b.scales.size();
}

// Naive int4 x int8 from the stored layout: exact integer dot per run, float combination in the
// documented order.
std::vector<float> naive_q4(const QuantizedActs& a, const Q4Layer& L, const float* bias) {
  std::vector<float> y(size_t(a.M) * L.O);
  const bool blk = a.scheme == ActQuant::block32;
  const int unit = blk ? 32 : L.group;
  for (int m = 0; m < a.M; ++m)
    for (int o = 0; o < L.O; ++o) {
      float acc = 0.0f;
      for (int k0 = 0; k0 < L.K; k0 += unit) {
        const int g = k0 / L.group;
        int64_t dot = 0;
        for (int k = k0; k < k0 + unit; ++k)
          dot += int64_t(int(a.codes[size_t(m) * a.K + k]) - a.zero[m]) * (L.code(o, k) - L.zero(o, g));
        if (blk)
          acc = std::fma(float(dot), a.scales[size_t(m) * (a.K / 32) + k0 / 32] * L.scale(o, g), acc);
        else
          acc = std::fma(float(dot), L.scale(o, g), acc);
      }
      const float b = bias ? bias[o] : 0.0f;
      y[size_t(m) * L.O + o] = blk ? acc + b : std::fma(acc, a.scales[m], b);
    }
  return y;
}

std::vector<const Kernels*> simd_sets() {
  std::vector<const Kernels*> out;
  for (const char* n : available_kernels())
    if (std::string(n) != "scalar") out.push_back(kernels_by_name(n));
  return out;
}

void test_hand_quantization() {
  const Kernels& s = *kernels_by_name("scalar");
  std::vector<const Kernels*> sets = simd_sets();
  sets.insert(sets.begin(), &s);
  for (const Kernels* k : sets) {
    // s = 1/256 exactly; zp = -128 - round(-128) = 0; 0.5 and -1.5 steps round half to even.
    const float x[6] = {-0.5f, 0.49609375f, 0.5f / 256, 1.5f / 256, -1.5f / 256, 0.0f};
    QuantizedActs a;
    quantize_acts(*k, nullptr, ActQuant::token, x, 6, 1, 6, 16, a);
    const int want[6] = {-128, 127, 0, 2, -2, 0};
    for (int i = 0; i < 6; ++i) CHECK(int(a.codes[i]) - 128 == want[i]);
    for (int i = 6; i < 16; ++i) CHECK(a.codes[i] == 128);  // padding holds the code of 0
    CHECK(a.scales[0] == 1.0f / 256 && a.zero[0] == 128);
    CHECK(a.sums[0] == 16 * 128 + (-128 + 127 + 0 + 2 - 2 + 0));
    // zp = -128 - round(-64) = -64: q = round(x / s) + zp, the kernel sees q - zp.
    const float x2[3] = {-0.25f, 0.74609375f, 2.5f / 256};
    quantize_acts(*k, nullptr, ActQuant::token, x2, 3, 1, 3, 16, a);
    CHECK(a.zero[0] == 128 - 64);
    CHECK(int(a.codes[0]) - 128 == -128 && int(a.codes[1]) - 128 == 127 && int(a.codes[2]) - 128 == 2 - 64);
    // a zero row: scale 1e-12, zp -128, every code -128 (q - zp = 0).
    const float z[4] = {0, 0, 0, 0};
    quantize_acts(*k, nullptr, ActQuant::token, z, 4, 1, 4, 16, a);
    CHECK(a.scales[0] == 1e-12f && a.zero[0] == 0 && a.codes[3] == 0);
    // block32: amax = 127/64 -> s = 1/64, inverse 64; 1.5 -> 2, 2.5 -> 2, -0.5 -> 0.
    std::vector<float> xb(40, 0.0f);
    xb[0] = 127.0f / 64;
    xb[1] = 1.5f / 64;
    xb[2] = 2.5f / 64;
    xb[3] = -0.5f / 64;
    xb[4] = -127.0f / 64;
    xb[33] = 3.0f;  // second block: amax 3, s = 3/127
    quantize_acts(*k, nullptr, ActQuant::block32, xb.data(), 40, 1, 40, 64, a);
    CHECK(a.scales[0] == 1.0f / 64 && a.scales[1] == 3.0f / 127);
    CHECK(int(a.codes[0]) - 128 == 127 && int(a.codes[1]) - 128 == 2 && int(a.codes[2]) - 128 == 2);
    CHECK(int(a.codes[3]) - 128 == 0 && int(a.codes[4]) - 128 == -127 && int(a.codes[33]) - 128 == 127);
    CHECK(a.codes[63] == 128 && a.zero[0] == 128);
    quantize_acts(*k, nullptr, ActQuant::block32, z, 4, 1, 4, 32, a);
    CHECK(a.scales[0] == 0.0f && a.codes[0] == 128);
  }
}

void test_q4() {
  const Kernels& s = *kernels_by_name("scalar");
  const auto sets = simd_sets();
  ThreadPool pool(2);
  const int Ms[] = {1, 3, 17, 64, 128};
  const int Os[] = {1, 15, 17, 33, 47};
  const int groups[] = {16, 32, 64, 128, 256};
  int cases = 0;
  for (int gi = 0; gi < 5; ++gi)
    for (int variant = 0; variant < 4; ++variant) {
      const int group = groups[gi];
      const bool asym = variant & 1, fp16 = variant & 2;
      const int M = Ms[(gi + variant) % 5], O = Os[(gi * 2 + variant) % 5];
      const int K_in = group * (1 + variant % 3) - (variant % 2 ? 5 : 0) + (group == 16 ? 16 : 0);
      const Q4Layer L = make_q4(O, K_in, group, asym, fp16);
      const PackedQ4 W = L.pack();
      const size_t ldx = K_in + 3;
      std::vector<float> x = randn(size_t(M) * ldx);
      for (int sc = 0; sc < 2; ++sc) {
        const ActQuant scheme = sc ? ActQuant::block32 : ActQuant::token;
        if (scheme == ActQuant::block32 && group % 32) continue;
        const float* bias = (variant & 1) ? L.bias.data() : nullptr;
        QuantizedActs a;
        quantize_acts(s, nullptr, scheme, x.data(), ldx, M, K_in, L.K, a);
        std::vector<float> ys(size_t(M) * O), y2(size_t(M) * O);
        linear_q4(s, nullptr, a, W, bias, ys.data(), O);
        const bool naive_ok = same_bits(ys, naive_q4(a, L, bias));
        CHECK(naive_ok);
        if (!naive_ok) std::fprintf(stderr, "  scalar != naive: g%d M%d O%d K%d asym%d\n", group, M, O, K_in, asym);
        for (const Kernels* k : sets) {
          QuantizedActs b;
          quantize_acts(*k, &pool, scheme, x.data(), ldx, M, K_in, L.K, b);
          CHECK(same_acts(a, b));
          std::vector<float> y1(size_t(M) * O);
          linear_q4(*k, nullptr, b, W, bias, y1.data(), O);
          linear_q4(*k, &pool, b, W, bias, y2.data(), O);
          const bool ok = same_bits(ys, y1) && same_bits(y1, y2);
          CHECK(ok);
          if (!ok)
            std::fprintf(stderr, "  %s q4 mismatch: g%d M%d O%d K%d asym%d scheme%d\n", k->name, group, M, O, K_in, asym, sc);
        }
        ++cases;
      }
      // weight-only float path
      std::vector<float> ys(size_t(M) * O), y1(size_t(M) * O), y2(size_t(M) * O);
      linear_q4_f32(s, nullptr, x.data(), ldx, M, K_in, W, L.bias.data(), ys.data(), O);
      double err = 0, ref = 0;  // against a double-precision dequantized matmul
      for (int m = 0; m < M; ++m)
        for (int o = 0; o < O; ++o) {
          double d = L.bias[o];
          for (int k = 0; k < K_in; ++k)
            d += double(x[size_t(m) * ldx + k]) * (L.code(o, k) - L.zero(o, k / group)) * L.scale(o, k / group);
          err = std::max(err, std::fabs(d - ys[size_t(m) * O + o]));
          ref = std::max(ref, std::fabs(d));
        }
      CHECK(err <= 1e-5 * std::max(1.0, ref));
      for (const Kernels* k : sets) {
        linear_q4_f32(*k, nullptr, x.data(), ldx, M, K_in, W, L.bias.data(), y1.data(), O);
        linear_q4_f32(*k, &pool, x.data(), ldx, M, K_in, W, L.bias.data(), y2.data(), O);
        const bool ok = same_bits(ys, y1) && same_bits(y1, y2);
        CHECK(ok);
        if (!ok) std::fprintf(stderr, "  %s q4_f32 mismatch: g%d M%d O%d K%d\n", k->name, group, M, O, K_in);
      }
    }
  std::printf("q4: %d integer cases x %zu SIMD sets\n", cases, sets.size());
}

void test_q8() {
  const Kernels& s = *kernels_by_name("scalar");
  const auto sets = simd_sets();
  ThreadPool pool(2);
  const int shapes[][3] = {{1, 1, 5}, {3, 17, 64}, {17, 33, 100}, {64, 47, 129}, {128, 16, 576}, {2, 9, 2000}};
  std::uniform_int_distribution<int> q(-128, 127);
  for (auto& sh : shapes) {
    const int M = sh[0], O = sh[1], K = sh[2];
    std::vector<int8_t> qd(size_t(O) * K);
    for (auto& v : qd) v = int8_t(q(rng));
    qd[0] = -128;
    std::vector<float> sc(O);
    for (auto& v : sc) v = 0.001f + std::fabs(randn(1)[0]) * 0.01f;
    const PackedQ8 W = pack_q8(qd.data(), O, K, sc.data(), false);
    std::vector<float> x = randn(size_t(M) * K), bias = randn(O);
    QuantizedActs a;
    quantize_acts(s, nullptr, ActQuant::token, x.data(), K, M, K, W.K, a);
    std::vector<float> ys(size_t(M) * O), y1(ys.size()), y2(ys.size()), naive(ys.size());
    linear_q8(s, nullptr, a, W, bias.data(), ys.data(), O);
    for (int m = 0; m < M; ++m)
      for (int o = 0; o < O; ++o) {
        int64_t dot = 0;
        for (int k = 0; k < K; ++k) dot += int64_t(int(a.codes[size_t(m) * a.K + k]) - a.zero[m]) * qd[size_t(o) * K + k];
        naive[size_t(m) * O + o] = std::fma(float(dot) * sc[o], a.scales[m], bias[o]);
      }
    CHECK(same_bits(ys, naive));
    for (const Kernels* k : sets) {
      QuantizedActs b;
      quantize_acts(*k, nullptr, ActQuant::token, x.data(), K, M, K, W.K, b);
      CHECK(same_acts(a, b));
      linear_q8(*k, nullptr, b, W, bias.data(), y1.data(), O);
      linear_q8(*k, &pool, b, W, bias.data(), y2.data(), O);
      const bool ok = same_bits(ys, y1) && same_bits(y1, y2);
      CHECK(ok);
      if (!ok) std::fprintf(stderr, "  %s q8 mismatch: M%d O%d K%d\n", k->name, M, O, K);
    }
    linear_q8_f32(s, nullptr, x.data(), K, M, K, W, bias.data(), ys.data(), O);
    for (const Kernels* k : sets) {
      linear_q8_f32(*k, nullptr, x.data(), K, M, K, W, bias.data(), y1.data(), O);
      linear_q8_f32(*k, &pool, x.data(), K, M, K, W, bias.data(), y2.data(), O);
      const bool ok = same_bits(ys, y1) && same_bits(y1, y2);
      CHECK(ok);
      if (!ok) std::fprintf(stderr, "  %s q8_f32 mismatch: M%d O%d K%d\n", k->name, M, O, K);
    }
  }
}

void test_float() {
  const Kernels& s = *kernels_by_name("scalar");
  ThreadPool pool(2);
  const int M = 5, O = 37, K = 203;
  std::vector<float> x = randn(size_t(M) * K), w = randn(size_t(O) * K), b = randn(O);
  std::vector<float> ys(size_t(M) * O), y(ys.size());
  linear_f32(s, nullptr, x.data(), K, M, K, w.data(), K, O, b.data(), ys.data(), O);
  for (const Kernels* k : simd_sets()) {
    linear_f32(*k, &pool, x.data(), K, M, K, w.data(), K, O, b.data(), y.data(), O);
    for (size_t i = 0; i < y.size(); ++i) CHECK_NEAR(y[i], ys[i], 1e-5 * (1 + std::fabs(ys[i])) + 1e-4);
    for (int n : {0, 1, 7, 16, 33}) CHECK_NEAR(k->dot_f32(x.data(), w.data(), n), s.dot_f32(x.data(), w.data(), n), 1e-4);
  }
}

void test_fp16() {
  CHECK(f32_to_f16_scalar(1.0f) == 0x3C00 && f32_to_f16_scalar(-2.0f) == 0xC000);
  CHECK(f32_to_f16_scalar(65504.0f) == 0x7BFF && f32_to_f16_scalar(65520.0f) == 0x7C00);
  CHECK(f32_to_f16_scalar(65519.99f) == 0x7BFF);
  CHECK(f32_to_f16_scalar(std::ldexp(1.0f, -24)) == 0x0001 && f32_to_f16_scalar(std::ldexp(1.0f, -25)) == 0x0000);
  CHECK(f32_to_f16_scalar(std::ldexp(1.5f, -25)) == 0x0001);
  CHECK(f32_to_f16_scalar(1.0f + std::ldexp(1.0f, -11)) == 0x3C00);      // tie -> even
  CHECK(f32_to_f16_scalar(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3C02);  // tie -> even (up)
  CHECK(f32_to_f16_scalar(INFINITY) == 0x7C00 && (f32_to_f16_scalar(NAN) & 0x7E00) == 0x7E00);
  CHECK(f16_to_f32_scalar(0x0001) == std::ldexp(1.0f, -24) && f16_to_f32_scalar(0x3555) == 0.333251953125f);
  // every half round-trips; every set agrees with the scalar conversions
  std::vector<uint16_t> all(65536);
  for (int i = 0; i < 65536; ++i) all[i] = uint16_t(i);
  std::vector<float> f(65536);
  kernels_by_name("scalar")->f16_to_f32(all.data(), f.data(), all.size());
  int bad = 0;
  for (int i = 0; i < 65536; ++i) {
    const bool nan = (i & 0x7C00) == 0x7C00 && (i & 0x3FF);
    if (nan ? !std::isnan(f[i]) : f32_to_f16_scalar(f[i]) != all[i]) ++bad;
  }
  CHECK(bad == 0);
  std::vector<float> xs = randn(4099, 1000.0f);
  for (int i = 0; i < 600; ++i) xs[i] = std::ldexp(float(i) + 0.5f, -24 - (i % 6));  // subnormal ties
  xs[600] = 1e6f;
  xs[601] = -1e-9f;
  std::vector<uint16_t> hs(xs.size()), h(xs.size());
  kernels_by_name("scalar")->f32_to_f16(xs.data(), hs.data(), xs.size());
  for (const Kernels* k : simd_sets()) {
    k->f32_to_f16(xs.data(), h.data(), xs.size());
    CHECK(h == hs);
    std::vector<float> back(65536);
    k->f16_to_f32(all.data(), back.data(), all.size());
    int diff = 0;
    for (int i = 0; i < 65536; ++i)
      if (!(std::isnan(back[i]) && std::isnan(f[i])) && std::memcmp(&back[i], &f[i], 4) != 0) ++diff;
    CHECK(diff == 0);
  }
}

void test_threadpool_and_errors() {
  for (int t : {1, 2, 3}) {
    ThreadPool pool(t);
    for (int n : {0, 1, 2, 5, 1000}) {
      std::vector<int> hit(size_t(n), 0);
      pool.parallel_for(n, [&](int b, int e) {
        for (int i = b; i < e; ++i) ++hit[i];
      });
      bool once = true;
      for (int v : hit) once = once && v == 1;
      CHECK(once);
    }
    std::atomic<long> total{0};  // many short jobs back to back: late workers must not take chunks twice
    for (int it = 0; it < 20000; ++it)
      pool.parallel_for(1 + it % 9, [&](int b, int e) { total += e - b; });
    long want = 0;
    for (int it = 0; it < 20000; ++it) want += 1 + it % 9;
    CHECK(total.load() == want);
    bool thrown = false;
    try {
      pool.parallel_for(8, [&](int b, int) {
        if (b > 0 || t == 1) throw std::runtime_error("boom");
      });
    } catch (const std::runtime_error&) {
      thrown = true;
    }
    CHECK(thrown);
  }
  bool bad_threads = false;
  try {
    ThreadPool p(0);
  } catch (const edgevlm::Error& e) {
    bad_threads = e.code() == edgevlm::ErrorCode::kInvalidArgument;
  }
  CHECK(bad_threads);
  CHECK(kernels_by_name("nope") == nullptr && kernels_by_name("scalar") != nullptr);
  const Q4Layer L = make_q4(4, 64, 32, false, false);
  const PackedQ4 W = L.pack();
  QuantizedActs a;
  std::vector<float> x(96, 0.5f), y(8);
  quantize_acts(kernels(), nullptr, ActQuant::token, x.data(), 96, 1, 96, 96, a);
  bool mismatch = false;
  try {
    linear_q4(kernels(), nullptr, a, W, nullptr, y.data(), 4);
  } catch (const edgevlm::Error& e) {
    mismatch = e.code() == edgevlm::ErrorCode::kInvalidArgument;
  }
  CHECK(mismatch);
  bool bad_group = false;
  try {
    pack_q4(L.qdata.data(), 4, 64, 48, L.scales32.data(), false, nullptr);
  } catch (const edgevlm::Error&) {
    bad_group = true;
  }
  CHECK(bad_group);
}

}  // namespace

// Extreme codes: activations at 0 and 255 against weight codes 0 and 15 (the largest 16-bit partial
// sums the SIMD int4 paths form), every set equal to the scalar reference.
void test_q4_extremes() {
  const Kernels& s = *kernels_by_name("scalar");
  ThreadPool pool(2);
  for (int M : {1, 2, 3, 9}) {
    const int O = 32, K = 256;
    Q4Layer L = make_q4(O, K, 32, false, false);
    for (int o = 0; o < O; ++o)
      for (int k = 0; k < K / 2; ++k) L.qdata[size_t(o) * (K / 2) + k] = (o % 3 == 0) ? 0x00 : (o % 3 == 1 ? 0xFF : 0x0F);
    const PackedQ4 W = L.pack();
    std::vector<float> x(size_t(M) * K);
    for (int m = 0; m < M; ++m)
      for (int k = 0; k < K; ++k) x[size_t(m) * K + k] = (m % 2 == 0) ? 1.0f : ((k / 32) % 2 ? 1.0f : -1.0f);
    for (int sc = 0; sc < 2; ++sc) {
      const ActQuant scheme = sc ? ActQuant::block32 : ActQuant::token;
      QuantizedActs a;
      quantize_acts(s, nullptr, scheme, x.data(), K, M, K, K, a);
      std::vector<float> ys(size_t(M) * O), y1(size_t(M) * O);
      linear_q4(s, nullptr, a, W, nullptr, ys.data(), O);
      CHECK(same_bits(ys, naive_q4(a, L, nullptr)));
      for (const Kernels* k : simd_sets()) {
        linear_q4(*k, &pool, a, W, nullptr, y1.data(), O);
        CHECK(same_bits(ys, y1));
      }
    }
  }
}

// attend_f16 on half keys/values gives the bits of the same set's attend on the converted rows.
void test_attention_f16() {
  int sets = 0;
  for (const Kernels* k : simd_sets()) {
    if (!k->attend_f16) continue;
    ++sets;
    for (const int hd : {64, 40, 8, 12})
      for (const int G : {1, 2, 3})
        for (const int n : {1, 3, 4, 17, 130}) {
          const size_t ld = hd + 8;
          std::vector<float> q = randn(size_t(G) * hd), kk = randn(size_t(n) * ld, 2.0f), v = randn(size_t(n) * ld);
          std::vector<uint16_t> kh(kk.size()), vh(v.size());
          k->f32_to_f16(kk.data(), kh.data(), kk.size());
          k->f32_to_f16(v.data(), vh.data(), v.size());
          k->f16_to_f32(kh.data(), kk.data(), kk.size());
          k->f16_to_f32(vh.data(), v.data(), v.size());
          std::vector<float> sc(size_t(G) * n), o_ref(size_t(G) * hd), o(size_t(G) * hd);
          k->attend(q.data(), kk.data(), v.data(), ld, n, hd, G, 0.125f, sc.data(), o_ref.data());
          k->attend_f16(q.data(), kh.data(), vh.data(), ld, n, hd, G, 0.125f, sc.data(), o.data());
          const bool ok = same_bits(o, o_ref);
          CHECK(ok);
          if (!ok) std::fprintf(stderr, "  %s attend_f16: hd%d G%d n%d differs\n", k->name, hd, G, n);
        }
  }
  std::printf("attend_f16: %d SIMD sets\n", sets);
}

// attend and silu_mul: every set within float rounding of the reference (ragged n, hd, groups).
void test_attention_and_silu() {
  const Kernels& s = *kernels_by_name("scalar");
  for (const int hd : {64, 40, 8})
    for (const int G : {1, 2, 3, 5})
      for (const int n : {1, 3, 4, 17, 130}) {
        const size_t ld = hd + 8;
        std::vector<float> q = randn(size_t(G) * hd), kk = randn(size_t(n) * ld, 2.0f), v = randn(size_t(n) * ld);
        std::vector<float> sc(size_t(G) * n), o_ref(size_t(G) * hd), o(size_t(G) * hd);
        s.attend(q.data(), kk.data(), v.data(), ld, n, hd, G, 0.125f, sc.data(), o_ref.data());
        for (const Kernels* k : simd_sets()) {
          k->attend(q.data(), kk.data(), v.data(), ld, n, hd, G, 0.125f, sc.data(), o.data());
          double err = 0;
          for (size_t i = 0; i < o.size(); ++i) err = std::max(err, double(std::fabs(o[i] - o_ref[i])));
          CHECK(err < 1e-5);
          if (err >= 1e-5) std::fprintf(stderr, "  %s attend: hd%d G%d n%d err %g\n", k->name, hd, G, n, err);
        }
      }
  std::vector<float> g = randn(1003, 6.0f), u = randn(1003), y_ref(1003), y(1003);
  g[0] = 100.0f, g[1] = -100.0f, g[2] = 0.0f;
  s.silu_mul(g.data(), u.data(), y_ref.data(), g.size());
  for (const Kernels* k : simd_sets()) {
    k->silu_mul(g.data(), u.data(), y.data(), g.size());
    double err = 0;
    for (size_t i = 0; i < y.size(); ++i) err = std::max(err, double(std::fabs(y[i] - y_ref[i]) / (1.0f + std::fabs(y_ref[i]))));
    CHECK(err < 1e-6);
  }
}

int main() {
  std::printf("kernel sets here:");
  for (const char* n : available_kernels()) std::printf(" %s", n);
  std::printf(" (selected: %s)\n", kernels().name);
  test_hand_quantization();
  test_q4();
  test_q4_extremes();
  test_q8();
  test_attention_and_silu();
  test_attention_f16();
  test_float();
  test_fp16();
  test_threadpool_and_errors();
  return edgevlm_test::finish("test_kernels");
}
