// USP attention (Ulysses, Ring, both, joint text+image, padding) against
// serial attention computed in float64 on every rank.

#include "parallel/usp_attention.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "parallel/process_groups.h"
#include "parallel/rendezvous.h"
#include "tests/harness/multiproc.h"
#include "tests/parallel/test_gang.h"

namespace ditserve::parallel {
namespace {

struct Case {
  int u = 1, r = 1;
  int64_t B = 1, H = 4, D = 64, S = 1024, T = -1;  // T < 0: no text
  std::string dtype = "f32";
  std::string ToArg() const {
    return absl::StrCat(u, ",", r, ",", B, ",", H, ",", D, ",", S, ",", T, ",", dtype);
  }
  static Case Parse(const std::string& s) {
    std::vector<std::string> f = absl::StrSplit(s, ',');
    Case c;
    int64_t v[7];
    for (int i = 0; i < 7; ++i) (void)absl::SimpleAtoi(f.at(i), &v[i]);
    c.u = static_cast<int>(v[0]);
    c.r = static_cast<int>(v[1]);
    c.B = v[2];
    c.H = v[3];
    c.D = v[4];
    c.S = v[5];
    c.T = v[6];
    c.dtype = f.at(7);
    return c;
  }
  at::ScalarType type() const {
    return dtype == "f16" ? at::kHalf : (dtype == "bf16" ? at::kBFloat16 : at::kFloat);
  }
  // One unit in the last place at magnitude 1 (attention outputs here stay
  // well below 2): 2^-10 for f16, 2^-7 for bf16.
  double bound() const { return dtype == "f16" ? 1e-3 : (dtype == "bf16" ? 8e-3 : 1e-5); }
};

// Serial attention in float64 over the joint sequence [text, image].
at::Tensor Serial(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  at::Tensor qd = q.to(at::kDouble).permute({0, 2, 1, 3});
  at::Tensor kd = k.to(at::kDouble).permute({0, 2, 1, 3});
  at::Tensor vd = v.to(at::kDouble).permute({0, 2, 1, 3});
  at::Tensor s = at::matmul(qd, kd.transpose(-1, -2)) / std::sqrt(static_cast<double>(q.size(3)));
  return at::matmul(at::softmax(s, -1), vd).permute({0, 2, 1, 3});
}

absl::StatusOr<std::unique_ptr<ProcessGroups>> Join(const testing::RankContext& ctx, int u, int r) {
  ParallelConfig config;
  config.ulysses_degree = u;
  config.ring_degree = r;
  return JoinTestGang(ctx, config, ProcessGroupsOptions{});
}

absl::Status Compare(const at::Tensor& got, const at::Tensor& want, double bound,
                     const std::string& what) {
  if (!got.sizes().equals(want.sizes())) {
    return absl::InternalError(absl::StrCat(what, ": shape ", c10::str(got.sizes()), " want ",
                                            c10::str(want.sizes())));
  }
  const double err = (got.to(at::kDouble) - want).abs().max().item<double>();
  std::printf("%s: max-abs error %.3g (bound %.1g)\n", what.c_str(), err, bound);
  if (!(err <= bound)) return absl::InternalError(absl::StrCat(what, ": max-abs error ", err));
  return absl::OkStatus();
}

DITSERVE_SCENARIO(usp) {
  const Case c = Case::Parse(ctx.args.at(0));
  auto groups = Join(ctx, c.u, c.r);
  if (!groups.ok()) return groups.status();
  Communicator& ulysses = (*groups)->group(Dim::kUlysses);
  Communicator& ring = (*groups)->group(Dim::kRing);
  const int sp = c.u * c.r;
  const int sp_rank = (*groups)->world().rank_in(Dim::kSequence);
  // The same inputs on every rank (same seed), rounded to the test dtype.
  at::manual_seed(1234);
  const auto make = [&](int64_t len) { return at::randn({c.B, len, c.H, c.D}).to(c.type()); };
  const at::Tensor iq = make(c.S), ik = make(c.S), iv = make(c.S);
  UspStats stats;
  UspOptions options;
  options.stats = &stats;
  const SequenceShard sq = ShardSequence(iq, sp_rank, sp), sk = ShardSequence(ik, sp_rank, sp),
                      sv = ShardSequence(iv, sp_rank, sp);
  const bool padded = c.S % sp != 0;
  const at::Tensor valid = padded ? sq.valid : at::Tensor();
  const int64_t len = sq.local.size(1);
  const int64_t start = std::min<int64_t>(c.S, sp_rank * len);
  const int64_t real = std::min<int64_t>(c.S, start + len) - start;
  if (c.T < 0) {
    const at::Tensor want = Serial(iq, ik, iv);
    auto out = UspAttention(ulysses, ring, sq.local, sk.local, sv.local, valid, options);
    if (!out.ok()) return out.status();
    if (out->scalar_type() != c.type()) return absl::InternalError("output dtype differs");
    if (absl::Status s = Compare(out->narrow(1, 0, real), want.narrow(1, start, real), c.bound(),
                                 absl::StrCat("rank ", ctx.rank, " image"));
        !s.ok()) {
      return s;
    }
    // The whole sequence back together equals serial too.
    auto full = GatherSequence(ulysses, ring, *out, c.S);
    if (!full.ok()) return full.status();
    if (absl::Status s = Compare(*full, want, c.bound(), "gathered"); !s.ok()) return s;
    // Ulysses alone and Ring alone on their own groups agree as well when
    // they are the whole SP group.
    if (c.r == 1) {
      auto u_only = UlyssesAttention(ulysses, sq.local, sk.local, sv.local, valid, options);
      if (!u_only.ok()) return u_only.status();
      if (absl::Status s = Compare(u_only->narrow(1, 0, real), want.narrow(1, start, real),
                                   c.bound(), "ulysses only");
          !s.ok()) {
        return s;
      }
    }
  } else {
    const at::Tensor tq = make(c.T), tk = make(c.T), tv = make(c.T);
    const at::Tensor want =
        Serial(at::cat({tq, iq}, 1), at::cat({tk, ik}, 1), at::cat({tv, iv}, 1));
    auto out = JointUspAttention(ulysses, ring, tq, tk, tv, sq.local, sk.local, sv.local, valid,
                                 options);
    if (!out.ok()) return out.status();
    if (absl::Status s = Compare(out->text, want.narrow(1, 0, c.T), c.bound(),
                                 absl::StrCat("rank ", ctx.rank, " text (", c.T % sp == 0 ? "sharded" : "replicated", ")"));
        !s.ok()) {
      return s;
    }
    if (absl::Status s = Compare(out->image.narrow(1, 0, real), want.narrow(1, c.T + start, real),
                                 c.bound(), absl::StrCat("rank ", ctx.rank, " image"));
        !s.ok()) {
      return s;
    }
  }
  std::printf("rank %d: sent %lld bytes\n", ctx.rank, static_cast<long long>(stats.bytes_sent));
  return absl::OkStatus();
}

class Usp : public ::testing::TestWithParam<Case> {};

TEST_P(Usp, MatchesSerialAttention) {
  const Case c = GetParam();
  testing::LaunchOptions options;
  options.world_size = c.u * c.r;
  options.args = {c.ToArg()};
  testing::ExpectAllRanksOk(testing::LaunchScenario("usp", options));
}

// {u, r, B, H, D, S, T, dtype}. S: 1024 divides, 1000 and 4173 = 4096 + 77
// do not (padded and masked); T: 77 never divides (replicated text), 64 and
// 512 divide (sharded text).
INSTANTIATE_TEST_SUITE_P(
    Configs, Usp,
    ::testing::Values(Case{1, 1, 2, 4, 64, 1000, 77, "f32"},
                      Case{2, 1, 1, 8, 64, 1024, -1, "f32"},
                      Case{2, 1, 1, 24, 128, 1000, 77, "f32"},
                      Case{2, 1, 2, 8, 64, 1024, 64, "bf16"},
                      Case{2, 1, 2, 8, 64, 1000, -1, "f32"},
                      Case{4, 1, 2, 8, 64, 1000, 64, "bf16"},
                      Case{1, 2, 2, 4, 128, 1000, -1, "f32"},
                      Case{1, 2, 1, 8, 64, 1024, 77, "f16"},
                      Case{2, 2, 1, 4, 64, 4173, -1, "f32"},
                      Case{2, 2, 2, 8, 64, 1000, 512, "f32"},
                      Case{2, 2, 1, 4, 64, 1024, 77, "bf16"},
                      Case{4, 1, 1, 8, 64, 1000, 77, "f32"},
                      Case{4, 1, 1, 24, 64, 1024, -1, "f16"},
                      Case{1, 4, 1, 4, 64, 1024, -1, "f32"},
                      Case{1, 4, 2, 4, 64, 1000, 77, "f32"},
                      Case{8, 1, 1, 8, 64, 1024, 77, "f32"},
                      Case{4, 2, 1, 24, 64, 1000, 512, "f32"},
                      Case{2, 4, 1, 4, 64, 4173, 77, "f32"},
                      Case{1, 8, 1, 4, 64, 1000, -1, "f32"}),
    [](const ::testing::TestParamInfo<Case>& info) {
      const Case& c = info.param;
      return absl::StrCat("u", c.u, "r", c.r, "_B", c.B, "H", c.H, "D", c.D, "S", c.S, "T",
                          c.T < 0 ? std::string("none") : absl::StrCat(c.T), "_", c.dtype);
    });

// Error paths: heads that do not divide by the Ulysses degree fail before
// any communication; shards of different shapes across ranks fail on every
// rank.
DITSERVE_SCENARIO(usp_errors) {
  auto groups = Join(ctx, 2, 2);
  if (!groups.ok()) return groups.status();
  Communicator& ulysses = (*groups)->group(Dim::kUlysses);
  Communicator& ring = (*groups)->group(Dim::kRing);
  const at::Tensor x = at::randn({1, 16, 3, 8});
  auto heads = UspAttention(ulysses, ring, x, x, x, at::Tensor(), {});
  if (heads.status().code() != absl::StatusCode::kInvalidArgument ||
      heads.status().message() != "USP attention: the number of heads (3) must divide by the Ulysses degree (2)") {
    return absl::InternalError(absl::StrCat("heads: ", heads.status().ToString()));
  }
  // Ring ranks disagree on the shard length.
  const at::Tensor y = at::randn({1, 16 + (*groups)->world().rank_in(Dim::kRing), 4, 8});
  auto ring_mismatch = RingAttention(ring, y, y, y, at::Tensor(), at::Tensor(), at::Tensor(), {});
  if (ring_mismatch.status().code() != absl::StatusCode::kInvalidArgument ||
      ring_mismatch.status().message().find("shard shapes differ across ranks") == std::string::npos) {
    return absl::InternalError(absl::StrCat("ring: ", ring_mismatch.status().ToString()));
  }
  // Ulysses ranks disagree: the all-to-all's shape check catches it.
  const at::Tensor z = at::randn({1, 16 + 2 * (*groups)->world().rank_in(Dim::kUlysses), 4, 8});
  auto u_mismatch = UspAttention(ulysses, ring, z, z, z, at::Tensor(), {});
  if (u_mismatch.status().code() != absl::StatusCode::kInvalidArgument) {
    return absl::InternalError(absl::StrCat("ulysses: ", u_mismatch.status().ToString()));
  }
  // q, k, v of different shapes on one rank.
  auto local = UspAttention(ulysses, ring, x, at::randn({1, 15, 3, 8}), x, at::Tensor(), {});
  if (local.status().code() != absl::StatusCode::kInvalidArgument) {
    return absl::InternalError(absl::StrCat("local: ", local.status().ToString()));
  }
  return absl::OkStatus();
}

TEST(Usp, ErrorPaths) {
  testing::ExpectAllRanksOk(testing::LaunchScenario("usp_errors", testing::LaunchOptions{.world_size = 4}));
}

// Ulysses alone moves q/k/v point to point (overlapped with the attention
// blocks), so the shard shapes are agreed first: a mismatch is an
// INVALID_ARGUMENT on every rank, not a hang or a torn transfer.
DITSERVE_SCENARIO(ulysses_shape_mismatch) {
  auto groups = Join(ctx, 2, 1);
  if (!groups.ok()) return groups.status();
  Communicator& ulysses = (*groups)->group(Dim::kUlysses);
  const at::Tensor z = at::randn({1, 16 + 2 * ulysses.rank(), 4, 8});
  auto mismatch = UlyssesAttention(ulysses, z, z, z, at::Tensor(), {});
  if (mismatch.status().code() != absl::StatusCode::kInvalidArgument ||
      mismatch.status().message().find("shard shapes differ across ranks") == std::string::npos) {
    return absl::InternalError(absl::StrCat("ulysses: ", mismatch.status().ToString()));
  }
  // The group is still usable afterwards: a good call matches serial.
  at::manual_seed(7);
  const at::Tensor q = at::randn({1, 32, 4, 8}), k = at::randn({1, 32, 4, 8}), v = at::randn({1, 32, 4, 8});
  auto serial = kernels::AttentionWithLse(q, k, v, at::Tensor());
  if (!serial.ok()) return serial.status();
  const int64_t half = 16, start = half * ulysses.rank();
  auto got = UlyssesAttention(ulysses, q.narrow(1, start, half), k.narrow(1, start, half),
                              v.narrow(1, start, half), at::Tensor(), {});
  if (!got.ok()) return got.status();
  const double err = (*got - serial->out.narrow(1, start, half)).abs().max().item<double>();
  if (err > 1e-5) return absl::InternalError(absl::StrCat("after the mismatch: max-abs ", err));
  return absl::OkStatus();
}

TEST(Usp, UlyssesShapeMismatchFailsOnEveryRank) {
  testing::ExpectAllRanksOk(
      testing::LaunchScenario("ulysses_shape_mismatch", testing::LaunchOptions{.world_size = 2}));
}

// UspStats::wait_seconds counts the time a rank is blocked on its peers: a
// rank that arrives 300 ms late makes the other wait about that long, for
// Ulysses (point-to-point) and Ring alike, and waiting never exceeds the
// call's wall time.
DITSERVE_SCENARIO(usp_wait_seconds) {
  const int u = ctx.args.at(0) == "ulysses" ? 2 : 1, r = 3 - u;
  auto groups = Join(ctx, u, r);
  if (!groups.ok()) return groups.status();
  at::manual_seed(3);
  const at::Tensor q = at::randn({1, 64, 4, 16}), k = at::randn({1, 64, 4, 16}), v = at::randn({1, 64, 4, 16});
  if (absl::Status s = (*groups)->control().Barrier(); !s.ok()) return s;
  if (ctx.rank == 1) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  UspStats stats;
  UspOptions options;
  options.stats = &stats;
  options.check_shapes = false;  // as generation runs it: the wait falls on the transfers
  const auto start = std::chrono::steady_clock::now();
  auto out = UspAttention((*groups)->group(Dim::kUlysses), (*groups)->group(Dim::kRing), q, k, v, at::Tensor(),
                          options);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!out.ok()) return out.status();
  std::printf("rank %d %s: wait %.3f s of %.3f s\n", ctx.rank, ctx.args.at(0).c_str(), stats.wait_seconds, wall);
  if (stats.wait_seconds < 0 || stats.wait_seconds > wall) {
    return absl::InternalError(absl::StrCat("wait ", stats.wait_seconds, " s outside [0, ", wall, "]"));
  }
  if (ctx.rank == 0 && stats.wait_seconds < 0.2) {
    return absl::InternalError(absl::StrCat("rank 0 waited ", stats.wait_seconds, " s for a rank 300 ms late"));
  }
  return absl::OkStatus();
}

TEST(Usp, WaitSecondsCountTimeBlockedOnPeers) {
  for (const char* method : {"ulysses", "ring"}) {
    testing::LaunchOptions options;
    options.world_size = 2;
    options.args = {method};
    testing::ExpectAllRanksOk(testing::LaunchScenario("usp_wait_seconds", options));
  }
}

TEST(ShardSequence, PadsAndMarksValidTokens) {
  const at::Tensor full = at::arange(10, at::kFloat).view({1, 10, 1, 1});
  const SequenceShard last = ShardSequence(full, 3, 4);  // len 3: tokens 9, pad, pad
  EXPECT_EQ(last.local.size(1), 3);
  EXPECT_EQ(last.local[0][0][0][0].item<float>(), 9.f);
  EXPECT_EQ(last.local[0][1][0][0].item<float>(), 0.f);
  EXPECT_TRUE(last.valid[0][0].item<bool>());
  EXPECT_FALSE(last.valid[0][1].item<bool>());
  EXPECT_FALSE(last.valid[0][2].item<bool>());
  const SequenceShard first = ShardSequence(full, 0, 4);
  EXPECT_TRUE(first.valid.all().item<bool>());
  EXPECT_EQ(first.local[0][2][0][0].item<float>(), 2.f);
  // More ranks than tokens: the tail ranks hold only padding.
  const SequenceShard empty = ShardSequence(at::ones({1, 2, 1, 1}), 3, 4);
  EXPECT_FALSE(empty.valid.any().item<bool>());
}

}  // namespace
}  // namespace ditserve::parallel
