#include "worker/pipelines/parallel_pipeline.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <deque>
#include <map>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "parallel/world_config.h"
#include "util/status_macros.h"
#include "worker/models/flux/flow_match_scheduler.h"
#include "worker/models/vae/autoencoder_kl.h"
#include "worker/pipelines/flux_components.h"
#include "worker/pipelines/model_family.h"
#include "worker/pipelines/pipefusion_attention.h"
#include "worker/pipelines/step_cache.h"
#include "worker/pipelines/stop_agreement.h"
#include "worker/pipelines/usp_joint_attention.h"

namespace ditserve::worker::pipelines {
namespace {

using parallel::Dim;

int64_t Bytes(const at::Tensor& t) { return t.numel() * static_cast<int64_t>(t.element_size()); }

// Every rank passes whether it failed; all learn whether any did. Control
// group, so it works whatever the data plane is.
absl::StatusOr<bool> AnyRankFailed(parallel::Communicator& control, bool failed) {
  at::Tensor flag = at::full({1}, failed ? 1 : 0, at::kInt);
  DITSERVE_RETURN_IF_ERROR(control.AllReduce(flag, parallel::ReduceOp::kMax));
  return flag.item<int>() != 0;
}

// Message tags between PipeFusion stages.
constexpr int kTagImage = 0;
constexpr int kTagText = 1 << 10;
constexpr int kTagLatents = 2 << 10;
constexpr int kTagResult = 3 << 10;
constexpr int kTagStepsComputed = 4 << 10;  // + replica: its requests' per-step decisions, to rank 0
constexpr int kTagDecision = 5 << 10;       // a step's decisions, stage 0 to each later stage
constexpr int kTagDelta = 6 << 10;          // + patch: a cached step's anchor change, stage 0 to the last stage

// Everything a rank holds for generation. Not thread-safe.
struct GangModel {
  std::string dir;
  parallel::ProcessGroups* groups = nullptr;
  core::PipeFusionOptions pipefusion;
  std::unique_ptr<ModelFamily> family;
  std::unique_ptr<TextConditioner> text;                 // world rank 0 only
  std::unique_ptr<vae::VaeDecoder> vae;                   // world rank 0 only
  std::unique_ptr<models::DitTransformer> transformer;   // this stage's blocks
  at::ScalarType dtype = at::kFloat;
  c10::Device device = c10::Device(c10::kCPU);
  CommStats stats;
  GenerateTimings timings;
  // Rank 0's text conditioner's, shared at load.
  int default_max_sequence_length = 512;
  int max_sequence_length_limit = 512;

  const core::ModelGeometry& geometry() const { return family->geometry(); }
  const vae::VaeConfig& vae_config() const { return family->vae_config(); }
  int MaxSequenceLength(const GenerationRequest& r) const {
    return r.max_sequence_length > 0 ? r.max_sequence_length : default_max_sequence_length;
  }
  core::ResolvedGuidance Guidance(const GenerationRequest& r) const {
    return core::ResolveGuidance(geometry(), r.guidance_scale, r.true_cfg_scale);
  }

  const parallel::WorldConfig& world() const { return groups->world(); }
  const parallel::ParallelConfig& config() const { return world().config(); }
  int stage() const { return world().rank_in(Dim::kPipeFusion); }
  int stages() const { return config().pipefusion_parallel_degree; }
  int sp_rank() const { return world().rank_in(Dim::kUlysses) + config().ulysses_degree * world().rank_in(Dim::kRing); }
  int sp_size() const { return config().sequence_parallel_degree(); }

  absl::Status Validate(const GenerationRequest& r) const;
  absl::Status AgreeOnCall(int64_t rows, int64_t T, const GenerationRequest& first) const;
  // Rank 0's text token count for the call, known on every rank after.
  absl::StatusOr<int64_t> AgreeOnTextTokens(const GenerationRequest& first);
  absl::StatusOr<std::vector<GenerationResult>> Generate(const std::vector<GenerationRequest>& requests,
                                                         const StepCallback& on_step);
};

// One Generate call on one rank: the denoising loop of this rank's replica
// (or, for an idle replica, only the agreement on cancellation).
class ReplicaRun {
 public:
  ReplicaRun(GangModel& p, const std::vector<GenerationRequest>& requests, std::vector<int> mine,
             const at::Tensor& pooled, const at::Tensor& sequence)
      : p_(p), requests_(requests), mine_(std::move(mine)), all_pooled_(pooled), all_sequence_(sequence) {}

  // Runs every step; returns CANCELLED (on every rank alike) when on_step
  // asked to stop. On success the replica's output rank holds `latents()`
  // [n, S, C] (without the SP padding).
  absl::Status Run(const StepCallback& on_step);
  at::Tensor latents() const { return latents_.narrow(1, 0, S_); }
  // Per request of this replica, per step run: whether it computed (all
  // true without a step cache).
  std::vector<std::vector<bool>> steps_computed() const;

 private:
  bool idle() const { return mine_.empty(); }
  bool first_stage() const { return p_.stage() == 0; }
  bool last_stage() const { return p_.stage() == p_.stages() - 1; }
  int patches_at(int step) const {
    return p_.stages() > 1 && step >= p_.pipefusion.warmup_steps ? p_.pipefusion.patches(p_.config()) : 1;
  }
  const core::PatchPlan& plan_at(int step) const { return patches_at(step) == 1 ? whole_ : pipelined_; }
  core::TokenRange Local(int step, int patch) const { return plan_at(step).Local(patch, p_.sp_rank()); }
  // Without PipeFusion the text is split over the SP ranks like the image
  // (xDiT's split_text_embed_in_sp), padded to padded_T_ tokens when T_
  // does not divide by SP: each rank's text stream does 1/SP of the
  // per-token work instead of all of it. With PipeFusion, patch 0 carries
  // the whole text.
  bool text_sharded() const { return p_.stages() == 1 && p_.sp_size() > 1; }
  // This rank's text tokens of x [B, padded_T_, ...].
  at::Tensor LocalText(const at::Tensor& x) const {
    if (!text_sharded()) return x;
    const int64_t t = LocalTextTokens();
    return x.narrow(1, p_.sp_rank() * t, t);
  }
  int64_t LocalTextTokens() const { return text_sharded() ? padded_T_ / p_.sp_size() : T_; }
  void Prepare();
  // Positions (RoPE tables, position embeddings) of this rank's tokens of
  // `patch` at `step`: computed once per patch layout and request.
  const models::DitPositions& PositionsFor(int step, int patch);
  absl::Status Step(int step);
  absl::Status RunPatch(int step, int patch, const models::DitConditioning& conditioning);
  // RunPatch's pieces: stage 0 receives the patch's latents (PipeFusion,
  // after step 0) and embeds them; a later stage receives the hidden states
  // of the stage before; every stage runs its blocks; a stage but the last
  // sends them on; the last stage runs the head and the scheduler step.
  absl::StatusOr<models::DitHidden> EmbedPatch(int step, int patch);
  absl::StatusOr<models::DitHidden> ReceiveHidden(int step, int patch);
  absl::Status RunBlocks(int step, int patch, models::DitHidden& hidden, const models::DitConditioning& conditioning,
                         models::DitTransformer::BlockSpan span);
  absl::Status SendHidden(const models::DitHidden& hidden, int patch);
  absl::Status FinishPatch(int step, int patch, const at::Tensor& x, const models::DitConditioning& conditioning);
  absl::Status CachedStep(int step, const models::DitConditioning& conditioning);
  absl::Status DecideStep(int step);
  absl::StatusOr<at::Tensor> Guided(const at::Tensor& velocity);
  absl::Status CompleteRanges(at::Tensor& state, int step);
  absl::Status SendLatents(int step, int patch);
  absl::Status Track(absl::StatusOr<std::unique_ptr<parallel::PendingTransfer>> transfer, const char* method,
                     int64_t bytes);
  absl::Status DrainSends(size_t keep);

  GangModel& p_;
  const std::vector<GenerationRequest>& requests_;
  std::vector<int> mine_;
  at::Tensor all_pooled_, all_sequence_;  // every request's: cond rows, then uncond rows (true CFG)

  // rows_ × cols_ = S_ image tokens; padded_rows_ × cols_ = padded_S_ with
  // the SP padding (generation_plan.h), which latents_ and the plans cover.
  // T_ text tokens, padded_T_ with the padding of a sharded text.
  int64_t h_ = 0, w_ = 0, rows_ = 0, cols_ = 0, S_ = 0, T_ = 0, padded_rows_ = 0, padded_S_ = 0, padded_T_ = 0;
  core::PatchPlan whole_, pipelined_;  // the warmup's single patch; PipeFusion's patches
  std::vector<models::DitPositions> positions_whole_, positions_pipelined_;  // per patch of each plan, filled on first use
  int steps_ = 0, end_step_ = 0;
  bool cfg_ = false;
  std::vector<float> sigmas_;
  at::Tensor latents_;    // [n, S, C] in the run dtype; this rank's ranges are current
  at::Tensor pooled_, sequence_, guidance_, cfg_scale_;  // the model batch's
  std::unique_ptr<models::JointAttention> attention_;
  PipeFusionAttention* pipefusion_attention_ = nullptr;  // == attention_ when PipeFusion
  std::deque<std::unique_ptr<parallel::PendingTransfer>> sends_;
  std::unique_ptr<StepCache> cache_;  // every run; active() when a request caches
  at::Tensor cache_decisions_;        // stage 0: the step's agreed decisions, int32 [n]
};

void ReplicaRun::Prepare() {
  const GenerationRequest& r = requests_.front();
  const int scale = p_.vae_config().scale_factor();
  h_ = 2 * (r.height / (scale * 2));
  w_ = 2 * (r.width / (scale * 2));
  rows_ = h_ / 2;
  cols_ = w_ / 2;
  S_ = rows_ * cols_;
  padded_rows_ = core::PaddedRows(rows_, p_.sp_size());
  padded_S_ = padded_rows_ * cols_;
  T_ = all_sequence_.size(1);
  padded_T_ = text_sharded() ? (T_ + p_.sp_size() - 1) / p_.sp_size() * p_.sp_size() : T_;
  whole_ = core::PatchPlan::Balanced(padded_rows_, cols_, 1, p_.sp_size(), T_);
  pipelined_ = core::PatchPlan::Balanced(padded_rows_, cols_, p_.stages() > 1 ? p_.pipefusion.patches(p_.config()) : 1,
                                   p_.sp_size(), T_);
  steps_ = r.num_inference_steps;
  end_step_ = steps_;
  const core::ResolvedGuidance guidance = p_.Guidance(r);
  cfg_ = guidance.cfg;
  sigmas_ = p_.family->Sigmas(steps_, S_);
  if (idle()) return;
  const int64_t n = static_cast<int64_t>(mine_.size());
  const int64_t channels = p_.family->latent_channels();
  std::vector<at::Tensor> noise;
  std::vector<double> scales;
  for (int i : mine_) {
    noise.push_back(InitialLatents(requests_[i].seed, channels, h_, w_));
    scales.push_back(p_.Guidance(requests_[i]).cfg_scale);
  }
  latents_ = at::cat(noise, 0).to(p_.device, p_.dtype);
  std::vector<core::StepCacheOptions> caches;
  for (int i : mine_) caches.push_back(requests_[i].cache);
  const int branches = cfg_ && !p_.config().use_cfg_parallel ? 2 : 1;
  cache_ = std::make_unique<StepCache>(std::move(caches), steps_, branches, padded_S_, S_,
                                       p_.family->TeaCachePolynomial(), p_.device);
  if (padded_S_ > S_) {
    // The padding tokens start at zero; what they compute is never read.
    latents_ = at::constant_pad_nd(latents_, {0, 0, 0, padded_S_ - S_});
  }
  const at::Tensor index = at::tensor(std::vector<int64_t>(mine_.begin(), mine_.end()), at::kLong).to(p_.device);
  const int64_t total = static_cast<int64_t>(requests_.size());
  const auto rows_of = [&](int branch) {
    const at::Tensor rows = index + branch * total;
    return std::pair{all_pooled_.index_select(0, rows), all_sequence_.index_select(0, rows)};
  };
  if (p_.config().use_cfg_parallel) {
    std::tie(pooled_, sequence_) = rows_of(p_.world().rank_in(Dim::kCfg));
  } else if (cfg_) {
    auto [cp, cs] = rows_of(0);
    auto [up, us] = rows_of(1);
    pooled_ = at::cat({cp, up}, 0);
    sequence_ = at::cat({cs, us}, 0);
  } else {
    std::tie(pooled_, sequence_) = rows_of(0);
  }
  if (padded_T_ > T_) sequence_ = at::constant_pad_nd(sequence_, {0, 0, 0, padded_T_ - T_});
  if (cfg_) cfg_scale_ = at::tensor(scales, at::kDouble).to(at::kFloat).view({n, 1, 1}).to(p_.device);
  if (guidance.embedded) guidance_ = at::full({pooled_.size(0)}, guidance.embedded_scale, at::kFloat).to(p_.device);
  auto& g = *p_.groups;
  if (p_.stages() > 1) {
    auto a = std::make_unique<PipeFusionAttention>(g.group(Dim::kUlysses), g.group(Dim::kRing), T_, padded_S_, S_,
                                                   &p_.stats);
    pipefusion_attention_ = a.get();
    attention_ = std::move(a);
  } else if (p_.sp_size() > 1) {
    // Which of this rank's text and image tokens are real; every SP rank
    // passes masks when anything is padded (the exchanges carry them), none
    // when not.
    at::Tensor text_valid, image_valid;
    if (padded_S_ > S_ || padded_T_ > T_) {
      const core::TokenRange local = whole_.Local(0, p_.sp_rank());
      const int64_t t = LocalTextTokens();
      image_valid = at::arange(local.begin, local.end, at::kLong).lt(S_).to(p_.device);
      text_valid = at::arange(p_.sp_rank() * t, (p_.sp_rank() + 1) * t, at::kLong).lt(T_).to(p_.device);
    }
    attention_ = std::make_unique<UspJointAttention>(g.group(Dim::kUlysses), g.group(Dim::kRing), text_valid,
                                                     image_valid, &p_.stats);
  } else {
    attention_ = std::make_unique<models::SerialJointAttention>();
  }
}

absl::Status ReplicaRun::Track(absl::StatusOr<std::unique_ptr<parallel::PendingTransfer>> transfer,
                               const char* method, int64_t bytes) {
  if (!transfer.ok()) return transfer.status();
  p_.stats.Add(method, bytes, 0);
  sends_.push_back(*std::move(transfer));
  return DrainSends(/*keep=*/64);
}

absl::Status ReplicaRun::DrainSends(size_t keep) {
  while (sends_.size() > keep) {
    CommTimer timer(&p_.stats, "pipefusion");
    absl::Status s = sends_.front()->Wait();
    sends_.pop_front();
    DITSERVE_RETURN_IF_ERROR(s);
  }
  return absl::OkStatus();
}

// v = uncond + scale·(cond − uncond) per request, for CFG; the
// unconditional half comes from the other CFG rank when CFG is parallel.
absl::StatusOr<at::Tensor> ReplicaRun::Guided(const at::Tensor& velocity) {
  if (!cfg_) return velocity;
  at::Tensor both = velocity;
  if (p_.config().use_cfg_parallel) {
    CommTimer timer(&p_.stats, "cfg");
    timer.AddBytes(Bytes(velocity));
    auto gathered = p_.groups->group(Dim::kCfg).AllGather(velocity.contiguous(), 0);
    if (!gathered.ok()) return gathered.status();
    both = *gathered;
  }
  const int64_t n = both.size(0) / 2;
  const at::Tensor cond = both.narrow(0, 0, n), uncond = both.narrow(0, n, n);
  return uncond + cfg_scale_.to(uncond.scalar_type()) * (cond - uncond);
}

absl::StatusOr<models::DitHidden> ReplicaRun::EmbedPatch(int step, int patch) {
  const core::TokenRange local = Local(step, patch);
  if (step > 0 && p_.stages() > 1) {
    at::Tensor incoming = at::empty({latents_.size(0), local.size(), latents_.size(2)}, latents_.options());
    CommTimer timer(&p_.stats, "pipefusion");
    auto recv = p_.groups->group(Dim::kPipeFusion).Recv(incoming, p_.stages() - 1, kTagLatents + patch);
    if (!recv.ok()) return recv.status();
    DITSERVE_RETURN_IF_ERROR((*recv)->Wait());
    latents_.narrow(1, local.begin, local.size()).copy_(incoming);
  }
  at::Tensor input = latents_.narrow(1, local.begin, local.size());
  if (pooled_.size(0) != input.size(0)) input = at::cat({input, input}, 0);  // CFG in one batch
  return p_.transformer->Embed(input, patch == 0 ? LocalText(sequence_) : at::Tensor(), PositionsFor(step, patch));
}

absl::StatusOr<models::DitHidden> ReplicaRun::ReceiveHidden(int step, int patch) {
  const core::TokenRange local = Local(step, patch);
  const bool with_text = patch == 0;
  auto& pipe = p_.groups->group(Dim::kPipeFusion);
  const int64_t batch = pooled_.size(0);
  const int64_t dim = p_.transformer->hidden_size();
  models::DitHidden hidden;
  hidden.x = at::empty({batch, local.size(), dim}, latents_.options());
  if (with_text) hidden.context = at::empty({batch, T_, dim}, latents_.options());
  CommTimer timer(&p_.stats, "pipefusion");
  auto rx = pipe.Recv(hidden.x, p_.stage() - 1, kTagImage + patch);
  if (!rx.ok()) return rx.status();
  std::unique_ptr<parallel::PendingTransfer> rc;
  if (with_text) {
    auto r = pipe.Recv(hidden.context, p_.stage() - 1, kTagText + patch);
    if (!r.ok()) return r.status();
    rc = *std::move(r);
  }
  DITSERVE_RETURN_IF_ERROR((*rx)->Wait());
  if (rc) DITSERVE_RETURN_IF_ERROR(rc->Wait());
  return hidden;
}

absl::Status ReplicaRun::SendHidden(const models::DitHidden& hidden, int patch) {
  auto& pipe = p_.groups->group(Dim::kPipeFusion);
  DITSERVE_RETURN_IF_ERROR(
      Track(pipe.Send(hidden.x, p_.stage() + 1, kTagImage + patch), "pipefusion", Bytes(hidden.x)));
  if (patch == 0) {
    DITSERVE_RETURN_IF_ERROR(Track(pipe.Send(hidden.context, p_.stage() + 1, kTagText + patch), "pipefusion",
                                   Bytes(hidden.context)));
  }
  return absl::OkStatus();
}

absl::Status ReplicaRun::RunBlocks(int step, int patch, models::DitHidden& hidden,
                                   const models::DitConditioning& conditioning,
                                   models::DitTransformer::BlockSpan span) {
  if (pipefusion_attention_ != nullptr) pipefusion_attention_->SetPatch(plan_at(step).Patch(patch));
  return p_.transformer->RunBlockSpan(hidden, conditioning, PositionsFor(step, patch), *attention_, span);
}

absl::Status ReplicaRun::FinishPatch(int step, int patch, const at::Tensor& x,
                                     const models::DitConditioning& conditioning) {
  const core::TokenRange local = Local(step, patch);
  auto velocity = Guided(p_.transformer->Head(x, conditioning));
  if (!velocity.ok()) return velocity.status();
  at::Tensor slice = latents_.narrow(1, local.begin, local.size());
  slice.copy_(flux::FlowMatchEulerStep(slice, *velocity, sigmas_[step], sigmas_[step + 1]));
  // The next step reads this patch in the same layout: send it right away.
  if (p_.stages() > 1 && step + 1 < end_step_ && patches_at(step + 1) == patches_at(step)) {
    DITSERVE_RETURN_IF_ERROR(SendLatents(step + 1, patch));
  }
  return absl::OkStatus();
}

absl::Status ReplicaRun::RunPatch(int step, int patch, const models::DitConditioning& conditioning) {
  absl::StatusOr<models::DitHidden> hidden = first_stage() ? EmbedPatch(step, patch) : ReceiveHidden(step, patch);
  if (!hidden.ok()) return hidden.status();
  DITSERVE_RETURN_IF_ERROR(RunBlocks(step, patch, *hidden, conditioning, {}));
  if (!last_stage()) return SendHidden(*hidden, patch);
  return FinishPatch(step, patch, hidden->x, conditioning);
}

// A step of a caching run (step_cache.h). Stage 0 first computes the
// signal of every patch (under PipeFusion it waits for the whole step's
// latents: the decision is the whole image's, as one process makes it),
// decides with the SP and CFG groups, and tells the later stages. Then, if
// any request computes, the patches run the remaining blocks as usual;
// if any is cached, stage 0 sends the anchor change to the last stage,
// which adds it to the blocks' output of the last computed step. A step
// where no request computes costs stage 0 the signal, the middle stages
// nothing, and the last stage the head.
absl::Status ReplicaRun::CachedStep(int step, const models::DitConditioning& conditioning) {
  StepCache& cache = *cache_;
  const int M = patches_at(step);
  const bool first_block = cache.method() == core::StepCacheMethod::kFirstBlock;
  auto& pipe = p_.groups->group(Dim::kPipeFusion);
  std::vector<models::DitHidden> hidden(first_stage() ? M : 0);
  if (first_stage()) {
    cache.BeginStep();
    if (pipefusion_attention_ != nullptr) pipefusion_attention_->SetWritableRows(at::Tensor());
    for (int m = 0; m < M; ++m) {
      auto embedded = EmbedPatch(step, m);
      if (!embedded.ok()) return embedded.status();
      hidden[m] = *std::move(embedded);
      at::Tensor signal;
      if (first_block) {
        const at::Tensor input = hidden[m].x;
        DITSERVE_RETURN_IF_ERROR(RunBlocks(step, m, hidden[m], conditioning, {0, 1}));
        signal = hidden[m].x - input;
      } else {
        signal = p_.transformer->FirstBlockModulatedInput(hidden[m], conditioning);
      }
      cache.AddSignal(signal, hidden[m].x, Local(step, m).begin);
    }
    DITSERVE_RETURN_IF_ERROR(DecideStep(step));
    for (int s = 1; s < p_.stages(); ++s) {
      const at::Tensor decisions = cache_decisions_.contiguous();
      DITSERVE_RETURN_IF_ERROR(Track(pipe.Send(decisions, s, kTagDecision), "pipefusion", Bytes(decisions)));
    }
  } else {
    at::Tensor decisions = at::empty({static_cast<int64_t>(mine_.size())}, at::TensorOptions().dtype(at::kInt).device(p_.device));
    CommTimer timer(&p_.stats, "pipefusion");
    auto recv = pipe.Recv(decisions, 0, kTagDecision);
    if (!recv.ok()) return recv.status();
    DITSERVE_RETURN_IF_ERROR((*recv)->Wait());
    cache.Agree(step, decisions);
  }
  // Cached requests' rows compute along (the batch runs whole) but must
  // leave PipeFusion's stale K/V as their own run would: unwritten.
  if (pipefusion_attention_ != nullptr) {
    pipefusion_attention_->SetWritableRows(cache.all_compute() ? at::Tensor() : cache.row_mask());
  }
  for (int m = 0; m < M; ++m) {
    const core::TokenRange local = Local(step, m);
    models::DitHidden h;
    if (first_stage()) h = std::move(hidden[m]);
    if (cache.any_computes()) {
      if (!first_stage()) {
        auto received = ReceiveHidden(step, m);
        if (!received.ok()) return received.status();
        h = *std::move(received);
      }
      const models::DitTransformer::BlockSpan span{first_stage() && first_block ? 1 : 0, -1};
      DITSERVE_RETURN_IF_ERROR(RunBlocks(step, m, h, conditioning, span));
      if (!last_stage()) DITSERVE_RETURN_IF_ERROR(SendHidden(h, m));
    }
    at::Tensor delta;
    if (!cache.all_compute()) {
      if (first_stage()) {
        delta = cache.AnchorDelta(local.begin, local.size());
        if (!last_stage()) {
          delta = delta.contiguous();
          DITSERVE_RETURN_IF_ERROR(
              Track(pipe.Send(delta, p_.stages() - 1, kTagDelta + m), "pipefusion", Bytes(delta)));
        }
      } else if (last_stage()) {
        delta = at::empty({pooled_.size(0), local.size(), p_.transformer->hidden_size()}, latents_.options());
        CommTimer timer(&p_.stats, "pipefusion");
        auto recv = pipe.Recv(delta, 0, kTagDelta + m);
        if (!recv.ok()) return recv.status();
        DITSERVE_RETURN_IF_ERROR((*recv)->Wait());
      }
    }
    if (last_stage()) {
      const at::Tensor x = cache.Merge(cache.any_computes() ? h.x : at::Tensor(), delta, local.begin, local.size());
      DITSERVE_RETURN_IF_ERROR(FinishPatch(step, m, x, conditioning));
    }
  }
  if (first_stage()) cache.CommitStage0();
  return absl::OkStatus();
}

// Stage 0: the distances summed over the SP group and the CFG group, each
// request's decision, and the decisions agreed (any rank computing makes
// all compute, so a rounding apart cannot split the gang).
absl::Status ReplicaRun::DecideStep(int step) {
  StepCache& cache = *cache_;
  const auto reduce = [&](at::Tensor& t, parallel::ReduceOp op) -> absl::Status {
    if (p_.sp_size() == 1 && !p_.config().use_cfg_parallel) return absl::OkStatus();
    at::Tensor on_device = t.to(p_.device);
    CommTimer timer(&p_.stats, "step_cache");
    timer.AddBytes(Bytes(on_device));
    if (p_.sp_size() > 1) DITSERVE_RETURN_IF_ERROR(p_.groups->group(Dim::kSequence).AllReduce(on_device, op));
    if (p_.config().use_cfg_parallel) DITSERVE_RETURN_IF_ERROR(p_.groups->group(Dim::kCfg).AllReduce(on_device, op));
    t.copy_(on_device.cpu());
    return absl::OkStatus();
  };
  DITSERVE_RETURN_IF_ERROR(reduce(cache.partial_sums(), parallel::ReduceOp::kSum));
  at::Tensor decisions = cache.Decide(step);
  DITSERVE_RETURN_IF_ERROR(reduce(decisions, parallel::ReduceOp::kMax));
  cache.Agree(step, decisions);
  cache_decisions_ = decisions.to(p_.device);
  return absl::OkStatus();
}

const models::DitPositions& ReplicaRun::PositionsFor(int step, int patch) {
  std::vector<models::DitPositions>& tables = patches_at(step) == 1 ? positions_whole_ : positions_pipelined_;
  if (tables.empty()) tables.resize(patches_at(step));
  models::DitPositions& r = tables[patch];
  if (!r.image_cos.defined() && !r.image_embedding.defined()) {
    const core::TokenRange local = Local(step, patch);
    const int64_t end = std::min(local.end, S_), begin = std::min(local.begin, end);
    r = p_.transformer->Positions(patch == 0 ? LocalTextTokens() : 0, rows_, cols_, begin, end, p_.device);
    // SP padding tokens (beyond S_) get zero positions: their outputs are
    // never read and their keys are masked.
    const auto pad = [&](at::Tensor& table) {
      if (table.defined() && table.size(0) < local.size()) {
        std::vector<int64_t> widths(2 * table.dim(), 0);
        widths.back() = local.size() - table.size(0);  // dim 0, at the end
        table = at::constant_pad_nd(table, widths);
      }
    };
    pad(r.image_cos);
    pad(r.image_sin);
    pad(r.image_embedding);
  }
  return r;
}

absl::Status ReplicaRun::SendLatents(int step, int patch) {
  const core::TokenRange local = Local(step, patch);
  const at::Tensor part = latents_.narrow(1, local.begin, local.size()).contiguous();
  return Track(p_.groups->group(Dim::kPipeFusion).Send(part, 0, kTagLatents + patch), "pipefusion", Bytes(part));
}

// Makes every token of `state` ([rows, padded tokens, ...]) current on this
// rank: each SP rank contributes the ranges it computed at `step`, zeros
// elsewhere, and a sum over the SP group assembles them exactly. The last
// stage does it for the latents when the patch layout changes (and at the
// end); the step cache's state follows on every stage.
absl::Status ReplicaRun::CompleteRanges(at::Tensor& state, int step) {
  if (p_.sp_size() == 1 || !state.defined()) return absl::OkStatus();
  at::Tensor mine = at::zeros_like(state);
  for (int m = 0; m < patches_at(step); ++m) {
    const core::TokenRange r = Local(step, m);
    mine.narrow(1, r.begin, r.size()).copy_(state.narrow(1, r.begin, r.size()));
  }
  CommTimer timer(&p_.stats, "sequence");
  timer.AddBytes(Bytes(mine));
  DITSERVE_RETURN_IF_ERROR(p_.groups->group(Dim::kSequence).AllReduce(mine, parallel::ReduceOp::kSum));
  state = mine;
  return absl::OkStatus();
}

std::vector<std::vector<bool>> ReplicaRun::steps_computed() const {
  if (cache_ != nullptr && cache_->active()) return cache_->decisions();
  return std::vector<std::vector<bool>>(mine_.size(), std::vector<bool>(steps_, true));
}

absl::Status ReplicaRun::Step(int step) {
  const at::Tensor sigma = at::full({pooled_.size(0)}, sigmas_[step], at::kFloat).to(p_.device);
  const models::DitConditioning conditioning =
      p_.transformer->Condition(p_.transformer->TimeEmbedding(sigma, guidance_, pooled_));
  if (pipefusion_attention_ != nullptr && step == 0) pipefusion_attention_->Reset();
  if (cache_ != nullptr && cache_->active()) return CachedStep(step, conditioning);
  for (int m = 0; m < patches_at(step); ++m) DITSERVE_RETURN_IF_ERROR(RunPatch(step, m, conditioning));
  return absl::OkStatus();
}

absl::Status ReplicaRun::Run(const StepCallback& on_step) {
  Prepare();
  // Cancellation: after each step every rank votes (its on_step answers,
  // OR-ed), and the gang agrees on vote #j asynchronously (StopAgreement).
  // A stop at #j means every rank runs steps < j + delay. Without
  // PipeFusion the ranks move in lockstep: delay 1, decision #j read at the
  // end of step j. With it, stages are up to lag = ceil((P−1)/M) steps
  // apart: decision #j is read at the end of step j + lag (so the read
  // never waits for a slower stage) and governs step j + lag + 2 (so the
  // last stage knows a step ahead whether stage 0 will consume its latents).
  const int P = p_.stages();
  const int M = patches_at(steps_ - 1);
  const int delay = P == 1 ? 1 : (P - 1 + M - 1) / M + 2;
  const int read_ahead = P == 1 ? 0 : 1;
  bool want_stop = false, stopped = false;
  int read = 0;  // decisions read
  StopAgreement agreement(p_.groups->control());
  const auto read_until = [&](int index) -> absl::Status {
    for (; read <= index && read < agreement.posted(); ++read) {
      auto stop = agreement.Decision(read);
      if (!stop.ok()) return stop.status();
      if (*stop && !stopped) {
        stopped = true;
        end_step_ = std::min(end_step_, read + delay);
      }
    }
    return absl::OkStatus();
  };
  for (int step = 0; step < end_step_; ++step) {
    if (!idle()) {
      DITSERVE_RETURN_IF_ERROR(Step(step));
      if (P > 1 && step + 1 < end_step_ && patches_at(step + 1) != patches_at(step)) {
        // Warmup ends: the next step reads other ranges.
        if (cache_->active()) {
          for (at::Tensor* state : cache_->state()) DITSERVE_RETURN_IF_ERROR(CompleteRanges(*state, step));
        }
        if (last_stage()) {
          DITSERVE_RETURN_IF_ERROR(CompleteRanges(latents_, step));
          for (int m = 0; m < patches_at(step + 1); ++m) DITSERVE_RETURN_IF_ERROR(SendLatents(step + 1, m));
        }
      }
    }
    if (on_step && !on_step(step + 1, steps_)) want_stop = true;
    agreement.Post(want_stop);
    DITSERVE_RETURN_IF_ERROR(read_until(step + read_ahead + 1 - delay));
  }
  DITSERVE_RETURN_IF_ERROR(read_until(agreement.posted() - 1));
  DITSERVE_RETURN_IF_ERROR(DrainSends(0));
  if (stopped) {
    return absl::CancelledError(absl::StrCat("cancelled after step ", end_step_, " of ", steps_));
  }
  if (!idle() && last_stage()) DITSERVE_RETURN_IF_ERROR(CompleteRanges(latents_, steps_ - 1));
  return absl::OkStatus();
}

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
       static_cast<int64_t>(pipefusion.patches(pc)), static_cast<int64_t>(pipefusion.warmup_steps)},
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
          "ring, patches, warmup) ",
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
  at::NoGradGuard no_grad;
  timings = GenerateTimings{};
  auto mark = std::chrono::steady_clock::now();
  const auto lap = [&mark]() {
    const auto now = std::chrono::steady_clock::now();
    const double s = std::chrono::duration<double>(now - mark).count();
    mark = now;
    return s;
  };
  const bool cfg = Guidance(first).cfg;
  const int64_t n = static_cast<int64_t>(requests.size());
  const int64_t rows = cfg ? 2 * n : n;
  auto text_tokens = AgreeOnTextTokens(first);
  if (!text_tokens.ok()) return text_tokens.status();
  const int64_t T = *text_tokens;
  DITSERVE_RETURN_IF_ERROR(AgreeOnCall(rows, T, first));
  // Rank 0 encodes every prompt (then every negative prompt) once; the
  // embeddings travel to the gang by one broadcast each.
  at::Tensor pooled = at::zeros({rows, family->pooled_dim()},
                                at::TensorOptions().dtype(dtype).device(device));
  at::Tensor sequence = at::zeros({rows, T, family->text_dim()},
                                  at::TensorOptions().dtype(dtype).device(device));
  absl::Status encoded = absl::OkStatus();
  if (world().rank() == 0) {
    for (int64_t i = 0; i < rows && encoded.ok(); ++i) {
      const GenerationRequest& r = requests[i % n];
      auto e = text->Encode(i < n ? r.prompt : r.negative_prompt, MaxSequenceLength(r));
      if (!e.ok()) {
        encoded = e.status();
        break;
      }
      pooled[i].copy_(e->pooled[0]);
      sequence[i].copy_(e->sequence[0]);
    }
  }
  auto failed = AnyRankFailed(groups->control(), !encoded.ok());
  if (!failed.ok()) return failed.status();
  if (!encoded.ok()) return encoded;
  if (*failed) return absl::AbortedError("rank 0 failed to encode the prompts");
  if (world().world_size() > 1) {
    CommTimer timer(&stats, "embeddings");
    if (world().rank() == 0) timer.AddBytes((Bytes(pooled) + Bytes(sequence)) * (world().world_size() - 1));
    auto& all = groups->group(Dim::kWorld);
    DITSERVE_RETURN_IF_ERROR(all.Broadcast(pooled, 0));
    DITSERVE_RETURN_IF_ERROR(all.Broadcast(sequence, 0));
  }

  timings.text_encoding_s = lap();
  const int replicas = config().data_parallel_degree;
  const int replica = world().rank_in(Dim::kData);
  ReplicaRun run(*this, requests, core::ReplicaRequests(static_cast<int>(n), replicas, replica), pooled, sequence);
  DITSERVE_RETURN_IF_ERROR(run.Run(on_step));

  // Final latents: each replica's output rank (first SP rank, first CFG
  // rank, last stage) sends them to rank 0, which decodes every image.
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
    timer.AddBytes(Bytes(run.latents()));
    auto send = all.Send(run.latents().contiguous(), 0, kTagResult + replica);
    if (!send.ok()) return send.status();
    DITSERVE_RETURN_IF_ERROR((*send)->Wait());
    auto send_steps = all.Send(steps_tensor(run.steps_computed()), 0, kTagStepsComputed + replica);
    if (!send_steps.ok()) return send_steps.status();
    DITSERVE_RETURN_IF_ERROR((*send_steps)->Wait());
  }
  if (world().rank() != 0) return std::vector<GenerationResult>{};
  std::vector<at::Tensor> final_latents(requests.size());
  std::vector<std::vector<bool>> step_computed(requests.size());
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
  timings.denoising_s = lap();
  std::vector<GenerationResult> results;
  for (size_t i = 0; i < final_latents.size(); ++i) {
    auto image = DecodeLatents(*vae, final_latents[i], h, w);
    if (!image.ok()) return image.status();
    results.push_back(GenerationResult{*image, final_latents[i].to(at::kFloat).cpu(), step_computed[i]});
  }
  timings.vae_s = lap();
  return results;
}

}  // namespace

struct ParallelPipeline::Impl : GangModel {};

ParallelPipeline::ParallelPipeline(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ParallelPipeline::~ParallelPipeline() = default;

int ParallelPipeline::size_multiple() const { return impl_->geometry().size_multiple; }
int ParallelPipeline::default_size() const { return impl_->geometry().default_size; }
bool ParallelPipeline::uses_guidance_embedding() const { return impl_->geometry().guidance_embeds; }
const std::string& ParallelPipeline::family() const { return impl_->geometry().family; }
double ParallelPipeline::default_guidance_scale() const { return impl_->geometry().default_guidance_scale; }
core::CfgScaleField ParallelPipeline::cfg_scale_field() const { return impl_->geometry().cfg_scale; }
const std::string& ParallelPipeline::transformer_config_json() const { return impl_->family->transformer_config_json(); }
const CommStats& ParallelPipeline::comm_stats() const { return impl_->stats; }
const GenerateTimings& ParallelPipeline::last_timings() const { return impl_->timings; }

absl::StatusOr<std::unique_ptr<ParallelPipeline>> ParallelPipeline::Load(const std::string& dir, at::ScalarType dtype,
                                                                          c10::Device device,
                                                                          parallel::ProcessGroups& groups,
                                                                          const core::PipeFusionOptions& pipefusion) {
  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  impl->groups = &groups;
  impl->pipefusion = pipefusion;
  impl->dtype = dtype;
  impl->device = device;
  const auto load = [&]() -> absl::Status {
    auto family = OpenModelFamily(dir);
    if (!family.ok()) return family.status();
    impl->family = *std::move(family);
    DITSERVE_RETURN_IF_ERROR(core::ValidateParallelModel(impl->config(), pipefusion, impl->geometry()));
    const core::BlockRange blocks = core::StageBlocks(pipefusion, impl->geometry().num_blocks, impl->stages(), impl->stage());
    const models::DitPart part{blocks.first, blocks.end, impl->stage() == 0, impl->stage() == impl->stages() - 1};
    auto transformer = impl->family->LoadTransformer(part, dtype, device);
    if (!transformer.ok()) return transformer.status();
    impl->transformer = *std::move(transformer);
    if (groups.world().rank() == 0) {
      auto text = impl->family->LoadText(dtype, device);
      if (!text.ok()) return text.status();
      impl->text = *std::move(text);
      auto vae = LoadVaeDecoder(dir, impl->vae_config(), dtype, device);
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

absl::StatusOr<std::vector<GenerationResult>> ParallelPipeline::Generate(
    const std::vector<GenerationRequest>& requests, const StepCallback& on_step) {
  return impl_->Generate(requests, on_step);
}

}  // namespace ditserve::worker::pipelines
