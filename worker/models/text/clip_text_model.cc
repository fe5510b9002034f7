#include "worker/models/text/clip_text_model.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/normalization.h>

#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/models/common/dense.h"
#include "worker/models/common/embedding.h"
#include "worker/weights/load_module.h"

namespace ditserve::worker::text {
namespace {

using Embedding = std::shared_ptr<models::Embedding>;
using torch::nn::LayerNorm;
using torch::nn::LayerNormOptions;
using Linear = std::shared_ptr<models::Dense>;
using models::ParameterSpec;
using torch::nn::ModuleList;

struct Empty : torch::nn::Module {};

struct Layer : torch::nn::Module {
  Layer(const ClipTextConfig& c, const ParameterSpec& p) : heads(c.num_attention_heads), gelu(c.hidden_act == "gelu") {
    const int h = c.hidden_size;
    auto attn = register_module("self_attn", std::make_shared<Empty>());
    q = attn->register_module("q_proj", std::make_shared<models::Dense>(h, h, p));
    k = attn->register_module("k_proj", std::make_shared<models::Dense>(h, h, p));
    v = attn->register_module("v_proj", std::make_shared<models::Dense>(h, h, p));
    o = attn->register_module("out_proj", std::make_shared<models::Dense>(h, h, p));
    ln1 = register_module("layer_norm1", LayerNorm(LayerNormOptions({h}).eps(c.layer_norm_eps)));
    auto mlp = register_module("mlp", std::make_shared<Empty>());
    fc1 = mlp->register_module("fc1", std::make_shared<models::Dense>(h, c.intermediate_size, p));
    fc2 = mlp->register_module("fc2", std::make_shared<models::Dense>(c.intermediate_size, h, p));
    ln2 = register_module("layer_norm2", LayerNorm(LayerNormOptions({h}).eps(c.layer_norm_eps)));
  }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& causal) {
    const int64_t B = x.size(0), T = x.size(1), D = x.size(2) / heads;
    const at::Tensor h = ln1->forward(x);
    const auto split = [&](const at::Tensor& t) { return t.view({B, T, heads, D}).transpose(1, 2); };
    const at::Tensor qh = split(q->forward(h)), kh = split(k->forward(h)), vh = split(v->forward(h));
    at::Tensor scores = at::matmul(qh.to(at::kFloat), kh.to(at::kFloat).transpose(-1, -2)) / std::sqrt(double(D));
    scores = scores + causal;
    const at::Tensor attn = at::matmul(at::softmax(scores, -1), vh.to(at::kFloat)).to(x.scalar_type());
    at::Tensor y = x + o->forward(attn.transpose(1, 2).reshape({B, T, heads * D}));
    at::Tensor m = fc1->forward(ln2->forward(y));
    m = gelu ? at::gelu(m) : m * at::sigmoid(1.702 * m);
    return y + fc2->forward(m);
  }
  int64_t heads;
  bool gelu;
  Linear q{nullptr}, k{nullptr}, v{nullptr}, o{nullptr}, fc1{nullptr}, fc2{nullptr};
  LayerNorm ln1{nullptr}, ln2{nullptr};
};

struct TextModel : torch::nn::Module {
  TextModel(const ClipTextConfig& c, const ParameterSpec& p) {
    auto emb = register_module("embeddings", std::make_shared<Empty>());
    token_embedding = emb->register_module("token_embedding", std::make_shared<models::Embedding>(c.vocab_size, c.hidden_size, p));
    position_embedding = emb->register_module("position_embedding", std::make_shared<models::Embedding>(c.max_position_embeddings, c.hidden_size, p));
    auto encoder = register_module("encoder", std::make_shared<Empty>());
    layers = encoder->register_module("layers", ModuleList());
    for (int i = 0; i < c.num_hidden_layers; ++i) layers->push_back(std::make_shared<Layer>(c, p));
    final_layer_norm = register_module("final_layer_norm", LayerNorm(LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)));
  }
  Embedding token_embedding{nullptr}, position_embedding{nullptr};
  ModuleList layers{nullptr};
  LayerNorm final_layer_norm{nullptr};
};

struct Root : torch::nn::Module {
  Root(const ClipTextConfig& c, const ParameterSpec& p) {
    text_model = register_module("text_model", std::make_shared<TextModel>(c, p));
    if (c.with_projection) {
      text_projection = register_module(
          "text_projection", std::make_shared<models::Dense>(c.hidden_size, c.projection_dim, p, /*bias=*/false));
    }
  }
  std::shared_ptr<TextModel> text_model;
  Linear text_projection{nullptr};  // null without a projection
};

}  // namespace

absl::StatusOr<ClipTextConfig> ParseClipTextConfig(const std::string& json_text) {
  const nlohmann::json j = nlohmann::json::parse(json_text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("text_encoder config: not a JSON object");
  ClipTextConfig c;
  for (auto [key, out] : {std::pair{"vocab_size", &c.vocab_size}, {"hidden_size", &c.hidden_size},
                          {"intermediate_size", &c.intermediate_size}, {"num_hidden_layers", &c.num_hidden_layers},
                          {"num_attention_heads", &c.num_attention_heads},
                          {"max_position_embeddings", &c.max_position_embeddings}, {"eos_token_id", &c.eos_token_id},
                          {"projection_dim", &c.projection_dim}}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    if (!j[key].is_number_integer() || j[key].get<int>() < 0) {
      return absl::InvalidArgumentError(absl::StrCat("text_encoder config: ", key, " must be a non-negative integer"));
    }
    *out = j[key].get<int>();
  }
  if (j.contains("hidden_act")) c.hidden_act = j["hidden_act"].get<std::string>();
  if (c.hidden_act != "quick_gelu" && c.hidden_act != "gelu") {
    return absl::InvalidArgumentError(absl::StrCat("text_encoder config: hidden_act '", c.hidden_act, "' is not supported"));
  }
  if (j.contains("layer_norm_eps")) c.layer_norm_eps = j["layer_norm_eps"].get<double>();
  if (j.contains("architectures") && j["architectures"].is_array()) {
    for (const auto& a : j["architectures"]) c.with_projection |= a.is_string() && a.get<std::string>() == "CLIPTextModelWithProjection";
  }
  if (c.with_projection && c.projection_dim < 1) {
    return absl::InvalidArgumentError("text_encoder config: projection_dim must be positive");
  }
  if (c.num_attention_heads < 1 || c.hidden_size % c.num_attention_heads != 0) {
    return absl::InvalidArgumentError("text_encoder config: hidden_size must divide by num_attention_heads");
  }
  return c;
}

struct ClipTextModel::Impl {
  ClipTextConfig config;
  std::shared_ptr<Root> root;
};

ClipTextModel::ClipTextModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ClipTextModel::~ClipTextModel() = default;
const ClipTextConfig& ClipTextModel::config() const { return impl_->config; }
torch::nn::Module& ClipTextModel::module() { return *impl_->root; }

absl::StatusOr<std::unique_ptr<ClipTextModel>> ClipTextModel::Create(const ClipTextConfig& config, at::ScalarType dtype,
                                                                    models::ParameterInit init) {
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->root = std::make_shared<Root>(config, ParameterSpec{init, dtype});
  impl->root->to(dtype);
  return std::unique_ptr<ClipTextModel>(new ClipTextModel(std::move(impl)));
}

absl::Status ClipTextModel::Load(const weights::SafetensorsCheckpoint& checkpoint) {
  // transformers 4 saves CLIPTextModel under "text_model."; transformers 5
  // saves the text transformer's keys bare. A CLIPTextModelWithProjection
  // keeps "text_projection.weight" at the top either way. Both load.
  weights::LoadOptions options;
  if (checkpoint.Contains("text_model.embeddings.token_embedding.weight")) {
    options.ignorable = {"text_model.embeddings.position_ids"};
    return weights::LoadModuleWeights(*impl_->root, checkpoint, options);
  }
  options.ignorable = {"embeddings.position_ids"};
  if (impl_->root->text_projection == nullptr) return weights::LoadModuleWeights(*impl_->root->text_model, checkpoint, options);
  options.ignorable.insert("text_projection.weight");
  if (absl::Status s = weights::LoadModuleWeights(*impl_->root->text_model, checkpoint, options); !s.ok()) return s;
  return weights::LoadModuleWeights(*impl_->root->text_projection, checkpoint, "text_projection.");
}

absl::StatusOr<ClipTextOutput> ClipTextModel::Forward(const at::Tensor& ids) const {
  const ClipTextConfig& c = impl_->config;
  if (!ids.defined() || ids.dim() != 2 || ids.size(1) < 1 || ids.size(1) > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("clip: input_ids must be [B, T] with 1 <= T <= ",
                                                   c.max_position_embeddings));
  }
  if (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= c.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("clip: token ids must be in [0, ", c.vocab_size, ")"));
  }
  at::NoGradGuard no_grad;
  TextModel& m = *impl_->root->text_model;
  const int64_t T = ids.size(1);
  at::Tensor x = m.token_embedding->forward(ids) + m.position_embedding->forward(at::arange(T, ids.options())).unsqueeze(0);
  const at::Tensor causal =
      at::full({T, T}, -std::numeric_limits<float>::infinity(), x.options().dtype(at::kFloat)).triu(1);
  ClipTextOutput out;
  for (size_t i = 0; i < m.layers->size(); ++i) {
    if (i + 1 == m.layers->size()) out.penultimate = x;
    x = m.layers->ptr(i)->as<Layer>()->forward(x, causal);
  }
  out.last_hidden_state = m.final_layer_norm->forward(x);
  const at::Tensor eos_pos = c.eos_token_id == 2 ? ids.argmax(-1) : (ids == c.eos_token_id).to(at::kInt).argmax(-1);
  out.pooled = out.last_hidden_state.index({at::arange(ids.size(0), ids.options()), eos_pos});
  if (impl_->root->text_projection != nullptr) out.text_embeds = impl_->root->text_projection->forward(out.pooled);
  return out;
}

}  // namespace ditserve::worker::text
