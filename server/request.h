#pragma once

// A validated generation request with every default filled in: what the
// queue, the batcher and the gang see. Torch-free plain value.

#include <cstdint>
#include <string>

#include "ditserve/v1/generation.pb.h"

namespace ditserve::server {

struct GenerationParams {
  std::string prompt;
  std::string negative_prompt;
  int height = 0;
  int width = 0;
  int num_inference_steps = 0;
  double guidance_scale = 3.5;
  double true_cfg_scale = 1.0;
  uint64_t seed = 0;
  int num_images = 1;
  v1::ImageFormat format = v1::IMAGE_FORMAT_PNG;
  int quality = 90;
  int priority = 0;

  // Whether true classifier-free guidance runs (doubles the transformer's
  // work): true_cfg_scale > 1 and a negative prompt.
  bool true_cfg() const { return true_cfg_scale > 1.0 && !negative_prompt.empty(); }
};

// Requests that can share one gang call: equal size, steps, guidance and
// true-CFG use (ParallelFluxPipeline::Generate's contract).
bool Compatible(const GenerationParams& a, const GenerationParams& b);

}  // namespace ditserve::server
