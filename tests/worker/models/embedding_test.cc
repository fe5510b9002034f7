// models::Embedding against torch::nn::Embedding: the same table from the
// same seed, the same rows; uninitialised tables draw nothing.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/embedding.h>

#include "worker/models/common/embedding.h"

namespace ditserve::worker::models {
namespace {

TEST(Embedding, InitialisesLikeTorchEmbedding) {
  at::manual_seed(9);
  torch::nn::Embedding want(13, 6);
  at::manual_seed(9);
  Embedding got(13, 6, ParameterSpec{});
  EXPECT_TRUE(at::equal(got.weight, want->weight));
  const at::Tensor ids = at::tensor({0, 12, 3, 5, 5, 1}, at::kLong).view({2, 3});
  EXPECT_TRUE(at::equal(got.forward(ids), want->forward(ids)));
  EXPECT_EQ(got.forward(ids).sizes(), (std::vector<int64_t>{2, 3, 6}));
}

TEST(Embedding, UninitialisedTablesDrawNothing) {
  at::manual_seed(4);
  const at::Tensor expected_next = at::rand({3});
  at::manual_seed(4);
  Embedding table(1000, 16, ParameterSpec{ParameterInit::kUninitialized, at::kBFloat16});
  EXPECT_TRUE(at::equal(at::rand({3}), expected_next));
  EXPECT_EQ(table.weight.scalar_type(), at::kBFloat16);
  EXPECT_EQ(table.weight.sizes(), (std::vector<int64_t>{1000, 16}));
}

}  // namespace
}  // namespace ditserve::worker::models
