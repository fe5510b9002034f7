// NCCL communicators on CUDA tensors (label gpu). One rank per GPU; skips
// when no GPU is present.

#include <ATen/ATen.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "parallel/process_groups.h"
#include "parallel/rendezvous.h"
#include "tests/harness/multiproc.h"
#include "tests/parallel/collective_checks.h"
#include "tests/parallel/test_gang.h"

namespace ditserve::parallel {
namespace {

int GpuCount() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

// args[0]: ulysses degree; the rest of the world is ring.
DITSERVE_SCENARIO(nccl_collectives) {
  ParallelConfig config;
  config.ulysses_degree = std::stoi(ctx.args.at(0));
  config.ring_degree = ctx.world_size / config.ulysses_degree;
  ProcessGroupsOptions options;
  options.data_backend = Backend::kNccl;
  options.cuda_device = ctx.rank % GpuCount();
  options.timeout = absl::Seconds(120);
  auto groups = JoinTestGang(ctx, config, options);
  if (!groups.ok()) return groups.status();
  const WorldConfig* world = &(*groups)->world();
  const c10::Device device(c10::kCUDA, static_cast<c10::DeviceIndex>(options.cuda_device));
  for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    for (Dim dim : kAllDims) {
      absl::Status s = CheckGroupCollectives((*groups)->group(dim), world->members(dim), ctx.rank,
                                             dtype, device);
      if (!s.ok()) return s;
    }
  }
  // A CPU tensor is refused with a clear error, not a crash.
  at::Tensor cpu = at::ones({4});
  absl::Status s = (*groups)->group(Dim::kWorld).AllReduce(cpu, ReduceOp::kSum);
  if (s.code() != absl::StatusCode::kInvalidArgument) {
    return absl::InternalError(absl::StrCat("CPU tensor on NCCL: ", s.ToString()));
  }
  std::printf("rank %d: NCCL checks passed on %s\n", ctx.rank, device.str().c_str());
  (*groups)->AbortAll();
  (*groups)->AbortAll();
  return absl::OkStatus();
}

TEST(NcclCommunicator, EveryOpOnEveryGroup) {
  const int gpus = GpuCount();
  if (gpus == 0) GTEST_SKIP() << "no CUDA device";
  for (int world : {1, 2, 4}) {
    if (world > gpus) break;
    testing::LaunchOptions options;
    options.world_size = world;
    options.args = {absl::StrCat(world >= 2 ? 2 : 1)};
    testing::ExpectAllRanksOk(testing::LaunchScenario("nccl_collectives", options));
  }
}

}  // namespace
}  // namespace ditserve::parallel
