// The VAE phase of a gang's Generate: the whole decode on rank 0, the
// parallel decode in bands on every rank (parallel_vae.h), or the tiled
// decode on rank 0 (tiled_decode.h); and the request checks of that plan.

#include <ATen/ATen.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "util/status_macros.h"
#include "worker/families/components.h"
#include "worker/pipelines/gang_model.h"
#include "worker/pipelines/parallel_vae.h"

namespace ditserve::worker::pipelines {

int64_t GangModel::PlannedVaePeakBytes(int64_t h, int64_t w) const {
  const vae::VaeConfig& c = vae_config();
  const int64_t f = c.scale_factor();
  const int64_t element_bytes = at::elementSize(dtype);
  const int64_t image_bytes = int64_t{c.out_channels} * h * f * w * f * 4;  // float32
  if (vae_options.parallel) {
    const auto [first, end] = BandRows(h, world().world_size(), 0);  // rank 0's band is a largest one
    return std::max(image_bytes, vae::DecodeActivationBytes(c, {1, end - first, h, w}, element_bytes, 2));
  }
  if (tiles && vae::NeedsTiling(*tiles, h, w)) {
    const int64_t t = tiles->latent_tile;
    return std::max(image_bytes, vae::DecodeActivationBytes(c, {1, std::min(t, h), std::min(t, h), std::min(t, w)},
                                                            element_bytes, 2));
  }
  return vae::DecodeActivationBytes(c, {1, h, h, w}, element_bytes, 2);
}

absl::Status GangModel::ValidateVaeDecode(const GenerationRequest& r) const {
  const int64_t f = vae_config().scale_factor();
  const int64_t h = 2 * (r.height / (f * 2)), w = 2 * (r.width / (f * 2));
  const int ranks = world().world_size();
  if (vae_options.parallel && h < ranks) {
    return absl::InvalidArgumentError(absl::StrCat("height ", r.height, " has ", h,
                                                   " latent rows: --use_parallel_vae needs one per rank of the gang (",
                                                   ranks, ")"));
  }
  if (vae_options.memory_cap_mb == 0) return absl::OkStatus();
  const int64_t peak = PlannedVaePeakBytes(h, w);
  if (peak > vae_options.memory_cap_mb * (int64_t{1} << 20)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "height %d × width %d: the VAE decode's largest activation would be %.1f MiB on a rank, over "
        "--vae_memory_cap_mb=%d (%s)",
        r.height, r.width, static_cast<double>(peak) / (1 << 20), vae_options.memory_cap_mb,
        vae_options.tiling ? "a smaller --vae_tile_size lowers it"
                           : "--vae_tiling, or --use_parallel_vae on more ranks, lowers it"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<at::Tensor>> GangModel::DecodeImages(const std::vector<at::Tensor>& final_latents,
                                                                size_t count, int64_t h, int64_t w,
                                                                int64_t out_height, int64_t out_width) {
  // The decoded image [1, 3, H, W] in [-1, 1] at the request's size.
  const auto to_rgb = [&](const at::Tensor& image) {
    return vae::ToUint8Rgb(vae::ResizeAndCrop(image, out_height, out_width))[0];
  };
  std::vector<at::Tensor> images;
  const bool leader = world().rank() == 0;
  int64_t peak = 0;
  if (!vae_options.parallel) {
    if (!leader) return images;
    for (const at::Tensor& packed : final_latents) {
      const at::Tensor z = families::VaeLatents(vae_config(), packed, h, w);
      int64_t p = 0;
      auto image = tiles ? vae::DecodeTiled(*vae, z, *tiles, &p) : vae->Decode(z, &p);
      if (!image.ok()) return image.status();
      peak = std::max(peak, p);
      images.push_back(to_rgb(*image));
    }
    timings.vae_peak_activation_bytes = peak;
    return images;
  }
  // Rank 0 unpacks and unscales each image's latents and broadcasts them;
  // every rank decodes its band and gets the whole image back.
  auto& all = groups->group(parallel::Dim::kWorld);
  for (size_t i = 0; i < count; ++i) {
    at::Tensor z = leader ? families::VaeLatents(vae_config(), final_latents[i], h, w).contiguous()
                          : at::empty({1, vae_config().latent_channels, h, w},
                                      at::TensorOptions().dtype(dtype).device(device));
    if (world().world_size() > 1) {
      CommTimer timer(&stats, "vae");
      if (leader) timer.AddBytes(static_cast<int64_t>(z.nbytes()) * (world().world_size() - 1));
      DITSERVE_RETURN_IF_ERROR(all.Broadcast(z, 0));
    }
    int64_t p = 0;
    auto image = DecodeInBands(*vae, z, all, &stats, &p);
    if (!image.ok()) return image.status();
    peak = std::max({peak, p, static_cast<int64_t>(image->nbytes())});
    if (leader) images.push_back(to_rgb(*image));
  }
  timings.vae_peak_activation_bytes = peak;
  return images;
}

}  // namespace ditserve::worker::pipelines
