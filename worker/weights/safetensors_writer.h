#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"

namespace ditserve::worker::weights {

// Writes tensors (F32, F16, BF16, I64, …) as one safetensors file: keys
// sorted, data in key order, header padded with spaces to 8 bytes.
absl::Status WriteSafetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// Writes `shards` files "<stem>-0000i-of-0000n.safetensors" in `dir` plus
// "<stem>.safetensors.index.json" (weight_map, total_size), splitting the
// sorted keys into runs of about equal bytes; shards == 1 writes
// "<stem>.safetensors" alone.
absl::Status WriteSafetensorsCheckpoint(const std::string& dir, const std::string& stem,
                                        const std::vector<std::pair<std::string, at::Tensor>>& tensors, int shards);

}  // namespace ditserve::worker::weights
