#include "server/generation_service.h"

#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "proto/parallel_config_proto.h"
#include "proto/step_cache_enum.h"

namespace ditserve::server {
namespace {

absl::Time DeadlineOf(const grpc::CallbackServerContext* context) {
  const auto deadline = context->deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

// Why a call was abandoned: its deadline, or the client. gRPC's deadline
// timer may fire a little before the deadline by our clock: a cancel within
// 100 ms of the deadline counts as the deadline.
absl::Status AbandonReason(const grpc::CallbackServerContext* context) {
  if (absl::Now() + absl::Milliseconds(100) >= DeadlineOf(context)) {
    return absl::DeadlineExceededError("the deadline passed");
  }
  return absl::CancelledError("the client cancelled the request");
}

// Submits the call's request; on refusal finishes `sink` with the error.
// Returns the request id, 0 when refused.
uint64_t SubmitOrFinish(Dispatcher* dispatcher, const grpc::CallbackServerContext* context,
                        const v1::GenerateRequest& request, const std::shared_ptr<ResponseSink>& sink,
                        const std::string& caller) {
  auto id = dispatcher->Submit(request, DeadlineOf(context), sink, caller);
  if (id.ok()) return *id;
  sink->Finish(ToGrpcStatus(id.status()), {});
  return 0;
}

// Generate: one response. The sink owns the response until Finish moves
// it into the reactor's response message.
class UnaryCall final : public grpc::ServerUnaryReactor {
 public:
  class Sink final : public ResponseSink {
   public:
    Sink(UnaryCall* call, v1::GenerateResponse* response) : call_(call), response_(response) {}
    void Progress(const v1::Progress&) override {}
    void Finish(const grpc::Status& status, v1::GenerateResponse response) override {
      UnaryCall* call;
      {
        absl::MutexLock lock(&mu_);
        if (call_ == nullptr) return;
        call = std::exchange(call_, nullptr);
      }
      if (status.ok()) *response_ = std::move(response);
      call->Finish(status);
    }

   private:
    absl::Mutex mu_;
    UnaryCall* call_ ABSL_GUARDED_BY(mu_);
    v1::GenerateResponse* response_;
  };

  UnaryCall(Dispatcher* dispatcher, grpc::CallbackServerContext* context,
            const v1::GenerateRequest* request, v1::GenerateResponse* response, const std::string& caller)
      : dispatcher_(dispatcher),
        context_(context),
        id_(SubmitOrFinish(dispatcher, context, *request, std::make_shared<Sink>(this, response), caller)) {}

  void OnCancel() override {
    if (id_ != 0) dispatcher_->Abandon(id_, AbandonReason(context_));
  }
  void OnDone() override { delete this; }

 private:
  Dispatcher* dispatcher_;
  grpc::CallbackServerContext* context_;
  const uint64_t id_;  // 0: refused
};

// GenerateStream: progress events, then the result. Writes are queued, one
// in flight; Finish follows the last write.
class StreamCall final : public grpc::ServerWriteReactor<v1::GenerateStreamResponse> {
 public:
  class Sink final : public ResponseSink {
   public:
    explicit Sink(StreamCall* call) : call_(call) {}
    void Progress(const v1::Progress& progress) override {
      v1::GenerateStreamResponse m;
      *m.mutable_progress() = progress;
      Push(std::move(m), nullptr);
    }
    void Finish(const grpc::Status& status, v1::GenerateResponse response) override {
      v1::GenerateStreamResponse m;
      if (status.ok()) *m.mutable_result() = std::move(response);
      Push(status.ok() ? std::optional(std::move(m)) : std::nullopt, &status);
    }
    // The last write completed (ok: it was sent).
    void WriteDone(bool ok) {
      StreamCall* call = nullptr;
      const v1::GenerateStreamResponse* next = nullptr;
      bool finish = false;
      {
        absl::MutexLock lock(&mu_);
        out_.pop_front();
        if (!ok) out_.clear();
        if (!out_.empty()) {
          next = &out_.front();
        } else {
          writing_ = false;
          finish = finish_pending_ && !finished_;
          if (finish) finished_ = true;
        }
        call = call_;
      }
      if (next != nullptr) call->StartWrite(next);
      if (finish) call->Finish(final_status_);
    }

   private:
    void Push(std::optional<v1::GenerateStreamResponse> message, const grpc::Status* status) {
      StreamCall* call = nullptr;
      const v1::GenerateStreamResponse* next = nullptr;
      bool finish = false;
      {
        absl::MutexLock lock(&mu_);
        if (finish_pending_) return;
        if (message.has_value()) out_.push_back(std::move(*message));
        if (status != nullptr) {
          finish_pending_ = true;
          final_status_ = *status;
        }
        call = call_;
        if (!writing_ && !out_.empty()) {
          writing_ = true;
          next = &out_.front();
        } else if (!writing_ && finish_pending_) {
          finished_ = true;
          finish = true;
        }
      }
      if (next != nullptr) call->StartWrite(next);
      if (finish) call->Finish(final_status_);
    }

    absl::Mutex mu_;
    StreamCall* call_;
    std::deque<v1::GenerateStreamResponse> out_ ABSL_GUARDED_BY(mu_);
    bool writing_ ABSL_GUARDED_BY(mu_) = false;
    bool finish_pending_ ABSL_GUARDED_BY(mu_) = false;
    bool finished_ ABSL_GUARDED_BY(mu_) = false;
    grpc::Status final_status_;
  };

  StreamCall(Dispatcher* dispatcher, grpc::CallbackServerContext* context,
             const v1::GenerateRequest* request, const std::string& caller)
      : dispatcher_(dispatcher),
        context_(context),
        sink_(std::make_shared<Sink>(this)),
        id_(SubmitOrFinish(dispatcher, context, *request, sink_, caller)) {}

  void OnWriteDone(bool ok) override { sink_->WriteDone(ok); }
  void OnCancel() override {
    if (id_ != 0) dispatcher_->Abandon(id_, AbandonReason(context_));
  }
  void OnDone() override { delete this; }

 private:
  Dispatcher* dispatcher_;
  grpc::CallbackServerContext* context_;
  std::shared_ptr<Sink> sink_;
  const uint64_t id_;  // 0: refused
};

// A stream refused before any work (its status set at construction).
class RefusedStream final : public grpc::ServerWriteReactor<v1::GenerateStreamResponse> {
 public:
  explicit RefusedStream(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

// The last path component: GetInfo names the model, not where it lives.
std::string ModelName(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

}  // namespace

grpc::Status GenerationService::Authenticate(const grpc::CallbackServerContext& context, std::string* caller) const {
  if (tokens_ == nullptr) return grpc::Status::OK;
  auto name = tokens_->Authenticate(AuthorizationOf(context));
  if (!name.ok()) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(name.status().message()));
  if (caller != nullptr) *caller = *std::move(name);
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* GenerationService::Generate(grpc::CallbackServerContext* context,
                                                      const v1::GenerateRequest* request,
                                                      v1::GenerateResponse* response) {
  std::string caller;
  if (grpc::Status auth = Authenticate(*context, &caller); !auth.ok()) {
    auto* reactor = context->DefaultReactor();
    reactor->Finish(auth);
    return reactor;
  }
  return new UnaryCall(dispatcher_, context, request, response, caller);
}

grpc::ServerWriteReactor<v1::GenerateStreamResponse>* GenerationService::GenerateStream(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  std::string caller;
  if (grpc::Status auth = Authenticate(*context, &caller); !auth.ok()) return new RefusedStream(auth);
  return new StreamCall(dispatcher_, context, request, caller);
}

grpc::ServerUnaryReactor* GenerationService::GetInfo(grpc::CallbackServerContext* context,
                                                     const v1::GetInfoRequest*,
                                                     v1::GetInfoResponse* response) {
  if (grpc::Status auth = Authenticate(*context); !auth.ok()) {
    auto* reactor = context->DefaultReactor();
    reactor->Finish(auth);
    return reactor;
  }
  auto hello = dispatcher_->gang_info();
  const ServerOptions& o = options_;
  const auto model = [&](const std::string& path) { return o.info_model_path ? path : ModelName(path); };
  response->set_model(model(o.worker.generation.model));
  response->set_version("0.1.0");
  response->set_gang_ready(dispatcher_->gang_ready());
  proto::ToProto(o.worker.parallel, response->mutable_parallel());
  v1::Limits& l = *response->mutable_limits();
  l.set_max_pixels(o.limits.max_pixels);
  l.set_max_steps(o.limits.max_steps);
  l.set_max_prompt_bytes(o.limits.max_prompt_bytes);
  l.set_max_images(o.limits.max_images);
  l.set_max_queue_size(o.max_queue_size);
  l.set_max_batch_size(o.max_batch_size);
  v1::StepCacheInfo& cache = *response->mutable_step_cache();
  cache.set_default_step_cache(proto::ToProto(o.limits.step_cache.default_method));
  cache.set_default_first_block_threshold(o.limits.step_cache.default_first_block_threshold);
  cache.set_max_first_block_threshold(o.limits.step_cache.max_first_block_threshold);
  cache.set_default_teacache_threshold(o.limits.step_cache.default_teacache_threshold);
  cache.set_max_teacache_threshold(o.limits.step_cache.max_teacache_threshold);
  if (hello.has_value()) {
    // The gang's own view wins (attach mode: the workers' flags).
    response->set_model(model(hello->model()));
    response->set_model_family(hello->model_family());
    response->set_default_size(hello->default_size());
    response->set_uses_guidance_embedding(hello->uses_guidance_embedding());
    response->set_dtype(hello->dtype());
    response->set_device(hello->device());
    response->set_transformer_config_json(hello->transformer_config_json());
    response->set_default_guidance_scale(hello->has_default_guidance_scale() ? hello->default_guidance_scale() : 3.5);
    response->set_default_max_sequence_length(hello->default_max_sequence_length());
    response->set_max_sequence_length_limit(hello->max_sequence_length_limit());
    response->set_cfg_scale_field(hello->cfg_scale_field());
    l.set_size_multiple(hello->size_multiple());
    *response->mutable_parallel() = hello->parallel();
  }
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace ditserve::server
