#pragma once

// PixArt-α / PixArt-Σ's text side (PixArt{Alpha,Sigma}Pipeline.encode_prompt
// with clean_caption=False): the prompt lower-cased and stripped, T5's
// tokens padded to max_sequence_length with their attention mask, and the
// T5 encoder run under that mask. The sequence is the whole padded length
// (diffusers passes every position and masks the padding in cross-
// attention); there is no pooled vector.
//
// Caption cleaning (clean_caption=True, diffusers' default, which needs
// BeautifulSoup and ftfy) is not done: its URL, HTML and punctuation rules
// are a Python text pipeline; a prompt is used as written, lower-cased
// (glibc's C.UTF-8 towlower per code point, which is Python's str.lower
// except for the few characters whose lower case is longer, such as U+0130)
// and stripped of white space at both ends, exactly what diffusers does
// with clean_caption=False.

#include <memory>
#include <string>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "absl/status/statusor.h"
#include "worker/families/text_conditioner.h"

namespace ditserve::worker::families {

class PixArtTextEncoder final : public TextConditioner {
 public:
  // dir: the model directory (tokenizer/, text_encoder/). `default_length`:
  // the pipeline's max_sequence_length (α 120, Σ 300); the limit is the
  // tokenizer's model_max_length (at most 512).
  static absl::StatusOr<std::unique_ptr<PixArtTextEncoder>> Load(const std::string& dir, int default_length,
                                                                 at::ScalarType dtype, c10::Device device);
  ~PixArtTextEncoder() override;

  int pooled_dim() const override { return 0; }
  int sequence_dim() const override;
  int default_max_sequence_length() const override;
  int max_sequence_length_limit() const override;
  int SequenceTokens(int max_sequence_length) const override { return max_sequence_length; }
  absl::StatusOr<TextEmbeddings> Encode(const std::string& prompt, int max_sequence_length) const override;

 private:
  struct Impl;
  explicit PixArtTextEncoder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Python's `text.lower().strip()` as described above.
std::string PixArtPreprocessPrompt(const std::string& prompt);

}  // namespace ditserve::worker::families
