#pragma once

// The pieces of a Flux diffusers directory, loaded one by one, shared by
// the single-process FluxPipeline and the gang's ParallelPipeline (whose
// ranks load different subsets). Errors name the file or component at fault.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/models/flux/flow_match_scheduler.h"
#include "worker/models/flux/flux_transformer.h"
#include "worker/models/vae/autoencoder_kl.h"

namespace ditserve::worker::pipelines {

// Runs `move`, which moves the component named `what` to `device` (nothing
// to do on CPU); an exception from LibTorch becomes FAILED_PRECONDITION
// "cannot move <what> to <device>: <its first line>".
absl::Status MoveToDevice(absl::string_view what, c10::Device device, const std::function<void()>& move);

// model_index.json names FluxPipeline and every component directory exists.
absl::Status CheckFluxDirectory(const std::string& dir);

absl::StatusOr<flux::FlowMatchSchedulerConfig> LoadSchedulerConfig(const std::string& dir);
absl::StatusOr<flux::FluxTransformerConfig> LoadTransformerConfig(const std::string& dir);
absl::StatusOr<vae::VaeConfig> LoadVaeConfig(const std::string& dir);

// The part of the transformer a rank holds, loaded (only that part's
// tensors are read) and moved to `device`.
absl::StatusOr<std::unique_ptr<flux::FluxTransformer>> LoadTransformer(const std::string& dir,
                                                                       const flux::FluxTransformerConfig& config,
                                                                       at::ScalarType dtype, c10::Device device,
                                                                       const flux::FluxPart& part = {});
absl::StatusOr<std::unique_ptr<vae::VaeDecoder>> LoadVaeDecoder(const std::string& dir, const vae::VaeConfig& config,
                                                                at::ScalarType dtype, c10::Device device);

// The initial noise of a request: [1, C, h, w] float32 normals from PyTorch's
// CPU generator seeded with `seed` (as torch.randn with a CPU generator),
// packed to [1, h/2·w/2, 4C].
at::Tensor InitialLatents(uint64_t seed, int64_t channels, int64_t h, int64_t w);

// The model's timestep input for `sigma` as diffusers' FluxPipeline rounds
// it: float32 sigma·1000, in `dtype`, divided by 1000; shape [batch].
at::Tensor ModelTimestep(float sigma, int64_t batch, at::ScalarType dtype, c10::Device device);

// Packed latents [1, S, 4C] of an (h × w) latent image -> uint8 [H, W, 3].
absl::StatusOr<at::Tensor> DecodeLatents(const vae::VaeDecoder& vae, const at::Tensor& packed, int64_t h, int64_t w);

}  // namespace ditserve::worker::pipelines
