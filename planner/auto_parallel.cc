#include "planner/auto_parallel.h"

#include "absl/strings/str_cat.h"
#include "planner/plan.h"

namespace ditserve::planner {

absl::StatusOr<AutoParallelChoice> ChooseParallelConfig(const AutoParallelRequest& a) {
  if (a.hardware_path.empty()) return absl::InvalidArgumentError("--parallel auto needs --hardware FILE (hardware/*.json)");
  auto hw = ReadHardwareProfile(a.hardware_path);
  if (!hw.ok()) return hw.status();
  auto geometry = core::ReadModelGeometry(a.model_dir);
  if (!geometry.ok()) return geometry.status();
  auto model = ModelFromGeometry(*geometry, a.model_dir, a.max_sequence_length);
  if (!model.ok()) return model.status();
  PlanRequest r;
  r.height = a.height > 0 ? a.height : geometry->default_size;
  r.width = a.width > 0 ? a.width : geometry->default_size;
  r.steps = a.steps;
  r.images = a.images;
  r.cfg = core::ResolveGuidance(*geometry, a.guidance_scale, a.true_cfg_scale).cfg;
  r.warmup_steps = a.pipefusion.warmup_steps;
  r.num_pipeline_patch = a.pipefusion.num_pipeline_patch;
  r.parallel_vae = a.parallel_vae;
  r.nodes = a.nodes;
  auto plan = Plan(*model, *hw, r, a.world_size, 0);
  if (!plan.ok()) return plan.status();
  // Drop what the engine itself would refuse (its checks are the contract),
  // keeping the planner's order.
  PlanResult accepted;
  accepted.memory_cap_bytes = plan->memory_cap_bytes;
  for (const Prediction& p : plan->predictions) {
    if (!p.invalid.empty() || p.peak_bytes > plan->memory_cap_bytes) continue;
    if (!core::ValidateParallelModel(p.config, a.pipefusion, *geometry).ok()) continue;
    if (!core::ValidateParallelRequest(p.config, a.pipefusion, *geometry, r.height, r.width, r.cfg).ok()) continue;
    accepted.predictions.push_back(p);
  }
  if (accepted.predictions.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("--parallel auto: no configuration of ", a.world_size,
                                                      " ranks fits this model and request on ", hw->name));
  }
  accepted.best = 0;
  return AutoParallelChoice{accepted.predictions[0].config,
                            absl::StrCat(ExplainChoice(accepted), " [", hw->name, ", ", r.height, "x", r.width, ", ",
                                         r.steps, " steps, ", r.images, " image(s), cfg ", r.cfg ? "on" : "off", "]")};
}

}  // namespace ditserve::planner
