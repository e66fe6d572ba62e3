/* edgevlm C API: load a NAME.evlm bundle and run it on the CPU engine.
 *
 * Conventions (after llama.cpp's mtmd.h):
 *   - opaque handles, created and freed in pairs (evlm_model_load / evlm_model_free, ...);
 *   - every parameter struct has a *_default() function: take it, change what you need;
 *   - every call that can fail returns an evlm_status; EVLM_OK is 0. On failure,
 *     evlm_last_error() (per thread) tells what went wrong, naming the file, key or input;
 *   - nothing input-driven aborts or crashes: bad files, bad images, over-long prompts are
 *     reported as errors. Output pointers are untouched on failure.
 *
 * Minimal use:
 *   evlm_model* model; evlm_session* s;
 *   evlm_model_params mp = evlm_model_params_default();
 *   if (evlm_model_load("shapes.evlm", &mp, &model) != EVLM_OK) puts(evlm_last_error());
 *   evlm_session_create(model, &s);
 *   evlm_chunk in[2] = {evlm_chunk_image(rgb, w, h), evlm_chunk_text("What color is the circle?")};
 *   evlm_session_add_turn(s, in, 2, 1);
 *   evlm_sampling_params sp = evlm_sampling_params_default();
 *   evlm_session_generate(s, &sp, on_token, user_data);   // on_token returns 0 to cancel
 *   puts(evlm_session_stats_json(s));
 *   evlm_session_free(s); evlm_model_free(model);
 */
#ifndef EDGEVLM_EDGEVLM_H
#define EDGEVLM_EDGEVLM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define EVLM_API __declspec(dllexport)
#else
#define EVLM_API __attribute__((visibility("default")))
#endif

typedef enum evlm_status {
  EVLM_OK = 0,
  EVLM_ERR_INVALID_ARGUMENT = 1, /* a bad parameter or input: wrong image size, empty prompt, ... */
  EVLM_ERR_IO = 2,               /* a file missing or unreadable */
  EVLM_ERR_CORRUPT_FILE = 3,     /* malformed content: truncated safetensors, bad JSON, bad offsets, sha256 mismatch */
  EVLM_ERR_UNSUPPORTED = 4,      /* a model family, dtype or scheme this runtime does not know */
  EVLM_ERR_CONTEXT_OVERFLOW = 5, /* the prompt does not fit the KV cache */
  EVLM_ERR_CANCELLED = 6,        /* the token callback asked to stop (generate still returns its tokens) */
  EVLM_ERR_INTERNAL = 7          /* a bug; please report it with the message */
} evlm_status;

typedef struct evlm_model evlm_model;     /* weights, tokenizer, configuration; shareable by sessions */
typedef struct evlm_session evlm_session; /* one conversation: KV cache, history, stats */

typedef struct evlm_model_params {
  int32_t n_threads;    /* 0: every core */
  int32_t verify_files; /* nonzero: check every bundle file's sha256 before use (default 1) */
  const char* kernels;  /* NULL or "": best for this CPU; "scalar" | "avx2" | "avx512" | "neon" */
  int32_t chunk_size;   /* 0: the bundle's prefill chunk size */
  int32_t max_context;  /* 0: the bundle's KV cache length */
} evlm_model_params;

typedef struct evlm_sampling_params {
  int32_t max_new_tokens;   /* default 128 */
  float temperature;        /* 0: greedy (default) */
  int32_t top_k;            /* 0: off */
  float top_p;              /* 1: off */
  float repetition_penalty; /* 1: off */
  uint64_t seed;
  int32_t ignore_eos;       /* nonzero: keep generating past stop tokens (benchmarks) */
} evlm_sampling_params;

typedef enum evlm_chunk_type { EVLM_CHUNK_TEXT = 0, EVLM_CHUNK_IMAGE = 1 } evlm_chunk_type;

/* One piece of a user turn. Text is UTF-8, NUL-terminated. An image is RGB8, row-major, 3 bytes
 * per pixel, rgb_size == width * height * 3 bytes. Images precede the text in the prompt. */
typedef struct evlm_chunk {
  evlm_chunk_type type;
  const char* text;
  const uint8_t* rgb;
  size_t rgb_size;
  int32_t width;
  int32_t height;
} evlm_chunk;

/* Called for each generated token with its text piece (possibly "", e.g. for the stop token or
 * while a UTF-8 sequence is incomplete). Return nonzero to continue, 0 to cancel. */
typedef int (*evlm_token_callback)(void* user_data, int32_t token, const char* piece);

EVLM_API evlm_model_params evlm_model_params_default(void);
EVLM_API evlm_sampling_params evlm_sampling_params_default(void);
EVLM_API evlm_chunk evlm_chunk_text(const char* text);
EVLM_API evlm_chunk evlm_chunk_image(const uint8_t* rgb, int32_t width, int32_t height);

/* The message of the last failed call on this thread ("" when none). Valid until the next call. */
EVLM_API const char* evlm_last_error(void);
EVLM_API const char* evlm_status_name(evlm_status status);
EVLM_API const char* evlm_version(void);

EVLM_API evlm_status evlm_model_load(const char* bundle_dir, const evlm_model_params* params, evlm_model** out);
EVLM_API void evlm_model_free(evlm_model* model);
/* Model facts as JSON (family, vocab size, context, chunk size, kernels, threads). Owned by the model. */
EVLM_API const char* evlm_model_info_json(evlm_model* model);
/* Tokenize UTF-8 text (no chat template). Writes at most capacity ids; *n_ids gets the count needed. */
EVLM_API evlm_status evlm_tokenize(evlm_model* model, const char* text, int32_t add_special, int32_t* ids,
                                   size_t capacity, size_t* n_ids);

EVLM_API evlm_status evlm_session_create(evlm_model* model, evlm_session** out);
EVLM_API void evlm_session_free(evlm_session* session);
/* Empties the KV cache and the history. */
EVLM_API evlm_status evlm_session_reset(evlm_session* session);
/* One user turn (through the chat template when use_template is nonzero), tokenized, images
 * encoded, prefilled in static chunks. A later turn continues the conversation in the same cache. */
EVLM_API evlm_status evlm_session_add_turn(evlm_session* session, const evlm_chunk* chunks, size_t n_chunks,
                                           int32_t use_template);
/* Raw prompt ids, prefilled as they are (benchmarks). */
EVLM_API evlm_status evlm_session_add_tokens(evlm_session* session, const int32_t* ids, size_t n_ids);
/* Keeps the first n_tokens of the session's history in the KV cache and forgets the rest, so a
 * prompt that extends that prefix is prefilled from there, not from the start (a server reusing a
 * conversation's cache). n_tokens may not exceed the tokens in the cache. Add a turn or tokens
 * before the next generate. */
EVLM_API evlm_status evlm_session_truncate(evlm_session* session, size_t n_tokens);
/* The token ids in the KV cache, in order (after a generate, followed by its last token, which the
 * cache does not hold yet). Owned by the session, valid until the next call on it. */
EVLM_API const int32_t* evlm_session_history(evlm_session* session, size_t* n_ids);
/* Teacher-forced scoring (perplexity): resets the session, prefills ids [n_ids] (n_ids >= 2) in the
 * usual chunks and writes log p(ids[i + 1] | ids[0..i]) for i < n_ids - 1 to logprobs (capacity >=
 * n_ids - 1). Afterwards the session is as after evlm_session_add_tokens(ids): generate continues. */
EVLM_API evlm_status evlm_session_score(evlm_session* session, const int32_t* ids, size_t n_ids, float* logprobs,
                                        size_t capacity);
/* Generates from the last prefill; callback may be NULL. The generated ids are written to
 * out_tokens (at most capacity; may be NULL) and their count to *n_out (may be NULL).
 * Returns EVLM_ERR_CANCELLED when the callback stopped it (the tokens so far are still written). */
EVLM_API evlm_status evlm_session_generate(evlm_session* session, const evlm_sampling_params* params,
                                           evlm_token_callback callback, void* user_data, int32_t* out_tokens,
                                           size_t capacity, size_t* n_out);
/* Asks a running generate (on another thread) to stop after the current token. */
EVLM_API void evlm_session_cancel(evlm_session* session);
/* Logits [vocab] of the last prefill or decode step; NULL before any. Owned by the session. */
EVLM_API const float* evlm_session_logits(evlm_session* session, size_t* n_vocab);
/* Stats of the last turn and generation as JSON (the schema of edgevlm.generate.GenerationStats).
 * Owned by the session, valid until the next call on it. */
EVLM_API const char* evlm_session_stats_json(evlm_session* session);

#ifdef __cplusplus
}
#endif

#endif /* EDGEVLM_EDGEVLM_H */
