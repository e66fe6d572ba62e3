// Drives edgevlm::Tokenizer for the pytest suite (tests/test_native_tokenizer.py).
//
//   driver_tokenizer TOKENIZER_JSON
//
// Prints one JSON line on load: {"vocab_size": N} or {"error": MESSAGE, "code": CODE}. Then reads
// JSON requests from stdin, one per line, and answers each with one JSON line:
//   {"op": "encode", "text": S, "add_special": B, "repeat": N}  -> {"ids": [...], "seconds": T}
//   {"op": "decode", "ids": [...], "skip_special": B}           -> {"text": S}
//   {"op": "token_to_id", "token": S}                           -> {"id": N or null}
//   {"op": "id_to_token", "id": N}                              -> {"token": S or null}
// "repeat" runs encode N times (timing); "seconds" is the total time of those runs.
// A request that fails answers {"error": MESSAGE, "code": CODE}.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/tokenizer.h"

using nlohmann::json;

namespace {

json error_json(const edgevlm::Error& e) { return {{"error", e.what()}, {"code", int(e.code())}}; }

json handle(const edgevlm::Tokenizer& tok, const json& req) {
  const std::string op = req.at("op").get<std::string>();
  if (op == "encode") {
    const std::string text = req.at("text").get<std::string>();
    const bool add_special = req.value("add_special", false);
    const int repeat = req.value("repeat", 1);
    std::vector<int32_t> ids;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < repeat; ++i) ids = tok.encode(text, add_special);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return {{"ids", ids}, {"seconds", secs}};
  }
  if (op == "decode") {
    return {{"text", tok.decode(req.at("ids").get<std::vector<int32_t>>(), req.value("skip_special", false))}};
  }
  if (op == "token_to_id") {
    const auto id = tok.token_to_id(req.at("token").get<std::string>());
    return {{"id", id ? json(*id) : json(nullptr)}};
  }
  if (op == "id_to_token") {
    const auto t = tok.id_to_token(req.at("id").get<int32_t>());
    return {{"token", t ? json(*t) : json(nullptr)}};
  }
  return {{"error", "unknown op " + op}, {"code", -1}};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s TOKENIZER_JSON\n", argv[0]);
    return 2;
  }
  std::ios::sync_with_stdio(false);
  try {
    const edgevlm::Tokenizer tok = edgevlm::Tokenizer::from_file(argv[1]);
    std::cout << json{{"vocab_size", tok.vocab_size()}}.dump() << "\n" << std::flush;
    std::string line;
    while (std::getline(std::cin, line)) {
      if (line.empty()) continue;
      json reply;
      try {
        reply = handle(tok, json::parse(line));
      } catch (const edgevlm::Error& e) {
        reply = error_json(e);
      } catch (const json::exception& e) {
        reply = {{"error", std::string("bad request: ") + e.what()}, {"code", -1}};
      }
      std::cout << reply.dump() << "\n" << std::flush;
    }
  } catch (const edgevlm::Error& e) {
    std::cout << error_json(e).dump() << "\n";
    return 1;
  }
  return 0;
}
