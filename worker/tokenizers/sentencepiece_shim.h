#pragma once

// The C interface of libditserve_spm_shim.so, a thin wrapper of Debian's
// libsentencepiece, which carries its own protobuf-lite (1602 exported
// protobuf symbols). The shim is opened with dlopen(RTLD_LOCAL) so none of
// that enters the global symbol scope of a process that also runs LibTorch
// (whose libtorch_cpu exports protobuf symbols too). RTLD_DEEPBIND was
// tried and crashes in libstdc++'s iostreams (the executable's
// copy-relocated std::cerr), so it is not used. Only t5_tokenizer.cc uses
// this header.

#include <cstddef>
#include <cstdint>

extern "C" {

// Loads a .model file; null on failure with a message in `error`.
typedef void* (*DitserveSpmLoadFn)(const char* path, char* error, size_t error_size);
// Encodes UTF-8 text to ids (no special tokens). Returns the number of ids
// (may exceed `capacity`: then only `capacity` were written), or -1 with a
// message in `error`.
typedef int64_t (*DitserveSpmEncodeFn)(void* model, const char* text, size_t text_size, int32_t* ids,
                                       int64_t capacity, char* error, size_t error_size);
// Id of a piece (e.g. "</s>"), or -1 if the piece is unknown.
typedef int32_t (*DitserveSpmPieceIdFn)(void* model, const char* piece);
typedef int32_t (*DitserveSpmVocabSizeFn)(void* model);
typedef void (*DitserveSpmFreeFn)(void* model);
// Trains a model with SentencePieceTrainer's flag string ("--input=… --model_prefix=…").
// Returns 0, or -1 with a message in `error`.
typedef int (*DitserveSpmTrainFn)(const char* args, char* error, size_t error_size);

}
