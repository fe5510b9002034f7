#include "tests/harness/generation_outputs.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <png.h>

#include <cstdio>

#include "absl/strings/str_format.h"
#include "worker/weights/safetensors.h"

namespace ditserve::testing {

RgbImage ReadPng(const std::string& path) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  RgbImage out;
  if (!png_image_begin_read_from_file(&image, path.c_str())) return out;
  image.format = PNG_FORMAT_RGB;
  out.rgb.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, out.rgb.data(), 0, nullptr)) return RgbImage{};
  out.width = static_cast<int>(image.width);
  out.height = static_cast<int>(image.height);
  return out;
}

at::Tensor ReadLatents(const std::string& path) {
  auto ckpt = worker::weights::SafetensorsCheckpoint::Open(path);
  EXPECT_TRUE(ckpt.ok()) << ckpt.status();
  if (!ckpt.ok()) return at::Tensor();
  auto t = ckpt->Get("latents");
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? t->clone() : at::Tensor();
}

Comparison CompareRuns(const std::string& dir, const std::string& reference_dir, int index) {
  const std::string stem = absl::StrFormat("/image-%03d", index);
  Comparison c;
  const at::Tensor a = ReadLatents(dir + stem + ".latents.safetensors");
  const at::Tensor b = ReadLatents(reference_dir + stem + ".latents.safetensors");
  EXPECT_TRUE(a.defined() && b.defined() && a.sizes() == b.sizes()) << dir << stem;
  if (a.defined() && b.defined() && a.sizes() == b.sizes()) c.latent_max_abs = (a - b).abs().max().item<double>();
  const RgbImage x = ReadPng(dir + stem + ".png"), y = ReadPng(reference_dir + stem + ".png");
  EXPECT_FALSE(x.rgb.empty()) << dir << stem;
  EXPECT_EQ(x.rgb.size(), y.rgb.size()) << dir << stem;
  if (x.rgb.empty() || x.rgb.size() != y.rgb.size()) return c;
  double se = 0;
  for (size_t i = 0; i < x.rgb.size(); ++i) {
    const int d = std::abs(static_cast<int>(x.rgb[i]) - static_cast<int>(y.rgb[i]));
    c.differing_values += d != 0;
    c.max_value_diff = std::max(c.max_value_diff, d);
    se += static_cast<double>(d) * d;
  }
  const double mse = se / static_cast<double>(x.rgb.size());
  c.psnr = mse == 0 ? INFINITY : 10 * std::log10(255.0 * 255.0 / mse);
  return c;
}

double MaxAbsLatent(const std::string& dir, int index) {
  const at::Tensor a = ReadLatents(dir + absl::StrFormat("/image-%03d", index) + ".latents.safetensors");
  return a.defined() ? a.abs().max().item<double>() : 0.0;
}

void ExpectSerialResult(const std::string& name, const std::string& dir, const std::string& serial_dir, int images,
                        double latent_scale) {
  for (int i = 0; i < images; ++i) {
    const Comparison cmp = CompareRuns(dir, serial_dir, i);
    std::printf("%-14s image %d: latents max-abs %.3g, %d uint8 values differ (max %d)\n", name.c_str(), i,
                cmp.latent_max_abs, cmp.differing_values, cmp.max_value_diff);
    EXPECT_LT(cmp.latent_max_abs, 1e-4 * latent_scale) << name << " image " << i;
    EXPECT_LE(cmp.max_value_diff, 1) << name << " image " << i;
    EXPECT_LE(cmp.differing_values, 25) << name << " image " << i;
  }
}

}  // namespace ditserve::testing
