#include "core/image/png_encoder.h"

#include <png.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace ditserve::core::image {
namespace {

void Append(png_structp png, png_bytep data, png_size_t length) {
  auto* out = static_cast<std::string*>(png_get_io_ptr(png));
  out->append(reinterpret_cast<const char*>(data), length);
}
void Flush(png_structp) {}

}  // namespace

absl::StatusOr<std::string> EncodePng(const uint8_t* rgb, int width, int height,
                                      int compression_level) {
  if (rgb == nullptr || width < 1 || height < 1 || width > 65535 || height > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("png: bad image size ", width, "x", height));
  }
  if (compression_level < 0 || compression_level > 9) {
    return absl::InvalidArgumentError(
        absl::StrCat("png: compression level must be in [0, 9], got ", compression_level));
  }
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  if (png == nullptr) return absl::ResourceExhaustedError("png: cannot create the writer");
  png_infop info = png_create_info_struct(png);
  std::string out;
  std::vector<png_bytep> rows(static_cast<size_t>(height));
  if (info == nullptr || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return absl::InternalError("png: encoding failed");
  }
  png_set_write_fn(png, &out, Append, Flush);
  png_set_compression_level(png, compression_level);
  if (compression_level <= 3) png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_SUB);
  png_set_IHDR(png, info, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), 8, PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  for (int y = 0; y < height; ++y) rows[y] = const_cast<png_bytep>(rgb + static_cast<size_t>(y) * width * 3);
  png_set_rows(png, info, rows.data());
  png_write_png(png, info, PNG_TRANSFORM_IDENTITY, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

absl::Status WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) return absl::InternalError(absl::StrCat("writing ", path, " failed"));
  return absl::OkStatus();
}

}  // namespace ditserve::core::image
