// End-to-end tests of ditserve-server's life cycle: health transitions with
// separately started workers (attach mode), a kill -9 of a rank during a
// request (spawn mode restarts the gang), SIGTERM draining, and /metrics.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "ditserve/v1/generation.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/harness/binaries.h"
#include "tests/harness/reference.h"
#include "tests/server/image_decode.h"
#include "tests/server/server_process.h"
#include "util/process_gang.h"

namespace ditserve {
namespace {

using testing::ServerProcess;

v1::GenerateRequest Request(int steps, uint64_t seed, int size = 128) {
  v1::GenerateRequest r;
  r.set_prompt("a green square");
  r.set_num_inference_steps(steps);
  r.set_seed(seed);
  r.set_height(size);
  r.set_width(size);
  return r;
}

grpc::Status Generate(ServerProcess& server, const v1::GenerateRequest& r,
                      v1::GenerateResponse* out = nullptr) {
  auto stub = v1::GenerationService::NewStub(server.channel());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(300)));
  v1::GenerateResponse response;
  return stub->Generate(&context, r, out != nullptr ? out : &response);
}

std::string Model() {
  auto model = testing::TinyModel();
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *model : "";
}

// Starts a long request on a stream, waits for its first step, sends `sig`
// to the gang's only rank, and returns the request's terminal status.
grpc::Status SignalTheRankDuringARequest(ServerProcess& s, int sig) {
  const std::vector<pid_t> ranks = s.Children();
  EXPECT_EQ(ranks.size(), 1u);
  if (ranks.size() != 1) return grpc::Status(grpc::INTERNAL, "no rank");
  auto stub = v1::GenerationService::NewStub(s.channel());
  grpc::ClientContext context;
  auto reader = stub->GenerateStream(&context, Request(1000, 1, 256));
  v1::GenerateStreamResponse m;
  EXPECT_TRUE(reader->Read(&m));  // it is running
  kill(ranks[0], sig);
  while (reader->Read(&m)) {
  }
  return reader->Finish();
}

TEST(ServeLifecycle, HealthFollowsTheAttachedGang) {
  const std::string model = Model();
  auto server = ServerProcess::Start({"--model=" + model});  // attach mode: no spawn
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& s = **server;
  EXPECT_EQ(*s.Health(), "NOT_SERVING");
  EXPECT_EQ(*s.Health("ditserve.v1.GenerationService"), "NOT_SERVING");
  EXPECT_EQ(Generate(s, Request(1, 1)).error_code(), grpc::UNAVAILABLE);
  // Watch streams the transitions.
  auto health = grpc::health::v1::Health::NewStub(s.channel());
  grpc::ClientContext watch_context;
  grpc::health::v1::HealthCheckRequest watch_request;
  watch_request.set_service("ditserve.v1.GenerationService");
  auto watch = health->Watch(&watch_context, watch_request);
  grpc::health::v1::HealthCheckResponse seen;
  ASSERT_TRUE(watch->Read(&seen));
  EXPECT_EQ(seen.status(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);

  // A gang started separately (ditserve-run, 2 ranks) attaches to the
  // control address.
  util::ChildSpec worker;
  worker.argv = {testing::BinDir() + "/ditserve-run", "--nproc=2", "--ulysses_degree=2",
                 "--model=" + model, "--device=cpu", "--threads=1",
                 "--control_address=" + s.control_address()};
  worker.output_path = absl::StrCat(::testing::TempDir(), "/attach_worker_", getpid(), ".log");
  auto gang = util::ProcessGang::Start({worker});
  ASSERT_TRUE(gang.ok());
  ASSERT_TRUE(s.WaitHealth("SERVING", absl::Seconds(300)).ok());
  EXPECT_EQ(*s.Health("ditserve.v1.GenerationService"), "SERVING");
  ASSERT_TRUE(watch->Read(&seen));
  EXPECT_EQ(seen.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_TRUE(Generate(s, Request(1, 1)).ok());

  (*gang)->KillAll();
  EXPECT_TRUE(s.WaitHealth("NOT_SERVING", absl::Seconds(60)).ok());
  ASSERT_TRUE(watch->Read(&seen));
  EXPECT_EQ(seen.status(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  watch_context.TryCancel();
  unlink(worker.output_path.c_str());
}

TEST(ServeLifecycle, KillNineOfARankFailsTheRequestAndTheGangRestarts) {
  auto server = ServerProcess::Start({"--model=" + Model(), "--spawn_workers", "--device=cpu",
                                      "--threads=1", "--max_steps=1000", "--restart_backoff_s=0.2"});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& s = **server;
  ASSERT_TRUE(s.WaitHealth("SERVING", absl::Seconds(300)).ok());
  const grpc::Status status = SignalTheRankDuringARequest(s, SIGKILL);
  EXPECT_EQ(status.error_code(), grpc::UNAVAILABLE) << status.error_message();

  ASSERT_TRUE(s.WaitHealth("SERVING", absl::Seconds(300)).ok());
  EXPECT_TRUE(Generate(s, Request(1, 2)).ok());
  auto text = testing::ScrapeMetrics(s.metrics_port());
  ASSERT_TRUE(text.ok());
  const testing::MetricsText metrics = testing::ParseMetrics(*text);
  EXPECT_EQ(metrics.Sum("ditserve_gang_restarts_total"), 1);
  EXPECT_EQ(metrics.Sum("ditserve_gang_ready"), 1);
  EXPECT_EQ(metrics.Sum("ditserve_requests_total", {"code=\"UNAVAILABLE\""}), 1);
}

// The gang's store port, picked by the server, can be taken before rank 0
// binds it; rank 0 then exits 3 at once. The server starts the gang again on
// a new port straight away: no backoff, no restart counted (nothing was lost).
// The wrapper plays a rank 0 that finds its port taken twice, then runs the
// real worker.
TEST(ServeLifecycle, AGangPortTakenBeforeRankZeroBindsItIsPickedAgain) {
  const std::string dir = ::testing::TempDir();
  const std::string starts = absl::StrCat(dir, "/server_rank0_starts_", getpid());
  const std::string script = absl::StrCat(dir, "/server_port_taken_worker_", getpid(), ".sh");
  {
    std::ofstream out(script);
    out << "#!/bin/sh\n"
        << "echo x >> " << starts << "\n"
        << "[ $(wc -l < " << starts << ") -le 2 ] && exit 3\n"
        << "exec " << testing::BinDir() << "/ditserve-worker \"$@\"\n";
  }
  chmod(script.c_str(), 0755);
  unlink(starts.c_str());
  auto server = ServerProcess::Start({"--model=" + Model(), "--spawn_workers", "--device=cpu", "--threads=1",
                                      "--worker_binary=" + script, "--restart_backoff_s=60"});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& s = **server;
  // With a 60 s backoff, SERVING within 30 s means no backoff was taken.
  ASSERT_TRUE(s.WaitHealth("SERVING", absl::Seconds(30)).ok()) << s.Log();
  EXPECT_TRUE(Generate(s, Request(1, 2)).ok());
  const std::string log = s.Log();
  size_t retries = 0;
  for (size_t at = log.find("was taken before rank 0 bound it; starting the gang again"); at != std::string::npos;
       at = log.find("was taken before rank 0 bound it; starting the gang again", at + 1)) {
    ++retries;
  }
  EXPECT_EQ(retries, 2u) << log;
  auto text = testing::ScrapeMetrics(s.metrics_port());
  ASSERT_TRUE(text.ok());
  const testing::MetricsText metrics = testing::ParseMetrics(*text);
  EXPECT_EQ(metrics.Sum("ditserve_gang_restarts_total"), 0);
  EXPECT_EQ(metrics.Sum("ditserve_gang_ready"), 1);
  unlink(script.c_str());
  unlink(starts.c_str());
}

TEST(ServeLifecycle, AHungRankFailsTheRequestAndTheGangRestarts) {
  auto server = ServerProcess::Start({"--model=" + Model(), "--spawn_workers", "--device=cpu",
                                      "--threads=1", "--max_steps=1000", "--step_timeout_s=8",
                                      "--shutdown_grace_s=1", "--restart_backoff_s=0.2"});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& s = **server;
  ASSERT_TRUE(s.WaitHealth("SERVING", absl::Seconds(300)).ok()) << s.Log();
  // Warm up (the first run's first step includes one-time work).
  ASSERT_TRUE(Generate(s, Request(1, 1)).ok()) << s.Log();
  const std::vector<pid_t> ranks = s.Children();
  // SIGSTOP: hung — alive, attached, silent.
  const grpc::Status status = SignalTheRankDuringARequest(s, SIGSTOP);
  EXPECT_EQ(status.error_code(), grpc::UNAVAILABLE) << status.error_message();
  EXPECT_NE(status.error_message().find("no progress"), std::string::npos) << status.error_message();
  ASSERT_TRUE(s.WaitHealth("SERVING", absl::Seconds(300)).ok());
  EXPECT_TRUE(Generate(s, Request(1, 2)).ok());
  EXPECT_EQ(kill(ranks[0], 0), -1);  // the hung rank was killed (and reaped)
}

TEST(ServeLifecycle, ClientCommands) {
  auto server = ServerProcess::Start({"--model=" + Model(), "--spawn_workers", "--device=cpu",
                                      "--threads=1"});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& s = **server;
  ASSERT_TRUE(s.WaitHealth("SERVING", absl::Seconds(300)).ok());
  const std::string dir = absl::StrCat(::testing::TempDir(), "/client_", getpid());
  auto run = [&](std::vector<std::string> args) {
    util::ChildSpec spec;
    spec.argv = {testing::BinDir() + "/ditserve-client", "--server=" + s.address()};
    for (auto& a : args) spec.argv.push_back(a);
    spec.output_path = dir + ".log";
    auto gang = util::ProcessGang::Start({spec});
    EXPECT_TRUE(gang.ok());
    auto r = (*gang)->Wait(absl::Now() + absl::Seconds(300), false, absl::Seconds(1));
    return std::make_pair(r.exits[0], testing::ReadTextFile(spec.output_path));
  };
  auto [health, health_out] = run({"health"});
  EXPECT_TRUE(health.ok()) << health_out;
  EXPECT_EQ(health_out, "SERVING\n");
  auto [info, info_out] = run({"info", "--json"});
  EXPECT_TRUE(info.ok()) << info_out;
  EXPECT_NE(info_out.find("\"default_size\":128"), std::string::npos) << info_out;

  auto [gen, gen_out] = run({"generate", "--prompt=a blue triangle", "--num_inference_steps=3",
                             "--seed=11", "--num_images=2", "--format=webp", "--quality=100",
                             "--output=" + dir + ".webp"});
  ASSERT_TRUE(gen.ok()) << gen_out;
  EXPECT_NE(gen_out.find("step 3/3"), std::string::npos) << gen_out;  // the progress bar
  EXPECT_NE(gen_out.find("seed 12)"), std::string::npos) << gen_out;
  EXPECT_NE(gen_out.find("timings: queued"), std::string::npos) << gen_out;
  for (int i = 0; i < 2; ++i) {
    const std::string path = absl::StrCat(dir, "_", i, ".webp");
    std::ifstream in(path, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto decoded = testing::DecodeWebp(bytes);
    EXPECT_TRUE(decoded.ok()) << path;
    unlink(path.c_str());
  }
  auto [bad, bad_out] = run({"generate", "--prompt=x", "--height=100", "--output=" + dir + ".png"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad_out.find("INVALID_ARGUMENT: height must be a multiple of 16"), std::string::npos) << bad_out;

  auto [bench, bench_out] = run({"bench", "--concurrency=3", "--requests=6", "--num_inference_steps=1",
                                 "--prompt=x", "--json"});
  EXPECT_TRUE(bench.ok()) << bench_out;
  EXPECT_NE(bench_out.find("\"sent\": 6, \"ok\": 6, \"errors\": {}"), std::string::npos) << bench_out;
  for (const char* key : {"\"overhead_ms\"", "\"encoding_ms\"", "\"dispatch_ms\"", "\"transport_ms\""}) {
    EXPECT_NE(bench_out.find(key), std::string::npos) << key << " in " << bench_out;
  }
  // Open loop: 5 Poisson arrivals at 20 per second, every one answered.
  auto [open, open_out] = run({"bench", "--rate=20", "--requests=5", "--num_inference_steps=1", "--prompt=x", "--json"});
  EXPECT_TRUE(open.ok()) << open_out;
  EXPECT_NE(open_out.find("\"rate\": 20.0000"), std::string::npos) << open_out;
  EXPECT_NE(open_out.find("\"sent\": 5, \"ok\": 5, \"errors\": {}"), std::string::npos) << open_out;
  auto [bad_rate, bad_rate_out] = run({"bench", "--rate=-1", "--requests=1", "--prompt=x"});
  EXPECT_EQ(bad_rate.exit_code, 2);
  EXPECT_NE(bad_rate_out.find("--rate must be in [0, 10000]"), std::string::npos) << bad_rate_out;
  unlink((dir + ".log").c_str());
}

TEST(ServeLifecycle, SigtermDrainsRequestsInFlightThenExitsZero) {
  auto server = ServerProcess::Start({"--model=" + Model(), "--spawn_workers", "--device=cpu",
                                      "--threads=1", "--drain_timeout=120"});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& s = **server;
  ASSERT_TRUE(s.WaitHealth("SERVING", absl::Seconds(300)).ok());

  auto stub = v1::GenerationService::NewStub(s.channel());
  grpc::ClientContext context;
  auto reader = stub->GenerateStream(&context, Request(60, 3));
  v1::GenerateStreamResponse m;
  ASSERT_TRUE(reader->Read(&m));  // running
  s.Signal(SIGTERM);
  ASSERT_TRUE(s.WaitHealth("NOT_SERVING", absl::Seconds(30)).ok());
  EXPECT_EQ(Generate(s, Request(1, 4)).error_code(), grpc::UNAVAILABLE);
  bool result = false;
  while (reader->Read(&m)) result = result || m.has_result();
  const grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(result);
  auto exit = s.WaitExit(absl::Seconds(60));
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_TRUE(exit->ok()) << exit->Describe() << "\n" << s.Log();
}

TEST(ServeLifecycle, MetricsArePresentWithTheirTypesAndCountTheRequests) {
  auto server = ServerProcess::Start({"--model=" + Model(), "--spawn_workers", "--device=cpu",
                                      "--threads=1"});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& s = **server;
  ASSERT_TRUE(s.WaitHealth("SERVING", absl::Seconds(300)).ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Generate(s, Request(2, i, 64)).ok());
  v1::GenerateRequest two = Request(2, 9, 64);
  two.set_num_images(2);
  ASSERT_TRUE(Generate(s, two).ok());
  EXPECT_EQ(Generate(s, Request(2, 1, 100)).error_code(), grpc::INVALID_ARGUMENT);

  auto text = testing::ScrapeMetrics(s.metrics_port());
  ASSERT_TRUE(text.ok()) << text.status();
  const testing::MetricsText m = testing::ParseMetrics(*text);
  const std::map<std::string, std::string> documented = {
      {"ditserve_requests_total", "counter"},
      {"ditserve_request_latency_seconds", "histogram"},
      {"ditserve_queue_time_seconds", "histogram"},
      {"ditserve_denoising_seconds", "histogram"},
      {"ditserve_step_seconds", "histogram"},
      {"ditserve_vae_seconds", "histogram"},
      {"ditserve_encoding_seconds", "histogram"},
      {"ditserve_queue_depth", "gauge"},
      {"ditserve_requests_in_flight", "gauge"},
      {"ditserve_images_generated_total", "counter"},
      {"ditserve_pixels_generated_total", "counter"},
      {"ditserve_gang_ready", "gauge"},
      {"ditserve_gang_restarts_total", "counter"},
      {"ditserve_communication_bytes_total", "counter"},
      {"ditserve_communication_seconds_total", "counter"},
      {"ditserve_frontend_resident_memory_bytes", "gauge"},
      {"ditserve_gang_resident_memory_bytes", "gauge"},
      {"ditserve_vae_peak_activation_bytes", "gauge"},
  };
  for (const auto& [name, type] : documented) {
    auto it = m.types.find(name);
    ASSERT_NE(it, m.types.end()) << name << " missing from\n" << *text;
    EXPECT_EQ(it->second, type) << name;
  }
  EXPECT_EQ(m.Sum("ditserve_requests_total", {"code=\"OK\""}), 4);
  EXPECT_EQ(m.Sum("ditserve_requests_total", {"code=\"INVALID_ARGUMENT\""}), 1);
  EXPECT_EQ(m.Sum("ditserve_requests_total"), 5);
  EXPECT_EQ(m.Sum("ditserve_request_latency_seconds_count"), 5);
  EXPECT_EQ(m.Sum("ditserve_queue_time_seconds_count"), 4);
  EXPECT_EQ(m.Sum("ditserve_denoising_seconds_count"), 4);
  EXPECT_EQ(m.Sum("ditserve_encoding_seconds_count"), 4);
  EXPECT_EQ(m.Sum("ditserve_step_seconds_count"), 4);  // steps after the first of each run
  EXPECT_EQ(m.Sum("ditserve_images_generated_total"), 5);
  EXPECT_EQ(m.Sum("ditserve_pixels_generated_total"), 5 * 64 * 64);
  EXPECT_EQ(m.Sum("ditserve_queue_depth"), 0);
  EXPECT_EQ(m.Sum("ditserve_requests_in_flight"), 0);
  EXPECT_EQ(m.Sum("ditserve_gang_ready"), 1);
  EXPECT_GT(m.Sum("ditserve_frontend_resident_memory_bytes"), 0);
  EXPECT_EQ(m.Sum("ditserve_vae_seconds_count"), 4);
  // The tiny preset's VAE (block_out_channels {8, 8, 16, 16}, two resnets
  // per level) on 8 × 8 latents: its largest map is a 3×3 convolution's
  // input at the last level, 8 channels × (64 + 2 padding rows) × 64 in
  // float32 (worker/models/vae DecodeActivationBytes; tests/worker/models/
  // vae_test checks the closed form against the measured walk).
  EXPECT_EQ(m.Sum("ditserve_vae_peak_activation_bytes"), 8 * 66 * 64 * 4);
  // Only bounded labels: model, parallel, code, method, le.
  for (const auto& [series, value] : m.samples) {
    if (series.rfind("ditserve_", 0) != 0) continue;  // prometheus-cpp's own exposer_* series
    const std::string labels = series.substr(series.find('{') == std::string::npos ? series.size() : series.find('{'));
    EXPECT_NE(labels.find("parallel=\"dp1_cfg1_pp1_u1_r1\""), std::string::npos) << series;
  }
}

}  // namespace
}  // namespace ditserve
