#include "server/dispatcher.h"

#include <algorithm>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "proto/parallel_config_proto.h"
#include "proto/step_cache_enum.h"
#include "server/image_encoding.h"
#include "server/request_validation.h"

namespace ditserve::server {
namespace {

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

uint64_t RandomSeed() {
  std::random_device rd;
  return (uint64_t{rd()} << 32) ^ rd();
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

Dispatcher::Dispatcher(const DispatcherOptions& options, Metrics& metrics,
                       std::function<void(bool)> on_serving,
                       std::function<void(const absl::Status&)> on_hung)
    : options_(options),
      metrics_(metrics),
      on_serving_(std::move(on_serving)),
      on_hung_(std::move(on_hung)),
      queue_(options.max_queue_size),
      encoders_(std::make_unique<WorkPool>(options.encode_threads)) {
  metrics_.SetGangReady(false);
  thread_ = std::thread([this] { Loop(); });
}

Dispatcher::~Dispatcher() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    wake_.SignalAll();
  }
  thread_.join();
  FailAll(absl::UnavailableError("the server is shutting down"));
  encoders_.reset();  // runs the encodes already queued (they find nothing outstanding)
}

void Dispatcher::SetChannel(GangChannel* channel) { channel_ = channel; }

void Dispatcher::Run(Actions& actions) {
  for (auto& a : actions) a();
  actions.clear();
}

absl::StatusOr<uint64_t> Dispatcher::Submit(const v1::GenerateRequest& request,
                                            absl::Time deadline,
                                            std::shared_ptr<ResponseSink> sink, const std::string& caller) {
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&mu_);
  auto id = SubmitLocked(request, deadline, std::move(sink), caller, now);
  // Refused requests count too (their latency is the refusal's, ~0).
  if (!id.ok()) metrics_.RequestFinished(ToGrpcStatus(id.status()).error_code(), Seconds(absl::Now() - now));
  return id;
}

absl::StatusOr<uint64_t> Dispatcher::SubmitLocked(const v1::GenerateRequest& request,
                                                  absl::Time deadline,
                                                  std::shared_ptr<ResponseSink> sink,
                                                  const std::string& caller, absl::Time now) {
  if (draining_ || stopping_) {
    return absl::UnavailableError("the server is shutting down (draining); retry on another replica");
  }
  if (!hello_.has_value()) {
    return absl::UnavailableError("the gang has not loaded the model yet; retry shortly");
  }
  ModelShape shape;
  shape.size_multiple = hello_->size_multiple();
  shape.default_size = hello_->default_size();
  shape.parallel = proto::FromProto(hello_->parallel());
  shape.num_pipeline_patch = hello_->num_pipeline_patch();
  shape.family = hello_->model_family();
  if (hello_->has_default_guidance_scale()) shape.default_guidance_scale = hello_->default_guidance_scale();
  shape.guidance_scale_is_cfg = hello_->cfg_scale_field() == "guidance_scale";
  shape.default_max_sequence_length = hello_->default_max_sequence_length();
  shape.max_sequence_length_limit = hello_->max_sequence_length_limit();
  auto params = ValidateRequest(request, options_.limits, shape, RandomSeed());
  if (!params.ok()) return params.status();
  if (absl::Status s = CheckCallerLimitsLocked(caller); !s.ok()) return s;
  const uint64_t id = next_id_++;
  QueueEntry entry;
  entry.id = id;
  entry.params = *params;
  entry.deadline = deadline;
  if (absl::Status s = queue_.Push(entry); !s.ok()) return s;
  Active a;
  a.params = *std::move(params);
  a.sink = std::move(sink);
  a.accepted = now;
  a.deadline = deadline;
  a.caller = caller;
  active_.emplace(id, std::move(a));
  metrics_.SetQueueDepth(queue_.size());
  metrics_.SetInFlight(static_cast<int>(active_.size()));
  wake_.Signal();
  return id;
}

absl::Status Dispatcher::CheckCallerLimitsLocked(const std::string& caller) const {
  if (caller.empty() || (options_.max_requests_per_caller == 0 && options_.max_queued_per_caller == 0)) {
    return absl::OkStatus();
  }
  int outstanding = 0, queued = 0;
  for (const auto& [id, a] : active_) {
    if (a.caller != caller) continue;
    ++outstanding;
    queued += a.state == State::kQueued ? 1 : 0;
  }
  if (options_.max_requests_per_caller > 0 && outstanding >= options_.max_requests_per_caller) {
    return absl::ResourceExhaustedError(absl::StrCat("caller '", caller, "' has ", outstanding,
                                                     " requests in flight, its limit (--max_requests_per_caller); "
                                                     "retry when one finishes"));
  }
  if (options_.max_queued_per_caller > 0 && queued >= options_.max_queued_per_caller) {
    return absl::ResourceExhaustedError(absl::StrCat("caller '", caller, "' has ", queued,
                                                     " requests waiting, its limit (--max_queued_per_caller); "
                                                     "retry when one starts"));
  }
  return absl::OkStatus();
}

bool Dispatcher::FinishLocked(uint64_t id, const grpc::Status& status,
                              v1::GenerateResponse response, Actions& actions) {
  auto it = active_.find(id);
  if (it == active_.end()) return false;
  std::shared_ptr<ResponseSink> sink = std::move(it->second.sink);
  const double latency = Seconds(absl::Now() - it->second.accepted);
  queue_.Remove(id);
  active_.erase(it);
  metrics_.RequestFinished(status.error_code(), latency);
  metrics_.SetQueueDepth(queue_.size());
  metrics_.SetInFlight(static_cast<int>(active_.size()));
  actions.push_back([sink, status, r = std::move(response)]() mutable {
    sink->Finish(status, std::move(r));
  });
  return true;
}

void Dispatcher::Abandon(uint64_t id, const absl::Status& why) {
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    if (!FinishLocked(id, ToGrpcStatus(why), {}, actions)) return;
    if (running_.has_value() && connection_ != 0 && channel_ != nullptr) {
      for (uint64_t rid : running_->request_ids) {
        if (rid == id) {
          control::v1::FrontendMessage m;
          m.mutable_cancel()->add_request_ids(id);
          const uint64_t connection = running_->connection;
          actions.push_back([this, connection, m] { channel_->Send(connection, m); });
          break;
        }
      }
    }
    wake_.Signal();
  }
  Run(actions);
}

void Dispatcher::StartDraining() {
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    UpdateServingLocked(actions);
  }
  Run(actions);
}

int Dispatcher::Outstanding() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(active_.size());
}

void Dispatcher::FailAll(const absl::Status& why) {
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    std::vector<uint64_t> ids;
    for (const auto& [id, a] : active_) ids.push_back(id);
    for (uint64_t id : ids) FinishLocked(id, ToGrpcStatus(why), {}, actions);
  }
  Run(actions);
}

std::optional<control::v1::Hello> Dispatcher::gang_info() const {
  absl::MutexLock lock(&mu_);
  return hello_;
}

bool Dispatcher::gang_ready() const {
  absl::MutexLock lock(&mu_);
  return connection_ != 0;
}

void Dispatcher::UpdateServingLocked(Actions& actions) {
  const bool serving = connection_ != 0 && !draining_;
  metrics_.SetGangReady(connection_ != 0);
  if (serving == serving_) return;
  serving_ = serving;
  if (on_serving_) actions.push_back([this, serving] { on_serving_(serving); });
}

void Dispatcher::OnAttach(uint64_t connection, const control::v1::Hello& hello) {
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    connection_ = connection;
    hello_ = hello;
    running_.reset();
    UpdateServingLocked(actions);
    wake_.Signal();
  }
  Run(actions);
}

void Dispatcher::OnDetach(uint64_t connection, const absl::Status& why) {
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    if (connection != 0 && connection != connection_) return;
    if (connection_ == 0) return;
    connection_ = 0;
    // Health first: a client that sees UNAVAILABLE then sees NOT_SERVING.
    UpdateServingLocked(actions);
    if (running_.has_value()) {
      const grpc::Status status(
          grpc::UNAVAILABLE,
          absl::StrCat("the gang failed while running this request (", why.message(),
                       "); it is being restarted: retry"));
      for (uint64_t id : running_->request_ids) FinishLocked(id, status, {}, actions);
      running_.reset();
    }
  }
  Run(actions);
}

void Dispatcher::OnProgress(uint64_t connection, const control::v1::Progress& progress) {
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    if (connection != connection_ || !running_.has_value()) return;
    const bool set_step = progress.members_size() > 0;
    if (!set_step && running_->batch_id != progress.batch_id()) return;
    const absl::Time now = absl::Now();
    // Steps after the first are pure denoising steps (the first includes
    // prompt encoding). A set's step may include a joiner's encoding and
    // a leaver's decode.
    const int step_number = set_step ? running_->last_step_number + 1 : progress.step();
    if (running_->last_step_number > 0 && step_number == running_->last_step_number + 1) {
      metrics_.Step(Seconds(now - running_->last_step));
    }
    running_->last_step = now;
    running_->last_step_number = step_number;
    metrics_.GangStep(set_step ? progress.running() : running_->images);
    const auto report = [&](uint64_t id, int step, int total) {
      auto it = active_.find(id);
      if (it == active_.end()) return;
      if (!it->second.stepped) {
        it->second.stepped = true;
        metrics_.TimeToFirstStep(Seconds(now - it->second.accepted));
      }
      v1::Progress p;
      p.set_step(step);
      p.set_total(total);
      p.set_elapsed_s(Seconds(now - it->second.accepted));
      actions.push_back([sink = it->second.sink, p] { sink->Progress(p); });
    };
    if (set_step) {
      for (const control::v1::MemberStep& m : progress.members()) report(m.request_id(), m.step(), m.total());
    } else {
      for (uint64_t id : running_->request_ids) report(id, progress.step(), progress.total());
    }
  }
  Run(actions);
}

void Dispatcher::EncodeLocked(uint64_t id, std::vector<control::v1::ItemImage> images, v1::Timings timings,
                              Actions& actions) {
  auto it = active_.find(id);
  if (it == active_.end()) return;  // cancelled meanwhile
  it->second.state = State::kEncoding;
  timings.set_queued_s(Seconds(it->second.dispatched - it->second.accepted));
  Active snapshot;
  snapshot.params = it->second.params;
  snapshot.accepted = it->second.accepted;
  if (static_cast<int>(images.size()) != it->second.params.num_images) {
    FinishLocked(id,
                 grpc::Status(grpc::INTERNAL, absl::StrCat("the gang returned ", images.size(), " images, ",
                                                           it->second.params.num_images, " expected")),
                 {}, actions);
    return;
  }
  actions.push_back([this, id, snapshot = std::move(snapshot), images = std::move(images), timings]() mutable {
    encoders_->Post([this, id, snapshot = std::move(snapshot), images = std::move(images), timings]() mutable {
      Encode(id, std::move(snapshot), std::move(images), timings);
    });
  });
}

void Dispatcher::OnLeft(uint64_t connection, control::v1::Left left) {
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    if (connection != connection_ || !running_.has_value()) return;
    auto& ids = running_->request_ids;
    auto pos = std::find(ids.begin(), ids.end(), left.request_id());
    if (pos == ids.end()) return;
    ids.erase(pos);
    running_->images -= running_->images_of[left.request_id()];
    running_->images_of.erase(left.request_id());
    if (ids.empty()) running_.reset();  // the set may take a new first request now
    wake_.Signal();
    if (left.code() != 0) {
      FinishLocked(left.request_id(),
                   grpc::Status(static_cast<grpc::StatusCode>(left.code()), absl::StrCat("the gang: ", left.message())),
                   {}, actions);
    } else {
      metrics_.Denoising(left.denoising_s());
      metrics_.Vae(left.vae_s());
      metrics_.SetVaePeakActivation(static_cast<double>(left.vae_peak_activation_bytes()));
      v1::Timings t;
      t.set_text_encoding_s(left.text_encoding_s());
      t.set_denoising_s(left.denoising_s());
      t.set_vae_s(left.vae_s());
      t.set_gang_s(left.gang_s());
      t.set_batch_size(left.max_running());
      std::vector<control::v1::ItemImage> images(std::make_move_iterator(left.mutable_images()->begin()),
                                                 std::make_move_iterator(left.mutable_images()->end()));
      EncodeLocked(left.request_id(), std::move(images), t, actions);
    }
  }
  Run(actions);
}

void Dispatcher::OnBatchDone(uint64_t connection, control::v1::BatchDone done) {
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    if (connection != connection_) return;
    for (const control::v1::CommStat& c : done.comm()) {
      metrics_.CommTotals(hello_->gang_id(), c.method(), static_cast<double>(c.bytes_sent()), c.seconds());
    }
    if (done.code() == static_cast<int>(absl::StatusCode::kUnavailable)) {
      // The gang is broken (a peer died or hung); rank 0 exits after this.
      connection_ = 0;
      UpdateServingLocked(actions);
    }
    if (done.set_drained()) {
      // A running set drained: its requests were answered by Left. Those
      // still dispatched joined too late and start the gang's next set,
      // unless the gang broke.
      if (running_.has_value() && done.code() != 0) {
        const grpc::Status status(static_cast<grpc::StatusCode>(done.code()), absl::StrCat("the gang: ", done.message()));
        for (uint64_t id : running_->request_ids) FinishLocked(id, status, {}, actions);
        running_.reset();
      } else if (running_.has_value()) {
        running_->started = absl::Now();
      }
      wake_.Signal();
    } else if (running_.has_value() && running_->batch_id == done.batch_id()) {
      Running batch = std::move(*running_);
      running_.reset();
      wake_.Signal();  // the gang is free: dispatch the next batch now
      if (done.code() != 0) {
        const grpc::Status status(static_cast<grpc::StatusCode>(done.code()),
                                  absl::StrCat("the gang: ", done.message()));
        for (uint64_t id : batch.request_ids) FinishLocked(id, status, {}, actions);
      } else {
        metrics_.Denoising(done.denoising_s());
        metrics_.Vae(done.vae_s());
        metrics_.SetVaePeakActivation(static_cast<double>(done.vae_peak_activation_bytes()));
        std::map<uint64_t, std::vector<control::v1::ItemImage>> images;
        for (control::v1::ItemImage& image : *done.mutable_images()) {
          images[image.request_id()].push_back(std::move(image));
        }
        for (uint64_t id : batch.request_ids) {
          auto it = active_.find(id);
          if (it == active_.end()) continue;
          v1::Timings t;
          t.set_text_encoding_s(done.text_encoding_s());
          t.set_denoising_s(done.denoising_s());
          t.set_vae_s(done.vae_s());
          t.set_gang_s(done.gang_s());
          t.set_batch_size(it->second.batch_images);
          EncodeLocked(id, std::move(images[id]), t, actions);
        }
      }
    }
  }
  Run(actions);
}

void Dispatcher::Encode(uint64_t id, Active snapshot, std::vector<control::v1::ItemImage> images,
                        v1::Timings timings) {
  const absl::Time start = absl::Now();
  v1::GenerateResponse response;
  grpc::Status status;
  for (size_t i = 0; i < images.size(); ++i) {
    const control::v1::ItemImage& item = images[i];
    auto bytes = EncodeImage(item.rgb(), item.width(), item.height(), snapshot.params.format,
                             snapshot.params.quality, options_.png_compression_level);
    if (!bytes.ok()) {
      status = ToGrpcStatus(bytes.status());
      break;
    }
    v1::Image& out = *response.add_images();
    out.set_data(*std::move(bytes));
    out.set_width(item.width());
    out.set_height(item.height());
    out.set_format(snapshot.params.format);
    out.set_seed(snapshot.params.seed + i);
    out.set_computed_steps(item.computed_steps());
    out.set_cached_steps(item.cached_steps());
    timings.set_computed_steps(timings.computed_steps() + item.computed_steps());
    timings.set_cached_steps(timings.cached_steps() + item.cached_steps());
  }
  const absl::Time end = absl::Now();
  timings.set_encoding_s(Seconds(end - start));
  timings.set_total_s(Seconds(end - snapshot.accepted));
  *response.mutable_timings() = timings;
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    if (status.ok()) {
      auto it = active_.find(id);
      if (it == active_.end()) return;  // cancelled while encoding
      metrics_.Encoding(timings.encoding_s());
      metrics_.ImagesGenerated(static_cast<int>(images.size()),
                               static_cast<double>(images.size()) * snapshot.params.height *
                                   snapshot.params.width);
      metrics_.DenoiseSteps(timings.computed_steps(), timings.cached_steps());
      FinishLocked(id, grpc::Status::OK, std::move(response), actions);
    } else {
      FinishLocked(id, status, {}, actions);
    }
  }
  Run(actions);
}

void Dispatcher::DispatchLocked(absl::Time now, Actions& actions) {
  if (connection_ == 0 || queue_.size() == 0 || channel_ == nullptr) return;
  const bool joins = hello_.has_value() && hello_->accepts_joins() && options_.join_policy == "step";
  std::vector<QueueEntry> batch;
  if (!running_.has_value()) {
    const QueueEntry* head = queue_.Head();
    if (joins && ShareRunningSet(head->params, head->params)) {
      batch = queue_.TakeJoins(head->params, std::max(options_.max_running_images, head->params.num_images) +
                                                 options_.join_lookahead_images);
    } else {
      batch = queue_.TakeBatch(options_.max_batch_size);
    }
  } else if (running_->open && running_->images < options_.max_running_images + options_.join_lookahead_images) {
    // A request that cannot share the set and has waited long enough stops
    // the joins: the set drains and that request runs next.
    const QueueEntry* head = queue_.Head();
    const auto waited = [&](const QueueEntry& e) { return now - active_.at(e.id).accepted; };
    if (!ShareRunningSet(running_->shape, head->params) && waited(*head) >= options_.max_join_wait) return;
    batch = queue_.TakeJoins(running_->shape,
                             options_.max_running_images + options_.join_lookahead_images - running_->images);
  }
  if (batch.empty()) return;
  int images = 0;
  for (const QueueEntry& e : batch) images += e.params.num_images;
  if (!running_.has_value()) {
    Running r;
    r.batch_id = next_batch_;
    r.connection = connection_;
    r.started = now;
    r.open = joins && ShareRunningSet(batch.front().params, batch.front().params);
    r.shape = batch.front().params;
    running_ = std::move(r);
  }
  running_->images += images;
  control::v1::FrontendMessage m;
  control::v1::RunBatch& run = *m.mutable_run();
  run.set_batch_id(next_batch_++);
  if (running_->open) run.set_max_running_images(options_.max_running_images);
  if (!running_->open) running_->batch_id = run.batch_id();
  for (const QueueEntry& e : batch) {
    Active& a = active_.at(e.id);
    a.state = State::kRunning;
    a.dispatched = now;
    a.batch_images = images;
    metrics_.QueueTime(Seconds(now - a.accepted));
    running_->request_ids.push_back(e.id);
    running_->images_of[e.id] = e.params.num_images;
    for (int i = 0; i < e.params.num_images; ++i) *run.add_items() = ToControlItem(e.params, e.id, i);
  }
  metrics_.SetQueueDepth(queue_.size());
  const uint64_t connection = connection_;
  actions.push_back([this, connection, m = std::move(m)] {
    if (!channel_->Send(connection, m)) {
      OnDetach(connection, absl::UnavailableError("the control stream closed"));
    }
  });
}

void Dispatcher::Loop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    Actions actions;
    const absl::Time now = absl::Now();
    for (QueueEntry& e : queue_.TakeExpired(now)) {
      FinishLocked(e.id,
                   grpc::Status(grpc::DEADLINE_EXCEEDED,
                                "the deadline passed while the request was queued"),
                   {}, actions);
    }
    if (running_.has_value() &&
        now - std::max(running_->started, running_->last_step) > options_.step_timeout) {
      const absl::Status why = absl::UnavailableError(
          absl::StrCat("the gang made no progress for ", absl::FormatDuration(options_.step_timeout),
                       " (--step_timeout_s): it is hung"));
      const grpc::Status status(grpc::UNAVAILABLE,
                                absl::StrCat(why.message(), "; it is being restarted: retry"));
      connection_ = 0;
      UpdateServingLocked(actions);
      for (uint64_t id : running_->request_ids) FinishLocked(id, status, {}, actions);
      running_.reset();
      if (on_hung_) actions.push_back([this, why] { on_hung_(why); });
    }
    if (running_.has_value()) {
      std::vector<uint64_t> expired;
      for (uint64_t id : running_->request_ids) {
        auto it = active_.find(id);
        if (it != active_.end() && it->second.deadline <= now) expired.push_back(id);
      }
      if (!expired.empty()) {
        control::v1::FrontendMessage m;
        for (uint64_t id : expired) {
          FinishLocked(id,
                       grpc::Status(grpc::DEADLINE_EXCEEDED,
                                    "the deadline passed while the gang was running the request"),
                       {}, actions);
          m.mutable_cancel()->add_request_ids(id);
        }
        const uint64_t connection = running_->connection;
        actions.push_back([this, connection, m] { channel_->Send(connection, m); });
      }
    }
    DispatchLocked(now, actions);
    if (!actions.empty()) {
      mu_.Unlock();
      Run(actions);
      mu_.Lock();
      continue;
    }
    absl::Duration wait = absl::Milliseconds(100);
    if (auto earliest = queue_.EarliestDeadline()) wait = std::min(wait, *earliest - now);
    if (running_.has_value()) wait = std::min(wait, absl::Milliseconds(20));
    if (wait > absl::ZeroDuration()) wake_.WaitWithTimeout(&mu_, wait);
  }
}

}  // namespace ditserve::server
