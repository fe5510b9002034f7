#include "worker/serve/serve_loop.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ditserve/v1/control.pb.h"
#include "proto/parallel_config_proto.h"
#include "worker/serve/item_request.h"
#include "worker/serve/control_client.h"
#include "worker/serve/gang_broadcast.h"
#include "worker/serve/served_set.h"

namespace ditserve::worker::serve {
namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

control::v1::Hello MakeHello(const core::WorkerOptions& o, const std::string& device,
                             const std::string& dtype, const GangEngine& engine) {
  control::v1::Hello h;
  h.set_model(o.generation.model);
  h.set_model_family(engine.model_family());
  h.set_default_guidance_scale(engine.default_guidance_scale());
  h.set_default_max_sequence_length(engine.default_max_sequence_length());
  h.set_max_sequence_length_limit(engine.max_sequence_length_limit());
  h.set_cfg_scale_field(engine.cfg_scale_field());
  h.set_size_multiple(engine.size_multiple());
  h.set_default_size(engine.default_size());
  h.set_uses_guidance_embedding(engine.uses_guidance_embedding());
  h.set_dtype(dtype);
  h.set_device(device);
  proto::ToProto(o.parallel, h.mutable_parallel());
  h.set_num_pipeline_patch(o.pipefusion.num_pipeline_patch);
  h.set_transformer_config_json(engine.transformer_config_json());
  h.set_accepts_joins(true);  // every gang runs sets (PipeFusion ones too)
  h.set_gang_id(std::random_device()() | (uint64_t{std::random_device()()} << 32));
  return h;
}

// Runs one batch on every rank. On rank 0 `client` is set: progress and
// the result go to the frontend. Returns an error only when the gang is
// broken; batch-level failures (bad request, cancel) are reported.
absl::Status RunBatch(const control::v1::RunBatch& batch, GangEngine& engine,
                      ControlClient* client) {
  const absl::StatusOr<std::vector<pipelines::GenerationRequest>> requests = RequestsFromBatch(batch);
  const Clock::time_point start = Clock::now();
  int last_step = 0;
  auto on_step = [&](int step, int total) {
    if (client == nullptr) return true;
    if (step > last_step) {
      last_step = step;
      control::v1::WorkerMessage m;
      m.mutable_progress()->set_batch_id(batch.batch_id());
      m.mutable_progress()->set_step(step);
      m.mutable_progress()->set_total(total);
      client->Send(m);
    }
    for (const control::v1::Item& item : batch.items()) {
      if (!client->IsCancelled(item.request_id())) return true;
    }
    return false;  // every request of the batch was cancelled
  };
  absl::StatusOr<std::vector<pipelines::GenerationResult>> results =
      requests.ok() ? engine.Generate(*requests, on_step) : requests.status();
  const Clock::time_point end = Clock::now();
  if (client == nullptr) {
    if (results.ok() || results.status().code() == absl::StatusCode::kCancelled ||
        results.status().code() == absl::StatusCode::kInvalidArgument) {
      return absl::OkStatus();
    }
    return results.status();
  }
  control::v1::WorkerMessage m;
  control::v1::BatchDone& done = *m.mutable_done();
  done.set_batch_id(batch.batch_id());
  done.set_gang_s(Seconds(end - start));
  if (results.ok()) {
    const PhaseTimes phases = engine.last_phase_times();
    done.set_text_encoding_s(phases.text_encoding_s);
    done.set_denoising_s(phases.denoising_s);
    done.set_vae_s(phases.vae_s);
    done.set_vae_peak_activation_bytes(phases.vae_peak_activation_bytes);
  }
  for (const CommTotals& c : engine.comm_totals()) {
    control::v1::CommStat& stat = *done.add_comm();
    stat.set_method(c.method);
    stat.set_bytes_sent(c.bytes_sent);
    stat.set_seconds(c.seconds);
  }
  absl::Status broken;
  if (results.ok()) {
    for (size_t i = 0; i < results->size(); ++i) {
      const at::Tensor image = (*results)[i].image.contiguous();
      control::v1::ItemImage& out = *done.add_images();
      out.set_request_id(batch.items(static_cast<int>(i)).request_id());
      out.set_height(static_cast<int>(image.size(0)));
      out.set_width(static_cast<int>(image.size(1)));
      out.set_rgb(reinterpret_cast<const char*>(image.data_ptr<uint8_t>()),
                  static_cast<size_t>(image.numel()));
      const int cached = (*results)[i].cached_steps();
      out.set_computed_steps(static_cast<int>((*results)[i].step_computed.size()) - cached);
      out.set_cached_steps(cached);
    }
  } else {
    const absl::StatusCode code = results.status().code();
    const bool batch_level =
        code == absl::StatusCode::kCancelled || code == absl::StatusCode::kInvalidArgument;
    done.set_code(static_cast<int>(batch_level ? code : absl::StatusCode::kUnavailable));
    done.set_message(std::string(results.status().message()));
    if (!batch_level) broken = results.status();
  }
  client->Send(m);
  client->ClearCancelled();
  return broken;
}

// Runs a running set that `first` starts, until it drains; requests that
// arrive meanwhile join it (ServedSet). On rank 0 `client` is set: the
// set's Progress and Left messages, then a BatchDone without images, go
// to the frontend. Returns an error only when the gang is broken (rank 0
// reports it as BatchDone UNAVAILABLE first).
absl::Status RunServedSet(const control::v1::RunBatch& first, GangEngine& engine, ControlClient* client,
                          parallel::ProcessGroups& groups) {
  const Clock::time_point start = Clock::now();
  ServedSet set(first, client, groups.control(), groups.world().world_size());
  const absl::Status s = engine.RunSet(set);
  if (client == nullptr) return s;
  control::v1::WorkerMessage m;
  control::v1::BatchDone& done = *m.mutable_done();
  done.set_batch_id(first.batch_id());
  done.set_set_drained(true);
  done.set_gang_s(Seconds(Clock::now() - start));
  for (const CommTotals& c : engine.comm_totals()) {
    control::v1::CommStat& stat = *done.add_comm();
    stat.set_method(c.method);
    stat.set_bytes_sent(c.bytes_sent);
    stat.set_seconds(c.seconds);
  }
  if (!s.ok()) {
    done.set_code(static_cast<int>(absl::StatusCode::kUnavailable));
    done.set_message(std::string(s.message()));
  }
  client->Send(m);
  return s;
}

}  // namespace

absl::Status RunServeLoop(const core::WorkerOptions& options, const std::string& device_name,
                          const std::string& dtype_name, GangEngine& engine,
                          parallel::ProcessGroups& groups) {
  parallel::Communicator& control = groups.control();
  const bool root = groups.world().rank() == 0;
  std::unique_ptr<ControlClient> client;
  if (root) {
    auto c = ControlClient::Connect(options.control_address,
                                    MakeHello(options, device_name, dtype_name, engine),
                                    absl::Now() + absl::Seconds(options.rendezvous_timeout_s));
    if (!c.ok()) {
      // Tell the followers to stop rather than leave them waiting.
      (void)BroadcastGangMessage(control, GangMessage{GangCommand::kStop, ""});
      return c.status();
    }
    client = *std::move(c);
    std::fprintf(stderr, "ditserve-worker: rank 0 attached to %s\n",
                 options.control_address.c_str());
  }
  // Keep-alives well inside the collective timeout.
  const absl::Duration idle =
      std::min(absl::Seconds(1), absl::Seconds(options.collective_timeout_s) / 4);
  while (true) {
    GangMessage message;
    control::v1::RunBatch batch;
    if (root) {
      auto next = client->NextBatch(idle);
      if (!next.ok()) {
        message.command = GangCommand::kStop;
      } else if (next->has_value()) {
        batch = std::move(**next);
        message.command = GangCommand::kRun;
        if (groups.world().world_size() > 1) message.payload = batch.SerializeAsString();
      }
    }
    // A gang of one has nobody to tell (and saves the collective's latency).
    auto received = groups.world().world_size() == 1
                        ? absl::StatusOr<GangMessage>(message)
                        : BroadcastGangMessage(control, message);
    if (!received.ok()) return received.status();
    if (received->command == GangCommand::kStop) return absl::OkStatus();
    if (received->command == GangCommand::kKeepAlive) continue;
    if (!root && !batch.ParseFromString(received->payload)) {
      return absl::DataLossError("rank 0 broadcast a batch that does not parse");
    }
    // Every rank decides alike from the same batch.
    const absl::Status s = JoinsSets(batch) ? RunServedSet(batch, engine, client.get(), groups)
                                                                      : RunBatch(batch, engine, client.get());
    if (!s.ok()) return s;
  }
}

}  // namespace ditserve::worker::serve
