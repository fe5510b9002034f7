#include "worker/weights/safetensors_writer.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ditserve::worker::weights {
namespace {

absl::StatusOr<std::string> DTypeName(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return std::string("F32");
    case at::kHalf: return std::string("F16");
    case at::kBFloat16: return std::string("BF16");
    case at::kDouble: return std::string("F64");
    case at::kLong: return std::string("I64");
    case at::kInt: return std::string("I32");
    case at::kByte: return std::string("U8");
    case at::kBool: return std::string("BOOL");
    default: return absl::InvalidArgumentError(absl::StrCat("safetensors: cannot write ", c10::toString(t)));
  }
}

}  // namespace

absl::Status WriteSafetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, at::Tensor>> sorted = tensors;
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::vector<at::Tensor> data;
  for (const auto& [name, t0] : sorted) {
    const at::Tensor t = t0.detach().cpu().contiguous();
    auto dtype = DTypeName(t.scalar_type());
    if (!dtype.ok()) return dtype.status();
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", *dtype}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(t);
  }
  std::string json = header.dump();
  while (json.size() % 8 != 0) json.push_back(' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out.write(json.data(), static_cast<std::streamsize>(json.size()));
  for (const at::Tensor& t : data) {
    out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
  }
  if (!out) return absl::InternalError(absl::StrCat("writing ", path, " failed"));
  return absl::OkStatus();
}

absl::Status WriteSafetensorsCheckpoint(const std::string& dir, const std::string& stem,
                                        const std::vector<std::pair<std::string, at::Tensor>>& tensors, int shards) {
  if (shards < 1) return absl::InvalidArgumentError("--shards must be >= 1");
  if (shards == 1) return WriteSafetensors(absl::StrCat(dir, "/", stem, ".safetensors"), tensors);
  std::vector<std::pair<std::string, at::Tensor>> sorted = tensors;
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  uint64_t total = 0;
  for (const auto& [name, t] : sorted) total += static_cast<uint64_t>(t.numel()) * t.element_size();
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  size_t next = 0;
  uint64_t written = 0;
  for (int s = 0; s < shards; ++s) {
    const std::string file = absl::StrFormat("%s-%05d-of-%05d.safetensors", stem, s + 1, shards);
    std::vector<std::pair<std::string, at::Tensor>> part;
    const uint64_t target = total * static_cast<uint64_t>(s + 1) / static_cast<uint64_t>(shards);
    while (next < sorted.size() && (s == shards - 1 || written < target || part.empty())) {
      written += static_cast<uint64_t>(sorted[next].second.numel()) * sorted[next].second.element_size();
      weight_map[sorted[next].first] = file;
      part.push_back(sorted[next++]);
    }
    if (absl::Status st = WriteSafetensors(absl::StrCat(dir, "/", file), part); !st.ok()) return st;
  }
  nlohmann::ordered_json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  std::ofstream out(absl::StrCat(dir, "/", stem, ".safetensors.index.json"));
  out << index.dump(2) << "\n";
  return out ? absl::OkStatus() : absl::InternalError("writing the index failed");
}

}  // namespace ditserve::worker::weights
