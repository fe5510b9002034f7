#pragma once

#include <string>

namespace ditserve::util {

// The directory of the running executable (from /proc/self/exe), so that a
// binary can find its siblings (ditserve-worker next to ditserve-run and
// ditserve-server); "." if it cannot be read.
std::string ExecutableDirectory();

}  // namespace ditserve::util
