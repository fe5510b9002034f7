#pragma once

// Step-level continuous batching: the interface between a running set of
// requests on the gang (ParallelPipeline::RunSet) and whoever feeds it —
// the serving loop (requests from the frontend), a generation job (a
// scripted schedule), a test. Requests join between steps, each keeps its
// own schedule, seed and guidance, and leaves when its last step ran or
// when it is stopped (docs/continuous-batching.md).

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/pipelines/generation_request.h"

namespace ditserve::worker::pipelines {

struct SetJoin {
  uint64_t id = 0;  // unique among the set's members, past and present
  GenerationRequest request;
  // Joins of one boundary with the same nonzero group (a request's images)
  // run their first step at the same boundary.
  uint64_t group = 0;
};

// What happens at one step boundary, in this order: `stops` leave
// unfinished (or, not yet admitted, are dropped), then `joins` join. Rank 0
// encodes a joiner's prompt on a thread of its own while the set steps
// (JoinEncoder); a joiner runs its first step at the first boundary after
// its encoding is done and there is room (`max_members`), in join order, a
// group together. With `wait_for_encoding` this boundary waits for every
// joiner's encoding, so the joins run their first step at once (a scripted
// schedule); a set without members waits for the joiners that fit (they
// start together).
struct SetBoundary {
  std::vector<uint64_t> stops;
  std::vector<SetJoin> joins;
  bool wait_for_encoding = true;
  // The most members the set runs at once (0: no limit); joiners beyond it
  // wait, encoded, until members leave. A set without members takes its
  // first group whatever its size.
  int max_members = 0;
};

// Rank 0's wall times of one member.
struct SetMemberTimes {
  double text_encoding_s = 0;  // its prompt's encoding (and broadcast)
  double denoising_s = 0;      // from its join to its last step
  double vae_s = 0;            // its decode
  int64_t vae_peak_activation_bytes = 0;  // rank 0's largest VAE activation in its decode
};

// Thread: every call comes from the thread running RunSet, on every rank.
class SetDriver {
 public:
  virtual ~SetDriver() = default;
  // Before each step of the set (`tick`: steps the set has run; `running`:
  // its members in join order, then the joiners not yet admitted). Must return the same on every rank (the
  // serving driver broadcasts rank 0's answer): the set stays identical
  // everywhere. Returning no joins while `running` is empty ends the set.
  // An error ends the set with that error (the gang is broken).
  virtual absl::StatusOr<SetBoundary> Boundary(int tick, const std::vector<uint64_t>& running) = 0;
  // Member `id` has run `step` of its `total` steps; `running`: the set's
  // size during that step.
  virtual void OnStep(uint64_t /*id*/, int /*step*/, int /*total*/, int /*running*/) {}
  // Member `id` left. On rank 0 `result` holds the image, latents and
  // steps (elsewhere an empty OK result); CANCELLED when it was stopped;
  // INVALID_ARGUMENT when its join was refused (an invalid request, or one
  // that cannot share the set: another size, text length or CFG use, a
  // step cache); another error when its prompt could not be encoded.
  virtual void OnLeft(uint64_t id, absl::StatusOr<GenerationResult> result, const SetMemberTimes& times) = 0;
};

}  // namespace ditserve::worker::pipelines
