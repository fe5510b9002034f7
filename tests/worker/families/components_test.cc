// The family-neutral components that need no model directory.

#include "worker/families/components.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace ditserve::worker::families {
namespace {

TEST(MoveToDevice, CpuIsANoOp) {
  bool called = false;
  EXPECT_TRUE(MoveToDevice("the VAE", c10::Device(c10::kCPU), [&] { called = true; }).ok());
  EXPECT_FALSE(called);
}

TEST(MoveToDevice, RunsTheMoveForOtherDevices) {
  bool called = false;
  EXPECT_TRUE(MoveToDevice("the VAE", c10::Device(c10::kCUDA, 1), [&] { called = true; }).ok());
  EXPECT_TRUE(called);
}

TEST(MoveToDevice, ALibTorchErrorBecomesAOneLineFailedPrecondition) {
  const absl::Status s = MoveToDevice("the text encoders", c10::Device(c10::kCUDA, 0), [] {
    throw std::runtime_error("No CUDA GPUs are available\nException raised from ... (stack)");
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "cannot move the text encoders to cuda:0: No CUDA GPUs are available");
}

}  // namespace
}  // namespace ditserve::worker::families
