#pragma once

// USP (unified sequence parallel) attention: Ulysses (all-to-all over heads)
// inside Ring (K/V blocks passed around, merged by log-sum-exp), on the
// groups WorldConfig defines. Every function here gives the serial result
// to float rounding.
//
// Sequence layout: the full sequence [B, S, H, D] is cut into SP = U·R
// equal contiguous shards; SP rank s = ulysses_rank + U·ring_rank holds
// shard s (ShardSequence pads S up to a multiple of SP and marks the padding
// invalid). Every rank of a group must make the same calls with equally
// shaped tensors; disagreement is an INVALID_ARGUMENT on every rank.

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "kernels/attention.h"
#include "parallel/communicator.h"

namespace ditserve::parallel {

// What this rank's calls communicated, accumulated over calls (for
// benchmarks and --comm_stats).
struct UspStats {
  int64_t bytes_sent = 0;
  // Wall seconds blocked on communication: waiting for point-to-point
  // transfers to complete and inside blocking collectives (all-to-all,
  // all-gather). The rest of a call's time is attention compute and
  // bookkeeping, so this is what the overlap did not hide.
  double wait_seconds = 0;
};

struct UspOptions {
  kernels::AttentionOptions attention;
  UspStats* stats = nullptr;  // not owned; may be null
  // Agree on the shard shapes across the group (one small all-gather per
  // call) before point-to-point transfers, which cannot check them. Callers
  // that agreed on every shape already (the generation pipeline, once per
  // request) turn it off.
  bool check_shapes = true;
};

// Ulysses over `ulysses` alone: q, k, v are local shards [B, S/U, H, D],
// key_valid (optional) [B, S/U]. Returns [B, S/U, H, D] in q's dtype.
// H must divide by the group size (checked before any communication).
// The all-to-alls are point-to-point transfers overlapped with attention
// blocks: each rank starts on its own shard's keys while the other shards'
// q/k/v for its heads arrive, and returns every shard's output as soon as
// it is complete (same bytes as xDiT's all-to-alls, same result).
absl::StatusOr<at::Tensor> UlyssesAttention(Communicator& ulysses, const at::Tensor& q,
                                            const at::Tensor& k, const at::Tensor& v,
                                            const at::Tensor& key_valid, const UspOptions& options);

// Ring over `ring` alone: q, k, v local shards [B, S/R, H, D]. K/V blocks
// travel around the ring with asynchronous send/recv overlapped with the
// block computation. `once_k`/`once_v` (optional, [B, T, H, D], always
// valid) are extra keys every rank attends exactly once, at the first step
// (xDiT's "front" joint strategy). Returns the float32 result with its lse.
absl::StatusOr<kernels::AttentionResult> RingAttention(Communicator& ring, const at::Tensor& q,
                                                       const at::Tensor& k, const at::Tensor& v,
                                                       const at::Tensor& key_valid,
                                                       const at::Tensor& once_k,
                                                       const at::Tensor& once_v,
                                                       const UspOptions& options);

// Ulysses inside Ring. Local shards [B, S/(U·R), H, D]; returns the same
// shape in q's dtype.
absl::StatusOr<at::Tensor> UspAttention(Communicator& ulysses, Communicator& ring,
                                        const at::Tensor& q, const at::Tensor& k,
                                        const at::Tensor& v, const at::Tensor& key_valid,
                                        const UspOptions& options);

// MMDiT joint attention (Flux, SD3): text tokens [B, T, H, D], given in full
// on every rank, attend together with the image tokens (local shards).
// Serial order is [text, image]. When T divides by U·R the text is sharded
// with the image; otherwise it is replicated and its keys are counted once.
// Returns the full text output and this rank's image output.
struct JointOutputs {
  at::Tensor text;   // [B, T, H, D]
  at::Tensor image;  // [B, S_local, H, D]
};
absl::StatusOr<JointOutputs> JointUspAttention(Communicator& ulysses, Communicator& ring,
                                               const at::Tensor& text_q, const at::Tensor& text_k,
                                               const at::Tensor& text_v, const at::Tensor& image_q,
                                               const at::Tensor& image_k, const at::Tensor& image_v,
                                               const at::Tensor& image_valid,
                                               const UspOptions& options);

// Shard `sp_rank` of `full` [B, S, ...] cut into `sp_size` equal pieces
// along dim 1 after zero-padding S to a multiple of sp_size; `valid` [B, len]
// marks the real tokens.
struct SequenceShard {
  at::Tensor local;
  at::Tensor valid;
};
SequenceShard ShardSequence(const at::Tensor& full, int sp_rank, int sp_size);

// Inverse of ShardSequence over the SP group (ulysses inside ring): gathers
// every rank's shard [B, L, ...] in SP order and drops the padding beyond
// `total_length`.
absl::StatusOr<at::Tensor> GatherSequence(Communicator& ulysses, Communicator& ring,
                                          const at::Tensor& local, int64_t total_length);

}  // namespace ditserve::parallel
