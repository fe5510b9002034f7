#pragma once

// Phase 1 of the demo: the VAE (encoder and decoder together) learns to
// reconstruct random shape scenes: loss = mean squared + mean absolute
// error over pixels + kl_weight · KL(latent ‖ N(0, I)) per latent element,
// decoding a sample of the latent distribution. AdamW, seeded data. The
// progress lines show the mean squared error.

#include <cstdio>
#include <random>
#include <string>

#include <ATen/core/Generator.h>

#include "absl/status/statusor.h"
#include "tools/train/phase_runner.h"
#include "worker/models/vae/autoencoder_kl.h"
#include "worker/models/vae/vae_encoder.h"

namespace ditserve::tools::train {

struct VaeTrainOptions {
  PhasePlan plan;
  int batch = 16;
  int image_size = 64;
  double kl_weight = 1e-5;
  double weight_decay = 0.0;
};

// Trains `encoder` and `decoder` in place (float32, CPU). Scenes come from
// `scenes`, latent samples from `generator`.
absl::StatusOr<PhaseReport> TrainVae(worker::vae::VaeEncoder& encoder, worker::vae::VaeDecoder& decoder, const VaeTrainOptions& options,
                                     std::mt19937_64& scenes, at::Generator& generator, std::FILE* out);

// The mean and standard deviation of latent samples of `images` random
// scenes at `image_size`: shift_factor = mean and scaling_factor = 1/std
// make the transformer's latents zero-mean and unit-variance.
struct LatentStatistics {
  double mean = 0;
  double std = 1;
};
absl::StatusOr<LatentStatistics> MeasureLatents(const worker::vae::VaeEncoder& encoder, int images, int image_size,
                                                std::mt19937_64& scenes, at::Generator& generator);

// A PNG of `images` fresh scenes (top row) and their reconstructions from
// the latent means (bottom row), for a look at what the VAE learned.
absl::Status WriteReconstructionPreview(const worker::vae::VaeEncoder& encoder, const worker::vae::VaeDecoder& decoder, int images,
                                        int image_size, std::mt19937_64& scenes, const std::string& path);

// Mean squared reconstruction error (images in [-1, 1]) of the latent
// means of `images` fresh scenes: how well the trained VAE reconstructs.
absl::StatusOr<double> ReconstructionError(const worker::vae::VaeEncoder& encoder, const worker::vae::VaeDecoder& decoder, int images,
                                           int image_size, std::mt19937_64& scenes);

}  // namespace ditserve::tools::train
