#include "core/vae_decode_options.h"

#include "absl/strings/str_cat.h"

namespace ditserve::core {

absl::Status ValidateVaeDecodeOptions(const VaeDecodeOptions& o, const ModelGeometry& geometry) {
  if (o.parallel && o.tiling) {
    return absl::InvalidArgumentError(
        "--use_parallel_vae and --vae_tiling exclude each other: the gang decodes exact bands, one rank decodes tiles");
  }
  if (o.tile_size != 0 && !o.tiling) return absl::InvalidArgumentError("--vae_tile_size needs --vae_tiling");
  const int multiple = 2 * geometry.size_multiple;  // four latent rows
  if (o.tile_size < 0 || o.tile_size > 65536 || o.tile_size % multiple != 0) {
    return absl::InvalidArgumentError(absl::StrCat("--vae_tile_size must be a multiple of ", multiple,
                                                   " pixels for this model, at most 65536 (0: the VAE's sample_size ",
                                                   geometry.default_size, "), got ", o.tile_size));
  }
  if (o.tiling && o.tile_size == 0 && geometry.default_size % multiple != 0) {
    return absl::InvalidArgumentError(absl::StrCat("the VAE's sample_size ", geometry.default_size,
                                                   " is not a multiple of ", multiple,
                                                   " pixels: give --vae_tile_size with --vae_tiling"));
  }
  if (o.memory_cap_mb < 0 || o.memory_cap_mb > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--vae_memory_cap_mb must be in [0, 2^30] (0: no cap), got ", o.memory_cap_mb));
  }
  return absl::OkStatus();
}

int EffectiveTileSize(const VaeDecodeOptions& o, const ModelGeometry& geometry) {
  return o.tile_size != 0 ? o.tile_size : geometry.default_size;
}

}  // namespace ditserve::core
