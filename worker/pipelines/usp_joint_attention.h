#pragma once

// MMDiT joint attention (and image self-attention) across the sequence-
// parallel group (USP: Ulysses inside Ring, parallel/usp_attention.h). Used
// when there is no PipeFusion. Each rank passes its shard of the image
// tokens and its equal shard of the text (xDiT's split of the text
// embeddings over SP: every per-token layer of the text stream is split
// too, not repeated on every rank); attention does not care where a key
// sits, so [text shard, image shard] on every rank is a valid sequence
// shard of the joint sequence.
//
// Padding: `text_valid` [T_local] and `image_valid` [S_local] (bool) mark
// this rank's tokens that are not SP padding (generation_plan.h); the
// others are masked out of the keys. Both are given on every rank of the SP
// group, or neither anywhere (nothing padded).

#include <string>

#include <ATen/core/Tensor.h>

#include "parallel/communicator.h"
#include "worker/models/common/joint_attention.h"
#include "worker/pipelines/comm_stats.h"

namespace ditserve::worker::pipelines {

class UspJointAttention final : public models::JointAttention {
 public:
  // The communicators and `stats` (may be null) must outlive this object.
  UspJointAttention(parallel::Communicator& ulysses, parallel::Communicator& ring, at::Tensor text_valid,
                    at::Tensor image_valid, CommStats* stats);
  absl::StatusOr<models::JointAttentionOutputs> Attend(int layer, const models::Qkv& text,
                                                      const models::Qkv& image) override;
  // The image shards alone (no text): USP over the sequence-parallel group.
  absl::StatusOr<at::Tensor> AttendImage(int layer, const models::Qkv& image) override;

 private:
  parallel::Communicator& ulysses_;
  parallel::Communicator& ring_;
  at::Tensor text_valid_, image_valid_;
  CommStats* stats_;
  std::string method_;
};

}  // namespace ditserve::worker::pipelines
