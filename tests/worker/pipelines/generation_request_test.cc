// The command line's generation flags as a GenerationRequest.

#include "worker/pipelines/generation_request.h"

#include <gtest/gtest.h>

namespace ditserve::worker::pipelines {
namespace {

// Every generation flag reaches the request; size 0 takes the model's.
TEST(MakeGenerationRequest, CopiesEveryFlagAndFillsTheDefaultSize) {
  core::GenerationFlags flags;
  flags.model = "/models/flux";
  flags.negative_prompt = "blurry";
  flags.num_inference_steps = 12;
  flags.guidance_scale = 4.5;
  flags.true_cfg_scale = 2.5;
  flags.seed = 7;
  flags.max_sequence_length = 64;
  GenerationRequest r = MakeGenerationRequest(flags, "a cat", 9, 256);
  EXPECT_EQ(r.prompt, "a cat");
  EXPECT_EQ(r.negative_prompt, "blurry");
  EXPECT_EQ(r.height, 256);
  EXPECT_EQ(r.width, 256);
  EXPECT_EQ(r.num_inference_steps, 12);
  EXPECT_EQ(r.guidance_scale, 4.5);
  EXPECT_EQ(r.true_cfg_scale, 2.5);
  EXPECT_EQ(r.seed, 9u);  // the seed given, not the flag's (images i > 0 use seed + i)
  EXPECT_EQ(r.max_sequence_length, 64);
  flags.height = 128;
  flags.width = 96;
  r = MakeGenerationRequest(flags, "a dog", 7, 256);
  EXPECT_EQ(r.height, 128);
  EXPECT_EQ(r.width, 96);
  EXPECT_EQ(r.cache.method, core::StepCacheMethod::kNone);
  flags.use_fbcache = true;
  flags.cache_threshold = 0.2;
  r = MakeGenerationRequest(flags, "a dog", 7, 256);
  EXPECT_EQ(r.cache.method, core::StepCacheMethod::kFirstBlock);
  EXPECT_EQ(r.cache.threshold, 0.2);
  flags.use_fbcache = false;
  flags.use_teacache = true;
  flags.cache_threshold = -1;  // unset: the method's default
  r = MakeGenerationRequest(flags, "a dog", 7, 256);
  EXPECT_EQ(r.cache.method, core::StepCacheMethod::kTeaCache);
  EXPECT_EQ(r.cache.threshold, core::DefaultStepCacheThreshold(core::StepCacheMethod::kTeaCache));
}

}  // namespace
}  // namespace ditserve::worker::pipelines
