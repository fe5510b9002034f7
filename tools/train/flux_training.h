#pragma once

// Phases 2 and 3 of the demo: the Flux transformer learns the rectified-flow
// velocity on the frozen VAE's latents of random shape scenes. For a clean
// latent x0 (a VAE sample, normalised as the pipeline expects:
// (z - shift_factor) · scaling_factor, packed 2×2), noise ε and
// σ = sigmoid(N(0, 1)) (SD3's logit-normal), the input is
// (1 - σ)·x0 + σ·ε at timestep σ and the target ε - x0, which is the
// velocity FluxPipeline's Euler steps integrate from σ = 1 to 0. Captions
// are dropped (replaced by "") with probability caption_dropout so that
// classifier-free guidance has an unconditional model to contrast.

#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <ATen/core/Generator.h>

#include "absl/status/statusor.h"
#include "tools/train/ema.h"
#include "tools/train/phase_runner.h"
#include "worker/families/flux/flux_text_encoder.h"
#include "worker/models/flux/flux_transformer.h"
#include "worker/models/vae/vae_encoder.h"

namespace ditserve::tools::train {

struct FluxTrainOptions {
  int max_sequence_length = 32;  // T5 tokens, as the pipeline is then run
  double caption_dropout = 0.1;
  double weight_decay = 0.01;
  double ema_decay = 0.995;
};

// Owns the optimiser and the EMA across phases (so the 128×128 fine-tune
// continues the 64×64 run). The transformer, encoder and text encoder must
// outlive it. Not thread-safe.
class FluxTrainer {
 public:
  FluxTrainer(worker::flux::FluxTransformer& transformer, const worker::vae::VaeEncoder& encoder,
              const worker::families::FluxTextEncoder& text, const FluxTrainOptions& options, double peak_lr);
  ~FluxTrainer();

  // One phase; step i draws `sizes[i % sizes.size()]`: a batch of that many
  // image_size × image_size scenes (a multiple of 2 × the VAE's downscale),
  // from `scenes`, with noise from `generator`. Alternating sizes lets a
  // fine-tune at a larger size keep the smaller one.
  struct SizeBatch {
    int image_size = 64;
    int batch = 32;
  };
  absl::StatusOr<PhaseReport> Train(const PhasePlan& plan, const std::vector<SizeBatch>& sizes,
                                    std::mt19937_64& scenes, at::Generator& generator, std::FILE* out);

  // The EMA of the transformer's weights (what the model directory gets).
  std::vector<std::pair<std::string, at::Tensor>> AveragedWeights() const;

 private:
  absl::StatusOr<worker::families::FluxTextEmbeddings> Embed(const std::string& caption);

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ditserve::tools::train
