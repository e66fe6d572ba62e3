// From a user's turn (text + images) to prompt token ids, as edgevlm/processing does it.
//
// The chat template is not interpreted here: the exporter records it as concatenable pieces
// (manifest "chat_format", see Processor.chat_format in Python): a first user turn with n images
// renders as first[n] + text + tail, a later one as next[n] + text + tail appended after the
// assistant's reply. Image placeholders (image_token) are then expanded the family's way:
//   idefics3 (SmolVLM): the tile grid <fake_token_around_image><row_r_col_c><image>*T ... <global-img>
//   repeat  (LLaVA)   : image_token repeated T times
//   splice  (MobileVLM): T image ids spliced between separately tokenized pieces
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/tokenizer.h"

namespace edgevlm {

struct ChatFormat {
  bool present = false;  // false: the model has no template; prompts are used as they are
  std::string image_token = "<image>";
  std::vector<std::string> first;  // [n images] -> text before the user's text, first turn
  std::vector<std::string> next;   // [n images] -> the same for later turns (closes the reply first)
  std::string tail;                // after the user's text: end of turn + generation prompt
  int max_images = 0;

  /// From manifest["chat_format"] (null -> not present). Malformed -> kCorruptFile.
  static ChatFormat from_json(const nlohmann::json& j);
};

enum class ImageLayout { kNone, kIdefics3, kRepeat, kSplice };

/// What the prompt builder needs to know of the model.
struct PromptConfig {
  ChatFormat chat;
  ImageLayout layout = ImageLayout::kNone;
  int tokens_per_tile = 0;
  int32_t image_token_id = -1;  // may be negative: MobileVLM's placeholder is -200, outside the vocabulary
  bool has_image_token = false;
  int32_t bos_id = -1;

  /// From a bundle manifest (family, special_tokens, image_preprocessing, chat_format).
  static PromptConfig from_manifest(const nlohmann::json& manifest);
};

/// Prompt ids of one turn and where its image rows go.
struct PromptIds {
  std::vector<int32_t> ids;
};

class PromptBuilder {
 public:
  PromptBuilder(const Tokenizer& tokenizer, PromptConfig config);

  /// The text of one user turn with `n_images` placeholders (images come first, as the Python
  /// processor lays them out). `use_template` false: placeholders then the text, as given.
  /// A later turn's piece starts by closing the reply (e.g. "<end_of_utterance>"): the stop token
  /// that ended the reply is never fed to the cache (as in the Python generator), so it is not doubled.
  std::string render_turn(const std::string& text, int n_images, bool first_turn, bool use_template) const;

  /// Token ids of `text` whose image placeholders are expanded; grids[i] = {rows, cols} of
  /// image i ({0, 0} when not split). `add_special` adds BOS as the tokenizer's post-processor
  /// does (true for the first turn). Throws kInvalidArgument when placeholders and images differ.
  std::vector<int32_t> tokenize(const std::string& text, const std::vector<std::array<int, 2>>& grids,
                                bool add_special) const;

  const PromptConfig& config() const { return config_; }

 private:
  std::string image_text(int rows, int cols) const;

  const Tokenizer& tokenizer_;
  PromptConfig config_;
};

}  // namespace edgevlm
