#include "server/gang_link.h"

#include <utility>

#include "absl/status/status.h"

namespace ditserve::server {

// One Attach stream. Deletes itself in OnDone. Writes are queued: one
// StartWrite in flight at a time.
class GangLink::Stream final
    : public grpc::ServerBidiReactor<control::v1::WorkerMessage, control::v1::FrontendMessage> {
 public:
  explicit Stream(GangLink* link) : link_(link) { StartRead(&in_); }

  // Queues `message`; false once the stream is finishing.
  bool Enqueue(const control::v1::FrontendMessage& message) {
    const control::v1::FrontendMessage* next = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (finishing_) return false;
      out_.push_back(message);
      if (writing_) return true;
      writing_ = true;
      next = &out_.front();
    }
    StartWrite(next);
    return true;
  }

  uint64_t connection() const { return connection_; }

  void OnReadDone(bool ok) override {
    if (!ok) {
      End(grpc::Status::OK, absl::UnavailableError("the gang's control stream ended"));
      return;
    }
    if (in_.has_hello()) {
      if (connection_ != 0 || !link_->Claim(this, &connection_)) {
        End(grpc::Status(grpc::ALREADY_EXISTS, "another gang is attached to this frontend"),
            absl::OkStatus());
        return;
      }
      link_->events_->OnAttach(connection_, in_.hello());
    } else if (connection_ == 0) {
      End(grpc::Status(grpc::FAILED_PRECONDITION, "the first message must be a Hello"),
          absl::OkStatus());
      return;
    } else if (in_.has_progress()) {
      link_->events_->OnProgress(connection_, in_.progress());
    } else if (in_.has_done()) {
      link_->events_->OnBatchDone(connection_, std::move(*in_.mutable_done()));
    } else if (in_.has_left()) {
      link_->events_->OnLeft(connection_, std::move(*in_.mutable_left()));
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    const control::v1::FrontendMessage* next = nullptr;
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      out_.pop_front();
      if (!ok) out_.clear();
      if (!out_.empty() && !finishing_) {
        next = &out_.front();
      } else {
        writing_ = false;
        finish = finishing_ && !finished_;
        if (finish) finished_ = true;
      }
    }
    if (next != nullptr) StartWrite(next);
    if (finish) Finish(final_status_);
  }

  void OnDone() override {
    link_->Release(this);
    if (connection_ != 0) {
      link_->events_->OnDetach(connection_, absl::UnavailableError("the gang's control stream closed"));
    }
    delete this;
  }

 private:
  // Ends the stream with `status` after queued writes; reports the detach
  // (when `why` is an error and this stream was attached).
  void End(const grpc::Status& status, const absl::Status& why) {
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      if (finishing_) return;
      finishing_ = true;
      final_status_ = status;
      if (!writing_) {
        finished_ = true;
        finish = true;
      }
    }
    if (!why.ok() && connection_ != 0) {
      link_->Release(this);
      link_->events_->OnDetach(connection_, why);
    }
    if (finish) Finish(status);
  }

  GangLink* link_;
  uint64_t connection_ = 0;  // set once attached; read on reactor threads
  control::v1::WorkerMessage in_;
  absl::Mutex mu_;
  std::deque<control::v1::FrontendMessage> out_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_;
};

grpc::ServerBidiReactor<control::v1::WorkerMessage, control::v1::FrontendMessage>*
GangLink::Attach(grpc::CallbackServerContext*) {
  return new Stream(this);
}

bool GangLink::Claim(Stream* stream, uint64_t* connection) {
  absl::MutexLock lock(&mu_);
  if (current_ != nullptr) return false;
  current_ = stream;
  *connection = next_connection_++;
  return true;
}

void GangLink::Release(Stream* stream) {
  absl::MutexLock lock(&mu_);
  if (current_ == stream) current_ = nullptr;
}

void GangLink::DropCurrent() {
  absl::MutexLock lock(&mu_);
  current_ = nullptr;
}

bool GangLink::Send(uint64_t connection, const control::v1::FrontendMessage& message) {
  absl::MutexLock lock(&mu_);
  if (current_ == nullptr || current_->connection() != connection) return false;
  return current_->Enqueue(message);
}

}  // namespace ditserve::server
