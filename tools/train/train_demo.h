#pragma once

// ditserve-train-demo's work: makes the project's own small text-to-image
// model. It writes the text side of a Flux directory (tokenizers built from
// the caption vocabulary, tiny CLIP and T5 encoders with seeded random
// weights, frozen), then trains, on shape scenes it draws itself:
//   1. the VAE (reconstruction + KL) at 64×64,
//   2. the Flux transformer (rectified flow on the VAE's latents) at 64×64,
//   3. the transformer again at 128×128 (fine-tune),
// and writes the trained VAE, the transformer's EMA weights, the scheduler
// config, model_index.json and training.json (command, seed, steps and time
// of each phase). The result is a normal diffusers FluxPipeline directory.
//
// With init_from, training continues from a model this tool wrote: its text
// components and VAE are copied unchanged (the transformer's latent space
// and caption embeddings stay those it learnt), the VAE phase is skipped,
// and phases 2 and 3 start from its transformer weights (either may then
// have 0 steps).

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/train/phase_runner.h"

namespace ditserve::tools::train {

struct TrainDemoOptions {
  std::string out_dir;
  // Empty, or a Flux directory written by this tool (not out_dir itself).
  std::string init_from;
  uint64_t seed = 0;
  // > 0: the phases share this many minutes (35% VAE, 38% transformer at
  // 64×64, 27% fine-tune at 128×128), each sized by timing its first steps;
  // otherwise the step counts below are used as given. Not with init_from.
  double minutes = 0;
  int vae_steps = 1500;
  int flux_steps = 3000;
  int finetune_steps = 800;
  int vae_batch = 8;
  int flux_batch = 32;
  int finetune_batch = 8;
  // Alternate 64×64 batches of 2 × finetune_batch with the 128×128 ones.
  bool finetune_mix_64 = true;
  // T5 tokens of the training captions; written as tokenizer_2's
  // model_max_length, which pipelines use by default.
  int max_sequence_length = 32;
  double vae_lr = 2e-3;
  double flux_lr = 1e-3;
  double finetune_lr = 3e-4;
  int log_every = 50;
  std::string dtype = "bf16";  // f32 | bf16: the written weights
  std::string command_line;    // recorded in training.json
};

struct TrainDemoReport {
  std::vector<PhaseReport> phases;
  double vae_reconstruction_mse_64 = 0;
  double vae_reconstruction_mse_128 = 0;
  double total_seconds = 0;
};

// INVALID_ARGUMENT for bad options; errors of writing or training otherwise.
// Progress lines go to `out`.
absl::StatusOr<TrainDemoReport> TrainDemo(const TrainDemoOptions& options, std::FILE* out);

}  // namespace ditserve::tools::train
