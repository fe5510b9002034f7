#include "worker/pipelines/usp_joint_attention.h"

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "parallel/usp_attention.h"

namespace ditserve::worker::pipelines {
namespace {

// The key mask [B, L] for a batch of `batch` (undefined: no padding).
at::Tensor BatchMask(const at::Tensor& valid, int64_t batch) {
  return valid.defined() ? valid.unsqueeze(0).expand({batch, -1}).contiguous() : at::Tensor();
}

}  // namespace

UspJointAttention::UspJointAttention(parallel::Communicator& ulysses, parallel::Communicator& ring,
                                     at::Tensor text_valid, at::Tensor image_valid, CommStats* stats)
    : ulysses_(ulysses), ring_(ring), text_valid_(std::move(text_valid)), image_valid_(std::move(image_valid)),
      stats_(stats) {
  method_ = ring.size() == 1 ? "ulysses" : ulysses.size() == 1 ? "ring" : "usp";
}

absl::StatusOr<models::JointAttentionOutputs> UspJointAttention::Attend(int /*layer*/, const models::Qkv& text,
                                                                        const models::Qkv& image) {
  if (!text.q.defined()) {
    return absl::InternalError("USP attention: every call carries the text (no PipeFusion patches)");
  }
  parallel::UspStats usp;
  parallel::UspOptions options;
  options.stats = &usp;
  // The pipeline agreed on every shape once for the call (GangModel::AgreeOnCall).
  options.check_shapes = false;
  CommTimer timer(stats_, method_);
  const int64_t B = image.q.size(0), t = text.q.size(1);
  at::Tensor valid;
  if (image_valid_.defined()) valid = BatchMask(at::cat({text_valid_, image_valid_}, 0), B);
  auto joint = parallel::UspAttention(ulysses_, ring_, at::cat({text.q, image.q}, 1), at::cat({text.k, image.k}, 1),
                                      at::cat({text.v, image.v}, 1), valid, options);
  timer.AddBytes(usp.bytes_sent);
  timer.SetWaitSeconds(usp.wait_seconds);
  if (!joint.ok()) return joint.status();
  return models::JointAttentionOutputs{joint->narrow(1, 0, t), joint->narrow(1, t, image.q.size(1))};
}

absl::StatusOr<at::Tensor> UspJointAttention::AttendImage(int /*layer*/, const models::Qkv& image) {
  parallel::UspStats usp;
  parallel::UspOptions options;
  options.stats = &usp;
  options.check_shapes = false;
  CommTimer timer(stats_, method_);
  auto out = parallel::UspAttention(ulysses_, ring_, image.q, image.k, image.v, BatchMask(image_valid_, image.q.size(0)),
                                    options);
  timer.AddBytes(usp.bytes_sent);
  timer.SetWaitSeconds(usp.wait_seconds);
  return out;
}

}  // namespace ditserve::worker::pipelines
