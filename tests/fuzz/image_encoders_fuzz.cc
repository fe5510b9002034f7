// The PNG, JPEG and WebP encoders on arbitrary sizes and pixels: the first
// bytes give width, height (each -8 … 127) and quality (-8 … 119), the rest
// the pixels (repeated). OK with a file of the format's signature, or
// INVALID_ARGUMENT for a bad size or quality, never a crash.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/image/jpeg_encoder.h"
#include "core/image/png_encoder.h"
#include "core/image/webp_encoder.h"

namespace {

void Check(const absl::StatusOr<std::string>& file, const std::string& signature, size_t offset) {
  if (!file.ok()) {
    if (file.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return;
  }
  if (file->compare(offset, signature.size(), signature) != 0) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 5) return 0;
  const int width = ((data[0] << 8 | data[1]) % 136) - 8;
  const int height = ((data[2] << 8 | data[3]) % 136) - 8;
  const int quality = static_cast<int>(data[4] % 128) - 8;
  std::vector<uint8_t> rgb(static_cast<size_t>(std::max(width, 1)) * std::max(height, 1) * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = size > 5 ? data[5 + i % (size - 5)] : 0;
  Check(ditserve::core::image::EncodePng(rgb.data(), width, height, 1), "\x89PNG", 0);
  Check(ditserve::core::image::EncodeJpeg(rgb.data(), width, height, quality), "\xff\xd8\xff", 0);
  Check(ditserve::core::image::EncodeWebp(rgb.data(), width, height, quality), "WEBP", 8);
  return 0;
}
