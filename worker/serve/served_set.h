#pragma once

// A serving gang's running set (step-level continuous batching): the
// SetDriver that feeds ParallelPipeline::RunSet from the control channel.
// At each step boundary rank 0 takes the frontend's cancels (stops) and
// the queued RunBatches that may join (every one without a step cache, in
// order), numbers the joining items, and broadcasts the boundary to the
// gang; it reports one Progress per set step and one Left per request when
// its last item leaves. Other ranks apply rank 0's boundaries.

#include <cstdint>
#include <map>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "ditserve/v1/control.pb.h"
#include "parallel/communicator.h"
#include "worker/pipelines/running_set.h"
#include "worker/serve/control_client.h"

namespace ditserve::worker::serve {

// Whether `batch` can run as (or join) a running set: none of its items
// uses a step cache.
bool JoinsSets(const control::v1::RunBatch& batch);

// Thread: the RunSet thread (SetDriver's contract). `client` is rank 0's
// (null elsewhere) and must outlive the set; so must `control`.
class ServedSet final : public pipelines::SetDriver {
 public:
  // `first`: the batch that starts the set (every rank has it; rank 0's
  // broadcast of the first boundary carries it again).
  ServedSet(control::v1::RunBatch first, ControlClient* client, parallel::Communicator& control, int world_size);

  absl::StatusOr<pipelines::SetBoundary> Boundary(int tick, const std::vector<uint64_t>& running) override;
  void OnStep(uint64_t id, int step, int total, int running) override;
  void OnLeft(uint64_t id, absl::StatusOr<pipelines::GenerationResult> result,
              const pipelines::SetMemberTimes& times) override;

 private:
  // Rank 0: one frontend request of the set and what has left of it.
  struct Request {
    int items = 0;
    int left = 0;
    int max_running = 0;
    control::v1::Left message;  // filled as its items leave
  };
  // Rank 0: adds `batch`'s items to `boundary` as joins; a request whose
  // item does not convert is answered at once.
  void AddJoins(const control::v1::RunBatch& batch, control::v1::SetBoundary& boundary);

  control::v1::RunBatch first_;
  bool first_taken_ = false;
  int max_running_images_ = 0;  // rank 0: the latest RunBatch's (0: no limit)
  ControlClient* client_;
  parallel::Communicator& control_;
  int world_size_;
  uint64_t next_member_ = 0;
  std::map<uint64_t, uint64_t> request_of_;  // rank 0: member id → request id
  std::map<uint64_t, Request> requests_;     // rank 0: by request id
  control::v1::Progress progress_;           // rank 0: the step being reported
  std::set<uint64_t> progress_requests_;     // rank 0: requests already in progress_
  int progress_calls_ = 0;
};

}  // namespace ditserve::worker::serve
