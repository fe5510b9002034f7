#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace ditserve::core::image {

// Encodes 8-bit RGB pixels (row-major, width·height·3 bytes) as a baseline
// JPEG with libjpeg at `quality` (1–100), 4:2:0 chroma subsampling.
// Deterministic. Thread-safe (no shared state). INVALID_ARGUMENT for an
// empty or oversized image or a quality out of range.
absl::StatusOr<std::string> EncodeJpeg(const uint8_t* rgb, int width, int height, int quality);

}  // namespace ditserve::core::image
