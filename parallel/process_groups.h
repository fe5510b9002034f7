#pragma once

#include <array>
#include <memory>
#include <string>

#include <torch/csrc/distributed/c10d/Store.hpp>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "parallel/communicator.h"
#include "parallel/world_config.h"

namespace ditserve::parallel {

enum class Backend { kGloo, kNccl };

struct ProcessGroupsOptions {
  // Data plane: kGloo (CPU tensors) or kNccl (CUDA tensors; only in CUDA
  // builds). The control group is always Gloo.
  Backend data_backend = Backend::kGloo;
  absl::Duration timeout = absl::Seconds(300);
  // With kGloo: a group whose members all run on this machine moves its
  // data through shared memory (ShmCommunicator) instead of loopback TCP.
  // A group some member cannot map (another machine, /dev/shm full) falls
  // back to Gloo, and group rank 0 says why on stderr.
  bool shared_memory = true;
  // Gloo device selection (see GlooCommunicatorOptions).
  std::string gloo_interface;
  bool loopback_only = true;
  // Exchange shapes before every data-plane collective (see
  // GlooCommunicatorOptions::check_shapes). Costs one small all-gather per
  // collective; callers that agree on every shape up front (the generation
  // pipeline checks once per call) turn it off. The control group always
  // checks.
  bool check_shapes = true;
  // CUDA device for NCCL.
  int cuda_device = 0;
};

// One rank's communicators: one per dimension of its WorldConfig (ulysses,
// ring, pipefusion, cfg, data, sequence, world) on the data-plane backend,
// plus a world-wide Gloo control group for metadata. Groups are created in
// the same order on every rank, so creation cannot deadlock. Owns the
// communicators; not thread-safe.
class ProcessGroups {
 public:
  static absl::StatusOr<std::unique_ptr<ProcessGroups>> Create(
      const WorldConfig& world, const c10::intrusive_ptr<c10d::Store>& store,
      const ProcessGroupsOptions& options);

  const WorldConfig& world() const { return world_; }
  Communicator& group(Dim dim) { return *groups_[static_cast<int>(dim)]; }
  Communicator& control() { return *control_; }
  const c10::intrusive_ptr<c10d::Store>& store() const { return store_; }
  // Aborts every communicator. Idempotent.
  void AbortAll();

 private:
  explicit ProcessGroups(const WorldConfig& world) : world_(world) {}
  WorldConfig world_;
  c10::intrusive_ptr<c10d::Store> store_;
  std::array<std::unique_ptr<Communicator>, kAllDims.size()> groups_;
  std::unique_ptr<Communicator> control_;
};

}  // namespace ditserve::parallel
