#pragma once

// Rank 0's end of the control channel: a gRPC client that attaches to the
// frontend's GangControl service, receives batches and cancels, and sends
// progress and results. Torch-free.

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "ditserve/v1/control.grpc.pb.h"

namespace ditserve::worker::serve {

// Thread-safety: NextBatch, IsCancelled, ClearCancelled and Send may be
// called from any thread (the serving loop and the step callback). A reader
// thread owned by the client receives the frontend's messages.
class ControlClient {
 public:
  // Dials `address` (host:port) until `deadline`, opens the Attach stream and
  // sends `hello`. UNAVAILABLE when the frontend cannot be reached in time.
  static absl::StatusOr<std::unique_ptr<ControlClient>> Connect(
      const std::string& address, const control::v1::Hello& hello, absl::Time deadline);
  // Cancels the stream and joins the reader thread.
  ~ControlClient();
  ControlClient(const ControlClient&) = delete;
  ControlClient& operator=(const ControlClient&) = delete;

  // The next batch; std::nullopt when none arrived within `timeout`;
  // UNAVAILABLE once the stream has ended (the frontend is gone).
  absl::StatusOr<std::optional<control::v1::RunBatch>> NextBatch(absl::Duration timeout);

  // Without waiting: the queued batches, in order, while `take` accepts
  // them (the first it refuses stays queued, and so do those after it).
  // `take` runs under the client's lock: it must not call the client.
  std::vector<control::v1::RunBatch> TakeBatchesWhile(const std::function<bool(const control::v1::RunBatch&)>& take);

  // Whether the frontend asked to stop working for `request_id`.
  bool IsCancelled(uint64_t request_id) const;
  // Forgets the cancel of one request (it left a running set).
  void ForgetCancelled(uint64_t request_id);
  // Forgets every cancel (after a batch ends: ids are never reused).
  void ClearCancelled();

  // Sends one message; false when the stream is broken.
  bool Send(const control::v1::WorkerMessage& message);

 private:
  ControlClient() = default;
  void ReadLoop();

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<control::v1::GangControl::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<control::v1::WorkerMessage, control::v1::FrontendMessage>>
      stream_;
  std::thread reader_;

  mutable absl::Mutex mu_;
  std::deque<control::v1::RunBatch> batches_ ABSL_GUARDED_BY(mu_);
  std::set<uint64_t> cancelled_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Mutex write_mu_;  // one Write at a time
};

}  // namespace ditserve::worker::serve
