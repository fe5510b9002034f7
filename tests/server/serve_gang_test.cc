// ditserve-server with gangs of 2 and 4 ranks (USP, CFG, data parallel):
// images equal the serial pipeline's (to float rounding), batches split
// across data-parallel replicas, and a kill -9 of a non-zero rank fails the
// request in flight and restarts the whole gang.

#include <gtest/gtest.h>
#include <signal.h>

#include <cstdlib>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "ditserve/v1/generation.grpc.pb.h"
#include "planner/auto_parallel.h"
#include "tests/harness/binaries.h"
#include "tests/server/image_decode.h"
#include "tests/server/server_process.h"
#include "util/process_gang.h"

namespace ditserve {
namespace {

using testing::ServerProcess;

v1::GenerateRequest Request(int steps, uint64_t seed) {
  v1::GenerateRequest r;
  r.set_prompt("a red circle on a blue background");
  r.set_num_inference_steps(steps);
  r.set_seed(seed);
  return r;
}

// ditserve-generate's image for the same request (the serial reference).
testing::DecodedImage Reference(const std::string& model, int steps, uint64_t seed,
                                const std::vector<std::string>& extra = {}) {
  const std::string out = absl::StrCat(::testing::TempDir(), "/gang_ref_", getpid(), "_", seed, ".png");
  util::ChildSpec spec;
  spec.argv = {testing::BinDir() + "/ditserve-generate", "--model=" + model,
               "--prompt=a red circle on a blue background",
               absl::StrCat("--num_inference_steps=", steps), absl::StrCat("--seed=", seed),
               "--threads=1", "--output=" + out};
  for (const std::string& e : extra) spec.argv.push_back(e);
  spec.output_path = out + ".log";
  auto gang = util::ProcessGang::Start({spec});
  EXPECT_TRUE(gang.ok());
  auto r = (*gang)->Wait(absl::Now() + absl::Seconds(300), false, absl::Seconds(1));
  EXPECT_TRUE(r.exits[0].ok());
  std::ifstream in(out, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  unlink(out.c_str());
  unlink((out + ".log").c_str());
  auto decoded = testing::DecodePng(bytes);
  EXPECT_TRUE(decoded.ok()) << decoded.status();
  return decoded.ok() ? *decoded : testing::DecodedImage{};
}

// Pixels equal up to float rounding through the VAE: at most 2 levels.
void ExpectClose(const testing::DecodedImage& a, const testing::DecodedImage& b) {
  ASSERT_EQ(a.rgb.size(), b.rgb.size());
  int worst = 0;
  for (size_t i = 0; i < a.rgb.size(); ++i) worst = std::max(worst, std::abs(a.rgb[i] - b.rgb[i]));
  EXPECT_LE(worst, 2);
}

void GenerateMatchesSerial(const std::vector<std::string>& gang_flags, int batch) {
  auto model = testing::TinyModel();
  ASSERT_TRUE(model.ok()) << model.status();
  std::vector<std::string> args = {"--model=" + *model, "--spawn_workers", "--device=cpu",
                                   "--threads=1", absl::StrCat("--max_batch_size=", batch)};
  for (const auto& f : gang_flags) args.push_back(f);
  auto server = ServerProcess::Start(args);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->WaitHealth("SERVING", absl::Seconds(300)).ok()) << (*server)->Log();
  auto stub = v1::GenerationService::NewStub((*server)->channel());
  v1::GenerateRequest r = Request(3, 21);
  r.set_num_images(batch);  // one batch of `batch` images (seeds 21, 22, ...)
  grpc::ClientContext context;
  v1::GenerateResponse response;
  const grpc::Status status = stub->Generate(&context, r, &response);
  ASSERT_TRUE(status.ok()) << status.error_message() << "\n" << (*server)->Log();
  ASSERT_EQ(response.images_size(), batch);
  EXPECT_EQ(response.timings().batch_size(), batch);
  for (int i = 0; i < batch; ++i) {
    auto got = testing::DecodePng(response.images(i).data());
    ASSERT_TRUE(got.ok());
    ExpectClose(*got, Reference(*model, 3, 21 + i));
  }
}

// --parallel auto: the server starts the gang the planner picks for --nproc
// ranks (the same choice ChooseParallelConfig makes here, logged), and the
// gang's image equals the serial pipeline's. Bad combinations exit 2.
TEST(ServeGang, ParallelAutoStartsThePlannersChoice) {
  auto model = testing::TinyModel();
  ASSERT_TRUE(model.ok()) << model.status();
  const char* source = std::getenv("DITSERVE_SOURCE_DIR");
  const std::string hardware = std::string(source ? source : ".") + "/hardware/cpu-dev.json";
  planner::AutoParallelRequest a;
  a.model_dir = *model;
  a.hardware_path = hardware;
  a.world_size = 2;
  a.steps = 28;  // --default_steps
  auto expected = planner::ChooseParallelConfig(a);
  ASSERT_TRUE(expected.ok()) << expected.status();
  auto server = ServerProcess::Start({"--model=" + *model, "--spawn_workers", "--device=cpu", "--threads=1",
                                      "--nproc=2", "--parallel=auto", "--hardware=" + hardware});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->WaitHealth("SERVING", absl::Seconds(300)).ok()) << (*server)->Log();
  EXPECT_NE((*server)->Log().find("--parallel auto chose " + expected->config.ToString() + " ("), std::string::npos)
      << (*server)->Log();
  auto stub = v1::GenerationService::NewStub((*server)->channel());
  grpc::ClientContext context;
  v1::GenerateResponse response;
  const grpc::Status status = stub->Generate(&context, Request(3, 21), &response);
  ASSERT_TRUE(status.ok()) << status.error_message() << "\n" << (*server)->Log();
  auto got = testing::DecodePng(response.images(0).data());
  ASSERT_TRUE(got.ok());
  ExpectClose(*got, Reference(*model, 3, 21));

  const std::string bin = testing::BinDir() + "/ditserve-server";
  const std::vector<std::pair<std::vector<std::string>, std::string>> bad = {
      {{"--parallel=auto", "--nproc=2", "--ulysses_degree=2", "--hardware=" + hardware}, "chooses the degrees"},
      {{"--parallel=auto", "--nproc=2"}, "needs --hardware"},
      {{"--parallel=auto", "--hardware=" + hardware}, "needs --spawn_workers, --model and --nproc N"},
      {{"--parallel=fastest", "--nproc=2"}, "--parallel must be manual or auto"},
      {{"--hardware=" + hardware}, "--hardware is for --parallel auto"},
      {{"--parallel=auto", "--nproc=2", "--hardware=/nonexistent.json"}, "cannot read the hardware profile"},
  };
  for (const auto& [flags, message] : bad) {
    std::vector<std::string> argv = {bin, "--model=" + *model, "--spawn_workers", "--device=cpu", "--port=0",
                                     "--metrics_port=0"};
    if (flags[0].rfind("--parallel=auto", 0) == 0 && flags.size() == 2 && flags[1].rfind("--hardware", 0) == 0) {
      argv = {bin, "--port=0", "--metrics_port=0"};  // no --spawn_workers, no --model
    }
    argv.insert(argv.end(), flags.begin(), flags.end());
    const auto r = testing::RunCommand(argv, {}, absl::Seconds(60));
    EXPECT_EQ(r.exit_code, 2) << message << "\n" << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << r.output;
  }
}

TEST(ServeGang, Ulysses2EqualsSerial) {
  GenerateMatchesSerial({"--ulysses_degree=2"}, 1);
}

// --use_parallel_vae through the server: every rank decodes a band of the
// image, which equals the serial pipeline's; the VAE phase shows in the
// response's timings and the Prometheus stage histogram, and the peak
// gauge is the 2-rank band's. The tiny preset at 128 px: 16 latent rows,
// 8 per rank; the band's largest map is the last level's 8 channels × (64 +
// 2 halo) rows × 128 columns in float32, against 8 × 128 × 128 whole.
TEST(ServeGang, ParallelVaeOverTwoRanksEqualsSerial) {
  auto model = testing::TinyModel();
  ASSERT_TRUE(model.ok()) << model.status();
  auto server = ServerProcess::Start({"--model=" + *model, "--spawn_workers", "--device=cpu", "--threads=1",
                                      "--ulysses_degree=2", "--use_parallel_vae"});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->WaitHealth("SERVING", absl::Seconds(300)).ok()) << (*server)->Log();
  auto stub = v1::GenerationService::NewStub((*server)->channel());
  grpc::ClientContext context;
  v1::GenerateResponse response;
  const grpc::Status status = stub->Generate(&context, Request(3, 21), &response);
  ASSERT_TRUE(status.ok()) << status.error_message() << "\n" << (*server)->Log();
  ASSERT_EQ(response.images_size(), 1);
  auto got = testing::DecodePng(response.images(0).data());
  ASSERT_TRUE(got.ok());
  ExpectClose(*got, Reference(*model, 3, 21));
  EXPECT_GT(response.timings().vae_s(), 0);
  auto text = testing::ScrapeMetrics((*server)->metrics_port());
  ASSERT_TRUE(text.ok()) << text.status();
  const testing::MetricsText m = testing::ParseMetrics(*text);
  EXPECT_EQ(m.Sum("ditserve_vae_seconds_count"), 1);
  EXPECT_GT(m.Sum("ditserve_vae_seconds_sum"), 0);
  EXPECT_EQ(m.Sum("ditserve_vae_peak_activation_bytes"), 8 * 66 * 128 * 4);
}

TEST(ServeGang, DataParallel2TimesUlysses2SplitsABatchOfTwo) {
  GenerateMatchesSerial({"--data_parallel_degree=2", "--ulysses_degree=2"}, 2);
}

TEST(ServeGang, CfgParallelNeedsTrueCfgAndEqualsSerial) {
  auto model = testing::TinyModel();
  ASSERT_TRUE(model.ok()) << model.status();
  auto server = ServerProcess::Start({"--model=" + *model, "--spawn_workers", "--device=cpu",
                                      "--threads=1", "--use_cfg_parallel"});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->WaitHealth("SERVING", absl::Seconds(300)).ok()) << (*server)->Log();
  auto stub = v1::GenerationService::NewStub((*server)->channel());
  {
    grpc::ClientContext context;
    v1::GenerateResponse response;
    const grpc::Status refused = stub->Generate(&context, Request(2, 5), &response);
    EXPECT_EQ(refused.error_code(), grpc::INVALID_ARGUMENT);
    EXPECT_NE(refused.error_message().find("--use_cfg_parallel"), std::string::npos)
        << refused.error_message();
  }
  v1::GenerateRequest r = Request(3, 5);
  r.set_negative_prompt("blurry");
  r.set_true_cfg_scale(4);
  grpc::ClientContext context;
  v1::GenerateResponse response;
  const grpc::Status status = stub->Generate(&context, r, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  auto got = testing::DecodePng(response.images(0).data());
  ASSERT_TRUE(got.ok());
  ExpectClose(*got, Reference(*model, 3, 5, {"--negative_prompt=blurry", "--true_cfg_scale=4"}));
}

TEST(ServeGang, KillNineOfRankOneRestartsTheWholeGang) {
  auto model = testing::TinyModel();
  ASSERT_TRUE(model.ok()) << model.status();
  auto server = ServerProcess::Start({"--model=" + *model, "--spawn_workers", "--device=cpu",
                                      "--threads=1", "--ring_degree=2", "--max_steps=1000",
                                      "--max_pixels=65536", "--restart_backoff_s=0.2"});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& s = **server;
  ASSERT_TRUE(s.WaitHealth("SERVING", absl::Seconds(300)).ok()) << s.Log();
  std::vector<pid_t> ranks = s.Children();
  ASSERT_EQ(ranks.size(), 2u);
  std::sort(ranks.begin(), ranks.end());  // rank 1 was started second

  auto stub = v1::GenerationService::NewStub(s.channel());
  grpc::ClientContext context;
  v1::GenerateRequest r = Request(1000, 1);
  r.set_height(256);
  r.set_width(256);
  auto reader = stub->GenerateStream(&context, r);
  v1::GenerateStreamResponse m;
  ASSERT_TRUE(reader->Read(&m));
  kill(ranks[1], SIGKILL);
  while (reader->Read(&m)) {
  }
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::UNAVAILABLE) << status.error_message();
  ASSERT_TRUE(s.WaitHealth("SERVING", absl::Seconds(300)).ok()) << s.Log();
  EXPECT_EQ(s.Children().size(), 2u);
  grpc::ClientContext again;
  v1::GenerateResponse response;
  EXPECT_TRUE(stub->Generate(&again, Request(1, 2), &response).ok());
}

}  // namespace
}  // namespace ditserve
