#include "worker/pipelines/parallel_pipeline.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <chrono>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "parallel/world_config.h"
#include "util/status_macros.h"
#include "worker/families/components.h"
#include "worker/families/model_family.h"
#include "worker/pipelines/gang_model.h"
#include "worker/pipelines/replica_run.h"

namespace ditserve::worker::pipelines {
namespace {

using parallel::Dim;

// Every rank passes whether it failed; all learn whether any did. Control
// group, so it works whatever the data plane is.
absl::StatusOr<bool> AnyRankFailed(parallel::Communicator& control, bool failed) {
  at::Tensor flag = at::full({1}, failed ? 1 : 0, at::kInt);
  DITSERVE_RETURN_IF_ERROR(control.AllReduce(flag, parallel::ReduceOp::kMax));
  return flag.item<int>() != 0;
}

// Message tags on the world group (PipeFusion's are in pipefusion_link.cc).
constexpr int kTagResult = 3 << 10;         // + replica: its final latents, to rank 0
constexpr int kTagStepsComputed = 4 << 10;  // + replica: its requests' per-step decisions, to rank 0

}  // namespace

absl::Status GangModel::Validate(const GenerationRequest& r) const {
  if (r.num_inference_steps < 1 || r.num_inference_steps > 1000) {
    return absl::InvalidArgumentError(absl::StrCat("num_inference_steps must be in [1, 1000], got ", r.num_inference_steps));
  }
  if (r.max_sequence_length < 0 || r.max_sequence_length > max_sequence_length_limit) {
    return absl::InvalidArgumentError(absl::StrCat("max_sequence_length must be in [1, ", max_sequence_length_limit,
                                                   "] (or 0: the model's default, ", default_max_sequence_length,
                                                   "), got ", r.max_sequence_length));
  }
  DITSERVE_RETURN_IF_ERROR(core::ValidateGuidance(geometry(), r.guidance_scale, r.true_cfg_scale));
  DITSERVE_RETURN_IF_ERROR(core::ValidateStepCache(r.cache, core::MaxStepCacheThreshold(r.cache.method)));
  DITSERVE_RETURN_IF_ERROR(family->ValidateRequest(r));
  GenerationRequest generated = r;
  const core::ImageSize size = core::GenerationSize(geometry(), r.height, r.width);
  generated.height = size.height;
  generated.width = size.width;
  DITSERVE_RETURN_IF_ERROR(ValidateVaeDecode(generated));
  return core::ValidateParallelRequest(config(), pipefusion, geometry(), r.height, r.width, Guidance(r).cfg);
}

// The data-plane collectives do not check shapes in generation
// (ProcessGroupsOptions::check_shapes is off), and every rank derives every
// tensor's and message's shape — embeddings, shards, PipeFusion patches and
// hand-offs — from the request, its flags and its own copy of the model's
// configs. So once per call the ranks compare those inputs over the control
// group: ranks with different model directories (on two machines, say) or
// different flags fail here, before any tensor moves.
absl::Status GangModel::AgreeOnCall(int64_t rows, int64_t T, const GenerationRequest& first) const {
  if (world().world_size() == 1) return absl::OkStatus();
  const auto& pc = config();
  const at::Tensor geometry = at::tensor(
      {rows, T, static_cast<int64_t>(first.height), static_cast<int64_t>(first.width),
       static_cast<int64_t>(first.num_inference_steps), static_cast<int64_t>(MaxSequenceLength(first)),
       transformer->hidden_size(),
       static_cast<int64_t>(this->geometry().num_attention_heads), static_cast<int64_t>(4 * family->latent_channels()),
       static_cast<int64_t>(family->pooled_dim()), static_cast<int64_t>(family->text_dim()),
       static_cast<int64_t>(dtype), static_cast<int64_t>(pc.data_parallel_degree),
       static_cast<int64_t>(pc.use_cfg_parallel), static_cast<int64_t>(pc.pipefusion_parallel_degree),
       static_cast<int64_t>(pc.ulysses_degree), static_cast<int64_t>(pc.ring_degree),
       static_cast<int64_t>(pipefusion.patches(pc)), static_cast<int64_t>(pipefusion.warmup_steps),
       static_cast<int64_t>(vae_options.parallel), static_cast<int64_t>(vae_options.tiling),
       static_cast<int64_t>(tiles ? tiles->latent_tile : 0), vae_options.memory_cap_mb},
      at::kLong);
  auto all = groups->control().AllGather(geometry.unsqueeze(0), 0);
  if (!all.ok()) return all.status();
  const auto text = [](const at::Tensor& row) {
    std::string out;
    for (int64_t i = 0; i < row.numel(); ++i) absl::StrAppend(&out, i ? ", " : "[", row[i].item<int64_t>());
    return out + "]";
  };
  for (int r = 0; r < all->size(0); ++r) {
    if (!at::equal((*all)[r], geometry)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "rank ", world().rank(), " derives the call's geometry (prompt rows, text tokens, height, width, steps, ",
          "max_sequence_length, ",
          "hidden size, heads, in channels, pooled dim, text dim, dtype, dp, cfg parallel, pipefusion, ulysses, "
          "ring, patches, warmup, parallel vae, vae tiling, vae tile, vae memory cap) ",
          text(geometry), " but rank ", r, " derives ", text((*all)[r]),
          ": do all ranks load the same model with the same flags?"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> GangModel::AgreeOnTextTokens(const GenerationRequest& first) {
  at::Tensor tokens = at::full({1}, text ? text->SequenceTokens(MaxSequenceLength(first)) : 0, at::kLong);
  if (world().world_size() > 1) DITSERVE_RETURN_IF_ERROR(groups->control().Broadcast(tokens, 0));
  return tokens.item<int64_t>();
}

void GangModel::AllocateEmbeddings(int64_t rows, int64_t T, at::Tensor& pooled, at::Tensor& sequence,
                                   at::Tensor& mask) const {
  const auto options = at::TensorOptions().dtype(dtype).device(device);
  pooled = at::zeros({rows, family->pooled_dim()}, options);
  sequence = at::zeros({rows, T, family->text_dim()}, options);
  // The text's padding mask (1: a real token), cross-attention families only.
  mask = family->cross_attention() ? at::zeros({rows, T}, options) : at::Tensor();
}

void GangModel::PlaceEmbeddings(const families::TextEmbeddings& e, int64_t row, at::Tensor& pooled,
                                at::Tensor& sequence, at::Tensor& mask) const {
  pooled[row].copy_(e.pooled[0]);
  sequence[row].copy_(e.sequence[0]);
  if (!mask.defined()) return;
  if (e.mask.defined()) {
    mask[row].copy_(e.mask[0]);
  } else {
    mask[row].fill_(1);
  }
}

// Rank 0 encodes every prompt (then every negative prompt) once; the
// embeddings travel to the gang by one broadcast each.
absl::Status GangModel::EncodePrompts(const std::vector<GenerationRequest>& requests, int64_t rows, int64_t T,
                                      at::Tensor& pooled, at::Tensor& sequence, at::Tensor& mask) {
  const int64_t n = static_cast<int64_t>(requests.size());
  AllocateEmbeddings(rows, T, pooled, sequence, mask);
  absl::Status encoded = absl::OkStatus();
  if (world().rank() == 0) {
    for (int64_t i = 0; i < rows && encoded.ok(); ++i) {
      const GenerationRequest& r = requests[i % n];
      auto e = text->Encode(i < n ? r.prompt : r.negative_prompt, MaxSequenceLength(r));
      if (!e.ok()) {
        encoded = e.status();
        break;
      }
      PlaceEmbeddings(*e, i, pooled, sequence, mask);
    }
  }
  auto failed = AnyRankFailed(groups->control(), !encoded.ok());
  if (!failed.ok()) return failed.status();
  if (!encoded.ok()) return encoded;
  if (*failed) return absl::AbortedError("rank 0 failed to encode the prompts");
  return BroadcastEmbeddings(pooled, sequence, mask);
}

absl::Status GangModel::BroadcastEmbeddings(at::Tensor& pooled, at::Tensor& sequence, at::Tensor& mask) {
  if (world().world_size() == 1) return absl::OkStatus();
  CommTimer timer(&stats, "embeddings");
  if (world().rank() == 0) {
    const int64_t bytes = static_cast<int64_t>(pooled.nbytes() + sequence.nbytes() + (mask.defined() ? mask.nbytes() : 0));
    timer.AddBytes(bytes * (world().world_size() - 1));
  }
  auto& all = groups->group(Dim::kWorld);
  DITSERVE_RETURN_IF_ERROR(all.Broadcast(pooled, 0));
  DITSERVE_RETURN_IF_ERROR(all.Broadcast(sequence, 0));
  if (mask.defined()) DITSERVE_RETURN_IF_ERROR(all.Broadcast(mask, 0));
  return absl::OkStatus();
}

// Each replica's output rank (first SP rank, first CFG rank, last stage)
// sends its final latents and per-step decisions to rank 0, which fills
// `final_latents` and `step_computed` per request (untouched elsewhere).
absl::Status GangModel::CollectLatents(const std::vector<GenerationRequest>& requests, const ReplicaRun& run,
                                       std::vector<at::Tensor>& final_latents,
                                       std::vector<std::vector<bool>>& step_computed) {
  const GenerationRequest& first = requests.front();
  const int64_t n = static_cast<int64_t>(requests.size());
  const int replicas = config().data_parallel_degree;
  const int replica = world().rank_in(Dim::kData);
  const int P = stages();
  auto& all = groups->group(Dim::kWorld);
  const auto output_rank = [&](int d) { return world().GlobalRank(d, 0, P - 1, 0, 0); };
  const int vae_scale = vae_config().scale_factor();
  const int64_t h = 2 * (first.height / (vae_scale * 2)), w = 2 * (first.width / (vae_scale * 2));
  const bool replica_has_work = !core::ReplicaRequests(static_cast<int>(n), replicas, replica).empty();
  const int steps = first.num_inference_steps;
  // Per request of a replica, per step: 1 where it computed.
  const auto steps_tensor = [&](const std::vector<std::vector<bool>>& rows) {
    at::Tensor t = at::zeros({static_cast<int64_t>(rows.size()), steps}, at::kInt);
    for (size_t j = 0; j < rows.size(); ++j) {
      for (size_t k = 0; k < rows[j].size() && k < static_cast<size_t>(steps); ++k) t[j][k] = rows[j][k] ? 1 : 0;
    }
    return t.to(device);
  };
  if (world().rank() != 0 && world().rank() == output_rank(replica) && replica_has_work) {
    CommTimer timer(&stats, "data");
    timer.AddBytes(static_cast<int64_t>(run.latents().nbytes()));
    auto send = all.Send(run.latents().contiguous(), 0, kTagResult + replica);
    if (!send.ok()) return send.status();
    DITSERVE_RETURN_IF_ERROR((*send)->Wait());
    auto send_steps = all.Send(steps_tensor(run.steps_computed()), 0, kTagStepsComputed + replica);
    if (!send_steps.ok()) return send_steps.status();
    DITSERVE_RETURN_IF_ERROR((*send_steps)->Wait());
  }
  if (world().rank() != 0) return absl::OkStatus();
  final_latents.assign(requests.size(), at::Tensor());
  step_computed.assign(requests.size(), {});
  for (int d = 0; d < replicas; ++d) {
    const std::vector<int> ids = core::ReplicaRequests(static_cast<int>(n), replicas, d);
    if (ids.empty()) continue;
    at::Tensor latents;
    at::Tensor computed;
    if (output_rank(d) == 0) {
      latents = run.latents();
      computed = steps_tensor(run.steps_computed());
    } else {
      latents = at::empty({static_cast<int64_t>(ids.size()), h / 2 * (w / 2), 4 * family->latent_channels()},
                          at::TensorOptions().dtype(dtype).device(device));
      CommTimer timer(&stats, "data");
      auto recv = all.Recv(latents, output_rank(d), kTagResult + d);
      if (!recv.ok()) return recv.status();
      DITSERVE_RETURN_IF_ERROR((*recv)->Wait());
      computed = at::empty({static_cast<int64_t>(ids.size()), steps}, at::TensorOptions().dtype(at::kInt).device(device));
      auto recv_steps = all.Recv(computed, output_rank(d), kTagStepsComputed + d);
      if (!recv_steps.ok()) return recv_steps.status();
      DITSERVE_RETURN_IF_ERROR((*recv_steps)->Wait());
    }
    computed = computed.cpu();
    for (size_t j = 0; j < ids.size(); ++j) {
      final_latents[ids[j]] = latents.narrow(0, static_cast<int64_t>(j), 1);
      for (int k = 0; k < steps; ++k) step_computed[ids[j]].push_back(computed[j][k].item<int>() != 0);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<GenerationResult>> GangModel::Generate(const std::vector<GenerationRequest>& requests,
                                                           const StepCallback& on_step) {
  if (requests.empty()) return absl::InvalidArgumentError("no requests to generate");
  for (const GenerationRequest& r : requests) DITSERVE_RETURN_IF_ERROR(Validate(r));
  const GenerationRequest& first = requests.front();
  const auto same_guidance = [&](const GenerationRequest& r) {
    const core::ResolvedGuidance a = Guidance(r), b = Guidance(first);
    return a.cfg == b.cfg && a.embedded == b.embedded && a.embedded_scale == b.embedded_scale;
  };
  for (const GenerationRequest& r : requests) {
    if (r.height != first.height || r.width != first.width || r.num_inference_steps != first.num_inference_steps ||
        MaxSequenceLength(r) != MaxSequenceLength(first) || !same_guidance(r) ||
        r.cache.method != first.cache.method) {
      return absl::InvalidArgumentError(
          "the requests of one batch must agree on height, width, num_inference_steps, max_sequence_length, "
          "the guidance embedding value, whether CFG runs and the step cache method");
    }
  }
  // The size each image is generated at (PixArt's aspect-ratio bins); the
  // decoded image is resized back to the request's.
  std::vector<GenerationRequest> runs = requests;
  for (GenerationRequest& r : runs) {
    const core::ImageSize size = core::GenerationSize(geometry(), r.height, r.width);
    r.height = size.height;
    r.width = size.width;
  }
  at::NoGradGuard no_grad;
  timings = GenerateTimings{};
  auto mark = std::chrono::steady_clock::now();
  const auto lap = [&mark]() {
    const auto now = std::chrono::steady_clock::now();
    const double s = std::chrono::duration<double>(now - mark).count();
    mark = now;
    return s;
  };
  const GenerationRequest& run_first = runs.front();
  const bool cfg = Guidance(run_first).cfg;
  const int64_t n = static_cast<int64_t>(requests.size());
  const int64_t rows = cfg ? 2 * n : n;
  auto text_tokens = AgreeOnTextTokens(run_first);
  if (!text_tokens.ok()) return text_tokens.status();
  const int64_t T = *text_tokens;
  DITSERVE_RETURN_IF_ERROR(AgreeOnCall(rows, T, run_first));
  at::Tensor pooled, sequence, mask;
  DITSERVE_RETURN_IF_ERROR(EncodePrompts(runs, rows, T, pooled, sequence, mask));
  timings.text_encoding_s = lap();
  const int replicas = config().data_parallel_degree;
  const int replica = world().rank_in(Dim::kData);
  ReplicaRun run(*this, run_first, T);
  for (int i : core::ReplicaRequests(static_cast<int>(n), replicas, replica)) {
    run.Admit(static_cast<uint64_t>(i), runs[i], pooled, sequence, mask, i, n);
  }
  DITSERVE_RETURN_IF_ERROR(run.Run(on_step));

  std::vector<at::Tensor> final_latents;
  std::vector<std::vector<bool>> step_computed;
  DITSERVE_RETURN_IF_ERROR(CollectLatents(runs, run, final_latents, step_computed));
  timings.denoising_s = lap();
  const int vae_scale = vae_config().scale_factor();
  const int64_t h = 2 * (run_first.height / (vae_scale * 2)), w = 2 * (run_first.width / (vae_scale * 2));
  auto images = DecodeImages(final_latents, requests.size(), h, w, first.height, first.width);
  if (!images.ok()) return images.status();
  timings.vae_s = lap();
  if (world().rank() != 0) return std::vector<GenerationResult>{};
  std::vector<GenerationResult> results;
  for (size_t i = 0; i < final_latents.size(); ++i) {
    results.push_back(GenerationResult{(*images)[i], final_latents[i].to(at::kFloat).cpu(), step_computed[i]});
  }
  return results;
}

struct ParallelPipeline::Impl : GangModel {};

ParallelPipeline::ParallelPipeline(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ParallelPipeline::~ParallelPipeline() = default;

int ParallelPipeline::size_multiple() const { return impl_->geometry().size_multiple; }
int ParallelPipeline::default_size() const { return impl_->geometry().default_size; }
bool ParallelPipeline::uses_guidance_embedding() const { return impl_->geometry().guidance_embeds; }
const std::string& ParallelPipeline::family() const { return impl_->geometry().family; }
double ParallelPipeline::default_guidance_scale() const { return impl_->geometry().default_guidance_scale; }
int ParallelPipeline::default_max_sequence_length() const { return impl_->default_max_sequence_length; }
int ParallelPipeline::max_sequence_length_limit() const { return impl_->max_sequence_length_limit; }
core::CfgScaleField ParallelPipeline::cfg_scale_field() const { return impl_->geometry().cfg_scale; }
const std::string& ParallelPipeline::transformer_config_json() const { return impl_->family->transformer_config_json(); }
const CommStats& ParallelPipeline::comm_stats() const { return impl_->stats; }
const GenerateTimings& ParallelPipeline::last_timings() const { return impl_->timings; }

absl::StatusOr<std::unique_ptr<ParallelPipeline>> ParallelPipeline::Load(const std::string& dir, at::ScalarType dtype,
                                                                          c10::Device device,
                                                                          parallel::ProcessGroups& groups,
                                                                          const core::PipeFusionOptions& pipefusion,
                                                                          const core::VaeDecodeOptions& vae_options) {
  auto impl = std::make_unique<Impl>();
  impl->vae_options = vae_options;
  impl->dir = dir;
  impl->groups = &groups;
  impl->pipefusion = pipefusion;
  impl->dtype = dtype;
  impl->device = device;
  const auto load = [&]() -> absl::Status {
    auto family = families::OpenModelFamily(dir);
    if (!family.ok()) return family.status();
    impl->family = *std::move(family);
    DITSERVE_RETURN_IF_ERROR(core::ValidateParallelModel(impl->config(), pipefusion, impl->geometry()));
    DITSERVE_RETURN_IF_ERROR(core::ValidateVaeDecodeOptions(vae_options, impl->geometry()));
    if (vae_options.tiling) {
      auto tiles = vae::MakeTileGeometry(impl->vae_config(), core::EffectiveTileSize(vae_options, impl->geometry()));
      if (!tiles.ok()) return tiles.status();
      impl->tiles = *tiles;
    }
    const core::BlockRange blocks = core::StageBlocks(pipefusion, impl->geometry().num_blocks, impl->stages(), impl->stage());
    const models::DitPart part{blocks.first, blocks.end, impl->stage() == 0, impl->stage() == impl->stages() - 1};
    auto transformer = impl->family->LoadTransformer(part, dtype, device);
    if (!transformer.ok()) return transformer.status();
    impl->transformer = *std::move(transformer);
    if (groups.world().rank() == 0) {
      auto text = impl->family->LoadText(dtype, device);
      if (!text.ok()) return text.status();
      impl->text = *std::move(text);
    }
    if (groups.world().rank() == 0 || vae_options.parallel) {
      auto vae = families::LoadVaeDecoder(dir, impl->vae_config(), dtype, device);
      if (!vae.ok()) return vae.status();
      impl->vae = *std::move(vae);
    }
    return absl::OkStatus();
  };
  const absl::Status local = load();
  auto any = AnyRankFailed(groups.control(), !local.ok());
  if (!any.ok()) return any.status();
  if (!local.ok()) return local;
  if (*any) return absl::AbortedError("another rank of the gang failed to load the model (see its log)");
  at::Tensor lengths = at::tensor({impl->text ? impl->text->default_max_sequence_length() : 0,
                                   impl->text ? impl->text->max_sequence_length_limit() : 0},
                                  at::kInt);
  DITSERVE_RETURN_IF_ERROR(groups.control().Broadcast(lengths, 0));
  impl->default_max_sequence_length = lengths[0].item<int>();
  impl->max_sequence_length_limit = lengths[1].item<int>();
  return std::unique_ptr<ParallelPipeline>(new ParallelPipeline(std::move(impl)));
}

absl::Status ParallelPipeline::Validate(const GenerationRequest& request) const { return impl_->Validate(request); }

absl::Status ParallelPipeline::RunSet(SetDriver& driver) {
  impl_->timings = GenerateTimings{};
  return impl_->RunSet(driver);
}


absl::StatusOr<std::vector<GenerationResult>> ParallelPipeline::Generate(
    const std::vector<GenerationRequest>& requests, const StepCallback& on_step) {
  return impl_->Generate(requests, on_step);
}

}  // namespace ditserve::worker::pipelines
