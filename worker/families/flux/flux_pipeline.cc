#include "worker/families/flux/flux_pipeline.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "util/read_file.h"
#include "worker/families/components.h"
#include "worker/families/flux/flux_components.h"
#include "worker/families/flux/flux_text_encoder.h"
#include "worker/models/flux/flow_match_scheduler.h"
#include "worker/models/flux/flux_transformer.h"
#include "worker/models/vae/autoencoder_kl.h"

namespace ditserve::worker::families {
namespace {

// Blocks until the work queued on `device`'s current stream has run, so that
// a step reported done is done (CUDA runs asynchronously). No-op on CPU.
void WaitForDevice(const c10::Device& device) {
  if (device.is_cpu()) return;
  const c10::impl::DeviceGuardImplInterface* impl = c10::impl::getDeviceGuardImpl(device.type());
  impl->synchronizeStream(impl->getStream(device));
}

}  // namespace

struct FluxPipeline::Impl {
  flux::FlowMatchSchedulerConfig scheduler;
  std::unique_ptr<FluxTextEncoder> text;
  std::unique_ptr<flux::FluxTransformer> transformer;
  std::unique_ptr<vae::VaeDecoder> vae;
  at::ScalarType dtype = at::kFloat;
  c10::Device device = c10::Device(c10::kCPU);
};

FluxPipeline::FluxPipeline(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FluxPipeline::~FluxPipeline() = default;

int FluxPipeline::size_multiple() const { return 2 * impl_->vae->config().scale_factor(); }
int FluxPipeline::default_size() const { return impl_->vae->config().sample_size; }
bool FluxPipeline::uses_guidance_embedding() const { return impl_->transformer->config().guidance_embeds; }
int FluxPipeline::default_max_sequence_length() const { return impl_->text->default_max_sequence_length(); }

absl::StatusOr<std::unique_ptr<FluxPipeline>> FluxPipeline::Load(const std::string& dir, at::ScalarType dtype,
                                                                 c10::Device device) {
  if (absl::Status s = CheckFluxDirectory(dir); !s.ok()) return s;
  auto impl = std::make_unique<Impl>();
  impl->dtype = dtype;
  impl->device = device;
  auto scheduler = LoadSchedulerConfig(dir);
  if (!scheduler.ok()) return scheduler.status();
  impl->scheduler = *scheduler;
  auto text = FluxTextEncoder::Load(dir, dtype, device);
  if (!text.ok()) return text.status();
  impl->text = *std::move(text);
  auto flux_config = LoadTransformerConfig(dir);
  if (!flux_config.ok()) return flux_config.status();
  if (flux_config->joint_attention_dim != impl->text->sequence_dim() ||
      flux_config->pooled_projection_dim != impl->text->pooled_dim()) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir, ": transformer joint_attention_dim ", flux_config->joint_attention_dim, " / pooled_projection_dim ",
        flux_config->pooled_projection_dim, " do not match the text encoders' ", impl->text->sequence_dim(), " / ",
        impl->text->pooled_dim()));
  }
  auto transformer = LoadTransformer(dir, *flux_config, dtype, device);
  if (!transformer.ok()) return transformer.status();
  impl->transformer = *std::move(transformer);
  auto vae_config = LoadVaeConfig(dir);
  if (!vae_config.ok()) return vae_config.status();
  if (vae_config->latent_channels * 4 != flux_config->in_channels) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": vae latent_channels ", vae_config->latent_channels,
                                                   " x 4 != transformer in_channels ", flux_config->in_channels));
  }
  auto vae = LoadVaeDecoder(dir, *vae_config, dtype, device);
  if (!vae.ok()) return vae.status();
  impl->vae = *std::move(vae);
  return std::unique_ptr<FluxPipeline>(new FluxPipeline(std::move(impl)));
}

absl::Status ValidateFluxRequest(const FluxRequest& r, int size_multiple) {
  const int multiple = size_multiple;
  for (auto [name, value] : {std::pair{"height", r.height}, {"width", r.width}}) {
    if (value < multiple || value > 8192 || value % multiple != 0) {
      return absl::InvalidArgumentError(absl::StrCat(name, " must be a multiple of ", multiple,
                                                     " in [", multiple, ", 8192], got ", value));
    }
  }
  if (r.num_inference_steps < 1 || r.num_inference_steps > 1000) {
    return absl::InvalidArgumentError(absl::StrCat("num_inference_steps must be in [1, 1000], got ", r.num_inference_steps));
  }
  if (r.max_sequence_length < 0 || r.max_sequence_length > 512) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_sequence_length must be in [1, 512] (or 0: the model's default), got ", r.max_sequence_length));
  }
  if (r.true_cfg_scale < 1.0) {
    return absl::InvalidArgumentError(absl::StrCat("true_cfg_scale must be >= 1, got ", r.true_cfg_scale));
  }
  return absl::OkStatus();
}

absl::StatusOr<FluxResult> FluxPipeline::Generate(const FluxRequest& r, const StepCallback& on_step) const {
  const Impl& p = *impl_;
  const int multiple = size_multiple();
  if (absl::Status s = ValidateFluxRequest(r, multiple); !s.ok()) return s;
  const bool true_cfg = r.true_cfg_scale > 1.0;  // against "" when no negative prompt, as diffusers
  const int max_sequence_length = r.max_sequence_length > 0 ? r.max_sequence_length : default_max_sequence_length();
  at::NoGradGuard no_grad;
  auto cond = p.text->Encode(r.prompt, max_sequence_length);
  if (!cond.ok()) return cond.status();
  FluxTextEmbeddings uncond;
  if (true_cfg) {
    auto n = p.text->Encode(r.negative_prompt, max_sequence_length);
    if (!n.ok()) return n.status();
    uncond = *std::move(n);
  }
  // Latents: [1, C, h, w] normals from the seeded CPU generator, packed.
  const int scale = p.vae->config().scale_factor();
  const int64_t h = 2 * (r.height / (scale * 2)), w = 2 * (r.width / (scale * 2));
  const int64_t channels = p.transformer->config().in_channels / 4;
  at::Tensor latents = InitialLatents(r.seed, channels, h, w).to(p.device, p.dtype);
  const at::Tensor txt_ids = at::zeros({cond->sequence.size(1), 3}, at::kFloat).to(p.device);
  const at::Tensor img_ids = flux::LatentImageIds(h, w).to(p.device);
  const std::vector<float> sigmas = flux::FluxSigmas(r.num_inference_steps, latents.size(1), p.scheduler);
  const flux::FluxRopeTables rope = p.transformer->Rope(txt_ids, img_ids, p.device);
  at::Tensor guidance;
  if (p.transformer->config().guidance_embeds) guidance = at::full({1}, r.guidance_scale < 0 ? 3.5 : r.guidance_scale, at::kFloat).to(p.device);
  for (int i = 0; i < r.num_inference_steps; ++i) {
    flux::FluxInputs in;
    in.hidden_states = latents;
    in.timestep = ModelTimestep(sigmas[i], 1, p.dtype, p.device);
    in.guidance = guidance;
    in.pooled_projections = cond->pooled;
    in.encoder_hidden_states = cond->sequence;
    in.txt_ids = txt_ids;
    in.img_ids = img_ids;
    in.rope = rope;
    auto velocity = p.transformer->Forward(in);
    if (!velocity.ok()) return velocity.status();
    at::Tensor v = *velocity;
    if (true_cfg) {
      in.pooled_projections = uncond.pooled;
      in.encoder_hidden_states = uncond.sequence;
      auto neg = p.transformer->Forward(in);
      if (!neg.ok()) return neg.status();
      v = *neg + r.true_cfg_scale * (v - *neg);
    }
    latents = flux::FlowMatchEulerStep(latents, v, sigmas[i], sigmas[i + 1]);
    WaitForDevice(p.device);
    if (on_step && !on_step(i + 1, r.num_inference_steps)) {
      return absl::CancelledError(absl::StrCat("cancelled after step ", i + 1, " of ", r.num_inference_steps));
    }
  }
  auto image = DecodeLatents(*p.vae, latents, h, w);
  if (!image.ok()) return image.status();
  return FluxResult{*image, latents.to(at::kFloat).cpu()};
}

}  // namespace ditserve::worker::families
