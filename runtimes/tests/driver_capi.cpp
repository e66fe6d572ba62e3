// Test driver of the C API (include/edgevlm/edgevlm.h), used only through its public functions:
//   driver_capi BUNDLE_DIR [--chunk C] [--threads N]
// Reads JSON requests on stdin, one per line, and prints one JSON line for each:
//   {"score": [ids...]}  -> {"logprobs": [...]}    evlm_session_score, then greedy tokens after it:
//                           {"logprobs": [...], "next": [3 greedy ids]} (evlm_session_generate)
// Errors -> {"error": message, "status": "invalid_argument"}.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "edgevlm/edgevlm.h"

using nlohmann::json;

static json failure(evlm_status st) { return {{"error", evlm_last_error()}, {"status", evlm_status_name(st)}}; }

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: driver_capi BUNDLE_DIR [--chunk C] [--threads N]\n");
    return 2;
  }
  evlm_model_params mp = evlm_model_params_default();
  for (int i = 2; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--chunk")) mp.chunk_size = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--threads")) mp.n_threads = std::atoi(argv[i + 1]);
  }
  evlm_model* model = nullptr;
  evlm_session* session = nullptr;
  evlm_status st = evlm_model_load(argv[1], &mp, &model);
  if (st != EVLM_OK) {
    std::cout << failure(st).dump() << std::endl;
    return 1;
  }
  st = evlm_session_create(model, &session);
  if (st != EVLM_OK) {
    std::cout << failure(st).dump() << std::endl;
    evlm_model_free(model);
    return 1;
  }
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    const json req = json::parse(line);
    json res;
    if (req.contains("score")) {
      const std::vector<int32_t> ids = req["score"].get<std::vector<int32_t>>();
      std::vector<float> logprobs(ids.empty() ? 0 : ids.size() - 1);
      st = evlm_session_score(session, ids.data(), ids.size(), logprobs.data(), logprobs.size());
      if (st != EVLM_OK) {
        res = failure(st);
      } else {
        res["logprobs"] = logprobs;
        evlm_sampling_params sp = evlm_sampling_params_default();
        sp.max_new_tokens = 3;
        sp.ignore_eos = 1;
        int32_t next[3];
        size_t n_next = 0;
        st = evlm_session_generate(session, &sp, nullptr, nullptr, next, 3, &n_next);
        if (st != EVLM_OK) res = failure(st);
        else res["next"] = std::vector<int32_t>(next, next + n_next);
      }
    } else {
      res = {{"error", "unknown request"}};
    }
    std::cout << res.dump() << std::endl;
  }
  evlm_session_free(session);
  evlm_model_free(model);
  return 0;
}
