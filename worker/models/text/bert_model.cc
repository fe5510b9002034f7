#include "worker/models/text/bert_model.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/normalization.h>

#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "worker/models/common/dense.h"
#include "worker/models/common/embedding.h"
#include "worker/weights/load_module.h"

namespace ditserve::worker::text {
namespace {

using Embedding = std::shared_ptr<models::Embedding>;
using Linear = std::shared_ptr<models::Dense>;
using models::ParameterSpec;
using torch::nn::LayerNorm;
using torch::nn::LayerNormOptions;
using torch::nn::ModuleList;

struct Empty : torch::nn::Module {};

LayerNorm Norm(const BertConfig& c) { return LayerNorm(LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)); }

// encoder.layer.N: attention.{self.{query,key,value}, output.{dense,
// LayerNorm}}, intermediate.dense, output.{dense, LayerNorm}.
struct Layer : torch::nn::Module {
  Layer(const BertConfig& c, const ParameterSpec& p) : heads(c.num_attention_heads) {
    const int h = c.hidden_size;
    auto attention = register_module("attention", std::make_shared<Empty>());
    auto self = attention->register_module("self", std::make_shared<Empty>());
    query = self->register_module("query", std::make_shared<models::Dense>(h, h, p));
    key = self->register_module("key", std::make_shared<models::Dense>(h, h, p));
    value = self->register_module("value", std::make_shared<models::Dense>(h, h, p));
    auto attention_output = attention->register_module("output", std::make_shared<Empty>());
    attention_dense = attention_output->register_module("dense", std::make_shared<models::Dense>(h, h, p));
    attention_norm = attention_output->register_module("LayerNorm", Norm(c));
    auto intermediate = register_module("intermediate", std::make_shared<Empty>());
    intermediate_dense = intermediate->register_module("dense", std::make_shared<models::Dense>(h, c.intermediate_size, p));
    auto output = register_module("output", std::make_shared<Empty>());
    output_dense = output->register_module("dense", std::make_shared<models::Dense>(c.intermediate_size, h, p));
    output_norm = output->register_module("LayerNorm", Norm(c));
  }

  // `bias`: [B, 1, 1, T] float32, 0 for kept keys and float's lowest for
  // padding; `any_key`: [B, 1, 1, 1] float32, 0 where no key is kept.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& bias, const at::Tensor& any_key) {
    const int64_t B = x.size(0), T = x.size(1), D = x.size(2) / heads;
    const auto split = [&](const at::Tensor& t) { return t.view({B, T, heads, D}).transpose(1, 2).to(at::kFloat); };
    const at::Tensor q = split(query->forward(x)), k = split(key->forward(x)), v = split(value->forward(x));
    at::Tensor scores = at::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(D));
    at::Tensor probs;
    if (bias.defined()) {
      // exp(lowest - max) is exactly 0 in float32, so a kept row equals the
      // boolean-masked softmax; a row with nothing kept is zeroed.
      probs = at::softmax(scores + bias, -1) * any_key;
    } else {
      probs = at::softmax(scores, -1);
    }
    const at::Tensor context = at::matmul(probs, v).to(x.scalar_type()).transpose(1, 2).reshape({B, T, heads * D});
    const at::Tensor y = attention_norm->forward(attention_dense->forward(context) + x);
    const at::Tensor m = at::gelu(intermediate_dense->forward(y));
    return output_norm->forward(output_dense->forward(m) + y);
  }

  int64_t heads;
  Linear query{nullptr}, key{nullptr}, value{nullptr}, attention_dense{nullptr}, intermediate_dense{nullptr},
      output_dense{nullptr};
  LayerNorm attention_norm{nullptr}, output_norm{nullptr};
};

struct Root : torch::nn::Module {
  Root(const BertConfig& c, const ParameterSpec& p) {
    auto embeddings = register_module("embeddings", std::make_shared<Empty>());
    word = embeddings->register_module("word_embeddings", std::make_shared<models::Embedding>(c.vocab_size, c.hidden_size, p));
    position = embeddings->register_module(
        "position_embeddings", std::make_shared<models::Embedding>(c.max_position_embeddings, c.hidden_size, p));
    token_type = embeddings->register_module(
        "token_type_embeddings", std::make_shared<models::Embedding>(c.type_vocab_size, c.hidden_size, p));
    embedding_norm = embeddings->register_module("LayerNorm", Norm(c));
    auto encoder = register_module("encoder", std::make_shared<Empty>());
    layers = encoder->register_module("layer", ModuleList());
    for (int i = 0; i < c.num_hidden_layers; ++i) layers->push_back(std::make_shared<Layer>(c, p));
  }
  Embedding word{nullptr}, position{nullptr}, token_type{nullptr};
  LayerNorm embedding_norm{nullptr};
  ModuleList layers{nullptr};
};

absl::Status Validate(const BertConfig& c) {
  for (auto [name, value] : {std::pair{"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size},
                             {"num_attention_heads", c.num_attention_heads}, {"intermediate_size", c.intermediate_size},
                             {"max_position_embeddings", c.max_position_embeddings},
                             {"type_vocab_size", c.type_vocab_size}}) {
    if (value < 1) return absl::InvalidArgumentError(absl::StrCat("bert config: ", name, " must be positive"));
  }
  if (c.num_hidden_layers < 0) return absl::InvalidArgumentError("bert config: num_hidden_layers must not be negative");
  if (c.hidden_size % c.num_attention_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("bert config: hidden_size ", c.hidden_size,
                                                   " is not divisible by num_attention_heads ", c.num_attention_heads));
  }
  if (c.hidden_act != "gelu") {
    return absl::InvalidArgumentError(
        absl::StrCat("bert config: hidden_act '", c.hidden_act, "' is not supported (only \"gelu\")"));
  }
  if (!(c.layer_norm_eps > 0)) return absl::InvalidArgumentError("bert config: layer_norm_eps must be positive");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<BertConfig> ParseBertConfig(const std::string& json_text) {
  const nlohmann::json j = nlohmann::json::parse(json_text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("bert config: not a JSON object");
  BertConfig c;
  for (auto [key, out] : {std::pair{"vocab_size", &c.vocab_size}, {"hidden_size", &c.hidden_size},
                          {"num_hidden_layers", &c.num_hidden_layers}, {"num_attention_heads", &c.num_attention_heads},
                          {"intermediate_size", &c.intermediate_size},
                          {"max_position_embeddings", &c.max_position_embeddings},
                          {"type_vocab_size", &c.type_vocab_size}, {"pad_token_id", &c.pad_token_id}}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    if (!j[key].is_number_integer()) return absl::InvalidArgumentError(absl::StrCat("bert config: ", key, " must be an integer"));
    *out = j[key].get<int>();
  }
  if (j.contains("layer_norm_eps")) {
    if (!j["layer_norm_eps"].is_number()) return absl::InvalidArgumentError("bert config: layer_norm_eps must be a number");
    c.layer_norm_eps = j["layer_norm_eps"].get<double>();
  }
  if (j.contains("hidden_act")) {
    if (!j["hidden_act"].is_string()) return absl::InvalidArgumentError("bert config: hidden_act must be a string");
    c.hidden_act = j["hidden_act"].get<std::string>();
  }
  if (j.contains("position_embedding_type") && !j["position_embedding_type"].is_null() &&
      j["position_embedding_type"] != "absolute") {
    return absl::InvalidArgumentError(absl::StrCat("bert config: position_embedding_type ",
                                                   j["position_embedding_type"].dump(), " is not supported (only \"absolute\")"));
  }
  if (j.contains("is_decoder") && j["is_decoder"] == true) {
    return absl::InvalidArgumentError("bert config: is_decoder (causal BERT) is not supported");
  }
  if (absl::Status s = Validate(c); !s.ok()) return s;
  return c;
}

struct BertModel::Impl {
  BertConfig config;
  std::shared_ptr<Root> root;
};

BertModel::BertModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BertModel::~BertModel() = default;
const BertConfig& BertModel::config() const { return impl_->config; }
torch::nn::Module& BertModel::module() { return *impl_->root; }

absl::StatusOr<std::unique_ptr<BertModel>> BertModel::Create(const BertConfig& config, at::ScalarType dtype,
                                                            models::ParameterInit init) {
  if (absl::Status s = Validate(config); !s.ok()) return s;
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->root = std::make_shared<Root>(config, ParameterSpec{init, dtype});
  impl->root->to(dtype);
  return std::unique_ptr<BertModel>(new BertModel(std::move(impl)));
}

absl::Status BertModel::Load(const weights::SafetensorsCheckpoint& checkpoint) {
  weights::LoadOptions options;
  if (!checkpoint.Contains("embeddings.word_embeddings.weight") &&
      checkpoint.Contains("bert.embeddings.word_embeddings.weight")) {
    options.prefix = "bert.";
  }
  for (const char* key : {"pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids",
                          "embeddings.token_type_ids"}) {
    options.ignorable.insert(options.prefix + key);
  }
  return weights::LoadModuleWeights(*impl_->root, checkpoint, options);
}

absl::StatusOr<at::Tensor> BertModel::Forward(const at::Tensor& ids, const at::Tensor& attention_mask) const {
  const BertConfig& c = impl_->config;
  if (!ids.defined() || ids.dim() != 2 || ids.size(0) < 1 || ids.size(1) < 1 ||
      ids.size(1) > c.max_position_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrCat("bert: input_ids must be [B, T] with B >= 1 and 1 <= T <= ", c.max_position_embeddings));
  }
  if (ids.scalar_type() != at::kLong) return absl::InvalidArgumentError("bert: input_ids must be int64");
  if (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= c.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("bert: token ids must be in [0, ", c.vocab_size, ")"));
  }
  if (attention_mask.defined() && !attention_mask.sizes().equals(ids.sizes())) {
    return absl::InvalidArgumentError("bert: attention_mask must be shaped as input_ids");
  }
  at::NoGradGuard no_grad;
  Root& m = *impl_->root;
  const int64_t B = ids.size(0), T = ids.size(1);
  const at::Tensor positions = at::arange(T, ids.options());
  at::Tensor x = m.word->forward(ids) + m.token_type->forward(at::zeros_like(positions)).unsqueeze(0);
  x = m.embedding_norm->forward(x + m.position->forward(positions).unsqueeze(0));
  at::Tensor bias, any_key;
  if (attention_mask.defined()) {
    const at::Tensor keep = (attention_mask.to(ids.device()) != 0).view({B, 1, 1, T});
    bias = at::where(keep, at::zeros({}, x.options().dtype(at::kFloat)),
                     at::full({}, std::numeric_limits<float>::lowest(), x.options().dtype(at::kFloat)));
    any_key = keep.any(-1, /*keepdim=*/true).to(at::kFloat);
  }
  for (const auto& layer : *m.layers) x = layer->as<Layer>()->forward(x, bias, any_key);
  return x;
}

}  // namespace ditserve::worker::text
