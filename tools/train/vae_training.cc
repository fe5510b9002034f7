#include "tools/train/vae_training.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/optim/adamw.h>

#include "core/image/png_encoder.h"
#include "tools/train/scene_batch.h"

namespace ditserve::tools::train {

absl::StatusOr<PhaseReport> TrainVae(worker::vae::VaeEncoder& encoder, worker::vae::VaeDecoder& decoder, const VaeTrainOptions& o,
                                     std::mt19937_64& scenes, at::Generator& generator, std::FILE* out) {
  std::vector<at::Tensor> params;
  for (auto& [name, p] : encoder.NamedParameters()) {
    params.push_back(p.requires_grad_(true));
    if (name == "encoder.conv_out.bias") {
      // Start nearly deterministic (latent std e^-3): with a weak KL term
      // the log-variance would otherwise take thousands of steps to fall
      // from 0, and unit noise on the latents hides the picture meanwhile.
      at::NoGradGuard no_grad;
      p.narrow(0, encoder.config().latent_channels, encoder.config().latent_channels).fill_(-6.0);
    }
  }
  for (auto& [name, p] : decoder.NamedParameters()) params.push_back(p.requires_grad_(true));
  torch::optim::AdamW optimizer(params, torch::optim::AdamWOptions(o.plan.peak_lr).betas({0.9, 0.99}).weight_decay(o.weight_decay));
  return RunPhase(
      o.plan,
      [&](int, int, double lr) -> absl::StatusOr<double> {
        for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
        const SceneBatch batch = DrawSceneBatch(scenes, o.batch, o.image_size);
        auto dist = encoder.Encode(batch.images);
        if (!dist.ok()) return dist.status();
        auto image = decoder.Forward(dist->Sample(generator));
        if (!image.ok()) return image.status();
        const at::Tensor diff = *image - batch.images;
        const at::Tensor mse = diff.pow(2).mean();
        const at::Tensor kl = dist->Kl().sum() / dist->mean.numel();
        const at::Tensor loss = mse + diff.abs().mean() + o.kl_weight * kl;
        optimizer.zero_grad();
        loss.backward();
        optimizer.step();
        return mse.item<double>();
      },
      out);
}

absl::StatusOr<LatentStatistics> MeasureLatents(const worker::vae::VaeEncoder& encoder, int images, int image_size,
                                                std::mt19937_64& scenes, at::Generator& generator) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> samples;
  for (int done = 0; done < images; done += 32) {
    const SceneBatch batch = DrawSceneBatch(scenes, std::min(32, images - done), image_size);
    auto dist = encoder.Encode(batch.images);
    if (!dist.ok()) return dist.status();
    samples.push_back(dist->Sample(generator).flatten());
  }
  const at::Tensor all = at::cat(samples);
  return LatentStatistics{all.mean().item<double>(), all.std().item<double>()};
}

absl::Status WriteReconstructionPreview(const worker::vae::VaeEncoder& encoder, const worker::vae::VaeDecoder& decoder, int images,
                                        int image_size, std::mt19937_64& scenes, const std::string& path) {
  at::NoGradGuard no_grad;
  const SceneBatch batch = DrawSceneBatch(scenes, images, image_size);
  auto dist = encoder.Encode(batch.images);
  if (!dist.ok()) return dist.status();
  auto decoded = decoder.Forward(dist->mean);
  if (!decoded.ok()) return decoded.status();
  // [2, B, 3, S, S] -> rows of B pictures: [2·S, B·S, 3].
  const at::Tensor grid = worker::vae::ToUint8Rgb(at::cat({batch.images, *decoded}))
                              .view({2, images, image_size, image_size, 3})
                              .permute({0, 2, 1, 3, 4})
                              .reshape({2 * image_size, images * image_size, 3})
                              .contiguous();
  auto png = core::image::EncodePng(grid.data_ptr<uint8_t>(), images * image_size, 2 * image_size);
  if (!png.ok()) return png.status();
  return core::image::WriteFile(path, *png);
}

absl::StatusOr<double> ReconstructionError(const worker::vae::VaeEncoder& encoder, const worker::vae::VaeDecoder& decoder, int images,
                                           int image_size, std::mt19937_64& scenes) {
  at::NoGradGuard no_grad;
  double sum = 0;
  for (int done = 0; done < images; done += 16) {
    const int n = std::min(16, images - done);
    const SceneBatch batch = DrawSceneBatch(scenes, n, image_size);
    auto dist = encoder.Encode(batch.images);
    if (!dist.ok()) return dist.status();
    auto image = decoder.Forward(dist->mean);
    if (!image.ok()) return image.status();
    sum += (*image - batch.images).pow(2).mean().item<double>() * n;
  }
  return sum / images;
}

}  // namespace ditserve::tools::train
