#include "worker/pipelines/pipefusion_link.h"

#include <ATen/ATen.h>

#include <vector>

#include "util/status_macros.h"

namespace ditserve::worker::pipelines {
namespace {

// Message tags; patch-indexed messages add the patch (< 1024).
constexpr int kTagImage = 0;
constexpr int kTagText = 1 << 10;
constexpr int kTagLatents = 2 << 10;
constexpr int kTagDecision = 5 << 10;
constexpr int kTagDelta = 6 << 10;
// A patch's long skips (HunyuanDiT), stacked into one message.
constexpr int kTagSkips = 8 << 10;

}  // namespace

absl::Status PipeFusionLink::Send(const at::Tensor& tensor, int to, int tag) {
  const at::Tensor contiguous = tensor.contiguous();
  auto transfer = group_.Send(contiguous, to, tag);
  if (!transfer.ok()) return transfer.status();
  stats_->Add("pipefusion", static_cast<int64_t>(contiguous.nbytes()), 0);
  sends_.push_back(*std::move(transfer));
  return Drain(kMaxInFlight);
}

absl::Status PipeFusionLink::Receive(at::Tensor& tensor, int from, int tag) {
  CommTimer timer(stats_, "pipefusion");
  auto transfer = group_.Recv(tensor, from, tag);
  if (!transfer.ok()) return transfer.status();
  return (*transfer)->Wait();
}

absl::Status PipeFusionLink::SendHidden(const models::DitHidden& hidden, int patch) {
  DITSERVE_RETURN_IF_ERROR(Send(hidden.x, stage_ + 1, kTagImage + patch_base_ + patch));
  if (hidden.context.defined()) DITSERVE_RETURN_IF_ERROR(Send(hidden.context, stage_ + 1, kTagText + patch_base_ + patch));
  if (!hidden.skips.empty()) DITSERVE_RETURN_IF_ERROR(Send(at::stack(hidden.skips), stage_ + 1, kTagSkips + patch_base_ + patch));
  return absl::OkStatus();
}

absl::Status PipeFusionLink::ReceiveHidden(models::DitHidden& hidden, int patch) {
  // Both receives are posted before either is waited for.
  CommTimer timer(stats_, "pipefusion");
  auto image = group_.Recv(hidden.x, stage_ - 1, kTagImage + patch_base_ + patch);
  if (!image.ok()) return image.status();
  std::unique_ptr<parallel::PendingTransfer> text;
  if (hidden.context.defined()) {
    auto t = group_.Recv(hidden.context, stage_ - 1, kTagText + patch_base_ + patch);
    if (!t.ok()) return t.status();
    text = *std::move(t);
  }
  // The skips arrive as one [k, B, S, hidden] tensor, then split.
  at::Tensor stacked;
  std::unique_ptr<parallel::PendingTransfer> skips;
  if (!hidden.skips.empty()) {
    stacked = at::empty({static_cast<int64_t>(hidden.skips.size()), hidden.x.size(0), hidden.x.size(1),
                         hidden.x.size(2)},
                        hidden.x.options());
    auto t = group_.Recv(stacked, stage_ - 1, kTagSkips + patch_base_ + patch);
    if (!t.ok()) return t.status();
    skips = *std::move(t);
  }
  DITSERVE_RETURN_IF_ERROR((*image)->Wait());
  if (text) DITSERVE_RETURN_IF_ERROR(text->Wait());
  if (skips) {
    DITSERVE_RETURN_IF_ERROR(skips->Wait());
    hidden.skips = stacked.unbind(0);
  }
  return absl::OkStatus();
}

absl::Status PipeFusionLink::SendLatents(const at::Tensor& part, int patch) {
  return Send(part, 0, kTagLatents + patch_base_ + patch);
}

absl::Status PipeFusionLink::ReceiveLatents(at::Tensor& part, int patch) {
  return Receive(part, stages_ - 1, kTagLatents + patch_base_ + patch);
}

absl::Status PipeFusionLink::SendDecisions(const at::Tensor& decisions) {
  for (int s = 1; s < stages_; ++s) DITSERVE_RETURN_IF_ERROR(Send(decisions, s, kTagDecision));
  return absl::OkStatus();
}

absl::Status PipeFusionLink::ReceiveDecisions(at::Tensor& decisions) { return Receive(decisions, 0, kTagDecision); }

absl::Status PipeFusionLink::SendDelta(const at::Tensor& delta, int patch) {
  return Send(delta, stages_ - 1, kTagDelta + patch_base_ + patch);
}

absl::Status PipeFusionLink::ReceiveDelta(at::Tensor& delta, int patch) { return Receive(delta, 0, kTagDelta + patch_base_ + patch); }

absl::Status PipeFusionLink::Drain(size_t keep) {
  while (sends_.size() > keep) {
    CommTimer timer(stats_, "pipefusion");
    absl::Status s = sends_.front()->Wait();
    sends_.pop_front();
    DITSERVE_RETURN_IF_ERROR(s);
  }
  return absl::OkStatus();
}

}  // namespace ditserve::worker::pipelines
