#pragma once

// How the final latents become images (the VAE decode), as the flags of
// every binary that generates set it: one rank decoding the whole image,
// the gang decoding it in bands (xDiT's --use_parallel_vae), or one rank
// decoding it in overlapping tiles (diffusers' enable_tiling), and a cap on
// the decode's largest activation that a request's size must fit under.
// Torch-free.

#include <cstdint>

#include "absl/status/status.h"
#include "core/generation_plan.h"

namespace ditserve::core {

struct VaeDecodeOptions {
  bool parallel = false;       // --use_parallel_vae: every rank of the gang decodes a band of rows
  bool tiling = false;         // --vae_tiling: one rank decodes overlapping tiles, blended
  int tile_size = 0;           // --vae_tile_size: pixels a side; 0: the VAE's sample_size
  int64_t memory_cap_mb = 0;   // --vae_memory_cap_mb: MiB of the largest activation a rank may hold; 0: no cap
};

// The flags' own ranges and combinations, and the tile size against the
// model (a multiple of four latent rows: 2 × geometry.size_multiple
// pixels). INVALID_ARGUMENT naming the flag.
absl::Status ValidateVaeDecodeOptions(const VaeDecodeOptions& options, const ModelGeometry& geometry);

// The tile size a decode uses: tile_size, or the model's default size
// (the VAE's sample_size) when it is 0.
int EffectiveTileSize(const VaeDecodeOptions& options, const ModelGeometry& geometry);

}  // namespace ditserve::core
