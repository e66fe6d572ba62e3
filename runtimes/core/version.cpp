// The runtime's version string, also reported in the stats JSON.
#include "core/version.h"

namespace edgevlm {

const char* version() { return "0.1.0"; }

}  // namespace edgevlm
