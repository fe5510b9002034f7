#pragma once
// A Chrome trace (chrome://tracing, ui.perfetto.dev) of LibTorch's operators
// and, on CUDA, its kernels, recorded with Kineto, the profiler behind
// torch.profiler. For finding where a step's time goes; not for production
// traffic (recording costs time per operator).

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ditserve::worker {

// Records while it lives; one at a time per process. Thread-compatible: start
// and stop it on the thread that runs the work (operators of other threads
// are not recorded).
class ProfileTrace {
 public:
  // Starts recording CPU operators, and CUDA kernels when `cuda`.
  // FAILED_PRECONDITION when a profiler is already recording or LibTorch
  // cannot start one.
  static absl::StatusOr<std::unique_ptr<ProfileTrace>> Start(bool cuda);
  // Stops (once) and writes the trace to `path` (JSON). INTERNAL when the
  // file cannot be written.
  absl::Status StopAndSave(const std::string& path);
  ~ProfileTrace();  // stops without saving if still recording

  ProfileTrace(const ProfileTrace&) = delete;
  ProfileTrace& operator=(const ProfileTrace&) = delete;

 private:
  ProfileTrace() = default;
  bool recording_ = true;
};

}  // namespace ditserve::worker
