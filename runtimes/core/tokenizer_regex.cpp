// Regex engine for tokenizer.json patterns (see tokenizer_regex.h).
#include "core/tokenizer_regex.h"

#include "core/error.h"

namespace edgevlm::tok {

struct Regex::Program {};

Regex::Regex(const std::string& pattern) {
  fail(ErrorCode::kUnsupported, "tokenizer.json: regex pattern \"" + pattern + "\" is not supported");
}
Regex::~Regex() = default;
Regex::Regex(Regex&&) noexcept = default;

void Regex::find_all(std::string_view, std::vector<std::pair<std::size_t, std::size_t>>&) const {}

}  // namespace edgevlm::tok
