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

TEST(Generate, ImagePathsNumberSeveralImages) {
  EXPECT_EQ(ImagePath("out.png", 0, 1), "out.png");
  EXPECT_EQ(ImagePath("dir.v2/out.png", 1, 2), "dir.v2/out_1.png");
  EXPECT_EQ(ImagePath("dir.v2/out", 0, 2), "dir.v2/out_0");
}

}  // namespace
}  // namespace ditserve::client
