#pragma once

// The Flux-only pieces of a Flux diffusers directory (the family-neutral
// ones are in worker/families/components.h), shared by the single-process
// FluxPipeline and the Flux family of the gang's ParallelPipeline (whose
// ranks load different parts). Errors name the file or component at fault.

#include <cstdint>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "worker/models/flux/flux_transformer.h"

namespace ditserve::worker::families {

// model_index.json names FluxPipeline and every component directory exists.
absl::Status CheckFluxDirectory(const std::string& dir);

absl::StatusOr<flux::FluxTransformerConfig> LoadTransformerConfig(const std::string& dir);

// The part of the transformer a rank holds, loaded (only that part's
// tensors are read) and moved to `device`.
absl::StatusOr<std::unique_ptr<flux::FluxTransformer>> LoadTransformer(const std::string& dir,
                                                                       const flux::FluxTransformerConfig& config,
                                                                       at::ScalarType dtype, c10::Device device,
                                                                       const flux::FluxPart& part = {});

// The model's timestep input for `sigma` as diffusers' FluxPipeline rounds
// it: float32 sigma·1000, in `dtype`, divided by 1000; shape [batch].
at::Tensor ModelTimestep(float sigma, int64_t batch, at::ScalarType dtype, c10::Device device);

}  // namespace ditserve::worker::families
