#include "server/request.h"

#include "proto/step_cache_enum.h"

namespace ditserve::server {

bool Compatible(const GenerationParams& a, const GenerationParams& b) {
  return a.height == b.height && a.width == b.width &&
         a.num_inference_steps == b.num_inference_steps &&
         a.guidance_scale == b.guidance_scale && a.cfg == b.cfg &&
         a.cache.method == b.cache.method && a.max_sequence_length == b.max_sequence_length;
}

bool ShareRunningSet(const GenerationParams& a, const GenerationParams& b) {
  return a.height == b.height && a.width == b.width && a.max_sequence_length == b.max_sequence_length && a.cache.method == core::StepCacheMethod::kNone &&
         b.cache.method == core::StepCacheMethod::kNone;
}

control::v1::Item ToControlItem(const GenerationParams& params, uint64_t request_id, int index) {
  control::v1::Item item;
  item.set_request_id(request_id);
  item.set_prompt(params.prompt);
  item.set_negative_prompt(params.negative_prompt);
  item.set_height(params.height);
  item.set_width(params.width);
  item.set_num_inference_steps(params.num_inference_steps);
  item.set_guidance_scale(params.guidance_scale);
  item.set_true_cfg_scale(params.true_cfg_scale);
  item.set_seed(params.seed + static_cast<uint64_t>(index));
  item.set_step_cache(proto::ToProto(params.cache.method));
  item.set_cache_threshold(params.cache.threshold);
  item.set_max_sequence_length(params.max_sequence_length);
  return item;
}

}  // namespace ditserve::server
