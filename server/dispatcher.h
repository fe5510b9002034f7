#pragma once

// The frontend's core: admission (validation, the bounded priority queue),
// batching, dispatch of one batch at a time to the gang, deadlines and
// cancels, results (encoded on a WorkPool) and the request lifecycle:
//
//   Submit ──► kQueued ──► kRunning ──► kEncoding ──► finished (OK)
//                 │            │             │
//                 └────────────┴─────────────┴──► finished (error)
//
// Every accepted request gets exactly one ResponseSink::Finish: OK with its
// images, or CANCELLED / DEADLINE_EXCEEDED (client), UNAVAILABLE (gang
// failure, drain timeout, shutdown), INVALID_ARGUMENT (the gang rejected
// it). A cancel or deadline of a running request answers it at once and
// asks the gang to stop; the gang stops after the current step when no
// request of its batch is still wanted.
//
// Thread-safety: every public method may be called from any thread. One
// internal thread dispatches batches and expires deadlines. Sinks are
// called without the dispatcher's lock held.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "ditserve/v1/control.pb.h"
#include "ditserve/v1/generation.pb.h"
#include "server/admission_queue.h"
#include "server/gang_events.h"
#include "server/metrics.h"
#include "server/request.h"
#include "server/response_sink.h"
#include "server/server_options.h"
#include "server/work_pool.h"

namespace ditserve::server {

struct DispatcherOptions {
  Limits limits;
  int max_queue_size = 64;
  int max_batch_size = 4;
  int encode_threads = 2;
  int png_compression_level = 1;
  // A running batch that reports no step for this long means a hung gang.
  absl::Duration step_timeout = absl::Seconds(300);
  // Per named caller (a bearer token's name; unnamed callers are not
  // limited): requests accepted and not finished, and requests waiting in
  // the queue. 0: no limit.
  int max_requests_per_caller = 0;
  int max_queued_per_caller = 0;
  // Step-level continuous batching (a gang whose Hello accepts joins):
  // "step" sends compatible queued requests to the running set between its
  // steps, up to max_running_images images in the set; "batch" sends the
  // next batch only when the gang is idle (today's batching). A queued
  // request that cannot share the set (another size, max_sequence_length,
  // CFG use, or a step cache) and has waited max_join_wait stops the joins,
  // so the set drains and it runs next.
  std::string join_policy = "step";
  int max_running_images = 8;
  // Images sent beyond max_running_images while the set runs: the gang
  // holds them, encoded, and admits them as members leave (RunBatch.
  // max_running_images), so a freed slot does not wait for a round trip.
  int join_lookahead_images = 0;
  absl::Duration max_join_wait = absl::Seconds(5);
};

class Dispatcher final : public GangEvents {
 public:
  // `metrics` must outlive the dispatcher. `on_serving(bool)` is called
  // (without locks held) whenever readiness changes: serving = a gang is
  // attached and the server is not draining.
  // `on_hung(why)` is called (without locks held) when the running batch
  // made no progress for options.step_timeout: its requests have been
  // answered UNAVAILABLE and the gang detached; the callee restarts it.
  Dispatcher(const DispatcherOptions& options, Metrics& metrics,
             std::function<void(bool serving)> on_serving,
             std::function<void(const absl::Status& why)> on_hung = {});
  // Finishes every request still outstanding with UNAVAILABLE and joins.
  ~Dispatcher() override;

  // Set once, before the gang can attach.
  void SetChannel(GangChannel* channel);

  // Validates and enqueues. Not accepted (returned error, `sink` untouched):
  // INVALID_ARGUMENT, RESOURCE_EXHAUSTED (queue full, or `caller` at its
  // per-caller limit), UNAVAILABLE (draining, or no gang has ever attached
  // so the model is unknown). Accepted: the request id; `sink` gets
  // exactly one Finish. `caller`: the authenticated caller's name, "" when
  // the server takes no tokens.
  absl::StatusOr<uint64_t> Submit(const v1::GenerateRequest& request, absl::Time deadline,
                                  std::shared_ptr<ResponseSink> sink, const std::string& caller = "");
  // The client went away or its deadline passed: finish with `why` (if not
  // finished yet) and stop the gang's work on it.
  void Abandon(uint64_t id, const absl::Status& why);

  // Refuse new requests with UNAVAILABLE from now on.
  void StartDraining();
  // Requests accepted and not yet finished.
  int Outstanding() const;
  // Finishes every outstanding request with `why`.
  void FailAll(const absl::Status& why);

  // The last gang's Hello (model and parallel configuration), if any.
  std::optional<control::v1::Hello> gang_info() const;
  bool gang_ready() const;

  // GangEvents (the control service).
  void OnAttach(uint64_t connection, const control::v1::Hello& hello) override;
  void OnProgress(uint64_t connection, const control::v1::Progress& progress) override;
  void OnBatchDone(uint64_t connection, control::v1::BatchDone done) override;
  void OnLeft(uint64_t connection, control::v1::Left left) override;
  void OnDetach(uint64_t connection, const absl::Status& why) override;

 private:
  enum class State { kQueued, kRunning, kEncoding };
  struct Active {
    GenerationParams params;
    std::shared_ptr<ResponseSink> sink;
    State state = State::kQueued;
    absl::Time accepted;
    absl::Time deadline;
    absl::Time dispatched;
    int batch_images = 0;
    bool stepped = false;  // the gang reported its first step
    std::string caller;  // "" when unnamed
  };
  // The gang's work: a closed batch, or (open) a running set that takes
  // joins; request_ids are those dispatched and not yet answered by it.
  struct Running {
    uint64_t batch_id = 0;
    uint64_t connection = 0;
    bool open = false;
    GenerationParams shape;  // an open set's first request: who may join
    int images = 0;          // images in flight
    std::vector<uint64_t> request_ids;
    std::map<uint64_t, int> images_of;  // per request id
    absl::Time started;
    absl::Time last_step;
    int last_step_number = 0;
  };
  // Deferred sink calls, run after the lock is released.
  using Actions = std::vector<std::function<void()>>;

  void Loop();
  // Sends the queued requests the gang can take now (a new batch or set
  // when idle; joins to an open set), if any.
  void DispatchLocked(absl::Time now, Actions& actions) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Request `id`'s images (from BatchDone or Left) go to the encoders.
  void EncodeLocked(uint64_t id, std::vector<control::v1::ItemImage> images, v1::Timings timings, Actions& actions)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<uint64_t> SubmitLocked(const v1::GenerateRequest& request, absl::Time deadline,
                                        std::shared_ptr<ResponseSink> sink, const std::string& caller,
                                        absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // RESOURCE_EXHAUSTED naming the caller and the flag when `caller` is at
  // a per-caller limit.
  absl::Status CheckCallerLimitsLocked(const std::string& caller) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes `id` and schedules its Finish. Returns false if not outstanding.
  bool FinishLocked(uint64_t id, const grpc::Status& status, v1::GenerateResponse response,
                    Actions& actions) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateServingLocked(Actions& actions) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Encode(uint64_t id, Active snapshot, std::vector<control::v1::ItemImage> images,
              v1::Timings timings);
  static void Run(Actions& actions);

  const DispatcherOptions options_;
  Metrics& metrics_;
  std::function<void(bool)> on_serving_;
  std::function<void(const absl::Status&)> on_hung_;
  GangChannel* channel_ = nullptr;

  mutable absl::Mutex mu_;
  absl::CondVar wake_;
  AdmissionQueue queue_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, Active> active_ ABSL_GUARDED_BY(mu_);
  std::optional<Running> running_ ABSL_GUARDED_BY(mu_);
  std::optional<control::v1::Hello> hello_ ABSL_GUARDED_BY(mu_);
  uint64_t connection_ ABSL_GUARDED_BY(mu_) = 0;  // 0: no gang attached
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool serving_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_batch_ ABSL_GUARDED_BY(mu_) = 1;

  std::unique_ptr<WorkPool> encoders_;
  std::thread thread_;
};

// The one place absl::Status becomes a grpc::Status.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace ditserve::server
