#include "worker/models/text/t5_encoder.h"

#include <ATen/ATen.h>

#include <limits>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/models/common/dense.h"
#include "worker/models/common/embedding.h"
#include "worker/weights/load_module.h"

namespace ditserve::worker::text {
namespace {

using models::ParameterSpec;
using Embedding = std::shared_ptr<models::Embedding>;
using Linear = std::shared_ptr<models::Dense>;
using torch::nn::ModuleList;

struct Empty : torch::nn::Module {};

Linear NoBias(int in, int out, const ParameterSpec& p) { return std::make_shared<models::Dense>(in, out, p, /*bias=*/false); }

struct T5Norm : torch::nn::Module {
  T5Norm(int dim, double eps, const ParameterSpec& p) : eps(eps) { weight = register_parameter("weight", p.Filled({dim}, 1.0)); }
  at::Tensor forward(const at::Tensor& x) const {
    at::Tensor y = x * at::rsqrt(x.to(at::kFloat).pow(2).mean(-1, true) + eps);
    if (weight.scalar_type() == at::kHalf || weight.scalar_type() == at::kBFloat16) y = y.to(weight.scalar_type());
    return weight * y;
  }
  double eps;
  at::Tensor weight;
};

struct Block : torch::nn::Module {
  Block(const T5Config& c, bool has_bias, const ParameterSpec& p) : heads(c.num_heads), d_kv(c.d_kv) {
    auto layer = register_module("layer", ModuleList());
    auto attn_layer = std::make_shared<Empty>();
    auto attn = attn_layer->register_module("SelfAttention", std::make_shared<Empty>());
    const int inner = c.num_heads * c.d_kv;
    q = attn->register_module("q", NoBias(c.d_model, inner, p));
    k = attn->register_module("k", NoBias(c.d_model, inner, p));
    v = attn->register_module("v", NoBias(c.d_model, inner, p));
    o = attn->register_module("o", NoBias(inner, c.d_model, p));
    if (has_bias) {
      relative_attention_bias = attn->register_module("relative_attention_bias",
                                                      std::make_shared<models::Embedding>(c.relative_attention_num_buckets, c.num_heads, p));
    }
    norm0 = attn_layer->register_module("layer_norm", std::make_shared<T5Norm>(c.d_model, c.layer_norm_epsilon, p));
    layer->push_back(attn_layer);
    auto ff_layer = std::make_shared<Empty>();
    auto ff = ff_layer->register_module("DenseReluDense", std::make_shared<Empty>());
    wi_0 = ff->register_module("wi_0", NoBias(c.d_model, c.d_ff, p));
    wi_1 = ff->register_module("wi_1", NoBias(c.d_model, c.d_ff, p));
    wo = ff->register_module("wo", NoBias(c.d_ff, c.d_model, p));
    norm1 = ff_layer->register_module("layer_norm", std::make_shared<T5Norm>(c.d_model, c.layer_norm_epsilon, p));
    layer->push_back(ff_layer);
  }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& bias) {
    const int64_t B = x.size(0), T = x.size(1);
    const at::Tensor h = norm0->forward(x);
    const auto split = [&](const at::Tensor& t) { return t.view({B, T, heads, d_kv}).transpose(1, 2); };
    at::Tensor scores = at::matmul(split(q->forward(h)).to(at::kFloat), split(k->forward(h)).to(at::kFloat).transpose(-1, -2));
    scores = scores + bias;  // no 1/sqrt(d) in T5
    const at::Tensor a = at::matmul(at::softmax(scores, -1), split(v->forward(h)).to(at::kFloat)).to(x.scalar_type());
    at::Tensor y = x + o->forward(a.transpose(1, 2).reshape({B, T, heads * d_kv}));
    const at::Tensor f = norm1->forward(y);
    return y + wo->forward(wi_0->ForwardGeluTanh(f) * wi_1->forward(f));
  }
  int64_t heads, d_kv;
  Linear q{nullptr}, k{nullptr}, v{nullptr}, o{nullptr}, wi_0{nullptr}, wi_1{nullptr}, wo{nullptr};
  Embedding relative_attention_bias{nullptr};
  std::shared_ptr<T5Norm> norm0, norm1;
};

struct Root : torch::nn::Module {
  Root(const T5Config& c, const ParameterSpec& p) {
    shared = register_module("shared", std::make_shared<models::Embedding>(c.vocab_size, c.d_model, p));
    auto encoder = register_module("encoder", std::make_shared<Empty>());
    blocks = encoder->register_module("block", ModuleList());
    for (int i = 0; i < c.num_layers; ++i) blocks->push_back(std::make_shared<Block>(c, i == 0, p));
    final_layer_norm = encoder->register_module("final_layer_norm", std::make_shared<T5Norm>(c.d_model, c.layer_norm_epsilon, p));
  }
  Embedding shared{nullptr};
  ModuleList blocks{nullptr};
  std::shared_ptr<T5Norm> final_layer_norm;
};

}  // namespace

at::Tensor T5RelativePositionBucket(const at::Tensor& relative_position, int num_buckets, int max_distance) {
  const int half = num_buckets / 2;
  at::Tensor buckets = (relative_position > 0).to(at::kLong) * half;
  const at::Tensor n = relative_position.abs();
  const int max_exact = half / 2;
  at::Tensor large = max_exact + (at::log(n.to(at::kFloat) / max_exact) / std::log(double(max_distance) / max_exact) *
                                  (half - max_exact)).to(at::kLong);
  large = at::minimum(large, at::full_like(large, half - 1));
  return buckets + at::where(n < max_exact, n, large);
}

absl::StatusOr<T5Config> ParseT5Config(const std::string& json_text) {
  const nlohmann::json j = nlohmann::json::parse(json_text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("text_encoder_2 config: not a JSON object");
  T5Config c;
  for (auto [key, out] : {std::pair{"vocab_size", &c.vocab_size}, {"d_model", &c.d_model}, {"d_kv", &c.d_kv},
                          {"d_ff", &c.d_ff}, {"num_layers", &c.num_layers}, {"num_heads", &c.num_heads},
                          {"relative_attention_num_buckets", &c.relative_attention_num_buckets},
                          {"relative_attention_max_distance", &c.relative_attention_max_distance}}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    if (!j[key].is_number_integer() || j[key].get<int>() < 1) {
      return absl::InvalidArgumentError(absl::StrCat("text_encoder_2 config: ", key, " must be a positive integer"));
    }
    *out = j[key].get<int>();
  }
  if (j.contains("layer_norm_epsilon")) c.layer_norm_epsilon = j["layer_norm_epsilon"].get<double>();
  if (j.contains("feed_forward_proj")) {
    const std::string ff = j["feed_forward_proj"].get<std::string>();
    if (ff != "gated-gelu") {
      return absl::InvalidArgumentError(absl::StrCat("text_encoder_2 config: feed_forward_proj '", ff,
                                                     "' is not supported (T5 v1.1 uses gated-gelu)"));
    }
  }
  return c;
}

struct T5Encoder::Impl {
  T5Config config;
  std::shared_ptr<Root> root;
};

T5Encoder::T5Encoder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
T5Encoder::~T5Encoder() = default;
const T5Config& T5Encoder::config() const { return impl_->config; }
torch::nn::Module& T5Encoder::module() { return *impl_->root; }

absl::StatusOr<std::unique_ptr<T5Encoder>> T5Encoder::Create(const T5Config& config, at::ScalarType dtype,
                                                            models::ParameterInit init) {
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->root = std::make_shared<Root>(config, ParameterSpec{init, dtype});
  impl->root->to(dtype);
  return std::unique_ptr<T5Encoder>(new T5Encoder(std::move(impl)));
}

absl::Status T5Encoder::Load(const weights::SafetensorsCheckpoint& checkpoint) {
  weights::LoadOptions options;
  options.tied = {{"shared.weight", "encoder.embed_tokens.weight"}};
  return weights::LoadModuleWeights(*impl_->root, checkpoint, options);
}

absl::StatusOr<at::Tensor> T5Encoder::Forward(const at::Tensor& ids, const at::Tensor& attention_mask) const {
  const T5Config& c = impl_->config;
  if (!ids.defined() || ids.dim() != 2 || ids.size(1) < 1) {
    return absl::InvalidArgumentError("t5: input_ids must be [B, T] with T >= 1");
  }
  if (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= c.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("t5: token ids must be in [0, ", c.vocab_size, ")"));
  }
  at::NoGradGuard no_grad;
  Root& m = *impl_->root;
  const int64_t T = ids.size(1);
  at::Tensor x = m.shared->forward(ids);
  const at::Tensor pos = at::arange(T, ids.options());
  const at::Tensor buckets = T5RelativePositionBucket(pos.unsqueeze(0) - pos.unsqueeze(1), c.relative_attention_num_buckets,
                                                      c.relative_attention_max_distance);
  const at::Tensor bias = m.blocks[0]->as<Block>()->relative_attention_bias->forward(buckets)
                              .permute({2, 0, 1}).unsqueeze(0).to(at::kFloat);  // [1, H, T, T]
  at::Tensor scores_bias = bias;
  if (attention_mask.defined()) {
    if (!attention_mask.sizes().equals(ids.sizes())) {
      return absl::InvalidArgumentError("t5: attention_mask must be shaped as input_ids");
    }
    const at::Tensor keep = attention_mask.to(at::kFloat).view({ids.size(0), 1, 1, T});
    scores_bias = bias + (1.0 - keep) * std::numeric_limits<float>::lowest();
  }
  for (const auto& block : *m.blocks) x = block->as<Block>()->forward(x, scores_bias);
  return m.final_layer_norm->forward(x);
}

}  // namespace ditserve::worker::text
