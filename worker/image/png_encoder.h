#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace ditserve::worker::image {

// Encodes 8-bit RGB pixels (row-major, width·height·3 bytes) as a PNG with
// libpng. Deterministic: the same pixels give the same bytes.
// INVALID_ARGUMENT for empty or oversized images.
absl::StatusOr<std::string> EncodePng(const uint8_t* rgb, int width, int height);

// Writes `bytes` to `path` (created or truncated).
absl::Status WriteFile(const std::string& path, const std::string& bytes);

}  // namespace ditserve::worker::image
