// ditserve-calibrate as a user runs it: a CPU profile with the links copied
// from another profile (what a one-GPU machine does) reads back as a
// profile, with measured device rates, the copied links and a source that
// says both; bad flags and a missing GPU exit 2 with one line. (The
// measured link and the --device cuda rates run on a lent GPU:
// scripts/gpu-check.)

#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "planner/hardware_profile.h"
#include "tests/harness/binaries.h"

namespace ditserve::planner {
namespace {

using testing::BinDir;
using testing::RunOne;

std::string SourceDir() {
  const char* s = std::getenv("DITSERVE_SOURCE_DIR");
  return s != nullptr ? s : ".";
}

TEST(Calibrate, WritesAProfileWithCopiedLinks) {
  const std::string out = absl::StrCat(::testing::TempDir(), "/calibrated_", getpid(), ".json");
  const std::string from = SourceDir() + "/hardware/h100-sxm.json";
  const auto r = RunOne({BinDir() + "/ditserve-calibrate", "--repeats=1", "--links_from=" + from, "--out=" + out,
                         "--name=test machine"},
                        absl::Minutes(5));
  ASSERT_EQ(r.exit.exit_code, 0) << r.output;
  auto p = ReadHardwareProfile(out);
  ASSERT_TRUE(p.ok()) << p.status();
  auto h100 = ReadHardwareProfile(from);
  ASSERT_TRUE(h100.ok()) << h100.status();
  EXPECT_EQ(p->name, "test machine");
  EXPECT_EQ(p->device.element_bytes, 4);  // float32 on the CPU
  EXPECT_GT(p->device.gemm_tflops, 0);
  EXPECT_GT(p->device.attention_tflops, 0);
  EXPECT_GT(p->device.memory_bandwidth_gbs, 0);
  EXPECT_EQ(p->gpus_per_node, h100->gpus_per_node);
  EXPECT_EQ(p->intra_node.kind, h100->intra_node.kind);
  EXPECT_EQ(p->intra_node.bandwidth_gbs, h100->intra_node.bandwidth_gbs);
  EXPECT_EQ(p->inter_node.latency_us, h100->inter_node.latency_us);
  EXPECT_NE(p->source.find("calibrated: ditserve-calibrate --device cpu"), std::string::npos) << p->source;
  EXPECT_NE(p->source.find("links copied from " + from), std::string::npos) << p->source;
  std::filesystem::remove(out);
}

TEST(Calibrate, BadFlagsExitWithOneLine) {
  const std::string out = absl::StrCat(::testing::TempDir(), "/never_", getpid(), ".json");
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--device=tpu"}, "--device must be cpu or cuda, got 'tpu'"},
      {{"--repeats=0"}, "--repeats must be in [1, 1000]"},
      {{"--links_from=/nope.json"}, "/nope.json"},
  };
  for (const auto& [flags, message] : cases) {
    std::vector<std::string> argv = {BinDir() + "/ditserve-calibrate", "--out=" + out};
    argv.insert(argv.end(), flags.begin(), flags.end());
    const auto r = RunOne(argv, absl::Minutes(5));
    EXPECT_EQ(r.exit.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
  // Without a GPU (or a CUDA build), --device cuda says so.
  const auto r = RunOne({BinDir() + "/ditserve-calibrate", "--out=" + out, "--device=cuda"}, absl::Minutes(5));
  if (r.exit.exit_code == 2) {
    EXPECT_NE(r.output.find("--device cuda but no CUDA device is available"), std::string::npos) << r.output;
  }
  EXPECT_FALSE(std::filesystem::exists(out));
}

}  // namespace
}  // namespace ditserve::planner
