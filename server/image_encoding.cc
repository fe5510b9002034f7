#include "server/image_encoding.h"

#include "absl/strings/str_cat.h"
#include "core/image/jpeg_encoder.h"
#include "core/image/png_encoder.h"
#include "core/image/webp_encoder.h"

namespace ditserve::server {

absl::StatusOr<std::string> EncodeImage(const std::string& rgb, int width, int height,
                                        v1::ImageFormat format, int quality, int png_level) {
  if (width < 1 || height < 1 || rgb.size() != static_cast<size_t>(width) * height * 3) {
    return absl::InternalError(absl::StrCat("the gang returned ", rgb.size(), " bytes for a ",
                                            width, "x", height, " RGB image"));
  }
  const auto* pixels = reinterpret_cast<const uint8_t*>(rgb.data());
  switch (format) {
    case v1::IMAGE_FORMAT_JPEG: return core::image::EncodeJpeg(pixels, width, height, quality);
    case v1::IMAGE_FORMAT_WEBP: return core::image::EncodeWebp(pixels, width, height, quality);
    default: return core::image::EncodePng(pixels, width, height, png_level);
  }
}

}  // namespace ditserve::server
