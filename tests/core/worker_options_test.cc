#include "core/worker_options.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "absl/flags/parse.h"
#include "core/join_schedule.h"
#include "core/worker_flags.h"

namespace ditserve::core {
namespace {

// --dtype: checked the same way by ditserve-generate and the gang's binaries;
// unset, it follows the device.
TEST(GenerationFlags, DtypeIsCheckedAndResolvedByDevice) {
  GenerationFlags flags;
  EXPECT_TRUE(ValidateDtype(flags).ok());
  EXPECT_EQ(ResolvedDtype(flags, /*cuda=*/false), "f32");
  EXPECT_EQ(ResolvedDtype(flags, /*cuda=*/true), "bf16");
  flags.dtype = "f32";
  EXPECT_TRUE(ValidateDtype(flags).ok());
  EXPECT_EQ(ResolvedDtype(flags, /*cuda=*/true), "f32");
  flags.dtype = "bf16";
  EXPECT_EQ(ResolvedDtype(flags, /*cuda=*/false), "bf16");
  flags.dtype = "f16";
  EXPECT_EQ(ValidateDtype(flags).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateDtype(flags).message(), "--dtype must be f32 or bf16, got 'f16'");
  WorkerOptions o;
  o.generation = flags;
  o.generation.model = "/nowhere";
  o.prompts = {"a cat"};
  o.output_dir = "/tmp/out";
  EXPECT_EQ(ValidateGenerationJob(o).message(), "--dtype must be f32 or bf16, got 'f16'");
  o.prompts.clear();
  o.output_dir.clear();
  EXPECT_EQ(ValidateServing(o).message(), "--dtype must be f32 or bf16, got 'f16'");
  o.profile_dir = "/tmp/traces";
  EXPECT_EQ(ValidateServing(o).message(),
            "--prompt, --output_dir, --profile_dir and --join_schedule are for a generation job, not with "
            "--control_address (serving)");
  o.profile_dir.clear();
  o.join_schedule = "0,2";
  EXPECT_EQ(ValidateServing(o).code(), absl::StatusCode::kInvalidArgument);
}

// --join_schedule: one JOIN[:STEPS[:CANCEL[:CFG]]] per prompt.
TEST(JoinSchedule, ParsesEntriesAndNamesTheBadOne) {
  auto s = ParseJoinSchedule("0,3:6,1:0:4,2:3::4.5,1:0:5:1", 5, 8);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->size(), 5u);
  EXPECT_EQ((*s)[0].join_at, 0);
  EXPECT_EQ((*s)[0].steps, 8);
  EXPECT_EQ((*s)[0].cancel_at, -1);
  EXPECT_EQ((*s)[0].cfg_scale, 0);
  EXPECT_EQ((*s)[1].join_at, 3);
  EXPECT_EQ((*s)[1].steps, 6);
  EXPECT_EQ((*s)[2].steps, 8);
  EXPECT_EQ((*s)[2].cancel_at, 4);
  EXPECT_EQ((*s)[3].join_at, 2);
  EXPECT_EQ((*s)[3].steps, 3);
  EXPECT_EQ((*s)[3].cancel_at, -1);
  EXPECT_EQ((*s)[3].cfg_scale, 4.5);
  EXPECT_EQ((*s)[4].cancel_at, 5);
  EXPECT_EQ((*s)[4].cfg_scale, 1);
  EXPECT_TRUE(ParseJoinSchedule("", 2, 8)->empty());
  EXPECT_EQ(ParseJoinSchedule("0,1", 3, 8).status().message(),
            "--join_schedule has 2 entries; it needs one per prompt (3)");
  EXPECT_EQ(ParseJoinSchedule("0,x", 2, 8).status().message(),
            "--join_schedule entry 1 'x': JOIN, STEPS and CANCEL are integers >= 0 (JOIN[:STEPS[:CANCEL[:CFG]]])");
  EXPECT_EQ(ParseJoinSchedule("0,-1", 2, 8).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseJoinSchedule("0:1001", 1, 8).status().message(),
            "--join_schedule entry 0 '0:1001': STEPS must be in [1, 1000], got 1001 (JOIN[:STEPS[:CANCEL[:CFG]]])");
  EXPECT_EQ(ParseJoinSchedule("2:4:2", 1, 8).status().message(),
            "--join_schedule entry 0 '2:4:2': CANCEL must come after JOIN (JOIN[:STEPS[:CANCEL[:CFG]]])");
  EXPECT_EQ(ParseJoinSchedule("1:2:3:0.5", 1, 8).status().message(),
            "--join_schedule entry 0 '1:2:3:0.5': CFG must be a number >= 1 (JOIN[:STEPS[:CANCEL[:CFG]]])");
  EXPECT_EQ(ParseJoinSchedule("1:2:3:x", 1, 8).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseJoinSchedule("1:2:3:4:5", 1, 8).status().message(),
            "--join_schedule entry 0 '1:2:3:4:5': too many fields (JOIN[:STEPS[:CANCEL[:CFG]]])");
}

// A served request picks its own step cache: the gang's flags refuse one.
TEST(WorkerOptions, ServingRefusesTheJobsStepCacheFlags) {
  WorkerOptions o;
  o.generation.model = "/nowhere";
  EXPECT_EQ(ValidateServing(o).message().find("step cache"), std::string::npos);  // fails on the model only
  o.generation.use_fbcache = true;
  EXPECT_EQ(ValidateServing(o).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(ValidateServing(o).message().find("--default_step_cache"), std::string::npos);
  o.generation.use_fbcache = false;
  o.generation.cache_threshold = 0.1;
  EXPECT_EQ(ValidateServing(o).code(), absl::StatusCode::kInvalidArgument);
  o.generation.cache_threshold = -1;
  o.prompts = {"a cat"};
  o.output_dir = "/tmp/out";
  o.generation.use_fbcache = true;
  o.generation.use_teacache = true;
  EXPECT_EQ(ValidateGenerationJob(o).message(), "--use_fbcache and --use_teacache exclude each other: pick one");
}

TEST(WorkerOptions, ToWorkerArgsCarriesEveryField) {
  WorkerOptions o;
  o.rank = 3;
  o.world_size = 8;
  o.local_rank = 1;
  o.local_world_size = 4;
  o.master_addr = "10.0.0.2";
  o.master_port = 29501;
  o.rendezvous_timeout_s = 12.5;
  o.collective_timeout_s = 30;
  o.device = "cpu";
  o.gloo_socket_ifname = "eth0";
  o.shared_memory_transport = false;
  o.parallel = {2, true, 1, 2, 1};
  o.selfcheck = true;
  o.selfcheck_elements = 17;
  EXPECT_EQ(ToWorkerArgs(o), (std::vector<std::string>{
                                 "--rank=3", "--world_size=8", "--local_rank=1", "--local_world_size=4",
                                 "--master_addr=10.0.0.2", "--master_port=29501",
                                 "--rendezvous_timeout_s=12.5", "--collective_timeout_s=30",
                                 "--device=cpu", "--gloo_socket_ifname=eth0",
                                 "--shared_memory_transport=false",
                                 "--data_parallel_degree=2", "--use_cfg_parallel=true",
                                 "--pipefusion_parallel_degree=1", "--ulysses_degree=2",
                                 "--ring_degree=1", "--selfcheck=true",
                                 "--selfcheck_elements=17", "--threads=0", "--model=",
                                 "--negative_prompt=", "--height=0", "--width=0",
                                 "--num_inference_steps=28", "--guidance_scale=-1",
                                 "--true_cfg_scale=1", "--seed=0", "--max_sequence_length=0",
                                 "--dtype=", "--use_fbcache=false", "--use_teacache=false",
                                 "--cache_threshold=-1", "--model_root=", "--use_parallel_vae=false", "--vae_tiling=false",
                                 "--vae_tile_size=0", "--vae_memory_cap_mb=0", "--output_dir=",
                                 "--save_latents=false", "--comm_stats=false",
                                 "--profile_dir=",
                                 "--num_pipeline_patch=0", "--warmup_steps=1",
                                 "--attn_layer_num_for_pp=", "--control_address=", "--join_schedule="}));
}

// --use_parallel_vae travels too (the round trip below takes the tiling
// side of the pair that excludes each other).
TEST(WorkerOptions, ParallelVaeFlagTravels) {
  WorkerOptions o;
  o.generation.vae.parallel = true;
  const std::vector<std::string> args = ToWorkerArgs(o);
  EXPECT_NE(std::find(args.begin(), args.end(), "--use_parallel_vae=true"), args.end());
}

// What the launcher emits, a worker parses back to the same options.
TEST(WorkerOptions, RoundTripThroughTheWorkerFlags) {
  WorkerOptions o;
  o.rank = 5;
  o.world_size = 8;
  o.parallel = {1, true, 2, 2, 1};
  o.threads = 3;
  o.shared_memory_transport = false;
  o.generation.model = "/models/flux";
  o.prompts = {"a cat, sitting", "--a dog"};
  o.generation.negative_prompt = "blurry";
  o.generation.height = 768;
  o.generation.width = 1024;
  o.generation.num_inference_steps = 20;
  o.generation.guidance_scale = 4.5;
  o.generation.true_cfg_scale = 2.5;
  o.generation.seed = 1234567890123ULL;
  o.generation.max_sequence_length = 256;
  o.generation.dtype = "bf16";
  o.generation.use_teacache = true;
  o.generation.cache_threshold = 0.25;
  o.generation.model_root = "/models";
  o.generation.vae.tiling = true;
  o.generation.vae.tile_size = 256;
  o.generation.vae.memory_cap_mb = 12288;
  o.output_dir = "/tmp/out";
  o.save_latents = true;
  o.comm_stats = true;
  o.profile_dir = "/tmp/traces";
  o.pipefusion.num_pipeline_patch = 4;
  o.pipefusion.warmup_steps = 2;
  o.pipefusion.attn_layer_num_for_pp = {20, 37};
  o.control_address = "10.0.0.9:7000";
  std::vector<std::string> args = {"ditserve-worker"};
  for (std::string& a : ToWorkerArgs(o)) args.push_back(a);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int argc = static_cast<int>(args.size());
  const std::vector<std::string> prompts = TakeRepeatedPrompts(argc, argv.data());
  absl::ParseCommandLine(argc, argv.data());
  WorkerOptions back = WorkerOptionsFromFlags();
  back.prompts = prompts;
  EXPECT_EQ(back.rank, 5);
  EXPECT_FALSE(back.shared_memory_transport);
  EXPECT_EQ(back.parallel, o.parallel);
  EXPECT_EQ(back.threads, 3);
  EXPECT_EQ(back.generation.model, o.generation.model);
  EXPECT_EQ(back.prompts, o.prompts);
  EXPECT_EQ(back.generation.negative_prompt, o.generation.negative_prompt);
  EXPECT_EQ(back.generation.height, 768);
  EXPECT_EQ(back.generation.width, 1024);
  EXPECT_EQ(back.generation.num_inference_steps, 20);
  EXPECT_EQ(back.generation.guidance_scale, 4.5);
  EXPECT_EQ(back.generation.true_cfg_scale, 2.5);
  EXPECT_EQ(back.generation.seed, 1234567890123ULL);
  EXPECT_EQ(back.generation.max_sequence_length, 256);
  EXPECT_EQ(back.generation.dtype, "bf16");
  EXPECT_FALSE(back.generation.use_fbcache);
  EXPECT_TRUE(back.generation.use_teacache);
  EXPECT_EQ(back.generation.cache_threshold, 0.25);
  EXPECT_EQ(back.generation.model_root, "/models");
  EXPECT_FALSE(back.generation.vae.parallel);
  EXPECT_TRUE(back.generation.vae.tiling);
  EXPECT_EQ(back.generation.vae.tile_size, 256);
  EXPECT_EQ(back.generation.vae.memory_cap_mb, 12288);
  EXPECT_EQ(back.output_dir, "/tmp/out");
  EXPECT_TRUE(back.save_latents);
  EXPECT_TRUE(back.comm_stats);
  EXPECT_EQ(back.profile_dir, "/tmp/traces");
  EXPECT_EQ(back.pipefusion.num_pipeline_patch, 4);
  EXPECT_EQ(back.pipefusion.warmup_steps, 2);
  EXPECT_EQ(back.pipefusion.attn_layer_num_for_pp, (std::vector<int>{20, 37}));
  EXPECT_EQ(back.control_address, "10.0.0.9:7000");
}

}  // namespace
}  // namespace ditserve::core
