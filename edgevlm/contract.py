"""The bundle contract: manifest keys, method names and file layout of a ``NAME.evlm/`` bundle.

A bundle is the contract between the exporters (Python) and the runtimes (C++ and the Python
backends). This module is the single place that names its keys; the C++ header
``runtimes/include/edgevlm/contract.h`` mirrors it and ``tests/test_contract.py`` proves that
the two agree (through the compiled ``edgevlm._native`` module, which reads the header).

Layout of a bundle directory::

    NAME.evlm/
      manifest.json          keys below
      tokenizer.json         HF tokenizers format
      weights/*.safetensors  native weights (int4 packed + scales, recipe recorded per tensor)
      onnx/ executorch/ coreml/ tvm/   one subfolder per exported target

Method names are fixed across targets (ARCHITECTURE.md, contract 2):

- ``vision_encoder``: pixels ``[N, 3, S, S]`` -> image features ``[N, T_img, H]``, projector included
- ``token_embedding``: ids ``[1, T]`` -> embeddings ``[1, T, H]``
- ``prefill``: a static chunk of C embeddings ``[1, C, H]`` + positions ``[C]`` + KV cache
  -> logits of the chunk's last valid position ``[1, V]`` + updated KV cache
- ``decode``: one token, same as prefill with C = 1
- ``score`` (optional): a prefill chunk and target ids ``[C]`` -> log-probabilities ``[C]`` of the targets
  + updated KV cache
"""

from __future__ import annotations

SCHEMA_VERSION = 1
BUNDLE_SUFFIX = ".evlm"
MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
WEIGHTS_DIR = "weights"

# Method names (contract 2).
METHOD_VISION_ENCODER = "vision_encoder"
METHOD_TOKEN_EMBEDDING = "token_embedding"
METHOD_PREFILL = "prefill"
METHOD_DECODE = "decode"
METHODS = (METHOD_VISION_ENCODER, METHOD_TOKEN_EMBEDDING, METHOD_PREFILL, METHOD_DECODE)
# Optional (``edgevlm export --score``): a prefill chunk plus the id that follows each row -> the
# log-probability of each of those ids ``[C]`` + the updated KV cache (teacher-forced scoring: perplexity).
METHOD_SCORE = "score"

# Constant methods holding metadata inside an ExecuTorch program, named as ExecuTorch's own
# LLM runners read them (extension/llm/runner/constants.h).
ET_META_MAX_SEQ_LEN = "get_max_seq_len"
ET_META_MAX_CONTEXT_LEN = "get_max_context_len"
ET_META_BOS_ID = "get_bos_id"
ET_META_EOS_IDS = "get_eos_ids"
ET_META_VOCAB_SIZE = "get_vocab_size"
ET_META_USE_KV_CACHE = "use_kv_cache"
ET_META_CHUNK_SIZE = "get_chunk_size"

# Top-level manifest keys (contract 1).
KEY_SCHEMA_VERSION = "schema_version"
KEY_FAMILY = "family"  # model family package name: llama | smolvlm | llava | mobilevlm
KEY_TEXT_CONFIG = "text_config"
KEY_VISION_CONFIG = "vision_config"  # absent for text-only models
KEY_PROJECTOR_CONFIG = "projector_config"  # absent for text-only models
KEY_SPECIAL_TOKENS = "special_tokens"  # name -> id, names below
KEY_CHAT_TEMPLATE = "chat_template"
KEY_CHAT_FORMAT = "chat_format"  # the template as concatenable pieces (Processor.chat_format); null: none
KEY_IMAGE_PREPROCESSING = "image_preprocessing"
KEY_QUANT_RECIPE = "quant_recipe"
KEY_CHUNK_SIZE = "chunk_size"
KEY_MAX_CONTEXT = "max_context"
KEY_TARGETS = "targets"  # target name -> {"files": {method: relative path}, "verification": {...}}
KEY_FILES = "files"  # relative path -> sha256 hex digest, every file of the bundle but the manifest

MANIFEST_REQUIRED_KEYS = (
    KEY_SCHEMA_VERSION,
    KEY_FAMILY,
    KEY_TEXT_CONFIG,
    KEY_SPECIAL_TOKENS,
    KEY_CHAT_TEMPLATE,
    KEY_CHUNK_SIZE,
    KEY_MAX_CONTEXT,
    KEY_TARGETS,
    KEY_FILES,
)

# Keys of KEY_SPECIAL_TOKENS.
TOKEN_BOS = "bos"
TOKEN_EOS = "eos"  # a list of ids: generation stops on any of them
TOKEN_PAD = "pad"
TOKEN_IMAGE = "image"  # the placeholder replaced by image features

# Keys of KEY_IMAGE_PREPROCESSING.
IMAGE_KIND = "kind"  # "idefics3" (split into tiles + global) | "clip" (resize + center crop) | "pad_square"
IMAGE_SIZE = "image_size"  # encoder input side S
IMAGE_MEAN = "mean"
IMAGE_STD = "std"
IMAGE_RESAMPLE = "resample"  # PIL filter name: "bicubic" | "lanczos" | "bilinear"
IMAGE_LONGEST_EDGE = "longest_edge"  # idefics3: first resize of the longest edge
IMAGE_SPLIT = "do_image_splitting"
IMAGE_TOKENS_PER_TILE = "tokens_per_tile"

# Target names.
TARGET_NATIVE = "native"
TARGET_ONNX = "onnx"
TARGET_EXECUTORCH = "executorch"
TARGET_COREML = "coreml"
TARGET_TVM = "tvm"
TARGETS = (TARGET_NATIVE, TARGET_ONNX, TARGET_EXECUTORCH, TARGET_COREML, TARGET_TVM)


def as_dict() -> dict[str, object]:
    """Every contract constant by name, for comparison with the C++ header."""
    return {k: v for k, v in globals().items() if k.isupper() and not k.startswith("_")}
