#pragma once

// The messages between the PipeFusion stages of one replica during one
// Generate call (docs/parallel-generation.md): per patch, the hidden states
// from stage s to s + 1 (with the text on patch 0 — for a cross-attention
// family at the first step only — and the long skips that cross the
// boundary) and the updated latents from the last stage back to
// stage 0; per cached step, the step cache's decisions from stage 0 to
// every later stage and its anchor change from stage 0 to the last stage
// (docs/step-caching.md).
//
// Sends are asynchronous: the link keeps up to kMaxInFlight of them in
// flight and waits for the oldest beyond that; Drain waits for them all
// (every run ends with Drain(0)). Receives block until the tensor is in.
// Bytes and waits count in `stats` under "pipefusion". Not thread-safe: one
// per replica run, used from the rank's one thread.

#include <cstddef>
#include <deque>
#include <memory>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "parallel/communicator.h"
#include "worker/models/common/dit_transformer.h"
#include "worker/pipelines/comm_stats.h"

namespace ditserve::worker::pipelines {

class PipeFusionLink {
 public:
  static constexpr size_t kMaxInFlight = 64;

  // `group` is the replica's PipeFusion group (rank = stage); it and
  // `stats` must outlive the link. Links on one group at once (an open
  // set's warmup and pipelined runs, replica_run.h) keep their messages
  // apart with different `patch_base`s (patch-indexed tags add it; the
  // patches and the base stay below 1024).
  PipeFusionLink(parallel::Communicator& group, int stage, int stages, CommStats* stats, int patch_base = 0)
      : group_(group), stage_(stage), stages_(stages), stats_(stats), patch_base_(patch_base) {}
  ~PipeFusionLink() = default;
  PipeFusionLink(const PipeFusionLink&) = delete;
  PipeFusionLink& operator=(const PipeFusionLink&) = delete;

  // To stage + 1: hidden.x, hidden.context when defined (the patch that
  // carries the text), and the long-skip activations hidden.skips holds
  // (each shaped as x), stacked into one message.
  absl::Status SendHidden(const models::DitHidden& hidden, int patch);
  // From stage − 1 into `hidden`, whose x (and context, when the patch
  // carries the text) the caller allocates with the shapes the sender
  // sends, and whose skips it sizes (their count; each is replaced by a
  // received view).
  absl::Status ReceiveHidden(models::DitHidden& hidden, int patch);
  // The last stage's updated latents of `patch`, to stage 0; and there.
  absl::Status SendLatents(const at::Tensor& part, int patch);
  absl::Status ReceiveLatents(at::Tensor& part, int patch);
  // A cached step's decisions, stage 0 to every later stage; and there.
  absl::Status SendDecisions(const at::Tensor& decisions);
  absl::Status ReceiveDecisions(at::Tensor& decisions);
  // A cached step's anchor change of `patch`, stage 0 to the last stage;
  // and there.
  absl::Status SendDelta(const at::Tensor& delta, int patch);
  absl::Status ReceiveDelta(at::Tensor& delta, int patch);

  // Waits until at most `keep` sends are in flight; the first failure.
  absl::Status Drain(size_t keep = 0);

 private:
  absl::Status Send(const at::Tensor& tensor, int to, int tag);
  absl::Status Receive(at::Tensor& tensor, int from, int tag);

  parallel::Communicator& group_;
  const int stage_, stages_;
  CommStats* stats_;
  const int patch_base_;
  std::deque<std::unique_ptr<parallel::PendingTransfer>> sends_;
};

}  // namespace ditserve::worker::pipelines
