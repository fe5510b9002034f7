#pragma once

// Tiled decoding on one rank (--vae_tiling), as diffusers' AutoencoderKL
// with enable_tiling(): the latents are cut into square tiles of
// tile_sample_size / f latent rows and columns (f the VAE's scale factor)
// that overlap by a quarter, each tile is decoded alone, and each tile's
// first quarter of rows and columns (in pixels) is blended linearly with the
// tile above and the tile to the left before the tiles are cropped and
// joined. An approximation of the whole decode (the convolutions, group
// norms and attention see one tile at a time); in exchange the largest
// activation is a tile's, whatever the image's size.

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/models/vae/autoencoder_kl.h"

namespace ditserve::worker::vae {

// diffusers' tile geometry for a tile of `tile_sample_size` pixels.
struct TileGeometry {
  int64_t latent_tile = 0;  // int(tile_sample_size / f): latent rows and columns per tile
  int64_t stride = 0;       // int(latent_tile · 0.75): latent rows between tile starts
  int64_t blend = 0;        // int(tile_sample_size · 0.25): pixels blended with the neighbour
  int64_t keep = 0;         // tile_sample_size − blend: pixels kept of each tile
};

// INVALID_ARGUMENT naming --vae_tile_size unless it is a multiple of 4·f
// pixels (so the tiles' kept parts join to f·h × f·w) up to 65536.
absl::StatusOr<TileGeometry> MakeTileGeometry(const VaeConfig& config, int64_t tile_sample_size);

// Whether diffusers tiles latents of `rows` × `cols`: either is larger
// than a tile.
bool NeedsTiling(const TileGeometry& tiles, int64_t rows, int64_t cols);

// Raw latents [B, C, h, w] (as Decode takes them) -> image [B, 3, f·h, f·w]
// float32, tiled as diffusers' tiled_decode (with NeedsTiling false it is
// Decode). `peak_bytes`, when set, gets the largest activation held: the
// largest tile's decode or the joined image, the larger.
absl::StatusOr<at::Tensor> DecodeTiled(const VaeDecoder& vae, const at::Tensor& latents, const TileGeometry& tiles,
                                       int64_t* peak_bytes = nullptr);

}  // namespace ditserve::worker::vae
