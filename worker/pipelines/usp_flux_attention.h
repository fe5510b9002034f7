#pragma once

// Flux's joint attention across the sequence-parallel group (USP: Ulysses
// inside Ring, parallel/usp_attention.h). Each rank passes its shard of the
// image tokens and the full text; it gets its shard's image output and the
// full text output. Used when there is no PipeFusion.

#include <string>

#include "parallel/communicator.h"
#include "worker/models/flux/flux_attention.h"
#include "worker/pipelines/comm_stats.h"

namespace ditserve::worker::pipelines {

class UspFluxAttention final : public flux::FluxAttention {
 public:
  // The communicators and `stats` (may be null) must outlive this object.
  UspFluxAttention(parallel::Communicator& ulysses, parallel::Communicator& ring, CommStats* stats);
  absl::StatusOr<flux::FluxAttentionOutputs> Attend(int layer, const flux::FluxQkv& text,
                                                    const flux::FluxQkv& image) override;

 private:
  parallel::Communicator& ulysses_;
  parallel::Communicator& ring_;
  CommStats* stats_;
  std::string method_;
};

}  // namespace ditserve::worker::pipelines
