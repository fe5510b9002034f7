#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace ditserve::core::image {

// Encodes 8-bit RGB pixels (row-major, width·height·3 bytes) as a PNG with
// libpng. Deterministic: the same pixels and level give the same bytes.
// `compression_level` is zlib's (0 stored … 9 smallest); at 3 and below the
// rows use the Sub filter only (several times faster than libpng's adaptive
// choice, a few percent larger). INVALID_ARGUMENT for empty or oversized
// images or a level out of range.
absl::StatusOr<std::string> EncodePng(const uint8_t* rgb, int width, int height,
                                      int compression_level = 6);

// Writes `bytes` to `path` (created or truncated).
absl::Status WriteFile(const std::string& path, const std::string& bytes);

}  // namespace ditserve::core::image
