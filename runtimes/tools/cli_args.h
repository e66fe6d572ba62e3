// Small command-line parsing shared by edgevlm-run and edgevlm-bench: --name value pairs and
// flags, with errors that name the option. Not a general library.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "api/session.h"
#include "core/error.h"

namespace edgevlm::cli {

struct Args {
  std::vector<std::string> positional;
  std::multimap<std::string, std::string> options;  // "--image" may repeat
  std::vector<std::string> flags;

  bool flag(const std::string& name) const {
    for (const auto& f : flags)
      if (f == name) return true;
    return false;
  }
  std::string get(const std::string& name, const std::string& fallback = "") const {
    auto it = options.find(name);
    return it == options.end() ? fallback : it->second;
  }
  std::vector<std::string> all(const std::string& name) const {
    std::vector<std::string> out;
    for (auto [a, b] = options.equal_range(name); a != b; ++a) out.push_back(a->second);
    return out;
  }
  long integer(const std::string& name, long fallback) const {
    const std::string v = get(name);
    if (v.empty()) return fallback;
    char* end = nullptr;
    long x = std::strtol(v.c_str(), &end, 10);
    if (!end || *end) throw std::invalid_argument(name + ": expected an integer, got '" + v + "'");
    return x;
  }
  double real(const std::string& name, double fallback) const {
    const std::string v = get(name);
    if (v.empty()) return fallback;
    char* end = nullptr;
    double x = std::strtod(v.c_str(), &end);
    if (!end || *end) throw std::invalid_argument(name + ": expected a number, got '" + v + "'");
    return x;
  }
};

/// `valued` lists the options that take a value; anything else starting with "--" is a flag.
inline Args parse(int argc, char** argv, const std::vector<std::string>& valued, const std::vector<std::string>& flags) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    if (s.rfind("--", 0) != 0) {
      a.positional.push_back(s);
      continue;
    }
    bool known_value = false, known_flag = false;
    for (const auto& v : valued) known_value |= v == s;
    for (const auto& f : flags) known_flag |= f == s;
    if (known_value) {
      if (i + 1 >= argc) throw std::invalid_argument(s + " needs a value");
      a.options.emplace(s, argv[++i]);
    } else if (known_flag) {
      a.flags.push_back(s);
    } else {
      throw std::invalid_argument("unknown option " + s);
    }
  }
  return a;
}

inline std::vector<long> int_list(const std::string& text, const std::string& name) {
  std::vector<long> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string part = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    char* end = nullptr;
    long x = std::strtol(part.c_str(), &end, 10);
    if (part.empty() || !end || *end || x <= 0) throw std::invalid_argument(name + ": expected positive integers, got '" + text + "'");
    out.push_back(x);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

/// The model options every tool takes: --threads, --chunk, --kernels, --no-verify.
inline ModelOptions model_options(const Args& args) {
  ModelOptions mo;
  mo.threads = int(args.integer("--threads", 0));
  mo.chunk_size = int(args.integer("--chunk", 0));
  mo.kernels = args.get("--kernels");
  mo.verify_files = !args.flag("--no-verify");
  return mo;
}

/// Runs a tool's body: bad input prints one line "NAME: error: ..." (plus the usage for bad
/// arguments) on stderr and exits with 2; nothing input-driven escapes as a crash.
template <class F>
int guarded_main(const char* name, const char* usage, F&& body) {
  try {
    return body();
  } catch (const edgevlm::Error& e) {
    std::fprintf(stderr, "%s: error: %s\n", name, e.what());
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "%s: error: %s\n%s", name, e.what(), usage);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: internal error: %s\n", name, e.what());
  }
  return 2;
}

}  // namespace edgevlm::cli
