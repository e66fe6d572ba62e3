// The narrow interface every compute engine implements (ARCHITECTURE.md contract 2): run the vision
// encoder on tiles, embed token ids, run a prefill chunk, run a decode step, reset the KV cache.
// The chunk plan (core/chunk_plan.h) and sampling live above it, so other engines (ExecuTorch
// delegates, NPUs) can sit behind the same calls later. Batch size is 1; arrays are row-major
// float32. Every bad input throws edgevlm::Error.
#pragma once

#include <cstdint>
#include <string>

namespace edgevlm {

class Engine {
 public:
  virtual ~Engine() = default;

  virtual int hidden_size() const = 0;      // H: embedding width of the decoder
  virtual int vocab_size() const = 0;       // V
  virtual int max_context() const = 0;      // KV cache positions
  virtual int tokens_per_tile() const = 0;  // T_img; 0 for text-only models
  virtual int tile_size() const = 0;        // S of the [3, S, S] tiles the encoder takes; 0: no vision
  virtual std::string name() const = 0;

  /// ids [n] -> out [n, H]. Ids outside the vocabulary (image slots) embed as id 0.
  virtual void embed(const int64_t* ids, int n, float* out) = 0;
  /// tiles [n, 3, S, S] (normalized pixels) -> out [n, T_img, H], projector included.
  virtual void encode_images(const float* tiles, int n, float* out) = 0;
  /// One chunk of rows [c, H] at absolute positions [c] -> logits [V] of the chunk's last row.
  /// Writes the chunk's keys and values at those positions; the attention mask follows from
  /// positions alone (cache slot j is visible to a query at position p iff j <= p).
  virtual void prefill(const float* rows, const int32_t* positions, int c, float* logits) = 0;
  /// One row [H] at `position` -> logits [V] (prefill with c = 1).
  virtual void decode(const float* row, int32_t position, float* logits) = 0;
  /// prefill() that also scores (teacher forcing): logprobs [c] gets log p(targets[i] | rows up to
  /// row i) for each row, logits [V] the chunk's last row as prefill() gives them.
  virtual void score(const float* rows, const int32_t* positions, int c, const int32_t* targets, float* logprobs,
                     float* logits) = 0;
  /// Clears the KV cache.
  virtual void reset() = 0;
};

}  // namespace edgevlm
