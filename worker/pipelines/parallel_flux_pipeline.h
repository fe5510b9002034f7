#pragma once

// Text-to-image with a Flux diffusers directory across a gang: xDiT's
// hybrid of USP (Ulysses inside Ring), PipeFusion, CFG parallel and data
// parallel, in any combination the gang's ParallelConfig names. With a
// world of one it is the serial FluxPipeline.
//
// Every call here is collective: every rank of the gang makes the same
// calls with the same arguments, in the same order, from one thread.
//
// Where the work happens (documented in docs/parallel-generation.md):
// - World rank 0 loads the tokenizers, both text encoders and the VAE; it
//   encodes every prompt once and broadcasts the embeddings, and it decodes
//   every final latent once. Other ranks load only the transformer weights
//   of their PipeFusion stage.
// - The requests of one Generate call are split across the data-parallel
//   replicas (request i goes to replica i mod dp); each replica runs its
//   share as one batch; final latents travel to rank 0 for decoding.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "parallel/process_groups.h"
#include "worker/generation_plan.h"
#include "worker/pipelines/comm_stats.h"
#include "worker/pipelines/flux_pipeline.h"

namespace ditserve::worker::pipelines {

// Where the last Generate call's time went, as rank 0 saw it.
struct GenerateTimings {
  double text_encoding_s = 0;  // encoding every prompt and broadcasting the embeddings
  double denoising_s = 0;      // every step, until the final latents are on rank 0
  double vae_s = 0;            // decoding every image
};

class ParallelFluxPipeline {
 public:
  // Collective. Loads what this rank needs of `dir` in `dtype` on `device`.
  // `groups` must outlive the pipeline. Invalid combinations of the model
  // and the parallel configuration (heads not divisible by the Ulysses
  // degree, more stages than blocks, …) are INVALID_ARGUMENT naming the flag.
  static absl::StatusOr<std::unique_ptr<ParallelFluxPipeline>> Load(
      const std::string& dir, at::ScalarType dtype, c10::Device device,
      parallel::ProcessGroups& groups, const PipeFusionOptions& pipefusion = {});
  ~ParallelFluxPipeline();

  int size_multiple() const;
  int default_size() const;
  bool uses_guidance_embedding() const;

  // Local check (no communication) of one request against the model, the
  // limits and the parallel configuration: INVALID_ARGUMENT naming the field.
  absl::Status Validate(const FluxRequest& request) const;

  // Collective. `requests` must be compatible: equal height, width,
  // num_inference_steps and guidance_scale, and all or none using true CFG
  // (true_cfg_scale > 1 with a negative prompt). Returns one result per
  // request, in order, on world rank 0; an empty vector on other ranks.
  // `on_step` runs on every rank after each denoising step it completes;
  // when it returns false on any rank, every rank stops with CANCELLED after
  // the same step: the next one without PipeFusion, at most
  // ceil((P−1)/M) + 2 later with it (docs/parallel-generation.md). The gang
  // then serves the next call.
  absl::StatusOr<std::vector<FluxResult>> Generate(const std::vector<FluxRequest>& requests,
                                                   const StepCallback& on_step = {});

  const CommStats& comm_stats() const;
  const GenerateTimings& last_timings() const;

 private:
  struct Impl;
  explicit ParallelFluxPipeline(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ditserve::worker::pipelines
