#pragma once

// transformers' T5EncoderModel, v1.1 flavour (text_encoder_2/ of a Flux
// directory): shared token embedding, pre-RMSNorm blocks with bucketed
// relative position bias (computed in the first block, shared by all),
// unscaled attention, gated-GELU feed-forward, final RMSNorm. Parameter
// names equal the checkpoint keys ("encoder.block.0.layer.0.SelfAttention.q.weight").

#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "worker/models/common/parameter_init.h"
#include "worker/weights/safetensors.h"

namespace torch::nn {
class Module;
}

namespace ditserve::worker::text {

struct T5Config {
  int vocab_size = 32128;
  int d_model = 4096;
  int d_kv = 64;
  int d_ff = 10240;
  int num_layers = 24;
  int num_heads = 64;
  int relative_attention_num_buckets = 32;
  int relative_attention_max_distance = 128;
  double layer_norm_epsilon = 1e-6;
  std::string dense_act_fn = "gelu_new";  // gated (is_gated_act)
};

absl::StatusOr<T5Config> ParseT5Config(const std::string& json_text);

// Bucket of each relative position (key - query), bidirectional, as T5.
at::Tensor T5RelativePositionBucket(const at::Tensor& relative_position, int num_buckets, int max_distance);

class T5Encoder {
 public:
  // Parameters in `dtype` on CPU, initialised as torch::nn's layers are, or
  // left uninitialised for Load to fill (see models::ParameterInit).
  static absl::StatusOr<std::unique_ptr<T5Encoder>> Create(
      const T5Config& config, at::ScalarType dtype,
      models::ParameterInit init = models::ParameterInit::kTorchDefault);
  ~T5Encoder();
  const T5Config& config() const;
  // The parameters, named as the checkpoint keys (for writing checkpoints).
  torch::nn::Module& module();
  absl::Status Load(const weights::SafetensorsCheckpoint& checkpoint);
  // input_ids [B, T] int64 -> last hidden state [B, T, d_model].
  // `attention_mask` [B, T] (1 keep, 0 padding; undefined: all kept) masks
  // the padding keys as transformers does (float32's lowest value added to
  // their scores); padding queries still get outputs.
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {}) const;

 private:
  struct Impl;
  explicit T5Encoder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ditserve::worker::text
