#pragma once

// The T5 tokenizer (tokenizer_2/spiece.model of a Flux directory) through
// Debian's libsentencepiece, loaded in isolation (see sentencepiece_shim.h):
// SentencePiece ids followed by </s>, truncated and padded (with <pad>) to
// max_sequence_length, as FluxPipeline calls T5TokenizerFast.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ditserve::worker::tokenizers {

class SentencePieceLibrary;

// Encode's ids and their attention mask: 1 for the pieces and </s>, 0 for
// the padding.
struct T5Encoding {
  std::vector<int64_t> ids;
  std::vector<int64_t> mask;
};

class T5Tokenizer {
 public:
  // `model_path`: a spiece.model. FAILED_PRECONDITION if the shim library
  // cannot be opened (its path: DITSERVE_SPM_SHIM, else lib/ next to the
  // executable's bin/, else the build tree's); INVALID_ARGUMENT if the model
  // cannot be read or lacks </s> or <pad>.
  static absl::StatusOr<std::unique_ptr<T5Tokenizer>> Load(const std::string& model_path);
  ~T5Tokenizer();

  absl::StatusOr<std::vector<int64_t>> EncodeRaw(const std::string& text) const;
  // ids…, </s>; truncated to max_length (</s> kept); padded with <pad>.
  absl::StatusOr<std::vector<int64_t>> Encode(const std::string& text, int max_length) const;
  // The same ids with their mask, from one tokenization (the cross-
  // attention families' T5 runs under the mask).
  absl::StatusOr<T5Encoding> EncodeWithMask(const std::string& text, int max_length) const;
  int64_t eos_id() const { return eos_; }
  int64_t pad_id() const { return pad_; }
  int vocab_size() const;

 private:
  T5Tokenizer() = default;
  std::shared_ptr<SentencePieceLibrary> lib_;
  void* model_ = nullptr;
  int64_t eos_ = 1, pad_ = 0;
};

// Trains a SentencePiece model (unigram) with the real trainer:
// `args` in SentencePieceTrainer's flag syntax.
absl::Status TrainSentencePiece(const std::string& args);

}  // namespace ditserve::worker::tokenizers
