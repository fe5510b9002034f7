#include "worker/pipelines/replica_run.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "util/status_macros.h"
#include "worker/families/components.h"
#include "worker/pipelines/cfg_guidance.h"
#include "worker/pipelines/stop_agreement.h"
#include "worker/pipelines/usp_joint_attention.h"

namespace ditserve::worker::pipelines {
namespace {

}  // namespace

using parallel::Dim;

ReplicaRun::ReplicaRun(GangModel& p, const GenerationRequest& shape, int64_t text_tokens, Layout layout)
    : p_(p), layout_(layout) {
  const int scale = p_.vae_config().scale_factor();
  height_ = shape.height;
  width_ = shape.width;
  h_ = 2 * (shape.height / (scale * 2));
  w_ = 2 * (shape.width / (scale * 2));
  rows_ = h_ / 2;
  cols_ = w_ / 2;
  S_ = rows_ * cols_;
  padded_rows_ = core::PaddedRows(rows_, p_.sp_size());
  padded_S_ = padded_rows_ * cols_;
  T_ = text_tokens;
  padded_T_ = text_sharded() ? (T_ + p_.sp_size() - 1) / p_.sp_size() * p_.sp_size() : T_;
  // Patch 0's text costs per-token block work only when it joins the image
  // in attention (MMDiT); a cross-attention family's text is only keys.
  const int64_t balanced_text = p_.family->cross_attention() ? 0 : T_;
  whole_ = core::PatchPlan::Balanced(padded_rows_, cols_, 1, p_.sp_size(), balanced_text);
  pipelined_ = core::PatchPlan::Balanced(padded_rows_, cols_, p_.stages() > 1 ? p_.pipefusion.patches(p_.config()) : 1,
                                         p_.sp_size(), balanced_text);
  steps_ = shape.num_inference_steps;
  end_step_ = steps_;
  latents_ = at::empty({0, padded_S_, p_.family->latent_channels() * 4}, at::TensorOptions().dtype(p_.dtype).device(p_.device));
  if (p_.stages() > 1) {
    // An open set's warmup run and pipelined run share the group.
    const int patch_base = layout_ == Layout::kWhole ? 512 : 0;
    link_ = std::make_unique<PipeFusionLink>(p_.groups->group(Dim::kPipeFusion), p_.stage(), p_.stages(), &p_.stats,
                                             patch_base);
  }
  MakeAttention();
}

ReplicaRun::~ReplicaRun() = default;

void ReplicaRun::Admit(uint64_t id, const GenerationRequest& request, const at::Tensor& pooled,
                       const at::Tensor& sequence, const at::Tensor& mask, int64_t index, int64_t prompts) {
  auto m = std::make_unique<Member>();
  m->id = id;
  m->request = request;
  const core::ResolvedGuidance guidance = p_.Guidance(request);
  m->cfg = guidance.cfg;
  m->cfg_scale = guidance.cfg_scale;
  m->embedded_guidance = guidance.embedded ? guidance.embedded_scale : 0;
  auto schedule = p_.family->Schedule(request.num_inference_steps, S_);
  // The family validated the request's step count: a schedule exists.
  m->solver = std::make_unique<DenoisingSolver>(*std::move(schedule));
  // Each request's own CPU generator: its initial latents, then (a
  // stochastic scheduler) each step's fresh noise, as diffusers draws them.
  m->generator = at::make_generator<at::CPUGeneratorImpl>(request.seed);
  const int64_t channels = p_.family->latent_channels();
  at::Tensor noise = families::PackedNoise(m->generator, channels, h_, w_);
  const double init_sigma = m->solver->schedule().init_noise_sigma;
  if (init_sigma != 1.0) noise = noise * init_sigma;
  noise = noise.to(p_.device, p_.dtype);
  // The padding tokens start at zero; what they compute is never read.
  if (padded_S_ > S_) noise = at::constant_pad_nd(noise, {0, 0, 0, padded_S_ - S_});
  m->solver->Allocate(noise);
  if (m->solver->schedule().stochastic()) {
    Member* member = m.get();
    m->solver->set_noise_source([this, member, channels](int /*step*/) {
      at::Tensor z = families::PackedNoise(member->generator, channels, h_, w_);
      if (padded_S_ > S_) z = at::constant_pad_nd(z, {0, 0, 0, padded_S_ - S_});
      return z;
    });
  }
  // This rank's model rows of the prompt: its CFG branch's, both branches'
  // (CFG in one batch: cond, then uncond) or its only row.
  std::vector<int64_t> branches = {0};
  if (p_.config().use_cfg_parallel) {
    branches = {p_.world().rank_in(Dim::kCfg)};
  } else if (m->cfg) {
    branches = {0, 1};
  }
  const auto rows_of = [&](const at::Tensor& all) {
    if (!all.defined()) return at::Tensor();
    std::vector<at::Tensor> rows;
    for (int64_t b : branches) rows.push_back(all.narrow(0, b * prompts + index, 1));
    return rows.size() == 1 ? rows.front() : at::cat(rows, 0);
  };
  m->pooled = rows_of(pooled);
  m->sequence = rows_of(sequence);
  m->mask = rows_of(mask);
  // A family whose transformer pools the text itself (HunyuanDiT): once per
  // request, on every rank (each holds the pool).
  if (at::Tensor pooled_text = p_.transformer->PooledText(m->sequence); pooled_text.defined()) m->pooled = pooled_text;
  if (padded_T_ > T_) m->sequence = at::constant_pad_nd(m->sequence, {0, 0, 0, padded_T_ - T_});
  latents_ = at::cat({latents_, noise}, 0);
  const auto before = RowKeys();
  members_.push_back(std::move(m));
  Rebuild();
  RemapKv(before);
}

int ReplicaRun::index_of(uint64_t id) const {
  for (size_t i = 0; i < members_.size(); ++i) {
    if (members_[i]->id == id) return static_cast<int>(i);
  }
  return -1;
}

void ReplicaRun::Remove(uint64_t id) {
  if (const int i = index_of(id); i >= 0) Detach(i);
}

std::unique_ptr<ReplicaRun::Member> ReplicaRun::Detach(int i) {
  const auto before = RowKeys();
  std::unique_ptr<Member> m = std::move(members_[i]);
  members_.erase(members_.begin() + i);
  latents_ = at::cat({latents_.narrow(0, 0, i), latents_.narrow(0, i + 1, latents_.size(0) - i - 1)}, 0);
  Rebuild();
  RemapKv(before);
  return m;
}

std::vector<std::pair<uint64_t, int>> ReplicaRun::RowKeys() const {
  std::vector<std::pair<uint64_t, int>> keys;
  for (const auto& m : members_) keys.emplace_back(m->id, 0);
  for (const auto& m : members_) {
    if (m->pooled.size(0) == 2) keys.emplace_back(m->id, 1);
  }
  return keys;
}

void ReplicaRun::RemapKv(const std::vector<std::pair<uint64_t, int>>& before,
                         const std::vector<std::pair<uint64_t, int>>& imported_keys,
                         const PipeFusionAttention::Rows* imported) {
  if (pipefusion_attention_ == nullptr) return;
  std::vector<int64_t> index;
  for (const auto& key : RowKeys()) {
    int64_t from = -1;
    if (auto it = std::find(before.begin(), before.end(), key); it != before.end()) {
      from = it - before.begin();
    } else if (auto in = std::find(imported_keys.begin(), imported_keys.end(), key); in != imported_keys.end()) {
      from = static_cast<int64_t>(before.size()) + (in - imported_keys.begin());
    }
    index.push_back(from);
  }
  pipefusion_attention_->Remap(index, static_cast<int64_t>(before.size()), imported);
}

absl::Status ReplicaRun::MoveTo(uint64_t id, ReplicaRun& to) {
  const int i = index_of(id);
  if (i < 0) return absl::InternalError(absl::StrCat("member ", id, " is not in the run"));
  Member& m = *members_[i];
  // Whole on every SP rank: `to` reads other token ranges.
  at::Tensor row = latents_.narrow(0, i, 1).clone();
  DITSERVE_RETURN_IF_ERROR(CompleteRanges(row, 0));
  for (at::Tensor* state : m.solver->state()) DITSERVE_RETURN_IF_ERROR(CompleteRanges(*state, 0));
  std::vector<std::pair<uint64_t, int>> keys;
  std::vector<int64_t> rows;
  const auto mine = RowKeys();
  for (size_t r = 0; r < mine.size(); ++r) {
    if (mine[r].first == id) {
      keys.push_back(mine[r]);
      rows.push_back(static_cast<int64_t>(r));
    }
  }
  PipeFusionAttention::Rows kv;
  if (pipefusion_attention_ != nullptr) kv = pipefusion_attention_->Export(rows);
  std::unique_ptr<Member> moving = Detach(i);
  const auto before = to.RowKeys();
  to.latents_ = at::cat({to.latents_, row}, 0);
  to.members_.push_back(std::move(moving));
  to.Rebuild();
  to.RemapKv(before, keys, &kv);
  return absl::OkStatus();
}

void ReplicaRun::Rebuild() {
  // The kept text K/V are the old rows': the next step embeds the text
  // again.
  text_stale_ = true;
  attention_->ForgetTextKv();
  if (members_.empty()) {
    pooled_ = sequence_ = mask_ = guidance_ = cfg_scale_ = cfg_members_ = at::Tensor();
    cfg_ = false;
    return;
  }
  // Every member's first row (cond, or its CFG-parallel branch), then in one
  // batch the CFG members' uncond rows (CombineCfg's layout).
  std::vector<at::Tensor> pooled, sequence, mask;
  std::vector<float> guidance, scales;
  std::vector<int64_t> cfg_members;
  const auto add_row = [&](const Member& m, int64_t b) {
    pooled.push_back(m.pooled.narrow(0, b, 1));
    sequence.push_back(m.sequence.narrow(0, b, 1));
    if (m.mask.defined()) mask.push_back(m.mask.narrow(0, b, 1));
    guidance.push_back(static_cast<float>(m.embedded_guidance));
  };
  for (const auto& m : members_) add_row(*m, 0);
  for (size_t i = 0; i < members_.size(); ++i) {
    const Member& m = *members_[i];
    if (!m.cfg) continue;
    cfg_members.push_back(static_cast<int64_t>(i));
    scales.push_back(static_cast<float>(m.cfg_scale));
    if (m.pooled.size(0) == 2) add_row(m, 1);
  }
  pooled_ = at::cat(pooled, 0);
  sequence_ = at::cat(sequence, 0);
  mask_ = mask.empty() ? at::Tensor() : at::cat(mask, 0);
  const int64_t n = static_cast<int64_t>(members_.size());
  const int64_t c = static_cast<int64_t>(cfg_members.size());
  cfg_ = c > 0;
  cfg_scale_ = cfg_ ? at::tensor(scales, at::kFloat).view({c, 1, 1}).to(p_.device) : at::Tensor();
  cfg_members_ = cfg_ && c < n ? at::tensor(cfg_members, at::kLong).to(p_.device) : at::Tensor();
  guidance_ = p_.Guidance(members_.front()->request).embedded ? at::tensor(guidance, at::kFloat).to(p_.device)
                                                              : at::Tensor();
  // Cross-attention families: the padding mask of the whole text, which
  // every rank holds.
  if (mask_.defined()) attention_->set_text_mask(mask_);
}

std::vector<uint64_t> ReplicaRun::members() const {
  std::vector<uint64_t> ids;
  for (const auto& m : members_) ids.push_back(m->id);
  return ids;
}

int ReplicaRun::step_of(uint64_t id) const { return members_[index_of(id)]->step; }
int ReplicaRun::steps_of(uint64_t id) const { return members_[index_of(id)]->request.num_inference_steps; }

at::Tensor ReplicaRun::latents() const { return latents_.narrow(1, 0, S_); }
at::Tensor ReplicaRun::member_latents(uint64_t id) const { return latents_.narrow(0, index_of(id), 1).narrow(1, 0, S_); }

void ReplicaRun::MakeAttention() {
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

absl::StatusOr<models::DitHidden> ReplicaRun::EmbedPatch(int step, int patch) {
  const core::TokenRange local = Local(step, patch);
  if (step > 0 && p_.stages() > 1 && !open_pipeline()) DITSERVE_RETURN_IF_ERROR(ReceiveLatents(step, patch));
  const at::Tensor x = latents_.narrow(1, local.begin, local.size());
  std::vector<at::Tensor> inputs;
  for (size_t i = 0; i < members_.size(); ++i) {
    inputs.push_back(members_[i]->solver->ModelInput(members_[i]->step, x.narrow(0, static_cast<int64_t>(i), 1)));
  }
  at::Tensor input = inputs.size() == 1 ? inputs.front() : at::cat(inputs, 0);
  if (pooled_.size(0) != input.size(0)) input = at::cat({input, UncondRows(input)}, 0);  // CFG in one batch
  if (!CarriesText(step, patch)) return p_.transformer->Embed(input, at::Tensor(), PositionsFor(step, patch));
  return p_.transformer->Embed(input, LocalText(sequence_), PositionsFor(step, patch), mask_);
}

absl::StatusOr<models::DitHidden> ReplicaRun::ReceiveHidden(int step, int patch) {
  const int64_t batch = pooled_.size(0);
  const int64_t dim = p_.transformer->hidden_size();
  models::DitHidden hidden;
  hidden.x = at::empty({batch, Local(step, patch).size(), dim}, latents_.options());
  if (CarriesText(step, patch)) {
    hidden.context = at::empty({batch, T_, p_.transformer->context_size()}, latents_.options());
  }
  // The long skips this stage's first block inherits (HunyuanDiT).
  const int skips = p_.transformer->SkipsBefore(p_.transformer->part().first_block);
  hidden.skips.resize(skips);
  DITSERVE_RETURN_IF_ERROR(link_->ReceiveHidden(hidden, patch));
  return hidden;
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
  const at::Tensor head = p_.transformer->Head(x, conditioning);
  auto velocity = cfg_ ? CombineCfg(head, cfg_scale_, cfg_members_,
                                    p_.config().use_cfg_parallel ? &p_.groups->group(Dim::kCfg) : nullptr, &p_.stats)
                       : absl::StatusOr<at::Tensor>(head);
  if (!velocity.ok()) return velocity.status();
  at::Tensor slice = latents_.narrow(1, local.begin, local.size());
  for (size_t i = 0; i < members_.size(); ++i) {
    Member& m = *members_[i];
    at::Tensor row = slice.narrow(0, static_cast<int64_t>(i), 1);
    row.copy_(m.solver->Step(m.step, row, velocity->narrow(0, static_cast<int64_t>(i), 1), local.begin));
  }
  // The next step reads this patch in the same layout: send it right away.
  // (An open run always sends: stage 0 receives them within the tick.)
  if (p_.stages() > 1 && (open_pipeline() || (step + 1 < end_step_ && patches_at(step + 1) == patches_at(step)))) {
    DITSERVE_RETURN_IF_ERROR(SendLatents(step + 1, patch));
  }
  return absl::OkStatus();
}

absl::Status ReplicaRun::RunPatch(int step, int patch, const models::DitConditioning& conditioning) {
  absl::StatusOr<models::DitHidden> hidden = first_stage() ? EmbedPatch(step, patch) : ReceiveHidden(step, patch);
  if (!hidden.ok()) return hidden.status();
  DITSERVE_RETURN_IF_ERROR(RunBlocks(step, patch, *hidden, conditioning, {}));
  if (!last_stage()) return link_->SendHidden(*hidden, patch);
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
    if (link_) DITSERVE_RETURN_IF_ERROR(link_->SendDecisions(cache_decisions_));
  } else {
    at::Tensor decisions = at::empty({static_cast<int64_t>(members_.size())}, at::TensorOptions().dtype(at::kInt).device(p_.device));
    DITSERVE_RETURN_IF_ERROR(link_->ReceiveDecisions(decisions));
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
      if (!last_stage()) DITSERVE_RETURN_IF_ERROR(link_->SendHidden(h, m));
    }
    at::Tensor delta;
    if (!cache.all_compute()) {
      if (first_stage()) {
        delta = cache.AnchorDelta(local.begin, local.size());
        if (!last_stage()) DITSERVE_RETURN_IF_ERROR(link_->SendDelta(delta, m));
      } else if (last_stage()) {
        delta = at::empty({pooled_.size(0), local.size(), p_.transformer->hidden_size()}, latents_.options());
        DITSERVE_RETURN_IF_ERROR(link_->ReceiveDelta(delta, m));
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
    timer.AddBytes(static_cast<int64_t>(on_device.nbytes()));
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
  return link_->SendLatents(latents_.narrow(1, local.begin, local.size()), patch);
}

absl::Status ReplicaRun::ReceiveLatents(int step, int patch) {
  const core::TokenRange local = Local(step, patch);
  at::Tensor incoming = at::empty({latents_.size(0), local.size(), latents_.size(2)}, latents_.options());
  DITSERVE_RETURN_IF_ERROR(link_->ReceiveLatents(incoming, patch));
  latents_.narrow(1, local.begin, local.size()).copy_(incoming);
  return absl::OkStatus();
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
  timer.AddBytes(static_cast<int64_t>(mine.nbytes()));
  DITSERVE_RETURN_IF_ERROR(p_.groups->group(Dim::kSequence).AllReduce(mine, parallel::ReduceOp::kSum));
  state = mine;
  return absl::OkStatus();
}

std::vector<std::vector<bool>> ReplicaRun::steps_computed() const {
  if (cache_ != nullptr && cache_->active()) return cache_->decisions();
  std::vector<std::vector<bool>> out;
  for (const auto& m : members_) out.emplace_back(m->request.num_inference_steps, true);
  return out;
}

// One step of every member, each at its own step of its own schedule:
// the model-time vector has a value per row (CFG's uncond rows repeat their
// cond rows'). `step` is the set's step (a closed run's every member's).
absl::Status ReplicaRun::Step(int step) {
  std::vector<float> times;
  for (const auto& m : members_) times.push_back(static_cast<float>(m->solver->schedule().model_times[m->step]));
  at::Tensor time = at::tensor(times, at::kFloat).to(p_.device);
  if (pooled_.size(0) != time.size(0)) time = at::cat({time, UncondRows(time)}, 0);
  const models::DitConditioning conditioning = p_.transformer->Condition(
      p_.transformer->TimeEmbedding(time, guidance_, pooled_, models::DitImageSize{height_, width_}));
  if (pipefusion_attention_ != nullptr && step == 0 && !open_pipeline()) pipefusion_attention_->Reset();
  absl::Status s = absl::OkStatus();
  if (cache_ != nullptr && cache_->active()) {
    s = CachedStep(step, conditioning);
  } else {
    for (int m = 0; m < patches_at(step) && s.ok(); ++m) s = RunPatch(step, m, conditioning);
  }
  text_stale_ = false;
  for (auto& m : members_) ++m->step;
  return s;
}

absl::Status ReplicaRun::Tick() {
  if (idle()) return absl::OkStatus();
  const int step = ticks_++;
  DITSERVE_RETURN_IF_ERROR(Step(step));
  if (!open_pipeline()) return absl::OkStatus();
  // Under PipeFusion stage 0 takes the step's latents now, while the rows
  // are the ones the last stage sent.
  for (int m = 0; first_stage() && m < patches_at(step); ++m) DITSERVE_RETURN_IF_ERROR(ReceiveLatents(step, m));
  return link_->Drain(0);
}

absl::Status ReplicaRun::CompleteLatents() {
  if (idle()) return absl::OkStatus();
  return CompleteRanges(latents_, 0);
}

absl::Status ReplicaRun::Run(const StepCallback& on_step) {
  if (!idle()) {
    std::vector<core::StepCacheOptions> caches;
    for (const auto& m : members_) caches.push_back(m->request.cache);
    const int branches = cfg_ && !p_.config().use_cfg_parallel ? 2 : 1;
    cache_ = std::make_unique<StepCache>(std::move(caches), steps_, branches, padded_S_, S_,
                                         p_.family->TeaCachePolynomial(), p_.device);
  }
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
          for (auto& m : members_) {
            for (at::Tensor* state : m->solver->state()) DITSERVE_RETURN_IF_ERROR(CompleteRanges(*state, step));
          }
          for (int m = 0; m < patches_at(step + 1); ++m) DITSERVE_RETURN_IF_ERROR(SendLatents(step + 1, m));
        }
      }
    }
    if (on_step && !on_step(step + 1, steps_)) want_stop = true;
    agreement.Post(want_stop);
    DITSERVE_RETURN_IF_ERROR(read_until(step + read_ahead + 1 - delay));
  }
  DITSERVE_RETURN_IF_ERROR(read_until(agreement.posted() - 1));
  if (link_) DITSERVE_RETURN_IF_ERROR(link_->Drain(0));
  if (stopped) {
    return absl::CancelledError(absl::StrCat("cancelled after step ", end_step_, " of ", steps_));
  }
  if (!idle() && last_stage()) DITSERVE_RETURN_IF_ERROR(CompleteRanges(latents_, steps_ - 1));
  return absl::OkStatus();
}

}  // namespace ditserve::worker::pipelines
