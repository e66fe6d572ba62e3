#include "core/prompt.h"

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace edgevlm {

namespace {

std::vector<std::string> split(const std::string& s, const std::string& sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t at = s.find(sep, start);
    if (at == std::string::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, at - start));
    start = at + sep.size();
  }
}

std::vector<std::string> pieces_by_count(const nlohmann::json& j, const char* key, int max_images) {
  if (!j.contains(key) || !j[key].is_object()) fail(ErrorCode::kCorruptFile, std::string("chat_format: '") + key + "' missing");
  std::vector<std::string> out;
  for (int n = 0; n <= max_images; ++n) {
    const std::string k = std::to_string(n);
    if (!j[key].contains(k) || !j[key][k].is_string())
      fail(ErrorCode::kCorruptFile, std::string("chat_format: '") + key + "' has no string for " + k + " images");
    out.push_back(j[key][k].get<std::string>());
  }
  return out;
}

}  // namespace

ChatFormat ChatFormat::from_json(const nlohmann::json& j) {
  ChatFormat f;
  if (j.is_null()) return f;
  if (!j.is_object()) fail(ErrorCode::kCorruptFile, "chat_format: expected an object or null");
  if (!j.contains("tail") || !j["tail"].is_string()) fail(ErrorCode::kCorruptFile, "chat_format: 'tail' missing");
  f.present = true;
  f.image_token = j.value("image_token", std::string("<image>"));
  f.max_images = j.value("max_images", 0);
  if (f.max_images < 0 || f.max_images > 64) fail(ErrorCode::kCorruptFile, "chat_format: bad max_images");
  f.first = pieces_by_count(j, "first", f.max_images);
  f.next = pieces_by_count(j, "next", f.max_images);
  f.tail = j["tail"].get<std::string>();
  return f;
}

PromptConfig PromptConfig::from_manifest(const nlohmann::json& m) {
  PromptConfig c;
  c.chat = ChatFormat::from_json(m.contains("chat_format") ? m["chat_format"] : nlohmann::json());
  const auto& special = m.at("special_tokens");
  if (special.contains("bos") && special["bos"].is_number_integer()) c.bos_id = special["bos"].get<int32_t>();
  if (special.contains("image") && special["image"].is_number_integer()) {
    c.image_token_id = special["image"].get<int32_t>();
    c.has_image_token = true;
  }
  const auto* pre = m.contains("image_preprocessing") && m["image_preprocessing"].is_object() ? &m["image_preprocessing"] : nullptr;
  if (pre) {
    c.tokens_per_tile = pre->value("tokens_per_tile", 0);
    const std::string family = m.value("family", std::string());
    if (family == "smolvlm") c.layout = ImageLayout::kIdefics3;
    else if (family == "llava") c.layout = ImageLayout::kRepeat;
    else if (family == "mobilevlm") c.layout = ImageLayout::kSplice;
    else fail(ErrorCode::kUnsupported, "prompt: no image token layout for family '" + family + "'");
    if (c.tokens_per_tile <= 0) fail(ErrorCode::kCorruptFile, "manifest: image_preprocessing.tokens_per_tile missing");
    if (!c.has_image_token) fail(ErrorCode::kCorruptFile, "manifest: special_tokens.image missing for a vision model");
  }
  return c;
}

PromptBuilder::PromptBuilder(const Tokenizer& tokenizer, PromptConfig config)
    : tokenizer_(tokenizer), config_(std::move(config)) {}

std::string PromptBuilder::render_turn(const std::string& text, int n_images, bool first_turn,
                                       bool use_template) const {
  const ChatFormat& f = config_.chat;
  if (n_images < 0) fail(ErrorCode::kInvalidArgument, "prompt: negative image count");
  if (n_images > 0 && config_.layout == ImageLayout::kNone)
    fail(ErrorCode::kInvalidArgument, "prompt: this is a text-only model: it takes no images");
  if (!use_template || !f.present) {
    std::string out;
    for (int i = 0; i < n_images; ++i) out += f.image_token;
    return out + text;
  }
  if (n_images > f.max_images)
    fail(ErrorCode::kInvalidArgument, "prompt: " + std::to_string(n_images) + " images in one turn; the bundle's chat format covers at most " +
                                          std::to_string(f.max_images));
  return (first_turn ? f.first[n_images] : f.next[n_images]) + text + f.tail;
}

std::string PromptBuilder::image_text(int rows, int cols) const {
  std::string image;
  for (int i = 0; i < config_.tokens_per_tile; ++i) image += config_.chat.image_token;
  if (config_.layout == ImageLayout::kRepeat) return image;
  const std::string fake = "<fake_token_around_image>";
  const std::string glob = fake + "<global-img>" + image + fake;
  if (rows == 0) return glob;
  std::string grid;
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c)
      grid += fake + "<row_" + std::to_string(r + 1) + "_col_" + std::to_string(c + 1) + ">" + image;
    grid += "\n";
  }
  return grid + "\n" + glob;
}

std::vector<int32_t> PromptBuilder::tokenize(const std::string& text, const std::vector<std::array<int, 2>>& grids,
                                             bool add_special) const {
  const std::vector<std::string> parts = split(text, config_.chat.image_token);
  const size_t placeholders = parts.size() - 1;
  if (config_.layout == ImageLayout::kNone || grids.empty()) {
    if (!grids.empty()) fail(ErrorCode::kInvalidArgument, "prompt: this is a text-only model: it takes no images");
    if (config_.layout != ImageLayout::kNone && placeholders > 0)
      fail(ErrorCode::kInvalidArgument, "prompt: the text has " + std::to_string(placeholders) + " image placeholders (" +
                                            config_.chat.image_token + ") but no images were given");
    return tokenizer_.encode(text, add_special);
  }
  if (placeholders != grids.size())
    fail(ErrorCode::kInvalidArgument, "prompt: the text has " + std::to_string(placeholders) + " image placeholders (" +
                                          config_.chat.image_token + ") but " + std::to_string(grids.size()) +
                                          " images were given");
  if (config_.layout == ImageLayout::kSplice) {
    std::vector<int32_t> ids;
    for (size_t i = 0; i < parts.size(); ++i) {
      std::vector<int32_t> piece = tokenizer_.encode(parts[i], add_special);
      size_t skip = 0;
      if (i > 0) {
        if (!piece.empty() && piece[0] == config_.bos_id) skip = 1;
        ids.insert(ids.end(), size_t(config_.tokens_per_tile), config_.image_token_id);
      }
      ids.insert(ids.end(), piece.begin() + long(skip), piece.end());
    }
    return ids;
  }
  std::string expanded = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) expanded += image_text(grids[i - 1][0], grids[i - 1][1]) + parts[i];
  return tokenizer_.encode(expanded, add_special);
}

}  // namespace edgevlm
