#pragma once

// The part of a ModelFamily that a DDPM-trained family (PixArt, HunyuanDiT)
// shares: its scheduler/scheduler_config.json names a discrete-time
// scheduler (core/denoising_schedule.h), read once at open; a request's
// step count is checked against it, and every run's schedule comes from
// it. TeaCache has published no coefficients for these families and none
// is fitted yet: the identity polynomial (the raw relative change
// accumulates).

#include <string>

#include "absl/status/status.h"
#include "core/denoising_schedule.h"
#include "worker/families/model_family.h"

namespace ditserve::worker::families {

class DiscreteScheduleFamily : public ModelFamily {
 public:
  // num_inference_steps the scheduler cannot place: INVALID_ARGUMENT
  // naming the field.
  absl::Status ValidateRequest(const GenerationRequest& request) const override;
  absl::StatusOr<core::DenoisingSchedule> Schedule(int steps, int64_t image_tokens) const override;
  core::TeaCachePolynomial TeaCachePolynomial() const override { return {1.0, 0.0}; }

 protected:
  // Reads dir/scheduler/scheduler_config.json; INVALID_ARGUMENT naming the
  // file and the field (an unsupported class or option) otherwise.
  absl::Status ReadScheduler(const std::string& dir);

 private:
  core::DiscreteSchedulerConfig scheduler_;
};

}  // namespace ditserve::worker::families
