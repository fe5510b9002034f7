#include "worker/pipelines/usp_joint_attention.h"

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "parallel/usp_attention.h"

namespace ditserve::worker::pipelines {

namespace {

// The key mask [B, S_local] for a batch of `batch` (undefined: no padding).
at::Tensor BatchMask(const at::Tensor& valid, int64_t batch) {
  return valid.defined() ? valid.unsqueeze(0).expand({batch, -1}).contiguous() : at::Tensor();
}

}  // namespace

UspJointAttention::UspJointAttention(parallel::Communicator& ulysses, parallel::Communicator& ring, bool text_sharded,
                                     at::Tensor image_valid, CommStats* stats)
    : ulysses_(ulysses), ring_(ring), text_sharded_(text_sharded), image_valid_(std::move(image_valid)),
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
  const int64_t B = image.q.size(0);
  const at::Tensor image_valid = BatchMask(image_valid_, B);
  if (text_sharded_) {
    // Attention does not care where a key sits: [text shard, image shard]
    // on every rank is a valid sequence shard of the joint sequence.
    const int64_t t = text.q.size(1);
    at::Tensor valid;
    if (image_valid.defined()) valid = at::cat({at::ones({B, t}, image_valid.options()), image_valid}, 1);
    auto joint = parallel::UspAttention(ulysses_, ring_, at::cat({text.q, image.q}, 1), at::cat({text.k, image.k}, 1),
                                        at::cat({text.v, image.v}, 1), valid, options);
    timer.AddBytes(usp.bytes_sent);
    timer.SetWaitSeconds(usp.wait_seconds);
    if (!joint.ok()) return joint.status();
    return models::JointAttentionOutputs{joint->narrow(1, 0, t), joint->narrow(1, t, image.q.size(1))};
  }
  auto out = parallel::JointUspAttention(ulysses_, ring_, text.q, text.k, text.v, image.q, image.k, image.v,
                                         image_valid, options);
  timer.AddBytes(usp.bytes_sent);
  timer.SetWaitSeconds(usp.wait_seconds);
  if (!out.ok()) return out.status();
  return models::JointAttentionOutputs{out->text, out->image};
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
