#pragma once

// The arithmetic of a parallel generation, torch-free so that the launcher
// can reject a bad configuration before it starts any rank: which blocks
// each PipeFusion stage holds, which image tokens each rank computes, and
// the checks that a model, a request and a ParallelConfig fit together.
//
// Token layout: the packed latents are (height/16) × (width/16) tokens for
// FLUX.1 (rows × columns, row-major). PipeFusion cuts the rows into
// num_pipeline_patch equal bands (patches); sequence parallelism (SP =
// ulysses × ring) cuts each patch's rows into SP equal bands, SP rank s =
// ulysses_rank + U·ring_rank taking band s. Without PipeFusion there is one
// patch: the whole image.

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
// num_pipeline_patch × ulysses × ring; --use_cfg_parallel needs true CFG
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
// The tokens of `patch` (of `patches`) that SP rank `sp_rank` (of `sp_size`)
// computes, for an image of `rows` × `cols` tokens. Rows must divide by
// patches × sp_size.
TokenRange LocalTokens(int64_t rows, int64_t cols, int patches, int patch, int sp_size, int sp_rank);
// The whole of `patch`.
TokenRange PatchTokens(int64_t rows, int64_t cols, int patches, int patch);

// The requests of a batch that data-parallel replica `replica` (of
// `replicas`) generates: i ≡ replica (mod replicas), in order.
std::vector<int> ReplicaRequests(int num_requests, int replicas, int replica);

}  // namespace ditserve::worker
