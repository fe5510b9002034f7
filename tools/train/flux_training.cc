#include "tools/train/flux_training.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/module.h>
#include <torch/optim/adamw.h>

#include "absl/strings/str_cat.h"
#include "tools/train/scene_batch.h"
#include "worker/models/flux/flow_match_scheduler.h"

namespace ditserve::tools::train {

struct FluxTrainer::Impl {
  worker::flux::FluxTransformer* transformer;
  const worker::vae::VaeEncoder* encoder;
  const worker::families::FluxTextEncoder* text;
  FluxTrainOptions options;
  std::unique_ptr<torch::optim::AdamW> optimizer;
  std::unique_ptr<Ema> ema;
  std::map<std::string, worker::families::FluxTextEmbeddings> captions;
};

FluxTrainer::FluxTrainer(worker::flux::FluxTransformer& transformer, const worker::vae::VaeEncoder& encoder,
                         const worker::families::FluxTextEncoder& text, const FluxTrainOptions& options, double peak_lr)
    : impl_(std::make_unique<Impl>()) {
  impl_->transformer = &transformer;
  impl_->encoder = &encoder;
  impl_->text = &text;
  impl_->options = options;
  std::vector<at::Tensor> params;
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& p : transformer.module().named_parameters()) {
    params.push_back(p.value().requires_grad_(true));
    named.push_back({p.key(), p.value()});
  }
  impl_->optimizer = std::make_unique<torch::optim::AdamW>(
      params, torch::optim::AdamWOptions(peak_lr).betas({0.9, 0.99}).weight_decay(options.weight_decay));
  impl_->ema = std::make_unique<Ema>(std::move(named), options.ema_decay);
}

FluxTrainer::~FluxTrainer() = default;

std::vector<std::pair<std::string, at::Tensor>> FluxTrainer::AveragedWeights() const { return impl_->ema->Averaged(); }

absl::StatusOr<worker::families::FluxTextEmbeddings> FluxTrainer::Embed(const std::string& caption) {
  auto it = impl_->captions.find(caption);
  if (it != impl_->captions.end()) return it->second;
  auto e = impl_->text->Encode(caption, impl_->options.max_sequence_length);
  if (!e.ok()) return e.status();
  impl_->captions.emplace(caption, *e);
  return *e;
}

absl::StatusOr<PhaseReport> FluxTrainer::Train(const PhasePlan& plan, const std::vector<SizeBatch>& sizes,
                                               std::mt19937_64& scenes, at::Generator& generator, std::FILE* out) {
  Impl& p = *impl_;
  const worker::vae::VaeConfig& vc = p.encoder->config();
  const int multiple = 2 * vc.scale_factor();
  if (sizes.empty()) return absl::InvalidArgumentError("no image sizes to train at");
  std::vector<at::Tensor> img_ids;
  for (const SizeBatch& sb : sizes) {
    if (sb.image_size < multiple || sb.image_size % multiple != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("image size must be a multiple of ", multiple, ", got ", sb.image_size));
    }
    if (sb.batch < 1) return absl::InvalidArgumentError(absl::StrCat("batch must be >= 1, got ", sb.batch));
    const int64_t h = sb.image_size / vc.scale_factor();
    img_ids.push_back(worker::flux::LatentImageIds(h, h));
  }
  std::bernoulli_distribution drop(p.options.caption_dropout);
  return RunPhase(
      plan,
      [&](int step, int, double lr) -> absl::StatusOr<double> {
        for (auto& group : p.optimizer->param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
        const size_t which = static_cast<size_t>(step) % sizes.size();
        const SceneBatch batch = DrawSceneBatch(scenes, sizes[which].batch, sizes[which].image_size);
        at::Tensor x0;
        {
          at::NoGradGuard no_grad;
          auto dist = p.encoder->Encode(batch.images);
          if (!dist.ok()) return dist.status();
          x0 = worker::flux::PackLatents((dist->Sample(generator) - vc.shift_factor) * vc.scaling_factor);
        }
        std::vector<at::Tensor> pooled, sequence;
        at::Tensor txt_ids;
        for (const std::string& caption : batch.captions) {
          auto e = Embed(drop(scenes) ? std::string() : caption);
          if (!e.ok()) return e.status();
          pooled.push_back(e->pooled);
          sequence.push_back(e->sequence);
          txt_ids = at::zeros({e->sequence.size(1), 3}, at::kFloat).to(e->sequence.device());
        }
        const int64_t B = x0.size(0);
        const at::Tensor noise = at::randn(x0.sizes(), generator, at::TensorOptions().dtype(at::kFloat));
        const at::Tensor sigma = at::sigmoid(at::randn({B}, generator, at::TensorOptions().dtype(at::kFloat)));
        const at::Tensor s = sigma.view({B, 1, 1});
        worker::flux::FluxInputs in;
        in.hidden_states = (1 - s) * x0 + s * noise;
        in.encoder_hidden_states = at::cat(sequence);
        in.pooled_projections = at::cat(pooled);
        in.timestep = sigma;
        in.img_ids = img_ids[which];
        in.txt_ids = txt_ids;
        auto v = p.transformer->Forward(in);
        if (!v.ok()) return v.status();
        if (!v->requires_grad()) {
          return absl::FailedPreconditionError("the transformer's forward builds no autograd graph (not differentiable)");
        }
        const at::Tensor loss = (*v - (noise - x0)).pow(2).mean();
        p.optimizer->zero_grad();
        loss.backward();
        p.optimizer->step();
        p.ema->Update();
        return loss.item<double>();
      },
      out);
}

}  // namespace ditserve::tools::train
