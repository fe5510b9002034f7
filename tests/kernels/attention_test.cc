#include "kernels/attention.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace ditserve::kernels {
namespace {

// Independent reference in float64: explicit scores, masked to -inf,
// softmax, weighted sum; lse by logsumexp.
AttentionResult Reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const at::Tensor& valid) {
  at::Tensor qd = q.to(at::kDouble).permute({0, 2, 1, 3});
  at::Tensor kd = k.to(at::kDouble).permute({0, 2, 1, 3});
  at::Tensor vd = v.to(at::kDouble).permute({0, 2, 1, 3});
  at::Tensor s = at::matmul(qd, kd.transpose(-1, -2)) / std::sqrt(static_cast<double>(q.size(3)));
  if (valid.defined()) {
    s = s.masked_fill(valid.logical_not().view({q.size(0), 1, 1, k.size(1)}),
                      -std::numeric_limits<double>::infinity());
  }
  at::Tensor lse = at::logsumexp(s, -1);
  at::Tensor p = at::softmax(s, -1).nan_to_num(0.0);
  at::Tensor out = at::matmul(p, vd).permute({0, 2, 1, 3});
  return {out.to(at::kFloat), lse.to(at::kFloat)};
}

double MaxAbs(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

TEST(AttentionWithLse, MatchesFloat64Reference) {
  at::manual_seed(1);
  const at::Tensor q = at::randn({2, 37, 3, 16}), k = at::randn({2, 53, 3, 16}),
                   v = at::randn({2, 53, 3, 16});
  auto r = AttentionWithLse(q, k, v, at::Tensor());
  ASSERT_TRUE(r.ok()) << r.status();
  const AttentionResult want = Reference(q, k, v, at::Tensor());
  EXPECT_EQ(r->out.sizes(), q.sizes());
  EXPECT_EQ(r->lse.sizes(), (std::vector<int64_t>{2, 3, 37}));
  EXPECT_LT(MaxAbs(r->out, want.out), 1e-5);
  EXPECT_LT(MaxAbs(r->lse, want.lse), 1e-5);
}

// Long enough for several of the fused kernel's query and key blocks, with
// strided (non-contiguous) inputs as the parallel code passes them.
TEST(AttentionWithLse, LongStridedInputsAcrossKernelBlocks) {
  at::manual_seed(2);
  const at::Tensor q = at::randn({1, 700, 4, 8}).narrow(2, 1, 2);
  const at::Tensor kv = at::randn({2, 1100, 2, 8});
  const at::Tensor k = kv[0].unsqueeze(0), v = kv[1].unsqueeze(0);
  at::Tensor valid = at::rand({1, 1100}) > 0.3;
  for (const at::Tensor& mask : {at::Tensor(), valid}) {
    auto r = AttentionWithLse(q, k, v, mask);
    ASSERT_TRUE(r.ok()) << r.status();
    const AttentionResult want = Reference(q, k, v, mask);
    EXPECT_TRUE(r->out.is_contiguous());
    EXPECT_LT(MaxAbs(r->out, want.out), 1e-5);
    EXPECT_LT(MaxAbs(r->lse, want.lse), 1e-5);
  }
}

TEST(AttentionWithLse, MaskedKeysAndFullyMaskedRows) {
  at::manual_seed(3);
  const at::Tensor q = at::randn({2, 9, 2, 8}), k = at::randn({2, 11, 2, 8}),
                   v = at::randn({2, 11, 2, 8});
  at::Tensor valid = at::rand({2, 11}) > 0.4;
  valid[1].fill_(false);  // batch 1: no valid key at all
  valid[0][0] = true;
  auto r = AttentionWithLse(q, k, v, valid);
  ASSERT_TRUE(r.ok()) << r.status();
  const AttentionResult want = Reference(q, k, v, valid);
  EXPECT_LT(MaxAbs(r->out[0], want.out[0]), 1e-5);
  EXPECT_LT(MaxAbs(r->lse[0], want.lse[0]), 1e-5);
  EXPECT_TRUE(at::equal(r->out[1], at::zeros_like(r->out[1])));
  EXPECT_TRUE(r->lse[1].isneginf().all().item<bool>());
  EXPECT_FALSE(r->out.isnan().any().item<bool>());
}

TEST(AttentionWithLse, HalfInputsAccumulateInFloat32) {
  at::manual_seed(4);
  for (at::ScalarType t : {at::kHalf, at::kBFloat16}) {
    const at::Tensor q = at::randn({1, 64, 2, 32}).to(t), k = at::randn({1, 300, 2, 32}).to(t),
                     v = at::randn({1, 300, 2, 32}).to(t);
    auto r = AttentionWithLse(q, k, v, at::Tensor());
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->out.scalar_type(), at::kFloat);
    // Same rounded inputs, exact arithmetic: only f32 rounding remains.
    const AttentionResult want = Reference(q, k, v, at::Tensor());
    EXPECT_LT(MaxAbs(r->out, want.out), 1e-5) << c10::toString(t);
  }
}

TEST(MergeAttention, EqualsAttentionOverTheUnionOfKeys) {
  at::manual_seed(5);
  const at::Tensor q = at::randn({2, 13, 4, 16}), k = at::randn({2, 40, 4, 16}) * 3,
                   v = at::randn({2, 40, 4, 16});
  auto whole = AttentionWithLse(q, k, v, at::Tensor());
  AttentionResult acc;
  for (int64_t start : {0, 7, 25}) {  // uneven blocks
    const int64_t len = start == 0 ? 7 : (start == 7 ? 18 : 15);
    auto part = AttentionWithLse(q, k.narrow(1, start, len), v.narrow(1, start, len), at::Tensor());
    ASSERT_TRUE(part.ok());
    ASSERT_TRUE(MergeAttentionInto(acc, *part).ok());
  }
  EXPECT_LT(MaxAbs(acc.out, whole->out), 1e-5);
  EXPECT_LT(MaxAbs(acc.lse, whole->lse), 1e-5);
}

TEST(MergeAttention, StableForExtremeAndEmptySides) {
  const float inf = std::numeric_limits<float>::infinity();
  AttentionResult a{at::full({1, 3, 1, 2}, 1.0f), at::tensor({1000.f, -inf, -inf}).view({1, 1, 3})};
  AttentionResult b{at::full({1, 3, 1, 2}, 5.0f), at::tensor({-1000.f, 2.f, -inf}).view({1, 1, 3})};
  ASSERT_TRUE(MergeAttentionInto(a, b).ok());
  EXPECT_FALSE(a.out.isnan().any().item<bool>());
  EXPECT_FLOAT_EQ(a.out[0][0][0][0].item<float>(), 1.0f);  // b's weight underflows to 0
  EXPECT_FLOAT_EQ(a.lse[0][0][0].item<float>(), 1000.f);
  EXPECT_FLOAT_EQ(a.out[0][1][0][0].item<float>(), 5.0f);  // a is empty
  EXPECT_FLOAT_EQ(a.lse[0][0][1].item<float>(), 2.f);
  EXPECT_FLOAT_EQ(a.out[0][2][0][0].item<float>(), 0.0f);  // both empty
  EXPECT_TRUE(std::isinf(a.lse[0][0][2].item<float>()));
  AttentionResult c{at::zeros({1, 2, 1, 2}), at::zeros({1, 1, 2})};
  EXPECT_EQ(MergeAttentionInto(a, c).code(), absl::StatusCode::kInvalidArgument);
}

TEST(AttentionWithLse, RejectsBadInputs) {
  const at::Tensor q = at::randn({1, 4, 2, 8});
  EXPECT_EQ(AttentionWithLse(q, at::randn({1, 5, 3, 8}), at::randn({1, 5, 3, 8}), at::Tensor())
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(AttentionWithLse(q, q, q.to(at::kDouble), at::Tensor()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(AttentionWithLse(q, q, q, at::ones({1, 3}, at::kBool)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(AttentionWithLse(q.view({4, 2, 8}), q, q, at::Tensor()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ditserve::kernels
