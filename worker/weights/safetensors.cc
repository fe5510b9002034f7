#include "worker/weights/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ditserve::worker::weights {
namespace {

constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

bool DTypeFromName(const std::string& name, at::ScalarType* out) {
  static const std::pair<const char*, at::ScalarType> kTypes[] = {
      {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16}, {"F64", at::kDouble},
      {"I64", at::kLong},  {"I32", at::kInt},   {"I16", at::kShort},     {"I8", at::kChar},
      {"U8", at::kByte},   {"BOOL", at::kBool},
  };
  for (const auto& [n, t] : kTypes) {
    if (name == n) {
      *out = t;
      return true;
    }
  }
  return false;
}

absl::Status Bad(const std::string& what) { return absl::InvalidArgumentError(what); }

}  // namespace

absl::StatusOr<SafetensorsHeader> ParseSafetensors(std::string_view file) {
  if (file.size() < 8) {
    return Bad(absl::StrCat("truncated file: ", file.size(), " bytes, the header length needs 8"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(file[i]);
  if (header_len > file.size() - 8) {
    return Bad(absl::StrCat("header length ", header_len, " runs past the end of the file (",
                            file.size(), " bytes)"));
  }
  if (header_len > kMaxHeaderBytes) {
    return Bad(absl::StrCat("header length ", header_len, " exceeds the limit of ", kMaxHeaderBytes));
  }
  SafetensorsHeader header;
  header.data_offset = 8 + header_len;
  const uint64_t data_size = file.size() - header.data_offset;
  nlohmann::json json = nlohmann::json::parse(file.substr(8, header_len), nullptr,
                                              /*allow_exceptions=*/false);
  if (json.is_discarded()) return Bad("the header is not valid JSON");
  if (!json.is_object()) return Bad("the header is not a JSON object");
  for (auto it = json.begin(); it != json.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) return Bad("__metadata__ is not an object");
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string()) return Bad(absl::StrCat("__metadata__.", m.key(), " is not a string"));
        header.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = absl::StrCat("tensor '", name, "'");
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets")) {
      return Bad(absl::StrCat(where, " needs dtype, shape and data_offsets"));
    }
    TensorEntry t;
    t.name = name;
    if (!entry["dtype"].is_string() || !DTypeFromName(entry["dtype"].get<std::string>(), &t.dtype)) {
      return Bad(absl::StrCat(where, " has an unknown dtype ", entry["dtype"].dump()));
    }
    const nlohmann::json& shape = entry["shape"];
    if (!shape.is_array() || shape.size() > 16) return Bad(absl::StrCat(where, ": bad shape ", shape.dump()));
    uint64_t numel = 1;
    for (const auto& d : shape) {
      if (!d.is_number_unsigned()) return Bad(absl::StrCat(where, ": bad shape ", shape.dump()));
      const uint64_t dim = d.get<uint64_t>();
      if (dim > (uint64_t{1} << 40) || __builtin_mul_overflow(numel, dim, &numel)) {
        return Bad(absl::StrCat(where, ": shape ", shape.dump(), " is too large"));
      }
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    const nlohmann::json& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
      return Bad(absl::StrCat(where, ": bad data_offsets ", offsets.dump()));
    }
    t.begin = offsets[0].get<uint64_t>();
    t.end = offsets[1].get<uint64_t>();
    if (t.begin > t.end || t.end > data_size) {
      return Bad(absl::StrCat(where, ": data_offsets [", t.begin, ", ", t.end,
                              "] run past the end of the data (", data_size, " bytes)"));
    }
    uint64_t bytes = 0;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(c10::elementSize(t.dtype)), &bytes) ||
        bytes != t.end - t.begin) {
      return Bad(absl::StrCat(where, ": shape ", shape.dump(), " of ", entry["dtype"].get<std::string>(),
                              " needs ", numel * c10::elementSize(t.dtype), " bytes but data_offsets give ",
                              t.end - t.begin));
    }
    header.tensors.push_back(std::move(t));
  }
  std::vector<const TensorEntry*> by_offset;
  for (const auto& t : header.tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorEntry* a, const TensorEntry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i]->begin < by_offset[i - 1]->end) {
      return Bad(absl::StrCat("tensors '", by_offset[i - 1]->name, "' and '", by_offset[i]->name,
                              "' overlap"));
    }
  }
  return header;
}

absl::StatusOr<std::shared_ptr<const SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", strerror(errno)));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return absl::InternalError(absl::StrCat("cannot stat ", path));
  }
  if (!S_ISREG(st.st_mode)) {  // a directory, a device, a FIFO: never a checkpoint
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->size_ = static_cast<size_t>(st.st_size);
  if (file->size_ > 0) {
    // Private and writable: tensors may be modified in memory (copy on
    // write) without touching the file.
    void* map = mmap(nullptr, file->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      close(fd);
      return absl::InternalError(absl::StrCat("cannot map ", path, ": ", strerror(errno)));
    }
    file->map_ = map;
    const size_t size = file->size_;
    file->keep_ = std::shared_ptr<void>(map, [size](void* p) { munmap(p, size); });
  }
  close(fd);
  auto header = ParseSafetensors(
      std::string_view(static_cast<const char*>(file->map_), file->map_ ? file->size_ : 0));
  if (!header.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", header.status().message()));
  }
  file->header_ = *std::move(header);
  for (size_t i = 0; i < file->header_.tensors.size(); ++i) file->index_[file->header_.tensors[i].name] = i;
  return std::shared_ptr<const SafetensorsFile>(std::move(file));
}

SafetensorsFile::~SafetensorsFile() = default;

const TensorEntry* SafetensorsFile::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

absl::StatusOr<at::Tensor> SafetensorsFile::Get(const std::string& name) const {
  const TensorEntry* t = Find(name);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat(path_, " has no tensor '", name, "'"));
  const auto options = at::TensorOptions().dtype(t->dtype);
  if (t->end == t->begin) return at::empty(t->shape, options);
  char* data = static_cast<char*>(map_) + header_.data_offset + t->begin;
  if (reinterpret_cast<uintptr_t>(data) % c10::elementSize(t->dtype) != 0) {
    at::Tensor copy = at::empty(t->shape, options);
    std::memcpy(copy.data_ptr(), data, t->end - t->begin);
    return copy;
  }
  std::shared_ptr<void> keep = keep_;
  return at::from_blob(data, t->shape, [keep](void*) mutable { keep.reset(); }, options);
}

absl::StatusOr<SafetensorsCheckpoint> SafetensorsCheckpoint::Open(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::string target = path;
  if (fs::is_directory(path, ec)) {
    std::vector<std::string> found;
    for (const auto& e : fs::directory_iterator(path, ec)) {
      const std::string n = e.path().filename().string();
      if (absl::EndsWith(n, ".safetensors.index.json")) found.push_back(e.path().string());
    }
    if (found.empty()) {
      for (const auto& e : fs::directory_iterator(path, ec)) {
        if (absl::EndsWith(e.path().filename().string(), ".safetensors")) found.push_back(e.path().string());
      }
    }
    if (found.size() != 1) {
      return absl::NotFoundError(absl::StrCat(path, ": expected one .safetensors file or one "
                                              ".safetensors.index.json, found ", found.size()));
    }
    target = found[0];
  }
  SafetensorsCheckpoint checkpoint;
  std::vector<std::string> shard_paths;
  std::map<std::string, std::string> weight_map;
  if (absl::EndsWith(target, ".json")) {
    std::ifstream in(target);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", target));
    std::stringstream ss;
    ss << in.rdbuf();
    nlohmann::json index = nlohmann::json::parse(ss.str(), nullptr, false);
    if (index.is_discarded() || !index.is_object() || !index.contains("weight_map") ||
        !index["weight_map"].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(target, ": not a safetensors index (needs a weight_map object)"));
    }
    const fs::path dir = fs::path(target).parent_path();
    std::set<std::string> shards;
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (!it.value().is_string()) return absl::InvalidArgumentError(absl::StrCat(target, ": weight_map values must be file names"));
      const std::string file = it.value().get<std::string>();
      if (file.empty() || file == "." || file == ".." || file.find('/') != std::string::npos ||
          file.find('\0') != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(target, ": shard name '", file, "' must be a plain file name"));
      }
      weight_map[it.key()] = (dir / file).string();
      shards.insert((dir / file).string());
    }
    shard_paths.assign(shards.begin(), shards.end());
  } else {
    shard_paths.push_back(target);
  }
  std::map<std::string, size_t> file_index;
  for (const std::string& p : shard_paths) {
    auto file = SafetensorsFile::Open(p);
    if (!file.ok()) return file.status();
    file_index[p] = checkpoint.files_.size();
    checkpoint.files_.push_back(*std::move(file));
  }
  for (size_t i = 0; i < checkpoint.files_.size(); ++i) {
    for (const auto& t : checkpoint.files_[i]->header().tensors) {
      if (!weight_map.empty()) {
        auto it = weight_map.find(t.name);
        if (it == weight_map.end() || file_index[it->second] != i) {
          return absl::InvalidArgumentError(absl::StrCat(checkpoint.files_[i]->path(), " holds '", t.name,
                                                         "', which the index does not assign to it"));
        }
      }
      if (!checkpoint.where_.emplace(t.name, i).second) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "' appears in two shards"));
      }
    }
  }
  for (const auto& [name, file] : weight_map) {
    if (!checkpoint.where_.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat("the index names '", name, "' in ", file, ", which lacks it"));
    }
  }
  return checkpoint;
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [name, i] : where_) out.push_back(name);
  return out;
}

const TensorEntry* SafetensorsCheckpoint::Find(const std::string& name) const {
  auto it = where_.find(name);
  return it == where_.end() ? nullptr : files_[it->second]->Find(name);
}

absl::StatusOr<at::Tensor> SafetensorsCheckpoint::Get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) return absl::NotFoundError(absl::StrCat("no tensor '", name, "' in the checkpoint"));
  return files_[it->second]->Get(name);
}

}  // namespace ditserve::worker::weights
