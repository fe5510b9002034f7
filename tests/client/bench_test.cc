#include "client/bench.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "client/generate_command.h"

namespace ditserve::client {
namespace {

TEST(Bench, QuantilesInterpolate) {
  EXPECT_EQ(Quantile({}, 0.5), 0);
  EXPECT_DOUBLE_EQ(Quantile({3, 1, 2}, 0.5), 2);
  EXPECT_DOUBLE_EQ(Quantile({1, 2, 3, 4}, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(Quantile({1, 2, 3, 4}, 1.0), 4);
  EXPECT_DOUBLE_EQ(Quantile({1, 2, 3, 4}, 0.0), 1);
  std::vector<double> hundred;
  for (int i = 1; i <= 101; ++i) hundred.push_back(i);
  EXPECT_DOUBLE_EQ(Quantile(hundred, 0.99), 100);
}

// The overhead (latency − gang time) splits into queue wait, encoding,
// server hand-offs and transport, which add up to it.
TEST(Bench, OverheadSplitsIntoItsParts) {
  BenchResult r;
  v1::GenerateResponse response;
  v1::Timings& t = *response.mutable_timings();
  t.set_queued_s(0.001);
  t.set_gang_s(0.050);
  t.set_encoding_s(0.002);
  t.set_total_s(0.0545);  // hand-offs 1.5 ms
  response.add_images();
  RecordSuccess(r, 0.0555, response);  // transport 1 ms
  ASSERT_EQ(r.ok, 1);
  EXPECT_NEAR(r.overhead_s[0], 0.0055, 1e-12);
  EXPECT_NEAR(r.dispatch_s[0], 0.0015, 1e-12);
  EXPECT_NEAR(r.transport_s[0], 0.001, 1e-12);
  EXPECT_NEAR(r.queued_s[0] + r.encoding_s[0] + r.dispatch_s[0] + r.transport_s[0], r.overhead_s[0], 1e-12);
  EXPECT_EQ(r.images_per_s, 1);
}

// The open loop's arrivals: a Poisson process. Gaps are exponential with
// mean 1/rate (P(gap > 1/rate) = 1/e), the same seed gives the same
// times, and a duration bounds them.
TEST(Bench, PoissonArrivalsHaveExponentialGaps) {
  const std::vector<double> t = PoissonArrivals(4.0, 20000, 0, 7);
  ASSERT_EQ(t.size(), 20000u);
  double sum = 0;
  int longer = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    const double gap = t[i] - (i == 0 ? 0 : t[i - 1]);
    ASSERT_GT(gap, 0) << i;
    sum += gap;
    longer += gap > 0.25;
  }
  EXPECT_NEAR(sum / t.size(), 0.25, 0.25 * 0.03);  // mean 1/rate, 3 %: about 4 standard errors
  EXPECT_NEAR(static_cast<double>(longer) / t.size(), std::exp(-1.0), 0.015);
  EXPECT_EQ(PoissonArrivals(4.0, 50, 0, 7), std::vector<double>(t.begin(), t.begin() + 50));
  EXPECT_NE(PoissonArrivals(4.0, 50, 0, 8), std::vector<double>(t.begin(), t.begin() + 50));
  const std::vector<double> timed = PoissonArrivals(4.0, 0, 100, 7);
  EXPECT_LT(timed.back(), 100);
  EXPECT_NEAR(static_cast<double>(timed.size()), 400, 4 * 20);  // Poisson(400): sd 20
  EXPECT_TRUE(PoissonArrivals(0, 10, 0, 1).empty());
}

TEST(Generate, ImagePathsNumberSeveralImages) {
  EXPECT_EQ(ImagePath("out.png", 0, 1), "out.png");
  EXPECT_EQ(ImagePath("dir.v2/out.png", 1, 2), "dir.v2/out_1.png");
  EXPECT_EQ(ImagePath("dir.v2/out", 0, 2), "dir.v2/out_0");
}

}  // namespace
}  // namespace ditserve::client
