#include "worker/models/vae/tiled_decode.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"

namespace ditserve::worker::vae {
namespace {

// diffusers' blend_v / blend_h, in place on `b`: its first `extent` rows
// (dim 2) or columns (dim 3) become a·(1 − y/extent) + b·(y/extent), with a
// the last `extent` of the neighbour `a`. The weights are formed in float64
// and rounded once, as Python's floats are.
void Blend(const at::Tensor& a, at::Tensor& b, int64_t extent, int64_t dim) {
  extent = std::min({a.size(dim), b.size(dim), extent});
  if (extent <= 0) return;
  const at::Tensor y = at::arange(extent, at::TensorOptions().dtype(at::kDouble));
  std::vector<int64_t> shape = {1, 1, 1, 1};
  shape[dim] = extent;
  const at::Tensor wb = (y / static_cast<double>(extent)).to(b.scalar_type()).view(shape);
  const at::Tensor wa = (1 - y / static_cast<double>(extent)).to(b.scalar_type()).view(shape);
  at::Tensor head = b.narrow(dim, 0, extent);
  head.copy_(a.narrow(dim, a.size(dim) - extent, extent) * wa + head * wb);
}

}  // namespace

absl::StatusOr<TileGeometry> MakeTileGeometry(const VaeConfig& config, int64_t tile_sample_size) {
  const int64_t f = config.scale_factor();
  // A multiple of 4·f keeps diffusers' geometry whole: the tiles advance
  // by stride·f pixels, which is then exactly the keep (3/4 of a tile).
  if (tile_sample_size < 4 * f || tile_sample_size > 65536 || tile_sample_size % (4 * f) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("--vae_tile_size must be a multiple of ", 4 * f, " pixels in [",
                                                   4 * f, ", 65536] (four latent rows of this VAE), got ",
                                                   tile_sample_size));
  }
  TileGeometry t;
  t.latent_tile = tile_sample_size / f;
  t.stride = static_cast<int64_t>(static_cast<double>(t.latent_tile) * (1 - 0.25));
  t.blend = static_cast<int64_t>(static_cast<double>(tile_sample_size) * 0.25);
  t.keep = tile_sample_size - t.blend;
  return t;
}

bool NeedsTiling(const TileGeometry& tiles, int64_t rows, int64_t cols) {
  return rows > tiles.latent_tile || cols > tiles.latent_tile;
}

absl::StatusOr<at::Tensor> DecodeTiled(const VaeDecoder& vae, const at::Tensor& latents, const TileGeometry& tiles,
                                       int64_t* peak_bytes) {
  if (!latents.defined() || latents.dim() != 4) return absl::InvalidArgumentError("vae: latents must be [B, C, h, w]");
  const int64_t B = latents.size(0), rows = latents.size(2), cols = latents.size(3);
  const int64_t f = vae.config().scale_factor();
  const int64_t image_bytes = B * vae.config().out_channels * rows * f * cols * f * 4;
  if (!NeedsTiling(tiles, rows, cols)) return vae.Decode(latents, peak_bytes);
  // Rows of tiles are decoded and blended one after another: blending row i
  // reads only row i − 1 (already blended, as diffusers' in-place blends
  // leave it) and the tiles to the left in row i.
  std::vector<at::Tensor> above, joined_rows;
  int64_t peak = image_bytes;
  for (int64_t i = 0; i < rows; i += tiles.stride) {
    std::vector<at::Tensor> row, kept;
    for (int64_t j = 0; j < cols; j += tiles.stride) {
      const at::Tensor tile = latents.narrow(2, i, std::min(tiles.latent_tile, rows - i))
                                  .narrow(3, j, std::min(tiles.latent_tile, cols - j));
      int64_t tile_peak = 0;
      auto decoded = vae.Decode(tile, &tile_peak);
      if (!decoded.ok()) return decoded.status();
      peak = std::max(peak, tile_peak);
      row.push_back(*std::move(decoded));
    }
    for (size_t j = 0; j < row.size(); ++j) {
      if (!above.empty()) Blend(above[j], row[j], tiles.blend, 2);
      if (j > 0) Blend(row[j - 1], row[j], tiles.blend, 3);
      kept.push_back(row[j].narrow(2, 0, std::min(tiles.keep, row[j].size(2))).narrow(3, 0, std::min(tiles.keep, row[j].size(3))));
    }
    joined_rows.push_back(at::cat(kept, 3));
    above = std::move(row);
  }
  if (peak_bytes != nullptr) *peak_bytes = peak;
  return at::cat(joined_rows, 2);
}

}  // namespace ditserve::worker::vae
