// ditserve-generate: one image from a Flux diffusers directory, in this
// process (no gang, no server).
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
#include "util/malloc_tuning.h"
#include "core/generation_flags.h"
#include "core/generation_plan.h"
#include "core/image/png_encoder.h"
#include "worker/pipelines/flux_pipeline.h"
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
  absl::SetProgramUsageMessage("Generates one image with a Flux model directory.\n"
                               "  ditserve-generate --model DIR --prompt TEXT --output FILE.png");
  absl::ParseCommandLine(argc, argv);
  const ditserve::core::GenerationFlags g = ditserve::core::GenerationFlagsFromCommandLine();
  const std::string& model = g.model;
  const std::string output = absl::GetFlag(FLAGS_output);
  if (model.empty()) return Fail(2, "--model is required");
  if (output.empty()) return Fail(2, "--output is required");
  if (absl::Status s = ditserve::core::ValidateDtype(g); !s.ok()) return Fail(2, std::string(s.message()));
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
  auto pipe = ditserve::worker::pipelines::FluxPipeline::Load(model, dtype_name == "bf16" ? at::kBFloat16 : at::kFloat,
                                                              device);
  if (!pipe.ok()) {
    // Other families run on the gang's pipeline: a world of one is the
    // single-process run.
    const auto family = ditserve::core::ReadModelFamily(model);
    if (family.ok() && *family != "flux") {
      return Fail(2, absl::StrCat(model, " is a ", *family, " model; ditserve-generate runs Flux only: use "
                                  "ditserve-run --nproc 1 --model ", model, " --output_dir DIR"));
    }
    return Fail(1, std::string(pipe.status().message()));
  }
  std::printf("loaded %s in %.2f s\n", model.c_str(), Since(start));

  const ditserve::worker::pipelines::GenerationRequest r = ditserve::worker::pipelines::MakeGenerationRequest(
      g, ditserve::core::PromptFlag(), g.seed, (*pipe)->default_size());
  std::unique_ptr<ditserve::worker::ProfileTrace> trace;
  const std::string profile = absl::GetFlag(FLAGS_profile);
  if (!profile.empty()) {
    auto started = ditserve::worker::ProfileTrace::Start(device.is_cuda());
    if (!started.ok()) return Fail(1, std::string(started.status().message()));
    trace = *std::move(started);
  }
  const auto gen_start = std::chrono::steady_clock::now();
  auto last = gen_start;
  auto result = (*pipe)->Generate(r, [&](int step, int total) {
    std::printf("step %d/%d  %.3f s\n", step, total, Since(last));
    std::fflush(stdout);
    last = std::chrono::steady_clock::now();
    return true;
  });
  if (!result.ok()) return Fail(result.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1,
                                std::string(result.status().message()));
  if (trace) {
    if (absl::Status s = trace->StopAndSave(profile); !s.ok()) return Fail(1, std::string(s.message()));
    std::printf("wrote the trace %s\n", profile.c_str());
  }
  const at::Tensor img = result->image.contiguous();
  auto png = ditserve::core::image::EncodePng(img.data_ptr<uint8_t>(), static_cast<int>(img.size(1)),
                                                static_cast<int>(img.size(0)));
  if (!png.ok()) return Fail(1, std::string(png.status().message()));
  if (absl::Status s = ditserve::core::image::WriteFile(output, *png); !s.ok()) return Fail(1, std::string(s.message()));
  std::printf("wrote %s (%dx%d, seed %llu) in %.2f s\n", output.c_str(), r.width, r.height,
              static_cast<unsigned long long>(r.seed), Since(gen_start));
  Exit(0);
}
