#pragma once

// The text side of a Flux diffusers directory: both tokenizers and both
// text encoders (CLIP for the pooled vector, T5 for the token sequence),
// as diffusers' FluxPipeline.encode_prompt uses them.

#include <memory>
#include <string>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "worker/families/text_conditioner.h"

namespace ditserve::worker::families {

// pooled: [1, pooled_projection_dim] (CLIP pooled output); sequence:
// [1, max_sequence_length, joint_attention_dim] (T5).
using FluxTextEmbeddings = TextEmbeddings;

// Immutable after Load; Encode is thread-compatible.
class FluxTextEncoder final : public TextConditioner {
 public:
  // Loads tokenizer/, tokenizer_2/, text_encoder/ and text_encoder_2/ of
  // `dir` in `dtype` on `device`. NOT_FOUND / INVALID_ARGUMENT name the
  // file at fault.
  static absl::StatusOr<std::unique_ptr<FluxTextEncoder>> Load(const std::string& dir, at::ScalarType dtype,
                                                               c10::Device device);
  ~FluxTextEncoder() override;

  int pooled_dim() const override;    // CLIP hidden size
  int sequence_dim() const override;  // T5 d_model
  // tokenizer_2/tokenizer_config.json's model_max_length, at most 512
  // (512 when absent): the T5 length the model was trained with.
  int default_max_sequence_length() const override;
  int max_sequence_length_limit() const override { return 512; }
  // The T5 tokens alone.
  int SequenceTokens(int max_sequence_length) const override { return max_sequence_length; }

  // The prompt's embeddings, in the load dtype on the load device: CLIP
  // sees at most 77 tokens (the tokenizer's model_max_length), T5 exactly
  // max_sequence_length (truncated or padded). Runs under NoGradGuard.
  absl::StatusOr<TextEmbeddings> Encode(const std::string& prompt, int max_sequence_length) const override;

 private:
  struct Impl;
  explicit FluxTextEncoder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ditserve::worker::families
