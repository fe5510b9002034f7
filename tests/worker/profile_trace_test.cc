// ProfileTrace records LibTorch's operators into a Chrome trace.

#include "worker/profile_trace.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "tests/harness/reference.h"

namespace ditserve::worker {
namespace {

TEST(ProfileTrace, RecordsOperatorsIntoAChromeTrace) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/trace_", getpid(), ".json");
  auto trace = ProfileTrace::Start(/*cuda=*/false);
  ASSERT_TRUE(trace.ok()) << trace.status();
  // A second recorder in the same process is refused.
  EXPECT_EQ(ProfileTrace::Start(false).status().code(), absl::StatusCode::kFailedPrecondition);
  const at::Tensor a = at::randn({64, 64});
  const at::Tensor b = at::mm(a, a).relu();
  ASSERT_TRUE((*trace)->StopAndSave(path).ok());
  const std::string json = testing::ReadTextFile(path);
  EXPECT_NE(json.find("\"traceEvents\""), std::string::npos);
  EXPECT_NE(json.find("aten::mm"), std::string::npos);
  EXPECT_NE(json.find("aten::relu"), std::string::npos);
  EXPECT_EQ((*trace)->StopAndSave(path).code(), absl::StatusCode::kFailedPrecondition);
  std::filesystem::remove(path);
  // Stopped, so a new one may start; dropped without saving, it stops.
  {
    auto again = ProfileTrace::Start(false);
    ASSERT_TRUE(again.ok()) << again.status();
  }
  EXPECT_TRUE(ProfileTrace::Start(false).ok());
}

TEST(ProfileTrace, UnwritablePathIsAnError) {
  auto trace = ProfileTrace::Start(false);
  ASSERT_TRUE(trace.ok()) << trace.status();
  const at::Tensor a = at::ones({4}) + 1;
  const absl::Status s = (*trace)->StopAndSave("/nonexistent-dir/trace.json");
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
}

}  // namespace
}  // namespace ditserve::worker
