// edgevlm-run BUNDLE --prompt TEXT [--image PATH ...] [options]: generate with the native runtime.
// The answer streams to stdout; the stats JSON goes to stderr (or, with --json, one JSON object
// with text, tokens and stats to stdout). Bad input: one line on stderr, exit code 2.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/session.h"
#include "cli_args.h"
#include "core/error.h"
#include "core/image_file.h"

namespace {

const char* kUsage =
    "usage: edgevlm-run BUNDLE --prompt TEXT [--image PATH ...] [--max-new-tokens N] [--temperature T]\n"
    "                   [--top-k K] [--top-p P] [--repetition-penalty R] [--seed S] [--threads N]\n"
    "                   [--chunk C] [--kernels scalar|avx2|avx512|neon] [--no-template] [--no-verify] [--json]\n";

int run(int argc, char** argv) {
  using namespace edgevlm;
  const auto args = cli::parse(argc, argv,
                               {"--prompt", "--image", "--max-new-tokens", "--temperature", "--top-k", "--top-p",
                                "--repetition-penalty", "--seed", "--threads", "--chunk", "--kernels"},
                               {"--no-template", "--no-verify", "--json", "--help"});
  if (args.flag("--help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (args.positional.size() != 1) throw std::invalid_argument("expected one BUNDLE argument");
  const ModelOptions mo = cli::model_options(args);
  auto model = Model::load(args.positional[0], mo);
  Session session(model);
  std::vector<Rgb8Image> images;
  for (const auto& path : args.all("--image")) images.push_back(decode_image_file(path));
  std::vector<InputChunk> chunks;
  for (const auto& im : images) chunks.push_back(InputChunk::of_image(im));
  chunks.push_back(InputChunk::of_text(args.get("--prompt")));
  session.add_turn(chunks, !args.flag("--no-template"));
  SamplingParams sp;
  sp.max_new_tokens = int(args.integer("--max-new-tokens", 128));
  sp.temperature = float(args.real("--temperature", 0.0));
  sp.top_k = int(args.integer("--top-k", 0));
  sp.top_p = float(args.real("--top-p", 1.0));
  sp.repetition_penalty = float(args.real("--repetition-penalty", 1.0));
  sp.seed = uint64_t(args.integer("--seed", 0));
  const bool as_json = args.flag("--json");
  std::string answer;
  auto tokens = session.generate(sp, [&](int32_t, const std::string& piece) {
    answer += piece;
    if (!as_json) {
      std::fputs(piece.c_str(), stdout);
      std::fflush(stdout);
    }
    return true;
  });
  if (as_json) {
    nlohmann::json j;
    j["text"] = answer;
    j["tokens"] = tokens;
    j["stats"] = nlohmann::json::parse(session.stats().to_json());
    std::cout << j.dump() << "\n";
  } else {
    std::cout << "\n";
    std::cerr << session.stats().to_json() << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return edgevlm::cli::guarded_main("edgevlm-run", kUsage, [&] { return run(argc, argv); });
}
