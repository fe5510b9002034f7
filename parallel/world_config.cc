#include "parallel/world_config.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ditserve::parallel {
namespace {
// Index of each of the five basic dimensions in the coordinate arrays.
constexpr int kU = 0, kR = 1, kP = 2, kC = 3, kD = 4;

int BasicIndex(Dim dim) {
  switch (dim) {
    case Dim::kUlysses: return kU;
    case Dim::kRing: return kR;
    case Dim::kPipeFusion: return kP;
    case Dim::kCfg: return kC;
    case Dim::kData: return kD;
    default: return -1;
  }
}
}  // namespace

const char* DimName(Dim dim) {
  switch (dim) {
    case Dim::kUlysses: return "ulysses";
    case Dim::kRing: return "ring";
    case Dim::kPipeFusion: return "pipefusion";
    case Dim::kCfg: return "cfg";
    case Dim::kData: return "data";
    case Dim::kSequence: return "sequence";
    case Dim::kWorld: return "world";
  }
  return "unknown";
}

absl::StatusOr<WorldConfig> WorldConfig::Create(const ParallelConfig& config, int rank) {
  if (config.world_size() > (1 << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("world size ", config.world_size(), " is too large"));
  }
  const int world = static_cast<int>(config.world_size());
  if (absl::Status s = Validate(config, world); !s.ok()) return s;
  if (rank < 0 || rank >= world) {
    return absl::InvalidArgumentError(
        absl::StrCat("--rank must be in [0, ", world, "), got ", rank));
  }
  return WorldConfig(config, rank);
}

WorldConfig::WorldConfig(const ParallelConfig& config, int rank)
    : config_(config), rank_(rank), world_size_(static_cast<int>(config.world_size())) {
  size_ = {config.ulysses_degree, config.ring_degree, config.pipefusion_parallel_degree,
           config.cfg_degree(), config.data_parallel_degree};
  int rest = rank;
  for (int i = 0; i < 5; ++i) {
    coord_[i] = rest % size_[i];
    rest /= size_[i];
  }
}

int WorldConfig::GlobalRank(int dp, int cfg, int pipefusion, int ring, int ulysses) const {
  const std::array<int, 5> c = {ulysses, ring, pipefusion, cfg, dp};
  int r = 0;
  for (int i = 4; i >= 0; --i) r = r * size_[i] + c[i];
  return r;
}

int WorldConfig::degree(Dim dim) const {
  if (dim == Dim::kSequence) return size_[kU] * size_[kR];
  if (dim == Dim::kWorld) return world_size_;
  return size_[BasicIndex(dim)];
}

int WorldConfig::rank_in(Dim dim) const {
  if (dim == Dim::kSequence) return coord_[kU] + size_[kU] * coord_[kR];
  if (dim == Dim::kWorld) return rank_;
  return coord_[BasicIndex(dim)];
}

std::vector<int> WorldConfig::members(Dim dim) const {
  std::vector<int> out;
  const auto at = [&](std::array<int, 5> c) {
    return GlobalRank(c[kD], c[kC], c[kP], c[kR], c[kU]);
  };
  if (dim == Dim::kWorld) {
    for (int r = 0; r < world_size_; ++r) out.push_back(r);
  } else if (dim == Dim::kSequence) {
    for (int ring = 0; ring < size_[kR]; ++ring) {
      for (int u = 0; u < size_[kU]; ++u) {
        std::array<int, 5> c = coord_;
        c[kU] = u;
        c[kR] = ring;
        out.push_back(at(c));
      }
    }
  } else {
    const int i = BasicIndex(dim);
    for (int k = 0; k < size_[i]; ++k) {
      std::array<int, 5> c = coord_;
      c[i] = k;
      out.push_back(at(c));
    }
  }
  return out;
}

int WorldConfig::group_index(Dim dim) const {
  // Groups along `dim` are indexed by the remaining coordinates, outermost
  // most significant, which orders them by their smallest member.
  int index = 0;
  for (int i = 4; i >= 0; --i) {
    const bool in_group = (dim == Dim::kWorld) ||
                          (dim == Dim::kSequence && (i == kU || i == kR)) ||
                          (BasicIndex(dim) == i);
    if (in_group) continue;
    index = index * size_[i] + coord_[i];
  }
  return index;
}

std::string WorldConfig::GroupName(Dim dim) const {
  return absl::StrCat(DimName(dim), "[", absl::StrJoin(members(dim), ","), "]");
}

}  // namespace ditserve::parallel
