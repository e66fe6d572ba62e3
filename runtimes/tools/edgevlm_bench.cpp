// edgevlm-bench BUNDLE [--prompt-tokens 128,512] [--gen 64] [--image PATH] [--threads N]
//               [--repeat 5] [--warmup 1] [--chunk C] [--kernels K]
// Measures the native runtime and prints one JSON object (stdout): load time, then per prompt
// length the prefill (ms, tok/s, per chunk), time to first token and decode tok/s at that depth,
// as medians with min and max over the repeats after warm-up; with --image, preprocess and
// vision-encode times of a real image turn. `edgevlm bench` reads it, here or from a phone (adb).
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>
#include <sys/stat.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/session.h"
#include "cli_args.h"
#include "core/error.h"
#include "core/image_file.h"

namespace {

const char* kUsage =
    "usage: edgevlm-bench BUNDLE [--prompt-tokens 128,512] [--gen 64] [--image PATH] [--threads N]\n"
    "                     [--repeat 5] [--warmup 1] [--chunk C] [--kernels K] [--no-verify]\n";

nlohmann::json summary(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  const double median = n == 0 ? 0.0 : (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]));
  return {{"median", median}, {"min", n ? v.front() : 0.0}, {"max", n ? v.back() : 0.0}, {"n", n}};
}

// Prompt ids that avoid special tokens: ordinary vocabulary entries in a fixed pseudo-random order.
std::vector<int32_t> synthetic_prompt(const edgevlm::Model& model, int n) {
  const auto& tok = model.tokenizer();
  std::vector<int32_t> ids;
  const int32_t vocab = tok.vocab_size();
  uint64_t x = 0x9E3779B97F4A7C15ull;
  while (int(ids.size()) < n) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    const int32_t id = int32_t(x % uint64_t(vocab));
    if (!tok.is_special(id)) ids.push_back(id);
  }
  return ids;
}

int64_t bundle_weight_bytes(const std::string& dir) {
  struct stat st {};
  const std::string path = dir + "/weights/model.safetensors";
  return stat(path.c_str(), &st) == 0 ? int64_t(st.st_size) : 0;
}

int run(int argc, char** argv) {
  using namespace edgevlm;
  const auto args = cli::parse(argc, argv,
                               {"--prompt-tokens", "--gen", "--image", "--threads", "--repeat", "--warmup", "--chunk",
                                "--kernels"},
                               {"--no-verify", "--help"});
  if (args.flag("--help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (args.positional.size() != 1) throw std::invalid_argument("expected one BUNDLE argument");
  const auto lengths = cli::int_list(args.get("--prompt-tokens", "128,512"), "--prompt-tokens");
  const int gen = int(args.integer("--gen", 64));
  const int repeat = int(args.integer("--repeat", 5));
  const int warmup = int(args.integer("--warmup", 1));
  if (gen < 1 || repeat < 1 || warmup < 0) throw std::invalid_argument("--gen and --repeat must be >= 1, --warmup >= 0");
  const ModelOptions mo = cli::model_options(args);
  auto model = Model::load(args.positional[0], mo);
  Session session(model);

  nlohmann::json out;
  out["runtime"] = "edgevlm-native";
  out["bundle"] = args.positional[0];
  out["load_ms"] = model->load_ms();
  out["model_bytes"] = bundle_weight_bytes(args.positional[0]);
  out["chunk_size"] = model->chunk_size();
  out["max_context"] = model->max_context();
  out["threads"] = mo.threads;
  out["kernels"] = session.stats().kernels;
  out["gen"] = gen;
  out["repeat"] = repeat;
  out["warmup"] = warmup;
  SamplingParams sp;
  sp.max_new_tokens = gen;
  sp.ignore_eos = true;
  nlohmann::json results = nlohmann::json::array();
  for (long n : lengths) {
    if (n + gen > model->max_context())
      throw Error(ErrorCode::kContextOverflow, std::to_string(n) + " prompt tokens + " + std::to_string(gen) +
                                                   " generated do not fit the context of " + std::to_string(model->max_context()));
    const auto ids = synthetic_prompt(*model, int(n));
    std::vector<double> prefill_ms, prefill_tps, ttft_ms, decode_tps, chunk_ms;
    for (int r = 0; r < warmup + repeat; ++r) {
      session.reset();
      session.add_tokens(ids);
      session.generate(sp);
      if (r < warmup) continue;
      const Stats& s = session.stats();
      prefill_ms.push_back(s.prefill_ms);
      prefill_tps.push_back(s.prompt_tokens / (s.prefill_ms / 1e3));
      ttft_ms.push_back(s.ttft_ms);
      decode_tps.push_back(s.generated_tokens > 1 ? (s.generated_tokens - 1) / (s.decode_ms / 1e3) : 0.0);
      for (double c : s.prefill_chunks_ms) chunk_ms.push_back(c);
    }
    results.push_back({{"prompt_tokens", n},
                       {"decode_depth", n},
                       {"prefill_ms", summary(prefill_ms)},
                       {"prefill_tps", summary(prefill_tps)},
                       {"prefill_chunk_ms", summary(chunk_ms)},
                       {"ttft_ms", summary(ttft_ms)},
                       {"decode_tps", summary(decode_tps)}});
  }
  out["results"] = results;
  if (!args.get("--image").empty()) {
    if (!model->has_vision()) throw Error(ErrorCode::kInvalidArgument, "--image: this is a text-only model");
    const Rgb8Image im = decode_image_file(args.get("--image"));
    std::vector<double> pre, vis, pf, ttft;
    int tiles = 0, tokens = 0;
    for (int r = 0; r < warmup + repeat; ++r) {
      session.reset();
      session.add_turn({InputChunk::of_image(im), InputChunk::of_text("Describe the image.")});
      if (r < warmup) continue;
      const Stats& s = session.stats();
      pre.push_back(s.preprocess_ms), vis.push_back(s.vision_encode_ms), pf.push_back(s.prefill_ms), ttft.push_back(s.ttft_ms);
      tiles = s.image_tiles, tokens = s.prompt_tokens;
    }
    out["image"] = {{"path", args.get("--image")}, {"width", im.width}, {"height", im.height}, {"tiles", tiles},
                    {"prompt_tokens", tokens}, {"preprocess_ms", summary(pre)}, {"vision_encode_ms", summary(vis)},
                    {"prefill_ms", summary(pf)}, {"ttft_ms", summary(ttft)}};
  }
  out["peak_rss_mb"] = peak_rss_mb();
  std::cout << out.dump(2) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return edgevlm::cli::guarded_main("edgevlm-bench", kUsage, [&] { return run(argc, argv); });
}
