#pragma once

namespace edgevlm {

// The runtime's version ("MAJOR.MINOR.PATCH"), the same as the Python package's.
const char* version();

}  // namespace edgevlm
