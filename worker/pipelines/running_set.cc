// GangModel::RunSet: the loop of an open running set (running_set.h). Per
// step boundary, on every rank in the same order: the driver's stops
// leave; its joins are checked and queued for rank 0's encoder thread;
// the joiners whose encoding is done (as rank 0 says) are broadcast and
// assigned to the data-parallel replica with the fewest members; every
// replica runs one step of its members; members whose last step ran are
// gathered to rank 0, decoded and reported.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "util/status_macros.h"
#include "worker/pipelines/gang_model.h"
#include "worker/pipelines/join_encoder.h"
#include "worker/pipelines/replica_run.h"
#include "worker/pipelines/running_set.h"

namespace ditserve::worker::pipelines {
namespace {

using parallel::Dim;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Message tag on the world group: + replica, a leaver's final latents to
// rank 0 (parallel_pipeline.cc's tags are 3 << 10 and 4 << 10).
constexpr int kTagSetResult = 5 << 10;

// What the gang tracks of a member on every rank.
struct Tracked {
  GenerationRequest request;  // at its generation size
  int out_height = 0, out_width = 0;  // the request's size (PixArt's bins resize back)
  int replica = 0;
  int step = 0;
  Clock::time_point joined;
  double text_encoding_s = 0;
};

// A join accepted into the set, waiting for rank 0 to encode its prompt.
struct Pending {
  SetJoin join;
  GenerationRequest at_size;  // the request at its generation size
};

// One replica's members of the set. Without PipeFusion one open run holds
// them. With it, a member runs its first warmup_steps steps (those its own
// run takes whole, synchronously through the stages) in a warmup run and
// then moves, with its stale K/V, to the pipelined run (PipeFusion's
// patches): each member runs the steps it runs alone, and the two runs
// step one after the other in every tick. Every rank of the replica holds
// the same members in the same runs; collective as ReplicaRun says.
class ReplicaSet {
 public:
  ReplicaSet(GangModel& p, const GenerationRequest& shape, int64_t text_tokens) : p_(p) {
    if (p.stages() == 1) {
      pipelined_ = std::make_unique<ReplicaRun>(p, shape, text_tokens);
      return;
    }
    pipelined_ = std::make_unique<ReplicaRun>(p, shape, text_tokens, ReplicaRun::Layout::kPipelined);
    if (p.pipefusion.warmup_steps > 0) {
      warmup_ = std::make_unique<ReplicaRun>(p, shape, text_tokens, ReplicaRun::Layout::kWhole);
    }
  }

  void Admit(uint64_t id, const GenerationRequest& request, const at::Tensor& pooled, const at::Tensor& sequence,
             const at::Tensor& mask, int64_t index, int64_t prompts) {
    ReplicaRun& run = warmup_ ? *warmup_ : *pipelined_;
    run.Admit(id, request, pooled, sequence, mask, index, prompts);
  }
  void Remove(uint64_t id) { RunOf(id).Remove(id); }

  // One step of every member; then the members whose warmup ended (and
  // that have steps left) move to the pipelined run.
  absl::Status Tick() {
    DITSERVE_RETURN_IF_ERROR(pipelined_->Tick());
    if (!warmup_) return absl::OkStatus();
    DITSERVE_RETURN_IF_ERROR(warmup_->Tick());
    for (uint64_t id : warmup_->members()) {
      const int step = warmup_->step_of(id);
      if (step >= p_.pipefusion.warmup_steps && step < warmup_->steps_of(id)) {
        DITSERVE_RETURN_IF_ERROR(warmup_->MoveTo(id, *pipelined_));
      }
    }
    return absl::OkStatus();
  }
  absl::Status CompleteLatents() {
    DITSERVE_RETURN_IF_ERROR(pipelined_->CompleteLatents());
    return warmup_ ? warmup_->CompleteLatents() : absl::OkStatus();
  }
  at::Tensor member_latents(uint64_t id) { return RunOf(id).member_latents(id); }

 private:
  ReplicaRun& RunOf(uint64_t id) {
    if (warmup_) {
      const std::vector<uint64_t> ids = warmup_->members();
      if (std::find(ids.begin(), ids.end(), id) != ids.end()) return *warmup_;
    }
    return *pipelined_;
  }

  GangModel& p_;
  std::unique_ptr<ReplicaRun> pipelined_;
  std::unique_ptr<ReplicaRun> warmup_;  // with PipeFusion and warmup steps
};

}  // namespace

absl::Status GangModel::CheckJoinable(const GenerationRequest& r, const GenerationRequest* set_shape) const {
  DITSERVE_RETURN_IF_ERROR(Validate(r));
  if (r.cache.method != core::StepCacheMethod::kNone) {
    return absl::InvalidArgumentError("step_cache: a request with a step cache runs in a batch of its own, not in a running set");
  }
  if (set_shape == nullptr) return absl::OkStatus();
  const core::ImageSize a = core::GenerationSize(geometry(), r.height, r.width);
  const core::ImageSize b = core::GenerationSize(geometry(), set_shape->height, set_shape->width);
  // CFG on and off share a step (a member has one row or two); the
  // embedded guidance is the model's, the same for every request.
  if (a.height != b.height || a.width != b.width || MaxSequenceLength(r) != MaxSequenceLength(*set_shape)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the request cannot join the running set: it needs the set's height and width (", b.height, "x", b.width,
        ", got ", a.height, "x", a.width, ") and max_sequence_length (", MaxSequenceLength(*set_shape), ", got ",
        MaxSequenceLength(r), ")"));
  }
  return absl::OkStatus();
}

absl::Status GangModel::RunSet(SetDriver& driver) {
  at::NoGradGuard no_grad;
  const int replicas = config().data_parallel_degree;
  const int my_replica = world().rank_in(Dim::kData);
  const auto output_rank = [&](int d) { return world().GlobalRank(d, 0, stages() - 1, 0, 0); };
  const bool leader = world().rank() == 0;
  std::optional<ReplicaSet> run;
  // The set's shape (its first joiner's, at the generation size) and text
  // length, while the set has members or joiners.
  std::optional<GenerationRequest> shape;
  int64_t T = 0;
  std::vector<uint64_t> order;  // members in join order
  std::map<uint64_t, Tracked> tracked;
  std::deque<Pending> pending;  // accepted joiners not yet admitted, in join order
  std::vector<int> load(replicas, 0);
  // Rank 0 encodes joiners on a thread of its own; destroying it (when the
  // set ends, on any path) finishes the encoding in progress.
  std::optional<JoinEncoder> encoder;
  if (leader) encoder.emplace(*text, device, at::get_num_threads());
  const auto leave = [&](uint64_t id) {
    const Tracked& t = tracked.at(id);
    --load[t.replica];
    if (t.replica == my_replica) run->Remove(id);
    order.erase(std::find(order.begin(), order.end(), id));
    tracked.erase(id);
  };
  const auto find_pending = [&](uint64_t id) {
    return std::find_if(pending.begin(), pending.end(), [&](const Pending& p) { return p.join.id == id; });
  };
  for (int tick = 0;; ++tick) {
    std::vector<uint64_t> in_set = order;
    for (const Pending& p : pending) in_set.push_back(p.join.id);
    auto boundary = driver.Boundary(tick, in_set);
    if (!boundary.ok()) return boundary.status();
    for (uint64_t id : boundary->stops) {
      if (auto waiting = find_pending(id); waiting != pending.end()) {
        pending.erase(waiting);
        if (encoder) encoder->Drop(id);
        driver.OnLeft(id, absl::CancelledError("stopped before its first step"), {});
        continue;
      }
      auto it = tracked.find(id);
      if (it == tracked.end()) continue;
      const std::string why = absl::StrCat("stopped after step ", it->second.step, " of ",
                                           it->second.request.num_inference_steps);
      SetMemberTimes times;
      times.text_encoding_s = it->second.text_encoding_s;
      times.denoising_s = Seconds(Clock::now() - it->second.joined);
      leave(id);
      driver.OnLeft(id, absl::CancelledError(why), times);
    }
    // Accept the joins that are valid and compatible with the set (or, for
    // an empty set, with the first of them); rank 0 starts encoding each.
    for (SetJoin& j : boundary->joins) {
      const bool open = !order.empty() || !pending.empty();
      const absl::Status ok =
          tracked.count(j.id) > 0 || find_pending(j.id) != pending.end()
              ? absl::InvalidArgumentError(absl::StrCat("member id ", j.id, " is already in the set"))
              : CheckJoinable(j.request, open ? &*shape : nullptr);
      if (!ok.ok()) {
        driver.OnLeft(j.id, ok, {});
        continue;
      }
      Pending p;
      p.at_size = j.request;
      const core::ImageSize size = core::GenerationSize(geometry(), j.request.height, j.request.width);
      p.at_size.height = size.height;
      p.at_size.width = size.width;
      if (!open) {
        // A new set: its shape and text length, agreed by the gang.
        shape = p.at_size;
        auto tokens = AgreeOnTextTokens(*shape);
        if (!tokens.ok()) return tokens.status();
        T = *tokens;
      }
      if (encoder) {
        std::vector<std::string> texts = {j.request.prompt};
        if (Guidance(j.request).cfg) texts.push_back(j.request.negative_prompt);
        encoder->Submit(j.id, std::move(texts), MaxSequenceLength(j.request));
      }
      p.join = std::move(j);
      pending.push_back(std::move(p));
    }
    if (order.empty() && pending.empty()) {
      if (boundary->joins.empty()) return absl::OkStatus();  // drained
      continue;  // every join was refused; ask again
    }
    if (!pending.empty()) {
      // Rank 0 takes the first joiners that fit the set and whose encoding
      // is done (waiting as the boundary asks, and when the set has no
      // members) and tells the gang: [how many, then 1 for each that
      // failed].
      at::Tensor taken = at::zeros({1 + static_cast<int64_t>(pending.size())}, at::kLong);
      std::vector<EncodedJoin> encoded;
      if (leader) {
        auto flags = taken.accessor<int64_t, 1>();
        const bool wait = boundary->wait_for_encoding || order.empty();
        // Whole groups from the front while they fit and are encoded.
        size_t ready = 0;
        int64_t members = static_cast<int64_t>(order.size());
        while (ready < pending.size()) {
          size_t end = ready + 1;
          while (end < pending.size() && pending[end].join.group != 0 &&
                 pending[end].join.group == pending[ready].join.group) {
            ++end;
          }
          const int64_t size = static_cast<int64_t>(end - ready);
          if (boundary->max_members > 0 && members > 0 && members + size > boundary->max_members) break;
          bool encoded_all = true;
          for (size_t i = ready; i < end && !wait; ++i) encoded_all = encoded_all && encoder->Ready(pending[i].join.id);
          if (!encoded_all) break;
          members += size;
          ready = end;
        }
        for (size_t i = 0; i < ready; ++i) {
          encoded.push_back(encoder->Take(pending[i].join.id));
          flags[static_cast<int64_t>(i) + 1] = encoded.back().status.ok() ? 0 : 1;
        }
        flags[0] = static_cast<int64_t>(ready);
      }
      if (world().world_size() > 1) DITSERVE_RETURN_IF_ERROR(groups->control().Broadcast(taken, 0));
      const auto flags = taken.accessor<int64_t, 1>();
      std::vector<Pending> admitted;
      std::vector<const EncodedJoin*> admitted_texts;  // rank 0's
      for (int64_t i = 0; i < flags[0]; ++i) {
        Pending p = std::move(pending.front());
        pending.pop_front();
        if (flags[1 + i] != 0) {
          driver.OnLeft(p.join.id,
                        leader ? encoded[i].status : absl::InternalError("rank 0 could not encode the prompt"), {});
          continue;
        }
        admitted.push_back(std::move(p));
        if (leader) admitted_texts.push_back(&encoded[i]);
      }
      if (!admitted.empty()) {
        if (order.empty()) {
          run.reset();
          run.emplace(*this, *shape, T);
        }
        // EncodePrompts' layout: every joiner's cond row, then (when one
        // uses CFG) an uncond row each, left zero for those without CFG.
        const int64_t n = static_cast<int64_t>(admitted.size());
        const bool cfg = std::any_of(admitted.begin(), admitted.end(),
                                     [&](const Pending& p) { return Guidance(p.join.request).cfg; });
        const int64_t rows = cfg ? 2 * n : n;
        DITSERVE_RETURN_IF_ERROR(AgreeOnCall(rows, T, *shape));
        at::Tensor pooled, sequence, mask;
        AllocateEmbeddings(rows, T, pooled, sequence, mask);
        for (int64_t i = 0; leader && i < n; ++i) {
          const std::vector<families::TextEmbeddings>& texts = admitted_texts[i]->texts;
          PlaceEmbeddings(texts[0], i, pooled, sequence, mask);
          if (texts.size() > 1) PlaceEmbeddings(texts[1], n + i, pooled, sequence, mask);
        }
        DITSERVE_RETURN_IF_ERROR(BroadcastEmbeddings(pooled, sequence, mask));
        for (int64_t i = 0; i < n; ++i) {
          const uint64_t id = admitted[i].join.id;
          const int replica = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
          ++load[replica];
          Tracked t;
          t.request = admitted[i].at_size;
          t.out_height = admitted[i].join.request.height;
          t.out_width = admitted[i].join.request.width;
          t.replica = replica;
          t.joined = Clock::now();
          t.text_encoding_s = leader ? admitted_texts[i]->seconds : 0;
          if (replica == my_replica) run->Admit(id, t.request, pooled, sequence, mask, i, n);
          tracked.emplace(id, std::move(t));
          order.push_back(id);
        }
      }
    }
    if (order.empty()) continue;
    DITSERVE_RETURN_IF_ERROR(run->Tick());
    std::vector<uint64_t> finished;
    bool mine_finished = false;
    const int running = static_cast<int>(order.size());
    for (uint64_t id : order) {
      Tracked& t = tracked.at(id);
      ++t.step;
      driver.OnStep(id, t.step, t.request.num_inference_steps, running);
      if (t.step == t.request.num_inference_steps) {
        finished.push_back(id);
        mine_finished = mine_finished || t.replica == my_replica;
      }
    }
    if (finished.empty()) continue;
    if (mine_finished) DITSERVE_RETURN_IF_ERROR(run->CompleteLatents());
    auto& all = groups->group(Dim::kWorld);
    const int vae_scale = vae_config().scale_factor();
    for (uint64_t id : finished) {
      const Tracked& t = tracked.at(id);
      const int64_t h = 2 * (t.request.height / (vae_scale * 2)), w = 2 * (t.request.width / (vae_scale * 2));
      const Clock::time_point denoised = Clock::now();
      at::Tensor latents;
      const int source = output_rank(t.replica);
      if (t.replica == my_replica && world().rank() == source) latents = run->member_latents(id).contiguous();
      if (source != 0) {
        if (world().rank() == source) {
          CommTimer timer(&stats, "data");
          timer.AddBytes(static_cast<int64_t>(latents.nbytes()));
          auto send = all.Send(latents, 0, kTagSetResult + t.replica);
          if (!send.ok()) return send.status();
          DITSERVE_RETURN_IF_ERROR((*send)->Wait());
        } else if (leader) {
          latents = at::empty({1, h * w / 4, family->latent_channels() * 4},
                              at::TensorOptions().dtype(dtype).device(device));
          auto recv = all.Recv(latents, source, kTagSetResult + t.replica);
          if (!recv.ok()) return recv.status();
          DITSERVE_RETURN_IF_ERROR((*recv)->Wait());
        }
      }
      const Clock::time_point vae_start = Clock::now();
      std::vector<at::Tensor> final_latents;
      if (leader) final_latents.push_back(latents);
      auto images = DecodeImages(final_latents, 1, h, w, t.out_height, t.out_width);
      if (!images.ok()) return images.status();
      SetMemberTimes times;
      times.text_encoding_s = t.text_encoding_s;
      times.denoising_s = Seconds(denoised - t.joined);
      times.vae_s = Seconds(Clock::now() - vae_start);
      times.vae_peak_activation_bytes = timings.vae_peak_activation_bytes;
      GenerationResult result;
      if (leader) {
        result.image = (*images)[0];
        result.latents = latents.to(at::kFloat).cpu();
        result.step_computed.assign(t.request.num_inference_steps, true);
      }
      leave(id);
      driver.OnLeft(id, std::move(result), times);
    }
  }
}

}  // namespace ditserve::worker::pipelines
