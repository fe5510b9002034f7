#include "server/image_encoding.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include "tests/server/image_decode.h"

namespace ditserve::server {
namespace {

// A smooth gradient (lossy codecs reproduce it closely).
std::string Gradient(int w, int h) {
  std::string rgb(static_cast<size_t>(w) * h * 3, '\0');
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      char* p = &rgb[(static_cast<size_t>(y) * w + x) * 3];
      p[0] = static_cast<char>(x * 255 / (w - 1));
      p[1] = static_cast<char>(y * 255 / (h - 1));
      p[2] = static_cast<char>(128);
    }
  }
  return rgb;
}

double MeanAbsError(const std::string& a, const std::vector<uint8_t>& b) {
  double sum = 0;
  for (size_t i = 0; i < b.size(); ++i) sum += std::abs(static_cast<uint8_t>(a[i]) - b[i]);
  return sum / static_cast<double>(b.size());
}

TEST(ImageEncoding, PngAndLosslessWebpRoundTripExactly) {
  const std::string rgb = Gradient(48, 32);
  auto png = EncodeImage(rgb, 48, 32, v1::IMAGE_FORMAT_PNG, 90);
  ASSERT_TRUE(png.ok()) << png.status();
  auto decoded = testing::DecodePng(*png);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->width, 48);
  EXPECT_EQ(decoded->height, 32);
  EXPECT_EQ(std::string(decoded->rgb.begin(), decoded->rgb.end()), rgb);

  auto webp = EncodeImage(rgb, 48, 32, v1::IMAGE_FORMAT_WEBP, 100);
  ASSERT_TRUE(webp.ok()) << webp.status();
  auto w = testing::DecodeWebp(*webp);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(std::string(w->rgb.begin(), w->rgb.end()), rgb);
}

TEST(ImageEncoding, LossyFormatsDecodeCloseAndQualityMatters) {
  const std::string rgb = Gradient(64, 64);
  for (v1::ImageFormat f : {v1::IMAGE_FORMAT_JPEG, v1::IMAGE_FORMAT_WEBP}) {
    auto high = EncodeImage(rgb, 64, 64, f, 95);
    auto low = EncodeImage(rgb, 64, 64, f, 5);
    ASSERT_TRUE(high.ok() && low.ok());
    EXPECT_LT(low->size(), high->size()) << f;
    auto d = f == v1::IMAGE_FORMAT_JPEG ? testing::DecodeJpeg(*high) : testing::DecodeWebp(*high);
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(d->width, 64);
    EXPECT_LT(MeanAbsError(rgb, d->rgb), 4.0) << f;
  }
}

TEST(ImageEncoding, WrongPixelCountIsAnError) {
  EXPECT_FALSE(EncodeImage(std::string(10, 'x'), 4, 4, v1::IMAGE_FORMAT_PNG, 90).ok());
  EXPECT_FALSE(EncodeImage(Gradient(4, 4), 4, 4, v1::IMAGE_FORMAT_JPEG, 0).ok());
}

}  // namespace
}  // namespace ditserve::server
