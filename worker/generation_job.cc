#include "worker/generation_job.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/image/png_encoder.h"
#include "core/join_schedule.h"
#include "worker/pipelines/parallel_pipeline.h"
#include "worker/profile_trace.h"
#include "worker/scheduled_set.h"
#include "worker/weights/safetensors_writer.h"

namespace ditserve::worker {
namespace {

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

absl::Status RunGenerationJob(const core::WorkerOptions& o, parallel::ProcessGroups& groups, c10::Device device) {
  const bool leader = groups.world().rank() == 0;
  const auto start = std::chrono::steady_clock::now();
  const at::ScalarType dtype =
      core::ResolvedDtype(o.generation, device.is_cuda()) == "bf16" ? at::kBFloat16 : at::kFloat;
  auto pipe = pipelines::ParallelPipeline::Load(o.generation.model, dtype, device, groups, o.pipefusion,
                                                o.generation.vae);
  if (!pipe.ok()) return pipe.status();
  if (leader) {
    std::printf("loaded %s on %d ranks (%s) in %.2f s\n", o.generation.model.c_str(), groups.world().world_size(),
                groups.world().config().ToString().c_str(), Since(start));
  }
  std::vector<pipelines::GenerationRequest> requests;
  for (size_t i = 0; i < o.prompts.size(); ++i) {
    requests.push_back(
        pipelines::MakeGenerationRequest(o.generation, o.prompts[i], o.generation.seed + i, (*pipe)->default_size()));
  }
  std::unique_ptr<ProfileTrace> trace;
  if (!o.profile_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(o.profile_dir, ec);
    if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", o.profile_dir, ": ", ec.message()));
    auto started = ProfileTrace::Start(device.is_cuda());
    if (!started.ok()) return started.status();
    trace = *std::move(started);
  }
  const auto gen_start = std::chrono::steady_clock::now();
  auto last = gen_start;
  // Per prompt: its result, or why it has none (a scheduled cancel).
  std::vector<absl::StatusOr<pipelines::GenerationResult>> outcomes;
  if (!o.join_schedule.empty()) {
    auto schedule = core::ParseJoinSchedule(o.join_schedule, static_cast<int>(requests.size()),
                                            o.generation.num_inference_steps);
    if (!schedule.ok()) return schedule.status();
    ScheduledSet set(requests, *std::move(schedule), (*pipe)->cfg_scale_field(), leader);
    if (absl::Status s = (*pipe)->RunSet(set); !s.ok()) return s;
    requests = set.requests();
    outcomes = set.results();
    for (const auto& r : outcomes) {
      // A refused join is the job's error (a cancel is the schedule's).
      if (!r.ok() && r.status().code() != absl::StatusCode::kCancelled) return r.status();
    }
  } else {
    auto results = (*pipe)->Generate(requests, [&](int step, int total) {
      if (leader) {
        std::printf("step %d/%d  %.3f s\n", step, total, Since(last));
        std::fflush(stdout);
      }
      last = std::chrono::steady_clock::now();
      return true;
    });
    if (!results.ok()) return results.status();
    for (pipelines::GenerationResult& r : *results) outcomes.push_back(std::move(r));
  }
  const double generation_s = Since(gen_start);
  if (trace) {
    const std::string path = absl::StrFormat("%s/rank-%d.trace.json", o.profile_dir, groups.world().rank());
    if (absl::Status s = trace->StopAndSave(path); !s.ok()) return s;
    std::printf("rank %d wrote the trace %s\n", groups.world().rank(), path.c_str());
  }
  // Every rank reports its traffic (rank order is not guaranteed on a
  // shared terminal; each line names its rank).
  for (const auto& [method, e] : (*pipe)->comm_stats().by_method) {
    if (!o.comm_stats) break;
    std::printf("rank %d comm %-18s bytes_sent %lld  calls %lld  seconds %.4f  bytes_per_step %lld  wait_seconds %.4f\n",
                groups.world().rank(), method.c_str(), static_cast<long long>(e.bytes_sent),
                static_cast<long long>(e.calls), e.seconds,
                static_cast<long long>(e.bytes_sent / std::max(1, o.generation.num_inference_steps)), e.wait_seconds);
  }
  // Every rank that decoded reports its largest VAE activation (one line
  // each, naming its rank).
  if (const int64_t peak = (*pipe)->last_timings().vae_peak_activation_bytes; peak > 0) {
    std::printf("rank %d vae peak activation %lld bytes (%.2f MiB)\n", groups.world().rank(),
                static_cast<long long>(peak), static_cast<double>(peak) / (1 << 20));
  }
  if (!leader) return absl::OkStatus();
  std::error_code ec;
  std::filesystem::create_directories(o.output_dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", o.output_dir, ": ", ec.message()));
  for (size_t i = 0; i < outcomes.size(); ++i) {
    if (!outcomes[i].ok()) {
      std::printf("image-%03zu: %s\n", i, outcomes[i].status().ToString().c_str());
      continue;
    }
    const pipelines::GenerationResult& result = *outcomes[i];
    const at::Tensor img = result.image.contiguous();
    auto png = core::image::EncodePng(img.data_ptr<uint8_t>(), static_cast<int>(img.size(1)), static_cast<int>(img.size(0)));
    if (!png.ok()) return png.status();
    const std::string stem = absl::StrFormat("%s/image-%03d", o.output_dir, i);
    if (absl::Status s = core::image::WriteFile(stem + ".png", *png); !s.ok()) return s;
    if (o.save_latents) {
      if (absl::Status s = weights::WriteSafetensors(stem + ".latents.safetensors", {{"latents", result.latents}});
          !s.ok()) {
        return s;
      }
    }
    std::printf("wrote %s.png (%dx%d, seed %llu): %s\n", stem.c_str(), requests[i].width, requests[i].height,
                static_cast<unsigned long long>(requests[i].seed), requests[i].prompt.c_str());
    if (requests[i].cache.method != core::StepCacheMethod::kNone) {
      // One character per step: 1 computed, 0 cached.
      std::string steps;
      for (bool computed : result.step_computed) steps += computed ? '1' : '0';
      if (absl::Status s = core::image::WriteFile(stem + ".steps", steps); !s.ok()) return s;
      std::printf("  step cache %s (threshold %g): %d of %zu steps cached: %s\n",
                  std::string(core::StepCacheMethodName(requests[i].cache.method)).c_str(),
                  requests[i].cache.threshold, result.cached_steps(), steps.size(), steps.c_str());
    }
  }
  const pipelines::GenerateTimings& t = (*pipe)->last_timings();
  if (o.join_schedule.empty()) {
    std::printf("generated %zu images in %.3f s: text encoding %.3f s, denoising %.3f s, vae %.3f s\n",
                outcomes.size(), generation_s, t.text_encoding_s, t.denoising_s, t.vae_s);
  } else {
    std::printf("ran a set of %zu images in %.3f s\n", outcomes.size(), generation_s);
  }
  return absl::OkStatus();
}

}  // namespace ditserve::worker
