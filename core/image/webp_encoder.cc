#include "core/image/webp_encoder.h"

#include <webp/encode.h>

#include "absl/strings/str_cat.h"

namespace ditserve::core::image {

absl::StatusOr<std::string> EncodeWebp(const uint8_t* rgb, int width, int height, int quality) {
  if (rgb == nullptr || width < 1 || height < 1 || width > WEBP_MAX_DIMENSION ||
      height > WEBP_MAX_DIMENSION) {
    return absl::InvalidArgumentError(absl::StrCat("webp: bad image size ", width, "x", height));
  }
  if (quality < 1 || quality > 100) {
    return absl::InvalidArgumentError(absl::StrCat("webp: quality must be in [1, 100], got ", quality));
  }
  uint8_t* buffer = nullptr;
  const size_t size =
      quality == 100 ? WebPEncodeLosslessRGB(rgb, width, height, width * 3, &buffer)
                     : WebPEncodeRGB(rgb, width, height, width * 3, static_cast<float>(quality), &buffer);
  if (size == 0 || buffer == nullptr) {
    WebPFree(buffer);
    return absl::InternalError(absl::StrCat("webp: encoding a ", width, "x", height, " image failed"));
  }
  std::string out(reinterpret_cast<const char*>(buffer), size);
  WebPFree(buffer);
  return out;
}

}  // namespace ditserve::core::image
