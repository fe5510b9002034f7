#include "core/vae_decode_options.h"

#include <gtest/gtest.h>

namespace ditserve::core {
namespace {

ModelGeometry Flux() {
  ModelGeometry g;
  g.size_multiple = 16;  // 8× VAE: four latent rows are 32 px
  g.default_size = 1024;
  return g;
}

TEST(VaeDecodeOptions, DefaultsAndGoodCombinationsPass) {
  EXPECT_TRUE(ValidateVaeDecodeOptions({}, Flux()).ok());
  EXPECT_TRUE(ValidateVaeDecodeOptions({true, false, 0, 0}, Flux()).ok());
  EXPECT_TRUE(ValidateVaeDecodeOptions({false, true, 0, 0}, Flux()).ok());
  EXPECT_TRUE(ValidateVaeDecodeOptions({false, true, 512, 4096}, Flux()).ok());
  EXPECT_TRUE(ValidateVaeDecodeOptions({true, false, 0, 1}, Flux()).ok());
}

TEST(VaeDecodeOptions, ErrorsNameTheFlagAndTheLimit) {
  EXPECT_EQ(ValidateVaeDecodeOptions({true, true, 0, 0}, Flux()).message(),
            "--use_parallel_vae and --vae_tiling exclude each other: the gang decodes exact bands, one rank decodes "
            "tiles");
  EXPECT_EQ(ValidateVaeDecodeOptions({false, false, 512, 0}, Flux()).message(), "--vae_tile_size needs --vae_tiling");
  EXPECT_EQ(ValidateVaeDecodeOptions({false, true, 48, 0}, Flux()).message(),
            "--vae_tile_size must be a multiple of 32 pixels for this model, at most 65536 (0: the VAE's sample_size "
            "1024), got 48");
  EXPECT_EQ(ValidateVaeDecodeOptions({false, true, -32, 0}, Flux()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateVaeDecodeOptions({false, true, 65536 + 32, 0}, Flux()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateVaeDecodeOptions({false, false, 0, -1}, Flux()).message(),
            "--vae_memory_cap_mb must be in [0, 2^30] (0: no cap), got -1");
  ModelGeometry odd = Flux();
  odd.default_size = 1000;  // not a multiple of 32: tiling needs an explicit size
  EXPECT_EQ(ValidateVaeDecodeOptions({false, true, 0, 0}, odd).message(),
            "the VAE's sample_size 1000 is not a multiple of 32 pixels: give --vae_tile_size with --vae_tiling");
  EXPECT_TRUE(ValidateVaeDecodeOptions({false, true, 992, 0}, odd).ok());
}

TEST(VaeDecodeOptions, EffectiveTileSize) {
  EXPECT_EQ(EffectiveTileSize({false, true, 0, 0}, Flux()), 1024);
  EXPECT_EQ(EffectiveTileSize({false, true, 256, 0}, Flux()), 256);
}

}  // namespace
}  // namespace ditserve::core
