#pragma once

// Test helpers: decode PNG, JPEG and WebP bytes to 8-bit RGB with libpng,
// libjpeg and libwebp (independent of the encoders under test).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ditserve::testing {

struct DecodedImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;  // height·width·3
};

absl::StatusOr<DecodedImage> DecodePng(const std::string& bytes);
absl::StatusOr<DecodedImage> DecodeJpeg(const std::string& bytes);
absl::StatusOr<DecodedImage> DecodeWebp(const std::string& bytes);

}  // namespace ditserve::testing
