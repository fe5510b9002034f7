#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace ditserve::core::image {

// Encodes 8-bit RGB pixels (row-major, width·height·3 bytes) as WebP with
// libwebp: lossy at `quality` (1–99), lossless when `quality` is 100.
// Thread-safe. INVALID_ARGUMENT for an empty or oversized image (WebP's
// limit is 16383 per side) or a quality out of range.
absl::StatusOr<std::string> EncodeWebp(const uint8_t* rgb, int width, int height, int quality);

}  // namespace ditserve::core::image
