#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace ditserve::util {

// The whole file as bytes; NOT_FOUND naming the path if it cannot be read.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace ditserve::util
