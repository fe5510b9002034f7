// The CLIP BPE and T5 SentencePiece tokenizers of a real model directory
// ($DITSERVE_FUZZ_MODEL, default models/flux-shapes) on arbitrary bytes as
// the prompt: OK with exactly max_length ids inside the vocabulary (CLIP)
// or at most max_length (T5), or INVALID_ARGUMENT (not UTF-8), never a
// crash.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "worker/tokenizers/clip_tokenizer.h"
#include "worker/tokenizers/t5_tokenizer.h"

namespace {

std::string ModelDir() {
  const char* env = std::getenv("DITSERVE_FUZZ_MODEL");
  return env != nullptr ? env : "models/flux-shapes";
}

template <typename T>
void CheckIds(const absl::StatusOr<std::vector<int64_t>>& ids, size_t max_length, bool exact) {
  if (!ids.ok()) {
    if (ids.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return;
  }
  if (exact ? ids->size() != max_length : ids->size() > max_length) std::abort();
  for (int64_t id : *ids) {
    if (id < 0) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto clip = ditserve::worker::tokenizers::ClipTokenizer::Load(ModelDir() + "/tokenizer");
  static const auto t5 = ditserve::worker::tokenizers::T5Tokenizer::Load(ModelDir() + "/tokenizer_2/spiece.model");
  if (!clip.ok() || !t5.ok()) std::abort();  // the harness's own setup failed
  const std::string text(reinterpret_cast<const char*>(data), size);
  CheckIds<void>((*clip)->Encode(text, 77), 77, true);
  CheckIds<void>((*t5)->Encode(text, 64), 64, false);
  return 0;
}
