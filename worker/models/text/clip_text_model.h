#pragma once

// transformers' CLIPTextModel (text_encoder/ of a Flux directory) and
// CLIPTextModelWithProjection (text_encoder/ and text_encoder_2/ of a
// Stable Diffusion 3 directory): token and position embeddings,
// pre-LayerNorm causal transformer, final LayerNorm, pooled output at the
// end-of-text token and, with a projection, text_projection (a Linear
// without bias) of it. Parameter names equal the checkpoint keys
// ("text_model.encoder.layers.0.self_attn.q_proj.weight" and
// "text_projection.weight" as transformers 4 writes them, and transformers
// 5 writes a CLIPTextModelWithProjection; a CLIPTextModel's keys without
// "text_model." as transformers 5 writes them).

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

struct ClipTextConfig {
  int vocab_size = 49408;
  int hidden_size = 768;
  int intermediate_size = 3072;
  int num_hidden_layers = 12;
  int num_attention_heads = 12;
  int max_position_embeddings = 77;
  std::string hidden_act = "quick_gelu";  // or "gelu"
  double layer_norm_eps = 1e-5;
  int eos_token_id = 2;  // 2: legacy, pool at the highest token id
  int projection_dim = 512;
  // config.json's architectures names CLIPTextModelWithProjection: the
  // model has text_projection [projection_dim, hidden_size].
  bool with_projection = false;
};

absl::StatusOr<ClipTextConfig> ParseClipTextConfig(const std::string& json_text);

struct ClipTextOutput {
  at::Tensor last_hidden_state;  // [B, T, hidden]
  at::Tensor pooled;             // [B, hidden]
  // transformers' hidden_states[-2]: the input of the last encoder layer
  // (before the final LayerNorm), [B, T, hidden]; undefined without layers.
  at::Tensor penultimate;
  // text_projection(pooled), [B, projection_dim]; undefined without a
  // projection.
  at::Tensor text_embeds;
};

class ClipTextModel {
 public:
  // Parameters in `dtype` on CPU, initialised as torch::nn's layers are, or
  // left uninitialised for Load to fill (see models::ParameterInit).
  static absl::StatusOr<std::unique_ptr<ClipTextModel>> Create(
      const ClipTextConfig& config, at::ScalarType dtype,
      models::ParameterInit init = models::ParameterInit::kTorchDefault);
  ~ClipTextModel();
  const ClipTextConfig& config() const;
  // The parameters, named as the checkpoint keys (for writing checkpoints).
  torch::nn::Module& module();
  // Fills every parameter; either key layout above loads. INVALID_ARGUMENT
  // lists missing and unexpected keys.
  absl::Status Load(const weights::SafetensorsCheckpoint& checkpoint);
  // input_ids [B, T] int64, T <= max_position_embeddings; ids < vocab_size.
  absl::StatusOr<ClipTextOutput> Forward(const at::Tensor& input_ids) const;

 private:
  struct Impl;
  explicit ClipTextModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ditserve::worker::text
