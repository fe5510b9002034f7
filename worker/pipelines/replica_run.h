#pragma once

// One Generate call's denoising on one rank: the loop of this rank's
// data-parallel replica over the steps (or, for an idle replica, only the
// agreement on cancellation). The parallel methods enter as strategies:
// the attention (models::JointAttention: serial, USP, PipeFusion), the
// stage link (PipeFusionLink), classifier-free guidance (CombineCfg, in
// one batch or across the CFG group) and the step cache (StepCache, its
// decisions agreed over the SP and CFG groups). Every rank of the gang
// constructs one per call and runs it; internal to worker/pipelines.

#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/generation_plan.h"
#include "worker/models/common/dit_transformer.h"
#include "worker/models/common/joint_attention.h"
#include "worker/pipelines/denoising_solver.h"
#include "worker/pipelines/gang_model.h"
#include "worker/pipelines/generation_request.h"
#include "worker/pipelines/pipefusion_attention.h"
#include "worker/pipelines/pipefusion_link.h"
#include "worker/pipelines/step_cache.h"

namespace ditserve::worker::pipelines {

// One Generate call on one rank: the denoising loop of this rank's replica
// (or, for an idle replica, only the agreement on cancellation).
class ReplicaRun {
 public:
  ReplicaRun(GangModel& p, const std::vector<GenerationRequest>& requests, std::vector<int> mine,
             const at::Tensor& pooled, const at::Tensor& sequence, const at::Tensor& mask)
      : p_(p),
        requests_(requests),
        mine_(std::move(mine)),
        all_pooled_(pooled),
        all_sequence_(sequence),
        all_mask_(mask) {}

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
  // Cross-attention families never split the text (every rank attends all
  // of it).
  bool text_sharded() const { return p_.stages() == 1 && p_.sp_size() > 1 && !p_.family->cross_attention(); }
  // This rank's text tokens of x [B, padded_T_, ...].
  at::Tensor LocalText(const at::Tensor& x) const {
    if (!text_sharded()) return x;
    const int64_t t = LocalTextTokens();
    return x.narrow(1, p_.sp_rank() * t, t);
  }
  int64_t LocalTextTokens() const { return text_sharded() ? padded_T_ / p_.sp_size() : T_; }
  // Whether `patch` of `step` carries the text stream: patch 0 of every
  // step for the MMDiT families (their blocks update it); for a cross-
  // attention family only at the first step, after which every block holds
  // its text K/V (JointAttention::TextKv), so the text is neither embedded
  // again nor sent between PipeFusion stages.
  bool CarriesText(int step, int patch) const { return patch == 0 && (step == 0 || !p_.family->cross_attention()); }
  absl::Status Prepare();
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
  absl::Status FinishPatch(int step, int patch, const at::Tensor& x, const models::DitConditioning& conditioning);
  absl::Status CachedStep(int step, const models::DitConditioning& conditioning);
  absl::Status DecideStep(int step);
  absl::Status CompleteRanges(at::Tensor& state, int step);
  absl::Status SendLatents(int step, int patch);
  // The attention of this run's parallel method: serial, USP (Ulysses
  // inside Ring, with padding masks) or PipeFusion's stale-K/V attention.
  void MakeAttention();

  GangModel& p_;
  const std::vector<GenerationRequest>& requests_;
  std::vector<int> mine_;
  at::Tensor all_pooled_, all_sequence_;  // every request's: cond rows, then uncond rows (true CFG)
  at::Tensor all_mask_;  // the text's padding mask, rows as all_sequence_; undefined: no mask

  // rows_ × cols_ = S_ image tokens; padded_rows_ × cols_ = padded_S_ with
  // the SP padding (generation_plan.h), which latents_ and the plans cover.
  // T_ text tokens, padded_T_ with the padding of a sharded text.
  int64_t h_ = 0, w_ = 0, rows_ = 0, cols_ = 0, S_ = 0, T_ = 0, padded_rows_ = 0, padded_S_ = 0, padded_T_ = 0;
  core::PatchPlan whole_, pipelined_;  // the warmup's single patch; PipeFusion's patches
  std::vector<models::DitPositions> positions_whole_, positions_pipelined_;  // per patch of each plan, filled on first use
  int steps_ = 0, end_step_ = 0;
  bool cfg_ = false;
  std::unique_ptr<DenoisingSolver> solver_;  // the schedule and its history
  std::vector<at::Generator> generators_;    // per request of mine_: its seed's CPU generator
  at::Tensor latents_;    // [n, S, C] in the run dtype; this rank's ranges are current
  at::Tensor pooled_, sequence_, mask_, guidance_, cfg_scale_;  // the model batch's
  std::unique_ptr<models::JointAttention> attention_;
  PipeFusionAttention* pipefusion_attention_ = nullptr;  // == attention_ when PipeFusion
  std::unique_ptr<PipeFusionLink> link_;  // with PipeFusion only
  std::unique_ptr<StepCache> cache_;  // every run; active() when a request caches
  at::Tensor cache_decisions_;        // stage 0: the step's agreed decisions, int32 [n]
};

}  // namespace ditserve::worker::pipelines
