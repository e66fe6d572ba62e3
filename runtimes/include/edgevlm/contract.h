// The bundle contract: manifest keys, method names and file layout of a NAME.evlm/ bundle.
//
// Mirrors edgevlm/contract.py one to one (same names, same values); tests/test_contract.py
// proves that they agree through the edgevlm._native module, which enumerates the lists below.
// Change both files together.
#pragma once

#include <cstddef>

// X-macro lists: X(NAME, VALUE). Every constant is declared in namespace edgevlm::contract.
#define EDGEVLM_CONTRACT_INTS(X) X(SCHEMA_VERSION, 1)

#define EDGEVLM_CONTRACT_STRINGS(X)                  \
  X(BUNDLE_SUFFIX, ".evlm")                           \
  X(MANIFEST_FILE, "manifest.json")                   \
  X(TOKENIZER_FILE, "tokenizer.json")                 \
  X(WEIGHTS_DIR, "weights")                           \
  X(METHOD_VISION_ENCODER, "vision_encoder")          \
  X(METHOD_TOKEN_EMBEDDING, "token_embedding")        \
  X(METHOD_PREFILL, "prefill")                        \
  X(METHOD_DECODE, "decode")                          \
  X(METHOD_SCORE, "score")                            \
  X(ET_META_MAX_SEQ_LEN, "get_max_seq_len")           \
  X(ET_META_MAX_CONTEXT_LEN, "get_max_context_len")   \
  X(ET_META_BOS_ID, "get_bos_id")                     \
  X(ET_META_EOS_IDS, "get_eos_ids")                   \
  X(ET_META_VOCAB_SIZE, "get_vocab_size")             \
  X(ET_META_USE_KV_CACHE, "use_kv_cache")             \
  X(ET_META_CHUNK_SIZE, "get_chunk_size")             \
  X(KEY_SCHEMA_VERSION, "schema_version")             \
  X(KEY_FAMILY, "family")                             \
  X(KEY_TEXT_CONFIG, "text_config")                   \
  X(KEY_VISION_CONFIG, "vision_config")               \
  X(KEY_PROJECTOR_CONFIG, "projector_config")         \
  X(KEY_SPECIAL_TOKENS, "special_tokens")             \
  X(KEY_CHAT_TEMPLATE, "chat_template")               \
  X(KEY_CHAT_FORMAT, "chat_format")                   \
  X(KEY_IMAGE_PREPROCESSING, "image_preprocessing")   \
  X(KEY_QUANT_RECIPE, "quant_recipe")                 \
  X(KEY_CHUNK_SIZE, "chunk_size")                     \
  X(KEY_MAX_CONTEXT, "max_context")                   \
  X(KEY_TARGETS, "targets")                           \
  X(KEY_FILES, "files")                               \
  X(TOKEN_BOS, "bos")                                 \
  X(TOKEN_EOS, "eos")                                 \
  X(TOKEN_PAD, "pad")                                 \
  X(TOKEN_IMAGE, "image")                             \
  X(IMAGE_KIND, "kind")                               \
  X(IMAGE_SIZE, "image_size")                         \
  X(IMAGE_MEAN, "mean")                               \
  X(IMAGE_STD, "std")                                 \
  X(IMAGE_RESAMPLE, "resample")                       \
  X(IMAGE_LONGEST_EDGE, "longest_edge")               \
  X(IMAGE_SPLIT, "do_image_splitting")                \
  X(IMAGE_TOKENS_PER_TILE, "tokens_per_tile")         \
  X(TARGET_NATIVE, "native")                          \
  X(TARGET_ONNX, "onnx")                              \
  X(TARGET_EXECUTORCH, "executorch")                  \
  X(TARGET_COREML, "coreml")                          \
  X(TARGET_TVM, "tvm")

// Lists: X(NAME, ELEMENTS...) where every element is one of the string constants above.
#define EDGEVLM_CONTRACT_LISTS(X)                                                            \
  X(METHODS, METHOD_VISION_ENCODER, METHOD_TOKEN_EMBEDDING, METHOD_PREFILL, METHOD_DECODE)   \
  X(MANIFEST_REQUIRED_KEYS, KEY_SCHEMA_VERSION, KEY_FAMILY, KEY_TEXT_CONFIG,                 \
    KEY_SPECIAL_TOKENS, KEY_CHAT_TEMPLATE, KEY_CHUNK_SIZE, KEY_MAX_CONTEXT, KEY_TARGETS,     \
    KEY_FILES)                                                                               \
  X(TARGETS, TARGET_NATIVE, TARGET_ONNX, TARGET_EXECUTORCH, TARGET_COREML, TARGET_TVM)

namespace edgevlm::contract {

#define EDGEVLM_DECLARE_INT(name, value) inline constexpr int name = value;
#define EDGEVLM_DECLARE_STRING(name, value) inline constexpr const char* name = value;
#define EDGEVLM_DECLARE_LIST(name, ...) inline constexpr const char* name[] = {__VA_ARGS__};
EDGEVLM_CONTRACT_INTS(EDGEVLM_DECLARE_INT)
EDGEVLM_CONTRACT_STRINGS(EDGEVLM_DECLARE_STRING)
EDGEVLM_CONTRACT_LISTS(EDGEVLM_DECLARE_LIST)
#undef EDGEVLM_DECLARE_INT
#undef EDGEVLM_DECLARE_STRING
#undef EDGEVLM_DECLARE_LIST

}  // namespace edgevlm::contract
