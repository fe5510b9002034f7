#pragma once

// Reader of the safetensors format: 8-byte little-endian header length, a
// JSON header {"name": {"dtype", "shape", "data_offsets": [begin, end]},
// "__metadata__": {...}}, then the raw little-endian data. Files are
// memory-mapped; tensors handed out view the mapping (copy-on-write) and
// keep it alive.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace ditserve::worker::weights {

struct TensorEntry {
  std::string name;
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;
};

struct SafetensorsHeader {
  std::vector<TensorEntry> tensors;  // in header order
  std::map<std::string, std::string> metadata;
  uint64_t data_offset = 0;  // where the data section starts in the file
};

// Validates a whole file's bytes without reading beyond them: truncated
// file, header length past the end, JSON garbage, unknown dtype, negative or
// overflowing shapes, offsets past the end, overlapping ranges and
// shape/size mismatches are INVALID_ARGUMENT naming the tensor and numbers.
// Accepted dtypes: F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL.
absl::StatusOr<SafetensorsHeader> ParseSafetensors(std::string_view file);

// One memory-mapped file. Immutable after Open; thread-safe.
class SafetensorsFile {
 public:
  // NOT_FOUND if the file cannot be opened; INVALID_ARGUMENT (prefixed with
  // the path) if it is corrupt.
  static absl::StatusOr<std::shared_ptr<const SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  const TensorEntry* Find(const std::string& name) const;
  // A CPU tensor over the mapping (copied when the data is misaligned for
  // its dtype). Writes to it never reach the file. NOT_FOUND for an unknown
  // name.
  absl::StatusOr<at::Tensor> Get(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  SafetensorsHeader header_;
  std::map<std::string, size_t> index_;
  // Owners of the mapping, shared with every tensor handed out.
  std::shared_ptr<void> keep_;
};

// A checkpoint: one .safetensors file, or the shards named by a
// *.safetensors.index.json ("weight_map": {name: file}). Thread-safe.
class SafetensorsCheckpoint {
 public:
  // `path`: a .safetensors file, an .index.json, or a directory holding
  // exactly one of "<stem>.safetensors" / "<stem>.safetensors.index.json"
  // (diffusers names: diffusion_pytorch_model, model).
  static absl::StatusOr<SafetensorsCheckpoint> Open(const std::string& path);

  std::vector<std::string> names() const;  // sorted
  bool Contains(const std::string& name) const { return where_.count(name) > 0; }
  const TensorEntry* Find(const std::string& name) const;
  absl::StatusOr<at::Tensor> Get(const std::string& name) const;

 private:
  std::vector<std::shared_ptr<const SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // name -> index into files_
};

}  // namespace ditserve::worker::weights
