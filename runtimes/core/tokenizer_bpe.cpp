// The BPE model of tokenizer.json: initial symbols per character (with byte fallback or unk),
// then the lowest-ranked adjacent pair is merged until no pair has a merge (see tokenizer_pipeline.h).
#include <cstdio>
#include <queue>

#include "core/error.h"
#include "core/tokenizer_pipeline.h"
#include "core/unicode.h"

namespace edgevlm::tok {

BpeModel::BpeModel(const json& j) {
  const std::string where = "model";
  if (!j.is_object()) corrupt(where, "expected an object");
  const std::string type = get_or<std::string>(j, "type", "BPE", where);
  if (type != "BPE") fail(ErrorCode::kUnsupported, "tokenizer.json: model type \"" + type + "\" is not supported (only BPE)");
  if (get_or<double>(j, "dropout", 0.0, where) > 0.0)
    fail(ErrorCode::kUnsupported, "tokenizer.json: BPE dropout is not supported (encoding would be random)");
  byte_fallback_ = get_or<bool>(j, "byte_fallback", false, where);
  fuse_unk_ = get_or<bool>(j, "fuse_unk", false, where);
  ignore_merges_ = get_or<bool>(j, "ignore_merges", false, where);
  prefix_ = get_or<std::string>(j, "continuing_subword_prefix", "", where);
  suffix_ = get_or<std::string>(j, "end_of_word_suffix", "", where);

  const json& vocab = get_field<json>(j, "vocab", where);
  if (!vocab.is_object()) corrupt(where, "\"vocab\" must be an object");
  int64_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) corrupt(where, "vocab id of \"" + it.key() + "\" is not an integer");
    const int64_t id = it.value().get<int64_t>();
    if (id < 0 || id >= (int64_t(1) << 31) - 1) corrupt(where, "vocab id " + std::to_string(id) + " out of range");
    vocab_.emplace(it.key(), int32_t(id));
    max_id = std::max(max_id, id);
  }
  id_to_token_.assign(std::size_t(max_id + 1), std::string());
  for (const auto& [tok, id] : vocab_) id_to_token_[std::size_t(id)] = tok;

  const std::string unk = get_or<std::string>(j, "unk_token", "", where);
  if (!unk.empty() || (j.contains("unk_token") && j["unk_token"].is_string())) {
    has_unk_ = true;
    auto it = vocab_.find(unk);
    unk_id_ = it == vocab_.end() ? -1 : it->second;  // HF fails only when an unknown character needs it
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = vocab_.find(name);
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }

  const json& merges = get_field<json>(j, "merges", where);
  if (!merges.is_array()) corrupt(where, "\"merges\" must be an array");
  int32_t rank = 0;
  for (const json& m : merges) {
    std::string a, b;
    if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const std::size_t sp = s.find(' ');
      if (sp == std::string::npos) corrupt(where, "merge \"" + s + "\" is not two tokens");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else {
      corrupt(where, "merge " + std::to_string(rank) + " must be [left, right] or \"left right\"");
    }
    auto ia = vocab_.find(a), ib = vocab_.find(b);
    if (ia == vocab_.end() || ib == vocab_.end())
      corrupt(where, "merge " + std::to_string(rank) + " (\"" + a + "\", \"" + b + "\") uses a token not in the vocab");
    std::string merged = a + (!prefix_.empty() && b.compare(0, prefix_.size(), prefix_) == 0 ? b.substr(prefix_.size()) : b);
    auto im = vocab_.find(merged);
    if (im == vocab_.end()) corrupt(where, "merge result \"" + merged + "\" is not in the vocab");
    merges_.emplace(key(ia->second, ib->second), Merge{rank, im->second});
    ++rank;
  }
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    auto it = vocab_.find(std::string(word));
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  struct Symbol {
    int32_t id;
    int32_t prev, next;  // indices in `syms`, -1 at the ends
    bool alive;
  };
  std::vector<Symbol> syms;
  syms.reserve(word.size());
  auto add = [&](int32_t id) {
    const int32_t i = int32_t(syms.size());
    syms.push_back({id, i - 1, -1, true});
    if (i > 0) syms[std::size_t(i) - 1].next = i;
  };
  bool pending_unk = false;
  std::string s;
  for (std::size_t p = 0; p < word.size();) {
    const std::size_t n = unicode::sequence_length(static_cast<unsigned char>(word[p]));
    s.assign(word.substr(p, n));
    if (p > 0 && !prefix_.empty()) s.insert(0, prefix_);
    if (p + n >= word.size() && !suffix_.empty()) s += suffix_;
    p += n;
    auto it = vocab_.find(s);
    if (it != vocab_.end()) {
      if (pending_unk) add(unk_id_);
      pending_unk = false;
      add(it->second);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char b : s) all = all && byte_ids_[b] >= 0;
      if (all) {
        for (unsigned char b : s) add(byte_ids_[b]);
        continue;
      }
    }
    if (has_unk_) {
      if (unk_id_ < 0) fail(ErrorCode::kCorruptFile, "tokenizer.json: model.unk_token is not in the vocab");
      if (pending_unk && !fuse_unk_) add(unk_id_);
      pending_unk = true;
    }
  }
  if (pending_unk) add(unk_id_);

  struct Cand {
    int32_t rank, pos, new_id;
    bool operator<(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand> queue;
  auto push_pair = [&](int32_t left) {
    const int32_t right = syms[std::size_t(left)].next;
    if (right < 0) return;
    auto it = merges_.find(key(syms[std::size_t(left)].id, syms[std::size_t(right)].id));
    if (it != merges_.end()) queue.push({it->second.rank, left, it->second.new_id});
  };
  for (int32_t i = 0; i + 1 < int32_t(syms.size()); ++i) push_pair(i);
  while (!queue.empty()) {
    const Cand c = queue.top();
    queue.pop();
    Symbol& left = syms[std::size_t(c.pos)];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = syms[std::size_t(left.next)];
    auto it = merges_.find(key(left.id, right.id));
    if (it == merges_.end() || it->second.new_id != c.new_id) continue;
    left.id = c.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) syms[std::size_t(right.next)].prev = c.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(c.pos);
  }
  for (const Symbol& sym : syms)
    if (sym.alive) out.push_back(sym.id);
}

}  // namespace edgevlm::tok
