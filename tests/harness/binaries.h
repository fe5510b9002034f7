#pragma once

#include <string>

namespace ditserve::testing {

// The directory of the project's executables: $DITSERVE_BIN_DIR (CTest sets
// it), else ../bin next to the running test (build/tests -> build/bin).
std::string BinDir();

}  // namespace ditserve::testing
