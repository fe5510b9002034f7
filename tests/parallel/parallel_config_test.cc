#include "parallel/parallel_config.h"

#include <gtest/gtest.h>

#include <set>

namespace ditserve::parallel {
namespace {



TEST(ParallelConfig, ProductAndDegrees) {
  ParallelConfig c{2, true, 2, 2, 2};
  EXPECT_EQ(c.cfg_degree(), 2);
  EXPECT_EQ(c.sequence_parallel_degree(), 4);
  EXPECT_EQ(c.world_size(), 32);
  EXPECT_EQ(c.ToString(), "dp=2 cfg=2 pp=2 ulysses=2 ring=2");
  EXPECT_TRUE(Validate(c, 32).ok());
}

TEST(ParallelConfig, DegreeBelowOneNamesTheFlag) {
  struct Case {
    ParallelConfig config;
    const char* message;
  } cases[] = {
      {{0, false, 1, 1, 1}, "--data_parallel_degree must be >= 1, got 0"},
      {{1, false, -1, 1, 1}, "--pipefusion_parallel_degree must be >= 1, got -1"},
      {{1, false, 1, 0, 1}, "--ulysses_degree must be >= 1, got 0"},
      {{1, false, 1, 1, 0}, "--ring_degree must be >= 1, got 0"},
  };
  for (const auto& c : cases) {
    absl::Status s = Validate(c.config, 1);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(s.message(), c.message);
  }
}

TEST(ParallelConfig, ProductMismatchNamesTheNumbers) {
  absl::Status s = Validate({1, true, 1, 2, 1}, 8);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "the product of the parallel degrees (dp 1 x cfg 2 x pp 1 x ulysses 2 x ring 1 = 4) "
            "must equal the world size 8");
  EXPECT_EQ(Validate({}, 0).code(), absl::StatusCode::kInvalidArgument);
}

// The number of ordered factorisations of n = Π p^e into k factors is
// Π C(e+k-1, k-1); the configs are those of W (cfg 1) and of W/2 (cfg 2)
// into 4 factors (dp, pp, ulysses, ring).
long long Binomial(int n, int k) {
  long long r = 1;
  for (int i = 1; i <= k; ++i) r = r * (n - k + i) / i;
  return r;
}
long long OrderedFactorisations(int n, int k) {
  long long count = 1;
  for (int p = 2; n > 1; ++p) {
    int e = 0;
    while (n % p == 0) {
      n /= p;
      ++e;
    }
    count *= Binomial(e + k - 1, k - 1);
  }
  return count;
}

TEST(ParallelConfig, EnumerateMatchesTheClosedFormCount) {
  for (int w : {1, 2, 3, 4, 6, 8, 12, 16}) {
    const auto configs = EnumerateParallelConfigs(w);
    const long long expected =
        OrderedFactorisations(w, 4) + (w % 2 == 0 ? OrderedFactorisations(w / 2, 4) : 0);
    EXPECT_EQ(static_cast<long long>(configs.size()), expected) << "W=" << w;
    std::set<std::string> distinct;
    for (const auto& c : configs) {
      EXPECT_TRUE(Validate(c, w).ok()) << c.ToString();
      distinct.insert(c.ToString());
    }
    EXPECT_EQ(distinct.size(), configs.size());
  }
  EXPECT_EQ(EnumerateParallelConfigs(16).size(), 35u + 20u);
  EXPECT_TRUE(EnumerateParallelConfigs(0).empty());
}

}  // namespace
}  // namespace ditserve::parallel
