#include "worker/serve/served_set.h"

#include <algorithm>
#include <utility>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "worker/serve/gang_broadcast.h"
#include "worker/serve/item_request.h"

namespace ditserve::worker::serve {

bool JoinsSets(const control::v1::RunBatch& batch) {
  for (const control::v1::Item& item : batch.items()) {
    if (item.step_cache() != ditserve::v1::STEP_CACHE_NONE) return false;
  }
  return true;
}

ServedSet::ServedSet(control::v1::RunBatch first, ControlClient* client, parallel::Communicator& control,
                     int world_size)
    : first_(std::move(first)), client_(client), control_(control), world_size_(world_size) {}

void ServedSet::AddJoins(const control::v1::RunBatch& batch, control::v1::SetBoundary& boundary) {
  std::map<uint64_t, std::vector<const control::v1::Item*>> by_request;
  for (const control::v1::Item& item : batch.items()) by_request[item.request_id()].push_back(&item);
  for (const control::v1::Item& item : batch.items()) {
    auto& items = by_request[item.request_id()];
    if (items.empty()) continue;  // this request's items were handled
    absl::Status bad;
    for (const control::v1::Item* i : items) {
      if (auto r = RequestFromItem(*i); !r.ok()) bad = r.status();
    }
    if (!bad.ok()) {
      control::v1::WorkerMessage m;
      m.mutable_left()->set_request_id(item.request_id());
      m.mutable_left()->set_code(static_cast<int>(bad.code()));
      m.mutable_left()->set_message(std::string(bad.message()));
      client_->Send(m);
    } else {
      Request& r = requests_[item.request_id()];
      r.items = static_cast<int>(items.size());
      r.message.set_request_id(item.request_id());
      for (const control::v1::Item* i : items) {
        const uint64_t id = next_member_++;
        request_of_[id] = item.request_id();
        *boundary.add_joins() = *i;
        boundary.add_member_ids(id);
      }
    }
    items.clear();
  }
}

absl::StatusOr<pipelines::SetBoundary> ServedSet::Boundary(int /*tick*/, const std::vector<uint64_t>& running) {
  control::v1::SetBoundary boundary;
  if (client_ != nullptr) {
    for (uint64_t id : running) {
      if (client_->IsCancelled(request_of_.at(id))) boundary.add_stops(id);
    }
    if (!first_taken_) {
      first_taken_ = true;
      max_running_images_ = first_.max_running_images();
      AddJoins(first_, boundary);
    }
    for (const control::v1::RunBatch& batch : client_->TakeBatchesWhile(JoinsSets)) {
      max_running_images_ = batch.max_running_images();
      AddJoins(batch, boundary);
    }
    boundary.set_max_running_images(max_running_images_);
  }
  if (world_size_ > 1) {
    GangMessage message{GangCommand::kRun, client_ != nullptr ? boundary.SerializeAsString() : std::string()};
    auto received = BroadcastGangMessage(control_, message);
    if (!received.ok()) return received.status();
    if (client_ == nullptr && !boundary.ParseFromString(received->payload)) {
      return absl::DataLossError("rank 0 broadcast a set boundary that does not parse");
    }
  }
  pipelines::SetBoundary out;
  // Joiners' prompts are encoded while the set steps; each joins at the
  // first boundary after its encoding.
  out.wait_for_encoding = false;
  out.max_members = boundary.max_running_images();
  out.stops.assign(boundary.stops().begin(), boundary.stops().end());
  for (int i = 0; i < boundary.joins_size(); ++i) {
    auto request = RequestFromItem(boundary.joins(i));
    // Rank 0 converted it before sending: it converts here too.
    if (!request.ok()) return request.status();
    out.joins.push_back(pipelines::SetJoin{boundary.member_ids(i), *std::move(request), boundary.joins(i).request_id()});
  }
  return out;
}

void ServedSet::OnStep(uint64_t id, int step, int total, int running) {
  if (client_ == nullptr) return;
  const uint64_t request = request_of_.at(id);
  if (progress_requests_.insert(request).second) {
    control::v1::MemberStep& m = *progress_.add_members();
    m.set_request_id(request);
    m.set_step(step);
    m.set_total(total);
  }
  Request& r = requests_.at(request);
  r.max_running = std::max(r.max_running, running);
  if (++progress_calls_ < running) return;
  progress_.set_running(running);
  control::v1::WorkerMessage message;
  *message.mutable_progress() = std::move(progress_);
  client_->Send(message);
  progress_ = control::v1::Progress();
  progress_requests_.clear();
  progress_calls_ = 0;
}

void ServedSet::OnLeft(uint64_t id, absl::StatusOr<pipelines::GenerationResult> result,
                       const pipelines::SetMemberTimes& times) {
  if (client_ == nullptr) return;
  const uint64_t request_id = request_of_.at(id);
  request_of_.erase(id);
  Request& r = requests_.at(request_id);
  control::v1::Left& left = r.message;
  if (!result.ok()) {
    if (left.code() == 0) {
      left.set_code(static_cast<int>(result.status().code()));
      left.set_message(std::string(result.status().message()));
    }
  } else {
    const at::Tensor image = result->image.contiguous();
    control::v1::ItemImage& out = *left.add_images();
    out.set_request_id(request_id);
    out.set_height(static_cast<int>(image.size(0)));
    out.set_width(static_cast<int>(image.size(1)));
    out.set_rgb(reinterpret_cast<const char*>(image.data_ptr<uint8_t>()), static_cast<size_t>(image.numel()));
    out.set_computed_steps(static_cast<int>(result->step_computed.size()) - result->cached_steps());
    out.set_cached_steps(result->cached_steps());
  }
  left.set_text_encoding_s(std::max(left.text_encoding_s(), times.text_encoding_s));
  left.set_denoising_s(std::max(left.denoising_s(), times.denoising_s));
  left.set_vae_s(left.vae_s() + times.vae_s);
  left.set_vae_peak_activation_bytes(std::max(left.vae_peak_activation_bytes(), times.vae_peak_activation_bytes));
  left.set_gang_s(std::max(left.gang_s(), times.text_encoding_s + times.denoising_s + times.vae_s));
  if (++r.left < r.items) return;
  left.set_max_running(r.max_running);
  if (left.code() != 0) left.clear_images();
  control::v1::WorkerMessage message;
  *message.mutable_left() = std::move(left);
  client_->Send(message);
  client_->ForgetCancelled(request_id);
  requests_.erase(request_id);
}

}  // namespace ditserve::worker::serve
