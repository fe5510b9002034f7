#include "worker/models/text/bert_model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "tests/harness/reference.h"
#include "tools/make_model/bert_writer.h"

namespace ditserve::worker::text {
namespace {

using testing::ReadTextFile;

BertConfig SmallConfig() {
  BertConfig c;
  c.vocab_size = 120;
  c.hidden_size = 32;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.intermediate_size = 64;
  c.max_position_embeddings = 40;
  c.type_vocab_size = 2;
  c.layer_norm_eps = 1e-12;
  return c;
}

class BertModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = absl::StrCat(::testing::TempDir(), "/bert_model_", getpid());
    std::filesystem::create_directories(dir_);
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
    const absl::Status w = tools::make_model::WriteBertTextEncoder(dir_ + "/text_encoder", SmallConfig(), gen, at::kFloat);
    ASSERT_TRUE(w.ok()) << w;
    const absl::Status ref = testing::RunPythonReference(testing::DirectoryOf(__FILE__) + "/bert_model_reference.py",
                                                         dir_, dir_ + "/reference.log");
    ASSERT_TRUE(ref.ok()) << ref;
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }

  static std::unique_ptr<BertModel> LoadFrom(const std::string& sub, at::ScalarType dtype = at::kFloat) {
    auto config = ParseBertConfig(ReadTextFile(dir_ + "/" + sub + "/config.json"));
    EXPECT_TRUE(config.ok()) << config.status();
    if (!config.ok()) return nullptr;
    auto model = BertModel::Create(*config, dtype, models::ParameterInit::kUninitialized);
    EXPECT_TRUE(model.ok()) << model.status();
    auto ckpt = weights::SafetensorsCheckpoint::Open(dir_ + "/" + sub);
    EXPECT_TRUE(ckpt.ok()) << ckpt.status();
    if (!model.ok() || !ckpt.ok()) return nullptr;
    const absl::Status loaded = (*model)->Load(*ckpt);
    EXPECT_TRUE(loaded.ok()) << loaded;
    return loaded.ok() ? std::move(*model) : nullptr;
  }

  static std::string dir_;
};
std::string BertModelTest::dir_;

double MaxAbs(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

TEST_F(BertModelTest, MatchesTransformers) {
  auto io = weights::SafetensorsCheckpoint::Open(dir_ + "/io.safetensors");
  ASSERT_TRUE(io.ok()) << io.status();
  const at::Tensor ids = *io->Get("ids"), mask = *io->Get("mask");
  ASSERT_EQ(ids.sizes(), (std::vector<int64_t>{2, 24}));
  for (const char* sub : {"text_encoder", "perturbed", "prefixed"}) {
    SCOPED_TRACE(sub);
    auto model = LoadFrom(sub);
    ASSERT_NE(model, nullptr);
    const std::string ref = std::string(sub) == "text_encoder" ? "written" : "perturbed";
    auto masked = model->Forward(ids, mask);
    ASSERT_TRUE(masked.ok()) << masked.status();
    auto unmasked = model->Forward(ids);
    ASSERT_TRUE(unmasked.ok()) << unmasked.status();
    EXPECT_EQ(masked->sizes(), (std::vector<int64_t>{2, 24, 32}));
    const double e_masked = MaxAbs(*masked, *io->Get(ref + "_masked"));
    const double e_unmasked = MaxAbs(*unmasked, *io->Get(ref + "_unmasked"));
    std::printf("bert %s: max-abs error, batch of 2 with padding masks (9 and 20 of 24 kept, padded positions "
                "included) %.3g; without a mask %.3g\n", sub, e_masked, e_unmasked);
    EXPECT_LT(e_masked, 1e-5);
    EXPECT_LT(e_unmasked, 1e-5);
    // The mask matters (so the comparison above tests it).
    EXPECT_GT(MaxAbs(*masked, *unmasked), 1e-3);
    if (ref == "perturbed") {
      auto zero = model->Forward(ids.slice(0, 0, 1), at::zeros({1, 24}, at::kLong));
      ASSERT_TRUE(zero.ok()) << zero.status();
      const double e_zero = MaxAbs(*zero, *io->Get("perturbed_zero_mask"));
      std::printf("bert %s: max-abs error with an all-zero mask %.3g\n", sub, e_zero);
      EXPECT_LT(e_zero, 1e-5);
    }
  }
}

TEST_F(BertModelTest, BFloat16RunsClose) {
  auto io = weights::SafetensorsCheckpoint::Open(dir_ + "/io.safetensors");
  ASSERT_TRUE(io.ok());
  auto model = LoadFrom("perturbed", at::kBFloat16);
  ASSERT_NE(model, nullptr);
  auto out = model->Forward(*io->Get("ids"), *io->Get("mask"));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->scalar_type(), at::kBFloat16);
  const double err = MaxAbs(out->to(at::kFloat), *io->Get("perturbed_masked"));
  std::printf("bert bf16 vs transformers fp32: max-abs %.3g\n", err);
  EXPECT_LT(err, 0.25);
}

TEST_F(BertModelTest, RefusesBadInputs) {
  auto model = LoadFrom("text_encoder");
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->Forward(at::zeros({1, 41}, at::kLong)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(model->Forward(at::full({1, 5}, 120, at::kLong)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(model->Forward(at::full({1, 5}, -1, at::kLong)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(model->Forward(at::zeros({1, 5}, at::kLong), at::ones({1, 4}, at::kLong)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(model->Forward(at::zeros({5}, at::kLong)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(model->Forward(at::zeros({1, 40}, at::kLong)).ok());
}

TEST_F(BertModelTest, ParseConfig) {
  auto c = ParseBertConfig(ReadTextFile(dir_ + "/text_encoder/config.json"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->vocab_size, 120);
  EXPECT_EQ(c->num_hidden_layers, 3);
  EXPECT_EQ(c->max_position_embeddings, 40);
  EXPECT_DOUBLE_EQ(c->layer_norm_eps, 1e-12);
  EXPECT_EQ(c->hidden_act, "gelu");
  for (const char* bad : {R"({"hidden_act": "relu"})", R"({"position_embedding_type": "relative_key"})",
                          R"({"hidden_size": 30, "num_attention_heads": 4})", R"({"is_decoder": true})",
                          R"({"vocab_size": 0})", "[1]", "{"}) {
    auto r = ParseBertConfig(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_NE(ParseBertConfig(R"({"hidden_act": "relu"})").status().message().find("relu"), std::string::npos);
  // transformers' defaults (bert-base).
  auto d = ParseBertConfig("{}");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->hidden_size, 768);
  EXPECT_EQ(d->vocab_size, 30522);
}

TEST_F(BertModelTest, LoadRefusesMismatchedCheckpoint) {
  BertConfig c = SmallConfig();
  c.num_hidden_layers = 2;  // the checkpoint has a third layer
  auto model = BertModel::Create(c, at::kFloat);
  ASSERT_TRUE(model.ok());
  auto ckpt = weights::SafetensorsCheckpoint::Open(dir_ + "/text_encoder");
  ASSERT_TRUE(ckpt.ok());
  const absl::Status s = (*model)->Load(*ckpt);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("encoder.layer.2."), std::string::npos) << s;
}

// Same arguments and generator state: byte-identical files; another seed:
// other weights.
TEST_F(BertModelTest, WritersAreDeterministic) {
  const auto write = [&](const std::string& sub, uint64_t seed) {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    EXPECT_TRUE(tools::make_model::WriteBertTextEncoder(dir_ + "/" + sub + "/text_encoder", SmallConfig(), gen,
                                                        at::kBFloat16).ok());
    auto size = tools::make_model::WriteBertTokenizer(dir_ + "/" + sub + "/tokenizer", 2000, 77);
    EXPECT_TRUE(size.ok()) << size.status();
    return size.ok() ? *size : 0;
  };
  const int a = write("det_a", 11), b = write("det_b", 11);
  write("det_c", 12);
  EXPECT_EQ(a, b);
  EXPECT_GT(a, 1000);
  for (const char* f : {"text_encoder/model.safetensors", "text_encoder/config.json", "tokenizer/vocab.txt",
                        "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json"}) {
    const std::string x = ReadTextFile(dir_ + "/det_a/" + f);
    EXPECT_FALSE(x.empty()) << f;
    EXPECT_EQ(x, ReadTextFile(dir_ + "/det_b/" + f)) << f;
  }
  EXPECT_NE(ReadTextFile(dir_ + "/det_a/text_encoder/model.safetensors"),
            ReadTextFile(dir_ + "/det_c/text_encoder/model.safetensors"));
}

}  // namespace
}  // namespace ditserve::worker::text
