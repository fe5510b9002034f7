#pragma once

// MMDiT joint attention (and image self-attention) across the sequence-parallel group (USP: Ulysses
// inside Ring, parallel/usp_attention.h). Used when there is no PipeFusion.
// Each rank passes its shard of the image tokens and either the full text
// (it gets the full text output) or, with `text_sharded`, its own equal
// shard of the text (xDiT's split of the text embeddings over SP: every
// per-token layer of the text stream is then split too, not repeated on
// every rank). `image_valid` (bool [S_local]) marks this rank's image
// tokens that are not SP padding: the others are masked out of the keys.
// Every rank of the SP group passes one, or none does (no padding).

#include <string>

#include <ATen/core/Tensor.h>

#include "parallel/communicator.h"
#include "worker/models/common/joint_attention.h"
#include "worker/pipelines/comm_stats.h"

namespace ditserve::worker::pipelines {

class UspJointAttention final : public models::JointAttention {
 public:
  // The communicators and `stats` (may be null) must outlive this object.
  UspJointAttention(parallel::Communicator& ulysses, parallel::Communicator& ring, bool text_sharded,
                    at::Tensor image_valid, CommStats* stats);
  absl::StatusOr<models::JointAttentionOutputs> Attend(int layer, const models::Qkv& text,
                                                      const models::Qkv& image) override;
  // The image shards alone (no text): USP over the sequence-parallel group.
  absl::StatusOr<at::Tensor> AttendImage(int layer, const models::Qkv& image) override;

 private:
  parallel::Communicator& ulysses_;
  parallel::Communicator& ring_;
  bool text_sharded_;
  at::Tensor image_valid_;
  CommStats* stats_;
  std::string method_;
};

}  // namespace ditserve::worker::pipelines
