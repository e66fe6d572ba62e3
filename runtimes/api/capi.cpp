// The C API (include/edgevlm/edgevlm.h) over api/session.h: every entry point catches every
// exception, keeps its message as the thread's last error and returns a status code.
#include "edgevlm/edgevlm.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <string>

#include <nlohmann/json.hpp>

#include "api/session.h"
#include "core/error.h"
#include "core/version.h"

struct evlm_model {
  std::shared_ptr<edgevlm::Model> model;
  std::string info;
};

struct evlm_session {
  std::unique_ptr<edgevlm::Session> session;
  std::string stats;
};

namespace {

thread_local std::string g_last_error;

evlm_status to_status(edgevlm::ErrorCode c) { return static_cast<evlm_status>(static_cast<int>(c)); }

template <class F>
evlm_status guarded(F&& f) {
  try {
    f();
    g_last_error.clear();
    return EVLM_OK;
  } catch (const edgevlm::Error& e) {
    g_last_error = e.what();
    return to_status(e.code());
  } catch (const std::bad_alloc&) {
    g_last_error = "out of memory";
    return EVLM_ERR_INTERNAL;
  } catch (const nlohmann::json::exception& e) {
    g_last_error = std::string("malformed JSON content: ") + e.what();
    return EVLM_ERR_CORRUPT_FILE;
  } catch (const std::exception& e) {
    g_last_error = std::string("internal error: ") + e.what();
    return EVLM_ERR_INTERNAL;
  } catch (...) {
    g_last_error = "internal error: unknown exception";
    return EVLM_ERR_INTERNAL;
  }
}

evlm_status invalid(const std::string& what) {
  g_last_error = what;
  return EVLM_ERR_INVALID_ARGUMENT;
}

}  // namespace

extern "C" {

evlm_model_params evlm_model_params_default(void) {
  evlm_model_params p;
  p.n_threads = 0;
  p.verify_files = 1;
  p.kernels = nullptr;
  p.chunk_size = 0;
  p.max_context = 0;
  return p;
}

evlm_sampling_params evlm_sampling_params_default(void) {
  evlm_sampling_params p;
  p.max_new_tokens = 128;
  p.temperature = 0.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.repetition_penalty = 1.0f;
  p.seed = 0;
  p.ignore_eos = 0;
  return p;
}

evlm_chunk evlm_chunk_text(const char* text) {
  evlm_chunk c{};
  c.type = EVLM_CHUNK_TEXT;
  c.text = text;
  return c;
}

evlm_chunk evlm_chunk_image(const uint8_t* rgb, int32_t width, int32_t height) {
  evlm_chunk c{};
  c.type = EVLM_CHUNK_IMAGE;
  c.rgb = rgb;
  c.width = width;
  c.height = height;
  c.rgb_size = (width > 0 && height > 0) ? size_t(width) * size_t(height) * 3 : 0;
  return c;
}

const char* evlm_last_error(void) { return g_last_error.c_str(); }

const char* evlm_status_name(evlm_status s) {
  switch (s) {
    case EVLM_OK: return "ok";
    case EVLM_ERR_INVALID_ARGUMENT: return "invalid_argument";
    case EVLM_ERR_IO: return "io";
    case EVLM_ERR_CORRUPT_FILE: return "corrupt_file";
    case EVLM_ERR_UNSUPPORTED: return "unsupported";
    case EVLM_ERR_CONTEXT_OVERFLOW: return "context_overflow";
    case EVLM_ERR_CANCELLED: return "cancelled";
    case EVLM_ERR_INTERNAL: return "internal";
  }
  return "unknown";
}

const char* evlm_version(void) { return edgevlm::version(); }

evlm_status evlm_model_load(const char* bundle_dir, const evlm_model_params* params, evlm_model** out) {
  if (!bundle_dir || !out) return invalid("evlm_model_load: bundle_dir and out must not be NULL");
  const evlm_model_params p = params ? *params : evlm_model_params_default();
  return guarded([&] {
    if (p.n_threads < 0) edgevlm::fail(edgevlm::ErrorCode::kInvalidArgument, "n_threads must be >= 0");
    edgevlm::ModelOptions o;
    o.threads = p.n_threads;
    o.verify_files = p.verify_files != 0;
    o.kernels = p.kernels ? p.kernels : "";
    o.chunk_size = p.chunk_size;
    o.max_context = p.max_context;
    auto m = std::make_unique<evlm_model>();
    m->model = edgevlm::Model::load(bundle_dir, o);
    *out = m.release();
  });
}

void evlm_model_free(evlm_model* model) { delete model; }

const char* evlm_model_info_json(evlm_model* model) {
  if (!model) return "{}";
  evlm_status s = guarded([&] {
    const auto& m = *model->model;
    nlohmann::json j;
    j["family"] = m.bundle().family();
    j["vocab_size"] = m.tokenizer().vocab_size();
    j["max_context"] = m.max_context();
    j["chunk_size"] = m.chunk_size();
    j["has_vision"] = m.has_vision();
    j["eos_ids"] = m.eos_ids();
    j["load_ms"] = m.load_ms();
    j["threads"] = m.options().threads;
    model->info = j.dump();
  });
  return s == EVLM_OK ? model->info.c_str() : "{}";
}

evlm_status evlm_tokenize(evlm_model* model, const char* text, int32_t add_special, int32_t* ids, size_t capacity,
                          size_t* n_ids) {
  if (!model || !text) return invalid("evlm_tokenize: model and text must not be NULL");
  return guarded([&] {
    const auto v = model->model->tokenizer().encode(text, add_special != 0);
    if (ids) std::memcpy(ids, v.data(), sizeof(int32_t) * std::min(capacity, v.size()));
    if (n_ids) *n_ids = v.size();
  });
}

evlm_status evlm_session_create(evlm_model* model, evlm_session** out) {
  if (!model || !out) return invalid("evlm_session_create: model and out must not be NULL");
  return guarded([&] {
    auto s = std::make_unique<evlm_session>();
    s->session = std::make_unique<edgevlm::Session>(model->model);
    *out = s.release();
  });
}

void evlm_session_free(evlm_session* session) { delete session; }

evlm_status evlm_session_reset(evlm_session* session) {
  if (!session) return invalid("evlm_session_reset: session must not be NULL");
  return guarded([&] { session->session->reset(); });
}

evlm_status evlm_session_add_turn(evlm_session* session, const evlm_chunk* chunks, size_t n_chunks,
                                  int32_t use_template) {
  if (!session) return invalid("evlm_session_add_turn: session must not be NULL");
  if (n_chunks > 0 && !chunks) return invalid("evlm_session_add_turn: chunks is NULL");
  return guarded([&] {
    std::vector<edgevlm::InputChunk> in;
    for (size_t i = 0; i < n_chunks; ++i) {
      const evlm_chunk& c = chunks[i];
      edgevlm::InputChunk x;
      if (c.type == EVLM_CHUNK_TEXT) {
        if (!c.text) edgevlm::fail(edgevlm::ErrorCode::kInvalidArgument, "chunk " + std::to_string(i) + ": text is NULL");
        x.text = c.text;
      } else if (c.type == EVLM_CHUNK_IMAGE) {
        if (!c.rgb) edgevlm::fail(edgevlm::ErrorCode::kInvalidArgument, "chunk " + std::to_string(i) + ": image buffer is NULL");
        x.is_image = true;
        x.rgb = c.rgb;
        x.rgb_size = c.rgb_size;
        x.width = c.width;
        x.height = c.height;
      } else {
        edgevlm::fail(edgevlm::ErrorCode::kInvalidArgument, "chunk " + std::to_string(i) + ": unknown type " +
                                                                std::to_string(int(c.type)));
      }
      in.push_back(std::move(x));
    }
    session->session->add_turn(in, use_template != 0);
  });
}

evlm_status evlm_session_add_tokens(evlm_session* session, const int32_t* ids, size_t n_ids) {
  if (!session || (!ids && n_ids)) return invalid("evlm_session_add_tokens: session and ids must not be NULL");
  return guarded([&] { session->session->add_tokens(std::vector<int32_t>(ids, ids + n_ids)); });
}

evlm_status evlm_session_truncate(evlm_session* session, size_t n_tokens) {
  if (!session) return invalid("evlm_session_truncate: session must not be NULL");
  if (n_tokens > size_t(INT32_MAX)) return invalid("evlm_session_truncate: n_tokens too large");
  return guarded([&] { session->session->truncate(int(n_tokens)); });
}

const int32_t* evlm_session_history(evlm_session* session, size_t* n_ids) {
  if (!session) {
    if (n_ids) *n_ids = 0;
    return nullptr;
  }
  const auto& h = session->session->history();
  if (n_ids) *n_ids = h.size();
  return h.data();
}

evlm_status evlm_session_score(evlm_session* session, const int32_t* ids, size_t n_ids, float* logprobs,
                               size_t capacity) {
  if (!session || !ids) return invalid("evlm_session_score: session and ids must not be NULL");
  if (n_ids < 2) return invalid("evlm_session_score: at least two tokens are needed");
  if (!logprobs) return invalid("evlm_session_score: logprobs must not be NULL");
  if (capacity < n_ids - 1)
    return invalid("evlm_session_score: logprobs holds " + std::to_string(capacity) + " values; " +
                   std::to_string(n_ids - 1) + " are needed");
  return guarded([&] {
    const std::vector<float> out = session->session->score(std::vector<int32_t>(ids, ids + n_ids));
    std::copy(out.begin(), out.end(), logprobs);
  });
}

evlm_status evlm_session_generate(evlm_session* session, const evlm_sampling_params* params,
                                  evlm_token_callback callback, void* user_data, int32_t* out_tokens, size_t capacity,
                                  size_t* n_out) {
  if (!session) return invalid("evlm_session_generate: session must not be NULL");
  const evlm_sampling_params p = params ? *params : evlm_sampling_params_default();
  evlm_status status = guarded([&] {
    edgevlm::SamplingParams sp;
    sp.max_new_tokens = p.max_new_tokens;
    sp.temperature = p.temperature;
    sp.top_k = p.top_k;
    sp.top_p = p.top_p;
    sp.repetition_penalty = p.repetition_penalty;
    sp.seed = p.seed;
    sp.ignore_eos = p.ignore_eos != 0;
    edgevlm::TokenCallback cb;
    if (callback)
      cb = [&](int32_t t, const std::string& piece) { return callback(user_data, t, piece.c_str()) != 0; };
    const auto toks = session->session->generate(sp, cb);
    if (out_tokens) std::memcpy(out_tokens, toks.data(), sizeof(int32_t) * std::min(capacity, toks.size()));
    if (n_out) *n_out = toks.size();
  });
  if (status == EVLM_OK && session->session->stats().finish_reason == "cancelled") {
    g_last_error = "generation cancelled by the caller";
    return EVLM_ERR_CANCELLED;
  }
  return status;
}

void evlm_session_cancel(evlm_session* session) {
  if (session) session->session->cancel();
}

const float* evlm_session_logits(evlm_session* session, size_t* n_vocab) {
  if (!session || session->session->last_logits().empty()) {
    if (n_vocab) *n_vocab = 0;
    return nullptr;
  }
  if (n_vocab) *n_vocab = session->session->last_logits().size();
  return session->session->last_logits().data();
}

const char* evlm_session_stats_json(evlm_session* session) {
  if (!session) return "{}";
  session->stats = session->session->stats().to_json();
  return session->stats.c_str();
}

}  // extern "C"
