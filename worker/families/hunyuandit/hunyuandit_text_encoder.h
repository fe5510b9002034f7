#pragma once

// HunyuanDiT's text side (HunyuanDiTPipeline.encode_prompt, twice): the
// bilingual CLIP text encoder (a BertModel with its WordPiece tokenizer,
// text_encoder/ and tokenizer/) over text_len tokens and mT5
// (text_encoder_2/, tokenizer_2/: T5EncoderModel with SentencePiece) over
// text_len_t5 tokens, each run under its padding mask, joined into
// HunyuanTextSequence's layout with the two masks concatenated. There is
// no pooled vector: the transformer pools the mT5 states itself.
//
// The prompt is used as written for both (the pipeline does not clean it;
// the BERT tokenizer lower-cases and strips accents as its
// tokenizer_config.json says). max_sequence_length is mT5's: its tokens are
// truncated there (with </s>) and padded to text_len_t5, which the
// transformer's pool and padding embedding need; 0 or text_len_t5 is the
// pipeline's behaviour.

#include <memory>
#include <string>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "absl/status/statusor.h"
#include "worker/families/text_conditioner.h"
#include "worker/models/hunyuandit/hunyuandit_config.h"

namespace ditserve::worker::families {

class HunyuanDiTTextEncoder final : public TextConditioner {
 public:
  // dir: the model directory; `config`: its transformer's (text_len,
  // text_len_t5 and the widths, which the encoders must match:
  // INVALID_ARGUMENT naming both otherwise).
  static absl::StatusOr<std::unique_ptr<HunyuanDiTTextEncoder>> Load(const std::string& dir,
                                                                     const hunyuandit::HunyuanDiTConfig& config,
                                                                     at::ScalarType dtype, c10::Device device);
  ~HunyuanDiTTextEncoder() override;

  int pooled_dim() const override { return 0; }
  int sequence_dim() const override;
  int default_max_sequence_length() const override;
  int max_sequence_length_limit() const override;
  int SequenceTokens(int max_sequence_length) const override;
  absl::StatusOr<TextEmbeddings> Encode(const std::string& prompt, int max_sequence_length) const override;

 private:
  struct Impl;
  explicit HunyuanDiTTextEncoder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ditserve::worker::families
