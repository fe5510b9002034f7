#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace ditserve::parallel {

// The parallel degrees of a gang, named as xDiT's flags are. Plain value;
// Validate() checks it against a world size.
struct ParallelConfig {
  int data_parallel_degree = 1;
  bool use_cfg_parallel = false;  // CFG degree 2 when set, else 1
  int pipefusion_parallel_degree = 1;
  int ulysses_degree = 1;
  int ring_degree = 1;

  int cfg_degree() const { return use_cfg_parallel ? 2 : 1; }
  int sequence_parallel_degree() const { return ulysses_degree * ring_degree; }
  // dp × cfg × pp × ulysses × ring.
  long long world_size() const;
  // "dp=1 cfg=2 pp=1 ulysses=2 ring=1".
  std::string ToString() const;

  friend bool operator==(const ParallelConfig&, const ParallelConfig&) = default;
};

// OK when every degree is ≥ 1 and their product equals `world_size`.
// Otherwise INVALID_ARGUMENT naming the flag and the numbers, e.g.
// "--ulysses_degree must be >= 1, got 0" or "the product of the parallel
// degrees (dp 1 × cfg 2 × pp 1 × ulysses 2 × ring 1 = 4) must equal the world
// size 8".
absl::Status Validate(const ParallelConfig& config, int world_size);

// Every valid ParallelConfig for `world_size`, in a fixed order.
std::vector<ParallelConfig> EnumerateParallelConfigs(int world_size);

}  // namespace ditserve::parallel
