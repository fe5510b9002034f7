#pragma once

// The arithmetic of a parallel generation, torch-free so that the launcher
// can reject a bad configuration before it starts any rank: which blocks
// each PipeFusion stage holds, which image tokens each rank computes, and
// the checks that a model, a request and a ParallelConfig fit together.
//
// Token layout: the packed latents are (height/16) × (width/16) tokens for
// FLUX.1 (rows × columns, row-major). PipeFusion cuts the rows into
// num_pipeline_patch bands (patches) that carry equal work: patch 0 also
// carries the text tokens, so it gets fewer image rows (PatchPlan).
// Sequence parallelism (SP = ulysses × ring) cuts each patch's rows into SP
// equal bands, SP rank s = ulysses_rank + U·ring_rank taking band s.
// Without PipeFusion there is one patch: the whole image.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "parallel/parallel_config.h"

namespace ditserve::worker {

struct PipeFusionOptions {
  int num_pipeline_patch = 0;  // 0: the PipeFusion degree
  int warmup_steps = 1;
  // Blocks (double-stream, then single-stream) per stage; empty: as even as
  // possible, earlier stages taking the remainder.
  std::vector<int> attn_layer_num_for_pp;

  int patches(const parallel::ParallelConfig& config) const {
    return num_pipeline_patch > 0 ? num_pipeline_patch : config.pipefusion_parallel_degree;
  }
};

// What the plan needs of a model directory.
struct ModelGeometry {
  int num_attention_heads = 0;
  int num_blocks = 0;        // num_layers + num_single_layers
  int size_multiple = 16;    // pixels per token row: 2 × the VAE's downscale
  int default_size = 1024;   // vae sample_size
};

// Reads transformer/config.json and vae/config.json of a diffusers Flux
// directory (no weights). NOT_FOUND / INVALID_ARGUMENT name the file.
absl::StatusOr<ModelGeometry> ReadModelGeometry(const std::string& model_dir);

// Model-level checks (at load): heads divisible by --ulysses_degree, no
// more stages than blocks, --attn_layer_num_for_pp consistent, patches and
// warmup in range. INVALID_ARGUMENT naming the flag.
absl::Status ValidateParallelModel(const parallel::ParallelConfig& config, const PipeFusionOptions& pipefusion,
                                   const ModelGeometry& model);

// Request-level checks: the token rows (height / size_multiple) divide by
// ulysses × ring and give every pipeline patch at least one band per SP
// rank; --use_cfg_parallel needs true CFG
// (a negative prompt and true_cfg_scale > 1). INVALID_ARGUMENT naming the
// flag or field.
absl::Status ValidateParallelRequest(const parallel::ParallelConfig& config, const PipeFusionOptions& pipefusion,
                                     const ModelGeometry& model, int height, int width, bool true_cfg);

// Half-open block range [first, end) of PipeFusion stage `stage`.
struct BlockRange {
  int first = 0;
  int end = 0;
};
// The stage's blocks (ValidateParallelModel must have passed).
BlockRange StageBlocks(const PipeFusionOptions& pipefusion, int num_blocks, int stages, int stage);

// Half-open token range [begin, end) in the full image sequence.
struct TokenRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};
// Where each patch's image rows lie. A patch is a band of whole rows whose
// count divides by the SP degree (each SP rank takes an equal band of it).
// Every rank of a stage computes, per patch, its band of image tokens and —
// in patch 0 only — all `text_tokens` text tokens, and per-token work is the
// same for text and image (MMDiT blocks have equal widths; every query
// attends the same keys). So the plan balances text + image tokens per
// patch: patch 0 gets fewer rows, as few as one band per SP rank.
class PatchPlan {
 public:
  // `rows` must divide by `sp_size` and give at least `patches` bands
  // (ValidateParallelRequest checks that). `patches` 1 is the whole image.
  static PatchPlan Balanced(int64_t rows, int64_t cols, int patches, int sp_size, int64_t text_tokens);

  int patches() const { return static_cast<int>(first_row_.size()) - 1; }
  int64_t rows(int patch) const { return first_row_[patch + 1] - first_row_[patch]; }
  // The whole of `patch`.
  TokenRange Patch(int patch) const;
  // The tokens of `patch` that SP rank `sp_rank` computes.
  TokenRange Local(int patch, int sp_rank) const;

 private:
  int64_t cols_ = 0;
  int sp_size_ = 1;
  std::vector<int64_t> first_row_;  // patches() + 1 row boundaries
};

// The requests of a batch that data-parallel replica `replica` (of
// `replicas`) generates: i ≡ replica (mod replicas), in order.
std::vector<int> ReplicaRequests(int num_requests, int replicas, int replica);

}  // namespace ditserve::worker
