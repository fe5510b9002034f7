#include "tests/server/image_decode.h"

#include <csetjmp>
#include <cstdio>

#include <jpeglib.h>
#include <png.h>
#include <webp/decode.h>

#include "absl/strings/str_cat.h"

namespace ditserve::testing {

absl::StatusOr<DecodedImage> DecodePng(const std::string& bytes) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size())) {
    return absl::InvalidArgumentError(absl::StrCat("png: ", image.message));
  }
  image.format = PNG_FORMAT_RGB;
  DecodedImage out;
  out.width = static_cast<int>(image.width);
  out.height = static_cast<int>(image.height);
  out.rgb.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, out.rgb.data(), 0, nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat("png: ", image.message));
  }
  return out;
}

namespace {
struct JpegError {
  jpeg_error_mgr base;
  std::jmp_buf jump;
};
void OnJpegError(j_common_ptr cinfo) { std::longjmp(reinterpret_cast<JpegError*>(cinfo->err)->jump, 1); }
}  // namespace

absl::StatusOr<DecodedImage> DecodeJpeg(const std::string& bytes) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.base);
  err.base.error_exit = OnJpegError;
  DecodedImage out;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return absl::InvalidArgumentError("jpeg: not a decodable JPEG");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  jpeg_read_header(&cinfo, TRUE);
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  out.width = static_cast<int>(cinfo.output_width);
  out.height = static_cast<int>(cinfo.output_height);
  out.rgb.resize(static_cast<size_t>(out.width) * out.height * 3);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out.rgb.data() + static_cast<size_t>(cinfo.output_scanline) * out.width * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return out;
}

absl::StatusOr<DecodedImage> DecodeWebp(const std::string& bytes) {
  int width = 0, height = 0;
  uint8_t* pixels = WebPDecodeRGB(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                                  &width, &height);
  if (pixels == nullptr) return absl::InvalidArgumentError("webp: not a decodable WebP");
  DecodedImage out;
  out.width = width;
  out.height = height;
  out.rgb.assign(pixels, pixels + static_cast<size_t>(width) * height * 3);
  WebPFree(pixels);
  return out;
}

}  // namespace ditserve::testing
