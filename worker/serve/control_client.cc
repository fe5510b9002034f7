#include "worker/serve/control_client.h"

#include <chrono>
#include <algorithm>
#include <climits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace ditserve::worker::serve {

absl::StatusOr<std::unique_ptr<ControlClient>> ControlClient::Connect(
    const std::string& address, const control::v1::Hello& hello, absl::Time deadline) {
  std::unique_ptr<ControlClient> client(new ControlClient());
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(INT_MAX);
  client->channel_ =
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  const auto until = std::chrono::system_clock::now() +
                     absl::ToChronoSeconds(std::max(deadline - absl::Now(), absl::ZeroDuration()));
  if (!client->channel_->WaitForConnected(until)) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach the frontend's control address ", address));
  }
  client->stub_ = control::v1::GangControl::NewStub(client->channel_);
  client->stream_ = client->stub_->Attach(&client->context_);
  control::v1::WorkerMessage first;
  *first.mutable_hello() = hello;
  if (!client->stream_->Write(first)) {
    return absl::UnavailableError(absl::StrCat("the frontend at ", address, " closed the stream"));
  }
  client->reader_ = std::thread([c = client.get()] { c->ReadLoop(); });
  return client;
}

ControlClient::~ControlClient() {
  context_.TryCancel();
  if (reader_.joinable()) reader_.join();
}

void ControlClient::ReadLoop() {
  control::v1::FrontendMessage message;
  while (stream_->Read(&message)) {
    absl::MutexLock lock(&mu_);
    if (message.has_run()) {
      batches_.push_back(std::move(*message.mutable_run()));
    } else if (message.has_cancel()) {
      for (uint64_t id : message.cancel().request_ids()) cancelled_.insert(id);
    }
  }
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

absl::StatusOr<std::optional<control::v1::RunBatch>> ControlClient::NextBatch(
    absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closed_ || !batches_.empty();
  };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  if (!batches_.empty()) {
    control::v1::RunBatch batch = std::move(batches_.front());
    batches_.pop_front();
    return std::optional<control::v1::RunBatch>(std::move(batch));
  }
  if (closed_) return absl::UnavailableError("the frontend closed the control stream");
  return std::optional<control::v1::RunBatch>();
}

std::vector<control::v1::RunBatch> ControlClient::TakeBatchesWhile(
    const std::function<bool(const control::v1::RunBatch&)>& take) {
  absl::MutexLock lock(&mu_);
  std::vector<control::v1::RunBatch> out;
  while (!batches_.empty() && take(batches_.front())) {
    out.push_back(std::move(batches_.front()));
    batches_.pop_front();
  }
  return out;
}

bool ControlClient::IsCancelled(uint64_t request_id) const {
  absl::MutexLock lock(&mu_);
  return cancelled_.count(request_id) > 0;
}

void ControlClient::ForgetCancelled(uint64_t request_id) {
  absl::MutexLock lock(&mu_);
  cancelled_.erase(request_id);
}

void ControlClient::ClearCancelled() {
  absl::MutexLock lock(&mu_);
  cancelled_.clear();
}

bool ControlClient::Send(const control::v1::WorkerMessage& message) {
  absl::MutexLock lock(&write_mu_);
  return stream_->Write(message);
}

}  // namespace ditserve::worker::serve
