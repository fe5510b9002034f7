#pragma once

// What the planner's cost model needs to know of a Diffusion Transformer:
// its layers as groups of identical blocks (weights per token, attention
// kind), its widths, its text length, its VAE and its size in bytes.
// Torch-free: built from a diffusers directory's config files or from a
// named preset of a published model (no weights are read).

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/denoising_schedule.h"
#include "core/generation_plan.h"

namespace ditserve::planner {

// A run of identical transformer blocks.
struct LayerGroup {
  std::string name;  // "double", "single", "joint", "block", "skip"
  int count = 0;
  // Weight elements every image token, and every text token, is multiplied
  // by in one block (a GEMM's FLOPs are 2 × tokens × this). For a
  // cross-attention block the text figure is the K/V projection of the text
  // states (computed once per step on every rank that holds the block).
  double params_per_image_token = 0;
  double params_per_text_token = 0;
  // The self-attention's sequence: image and text tokens together (MMDiT:
  // Flux, SD3) or image tokens only (cross-attention DiTs).
  bool joint_text = false;
  bool self_attention = true;
  bool linear_attention = false;  // O(S) attention (SANA)
  bool cross_attention = false;   // image queries against the text tokens
  // hidden-wide element-wise passes (reads + writes) per token: norms,
  // modulation, activations, residuals; memory traffic, not FLOPs.
  double elementwise_passes = 24;
  // Kernel launches per block (eager execution: a fixed cost per launch).
  int kernels = 30;
};

// The decoder of an AutoencoderKL (or DC-AE), for its FLOPs and largest map.
struct VaeShape {
  int latent_channels = 16;
  std::vector<int> block_out_channels = {128, 256, 512, 512};
  int layers_per_block = 2;  // resnets per up block: layers_per_block + 1
  int downscale = 8;         // pixels per latent row
};

struct ModelShape {
  std::string name;
  std::string family;  // "flux", "sd3", "sana", "hunyuandit", "pixart"
  int hidden = 0;      // attention width: heads × head_dim
  int heads = 0;
  int head_dim = 0;
  int patch_size = 2;
  int output_width = 64;  // transformer output per image token (channels × patch²)
  int text_tokens = 0;    // the text sequence at the family's default length
  int text_width = 4096;  // width of the text states the transformer takes
  int context_width = 0;  // of its text stream between blocks (0: hidden)
  int pooled_width = 0;   // width of the pooled text embedding (0: none)
  bool default_cfg = false;  // the family runs classifier-free guidance by default
  double transformer_params = 0;   // weight elements of the transformer
  double text_encoder_params = 0;  // of all text encoders together
  VaeShape vae;
  std::vector<LayerGroup> layers;
  // A discrete-time scheduler's config (PixArt's directory), whose solver
  // history (float32, one image's output per kept step) the engine
  // assembles with the latents; none for flow matching.
  std::optional<core::DiscreteSchedulerConfig> scheduler;
  // HunyuanDiT's long skips (core/long_skips.h): a PipeFusion boundary
  // carries the stack's activations with each patch.
  bool long_skips = false;

  int num_blocks() const;
  int pixels_per_token() const { return vae.downscale * patch_size; }
  // Skip activations (each an image token's hidden state) that cross into
  // block `block`: 0 without long skips.
  int SkipsBefore(int block) const;
  // Image tokens of a height × width image (rows × columns of tokens).
  long long image_tokens(int height, int width) const;
};

// The named presets: flux-dev, flux-schnell, sd3-medium, sd3.5-medium,
// sd3.5-large, sana-1600m, hunyuandit, pixart-sigma (configs of the
// published checkpoints). INVALID_ARGUMENT lists the names.
absl::StatusOr<ModelShape> PresetModel(const std::string& name);
std::vector<std::string> PresetNames();

// A diffusers directory of a family the engine serves (Flux or SD3): reads
// model_index.json, transformer/config.json and vae/config.json; the text
// length is the family's default (Flux 512, SD3 77 + 256) unless
// `max_sequence_length` > 0 sets the T5 part. NOT_FOUND / INVALID_ARGUMENT
// name the file.
absl::StatusOr<ModelShape> ModelFromDirectory(const std::string& model_dir, int max_sequence_length = 0);
// The same from a geometry the caller has read already (its transformer
// config text; the VAE and text-encoder configs are read from model_dir).
absl::StatusOr<ModelShape> ModelFromGeometry(const core::ModelGeometry& geometry, const std::string& model_dir,
                                             int max_sequence_length = 0);

}  // namespace ditserve::planner
