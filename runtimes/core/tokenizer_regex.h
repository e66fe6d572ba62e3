// A small backtracking regular-expression engine for the regex patterns of tokenizer.json
// (Split pre-tokenizer, Replace normalizer/decoder), matching Oniguruma's leftmost-first
// semantics on UTF-8 text. Internal to the tokenizer.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace edgevlm::tok {

class Regex {
 public:
  /// Compiles `pattern`; Error(kUnsupported) naming the construct it does not implement.
  explicit Regex(const std::string& pattern);
  ~Regex();
  Regex(Regex&&) noexcept;
  /// Appends the non-overlapping, non-empty matches [begin, end) of the pattern in `s`.
  void find_all(std::string_view s, std::vector<std::pair<std::size_t, std::size_t>>& out) const;

 private:
  struct Program;
  std::unique_ptr<Program> prog_;
};

}  // namespace edgevlm::tok
