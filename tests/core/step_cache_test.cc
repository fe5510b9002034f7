#include "core/step_cache.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/generation_flags.h"

namespace ditserve::core {
namespace {

TEST(StepCacheMethod, NamesRoundTripAndUnknownIsNamed) {
  for (StepCacheMethod m : {StepCacheMethod::kNone, StepCacheMethod::kFirstBlock, StepCacheMethod::kTeaCache}) {
    auto parsed = ParseStepCacheMethod(StepCacheMethodName(m));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, m);
  }
  auto bad = ParseStepCacheMethod("fbcache");
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad.status().message()).find("\"fbcache\""), std::string::npos);
  EXPECT_NE(std::string(bad.status().message()).find("first_block"), std::string::npos);
}

TEST(StepCacheOptions, ValidationNamesTheFieldAndTheLimit) {
  EXPECT_TRUE(ValidateStepCache({StepCacheMethod::kNone, 0}, 0).ok());
  EXPECT_TRUE(ValidateStepCache({StepCacheMethod::kFirstBlock, 0}, 1).ok());
  EXPECT_TRUE(ValidateStepCache({StepCacheMethod::kFirstBlock, 1}, 1).ok());
  const absl::Status over = ValidateStepCache({StepCacheMethod::kTeaCache, 2.5}, 2, "cache_threshold");
  ASSERT_EQ(over.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(over.message()).find("cache_threshold must be in [0, 2] for teacache, got 2.5"),
            std::string::npos)
      << over;
  EXPECT_FALSE(ValidateStepCache({StepCacheMethod::kFirstBlock, -0.1}, 1).ok());
  EXPECT_FALSE(ValidateStepCache({StepCacheMethod::kFirstBlock, std::nan("")}, 1).ok());
  EXPECT_FALSE(ValidateStepCache({StepCacheMethod::kFirstBlock, std::numeric_limits<double>::infinity()}, 1).ok());
  const absl::Status none = ValidateStepCache({StepCacheMethod::kNone, 0.1}, 0);
  EXPECT_NE(std::string(none.message()).find("without a step cache"), std::string::npos) << none;
  EXPECT_LE(DefaultStepCacheThreshold(StepCacheMethod::kFirstBlock), MaxStepCacheThreshold(StepCacheMethod::kFirstBlock));
  EXPECT_LE(DefaultStepCacheThreshold(StepCacheMethod::kTeaCache), MaxStepCacheThreshold(StepCacheMethod::kTeaCache));
}

TEST(StepCacheFlags, MapToOptions) {
  GenerationFlags f;
  auto none = StepCacheFromFlags(f);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->method, StepCacheMethod::kNone);
  f.use_fbcache = true;
  auto fb = StepCacheFromFlags(f);
  ASSERT_TRUE(fb.ok());
  EXPECT_EQ(*fb, (StepCacheOptions{StepCacheMethod::kFirstBlock, 0.12}));
  f.cache_threshold = 0.3;
  EXPECT_EQ(StepCacheFromFlags(f)->threshold, 0.3);
  f.cache_threshold = 1.5;
  EXPECT_NE(std::string(StepCacheFromFlags(f).status().message()).find("--cache_threshold must be in [0, 1]"),
            std::string::npos);
  f.use_teacache = true;
  f.cache_threshold = -1;
  EXPECT_NE(std::string(StepCacheFromFlags(f).status().message()).find("exclude each other"), std::string::npos);
  GenerationFlags only_threshold;
  only_threshold.cache_threshold = 0.1;
  EXPECT_FALSE(StepCacheFromFlags(only_threshold).ok());
}

TEST(Polynomial, HornerMatchesPowers) {
  // 2x^3 - x + 5 at x = 1.5: 6.75 - 1.5 + 5.
  EXPECT_DOUBLE_EQ(EvaluatePolynomial({2, 0, -1, 5}, 1.5), 10.25);
  EXPECT_DOUBLE_EQ(EvaluatePolynomial({}, 3), 0);
}

// First-Block-Cache: compute when the distance exceeds the threshold; the
// first and last steps always compute.
TEST(StepCacheRule, FirstBlockComparesEachStepWithTheThreshold) {
  StepCacheRule rule({StepCacheMethod::kFirstBlock, 0.1}, 6);
  const std::vector<double> distances = {9, 0.05, 0.1, 0.11, 0.01, 0.0};
  std::string got;
  for (int s = 0; s < 6; ++s) got += rule.Decide(s, distances[s]) ? '1' : '0';
  // Step 2's distance equals the threshold: cached (diffusers computes only above it).
  EXPECT_EQ(got, "100101");
  EXPECT_TRUE(rule.Forced(0));
  EXPECT_TRUE(rule.Forced(5));
  EXPECT_FALSE(rule.Forced(3));
}

TEST(StepCacheRule, ZeroThresholdAndNoneComputeEveryStep) {
  for (StepCacheOptions o : {StepCacheOptions{StepCacheMethod::kFirstBlock, 0}, StepCacheOptions{StepCacheMethod::kTeaCache, 0},
                             StepCacheOptions{StepCacheMethod::kNone, 0}}) {
    StepCacheRule rule(o, 5, {1, 0});
    for (int s = 0; s < 5; ++s) EXPECT_TRUE(rule.Decide(s, 0.0)) << s;
  }
}

// TeaCache: the rescaled distances accumulate until they reach the
// threshold; that step computes and the sum restarts.
TEST(StepCacheRule, TeaCacheAccumulatesRescaledDistances) {
  // Rescale y = 2x: distances 0.1 → 0.2 each; threshold 0.5.
  StepCacheRule rule({StepCacheMethod::kTeaCache, 0.5}, 8, {2, 0});
  std::string got;
  std::vector<double> sums;
  for (int s = 0; s < 8; ++s) {
    got += rule.Decide(s, 0.1) ? '1' : '0';
    sums.push_back(rule.accumulated());
  }
  // 0.2, 0.4 cached; 0.6 >= 0.5 computes (sum back to 0); again; last forced.
  EXPECT_EQ(got, "10010011");
  EXPECT_NEAR(sums[1], 0.2, 1e-12);
  EXPECT_NEAR(sums[2], 0.4, 1e-12);
  EXPECT_EQ(sums[3], 0);
  // A NaN distance (an all-zero signal) computes.
  StepCacheRule nan_rule({StepCacheMethod::kTeaCache, 0.5}, 4, {1, 0});
  nan_rule.Decide(0, 0);
  EXPECT_TRUE(nan_rule.Decide(1, std::nan("")));
  EXPECT_EQ(nan_rule.accumulated(), 0);
}

TEST(StepCacheRule, OverruleToComputeRestartsTheSum) {
  StepCacheRule rule({StepCacheMethod::kTeaCache, 1.0}, 6, {1, 0});
  rule.Decide(0, 0);
  EXPECT_FALSE(rule.Decide(1, 0.3));
  rule.Overrule(true);
  EXPECT_EQ(rule.accumulated(), 0);
}

// TeaCache4FLUX's published polynomial at a typical distance.
TEST(Polynomial, TeaCacheFluxCoefficients) {
  const TeaCachePolynomial flux = {4.98651651e+02, -2.83781631e+02, 5.58554382e+01, -3.82021401e+00, 2.64230861e-01};
  const double x = 0.1;
  const double expected = 498.651651 * 1e-4 - 283.781631 * 1e-3 + 55.8554382 * 1e-2 - 0.382021401 + 0.264230861;
  EXPECT_NEAR(EvaluatePolynomial(flux, x), expected, 1e-9);
}

}  // namespace
}  // namespace ditserve::core
