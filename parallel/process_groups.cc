#include "parallel/process_groups.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "parallel/gloo_communicator.h"
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

}  // namespace

absl::StatusOr<std::unique_ptr<ProcessGroups>> ProcessGroups::Create(
    const WorldConfig& world, const c10::intrusive_ptr<c10d::Store>& store,
    const ProcessGroupsOptions& options) {
  std::unique_ptr<ProcessGroups> groups(new ProcessGroups(world));
  groups->store_ = store;
  auto control = MakeGloo(store, world.rank(), world.world_size(), "control", options, /*check_shapes=*/true);
  if (!control.ok()) return control.status();
  groups->control_ = *std::move(control);
  for (Dim dim : kAllDims) {
    const std::string name = world.GroupName(dim);
    absl::StatusOr<std::unique_ptr<Communicator>> comm;
    if (options.data_backend == Backend::kGloo) {
      comm = MakeGloo(store, world.rank_in(dim), world.degree(dim), name, options,
                      options.check_shapes);
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
