#pragma once

// A validated generation request with every default filled in: what the
// queue, the batcher and the gang see. Torch-free plain value.

#include <cstdint>
#include <string>

#include "core/step_cache.h"
#include "ditserve/v1/control.pb.h"
#include "ditserve/v1/generation.pb.h"

namespace ditserve::server {

struct GenerationParams {
  std::string prompt;
  std::string negative_prompt;
  int height = 0;
  int width = 0;
  int num_inference_steps = 0;
  double guidance_scale = 3.5;  // the family's default when the request leaves it unset
  double true_cfg_scale = 1.0;
  uint64_t seed = 0;
  int num_images = 1;
  v1::ImageFormat format = v1::IMAGE_FORMAT_PNG;
  int quality = 90;
  int priority = 0;
  // Text tokens, resolved against the model's default (0 only when the
  // gang did not report its default).
  int max_sequence_length = 0;

  // Whether classifier-free guidance runs (doubles the transformer's work):
  // the family's CFG scale > 1 (core::ResolveGuidance), resolved at
  // validation.
  bool cfg = false;
  // The step cache, resolved against the server's defaults (never
  // STEP_CACHE_UNSPECIFIED; kNone has threshold 0).
  core::StepCacheOptions cache;
};

// Requests that can share one gang call: equal size, steps, guidance scale,
// CFG use, step-cache method and max_sequence_length; thresholds may differ, each request
// decides its own steps (ParallelPipeline::Generate's contract).
bool Compatible(const GenerationParams& a, const GenerationParams& b);

// Requests that can share a running set (step-level continuous batching):
// equal size and max_sequence_length, and neither with a step cache;
// steps, seeds, guidance scales and CFG use may differ (each member keeps
// its own schedule and rows; GangModel::CheckJoinable is the gang's half).
bool ShareRunningSet(const GenerationParams& a, const GenerationParams& b);

// The control protocol's Item for image `index` (0 ≤ index < num_images)
// of admitted request `request_id`: every field the gang generates from,
// with seed + index (the worker's RequestFromItem is the other half).
control::v1::Item ToControlItem(const GenerationParams& params, uint64_t request_id, int index);

}  // namespace ditserve::server
