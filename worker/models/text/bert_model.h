#pragma once

// transformers' BertModel (text_encoder/ of a HunyuanDiT directory) as
// HunyuanDiTPipeline runs it: prompt_embeds = text_encoder(input_ids,
// attention_mask)[0], the last hidden state. Word + absolute position +
// token-type (all type 0) embeddings and LayerNorm, then post-LayerNorm
// encoder layers: self-attention, residual, LayerNorm; GELU feed-forward,
// residual, LayerNorm. No pooler at run time.
//
// Parameter names equal the checkpoint keys of a saved BertModel
// ("embeddings.word_embeddings.weight",
// "encoder.layer.0.attention.self.query.weight",
// "encoder.layer.0.attention.output.LayerNorm.weight",
// "encoder.layer.0.intermediate.dense.weight",
// "encoder.layer.0.output.dense.weight", …: no "bert." prefix, which only
// the BertFor… heads' checkpoints carry).

#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/models/common/parameter_init.h"
#include "worker/weights/safetensors.h"

namespace torch::nn {
class Module;
}

namespace ditserve::worker::text {

// config.json of a BertModel; defaults are transformers' BertConfig's.
struct BertConfig {
  int vocab_size = 30522;
  int hidden_size = 768;
  int num_hidden_layers = 12;
  int num_attention_heads = 12;
  int intermediate_size = 3072;
  int max_position_embeddings = 512;
  int type_vocab_size = 2;
  double layer_norm_eps = 1e-12;
  std::string hidden_act = "gelu";  // the only one supported: exact (erf) GELU
  int pad_token_id = 0;
};

// INVALID_ARGUMENT for malformed JSON, non-positive sizes, hidden_size not
// divisible by num_attention_heads, a hidden_act other than "gelu", a
// position_embedding_type other than "absolute", or is_decoder true.
absl::StatusOr<BertConfig> ParseBertConfig(const std::string& json_text);

class BertModel {
 public:
  // Parameters in `dtype` on CPU, initialised as torch::nn's layers are, or
  // left uninitialised for Load to fill (see models::ParameterInit).
  // INVALID_ARGUMENT for a config ParseBertConfig would refuse.
  static absl::StatusOr<std::unique_ptr<BertModel>> Create(
      const BertConfig& config, at::ScalarType dtype,
      models::ParameterInit init = models::ParameterInit::kTorchDefault);
  ~BertModel();
  const BertConfig& config() const;
  // The parameters, named as the checkpoint keys (for writing checkpoints;
  // the pooler is not among them).
  torch::nn::Module& module();
  // Fills every parameter from a BertModel checkpoint, or from one whose
  // keys carry "bert." (a BertFor… checkpoint; keys outside "bert." are
  // then ignored). pooler.* and the old persisted embeddings.position_ids
  // and embeddings.token_type_ids buffers may be present and are not used.
  // INVALID_ARGUMENT listing missing and unexpected keys, or a shape
  // mismatch.
  absl::Status Load(const weights::SafetensorsCheckpoint& checkpoint);
  // input_ids [B, T] int64, 1 <= T <= max_position_embeddings, ids in
  // [0, vocab_size) -> last hidden state [B, T, hidden_size] in the model
  // dtype. `attention_mask` [B, T] (1 keep, 0 padding; undefined: all
  // kept) hides the padding keys from every query, as transformers' default
  // (sdpa) attention: padding queries still get outputs, and a row with no
  // kept key gets a zero attention output (as torch's
  // scaled_dot_product_attention). Otherwise INVALID_ARGUMENT.
  // Thread-compatible: concurrent Forward calls are safe.
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {}) const;

 private:
  struct Impl;
  explicit BertModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ditserve::worker::text
