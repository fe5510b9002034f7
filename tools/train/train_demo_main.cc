// ditserve-train-demo: trains the project's small text-to-image model (shape
// scenes) and writes it as a diffusers Flux directory.
//   ditserve-train-demo --out models/flux-shapes --minutes 25 --seed 0

#include <ATen/Parallel.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_join.h"
#include "tools/train/progress.h"
#include "tools/train/train_demo.h"
#include "util/malloc_tuning.h"

ABSL_FLAG(std::string, out, "", "Directory to write (a diffusers FluxPipeline directory)");
ABSL_FLAG(std::string, init_from, "",
          "Continue from a model this tool wrote: copy its text encoders and VAE, skip the VAE phase and start the "
          "transformer phases (each may be 0 steps) from its weights");
ABSL_FLAG(double, minutes, 0, "Time budget for all phases (0: use the step counts as given)");
ABSL_FLAG(uint64_t, seed, 0, "Seed of every random draw (weights, scenes, noise)");
ABSL_FLAG(int, vae_steps, 1500, "VAE steps (64x64)");
ABSL_FLAG(int, flux_steps, 3000, "Transformer steps at 64x64");
ABSL_FLAG(int, finetune_steps, 800, "Transformer steps at 128x128");
ABSL_FLAG(int, vae_batch, 8, "VAE batch");
ABSL_FLAG(int, flux_batch, 32, "Transformer batch at 64x64");
ABSL_FLAG(int, finetune_batch, 8, "Transformer batch at 128x128");
ABSL_FLAG(bool, finetune_mix_64, true,
          "Alternate 64x64 batches (twice --finetune_batch) with the 128x128 ones in the fine-tune, so the "
          "model keeps the small size");
ABSL_FLAG(double, vae_lr, 2e-3, "VAE peak learning rate");
ABSL_FLAG(double, flux_lr, 1e-3, "Transformer peak learning rate");
ABSL_FLAG(double, finetune_lr, 3e-4, "Fine-tune peak learning rate");
ABSL_FLAG(int, max_sequence_length, 32, "T5 tokens per caption in training");
ABSL_FLAG(int, log_every, 50, "Steps between progress lines");
ABSL_FLAG(std::string, dtype, "bf16", "Written weights: f32 or bf16");
ABSL_FLAG(int, threads, 0, "CPU threads (0: LibTorch's default)");

namespace {
// As ditserve-generate: skip exit handlers (libsentencepiece's crash).
[[noreturn]] void Exit(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(code);
}
}  // namespace

int main(int argc, char** argv) {
  // Tensor work reuses freed memory instead of page-faulting it back in.
  ditserve::util::KeepFreedMemoryForReuse();
  absl::SetProgramUsageMessage("Trains the demo text-to-image model (coloured shapes) and writes a Flux directory.\n"
                               "  ditserve-train-demo --out DIR [--minutes N] [--seed S] [--init_from MODEL_DIR]");
  const std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) {
    std::fprintf(stderr, "ditserve-train-demo: unexpected argument '%s'\n", rest[1]);
    Exit(2);
  }
  if (absl::GetFlag(FLAGS_threads) < 0) {
    std::fprintf(stderr, "ditserve-train-demo: --threads must be >= 0\n");
    Exit(2);
  }
  if (absl::GetFlag(FLAGS_threads) > 0) at::set_num_threads(absl::GetFlag(FLAGS_threads));
  ditserve::tools::train::TrainDemoOptions o;
  o.out_dir = absl::GetFlag(FLAGS_out);
  o.init_from = absl::GetFlag(FLAGS_init_from);
  o.minutes = absl::GetFlag(FLAGS_minutes);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.vae_steps = absl::GetFlag(FLAGS_vae_steps);
  o.flux_steps = absl::GetFlag(FLAGS_flux_steps);
  o.finetune_steps = absl::GetFlag(FLAGS_finetune_steps);
  o.vae_batch = absl::GetFlag(FLAGS_vae_batch);
  o.flux_batch = absl::GetFlag(FLAGS_flux_batch);
  o.finetune_batch = absl::GetFlag(FLAGS_finetune_batch);
  o.finetune_mix_64 = absl::GetFlag(FLAGS_finetune_mix_64);
  o.vae_lr = absl::GetFlag(FLAGS_vae_lr);
  o.flux_lr = absl::GetFlag(FLAGS_flux_lr);
  o.finetune_lr = absl::GetFlag(FLAGS_finetune_lr);
  o.max_sequence_length = absl::GetFlag(FLAGS_max_sequence_length);
  o.log_every = absl::GetFlag(FLAGS_log_every);
  o.dtype = absl::GetFlag(FLAGS_dtype);
  o.command_line = absl::StrJoin(argv, argv + argc, " ");
  auto report = ditserve::tools::train::TrainDemo(o, stdout);
  if (!report.ok()) {
    std::fprintf(stderr, "ditserve-train-demo: %s\n", std::string(report.status().message()).c_str());
    Exit(report.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1);
  }
  std::printf("wrote %s in %s:", o.out_dir.c_str(), ditserve::tools::train::FormatDuration(report->total_seconds).c_str());
  for (const auto& p : report->phases) {
    std::printf(" %s %d steps %s (loss %.4f -> %.4f);", p.name.c_str(), p.steps,
                ditserve::tools::train::FormatDuration(p.seconds).c_str(), p.first_loss, p.last_loss);
  }
  std::printf("\n");
  Exit(0);
}
