// CommStats / CommTimer: what --comm_stats prints per parallel method.

#include "worker/pipelines/comm_stats.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace ditserve::worker::pipelines {
namespace {

TEST(CommStats, AccumulatesPerMethod) {
  CommStats stats;
  stats.Add("cfg", 100, 0.5);
  stats.Add("cfg", 50, 0.25);
  stats.Add("ulysses", 10, 2.0, 0.5);
  const CommStats::Entry& cfg = stats.by_method.at("cfg");
  EXPECT_EQ(cfg.bytes_sent, 150);
  EXPECT_EQ(cfg.calls, 2);
  EXPECT_DOUBLE_EQ(cfg.seconds, 0.75);
  EXPECT_DOUBLE_EQ(cfg.wait_seconds, 0.75);  // communication-only scopes: all waiting
  const CommStats::Entry& ulysses = stats.by_method.at("ulysses");
  EXPECT_DOUBLE_EQ(ulysses.seconds, 2.0);
  EXPECT_DOUBLE_EQ(ulysses.wait_seconds, 0.5);
}

TEST(CommTimer, TimesItsScopeAndTakesTheWaitItIsTold) {
  CommStats stats;
  {
    CommTimer timer(&stats, "pipefusion");
    timer.AddBytes(7);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  {
    CommTimer timer(&stats, "ring");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    timer.SetWaitSeconds(0.001);
  }
  const CommStats::Entry& pf = stats.by_method.at("pipefusion");
  EXPECT_EQ(pf.bytes_sent, 7);
  EXPECT_GE(pf.seconds, 0.02);
  EXPECT_DOUBLE_EQ(pf.wait_seconds, pf.seconds);
  const CommStats::Entry& ring = stats.by_method.at("ring");
  EXPECT_GE(ring.seconds, 0.02);
  EXPECT_DOUBLE_EQ(ring.wait_seconds, 0.001);
  CommTimer ignored(nullptr, "data");  // no stats: nothing recorded, no crash
}

}  // namespace
}  // namespace ditserve::worker::pipelines
