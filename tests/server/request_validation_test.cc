#include "server/request_validation.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>

namespace ditserve::server {
namespace {

Limits TestLimits() {
  Limits l;
  l.max_pixels = 256 * 256;
  l.max_steps = 50;
  l.max_prompt_bytes = 100;
  l.max_images = 4;
  l.default_steps = 28;
  return l;
}

TEST(RequestValidation, DefaultsAreFilledIn) {
  v1::GenerateRequest r;
  r.set_prompt("a red circle");
  auto p = ValidateRequest(r, TestLimits(), ModelShape{16, 128}, 777);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->height, 128);
  EXPECT_EQ(p->width, 128);
  EXPECT_EQ(p->num_inference_steps, 28);
  EXPECT_EQ(p->seed, 777u);
  EXPECT_EQ(p->num_images, 1);
  EXPECT_EQ(p->format, v1::IMAGE_FORMAT_PNG);
  EXPECT_EQ(p->quality, 90);
  EXPECT_DOUBLE_EQ(p->guidance_scale, 3.5);
  EXPECT_FALSE(p->cfg);
  r.set_seed(0);
  EXPECT_EQ(ValidateRequest(r, TestLimits(), ModelShape{16, 128}, 777)->seed, 0u);
}

// max_sequence_length: 0 takes the model's default (so 0 and the default
// batch together), up to the gang's limit; without a reported limit the
// gang checks it.
TEST(RequestValidation, MaxSequenceLengthAgainstTheModel) {
  ModelShape model{16, 128};
  model.default_max_sequence_length = 256;
  model.max_sequence_length_limit = 512;
  v1::GenerateRequest r;
  r.set_prompt("a red circle");
  EXPECT_EQ(ValidateRequest(r, TestLimits(), model, 1)->max_sequence_length, 256);
  r.set_max_sequence_length(40);
  EXPECT_EQ(ValidateRequest(r, TestLimits(), model, 1)->max_sequence_length, 40);
  r.set_max_sequence_length(512);
  EXPECT_EQ(ValidateRequest(r, TestLimits(), model, 1)->max_sequence_length, 512);
  r.set_max_sequence_length(513);
  auto over = ValidateRequest(r, TestLimits(), model, 1);
  EXPECT_EQ(over.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(over.status().message(), "max_sequence_length must be in [1, 512] (0: the model's 256), got 513");
  r.set_max_sequence_length(-1);
  EXPECT_NE(ValidateRequest(r, TestLimits(), model, 1).status().message().find("max_sequence_length must be in [1, 512]"),
            std::string::npos);
  const ModelShape unknown{16, 128};  // an older gang's Hello
  r.set_max_sequence_length(1000);
  EXPECT_EQ(ValidateRequest(r, TestLimits(), unknown, 1)->max_sequence_length, 1000);
  r.set_max_sequence_length(-3);
  EXPECT_EQ(ValidateRequest(r, TestLimits(), unknown, 1).status().message(),
            "max_sequence_length must be >= 0 (0: the model's default), got -3");
}

struct BadCase {
  const char* name;
  std::function<void(v1::GenerateRequest&)> edit;
  const char* expected;  // in the message: the field and its limit
};

TEST(RequestValidation, BadInputsNameTheFieldAndTheLimit) {
  const std::vector<BadCase> cases = {
      {"long prompt", [](auto& r) { r.set_prompt(std::string(101, 'a')); }, "prompt must be at most 100 bytes"},
      {"long negative", [](auto& r) { r.set_negative_prompt(std::string(101, 'a')); }, "negative_prompt must be at most 100"},
      {"height not multiple", [](auto& r) { r.set_height(100); }, "height must be a multiple of 16"},
      {"negative width", [](auto& r) { r.set_width(-16); }, "width must be a multiple of 16"},
      {"side too long", [](auto& r) { r.set_height(4112); }, "height must be a multiple of 16 in [16, 4096]"},
      {"area", [](auto& r) { r.set_height(512); r.set_width(512); }, "height x width must be at most 65536"},
      {"steps", [](auto& r) { r.set_num_inference_steps(51); }, "num_inference_steps must be in [1, 50]"},
      {"negative steps", [](auto& r) { r.set_num_inference_steps(-1); }, "num_inference_steps"},
      {"guidance", [](auto& r) { r.set_guidance_scale(-1); }, "guidance_scale must be in [0, 100]"},
      {"guidance nan", [](auto& r) { r.set_guidance_scale(std::nan("")); }, "guidance_scale"},
      {"true cfg", [](auto& r) { r.set_true_cfg_scale(0.5); }, "true_cfg_scale must be in [1, 100]"},
      {"images", [](auto& r) { r.set_num_images(5); }, "num_images must be in [1, 4]"},
      {"format", [](auto& r) { r.set_output_format(static_cast<v1::ImageFormat>(9)); }, "output_format"},
      {"quality", [](auto& r) { r.set_quality(101); }, "quality must be in [1, 100]"},
      {"priority", [](auto& r) { r.set_priority(1000); }, "priority must be in [-100, 100]"},
  };
  for (const BadCase& c : cases) {
    v1::GenerateRequest r;
    r.set_prompt("ok");
    c.edit(r);
    auto p = ValidateRequest(r, TestLimits(), ModelShape{16, 128}, 1);
    ASSERT_FALSE(p.ok()) << c.name;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_NE(p.status().message().find(c.expected), std::string::npos)
        << c.name << ": " << p.status().message();
  }
}

// Step caching: UNSPECIFIED is the server's default method, an unset
// threshold the server's default for the method; NONE resolves to
// threshold 0.
TEST(RequestValidation, StepCacheDefaultsComeFromTheServer) {
  v1::GenerateRequest r;
  r.set_prompt("a red circle");
  Limits limits = TestLimits();
  auto p = ValidateRequest(r, limits, ModelShape{16, 128}, 1);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->cache, (core::StepCacheOptions{core::StepCacheMethod::kNone, 0}));
  limits.step_cache.default_method = core::StepCacheMethod::kFirstBlock;
  limits.step_cache.default_first_block_threshold = 0.2;
  p = ValidateRequest(r, limits, ModelShape{16, 128}, 1);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->cache, (core::StepCacheOptions{core::StepCacheMethod::kFirstBlock, 0.2}));
  r.set_step_cache(v1::STEP_CACHE_TEACACHE);
  limits.step_cache.default_teacache_threshold = 0.7;
  EXPECT_EQ(ValidateRequest(r, limits, ModelShape{16, 128}, 1)->cache,
            (core::StepCacheOptions{core::StepCacheMethod::kTeaCache, 0.7}));
  r.set_cache_threshold(0);  // computes every step: allowed
  EXPECT_EQ(ValidateRequest(r, limits, ModelShape{16, 128}, 1)->cache,
            (core::StepCacheOptions{core::StepCacheMethod::kTeaCache, 0}));
  r.set_cache_threshold(limits.step_cache.max_teacache_threshold);
  EXPECT_TRUE(ValidateRequest(r, limits, ModelShape{16, 128}, 1).ok());
  r.set_step_cache(v1::STEP_CACHE_NONE);
  r.clear_cache_threshold();
  EXPECT_EQ(ValidateRequest(r, limits, ModelShape{16, 128}, 1)->cache.method, core::StepCacheMethod::kNone);
}

TEST(RequestValidation, BadStepCacheNamesTheFieldAndTheLimit) {
  Limits limits = TestLimits();
  limits.step_cache.max_first_block_threshold = 0.5;
  const std::vector<BadCase> cases = {
      {"unknown method", [](auto& r) { r.set_step_cache(static_cast<v1::StepCache>(9)); },
       "step_cache must be UNSPECIFIED (0), NONE (1), FIRST_BLOCK (2) or TEACACHE (3), got 9"},
      {"threshold without cache", [](auto& r) { r.set_step_cache(v1::STEP_CACHE_NONE); r.set_cache_threshold(0.1); },
       "cache_threshold must be unset without a step cache (step_cache NONE), got 0.1"},
      {"threshold with the default none", [](auto& r) { r.set_cache_threshold(0.1); },
       "cache_threshold must be unset without a step cache (step_cache UNSPECIFIED"},
      {"over the server's max", [](auto& r) { r.set_step_cache(v1::STEP_CACHE_FIRST_BLOCK); r.set_cache_threshold(0.6); },
       "cache_threshold must be in [0, 0.5] for first_block, got 0.6"},
      {"negative", [](auto& r) { r.set_step_cache(v1::STEP_CACHE_TEACACHE); r.set_cache_threshold(-0.1); },
       "cache_threshold must be in [0, 2] for teacache"},
      {"nan", [](auto& r) { r.set_step_cache(v1::STEP_CACHE_TEACACHE); r.set_cache_threshold(std::nan("")); },
       "cache_threshold must be in [0, 2] for teacache"},
  };
  for (const BadCase& c : cases) {
    v1::GenerateRequest r;
    r.set_prompt("ok");
    c.edit(r);
    auto p = ValidateRequest(r, limits, ModelShape{16, 128}, 1);
    ASSERT_FALSE(p.ok()) << c.name;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_NE(p.status().message().find(c.expected), std::string::npos)
        << c.name << ": " << p.status().message();
  }
}

TEST(StepCacheLimits, DefaultAndMaxByMethod) {
  StepCacheLimits l;
  l.default_first_block_threshold = 0.1;
  l.max_first_block_threshold = 0.3;
  l.default_teacache_threshold = 0.5;
  l.max_teacache_threshold = 0.9;
  EXPECT_EQ(l.DefaultThreshold(core::StepCacheMethod::kFirstBlock), 0.1);
  EXPECT_EQ(l.MaxThreshold(core::StepCacheMethod::kFirstBlock), 0.3);
  EXPECT_EQ(l.DefaultThreshold(core::StepCacheMethod::kTeaCache), 0.5);
  EXPECT_EQ(l.MaxThreshold(core::StepCacheMethod::kTeaCache), 0.9);
  EXPECT_EQ(l.DefaultThreshold(core::StepCacheMethod::kNone), 0);
  EXPECT_EQ(l.MaxThreshold(core::StepCacheMethod::kNone), 0);
}

// One gang call runs one cache method; requests of different thresholds
// may share it (each decides its own steps).
TEST(Compatible, NeedsTheSameStepCacheMethodNotThreshold) {
  GenerationParams a;
  a.height = a.width = 128;
  a.num_inference_steps = 4;
  GenerationParams b = a;
  EXPECT_TRUE(Compatible(a, b));
  a.cache = {core::StepCacheMethod::kFirstBlock, 0.1};
  EXPECT_FALSE(Compatible(a, b));
  b.cache = {core::StepCacheMethod::kFirstBlock, 0.3};
  EXPECT_TRUE(Compatible(a, b));
  b.cache = {core::StepCacheMethod::kTeaCache, 0.1};
  EXPECT_FALSE(Compatible(a, b));
  b = a;
  b.cfg = true;
  EXPECT_FALSE(Compatible(a, b));
}

}  // namespace
}  // namespace ditserve::server
