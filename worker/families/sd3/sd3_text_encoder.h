#pragma once

// The text side of a Stable Diffusion 3 / 3.5 diffusers directory, as
// diffusers' StableDiffusion3Pipeline.encode_prompt uses it (clip_skip
// None, one image per prompt): tokenizer/ + text_encoder/ (CLIP ViT-L) and
// tokenizer_2/ + text_encoder_2/ (OpenCLIP bigG), both
// CLIPTextModelWithProjection, and tokenizer_3/ + text_encoder_3/ (T5 v1.1
// encoder), which a directory may leave out.
//
//   sequence = cat(pad(cat(penultimate_L, penultimate_G, features), D),
//                  T5(prompt, max_sequence_length), tokens)
//            [1, clip_tokens + max_sequence_length, D]
//   pooled   = cat(text_embeds_L, text_embeds_G)   [1, proj_L + proj_G]
//
// penultimate is each CLIP's hidden_states[-2]; pad zero-fills the feature
// axis up to D = T5's d_model (or crops, as torch's pad with a negative
// width does, should the CLIPs be wider). Without T5 (model_index.json's
// text_encoder_3 is [null, null]) the T5 part is zeros of
// [1, max_sequence_length, D] with D the transformer's joint_attention_dim,
// exactly as diffusers builds it.

#include <memory>
#include <string>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "worker/families/text_conditioner.h"

namespace ditserve::worker::families {

// Immutable after Load; Encode is thread-compatible.
class Sd3TextEncoder final : public TextConditioner {
 public:
  // diffusers' encode_prompt default and check_inputs limit.
  static constexpr int kDefaultMaxSequenceLength = 256;
  static constexpr int kMaxSequenceLengthLimit = 512;

  // Reads model_index.json, both CLIP tokenizers and text encoders and,
  // unless model_index.json's text_encoder_3 is null, tokenizer_3/spiece.model
  // and text_encoder_3/ (otherwise transformer/config.json's
  // joint_attention_dim, diffusers' default 4096 when absent), in `dtype`
  // on `device`. NOT_FOUND / INVALID_ARGUMENT name the file at fault (a
  // text encoder that is no CLIPTextModelWithProjection is
  // INVALID_ARGUMENT); FAILED_PRECONDITION when the weights cannot move to
  // `device`.
  static absl::StatusOr<std::unique_ptr<Sd3TextEncoder>> Load(const std::string& dir, at::ScalarType dtype,
                                                              c10::Device device);
  ~Sd3TextEncoder() override;

  // projection_dim of text_encoder plus that of text_encoder_2.
  int pooled_dim() const override;
  // T5's d_model, or the transformer's joint_attention_dim without T5.
  int sequence_dim() const override;
  int default_max_sequence_length() const override { return kDefaultMaxSequenceLength; }
  int max_sequence_length_limit() const override { return kMaxSequenceLengthLimit; }
  // clip_tokens() + max_sequence_length, with or without T5.
  int SequenceTokens(int max_sequence_length) const override;
  // CLIP's padded length: tokenizer/tokenizer_config.json's
  // model_max_length (77 when absent), at most either CLIP's
  // max_position_embeddings.
  int clip_tokens() const;
  // Whether text_encoder_3 (T5) was loaded.
  bool has_t5() const;

  // INVALID_ARGUMENT when max_sequence_length is outside
  // [1, max_sequence_length_limit()] or the prompt is not valid UTF-8.
  absl::StatusOr<TextEmbeddings> Encode(const std::string& prompt, int max_sequence_length) const override;

 private:
  struct Impl;
  explicit Sd3TextEncoder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ditserve::worker::families
