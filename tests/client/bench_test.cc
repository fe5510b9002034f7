#include "client/bench.h"

#include <gtest/gtest.h>

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

TEST(Generate, ImagePathsNumberSeveralImages) {
  EXPECT_EQ(ImagePath("out.png", 0, 1), "out.png");
  EXPECT_EQ(ImagePath("dir.v2/out.png", 1, 2), "dir.v2/out_1.png");
  EXPECT_EQ(ImagePath("dir.v2/out", 0, 2), "dir.v2/out_0");
}

}  // namespace
}  // namespace ditserve::client
