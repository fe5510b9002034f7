#pragma once

// Text-to-image with a Flux diffusers directory, in one process: the C++
// counterpart of diffusers' FluxPipeline (guidance embedding for FLUX.1-dev
// style models; true classifier-free guidance against the negative prompt,
// empty by default, when true_cfg_scale > 1). The reference the gang's
// family-neutral ParallelPipeline is checked against for Flux.
//
// Initial noise: PyTorch's CPU generator (mt19937) seeded with `seed`,
// float32 normals drawn exactly as torch.randn(shape, generator=
// torch.Generator().manual_seed(seed)) does — diffusers' FluxPipeline with a
// CPU generator draws the same latents — then moved to the run device. So
// the same seed gives the same noise on every rank, every device and every
// run.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "worker/pipelines/generation_request.h"

namespace ditserve::worker::families {

using pipelines::GenerationRequest;
using pipelines::GenerationResult;
using pipelines::StepCallback;

using FluxRequest = GenerationRequest;
using FluxResult = GenerationResult;

// The limits every pipeline enforces: height and width multiples of
// `size_multiple` in [size_multiple, 8192], 1–1000 steps, 0–512 T5 tokens,
// true_cfg_scale >= 1. INVALID_ARGUMENT naming the field and the limit.
absl::Status ValidateFluxRequest(const GenerationRequest& request, int size_multiple);

class FluxPipeline {
 public:
  // Loads model_index.json and every component of `dir` (scheduler,
  // tokenizer, tokenizer_2, text_encoder, text_encoder_2, transformer, vae)
  // in `dtype` on `device` (CUDA needs a CUDA build). NOT_FOUND /
  // INVALID_ARGUMENT name the file at fault.
  static absl::StatusOr<std::unique_ptr<FluxPipeline>> Load(const std::string& dir, at::ScalarType dtype,
                                                            c10::Device device = c10::Device(c10::kCPU));
  ~FluxPipeline();

  // Multiple of height/width: 2 × the VAE's downscale (16 for FLUX.1).
  int size_multiple() const;
  // The model's default image size: vae/config.json's sample_size.
  int default_size() const;
  bool uses_guidance_embedding() const;
  // The T5 length a request gets by default: tokenizer_2's
  // model_max_length capped at 512 (512 for FLUX.1; the length a smaller
  // model was trained with, as FLUX.1-schnell's 256).
  int default_max_sequence_length() const;

  // INVALID_ARGUMENT naming the field and the limit for bad requests.
  absl::StatusOr<FluxResult> Generate(const FluxRequest& request, const StepCallback& on_step = {}) const;

 private:
  struct Impl;
  explicit FluxPipeline(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ditserve::worker::families
