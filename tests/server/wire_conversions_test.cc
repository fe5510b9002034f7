// The conversions between the request's and the gang's types, one place
// each: GenerationParams → control Item (server/request.h) → the engine's
// GenerationRequest (worker/serve/item_request.h), and the parallel degrees
// to and from the wire (proto/parallel_config_proto.h).

#include <gtest/gtest.h>

#include "parallel/parallel_config.h"
#include "proto/parallel_config_proto.h"
#include "server/request.h"
#include "worker/serve/item_request.h"

namespace ditserve {
namespace {

server::GenerationParams EveryFieldSet() {
  server::GenerationParams p;
  p.prompt = "a red circle";
  p.negative_prompt = "blurry";
  p.height = 192;
  p.width = 320;
  p.num_inference_steps = 17;
  p.guidance_scale = 6.5;
  p.true_cfg_scale = 2.25;
  p.seed = 1234567890123ull;
  p.num_images = 3;
  p.cfg = true;
  p.cache = {core::StepCacheMethod::kTeaCache, 0.35};
  p.max_sequence_length = 77;
  return p;
}

TEST(WireConversions, EveryGenerationFieldReachesTheEngine) {
  const server::GenerationParams p = EveryFieldSet();
  for (int index = 0; index < p.num_images; ++index) {
    const control::v1::Item item = server::ToControlItem(p, 42, index);
    EXPECT_EQ(item.request_id(), 42u);
    auto r = worker::serve::RequestFromItem(item);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->prompt, p.prompt);
    EXPECT_EQ(r->negative_prompt, p.negative_prompt);
    EXPECT_EQ(r->height, p.height);
    EXPECT_EQ(r->width, p.width);
    EXPECT_EQ(r->num_inference_steps, p.num_inference_steps);
    EXPECT_EQ(r->guidance_scale, p.guidance_scale);
    EXPECT_EQ(r->true_cfg_scale, p.true_cfg_scale);
    EXPECT_EQ(r->seed, p.seed + static_cast<uint64_t>(index));  // image i of a request: seed + i
    EXPECT_EQ(r->cache.method, core::StepCacheMethod::kTeaCache);
    EXPECT_EQ(r->cache.threshold, 0.35);
    EXPECT_EQ(r->max_sequence_length, 77);
  }
}

// Requests of different text budgets run in different gang calls (the
// pipeline's batch has one sequence length).
TEST(WireConversions, MaxSequenceLengthSeparatesBatches) {
  server::GenerationParams a = EveryFieldSet(), b = EveryFieldSet();
  EXPECT_TRUE(server::Compatible(a, b));
  b.max_sequence_length = 64;
  EXPECT_FALSE(server::Compatible(a, b));
}

TEST(WireConversions, EveryStepCacheMethodSurvives) {
  server::GenerationParams p = EveryFieldSet();
  for (core::StepCacheMethod m :
       {core::StepCacheMethod::kNone, core::StepCacheMethod::kFirstBlock, core::StepCacheMethod::kTeaCache}) {
    p.cache.method = m;
    auto r = worker::serve::RequestFromItem(server::ToControlItem(p, 1, 0));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->cache.method, m);
  }
}

TEST(WireConversions, AnUnresolvedOrUnknownStepCacheIsRejected) {
  control::v1::Item item = server::ToControlItem(EveryFieldSet(), 1, 0);
  item.set_step_cache(v1::STEP_CACHE_UNSPECIFIED);
  EXPECT_EQ(worker::serve::RequestFromItem(item).status().code(), absl::StatusCode::kInvalidArgument);
  item.set_step_cache(static_cast<v1::StepCache>(99));
  const absl::Status s = worker::serve::RequestFromItem(item).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "step_cache 99 is not a method this gang knows");
  control::v1::RunBatch batch;
  *batch.add_items() = server::ToControlItem(EveryFieldSet(), 1, 0);
  *batch.add_items() = item;
  EXPECT_EQ(worker::serve::RequestsFromBatch(batch).status().code(), absl::StatusCode::kInvalidArgument);
  batch.mutable_items()->RemoveLast();
  auto one = worker::serve::RequestsFromBatch(batch);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->size(), 1u);
}

TEST(WireConversions, ParallelDegreesRoundTripWithTheWorldSize) {
  for (const parallel::ParallelConfig& c : parallel::EnumerateParallelConfigs(8)) {
    v1::ParallelConfig wire;
    proto::ToProto(c, &wire);
    EXPECT_EQ(wire.world_size(), 8);
    EXPECT_EQ(proto::FromProto(wire), c) << c.ToString();
  }
}

TEST(WireConversions, UnsetDegreesReadAsOne) {
  const parallel::ParallelConfig c = proto::FromProto(v1::ParallelConfig());
  EXPECT_EQ(c, parallel::ParallelConfig());
  v1::ParallelConfig wire;
  wire.set_ulysses_degree(2);
  EXPECT_EQ(proto::FromProto(wire).ulysses_degree, 2);
  EXPECT_EQ(proto::FromProto(wire).ring_degree, 1);
}

}  // namespace
}  // namespace ditserve
