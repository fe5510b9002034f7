#pragma once

#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/parallel_config.h"

namespace ditserve::parallel {

// The dimensions of a gang. The first five are xDiT's, innermost (adjacent
// ranks) first; kSequence is the USP group (ulysses × ring) and kWorld the
// whole gang.
enum class Dim { kUlysses, kRing, kPipeFusion, kCfg, kData, kSequence, kWorld };
inline constexpr std::array<Dim, 7> kAllDims = {Dim::kUlysses, Dim::kRing,  Dim::kPipeFusion,
                                               Dim::kCfg,     Dim::kData,  Dim::kSequence,
                                               Dim::kWorld};
// "ulysses", "ring", "pipefusion", "cfg", "data", "sequence", "world".
const char* DimName(Dim dim);

// Where one rank sits in a gang: an immutable value built from the degrees
// and the global rank. The global rank is
//   ulysses + U·(ring + R·(pipefusion + P·(cfg + C·dp)))
// (xDiT's order, ulysses innermost), so for W=16 with every degree 2 the
// Ulysses groups are [0,1],[2,3]…, Ring [0,2],[1,3]…, PipeFusion [0,4]…,
// CFG [0,8]…. Within the sequence group the rank is ulysses + U·ring.
// Thread-safe (immutable).
class WorldConfig {
 public:
  // INVALID_ARGUMENT if the config does not validate for its own world size
  // or the rank is outside [0, world size).
  static absl::StatusOr<WorldConfig> Create(const ParallelConfig& config, int rank);

  const ParallelConfig& config() const { return config_; }
  int rank() const { return rank_; }
  int world_size() const { return world_size_; }

  // Number of ranks in this rank's group along `dim`.
  int degree(Dim dim) const;
  // This rank's index within its group along `dim` (0 … degree-1).
  int rank_in(Dim dim) const;
  // The global ranks of this rank's group along `dim`, ordered by their
  // rank within the group (so members(d)[rank_in(d)] == rank()).
  std::vector<int> members(Dim dim) const;
  // Index of this rank's group among all groups along `dim`: the group's
  // position when groups are ordered by their smallest member.
  int group_index(Dim dim) const;
  // The global rank at (coordinate per dimension); used to name peers, e.g.
  // the previous PipeFusion stage.
  int GlobalRank(int dp, int cfg, int pipefusion, int ring, int ulysses) const;

  // "ulysses[0,1]".
  std::string GroupName(Dim dim) const;

 private:
  WorldConfig(const ParallelConfig& config, int rank);

  ParallelConfig config_;
  int rank_ = 0;
  int world_size_ = 1;
  // Coordinates: ulysses, ring, pipefusion, cfg, dp.
  std::array<int, 5> coord_{};
  std::array<int, 5> size_{};
};

}  // namespace ditserve::parallel
