#pragma once

// The denoising of one rank's data-parallel replica: a closed run over
// every step of one batch (or, for an idle replica, only the agreement on
// cancellation), or an open running set that requests join and leave
// between steps. The parallel methods enter as strategies:
// the attention (models::JointAttention: serial, USP, PipeFusion), the
// stage link (PipeFusionLink), classifier-free guidance (CombineCfg, in
// one batch or across the CFG group) and the step cache (StepCache, its
// decisions agreed over the SP and CFG groups). Every rank of the gang
// constructs one per call or set and runs it; internal to worker/pipelines.

#include <cstdint>
#include <memory>
#include <utility>
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

// One rank's share of a running set of requests: the members of this
// rank's data-parallel replica, each at its own step of its own schedule.
// A closed run (Run) admits every member before the first step and steps
// them together to the end, with the PipeFusion pipeline, the step cache
// and the asynchronous stop agreement; an open set (ParallelPipeline's
// RunSet) admits and removes members between steps (Admit, Remove, Tick)
// and runs without PipeFusion or a step cache.
class ReplicaRun {
 public:
  // Which patch layout the steps use under PipeFusion. A closed run's goes
  // by step: its warmup steps one whole-image patch, then PipeFusion's
  // patches. An open set keeps one per run — kWhole for its members'
  // warmup steps, kPipelined for the rest — and a member moves from the
  // one to the other (MoveTo) with its stale K/V, so each runs the steps
  // it runs alone. An open run exchanges the latents within each Tick, so
  // its rows may change between ticks.
  enum class Layout { kBySchedule, kWhole, kPipelined };

  // `shape`: the set's generation size and text length T (every member
  // shares them). Collective only in what the calls below say.
  ReplicaRun(GangModel& p, const GenerationRequest& shape, int64_t text_tokens, Layout layout = Layout::kBySchedule);
  ~ReplicaRun();

  // Adds a member at step 0: prompt `index` of the `prompts` that
  // `pooled`, `sequence`, `mask` embed in GangModel::EncodePrompts' layout
  // (every cond row, then under CFG every uncond row; mask undefined for
  // the MMDiT families). Every rank of the replica admits the same members
  // in the same order; a rank of another replica admits none.
  void Admit(uint64_t id, const GenerationRequest& request, const at::Tensor& pooled, const at::Tensor& sequence,
             const at::Tensor& mask, int64_t index, int64_t prompts);
  // Drops a member (finished or stopped) and its rows.
  void Remove(uint64_t id);
  // Open sets under PipeFusion: member `id` leaves this run for `to`
  // (another layout) with its solver state, generator, text rows, latents
  // and PipeFusion K/V rows, and continues at its next step there. The
  // latents and solver state are made whole first (the layouts' token
  // ranges differ): collective over the SP group.
  absl::Status MoveTo(uint64_t id, ReplicaRun& to);

  // Closed run: every step of the members admitted so far (equal step
  // counts); returns CANCELLED (on every rank alike) when on_step asked to
  // stop. On success the replica's output rank holds `latents()`.
  absl::Status Run(const StepCallback& on_step);
  // Open set: one step of every member (no PipeFusion, no step cache).
  // Collective over this replica's groups; every rank of the gang calls it
  // (a replica without members returns at once).
  absl::Status Tick();
  // Open set: makes every member's latents whole on every SP rank (each
  // computed its own range of tokens), before a member's result is read.
  // Collective over the SP group.
  absl::Status CompleteLatents();

  // The members, in row order.
  std::vector<uint64_t> members() const;
  bool empty() const { return members_.empty(); }
  // Member `id`'s next step and step count.
  int step_of(uint64_t id) const;
  int steps_of(uint64_t id) const;
  // [rows, S, C] final latents of every member (without the SP padding),
  // current on the replica's output rank; `member_latents` one member's.
  at::Tensor latents() const;
  at::Tensor member_latents(uint64_t id) const;
  // Per member, per step run: whether it computed (all true without a
  // step cache).
  std::vector<std::vector<bool>> steps_computed() const;

 private:
  // One request of the set on this rank.
  struct Member {
    uint64_t id = 0;
    GenerationRequest request;
    int step = 0;  // the next step to run
    std::unique_ptr<DenoisingSolver> solver;
    at::Generator generator;  // its seed's CPU generator (initial and DDPM noise)
    bool cfg = false;  // classifier-free guidance: an uncond row besides the cond row
    double cfg_scale = 1;
    double embedded_guidance = 0;
    at::Tensor pooled, sequence, mask;  // this rank's model rows of its prompt (a branch, or both)
  };

  bool idle() const { return members_.empty(); }
  bool first_stage() const { return p_.stage() == 0; }
  bool last_stage() const { return p_.stage() == p_.stages() - 1; }
  int patches_at(int step) const {
    if (p_.stages() == 1 || layout_ == Layout::kWhole) return 1;
    if (layout_ == Layout::kPipelined || step >= p_.pipefusion.warmup_steps) return p_.pipefusion.patches(p_.config());
    return 1;
  }
  // An open set's run under PipeFusion (rows change between ticks).
  bool open_pipeline() const { return p_.stages() > 1 && layout_ != Layout::kBySchedule; }
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
  // attention family only at the first step after the rows changed, after
  // which every block holds its text K/V (JointAttention::TextKv), so the
  // text is neither embedded again nor sent between PipeFusion stages.
  bool CarriesText(int step, int patch) const {
    return patch == 0 && (step == 0 || text_stale_ || !p_.family->cross_attention());
  }
  // The model batch's rows from the members (after Admit or Remove).
  void Rebuild();
  // Takes member i out with its latents row (Remove, MoveTo); the rows and
  // the K/V buffers follow.
  std::unique_ptr<Member> Detach(int i);
  // The model batch's rows, each as (member id, branch): every member's
  // first row, then in one batch the CFG members' uncond rows.
  std::vector<std::pair<uint64_t, int>> RowKeys() const;
  // After the members changed from `before` (RowKeys() then): PipeFusion's
  // K/V rows follow their requests; a row of `imported_keys` comes from
  // `imported`, a new one starts empty.
  void RemapKv(const std::vector<std::pair<uint64_t, int>>& before,
               const std::vector<std::pair<uint64_t, int>>& imported_keys = {},
               const PipeFusionAttention::Rows* imported = nullptr);
  // CFG in one batch: the rows of `per_member` (a row per member) that the
  // uncond half of the model batch repeats, the CFG members'.
  at::Tensor UncondRows(const at::Tensor& per_member) const {
    return cfg_members_.defined() ? per_member.index_select(0, cfg_members_) : per_member;
  }
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
  // Stage 0: the last stage's latents of `patch` at `step` into latents_.
  absl::Status ReceiveLatents(int step, int patch);
  // The attention of this run's parallel method: serial, USP (Ulysses
  // inside Ring, with padding masks) or PipeFusion's stale-K/V attention.
  void MakeAttention();
  int index_of(uint64_t id) const;

  GangModel& p_;
  Layout layout_;
  // rows_ × cols_ = S_ image tokens; padded_rows_ × cols_ = padded_S_ with
  // the SP padding (generation_plan.h), which latents_ and the plans cover.
  // T_ text tokens, padded_T_ with the padding of a sharded text.
  int64_t height_ = 0, width_ = 0;
  int64_t h_ = 0, w_ = 0, rows_ = 0, cols_ = 0, S_ = 0, T_ = 0, padded_rows_ = 0, padded_S_ = 0, padded_T_ = 0;
  core::PatchPlan whole_, pipelined_;  // the warmup's single patch; PipeFusion's patches
  std::vector<models::DitPositions> positions_whole_, positions_pipelined_;  // per patch of each plan, filled on first use
  int steps_ = 0, end_step_ = 0;  // a closed run's
  int ticks_ = 0;                 // an open set's steps so far
  // Whether some member uses CFG. In one batch, members with and without it
  // share a step: the model batch is every member's cond row, then the CFG
  // members' uncond rows, and cfg_members_ (long [c], undefined when every
  // member uses CFG) says whose. Under CFG parallel every member uses it.
  bool cfg_ = false;
  at::Tensor cfg_members_;
  std::vector<std::unique_ptr<Member>> members_;  // row order
  bool text_stale_ = false;  // the rows changed since the text K/V were kept
  at::Tensor latents_;    // [n, padded S, C] in the run dtype, a row per member; this rank's ranges are current
  at::Tensor pooled_, sequence_, mask_, guidance_, cfg_scale_;  // the model batch's
  std::unique_ptr<models::JointAttention> attention_;
  PipeFusionAttention* pipefusion_attention_ = nullptr;  // == attention_ when PipeFusion
  std::unique_ptr<PipeFusionLink> link_;  // with PipeFusion only
  std::unique_ptr<StepCache> cache_;  // a closed run's; active() when a request caches
  at::Tensor cache_decisions_;        // stage 0: the step's agreed decisions, int32 [n]
};

}  // namespace ditserve::worker::pipelines
