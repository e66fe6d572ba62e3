// Errors of the runtime. Everything input-driven throws edgevlm::Error with a code and a message
// naming the problem (file, key, offset, expected vs got); the C API catches it and returns the
// code, keeping the message as the last error. Nothing input-driven may abort.
#pragma once

#include <stdexcept>
#include <string>

namespace edgevlm {

enum class ErrorCode : int {
  kOk = 0,
  kInvalidArgument = 1,  // a bad parameter or input (wrong image size, empty prompt, ...)
  kIo = 2,               // a file that is missing or cannot be read
  kCorruptFile = 3,      // a file whose content is malformed (truncated safetensors, bad JSON, bad offsets)
  kUnsupported = 4,      // a model family, dtype or scheme this runtime does not know
  kContextOverflow = 5,  // the prompt or generation would run past the KV cache
  kCancelled = 6,        // the caller asked to stop
  kInternal = 7,         // a bug: an invariant broke
};

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

[[noreturn]] inline void fail(ErrorCode code, const std::string& message) { throw Error(code, message); }

}  // namespace edgevlm
