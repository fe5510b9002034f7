#pragma once

// Text-to-image with a diffusers directory of any supported DiT family
// (model_family.h: Flux, SD3) across a gang: xDiT's hybrid of USP (Ulysses
// inside Ring), PipeFusion, CFG parallel and data parallel, in any
// combination the gang's ParallelConfig names. With a world of one it is
// the serial pipeline (for Flux, FluxPipeline's result).
//
// Every call here is collective: every rank of the gang makes the same
// calls with the same arguments, in the same order, from one thread.
//
// Where the work happens (documented in docs/parallel-generation.md):
// - World rank 0 loads the tokenizers, both text encoders and the VAE; it
//   encodes every prompt once and broadcasts the embeddings, and it decodes
//   every final latent once (whole, or in tiles with --vae_tiling). Other
//   ranks load only the transformer weights of their PipeFusion stage, and
//   the VAE with --use_parallel_vae, where every rank decodes a band of
//   each image's rows.
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
#include "core/generation_plan.h"
#include "core/vae_decode_options.h"
#include "worker/pipelines/comm_stats.h"
#include "worker/pipelines/generation_request.h"

namespace ditserve::worker::pipelines {

class SetDriver;

// Where the last Generate call's time went, as rank 0 saw it.
struct GenerateTimings {
  double text_encoding_s = 0;  // encoding every prompt and broadcasting the embeddings
  double denoising_s = 0;      // every step, until the final latents are on rank 0
  double vae_s = 0;            // decoding every image
  // This rank's largest VAE activation in the call (DecodeActivationBytes
  // of its plan: the whole image, its band, or a tile); 0 when it decoded
  // nothing.
  int64_t vae_peak_activation_bytes = 0;
};

class ParallelPipeline {
 public:
  // Collective. Loads what this rank needs of `dir` in `dtype` on `device`.
  // `groups` must outlive the pipeline. Invalid combinations of the model
  // and the parallel configuration (heads not divisible by the Ulysses
  // degree, more stages than blocks, …) or the VAE options are
  // INVALID_ARGUMENT naming the flag.
  static absl::StatusOr<std::unique_ptr<ParallelPipeline>> Load(
      const std::string& dir, at::ScalarType dtype, c10::Device device,
      parallel::ProcessGroups& groups, const core::PipeFusionOptions& pipefusion = {},
      const core::VaeDecodeOptions& vae = {});
  ~ParallelPipeline();

  int size_multiple() const;
  int default_size() const;
  bool uses_guidance_embedding() const;
  // "flux" or "sd3" (GetInfo.model_family).
  const std::string& family() const;
  // A request's guidance_scale when it names none (Flux 3.5, SD3 7.0), and
  // which field is the CFG scale.
  double default_guidance_scale() const;
  core::CfgScaleField cfg_scale_field() const;
  // A request's max_sequence_length when 0 (its text encoder's default),
  // and the largest it takes; agreed by the gang at load.
  int default_max_sequence_length() const;
  int max_sequence_length_limit() const;
  // The transformer/config.json text, verbatim.
  const std::string& transformer_config_json() const;

  // Local check (no communication) of one request against the model, the
  // limits and the parallel configuration: INVALID_ARGUMENT naming the field.
  absl::Status Validate(const GenerationRequest& request) const;

  // Collective. `requests` must be compatible: equal height, width,
  // num_inference_steps, max_sequence_length and resolved guidance (the
  // embedded value, whether CFG runs; CFG scales may differ). Returns one result per
  // request, in order, on world rank 0; an empty vector on other ranks.
  // `on_step` runs on every rank after each denoising step it completes;
  // when it returns false on any rank, every rank stops with CANCELLED after
  // the same step: the next one without PipeFusion, at most
  // ceil((P−1)/M) + 2 later with it (docs/parallel-generation.md). The gang
  // then serves the next call.
  absl::StatusOr<std::vector<GenerationResult>> Generate(const std::vector<GenerationRequest>& requests,
                                                   const StepCallback& on_step = {});

  // Collective: an open running set (running_set.h) fed by `driver` until
  // it drains. Requests join and leave between steps; each gives the image
  // it gives alone, under every parallel method (PipeFusion's joiners run
  // their warmup steps whole, running_set.cc).
  // Returns an error only when the gang is broken (a collective or the
  // driver failed); a member's own failure goes to driver.OnLeft.
  absl::Status RunSet(SetDriver& driver);

  const CommStats& comm_stats() const;
  const GenerateTimings& last_timings() const;

 private:
  struct Impl;
  explicit ParallelPipeline(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ditserve::worker::pipelines
