// GangModel::RunSet: the loop of an open running set (running_set.h). Per
// step boundary, on every rank in the same order: the driver's stops
// leave; its joins are checked, encoded on rank 0 and broadcast, and
// assigned to the data-parallel replica with the fewest members; every
// replica runs one step of its members; members whose last step ran are
// gathered to rank 0, decoded and reported.

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>

#include "absl/strings/str_cat.h"
#include "util/status_macros.h"
#include "worker/pipelines/gang_model.h"
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

}  // namespace

absl::Status GangModel::CheckJoinable(const GenerationRequest& r, const GenerationRequest* set_shape) const {
  DITSERVE_RETURN_IF_ERROR(Validate(r));
  if (stages() > 1) {
    return absl::FailedPreconditionError("a running set cannot take joins with PipeFusion (--pipefusion_parallel_degree > 1)");
  }
  if (r.cache.method != core::StepCacheMethod::kNone) {
    return absl::InvalidArgumentError("step_cache: a request with a step cache runs in a batch of its own, not in a running set");
  }
  if (set_shape == nullptr) return absl::OkStatus();
  const core::ImageSize a = core::GenerationSize(geometry(), r.height, r.width);
  const core::ImageSize b = core::GenerationSize(geometry(), set_shape->height, set_shape->width);
  const core::ResolvedGuidance ga = Guidance(r), gb = Guidance(*set_shape);
  if (a.height != b.height || a.width != b.width || MaxSequenceLength(r) != MaxSequenceLength(*set_shape) ||
      ga.cfg != gb.cfg || ga.embedded != gb.embedded) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the request cannot join the running set: it needs the set's height and width (", b.height, "x", b.width,
        ", got ", a.height, "x", a.width, "), max_sequence_length (", MaxSequenceLength(*set_shape), ", got ",
        MaxSequenceLength(r), ") and CFG use (", gb.cfg ? "on" : "off", ", got ", ga.cfg ? "on" : "off", ")"));
  }
  return absl::OkStatus();
}

absl::Status GangModel::RunSet(SetDriver& driver) {
  at::NoGradGuard no_grad;
  const int replicas = config().data_parallel_degree;
  const int my_replica = world().rank_in(Dim::kData);
  const auto output_rank = [&](int d) { return world().GlobalRank(d, 0, stages() - 1, 0, 0); };
  const bool leader = world().rank() == 0;
  std::optional<ReplicaRun> run;
  std::optional<GenerationRequest> shape;  // the set's first member's (generation size)
  int64_t T = 0;
  std::vector<uint64_t> order;  // members in join order
  std::map<uint64_t, Tracked> tracked;
  std::vector<int> load(replicas, 0);
  const auto leave = [&](uint64_t id) {
    const Tracked& t = tracked.at(id);
    --load[t.replica];
    if (t.replica == my_replica) run->Remove(id);
    order.erase(std::find(order.begin(), order.end(), id));
    tracked.erase(id);
  };
  for (int tick = 0;; ++tick) {
    auto boundary = driver.Boundary(tick, order);
    if (!boundary.ok()) return boundary.status();
    for (uint64_t id : boundary->stops) {
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
    // The joins this boundary admits: valid, and compatible with the set
    // (or with the first of them when the set is empty).
    std::vector<SetJoin> joins;
    for (SetJoin& j : boundary->joins) {
      const GenerationRequest* set_shape = !order.empty() ? &*shape : (joins.empty() ? nullptr : &joins.front().request);
      absl::Status ok = tracked.count(j.id) ? absl::InvalidArgumentError(absl::StrCat("member id ", j.id, " is already in the set"))
                                            : CheckJoinable(j.request, set_shape);
      if (!ok.ok()) {
        driver.OnLeft(j.id, ok, {});
        continue;
      }
      joins.push_back(std::move(j));
    }
    if (order.empty() && joins.empty()) {
      if (boundary->joins.empty()) return absl::OkStatus();  // drained
      continue;  // every join was refused; ask again
    }
    if (!joins.empty()) {
      const Clock::time_point start = Clock::now();
      std::vector<GenerationRequest> requests;
      for (const SetJoin& j : joins) {
        GenerationRequest r = j.request;
        const core::ImageSize size = core::GenerationSize(geometry(), r.height, r.width);
        r.height = size.height;
        r.width = size.width;
        requests.push_back(std::move(r));
      }
      if (order.empty()) {
        // A new set: its shape and text length, agreed by the gang.
        shape = requests.front();
        auto tokens = AgreeOnTextTokens(*shape);
        if (!tokens.ok()) return tokens.status();
        T = *tokens;
        run.reset();
        run.emplace(*this, *shape, T);
      }
      const int64_t n = static_cast<int64_t>(requests.size());
      const bool cfg = Guidance(*shape).cfg;
      const int64_t rows = cfg ? 2 * n : n;
      DITSERVE_RETURN_IF_ERROR(AgreeOnCall(rows, T, *shape));
      at::Tensor pooled, sequence, mask;
      const absl::Status encoded = EncodePrompts(requests, rows, T, pooled, sequence, mask);
      const double encode_s = Seconds(Clock::now() - start);
      for (int64_t i = 0; i < n; ++i) {
        const uint64_t id = joins[i].id;
        if (!encoded.ok()) {
          driver.OnLeft(id, encoded, {});
          continue;
        }
        const int replica = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
        ++load[replica];
        Tracked t;
        t.request = requests[i];
        t.out_height = joins[i].request.height;
        t.out_width = joins[i].request.width;
        t.replica = replica;
        t.joined = Clock::now();
        t.text_encoding_s = encode_s;
        tracked.emplace(id, std::move(t));
        order.push_back(id);
        if (replica == my_replica) run->Admit(id, requests[i], pooled, sequence, mask, i, n);
      }
      if (order.empty()) continue;
    }
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
