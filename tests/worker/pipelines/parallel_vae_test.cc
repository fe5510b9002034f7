// The parallel VAE decode against the one-rank decode: 2, 3 and 4 ranks,
// square and non-square latents, latent heights that do not divide by the
// rank count; and the band arithmetic.

#include "worker/pipelines/parallel_vae.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/multiproc.h"
#include "tests/parallel/test_gang.h"
#include "util/status_macros.h"

namespace ditserve::worker::pipelines {
namespace {

// The same random decoder on every rank (seeded), mid-block attention on,
// two upsamplings (scale factor 4).
std::unique_ptr<vae::VaeDecoder> RandomDecoder() {
  vae::VaeConfig c;
  c.latent_channels = 4;
  c.block_out_channels = {8, 16, 16};
  c.layers_per_block = 1;
  c.norm_num_groups = 4;
  c.use_post_quant_conv = true;
  auto vae = vae::VaeDecoder::Create(c, at::kFloat);
  if (!vae.ok()) return nullptr;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  at::NoGradGuard no_grad;
  for (auto& [name, p] : (*vae)->NamedParameters()) p.copy_(at::randn(p.sizes(), gen) * 0.3);
  return *std::move(vae);
}

// args: latent rows, latent columns.
DITSERVE_SCENARIO(parallel_vae_equals_serial) {
  int64_t h = 0, w = 0;
  if (ctx.args.size() != 2 || !absl::SimpleAtoi(ctx.args[0], &h) || !absl::SimpleAtoi(ctx.args[1], &w)) {
    return absl::InvalidArgumentError("bad scenario arguments");
  }
  at::set_num_threads(1);
  parallel::ParallelConfig config;
  config.data_parallel_degree = ctx.world_size;
  auto groups = parallel::JoinTestGang(ctx, config, {});
  if (!groups.ok()) return groups.status();
  auto vae = RandomDecoder();
  if (vae == nullptr) return absl::InternalError("cannot build the decoder");
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const at::Tensor z = at::randn({2, 4, h, w}, gen);
  at::NoGradGuard no_grad;
  auto whole = vae->Decode(z);
  if (!whole.ok()) return whole.status();
  CommStats stats;
  int64_t peak = 0;
  auto parallel = DecodeInBands(*vae, z, (*groups)->group(parallel::Dim::kWorld), &stats, &peak);
  if (!parallel.ok()) return parallel.status();
  DITSERVE_RETURN_IF_ERROR(parallel::Check(parallel->sizes() == whole->sizes(), "the image's shape"));
  const double diff = (*parallel - *whole).abs().max().item<double>();
  DITSERVE_RETURN_IF_ERROR(parallel::Check(diff <= 1e-4, absl::StrCat("max |parallel - serial| = ", diff)));
  // The 8-bit images: equal but where a value within float rounding of a
  // .5 boundary rounds the other way (LibTorch's CPU GEMMs round
  // differently for other shapes and alignments): at most one level, on at
  // most 0.05 % of the values.
  const at::Tensor levels =
      (vae::ToUint8Rgb(*parallel).to(at::kInt) - vae::ToUint8Rgb(*whole).to(at::kInt)).abs();
  const int64_t differing = levels.ne(0).sum().item<int64_t>();
  DITSERVE_RETURN_IF_ERROR(parallel::Check(levels.max().item<int>() <= 1 && differing * 2000 <= levels.numel(),
                                           absl::StrCat(differing, " of ", levels.numel(), " 8-bit values differ")));
  // The band's measured largest activation is the closed form's for its
  // rows, and a fraction of the whole image's.
  const auto [first, end] = BandRows(h, ctx.world_size, ctx.rank);
  const int64_t expected = vae::DecodeActivationBytes(vae->config(), {2, end - first, h, w}, 4, 2);
  DITSERVE_RETURN_IF_ERROR(parallel::Check(peak == expected, absl::StrCat("peak ", peak, " bytes, closed form ", expected)));
  const int64_t whole_peak = vae::DecodeActivationBytes(vae->config(), {2, h, h, w}, 4, 0);
  DITSERVE_RETURN_IF_ERROR(parallel::Check(peak < whole_peak, absl::StrCat("peak ", peak, " of ", whole_peak, " bytes")));
  return absl::OkStatus();
}

DITSERVE_SCENARIO(parallel_vae_needs_a_row_per_rank) {
  parallel::ParallelConfig config;
  config.data_parallel_degree = ctx.world_size;
  auto groups = parallel::JoinTestGang(ctx, config, {});
  if (!groups.ok()) return groups.status();
  auto vae = RandomDecoder();
  if (vae == nullptr) return absl::InternalError("cannot build the decoder");
  auto r = DecodeInBands(*vae, at::zeros({1, 4, 2, 3}), (*groups)->group(parallel::Dim::kWorld), nullptr);
  return parallel::Check(r.status().code() == absl::StatusCode::kInvalidArgument &&
                             r.status().message() == "--use_parallel_vae needs a latent row per rank: 2 latent rows "
                                                     "over 3 ranks",
                         r.status().ToString());
}

TEST(BandRows, SplitsInRankOrderWithTheRemainderFirst) {
  EXPECT_EQ(BandRows(8, 2, 0), std::make_pair(int64_t{0}, int64_t{4}));
  EXPECT_EQ(BandRows(8, 2, 1), std::make_pair(int64_t{4}, int64_t{8}));
  EXPECT_EQ(BandRows(7, 3, 0), std::make_pair(int64_t{0}, int64_t{3}));
  EXPECT_EQ(BandRows(7, 3, 1), std::make_pair(int64_t{3}, int64_t{5}));
  EXPECT_EQ(BandRows(7, 3, 2), std::make_pair(int64_t{5}, int64_t{7}));
  for (int64_t rows = 1; rows < 40; ++rows) {
    for (int ranks = 1; ranks <= rows && ranks <= 8; ++ranks) {
      int64_t next = 0;
      for (int r = 0; r < ranks; ++r) {
        const auto [first, end] = BandRows(rows, ranks, r);
        EXPECT_EQ(first, next);
        EXPECT_GE(end - first, rows / ranks);
        EXPECT_LE(end - first, rows / ranks + 1);
        next = end;
      }
      EXPECT_EQ(next, rows);
    }
  }
}

TEST(ParallelVae, TwoRanksSquareEqualsOneRank) {
  testing::ExpectAllRanksOk(testing::LaunchScenario("parallel_vae_equals_serial", {.world_size = 2, .args = {"6", "6"}}));
}

TEST(ParallelVae, ThreeRanksUnevenNonSquareEqualsOneRank) {
  testing::ExpectAllRanksOk(testing::LaunchScenario("parallel_vae_equals_serial", {.world_size = 3, .args = {"7", "5"}}));
}

TEST(ParallelVae, FourRanksNonSquareEqualsOneRank) {
  testing::ExpectAllRanksOk(testing::LaunchScenario("parallel_vae_equals_serial", {.world_size = 4, .args = {"9", "4"}}));
}

TEST(ParallelVae, FewerLatentRowsThanRanksIsAClearError) {
  testing::ExpectAllRanksOk(testing::LaunchScenario("parallel_vae_needs_a_row_per_rank", {.world_size = 3}));
}

}  // namespace
}  // namespace ditserve::worker::pipelines
