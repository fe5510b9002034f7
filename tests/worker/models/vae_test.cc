#include "worker/models/vae/autoencoder_kl.h"

#include <ATen/CPUGeneratorImpl.h>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "tests/harness/reference.h"
#include "worker/models/vae/tiled_decode.h"
#include "worker/models/vae/vae_encoder.h"

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
  EXPECT_EQ(config->use_quant_conv, variant == "post_quant");
  EXPECT_EQ(config->mid_block_add_attention, variant != "no_attention");
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
  auto forward = (*decoder)->Forward(*io->Get("latents"));  // the training path
  ASSERT_TRUE(forward.ok()) << forward.status();
  EXPECT_LT((*forward - want).abs().max().item<double>(), 1e-4);

  // Tiled as diffusers' enable_tiling, at two tile sizes; with tiles larger
  // than the latents it is the whole decode.
  const at::Tensor tiled_z = *io->Get("tiled_latents");
  for (int tile : {16, 32}) {
    auto tiles = MakeTileGeometry(*config, tile);
    ASSERT_TRUE(tiles.ok()) << tiles.status();
    ASSERT_TRUE(NeedsTiling(*tiles, 11, 9));
    int64_t peak = 0;
    auto tiled = DecodeTiled(**decoder, tiled_z, *tiles, &peak);
    ASSERT_TRUE(tiled.ok()) << tiled.status();
    const at::Tensor want_tiled = *io->Get(absl::StrCat("expected_tiled_", tile));
    ASSERT_EQ(tiled->sizes(), want_tiled.sizes());
    const double tiled_err = (*tiled - want_tiled).abs().max().item<double>();
    std::printf("%s: tiles of %d px: max-abs error against diffusers' tiled decode %.3g\n", variant.c_str(), tile,
                tiled_err);
    EXPECT_LT(tiled_err, 1e-4) << tile;
    // The tiles do change the image (else this would not test tiling).
    EXPECT_GT((*tiled - *io->Get("expected_untiled")).abs().max().item<double>(), 1e-2) << tile;
    const int64_t t = tile / 4;
    EXPECT_EQ(peak, std::max<int64_t>(3 * 44 * 36 * 4, DecodeActivationBytes(*config, {1, t, t, t}, 4, 2)));
  }
  auto big_tiles = MakeTileGeometry(*config, 64);
  ASSERT_TRUE(big_tiles.ok());
  EXPECT_FALSE(NeedsTiling(*big_tiles, 11, 9));
  auto untiled = DecodeTiled(**decoder, tiled_z, *big_tiles);
  ASSERT_TRUE(untiled.ok());
  EXPECT_LT((*untiled - *io->Get("expected_untiled")).abs().max().item<double>(), 1e-4);

  // The whole decode is one band holding every row: its measured peak is
  // the closed form's.
  int64_t whole_peak = 0;
  ASSERT_TRUE((*decoder)->Decode(*io->Get("latents"), &whole_peak).ok());
  EXPECT_EQ(whole_peak, DecodeActivationBytes(*config, {2, 6, 6, 5}, 4, 2));

  // The encoder: the mean and log-variance of diffusers' latent_dist.
  auto encoder = VaeEncoder::Create(*config, at::kFloat);
  ASSERT_TRUE(encoder.ok()) << encoder.status();
  ASSERT_TRUE((*encoder)->Load(*ckpt).ok()) << (*encoder)->Load(*ckpt);
  auto dist = (*encoder)->Encode(*io->Get("rgb"));
  ASSERT_TRUE(dist.ok()) << dist.status();
  const at::Tensor want_mean = *io->Get("expected_mean"), want_logvar = *io->Get("expected_logvar");
  ASSERT_EQ(dist->mean.sizes(), want_mean.sizes());
  const double mean_err = (dist->mean - want_mean).abs().max().item<double>();
  const double logvar_err = (dist->logvar - want_logvar).abs().max().item<double>();
  std::printf("%s encoder: max-abs error mean %.3g, logvar %.3g (mean max %.3g)\n", variant.c_str(), mean_err,
              logvar_err, want_mean.abs().max().item<double>());
  EXPECT_LT(mean_err, 1e-4);
  EXPECT_LT(logvar_err, 1e-4);

  // Training: the gradients of the same loss equal diffusers' autograd's.
  dist = (*encoder)->Encode(*io->Get("rgb"));
  ASSERT_TRUE(dist.ok());
  auto rec = (*decoder)->Forward(dist->mean);
  ASSERT_TRUE(rec.ok());
  const at::Tensor loss = (*rec - *io->Get("rgb")).pow(2).mean() + 0.1 * dist->Kl().mean();
  EXPECT_NEAR(loss.item<double>(), io->Get("loss")->item<double>(), 1e-5);
  loss.backward();
  auto params = (*encoder)->NamedParameters();
  for (auto& p : (*decoder)->NamedParameters()) params.push_back(p);
  double worst = 0;
  std::string worst_name;
  for (auto& [name, p] : params) {
    auto want = io->Get("grad." + name);
    ASSERT_TRUE(want.ok()) << name;
    ASSERT_TRUE(p.grad().defined()) << name;
    const double scale = want->abs().max().item<double>() + 1e-4;  // some are 0 in theory (key biases)
    const double rel = (p.grad() - *want).abs().max().item<double>() / scale;
    if (rel > worst) worst = rel, worst_name = name;
  }
  std::printf("%s gradients: worst relative error %.3g (%s) over %zu parameters\n", variant.c_str(), worst,
              worst_name.c_str(), params.size());
  EXPECT_LT(worst, 1e-3) << worst_name;
  std::filesystem::remove_all(dir);
}

TEST(VaeDecoder, MatchesDiffusers) { CompareWithDiffusers("no_post_quant"); }
TEST(VaeDecoder, MatchesDiffusersWithPostQuantConv) { CompareWithDiffusers("post_quant"); }
TEST(VaeDecoder, MatchesDiffusersWithoutMidBlockAttention) { CompareWithDiffusers("no_attention"); }

// Training needs gradients through both halves (attention included): the
// autograd gradient of a scalar loss matches a central finite difference.
TEST(VaeEncoder, GradientsFlowThroughEncoderAndDecoder) {
  VaeConfig c;
  c.latent_channels = 2;
  c.block_out_channels = {4, 4};
  c.layers_per_block = 1;
  c.norm_num_groups = 2;
  c.use_quant_conv = true;
  c.use_post_quant_conv = false;
  // float32 (the attention kernel's widest type), so a coarse step.
  auto encoder = VaeEncoder::Create(c, at::kFloat);
  auto decoder = VaeDecoder::Create(c, at::kFloat);
  ASSERT_TRUE(encoder.ok() && decoder.ok());
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const at::Tensor image = at::rand({1, 3, 4, 6}, gen, at::TensorOptions().dtype(at::kFloat)) * 2 - 1;
  const auto loss = [&]() {
    auto d = (*encoder)->Encode(image);
    EXPECT_TRUE(d.ok());
    auto out = (*decoder)->Forward(d->mean);
    EXPECT_TRUE(out.ok());
    return (*out - image).pow(2).mean() + 0.1 * d->Kl().mean();
  };
  at::Tensor l = loss();
  l.backward();
  // Encoder weights (one before, one inside the attention) and a decoder weight.
  std::vector<std::pair<std::string, at::Tensor>> all = (*encoder)->NamedParameters();
  for (auto& p : (*decoder)->NamedParameters()) all.push_back(p);
  int checked = 0;
  for (auto& [name, p] : all) {
    if (name != "encoder.mid_block.attentions.0.to_q.weight" && name != "encoder.conv_in.weight" &&
        name != "decoder.conv_out.bias") {
      continue;
    }
    ASSERT_TRUE(p.grad().defined()) << name;
    const double analytic = p.grad().view(-1)[0].item<double>();
    const double h = 1e-2;
    at::Tensor flat = p.detach().view(-1);
    const double before = flat[0].item<double>();
    flat[0] = before + h;
    const double up = loss().item<double>();
    flat[0] = before - h;
    const double down = loss().item<double>();
    flat[0] = before;
    std::printf("%s: autograd %.6g, finite difference %.6g\n", name.c_str(), analytic, (up - down) / (2 * h));
    EXPECT_NEAR(analytic, (up - down) / (2 * h), 2e-3 + 2e-2 * std::abs(analytic)) << name;
    ++checked;
  }
  EXPECT_EQ(checked, 3);
}

// The closed form against shapes worked by hand: the decoder of
// block_out_channels {8, 16}, one resnet per level plus one (two), 4 latent
// channels, on latents 1 × 3 × 5. Its largest map is the last level's
// resnets' halo'd input, 8 (or 16 for the first resnet's input, which is the
// upsampled 16-channel map) channels × (6 + halo) rows × 10 columns.
TEST(VaeDecoder, ActivationBytesClosedForm) {
  VaeConfig c;
  c.latent_channels = 4;
  c.block_out_channels = {8, 16};
  c.layers_per_block = 1;
  c.norm_num_groups = 4;
  EXPECT_EQ(DecodeActivationBytes(c, {1, 3, 3, 5}, 4, 0), 16 * 6 * 10 * 4);
  EXPECT_EQ(DecodeActivationBytes(c, {1, 3, 3, 5}, 4, 2), 16 * 8 * 10 * 4);
  EXPECT_EQ(DecodeActivationBytes(c, {2, 3, 3, 5}, 2, 2), 2 * 16 * 8 * 10 * 2);
  // A band of one row of three: the gathered attention input (16 × 3 × 5)
  // is smaller than the band's upsampled maps (16 × (2 + 2) × 10).
  EXPECT_EQ(DecodeActivationBytes(c, {1, 1, 3, 5}, 4, 2), 16 * 4 * 10 * 4);
}

TEST(VaeDecoder, TileSizeErrors) {
  VaeConfig c;  // scale factor 8
  EXPECT_EQ(MakeTileGeometry(c, 16).status().message(),
            "--vae_tile_size must be a multiple of 32 pixels in [32, 65536] (four latent rows of this VAE), got 16");
  EXPECT_FALSE(MakeTileGeometry(c, 40).ok());
  auto t = MakeTileGeometry(c, 512);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->latent_tile, 64);
  EXPECT_EQ(t->stride, 48);
  EXPECT_EQ(t->blend, 128);
  EXPECT_EQ(t->keep, 384);
}

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
