#include "worker/profile_trace.h"

#include <torch/csrc/autograd/profiler_kineto.h>

#include <cstdio>
#include <exception>
#include <set>

#include "absl/strings/str_cat.h"

namespace ditserve::worker {
namespace {

namespace profiler = torch::autograd::profiler;
using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

std::string FirstLine(const std::exception& e) {
  const std::string what = e.what();
  return what.substr(0, what.find('\n'));
}

}  // namespace

absl::StatusOr<std::unique_ptr<ProfileTrace>> ProfileTrace::Start(bool cuda) {
  if (torch::profiler::impl::profilerEnabled()) {
    return absl::FailedPreconditionError("profiling: a profiler is already recording in this process");
  }
  std::set<ActivityType> activities{ActivityType::CPU};
  if (cuda) activities.insert(ActivityType::CUDA);
  const ProfilerConfig config(ProfilerState::KINETO, /*report_input_shapes=*/true);
  try {
    profiler::prepareProfiler(config, activities);
    profiler::enableProfiler(config, activities);
  } catch (const std::exception& e) {
    return absl::FailedPreconditionError(absl::StrCat("profiling: cannot start: ", FirstLine(e)));
  }
  return std::unique_ptr<ProfileTrace>(new ProfileTrace());
}

absl::Status ProfileTrace::StopAndSave(const std::string& path) {
  if (!recording_) return absl::FailedPreconditionError("profiling: already stopped");
  recording_ = false;
  try {
    std::unique_ptr<profiler::ProfilerResult> result = profiler::disableProfiler();
    result->save(path);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("profiling: cannot write ", path, ": ", FirstLine(e)));
  }
  // save() reports some write failures only through its log: check the file.
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return absl::InternalError(absl::StrCat("profiling: cannot write ", path));
  std::fclose(f);
  return absl::OkStatus();
}

ProfileTrace::~ProfileTrace() {
  if (!recording_) return;
  try {
    profiler::disableProfiler();
  } catch (const std::exception&) {
    // Nothing to report from a destructor; the trace is dropped.
  }
}

}  // namespace ditserve::worker
