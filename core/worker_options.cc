#include "core/worker_options.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/join_schedule.h"
#include "core/model_root.h"

namespace ditserve::core {

std::vector<std::string> ToWorkerArgs(const WorkerOptions& o) {
  std::vector<std::string> args = {
      absl::StrCat("--rank=", o.rank),
      absl::StrCat("--world_size=", o.world_size),
      absl::StrCat("--local_rank=", o.local_rank),
      absl::StrCat("--local_world_size=", o.local_world_size),
      absl::StrCat("--master_addr=", o.master_addr),
      absl::StrCat("--master_port=", o.master_port),
      absl::StrCat("--rendezvous_timeout_s=", o.rendezvous_timeout_s),
      absl::StrCat("--collective_timeout_s=", o.collective_timeout_s),
      absl::StrCat("--device=", o.device),
      absl::StrCat("--gloo_socket_ifname=", o.gloo_socket_ifname),
      absl::StrCat("--shared_memory_transport=", o.shared_memory_transport ? "true" : "false"),
      absl::StrCat("--data_parallel_degree=", o.parallel.data_parallel_degree),
      absl::StrCat("--use_cfg_parallel=", o.parallel.use_cfg_parallel ? "true" : "false"),
      absl::StrCat("--pipefusion_parallel_degree=", o.parallel.pipefusion_parallel_degree),
      absl::StrCat("--ulysses_degree=", o.parallel.ulysses_degree),
      absl::StrCat("--ring_degree=", o.parallel.ring_degree),
      absl::StrCat("--selfcheck=", o.selfcheck ? "true" : "false"),
      absl::StrCat("--selfcheck_elements=", o.selfcheck_elements),
      absl::StrCat("--threads=", o.threads),
      absl::StrCat("--model=", o.generation.model),
      absl::StrCat("--negative_prompt=", o.generation.negative_prompt),
      absl::StrCat("--height=", o.generation.height),
      absl::StrCat("--width=", o.generation.width),
      absl::StrCat("--num_inference_steps=", o.generation.num_inference_steps),
      absl::StrCat("--guidance_scale=", o.generation.guidance_scale),
      absl::StrCat("--true_cfg_scale=", o.generation.true_cfg_scale),
      absl::StrCat("--seed=", o.generation.seed),
      absl::StrCat("--max_sequence_length=", o.generation.max_sequence_length),
      absl::StrCat("--dtype=", o.generation.dtype),
      absl::StrCat("--use_fbcache=", o.generation.use_fbcache ? "true" : "false"),
      absl::StrCat("--use_teacache=", o.generation.use_teacache ? "true" : "false"),
      absl::StrCat("--cache_threshold=", o.generation.cache_threshold),
      absl::StrCat("--model_root=", o.generation.model_root),
      absl::StrCat("--use_parallel_vae=", o.generation.vae.parallel ? "true" : "false"),
      absl::StrCat("--vae_tiling=", o.generation.vae.tiling ? "true" : "false"),
      absl::StrCat("--vae_tile_size=", o.generation.vae.tile_size),
      absl::StrCat("--vae_memory_cap_mb=", o.generation.vae.memory_cap_mb),
      absl::StrCat("--output_dir=", o.output_dir),
      absl::StrCat("--save_latents=", o.save_latents ? "true" : "false"),
      absl::StrCat("--comm_stats=", o.comm_stats ? "true" : "false"),
      absl::StrCat("--profile_dir=", o.profile_dir),
      absl::StrCat("--num_pipeline_patch=", o.pipefusion.num_pipeline_patch),
      absl::StrCat("--warmup_steps=", o.pipefusion.warmup_steps),
      absl::StrCat("--attn_layer_num_for_pp=", absl::StrJoin(o.pipefusion.attn_layer_num_for_pp, ",")),
      absl::StrCat("--control_address=", o.control_address),
      absl::StrCat("--join_schedule=", o.join_schedule),
  };
  for (const std::string& p : o.prompts) args.push_back(absl::StrCat("--prompt=", p));
  return args;
}

absl::Status ValidateGenerationJob(const WorkerOptions& o) {
  if (o.prompts.empty()) return absl::InvalidArgumentError("--prompt is required with --model (repeat it for several images)");
  if (o.prompts.size() > 1024) return absl::InvalidArgumentError(absl::StrCat("at most 1024 prompts, got ", o.prompts.size()));
  if (!o.join_schedule.empty()) {
    auto schedule = ParseJoinSchedule(o.join_schedule, static_cast<int>(o.prompts.size()),
                                      o.generation.num_inference_steps);
    if (!schedule.ok()) return schedule.status();
    if (o.generation.use_fbcache || o.generation.use_teacache) {
      return absl::InvalidArgumentError("--join_schedule runs without a step cache (drop --use_fbcache/--use_teacache)");
    }
  }
  if (o.output_dir.empty()) return absl::InvalidArgumentError("--output_dir is required with --model");
  if (absl::Status s = ValidateDtype(o.generation); !s.ok()) return s;
  if (auto cache = StepCacheFromFlags(o.generation); !cache.ok()) return cache.status();
  if (o.threads < 0 || o.threads > 1024) return absl::InvalidArgumentError(absl::StrCat("--threads must be in [0, 1024], got ", o.threads));
  if (o.generation.num_inference_steps < 1 || o.generation.num_inference_steps > 1000) {
    return absl::InvalidArgumentError(absl::StrCat("--num_inference_steps must be in [1, 1000], got ", o.generation.num_inference_steps));
  }
  if (o.generation.max_sequence_length < 0 || o.generation.max_sequence_length > 512) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_sequence_length must be in [0, 512] (0: the model's default), got ", o.generation.max_sequence_length));
  }
  if (o.generation.true_cfg_scale < 1.0) return absl::InvalidArgumentError(absl::StrCat("--true_cfg_scale must be >= 1, got ", o.generation.true_cfg_scale));
  if (absl::Status s = ConfineModel(o.generation.model, o.generation.model_root); !s.ok()) return s;
  auto geometry = ReadModelGeometry(o.generation.model);
  if (!geometry.ok()) return geometry.status();
  if (absl::Status s = ValidateGuidance(*geometry, o.generation.guidance_scale, o.generation.true_cfg_scale); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--", s.message()));
  }
  if (o.generation.max_sequence_length > geometry->max_sequence_length) {
    return absl::InvalidArgumentError(absl::StrCat("--max_sequence_length must be in [0, ", geometry->max_sequence_length,
                                                   "] for this model (its tokenizer's model_max_length), got ",
                                                   o.generation.max_sequence_length));
  }
  if (absl::Status s = ValidateParallelModel(o.parallel, o.pipefusion, *geometry); !s.ok()) return s;
  if (absl::Status s = ValidateVaeDecodeOptions(o.generation.vae, *geometry); !s.ok()) return s;
  const bool cfg = ResolveGuidance(*geometry, o.generation.guidance_scale, o.generation.true_cfg_scale).cfg;
  return ValidateParallelRequest(o.parallel, o.pipefusion, *geometry, o.generation.height == 0 ? geometry->default_size : o.generation.height,
                                 o.generation.width == 0 ? geometry->default_size : o.generation.width, cfg);
}

absl::Status ValidateServing(const WorkerOptions& o) {
  if (!o.prompts.empty() || !o.output_dir.empty() || !o.profile_dir.empty() || !o.join_schedule.empty()) {
    return absl::InvalidArgumentError(
        "--prompt, --output_dir, --profile_dir and --join_schedule are for a generation job, not with "
        "--control_address (serving)");
  }
  if (o.generation.use_fbcache || o.generation.use_teacache || o.generation.cache_threshold >= 0) {
    return absl::InvalidArgumentError(
        "--use_fbcache, --use_teacache and --cache_threshold are for a generation job; a served request picks its "
        "step cache (ditserve-server --default_step_cache and the --default_/--max_*_threshold flags)");
  }
  if (absl::Status s = ValidateDtype(o.generation); !s.ok()) return s;
  if (o.threads < 0 || o.threads > 1024) {
    return absl::InvalidArgumentError(absl::StrCat("--threads must be in [0, 1024], got ", o.threads));
  }
  if (absl::Status s = ConfineModel(o.generation.model, o.generation.model_root); !s.ok()) return s;
  auto geometry = ReadModelGeometry(o.generation.model);
  if (!geometry.ok()) return geometry.status();
  if (absl::Status s = ValidateVaeDecodeOptions(o.generation.vae, *geometry); !s.ok()) return s;
  return ValidateParallelModel(o.parallel, o.pipefusion, *geometry);
}

std::vector<std::string> TakeRepeatedPrompts(int& argc, char** argv) {
  std::vector<std::string> prompts;
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") {  // the rest are positional: keep them as they are
      while (i < argc) argv[out++] = argv[i++];
      break;
    }
    bool matched = false;
    for (const char* name : {"--prompt", "-prompt"}) {
      const std::string n = name;
      if (arg == n && i + 1 < argc) {
        prompts.push_back(argv[++i]);
        matched = true;
      } else if (arg.rfind(n + "=", 0) == 0) {
        prompts.push_back(arg.substr(n.size() + 1));
        matched = true;
      }
      if (matched) break;
    }
    if (!matched) argv[out++] = argv[i];
  }
  argc = out;
  argv[argc] = nullptr;
  return prompts;
}

}  // namespace ditserve::core
