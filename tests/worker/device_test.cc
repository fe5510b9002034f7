#include "worker/device.h"

#include <gtest/gtest.h>

namespace ditserve::worker {
namespace {

TEST(ResolveDevice, CpuAndAuto) {
  EXPECT_EQ(*ResolveDevice("cpu", 0, 4, 8), c10::Device(c10::kCPU));
  EXPECT_EQ(*ResolveDevice("auto", 3, 4, 0), c10::Device(c10::kCPU));
  EXPECT_EQ(*ResolveDevice("auto", 3, 4, 4), c10::Device(c10::kCUDA, 3));
  EXPECT_EQ(*ResolveDevice("cuda", 1, 2, 8), c10::Device(c10::kCUDA, 1));
}

TEST(ResolveDevice, Errors) {
  auto bad = ResolveDevice("tpu", 0, 1, 0);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "--device must be cpu, cuda or auto, got 'tpu'");
  EXPECT_EQ(ResolveDevice("cuda", 0, 1, 0).status().code(), absl::StatusCode::kFailedPrecondition);
  // Two ranks may not share a GPU under NCCL (it reports "invalid usage").
  auto shared = ResolveDevice("auto", 1, 2, 1);
  EXPECT_EQ(shared.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(shared.status().message(),
            "2 ranks on this machine but only 1 CUDA devices: NCCL needs one GPU per rank "
            "(lower --nproc, or pass --device=cpu)");
  EXPECT_EQ(ResolveDevice("cuda", 5, 2, 4).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ditserve::worker
