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
// Without PipeFusion there is one patch: the whole image. When the rows do
// not divide by SP, the image is padded at the bottom with whole rows up to
// PaddedRows (as xDiT pads Flux's sequence); the padding tokens are masked
// out of every attention's keys and dropped from the result, so the result
// is the unpadded one.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "parallel/parallel_config.h"

namespace ditserve::core {

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

// How a family's request fields drive classifier-free guidance (CFG): Flux
// runs it with true_cfg_scale (its guidance_scale feeds the guidance
// embedding), SD3 with guidance_scale (classic CFG).
enum class CfgScaleField { kTrueCfgScale, kGuidanceScale };

// What the plan needs of a model directory, torch-free: its family and the
// few config values that the launcher and the frontend check requests with.
struct ModelGeometry {
  int num_attention_heads = 0;
  int num_blocks = 0;        // the transformer blocks in running order
  int size_multiple = 16;    // pixels per token row: 2 × the VAE's downscale
  int default_size = 1024;   // vae sample_size
  std::string family = "flux";  // GetInfo.model_family: "flux", "sd3", "pixart" or "hunyuandit"
  // transformer/config.json's text, verbatim: read once per load, here;
  // the family parses its own fields from it (and GetInfo reports it).
  std::string transformer_config_json;
  bool guidance_embeds = false;  // the transformer takes a guidance value
  double default_guidance_scale = 3.5;  // a request's guidance_scale when unset
  CfgScaleField cfg_scale = CfgScaleField::kTrueCfgScale;
  // Token rows and columns the model can place (SD3's pos_embed_max_size);
  // 0: no limit.
  int max_token_rows = 0;
  // The largest max_sequence_length a request may ask for (PixArt: its
  // tokenizer's model_max_length; 512 elsewhere).
  int max_sequence_length = 512;
  // PixArt's resolution binning (core/aspect_ratio_bins.h): the transformer
  // sample_size whose aspect-ratio table applies (32, 64, 128 or 256);
  // 0: none (generation at the requested size).
  int aspect_ratio_bins = 0;
};

// The size a request of height × width is generated at: the closest
// aspect-ratio bin when the model bins (the decoded image is resized back
// to height × width), else height × width.
struct ImageSize {
  int height = 0;
  int width = 0;
};
ImageSize GenerationSize(const ModelGeometry& model, int height, int width);

// The family of a diffusers directory from model_index.json's _class_name:
// "flux" (FluxPipeline) or "sd3" (StableDiffusion3Pipeline).
// INVALID_ARGUMENT naming an unknown class and the supported ones.
absl::StatusOr<std::string> ReadModelFamily(const std::string& model_dir);

// Reads model_index.json, transformer/config.json and vae/config.json of a
// diffusers directory of a supported family (no weights). NOT_FOUND /
// INVALID_ARGUMENT name the file.
absl::StatusOr<ModelGeometry> ReadModelGeometry(const std::string& model_dir);

// A request's guidance as its family runs it.
struct ResolvedGuidance {
  bool cfg = false;         // an unconditional pass per step (the negative prompt, "" by default)
  double cfg_scale = 1.0;   // v = uncond + cfg_scale · (cond − uncond)
  bool embedded = false;    // the transformer's guidance embedding is fed
  double embedded_scale = 0;
  bool operator==(const ResolvedGuidance&) const = default;
};
// `guidance_scale` < 0 means unset (the family's default). CFG runs when its
// scale is > 1, with or without a negative prompt (an empty one is the
// empty prompt, as diffusers encodes it).
ResolvedGuidance ResolveGuidance(const ModelGeometry& model, double guidance_scale, double true_cfg_scale);
// The guidance fields a family accepts: true_cfg_scale >= 1, and exactly 1
// (unset) for families whose CFG scale is guidance_scale (SD3).
// INVALID_ARGUMENT naming the field.
absl::Status ValidateGuidance(const ModelGeometry& model, double guidance_scale, double true_cfg_scale);

// Model-level checks (at load): heads divisible by --ulysses_degree, no
// more stages than blocks, --attn_layer_num_for_pp consistent, patches and
// warmup in range. INVALID_ARGUMENT naming the flag.
absl::Status ValidateParallelModel(const parallel::ParallelConfig& config, const PipeFusionOptions& pipefusion,
                                   const ModelGeometry& model);

// Request-level checks: height and width multiples of size_multiple; at
// the generation size (GenerationSize), the token rows (padded to
// ulysses × ring) give every pipeline patch at least one band per SP rank;
// the token grid fits the model's max_token_rows; --use_cfg_parallel
// needs CFG (`cfg`, see ResolveGuidance). INVALID_ARGUMENT naming the flag
// or field.
absl::Status ValidateParallelRequest(const parallel::ParallelConfig& config, const PipeFusionOptions& pipefusion,
                                     const ModelGeometry& model, int height, int width, bool cfg);

// Half-open block range [first, end) of PipeFusion stage `stage`.
struct BlockRange {
  int first = 0;
  int end = 0;
};
// The stage's blocks (ValidateParallelModel must have passed).
BlockRange StageBlocks(const PipeFusionOptions& pipefusion, int num_blocks, int stages, int stage);

// `rows` rounded up to a multiple of `sp_size`: the rows a sequence-
// parallel generation computes (the last ones padding).
int64_t PaddedRows(int64_t rows, int sp_size);

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
  // `rows` (padded: PaddedRows) must divide by `sp_size` and give at least
  // `patches` bands (ValidateParallelRequest checks that). `patches` 1 is the whole image.
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

}  // namespace ditserve::core
