#include "parallel/process_groups.h"

#include <cstdio>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "parallel/gloo_communicator.h"
#include "parallel/shm_communicator.h"
#if DITSERVE_HAVE_CUDA
#include "parallel/nccl_communicator.h"
#endif

namespace ditserve::parallel {
namespace {

absl::StatusOr<std::unique_ptr<Communicator>> MakeGloo(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int size, const std::string& name,
    const ProcessGroupsOptions& options, bool check_shapes) {
  GlooCommunicatorOptions gloo;
  gloo.name = name;
  gloo.timeout = options.timeout;
  gloo.interface = options.gloo_interface;
  gloo.loopback_only = options.loopback_only;
  gloo.check_shapes = check_shapes;
  return CreateGlooCommunicator(store, rank, size, gloo);
}

// Shared memory when every member can map it, else Gloo.
absl::StatusOr<std::unique_ptr<Communicator>> MakeCpuDataGroup(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int size, const std::string& name,
    const ProcessGroupsOptions& options, const std::shared_ptr<ShmProgressDomain>& progress) {
  if (options.shared_memory && size > 1) {
    ShmCommunicatorOptions shm;
    shm.progress = progress;
    shm.name = name;
    shm.timeout = options.timeout;
    shm.check_shapes = options.check_shapes;
    std::string fallback_reason;
    auto comm = CreateShmCommunicator(store, rank, size, shm, &fallback_reason);
    if (!comm.ok() || *comm) return comm;
    if (rank == 0) {
      std::fprintf(stderr, "group %s: shared memory unavailable (%s); using Gloo over TCP\n",
                   name.c_str(), fallback_reason.c_str());
    }
  }
  return MakeGloo(store, rank, size, name, options, options.check_shapes);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ProcessGroups>> ProcessGroups::Create(
    const WorldConfig& world, const c10::intrusive_ptr<c10d::Store>& store,
    const ProcessGroupsOptions& options) {
  std::unique_ptr<ProcessGroups> groups(new ProcessGroups(world));
  groups->store_ = store;
  auto control = MakeGloo(store, world.rank(), world.world_size(), "control", options, /*check_shapes=*/true);
  if (!control.ok()) return control.status();
  groups->control_ = *std::move(control);
  // The data-plane groups are driven by one thread: one progress domain
  // (its helper thread starts with the first shared-memory group).
  const std::shared_ptr<ShmProgressDomain> progress = NewShmProgressDomain();
  for (Dim dim : kAllDims) {
    const std::string name = world.GroupName(dim);
    absl::StatusOr<std::unique_ptr<Communicator>> comm;
    if (options.data_backend == Backend::kGloo) {
      comm = MakeCpuDataGroup(store, world.rank_in(dim), world.degree(dim), name, options, progress);
    } else {
#if DITSERVE_HAVE_CUDA
      NcclCommunicatorOptions nccl;
      nccl.name = name;
      nccl.timeout = options.timeout;
      nccl.device_index = options.cuda_device;
      nccl.check_shapes = options.check_shapes;
      comm = CreateNcclCommunicator(store, world.rank_in(dim), world.degree(dim), nccl);
#else
      comm = absl::FailedPreconditionError(
          "the NCCL backend needs a CUDA build of ditserve (-DDITSERVE_CUDA=ON)");
#endif
    }
    if (!comm.ok()) {
      groups->AbortAll();
      return comm.status();
    }
    groups->groups_[static_cast<int>(dim)] = *std::move(comm);
  }
  return groups;
}

void ProcessGroups::AbortAll() {
  for (auto& g : groups_) {
    if (g) g->Abort();
  }
  if (control_) control_->Abort();
}

}  // namespace ditserve::parallel
