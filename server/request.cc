#include "server/request.h"

namespace ditserve::server {

bool Compatible(const GenerationParams& a, const GenerationParams& b) {
  return a.height == b.height && a.width == b.width &&
         a.num_inference_steps == b.num_inference_steps &&
         a.guidance_scale == b.guidance_scale && a.cfg == b.cfg &&
         a.cache.method == b.cache.method;
}

}  // namespace ditserve::server
