// libditserve_spm_shim.so: see sentencepiece_shim.h. Exported C functions
// only; never linked into a binary directly.
#include "worker/tokenizers/sentencepiece_shim.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstring>
#include <string>
#include <vector>

namespace {
void SetError(char* error, size_t size, const std::string& message) {
  if (error == nullptr || size == 0) return;
  std::strncpy(error, message.c_str(), size - 1);
  error[size - 1] = '\0';
}
}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* ditserve_spm_load(const char* path, char* error, size_t error_size) {
  auto* model = new sentencepiece::SentencePieceProcessor();
  const auto status = model->Load(path);
  if (!status.ok()) {
    SetError(error, error_size, status.ToString());
    delete model;
    return nullptr;
  }
  return model;
}

__attribute__((visibility("default"))) int64_t ditserve_spm_encode(void* model, const char* text, size_t text_size,
                                                                   int32_t* ids, int64_t capacity, char* error,
                                                                   size_t error_size) {
  std::vector<int> out;
  const auto status = static_cast<sentencepiece::SentencePieceProcessor*>(model)->Encode(
      std::string(text, text_size), &out);
  if (!status.ok()) {
    SetError(error, error_size, status.ToString());
    return -1;
  }
  for (int64_t i = 0; i < static_cast<int64_t>(out.size()) && i < capacity; ++i) ids[i] = out[i];
  return static_cast<int64_t>(out.size());
}

__attribute__((visibility("default"))) int32_t ditserve_spm_piece_id(void* model, const char* piece) {
  auto* m = static_cast<sentencepiece::SentencePieceProcessor*>(model);
  const int id = m->PieceToId(piece);
  return (id == m->unk_id() && std::string(piece) != m->IdToPiece(m->unk_id())) ? -1 : id;
}

__attribute__((visibility("default"))) int32_t ditserve_spm_vocab_size(void* model) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(model)->GetPieceSize();
}

__attribute__((visibility("default"))) void ditserve_spm_free(void* model) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(model);
}

__attribute__((visibility("default"))) int ditserve_spm_train(const char* args, char* error, size_t error_size) {
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  if (!status.ok()) {
    SetError(error, error_size, status.ToString());
    return -1;
  }
  return 0;
}

}
