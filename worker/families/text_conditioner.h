#pragma once

// The text side of a DiT family as the family-neutral pipelines use it: a
// prompt becomes a pooled vector and a token sequence (what the family's
// diffusers pipeline's encode_prompt returns). Loaded on world rank 0 only.

#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace ditserve::worker::families {

struct TextEmbeddings {
  at::Tensor pooled;    // [1, pooled_dim()]
  at::Tensor sequence;  // [1, SequenceTokens(max_sequence_length), sequence_dim()]
  // [1, SequenceTokens(…)], 1 for a real token and 0 for padding, in the
  // sequence's dtype: the families whose text enters through cross-
  // attention (PixArt) give it; undefined elsewhere (no mask).
  at::Tensor mask;
};

// Immutable after loading; Encode is thread-compatible.
class TextConditioner {
 public:
  virtual ~TextConditioner() = default;
  virtual int pooled_dim() const = 0;
  virtual int sequence_dim() const = 0;
  // The max_sequence_length a request gets when it names none.
  virtual int default_max_sequence_length() const = 0;
  // The largest max_sequence_length the family accepts (a request above it
  // is INVALID_ARGUMENT naming the field and this limit).
  virtual int max_sequence_length_limit() const = 0;
  // Tokens in Encode's sequence for `max_sequence_length` (> 0).
  virtual int SequenceTokens(int max_sequence_length) const = 0;
  // The prompt's embeddings in the load dtype on the load device. Runs
  // under NoGradGuard.
  virtual absl::StatusOr<TextEmbeddings> Encode(const std::string& prompt, int max_sequence_length) const = 0;
};

}  // namespace ditserve::worker::families
