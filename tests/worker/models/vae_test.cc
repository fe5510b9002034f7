#include "worker/models/vae/autoencoder_kl.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "tests/harness/reference.h"

namespace ditserve::worker::vae {
namespace {

using testing::ReadTextFile;

void CompareWithDiffusers(const std::string& variant) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/vae_ref_", getpid(), "_", variant);
  std::filesystem::create_directories(dir);
  const absl::Status ref = testing::RunPythonReference(testing::DirectoryOf(__FILE__) + "/vae_reference.py",
                                                       dir + " " + variant, dir + "/reference.log");
  ASSERT_TRUE(ref.ok()) << ref;
  auto config = ParseVaeConfig(ReadTextFile(dir + "/vae/config.json"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->scale_factor(), 4);
  EXPECT_EQ(config->use_post_quant_conv, variant == "post_quant");
  auto decoder = VaeDecoder::Create(*config, at::kFloat);
  ASSERT_TRUE(decoder.ok());
  auto ckpt = weights::SafetensorsCheckpoint::Open(dir + "/vae");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  ASSERT_TRUE((*decoder)->Load(*ckpt).ok()) << (*decoder)->Load(*ckpt);
  auto io = weights::SafetensorsCheckpoint::Open(dir + "/io.safetensors");
  auto image = (*decoder)->Decode(*io->Get("latents"));
  ASSERT_TRUE(image.ok()) << image.status();
  const at::Tensor want = *io->Get("expected");
  ASSERT_EQ(image->sizes(), want.sizes());
  const double err = (*image - want).abs().max().item<double>();
  std::printf("%s: max-abs error %.3g (image max %.3g)\n", variant.c_str(), err, want.abs().max().item<double>());
  EXPECT_LT(err, 1e-4);
  std::filesystem::remove_all(dir);
}

TEST(VaeDecoder, MatchesDiffusers) { CompareWithDiffusers("no_post_quant"); }
TEST(VaeDecoder, MatchesDiffusersWithPostQuantConv) { CompareWithDiffusers("post_quant"); }

TEST(VaeDecoder, ToUint8RgbRoundsAsDiffusers) {
  const at::Tensor x = at::tensor({-1.f, -0.5f, 0.f, 1.f, 2.f, 0.99f}).view({1, 1, 2, 3}).repeat({1, 3, 1, 1});
  const at::Tensor u = ToUint8Rgb(x);
  ASSERT_EQ(u.sizes(), (std::vector<int64_t>{1, 2, 3, 3}));
  // (x/2+0.5)·255 rounded: 0, 63.75→64, 127.5→128 (round half to even), 255, clamp 255, 253.725→254.
  const std::vector<int> want = {0, 64, 128, 255, 255, 254};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(u[0][i / 3][i % 3][0].item<int>(), want[i]) << i;
}

TEST(VaeDecoder, ConfigErrors) {
  EXPECT_EQ(ParseVaeConfig(R"({"block_out_channels": [8, 12], "norm_num_groups": 8})").status().message(),
            "vae config: block_out_channels 12 does not divide by norm_num_groups 8");
  EXPECT_EQ(ParseVaeConfig(R"({"act_fn": "relu"})").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ditserve::worker::vae
