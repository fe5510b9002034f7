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
};

// What happens at one step boundary, in this order: `stops` leave
// unfinished, then `joins` join (and run their first step at once).
struct SetBoundary {
  std::vector<uint64_t> stops;
  std::vector<SetJoin> joins;
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
  // its members in join order). Must return the same on every rank (the
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
