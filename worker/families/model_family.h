#pragma once

// A DiT family as the gang's family-neutral ParallelPipeline sees it: what
// it reads from a diffusers directory and how it loads its pieces. One
// implementation per family, each in its folder (flux/, sd3/); the pipeline,
// the parallel methods, the serve loop and the server hold no
// family-specific code. docs/adding-a-model.md is the recipe.
//
// Torch-free facts about a family (its name, block count, guidance rule)
// live in ModelGeometry (core/generation_plan.h) so that launchers and
// the frontend can check requests without LibTorch.

#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "core/denoising_schedule.h"
#include "core/generation_plan.h"
#include "core/step_cache.h"
#include "worker/families/text_conditioner.h"
#include "worker/models/common/dit_transformer.h"
#include "worker/models/vae/autoencoder_kl.h"
#include "worker/pipelines/generation_request.h"

namespace ditserve::worker::families {

using pipelines::GenerationRequest;

// Every config is read once, at OpenModelFamily; the loaders read weights
// only. Immutable; thread-compatible.
class ModelFamily {
 public:
  virtual ~ModelFamily() = default;

  const std::string& dir() const { return dir_; }
  const core::ModelGeometry& geometry() const { return geometry_; }
  const vae::VaeConfig& vae_config() const { return vae_config_; }
  // The transformer/config.json text, verbatim (GetInfo reports it).
  const std::string& transformer_config_json() const { return transformer_config_json_; }

  // Latent channels C of the VAE (each token carries 4C values).
  virtual int latent_channels() const = 0;
  // Widths of the text conditioning the transformer takes.
  virtual int pooled_dim() const = 0;
  virtual int text_dim() const = 0;
  // Family-specific request checks, beyond the pipeline's common limits
  // (steps, sequence length, size, guidance: ValidateGuidance): INVALID_
  // ARGUMENT naming the field and the limit. None for Flux and SD3.
  virtual absl::Status ValidateRequest(const GenerationRequest& /*request*/) const { return absl::OkStatus(); }
  // The denoising schedule of a run of `steps` steps over `image_tokens`
  // image tokens (core/denoising_schedule.h): the model times, the input
  // scales and the scheduler's updates, from scheduler/ as the family's
  // diffusers pipeline drives it. INVALID_ARGUMENT when the scheduler
  // cannot place `steps` steps.
  virtual absl::StatusOr<core::DenoisingSchedule> Schedule(int steps, int64_t image_tokens) const = 0;
  // True when the text enters through cross-attention (PixArt,
  // HunyuanDiT): every rank then holds the whole text (it is not split over
  // the SP group) and its padding mask travels with it. False for the
  // MMDiT families (Flux, SD3), whose text joins the image in attention.
  virtual bool cross_attention() const { return false; }
  // TeaCache's rescaling polynomial for this family (highest power first):
  // maps the first block's modulated-input change to the expected change
  // of the model output (docs/step-caching.md says where each comes from).
  virtual core::TeaCachePolynomial TeaCachePolynomial() const = 0;
  // The part of the transformer a rank holds, loaded from transformer/
  // (only that part's tensors are read) onto `device`.
  virtual absl::StatusOr<std::unique_ptr<models::DitTransformer>> LoadTransformer(const models::DitPart& part,
                                                                                  at::ScalarType dtype,
                                                                                  c10::Device device) const = 0;
  // The tokenizers and text encoders (world rank 0 only).
  virtual absl::StatusOr<std::unique_ptr<TextConditioner>> LoadText(at::ScalarType dtype,
                                                                    c10::Device device) const = 0;

 protected:
  std::string dir_;
  core::ModelGeometry geometry_;
  vae::VaeConfig vae_config_;
  std::string transformer_config_json_;
};

// Opens `dir` as the family its model_index.json names; every component
// directory must exist. NOT_FOUND / INVALID_ARGUMENT name the file, or the
// unknown pipeline class and the supported ones.
absl::StatusOr<std::unique_ptr<ModelFamily>> OpenModelFamily(const std::string& dir);


}  // namespace ditserve::worker::families
