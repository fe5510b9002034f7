#include "worker/families/discrete_schedule_family.h"

#include "absl/strings/str_cat.h"
#include "util/read_file.h"

namespace ditserve::worker::families {

absl::Status DiscreteScheduleFamily::ReadScheduler(const std::string& dir) {
  auto text = util::ReadFileToString(dir + "/scheduler/scheduler_config.json");
  if (!text.ok()) return text.status();
  auto scheduler = core::ParseDiscreteSchedulerConfig(*text);
  if (!scheduler.ok()) return absl::InvalidArgumentError(absl::StrCat(dir, "/scheduler/", scheduler.status().message()));
  scheduler_ = *scheduler;
  return absl::OkStatus();
}

absl::Status DiscreteScheduleFamily::ValidateRequest(const GenerationRequest& request) const {
  auto schedule = core::MakeDiscreteSchedule(scheduler_, request.num_inference_steps);
  if (!schedule.ok()) return absl::InvalidArgumentError(absl::StrCat("num_inference_steps: ", schedule.status().message()));
  return absl::OkStatus();
}

absl::StatusOr<core::DenoisingSchedule> DiscreteScheduleFamily::Schedule(int steps, int64_t /*image_tokens*/) const {
  return core::MakeDiscreteSchedule(scheduler_, steps);
}

}  // namespace ditserve::worker::families
