// ditserve-generate: one image from a diffusers directory, in this process
// (no gang, no server). Uncached Flux runs on FluxPipeline (the serial
// reference the gang is checked against); other families, and step
// caching, run on the gang's pipeline with a world of one.
//   ditserve-generate --model DIR --prompt "a red circle on a blue background" --output out.png

#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "core/generation_flags.h"
#include "core/model_root.h"
#include "core/generation_plan.h"
#include "core/image/png_encoder.h"
#include "parallel/process_groups.h"
#include "parallel/world_config.h"
#include "util/malloc_tuning.h"
#include "worker/families/flux/flux_pipeline.h"
#include "worker/pipelines/parallel_pipeline.h"
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include "worker/profile_trace.h"

ABSL_FLAG(int, threads, 0, "CPU threads (0: LibTorch's default)");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda[:N] (CUDA builds)");
ABSL_FLAG(std::string, output, "", "PNG file to write");
ABSL_FLAG(std::string, profile, "",
          "Chrome trace (JSON) of the generation's LibTorch operators and CUDA kernels to write "
          "(chrome://tracing, ui.perfetto.dev); recording slows the run");

namespace {
// Ends the process without running exit handlers: Debian's libsentencepiece
// (loaded for the T5 tokenizer) registers handlers that crash when they run
// in a process that also uses abseil's flags.
[[noreturn]] void Exit(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(code);
}
int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "ditserve-generate: %s\n", message.c_str());
  Exit(code);
}
double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
}  // namespace

int main(int argc, char** argv) {
  // Tensor work reuses freed memory instead of page-faulting it back in.
  ditserve::util::KeepFreedMemoryForReuse();
  absl::SetProgramUsageMessage("Generates one image with a Flux or SD3 model directory.\n"
                               "  ditserve-generate --model DIR --prompt TEXT --output FILE.png");
  absl::ParseCommandLine(argc, argv);
  const ditserve::core::GenerationFlags g = ditserve::core::GenerationFlagsFromCommandLine();
  const std::string& model = g.model;
  const std::string output = absl::GetFlag(FLAGS_output);
  if (model.empty()) return Fail(2, "--model is required");
  if (output.empty()) return Fail(2, "--output is required");
  if (absl::Status s = ditserve::core::ValidateDtype(g); !s.ok()) return Fail(2, std::string(s.message()));
  if (absl::Status s = ditserve::core::ConfineModel(model, g.model_root); !s.ok()) {
    return Fail(s.code() == absl::StatusCode::kPermissionDenied ? 2 : 1, std::string(s.message()));
  }
  if (absl::GetFlag(FLAGS_threads) < 0) return Fail(2, "--threads must be >= 0");
  if (absl::GetFlag(FLAGS_threads) > 0) at::set_num_threads(absl::GetFlag(FLAGS_threads));

  const auto start = std::chrono::steady_clock::now();
  c10::Device device(c10::kCPU);
  try {
    device = c10::Device(absl::GetFlag(FLAGS_device));
  } catch (const std::exception&) {
    return Fail(2, "--device must be cpu or cuda[:N], got '" + absl::GetFlag(FLAGS_device) + "'");
  }
  const std::string dtype_name = ditserve::core::ResolvedDtype(g, device.is_cuda());
  const at::ScalarType dtype = dtype_name == "bf16" ? at::kBFloat16 : at::kFloat;
  auto cache = ditserve::core::StepCacheFromFlags(g);
  if (!cache.ok()) return Fail(2, std::string(cache.status().message()));
  const auto family = ditserve::core::ReadModelFamily(model);
  if (!family.ok()) {
    return Fail(family.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1,
                std::string(family.status().message()));
  }
  // The VAE options run on the gang's pipeline (its decode plan and checks).
  const bool plain_decode = !g.vae.parallel && !g.vae.tiling && g.vae.memory_cap_mb == 0;
  const bool reference = *family == "flux" && cache->method == ditserve::core::StepCacheMethod::kNone && plain_decode;

  // The engine: FluxPipeline, or the gang's pipeline on a world of one.
  std::unique_ptr<ditserve::worker::families::FluxPipeline> flux;
  std::unique_ptr<ditserve::parallel::ProcessGroups> groups;
  std::unique_ptr<ditserve::worker::pipelines::ParallelPipeline> gang;
  int default_size = 0;
  if (reference) {
    auto pipe = ditserve::worker::families::FluxPipeline::Load(model, dtype, device);
    if (!pipe.ok()) return Fail(1, std::string(pipe.status().message()));
    flux = *std::move(pipe);
    default_size = flux->default_size();
  } else {
    auto world = ditserve::parallel::WorldConfig::Create(ditserve::parallel::ParallelConfig{}, 0);
    if (!world.ok()) return Fail(1, std::string(world.status().message()));
    ditserve::parallel::ProcessGroupsOptions options;
    options.data_backend = device.is_cuda() ? ditserve::parallel::Backend::kNccl : ditserve::parallel::Backend::kGloo;
    options.cuda_device = device.is_cuda() ? device.index() : 0;
    options.check_shapes = false;
    auto made = ditserve::parallel::ProcessGroups::Create(*world, c10::make_intrusive<c10d::HashStore>(), options);
    if (!made.ok()) return Fail(1, std::string(made.status().message()));
    groups = *std::move(made);
    auto pipe = ditserve::worker::pipelines::ParallelPipeline::Load(model, dtype, device, *groups, {}, g.vae);
    if (!pipe.ok()) return Fail(pipe.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1,
                                std::string(pipe.status().message()));
    gang = *std::move(pipe);
    default_size = gang->default_size();
  }
  std::printf("loaded %s in %.2f s\n", model.c_str(), Since(start));

  const ditserve::worker::pipelines::GenerationRequest r =
      ditserve::worker::pipelines::MakeGenerationRequest(g, ditserve::core::PromptFlag(), g.seed, default_size);
  std::unique_ptr<ditserve::worker::ProfileTrace> trace;
  const std::string profile = absl::GetFlag(FLAGS_profile);
  if (!profile.empty()) {
    auto started = ditserve::worker::ProfileTrace::Start(device.is_cuda());
    if (!started.ok()) return Fail(1, std::string(started.status().message()));
    trace = *std::move(started);
  }
  const auto gen_start = std::chrono::steady_clock::now();
  auto last = gen_start;
  const auto on_step = [&](int step, int total) {
    std::printf("step %d/%d  %.3f s\n", step, total, Since(last));
    std::fflush(stdout);
    last = std::chrono::steady_clock::now();
    return true;
  };
  absl::StatusOr<ditserve::worker::pipelines::GenerationResult> result;
  if (flux) {
    result = flux->Generate(r, on_step);
  } else if (absl::Status valid = gang->Validate(r); !valid.ok()) {
    result = valid;
  } else {
    auto results = gang->Generate({r}, on_step);
    if (results.ok()) {
      result = std::move(results->front());
    } else {
      result = results.status();
    }
  }
  if (!result.ok()) return Fail(result.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1,
                                std::string(result.status().message()));
  if (cache->method != ditserve::core::StepCacheMethod::kNone) {
    std::printf("step cache %s (threshold %g): %d of %d steps cached\n",
                std::string(ditserve::core::StepCacheMethodName(cache->method)).c_str(), cache->threshold,
                result->cached_steps(), r.num_inference_steps);
  }
  if (trace) {
    if (absl::Status s = trace->StopAndSave(profile); !s.ok()) return Fail(1, std::string(s.message()));
    std::printf("wrote the trace %s\n", profile.c_str());
  }
  const at::Tensor img = result->image.contiguous();
  auto png = ditserve::core::image::EncodePng(img.data_ptr<uint8_t>(), static_cast<int>(img.size(1)),
                                                static_cast<int>(img.size(0)));
  if (!png.ok()) return Fail(1, std::string(png.status().message()));
  if (absl::Status s = ditserve::core::image::WriteFile(output, *png); !s.ok()) return Fail(1, std::string(s.message()));
  if (gang && gang->last_timings().vae_peak_activation_bytes > 0) {
    const int64_t peak = gang->last_timings().vae_peak_activation_bytes;
    std::printf("vae peak activation %lld bytes (%.2f MiB)\n", static_cast<long long>(peak),
                static_cast<double>(peak) / (1 << 20));
  }
  std::printf("wrote %s (%dx%d, seed %llu) in %.2f s\n", output.c_str(), r.width, r.height,
              static_cast<unsigned long long>(r.seed), Since(gen_start));
  Exit(0);
}
