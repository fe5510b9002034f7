#include "parallel/world_config.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

namespace ditserve::parallel {
namespace {

// An independent reference for the layout: number the ranks with nested
// loops, outermost dp, then cfg, pipefusion, ring, ulysses innermost (xDiT's
// order), and derive groups by comparing coordinates.
struct Coord {
  int dp, cfg, pp, ring, u;
};

struct Reference {
  std::vector<Coord> coords;  // by global rank
  explicit Reference(const ParallelConfig& c) {
    for (int dp = 0; dp < c.data_parallel_degree; ++dp)
      for (int cfg = 0; cfg < c.cfg_degree(); ++cfg)
        for (int pp = 0; pp < c.pipefusion_parallel_degree; ++pp)
          for (int ring = 0; ring < c.ring_degree; ++ring)
            for (int u = 0; u < c.ulysses_degree; ++u) coords.push_back({dp, cfg, pp, ring, u});
  }
  // Whether ranks a and b agree on every coordinate outside `dim`.
  bool SameGroup(Dim dim, int a, int b) const {
    const Coord& x = coords[a];
    const Coord& y = coords[b];
    const bool dp = x.dp == y.dp, cfg = x.cfg == y.cfg, pp = x.pp == y.pp,
               ring = x.ring == y.ring, u = x.u == y.u;
    switch (dim) {
      case Dim::kUlysses: return dp && cfg && pp && ring;
      case Dim::kRing: return dp && cfg && pp && u;
      case Dim::kPipeFusion: return dp && cfg && ring && u;
      case Dim::kCfg: return dp && pp && ring && u;
      case Dim::kData: return cfg && pp && ring && u;
      case Dim::kSequence: return dp && cfg && pp;
      case Dim::kWorld: return true;
    }
    return false;
  }
  // Members ordered by their index within the group (the group coordinate;
  // for the sequence group ulysses + U·ring, i.e. ascending global rank).
  std::vector<int> Members(Dim dim, int rank) const {
    std::vector<int> m;
    for (int r = 0; r < static_cast<int>(coords.size()); ++r) {
      if (SameGroup(dim, rank, r)) m.push_back(r);
    }
    return m;  // ascending global rank == ascending group coordinate
  }
};

TEST(WorldConfig, EveryGroupOfEveryRankOfEveryFactorisation) {
  int configs_checked = 0;
  for (int w : {1, 2, 3, 4, 6, 8, 16}) {
    for (const ParallelConfig& config : EnumerateParallelConfigs(w)) {
      ++configs_checked;
      const Reference ref(config);
      ASSERT_EQ(static_cast<int>(ref.coords.size()), w);
      for (Dim dim : kAllDims) {
        std::map<std::vector<int>, std::set<int>> group_indices;  // members -> indices seen
        std::set<int> covered;
        for (int rank = 0; rank < w; ++rank) {
          auto world = WorldConfig::Create(config, rank);
          ASSERT_TRUE(world.ok()) << world.status();
          const std::vector<int> members = world->members(dim);
          const std::vector<int> expected = ref.Members(dim, rank);
          ASSERT_EQ(members, expected)
              << config.ToString() << " rank " << rank << " dim " << DimName(dim);
          ASSERT_EQ(world->degree(dim), static_cast<int>(expected.size()));
          ASSERT_EQ(members[world->rank_in(dim)], rank);
          group_indices[members].insert(world->group_index(dim));
          covered.insert(rank);
        }
        // Groups partition the world; each has one index, indices are
        // 0..groups-1 in order of the smallest member.
        int expected_index = 0;
        std::vector<std::pair<int, std::vector<int>>> by_first;
        for (const auto& [members, indices] : group_indices) {
          ASSERT_EQ(indices.size(), 1u);
          by_first.push_back({members.front(), members});
        }
        std::sort(by_first.begin(), by_first.end());
        for (const auto& [first, members] : by_first) {
          EXPECT_EQ(*group_indices[members].begin(), expected_index++);
        }
        EXPECT_EQ(static_cast<int>(covered.size()), w);
        EXPECT_EQ(static_cast<int>(group_indices.size()) * ref.Members(dim, 0).size(),
                  static_cast<size_t>(w));
      }
    }
  }
  // W=1: 1, 2: 4+1, 3: 4, 4: 10+4, 6: 16+4, 8: 20+10, 16: 35+20.
  EXPECT_EQ(configs_checked, 1 + 5 + 4 + 14 + 20 + 30 + 55);
}

// ARCHITECTURE.md's example: W=16 with ulysses, ring, pipefusion and cfg
// degree 2 (and dp 1).
TEST(WorldConfig, ArchitectureExampleW16) {
  const ParallelConfig config{1, true, 2, 2, 2};
  auto r0 = WorldConfig::Create(config, 0);
  ASSERT_TRUE(r0.ok());
  EXPECT_EQ(r0->members(Dim::kUlysses), (std::vector<int>{0, 1}));
  EXPECT_EQ(r0->members(Dim::kRing), (std::vector<int>{0, 2}));
  EXPECT_EQ(r0->members(Dim::kPipeFusion), (std::vector<int>{0, 4}));
  EXPECT_EQ(r0->members(Dim::kCfg), (std::vector<int>{0, 8}));
  EXPECT_EQ(r0->members(Dim::kSequence), (std::vector<int>{0, 1, 2, 3}));
  auto r1 = WorldConfig::Create(config, 1);
  EXPECT_EQ(r1->members(Dim::kRing), (std::vector<int>{1, 3}));
  EXPECT_EQ(r1->members(Dim::kPipeFusion), (std::vector<int>{1, 5}));
  auto r2 = WorldConfig::Create(config, 2);
  EXPECT_EQ(r2->members(Dim::kUlysses), (std::vector<int>{2, 3}));
  auto r13 = WorldConfig::Create(config, 13);
  // 13 = u1 + 2·(ring0 + 2·(pp1 + 2·cfg1))
  EXPECT_EQ(r13->rank_in(Dim::kUlysses), 1);
  EXPECT_EQ(r13->rank_in(Dim::kRing), 0);
  EXPECT_EQ(r13->rank_in(Dim::kPipeFusion), 1);
  EXPECT_EQ(r13->rank_in(Dim::kCfg), 1);
  EXPECT_EQ(r13->rank_in(Dim::kSequence), 1);
  EXPECT_EQ(r13->members(Dim::kCfg), (std::vector<int>{5, 13}));
  EXPECT_EQ(r13->members(Dim::kSequence), (std::vector<int>{12, 13, 14, 15}));
  EXPECT_EQ(r13->GroupName(Dim::kPipeFusion), "pipefusion[9,13]");
  EXPECT_EQ(r13->GlobalRank(0, 1, 1, 0, 1), 13);
  // With dp 2 as well (W=32), the data parallel groups are [r, r+16].
  auto w32 = WorldConfig::Create({2, true, 2, 2, 2}, 3);
  ASSERT_TRUE(w32.ok());
  EXPECT_EQ(w32->members(Dim::kData), (std::vector<int>{3, 19}));
}

TEST(WorldConfig, SequenceRankIsUlyssesInsideRing) {
  auto w = WorldConfig::Create({1, false, 1, 2, 3}, 5);  // u=2, ring=3
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->rank_in(Dim::kUlysses), 1);
  EXPECT_EQ(w->rank_in(Dim::kRing), 2);
  EXPECT_EQ(w->rank_in(Dim::kSequence), 5);
  EXPECT_EQ(w->members(Dim::kRing), (std::vector<int>{1, 3, 5}));
}

TEST(WorldConfig, RejectsBadRankAndConfig) {
  auto bad_rank = WorldConfig::Create({1, false, 1, 2, 1}, 2);
  EXPECT_EQ(bad_rank.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad_rank.status().message(), "--rank must be in [0, 2), got 2");
  EXPECT_FALSE(WorldConfig::Create({1, false, 1, 2, 1}, -1).ok());
  EXPECT_FALSE(WorldConfig::Create({1, false, 0, 2, 1}, 0).ok());
}

}  // namespace
}  // namespace ditserve::parallel
