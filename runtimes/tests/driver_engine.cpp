// Test driver of the CPU engine: driver_engine BUNDLE_DIR [--threads N] [--kernels NAME]
// [--kv f16|f32|int8] [--no-verify]. Reads JSON requests on stdin, one per line; each runs from an
// empty KV cache and prints one JSON line:
//   {"ids": [...], "chunk": 16, "n": 8,                  prompt token ids, chunk size, greedy tokens
//    "tiles": "file.f32", "n_tiles": 2,                  optional: float32 [N, 3, S, S] tiles
//    "rgb": "file.rgb", "width": W, "height": H,         optional: raw RGB8, preprocessed by core/image.h
//    "logits_out": "file.f32"}                           optional: float32 [1 + n, V] of every step
// -> {"tokens": [...], "logits": [...first (prefill) logits...], "tokens_per_tile": T, "chunks": k}
// Errors -> {"error": message, "code": n}.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/bundle.h"
#include "core/chunk_plan.h"
#include "core/error.h"
#include "core/image.h"
#include "core/prefill.h"
#include "engines/cpu/cpu_engine.h"

using nlohmann::json;

static std::vector<char> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) edgevlm::fail(edgevlm::ErrorCode::kIo, "cannot read " + path);
  return std::vector<char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

static int argmax(const std::vector<float>& v) {
  int best = 0;
  for (size_t i = 1; i < v.size(); ++i) {
    if (v[i] > v[best]) best = static_cast<int>(i);
  }
  return best;
}

static json run(edgevlm::cpu::CpuEngine& engine, const edgevlm::Bundle& bundle, const json& req) {
  std::vector<int64_t> ids = req.at("ids").get<std::vector<int64_t>>();
  const int chunk = req.value("chunk", 16);
  const int n_new = req.value("n", 8);
  const int H = engine.hidden_size(), V = engine.vocab_size();
  engine.reset();
  const int n = static_cast<int>(ids.size());
  std::vector<float> rows(static_cast<size_t>(n) * H);
  engine.embed(ids.data(), n, rows.data());

  std::vector<float> tiles;
  int n_tiles = 0;
  if (req.contains("tiles")) {
    std::vector<char> raw = read_file(req["tiles"].get<std::string>());
    tiles.resize(raw.size() / 4);
    std::memcpy(tiles.data(), raw.data(), tiles.size() * 4);
    n_tiles = req.at("n_tiles").get<int>();
  } else if (req.contains("rgb")) {
    std::vector<char> raw = read_file(req["rgb"].get<std::string>());
    const auto params = edgevlm::ImageParams::from_json(*bundle.image_preprocessing());
    edgevlm::ImageTiles t = edgevlm::preprocess_image(reinterpret_cast<const uint8_t*>(raw.data()), raw.size(),
                                                      req.at("width").get<int>(), req.at("height").get<int>(), params);
    tiles = std::move(t.pixels);
    n_tiles = t.num_tiles;
  }
  const int S = engine.tile_size();
  if (n_tiles && tiles.size() != static_cast<size_t>(n_tiles) * 3 * S * S) {
    edgevlm::fail(edgevlm::ErrorCode::kInvalidArgument, "tiles do not hold n_tiles x 3 x S x S floats");
  }
  const int64_t image_id = bundle.manifest()["special_tokens"].value("image", json(-1)).is_null()
                               ? -1 : bundle.manifest()["special_tokens"].value("image", int64_t{-1});
  std::vector<float> features;
  if (n_tiles) {
    features.resize(static_cast<size_t>(n_tiles) * engine.tokens_per_tile() * H);
    engine.encode_images(tiles.data(), n_tiles, features.data());
  }
  edgevlm::merge_image_features(ids.data(), n, image_id, features.data(), n_tiles * engine.tokens_per_tile(), H,
                                rows.data());
  std::vector<float> logits(V), all;
  std::vector<double> ms;
  edgevlm::run_prefill(engine, rows.data(), n, 0, chunk, logits.data(), &ms);
  json out;
  out["logits"] = logits;
  all.insert(all.end(), logits.begin(), logits.end());
  std::vector<int64_t> tokens;
  std::vector<float> row(H);
  for (int i = 0; i < n_new; ++i) {
    const int64_t t = argmax(logits);
    tokens.push_back(t);
    if (i + 1 == n_new || n + i >= engine.max_context()) break;
    engine.embed(&t, 1, row.data());
    engine.decode(row.data(), n + i, logits.data());
    all.insert(all.end(), logits.begin(), logits.end());
  }
  if (req.contains("logits_out")) {
    std::ofstream f(req["logits_out"].get<std::string>(), std::ios::binary);
    f.write(reinterpret_cast<const char*>(all.data()), static_cast<std::streamsize>(all.size() * 4));
  }
  out["tokens"] = tokens;
  out["chunks"] = ms.size();
  out["tokens_per_tile"] = engine.tokens_per_tile();
  return out;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: driver_engine BUNDLE_DIR [--threads N] [--kernels NAME] [--kv DTYPE] [--no-verify]\n");
    return 2;
  }
  edgevlm::cpu::EngineOptions opt;
  bool verify = true;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) opt.threads = std::atoi(argv[++i]);
    else if (a == "--kernels" && i + 1 < argc) opt.kernels = argv[++i];
    else if (a == "--kv" && i + 1 < argc) opt.kv_dtype = argv[++i];
    else if (a == "--no-verify") verify = false;
  }
  try {
    const edgevlm::Bundle bundle = edgevlm::Bundle::open(argv[1], verify);
    auto engine = edgevlm::cpu::CpuEngine::load(bundle, opt);
    std::fprintf(stderr, "driver_engine: %s, kv %d\n", engine->name().c_str(), static_cast<int>(engine->kv_dtype()));
    std::string line;
    while (std::getline(std::cin, line)) {
      if (line.empty()) continue;
      json out;
      try {
        out = run(*engine, bundle, json::parse(line));
      } catch (const edgevlm::Error& e) {
        out = {{"error", e.what()}, {"code", static_cast<int>(e.code())}};
      } catch (const std::exception& e) {
        out = {{"error", e.what()}, {"code", -1}};
      }
      std::cout << out.dump() << std::endl;
    }
  } catch (const edgevlm::Error& e) {
    std::cout << json{{"error", e.what()}, {"code", static_cast<int>(e.code())}}.dump() << std::endl;
    return 1;
  }
  return 0;
}
