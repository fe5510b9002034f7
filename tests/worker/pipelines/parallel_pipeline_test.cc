// The gang pipeline used the way the server uses it: one loaded pipeline,
// several Generate calls, one of them cancelled from a rank other than 0.

#include "worker/pipelines/parallel_pipeline.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/binaries.h"
#include "tests/harness/multiproc.h"
#include "tests/parallel/test_gang.h"

namespace ditserve::worker::pipelines {
namespace {

// args: model dir, ulysses, pipefusion, cfg (0/1), cancelling rank, the
// step after which it cancels, the step every rank must stop after.
DITSERVE_SCENARIO(cancel_then_continue) {
  int u = 0, pp = 0, cfg = 0, canceller = 0, cancel_at = 0, expected_end = 0;
  if (ctx.args.size() != 7 || !absl::SimpleAtoi(ctx.args[1], &u) || !absl::SimpleAtoi(ctx.args[2], &pp) ||
      !absl::SimpleAtoi(ctx.args[3], &cfg) || !absl::SimpleAtoi(ctx.args[4], &canceller) ||
      !absl::SimpleAtoi(ctx.args[5], &cancel_at) || !absl::SimpleAtoi(ctx.args[6], &expected_end)) {
    return absl::InvalidArgumentError("bad scenario arguments");
  }
  at::set_num_threads(1);
  parallel::ParallelConfig config;
  config.ulysses_degree = u;
  config.pipefusion_parallel_degree = pp;
  config.use_cfg_parallel = cfg != 0;
  auto groups = parallel::JoinTestGang(ctx, config, {});
  if (!groups.ok()) return groups.status();
  auto pipe = ParallelPipeline::Load(ctx.args[0], at::kFloat, at::kCPU, **groups);
  if (!pipe.ok()) return pipe.status();
  GenerationRequest r;
  r.prompt = "a red circle on a blue background";
  r.height = r.width = 128;
  r.num_inference_steps = 6;
  r.max_sequence_length = 8;
  r.seed = 3;
  if (cfg != 0) {
    r.negative_prompt = "blurry";
    r.true_cfg_scale = 2.5;
  }
  auto first = (*pipe)->Generate({r});
  if (!first.ok()) return first.status();
  int calls = 0;
  auto cancelled = (*pipe)->Generate({r}, [&](int step, int total) {
    ++calls;
    return !(ctx.rank == canceller && step == cancel_at);
  });
  if (cancelled.status().code() != absl::StatusCode::kCancelled) {
    return absl::InternalError(absl::StrCat("expected CANCELLED, got ", cancelled.status().ToString()));
  }
  const std::string want = absl::StrCat("cancelled after step ", expected_end, " of 6");
  if (cancelled.status().message() != want || calls != expected_end) {
    return absl::InternalError(absl::StrCat("rank ", ctx.rank, ": '", cancelled.status().message(), "' after ", calls,
                                            " steps; want '", want, "'"));
  }
  // The gang is clean: the same request gives the same result again.
  auto again = (*pipe)->Generate({r});
  if (!again.ok()) return again.status();
  if (ctx.rank == 0) {
    if (first->size() != 1 || again->size() != 1) return absl::InternalError("rank 0 must get one result");
    if (!at::equal((*first)[0].latents, (*again)[0].latents) || !at::equal((*first)[0].image, (*again)[0].image)) {
      return absl::InternalError("the run after the cancelled one differs from the first");
    }
  } else if (!first->empty()) {
    return absl::InternalError("only rank 0 gets results");
  }
  return absl::OkStatus();
}

class ParallelPipelineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = new std::string(absl::StrCat(::testing::TempDir(), "/pfp_model_", getpid()));
    auto made = testing::RunOne({testing::BinDir() + "/ditserve-make-model", "--preset=tiny", "--out=" + *model_});
    ASSERT_TRUE(made.exit.ok()) << made.output;
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*model_);
    delete model_;
  }
  static std::string* model_;
};
std::string* ParallelPipelineTest::model_ = nullptr;

// Lockstep ranks stop right after the step the cancel was seen.
TEST_F(ParallelPipelineTest, CancelFromAnyRankStopsEveryRankAtTheSameStep) {
  testing::ExpectAllRanksOk(
      testing::LaunchScenario("cancel_then_continue", {.world_size = 2, .args = {*model_, "2", "1", "0", "1", "2", "2"}}));
}

// PipeFusion 2 stages, 2 patches: stages are up to one step apart, so the
// stop lands lag + 2 = 3 steps after the vote.
TEST_F(ParallelPipelineTest, CancelInAPipelineDrainsConsistently) {
  testing::ExpectAllRanksOk(
      testing::LaunchScenario("cancel_then_continue", {.world_size = 2, .args = {*model_, "1", "2", "0", "1", "2", "4"}}));
  testing::ExpectAllRanksOk(testing::LaunchScenario(
      "cancel_then_continue", {.world_size = 4, .args = {*model_, "1", "2", "1", "3", "1", "3"}}));
}

}  // namespace
}  // namespace ditserve::worker::pipelines
