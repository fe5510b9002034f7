#pragma once

// Family-neutral pieces of a diffusers directory, loaded one by one, that
// every family and the gang's ParallelPipeline share: the device move, the
// flow-matching scheduler config, the VAE, the initial noise and the
// decode. Errors name the file or component at fault.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/families/text_conditioner.h"
#include "worker/models/common/dit_transformer.h"
#include "worker/models/flux/flow_match_scheduler.h"
#include "worker/models/text/t5_encoder.h"
#include "worker/models/vae/autoencoder_kl.h"

namespace ditserve::worker::families {

// Runs `move`, which moves the component named `what` to `device` (nothing
// to do on CPU); an exception from LibTorch becomes FAILED_PRECONDITION
// "cannot move <what> to <device>: <its first line>".
absl::Status MoveToDevice(absl::string_view what, c10::Device device, const std::function<void()>& move);

// scheduler/scheduler_config.json of a flow-matching family (Flux, SD3).
absl::StatusOr<flux::FlowMatchSchedulerConfig> LoadSchedulerConfig(const std::string& dir);
absl::StatusOr<vae::VaeConfig> LoadVaeConfig(const std::string& dir);
// The T5 encoder of `dir`/`subdir` (config.json and its safetensors) in
// `dtype` on the CPU: INVALID_ARGUMENT "<config path>: …" for a bad config,
// "<subdir>: …" for weights that do not fit; NOT_FOUND for missing files.
absl::StatusOr<std::unique_ptr<text::T5Encoder>> LoadT5Encoder(const std::string& dir, const std::string& subdir,
                                                              at::ScalarType dtype);
absl::StatusOr<std::unique_ptr<vae::VaeDecoder>> LoadVaeDecoder(const std::string& dir, const vae::VaeConfig& config,
                                                                at::ScalarType dtype, c10::Device device);

// Fills `transformer`'s parameters from dir/transformer/ and moves it to
// `device`. The load is partial (only the held tensors are read, the rest
// of the checkpoint is not checked) exactly when the transformer holds a
// part of the model (transformer.part(), a PipeFusion stage).
absl::Status LoadTransformerWeights(const std::string& dir, models::DitTransformer& transformer, c10::Device device);

// INVALID_ARGUMENT naming both when the transformer's text widths
// (joint_attention_dim, pooled_projection_dim) are not the loaded text
// conditioner's.
absl::Status CheckTextWidths(const std::string& dir, int joint_attention_dim, int pooled_projection_dim,
                             const TextConditioner& text);

// The initial noise of a request: [1, C, h, w] float32 normals from PyTorch's
// CPU generator seeded with `seed` (as torch.randn with a CPU generator),
// packed to [1, h/2·w/2, 4C].
at::Tensor InitialLatents(uint64_t seed, int64_t channels, int64_t h, int64_t w);
// The next [1, C, h, w] float32 normals of `generator`, packed (what
// InitialLatents draws first, and a stochastic scheduler's later draws:
// diffusers' randn_tensor with the pipeline's CPU generator).
at::Tensor PackedNoise(at::Generator& generator, int64_t channels, int64_t h, int64_t w);

// Packed latents [B, S, 4C] of an (h × w) latent image -> the VAE's input
// [B, C, h, w]: unpacked, the config's scaling and shift undone.
at::Tensor VaeLatents(const vae::VaeConfig& config, const at::Tensor& packed, int64_t h, int64_t w);

// Packed latents [1, S, 4C] of an (h × w) latent image -> uint8 [H, W, 3]
// (VaeLatents, then the whole decode).
absl::StatusOr<at::Tensor> DecodeLatents(const vae::VaeDecoder& vae, const at::Tensor& packed, int64_t h, int64_t w);

}  // namespace ditserve::worker::families
