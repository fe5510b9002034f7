#pragma once

// Encodes one RGB image in a request's output format. Thread-safe.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "ditserve/v1/generation.pb.h"

namespace ditserve::server {

// `rgb`: height·width·3 bytes, row-major. PNG ignores `quality` and uses
// zlib's `png_level` (0–9); JPEG uses `quality` (1–100); WebP is lossy at
// 1–99 and lossless at 100.
absl::StatusOr<std::string> EncodeImage(const std::string& rgb, int width, int height,
                                        v1::ImageFormat format, int quality, int png_level = 6);

}  // namespace ditserve::server
