#include "worker/tokenizers/t5_tokenizer.h"

#include <dlfcn.h>
#include <limits.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/tokenizers/sentencepiece_shim.h"

#ifndef DITSERVE_SPM_SHIM_BUILD_PATH
#define DITSERVE_SPM_SHIM_BUILD_PATH ""
#endif

namespace ditserve::worker::tokenizers {

// The opened shim and its entry points. Shared by every tokenizer; closed
// when the last one goes.
class SentencePieceLibrary {
 public:
  static absl::StatusOr<std::shared_ptr<SentencePieceLibrary>> Open() {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("DITSERVE_SPM_SHIM")) candidates.push_back(env);
    char buf[PATH_MAX];
    const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    if (n > 0) {
      std::string exe(buf, static_cast<size_t>(n));
      const std::string dir = exe.substr(0, exe.rfind('/'));
      candidates.push_back(dir + "/../lib/libditserve_spm_shim.so");
    }
    candidates.push_back(DITSERVE_SPM_SHIM_BUILD_PATH);
    std::string errors;
    for (const std::string& path : candidates) {
      if (path.empty() || access(path.c_str(), R_OK) != 0) continue;
      // NODELETE: libsentencepiece registers exit handlers (its flags), so
      // it must stay mapped until the process exits.
      void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
      if (handle == nullptr) {
        absl::StrAppend(&errors, " ", path, ": ", dlerror());
        continue;
      }
      auto lib = std::shared_ptr<SentencePieceLibrary>(new SentencePieceLibrary(handle));
      if (lib->load && lib->encode && lib->piece_id && lib->vocab_size && lib->free_model && lib->train) return lib;
      absl::StrAppend(&errors, " ", path, ": missing symbols");
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot open libditserve_spm_shim.so (set DITSERVE_SPM_SHIM or install it in lib/ beside bin/)", errors));
  }
  // The library stays loaded (RTLD_NODELETE); closing the handle only
  // drops our reference.
  ~SentencePieceLibrary() { dlclose(handle_); }

  DitserveSpmLoadFn load;
  DitserveSpmEncodeFn encode;
  DitserveSpmPieceIdFn piece_id;
  DitserveSpmVocabSizeFn vocab_size;
  DitserveSpmFreeFn free_model;
  DitserveSpmTrainFn train;

 private:
  explicit SentencePieceLibrary(void* handle) : handle_(handle) {
    load = reinterpret_cast<DitserveSpmLoadFn>(dlsym(handle, "ditserve_spm_load"));
    encode = reinterpret_cast<DitserveSpmEncodeFn>(dlsym(handle, "ditserve_spm_encode"));
    piece_id = reinterpret_cast<DitserveSpmPieceIdFn>(dlsym(handle, "ditserve_spm_piece_id"));
    vocab_size = reinterpret_cast<DitserveSpmVocabSizeFn>(dlsym(handle, "ditserve_spm_vocab_size"));
    free_model = reinterpret_cast<DitserveSpmFreeFn>(dlsym(handle, "ditserve_spm_free"));
    train = reinterpret_cast<DitserveSpmTrainFn>(dlsym(handle, "ditserve_spm_train"));
  }
  void* handle_;
};

absl::StatusOr<std::unique_ptr<T5Tokenizer>> T5Tokenizer::Load(const std::string& model_path) {
  auto lib = SentencePieceLibrary::Open();
  if (!lib.ok()) return lib.status();
  if (access(model_path.c_str(), R_OK) != 0) return absl::NotFoundError(absl::StrCat("cannot read ", model_path));
  char error[512] = {0};
  void* model = (*lib)->load(model_path.c_str(), error, sizeof(error));
  if (model == nullptr) return absl::InvalidArgumentError(absl::StrCat(model_path, ": ", error));
  std::unique_ptr<T5Tokenizer> t(new T5Tokenizer());
  t->lib_ = *lib;
  t->model_ = model;
  t->eos_ = t->lib_->piece_id(model, "</s>");
  t->pad_ = t->lib_->piece_id(model, "<pad>");
  if (t->eos_ < 0 || t->pad_ < 0) {
    return absl::InvalidArgumentError(absl::StrCat(model_path, ": the model has no </s> or <pad> piece"));
  }
  return t;
}

T5Tokenizer::~T5Tokenizer() {
  if (model_ != nullptr) lib_->free_model(model_);
}

int T5Tokenizer::vocab_size() const { return lib_->vocab_size(model_); }

absl::StatusOr<std::vector<int64_t>> T5Tokenizer::EncodeRaw(const std::string& text) const {
  std::vector<int32_t> ids(text.size() + 8);
  char error[512] = {0};
  int64_t n = lib_->encode(model_, text.data(), text.size(), ids.data(), static_cast<int64_t>(ids.size()), error,
                           sizeof(error));
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("sentencepiece: ", error));
  if (n > static_cast<int64_t>(ids.size())) {
    ids.resize(static_cast<size_t>(n));
    n = lib_->encode(model_, text.data(), text.size(), ids.data(), n, error, sizeof(error));
    if (n < 0) return absl::InvalidArgumentError(absl::StrCat("sentencepiece: ", error));
  }
  return std::vector<int64_t>(ids.begin(), ids.begin() + n);
}

absl::StatusOr<std::vector<int64_t>> T5Tokenizer::Encode(const std::string& text, int max_length) const {
  auto e = EncodeWithMask(text, max_length);
  if (!e.ok()) return e.status();
  return std::move(e->ids);
}

absl::StatusOr<T5Encoding> T5Tokenizer::EncodeWithMask(const std::string& text, int max_length) const {
  if (max_length < 1) return absl::InvalidArgumentError("max_sequence_length must be at least 1");
  auto raw = EncodeRaw(text);
  if (!raw.ok()) return raw.status();
  T5Encoding e;
  e.ids.assign(raw->begin(), raw->begin() + std::min<size_t>(raw->size(), max_length - 1));
  e.ids.push_back(eos_);
  e.mask.assign(e.ids.size(), 1);
  e.ids.resize(max_length, pad_);
  e.mask.resize(max_length, 0);
  return e;
}

absl::Status TrainSentencePiece(const std::string& args) {
  auto lib = SentencePieceLibrary::Open();
  if (!lib.ok()) return lib.status();
  char error[1024] = {0};
  if ((*lib)->train(args.c_str(), error, sizeof(error)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("sentencepiece training failed: ", error));
  }
  return absl::OkStatus();
}

}  // namespace ditserve::worker::tokenizers
