#pragma once

// What one rank of the gang holds for generation (ParallelPipeline's
// state), shared by the pipeline's call orchestration
// (parallel_pipeline.cc) and the denoising loop of a replica
// (replica_run.cc). Internal to worker/pipelines.

#include <memory>
#include <string>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include <optional>
#include <vector>

#include "core/generation_plan.h"
#include "core/vae_decode_options.h"
#include "parallel/process_groups.h"
#include "parallel/world_config.h"
#include "worker/families/model_family.h"
#include "worker/families/text_conditioner.h"
#include "worker/models/common/dit_transformer.h"
#include "worker/models/vae/autoencoder_kl.h"
#include "worker/models/vae/tiled_decode.h"
#include "worker/pipelines/comm_stats.h"
#include "worker/pipelines/generation_request.h"
#include "worker/pipelines/parallel_pipeline.h"

namespace ditserve::worker::pipelines {

class ReplicaRun;
class SetDriver;

// Everything a rank holds for generation. Not thread-safe.
struct GangModel {
  std::string dir;
  parallel::ProcessGroups* groups = nullptr;
  core::PipeFusionOptions pipefusion;
  std::unique_ptr<families::ModelFamily> family;
  std::unique_ptr<families::TextConditioner> text;                 // world rank 0 only
  std::unique_ptr<vae::VaeDecoder> vae;  // world rank 0; every rank with --use_parallel_vae
  core::VaeDecodeOptions vae_options;
  std::optional<vae::TileGeometry> tiles;  // with --vae_tiling
  std::unique_ptr<models::DitTransformer> transformer;   // this stage's blocks
  at::ScalarType dtype = at::kFloat;
  c10::Device device = c10::Device(c10::kCPU);
  CommStats stats;
  GenerateTimings timings;
  // Rank 0's text conditioner's, shared at load.
  int default_max_sequence_length = 512;
  int max_sequence_length_limit = 512;

  const core::ModelGeometry& geometry() const { return family->geometry(); }
  const vae::VaeConfig& vae_config() const { return family->vae_config(); }
  int MaxSequenceLength(const GenerationRequest& r) const {
    return r.max_sequence_length > 0 ? r.max_sequence_length : default_max_sequence_length;
  }
  core::ResolvedGuidance Guidance(const GenerationRequest& r) const {
    return core::ResolveGuidance(geometry(), r.guidance_scale, r.true_cfg_scale);
  }

  const parallel::WorldConfig& world() const { return groups->world(); }
  const parallel::ParallelConfig& config() const { return world().config(); }
  int stage() const { return world().rank_in(parallel::Dim::kPipeFusion); }
  int stages() const { return config().pipefusion_parallel_degree; }
  int sp_rank() const {
    return world().rank_in(parallel::Dim::kUlysses) + config().ulysses_degree * world().rank_in(parallel::Dim::kRing);
  }
  int sp_size() const { return config().sequence_parallel_degree(); }

  absl::Status Validate(const GenerationRequest& r) const;
  // The request's size against the VAE decode's plan: a latent row per rank
  // with --use_parallel_vae, the largest activation under
  // --vae_memory_cap_mb. INVALID_ARGUMENT naming the fields and the limit.
  absl::Status ValidateVaeDecode(const GenerationRequest& r) const;
  // The largest activation one rank holds decoding an (h × w) latent image
  // with this plan: DecodeActivationBytes of the whole image, this gang's
  // largest band (and the gathered image) or the largest tile (and the
  // joined image).
  int64_t PlannedVaePeakBytes(int64_t h, int64_t w) const;
  absl::Status AgreeOnCall(int64_t rows, int64_t T, const GenerationRequest& first) const;
  // Rank 0's text token count for the call, known on every rank after.
  absl::StatusOr<int64_t> AgreeOnTextTokens(const GenerationRequest& first);
  // Generate's phases: the prompts' embeddings on every rank ([rows,
  // pooled dim], [rows, T, text dim] and, for a cross-attention family,
  // the text mask [rows, T]), and every replica's final latents and step
  // decisions on rank 0.
  absl::Status EncodePrompts(const std::vector<GenerationRequest>& requests, int64_t rows, int64_t T,
                             at::Tensor& pooled, at::Tensor& sequence, at::Tensor& mask);
  // EncodePrompts' parts: zeroed embedding buffers for `rows` rows; one
  // text's embeddings into row `row` (its mask, or all real tokens, for a
  // cross-attention family); rank 0's buffers to every rank (collective
  // over the world).
  void AllocateEmbeddings(int64_t rows, int64_t T, at::Tensor& pooled, at::Tensor& sequence, at::Tensor& mask) const;
  void PlaceEmbeddings(const families::TextEmbeddings& e, int64_t row, at::Tensor& pooled, at::Tensor& sequence,
                       at::Tensor& mask) const;
  absl::Status BroadcastEmbeddings(at::Tensor& pooled, at::Tensor& sequence, at::Tensor& mask);
  absl::Status CollectLatents(const std::vector<GenerationRequest>& requests, const ReplicaRun& run,
                              std::vector<at::Tensor>& final_latents, std::vector<std::vector<bool>>& step_computed);
  // Collective with --use_parallel_vae (rank 0's final latents broadcast,
  // each rank decoding its band), else rank 0's alone: one uint8 [H, W, 3]
  // image per final latent on rank 0, none elsewhere, resized to
  // out_height × out_width when that is not the decoded size (PixArt's
  // resolution binning). Sets timings.vae_peak_activation_bytes.
  absl::StatusOr<std::vector<at::Tensor>> DecodeImages(const std::vector<at::Tensor>& final_latents, size_t count,
                                                       int64_t h, int64_t w, int64_t out_height, int64_t out_width);
  absl::StatusOr<std::vector<GenerationResult>> Generate(const std::vector<GenerationRequest>& requests,
                                                         const StepCallback& on_step);
  // Whether `r` may join an open set whose first member is `set_shape`
  // (null: a new set): valid, no PipeFusion, no step cache, and the set's
  // generation size and max_sequence_length. INVALID_ARGUMENT
  // (FAILED_PRECONDITION for PipeFusion) saying why. Local.
  absl::Status CheckJoinable(const GenerationRequest& r, const GenerationRequest* set_shape) const;
  // running_set.cc.
  absl::Status RunSet(SetDriver& driver);
};


}  // namespace ditserve::worker::pipelines
