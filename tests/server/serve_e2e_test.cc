// End-to-end tests of ditserve-server with a spawned gang of one rank on
// CPU and the tiny model: images, formats, progress, validation, queue
// limits, deadlines, cancellation, metrics. One server is shared by the
// suite; each test leaves it idle.

#include <gtest/gtest.h>

#include <filesystem>

#include <atomic>
#include <fstream>
#include <functional>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "ditserve/v1/generation.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "tests/harness/binaries.h"
#include "tests/harness/reference.h"
#include "tests/server/image_decode.h"
#include "tests/server/server_process.h"
#include "util/process_gang.h"

namespace ditserve {
namespace {

using testing::ServerProcess;

class ServeE2E : public ::testing::Test {
 protected:
  // The suite's server starts with the first test (a failure to start fails
  // every test rather than skipping them).
  void SetUp() override {
    if (server_ == nullptr) {
      auto model = testing::TinyModel();
      ASSERT_TRUE(model.ok()) << model.status();
      model_ = new std::string(*model);
      auto server = ServerProcess::Start({"--model=" + *model, "--spawn_workers", "--device=cpu",
                                          "--threads=1", "--max_queue_size=2", "--max_steps=1000",
                                          "--max_images=4", "--max_pixels=65536",
                                          "--max_prompt_bytes=64", "--default_steps=4",
                                          "--max_teacache_threshold=1.5"});
      ASSERT_TRUE(server.ok()) << server.status();
      server_ = server->release();
    }
    ASSERT_TRUE(server_->WaitHealth("SERVING", absl::Seconds(300)).ok()) << server_->Log();
    stub_ = v1::GenerationService::NewStub(server_->channel());
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  v1::GenerateRequest Request(int steps, uint64_t seed, int size = 0) {
    v1::GenerateRequest r;
    r.set_height(size);
    r.set_width(size);
    r.set_prompt("a red circle on a blue background");
    r.set_num_inference_steps(steps);
    r.set_seed(seed);
    return r;
  }

  grpc::Status Generate(const v1::GenerateRequest& r, v1::GenerateResponse* out,
                        absl::Duration deadline = absl::Seconds(300)) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
    return stub_->Generate(&context, r, out);
  }

  // A long-running request on a stream: returns once its first step ran.
  struct Hog {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReader<v1::GenerateStreamResponse>> reader;
  };
  std::unique_ptr<Hog> StartHog() {
    auto hog = std::make_unique<Hog>();
    hog->reader = stub_->GenerateStream(&hog->context, Request(1000, 1, 256));
    v1::GenerateStreamResponse m;
    EXPECT_TRUE(hog->reader->Read(&m)) << server_->Log();
    EXPECT_TRUE(m.has_progress());
    return hog;
  }
  static grpc::Status StopHog(Hog& hog) {
    hog.context.TryCancel();
    v1::GenerateStreamResponse m;
    while (hog.reader->Read(&m)) {
    }
    return hog.reader->Finish();
  }

  // The image ditserve-generate draws for Request(steps, seed) with `flags`.
  absl::StatusOr<testing::DecodedImage> ReferenceImage(int steps, uint64_t seed,
                                                      const std::vector<std::string>& flags) {
    const std::string out = absl::StrCat(::testing::TempDir(), "/reference_", getpid(), ".png");
    util::ChildSpec spec;
    spec.argv = {testing::BinDir() + "/ditserve-generate", "--model=" + *model_,
                 "--prompt=a red circle on a blue background", absl::StrCat("--num_inference_steps=", steps),
                 absl::StrCat("--seed=", seed), "--threads=1", "--output=" + out};
    spec.argv.insert(spec.argv.end(), flags.begin(), flags.end());
    spec.output_path = out + ".log";
    auto gang = util::ProcessGang::Start({spec});
    if (!gang.ok()) return gang.status();
    auto r = (*gang)->Wait(absl::Now() + absl::Seconds(300), false, absl::Seconds(1));
    if (r.exits.empty() || !r.exits[0].ok()) {
      return absl::InternalError(absl::StrCat("ditserve-generate failed: ", testing::ReadTextFile(spec.output_path)));
    }
    std::ifstream in(out, std::ios::binary);
    const std::string png((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    unlink(out.c_str());
    unlink(spec.output_path.c_str());
    return testing::DecodePng(png);
  }

  static std::string* model_;
  static ServerProcess* server_;
  std::unique_ptr<v1::GenerationService::Stub> stub_;
};
std::string* ServeE2E::model_ = nullptr;
ServerProcess* ServeE2E::server_ = nullptr;

TEST_F(ServeE2E, PngEqualsDitserveGenerateForTheSameSeed) {
  v1::GenerateResponse response;
  const grpc::Status status = Generate(Request(3, 42), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.images_size(), 1);
  const v1::Image& image = response.images(0);
  EXPECT_EQ(image.seed(), 42u);
  EXPECT_EQ(image.format(), v1::IMAGE_FORMAT_PNG);
  auto decoded = testing::DecodePng(image.data());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->width, image.width());
  EXPECT_EQ(decoded->height, image.height());
  EXPECT_EQ(image.width(), 128);  // the tiny model's default size

  auto expected = ReferenceImage(3, 42, {});
  ASSERT_TRUE(expected.ok()) << expected.status();
  EXPECT_EQ(decoded->rgb, expected->rgb);

  const v1::Timings& t = response.timings();
  EXPECT_GT(t.total_s(), 0);
  EXPECT_GT(t.gang_s(), 0);
  EXPECT_GT(t.denoising_s(), 0);
  EXPECT_GE(t.total_s(), t.gang_s());
  EXPECT_EQ(t.batch_size(), 1);
}

TEST_F(ServeE2E, JpegAndWebpDecodeAndUnsetSeedsAreReturned) {
  v1::GenerateRequest r = Request(2, 0);
  r.clear_seed();
  r.set_num_images(2);
  r.set_output_format(v1::IMAGE_FORMAT_JPEG);
  r.set_quality(80);
  v1::GenerateResponse jpeg;
  ASSERT_TRUE(Generate(r, &jpeg).ok());
  ASSERT_EQ(jpeg.images_size(), 2);
  EXPECT_EQ(jpeg.images(1).seed(), jpeg.images(0).seed() + 1);
  for (const v1::Image& image : jpeg.images()) {
    auto d = testing::DecodeJpeg(image.data());
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(d->width, 128);
  }
  for (int quality : {50, 100}) {
    r.set_num_images(1);
    r.set_output_format(v1::IMAGE_FORMAT_WEBP);
    r.set_quality(quality);
    v1::GenerateResponse webp;
    ASSERT_TRUE(Generate(r, &webp).ok());
    auto d = testing::DecodeWebp(webp.images(0).data());
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(d->height, 128);
  }
}

TEST_F(ServeE2E, StreamSendsOneProgressEventPerStepThenTheResult) {
  grpc::ClientContext context;
  auto reader = stub_->GenerateStream(&context, Request(5, 7));
  v1::GenerateStreamResponse m;
  std::vector<int> steps;
  bool result = false;
  while (reader->Read(&m)) {
    ASSERT_FALSE(result) << "nothing may follow the result";
    if (m.has_progress()) {
      EXPECT_EQ(m.progress().total(), 5);
      steps.push_back(m.progress().step());
    } else {
      ASSERT_TRUE(m.has_result());
      EXPECT_EQ(m.result().images_size(), 1);
      result = true;
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(result);
  EXPECT_EQ(steps, (std::vector<int>{1, 2, 3, 4, 5}));
}

TEST_F(ServeE2E, BadInputsAreInvalidArgumentAndTheServerStaysUp) {
  struct Case {
    const char* field;
    std::function<void(v1::GenerateRequest&)> edit;
  };
  const std::vector<Case> cases = {
      {"prompt", [](auto& r) { r.set_prompt(std::string(65, 'x')); }},
      {"height", [](auto& r) { r.set_height(100); }},
      {"width", [](auto& r) { r.set_width(100000); }},
      {"height x width", [](auto& r) { r.set_height(512); r.set_width(512); }},
      {"num_inference_steps", [](auto& r) { r.set_num_inference_steps(1001); }},
      {"guidance_scale", [](auto& r) { r.set_guidance_scale(1e9); }},
      {"true_cfg_scale", [](auto& r) { r.set_true_cfg_scale(-2); }},
      {"num_images", [](auto& r) { r.set_num_images(99); }},
      {"output_format", [](auto& r) { r.set_output_format(static_cast<v1::ImageFormat>(42)); }},
      {"quality", [](auto& r) { r.set_quality(-5); }},
      {"priority", [](auto& r) { r.set_priority(101); }},
      {"step_cache", [](auto& r) { r.set_step_cache(static_cast<v1::StepCache>(7)); }},
      {"cache_threshold", [](auto& r) { r.set_step_cache(v1::STEP_CACHE_NONE); r.set_cache_threshold(0.1); }},
      {"cache_threshold must be in [0, 1.5]",  // --max_teacache_threshold
       [](auto& r) { r.set_step_cache(v1::STEP_CACHE_TEACACHE); r.set_cache_threshold(1.6); }},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest r = Request(2, 1);
    c.edit(r);
    v1::GenerateResponse response;
    const grpc::Status status = Generate(r, &response);
    EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT) << c.field;
    EXPECT_NE(status.error_message().find(c.field), std::string::npos)
        << c.field << ": " << status.error_message();
  }
  EXPECT_EQ(*server_->Health(), "SERVING");
  v1::GenerateResponse ok;
  EXPECT_TRUE(Generate(Request(1, 1), &ok).ok());
}

TEST_F(ServeE2E, FullQueueThenACancelFreesTheGang) {
  auto hog = StartHog();
  // The gang is busy: two requests fill the queue (--max_queue_size 2).
  std::atomic<int> ok{0};
  std::vector<std::thread> waiting;
  for (int i = 0; i < 2; ++i) {
    waiting.emplace_back([&, i] {
      auto stub = v1::GenerationService::NewStub(server_->channel());
      grpc::ClientContext context;
      v1::GenerateResponse response;
      if (stub->Generate(&context, Request(1, 100 + i), &response).ok()) ++ok;
    });
  }
  // Wait until both are queued (the queue depth gauge says so).
  const absl::Time until = absl::Now() + absl::Seconds(60);
  while (absl::Now() < until) {
    auto text = testing::ScrapeMetrics(server_->metrics_port());
    if (text.ok() && testing::ParseMetrics(*text).Sum("ditserve_queue_depth") == 2) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  v1::GenerateResponse response;
  const grpc::Status full = Generate(Request(1, 3), &response);
  EXPECT_EQ(full.error_code(), grpc::RESOURCE_EXHAUSTED) << full.error_message();
  EXPECT_NE(full.error_message().find("max_queue_size"), std::string::npos);
  // Cancelling the running request frees the gang for the queued ones.
  EXPECT_EQ(StopHog(*hog).error_code(), grpc::CANCELLED);
  for (std::thread& t : waiting) t.join();
  EXPECT_EQ(ok.load(), 2);
  // The cancelled run stopped early: far fewer than its 1000 steps ran.
  auto text = testing::ScrapeMetrics(server_->metrics_port());
  ASSERT_TRUE(text.ok());
  EXPECT_LT(testing::ParseMetrics(*text).Sum("ditserve_step_seconds_count"), 500);
}

TEST_F(ServeE2E, CompatibleQueuedRequestsRunAsOneBatch) {
  auto hog = StartHog();
  std::vector<v1::GenerateResponse> responses(2);
  std::vector<std::thread> waiting;
  for (int i = 0; i < 2; ++i) {
    waiting.emplace_back([&, i] {
      auto stub = v1::GenerationService::NewStub(server_->channel());
      grpc::ClientContext context;
      EXPECT_TRUE(stub->Generate(&context, Request(2, 300 + i), &responses[i]).ok());
    });
  }
  const absl::Time until = absl::Now() + absl::Seconds(60);
  while (absl::Now() < until) {
    auto text = testing::ScrapeMetrics(server_->metrics_port());
    if (text.ok() && testing::ParseMetrics(*text).Sum("ditserve_queue_depth") == 2) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(StopHog(*hog).error_code(), grpc::CANCELLED);
  for (std::thread& t : waiting) t.join();
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(responses[i].timings().batch_size(), 2);  // --max_batch_size 4 (default)
    ASSERT_EQ(responses[i].images_size(), 1);
    // The same image as the request alone (to float rounding of the batch).
    v1::GenerateResponse alone;
    ASSERT_TRUE(Generate(Request(2, 300 + i), &alone).ok());
    EXPECT_EQ(alone.timings().batch_size(), 1);
    auto a = testing::DecodePng(responses[i].images(0).data());
    auto b = testing::DecodePng(alone.images(0).data());
    ASSERT_TRUE(a.ok() && b.ok());
    int worst = 0;
    for (size_t k = 0; k < a->rgb.size(); ++k) worst = std::max(worst, std::abs(a->rgb[k] - b->rgb[k]));
    EXPECT_LE(worst, 2);
  }
}

// Step caching per request: threshold 0 is the uncached image; a threshold
// that skips steps draws ditserve-generate's cached image for the same
// flags, and the images, the timings and the metric count the steps.
TEST_F(ServeE2E, StepCachePerRequestReportsItsSteps) {
  auto steps_metric = [&](const char* outcome) {
    auto text = testing::ScrapeMetrics(server_->metrics_port());
    EXPECT_TRUE(text.ok());
    return testing::ParseMetrics(text.ok() ? *text : "")
        .Sum("ditserve_denoise_steps_total", {absl::StrCat("outcome=\"", outcome, "\"")});
  };
  const double computed_before = steps_metric("computed");
  const double cached_before = steps_metric("cached");

  v1::GenerateResponse plain;
  ASSERT_TRUE(Generate(Request(8, 5), &plain).ok());
  EXPECT_EQ(plain.images(0).computed_steps(), 8);
  EXPECT_EQ(plain.images(0).cached_steps(), 0);
  EXPECT_EQ(plain.timings().computed_steps(), 8);
  EXPECT_EQ(plain.timings().cached_steps(), 0);

  v1::GenerateRequest zero = Request(8, 5);
  zero.set_step_cache(v1::STEP_CACHE_FIRST_BLOCK);
  zero.set_cache_threshold(0);
  v1::GenerateResponse zero_response;
  ASSERT_TRUE(Generate(zero, &zero_response).ok());
  EXPECT_EQ(zero_response.images(0).data(), plain.images(0).data());
  EXPECT_EQ(zero_response.timings().cached_steps(), 0);

  // The tiny random model: First-Block-Cache at 1.0 skips 5 of these 8,
  // and the image is ditserve-generate's for the same flags.
  v1::GenerateRequest cached = Request(8, 5);
  cached.set_step_cache(v1::STEP_CACHE_FIRST_BLOCK);
  cached.set_cache_threshold(1.0);
  v1::GenerateResponse single;
  ASSERT_TRUE(Generate(cached, &single).ok());
  EXPECT_GT(single.images(0).cached_steps(), 0);
  EXPECT_GE(single.images(0).computed_steps(), 2);  // the first and the last step
  EXPECT_EQ(single.images(0).computed_steps() + single.images(0).cached_steps(), 8);
  auto decoded = testing::DecodePng(single.images(0).data());
  ASSERT_TRUE(decoded.ok());
  auto expected = ReferenceImage(8, 5, {"--use_fbcache", "--cache_threshold=1"});
  ASSERT_TRUE(expected.ok()) << expected.status();
  EXPECT_EQ(decoded->rgb, expected->rgb);

  // Two images: each reports its steps and the timings sum them. (A batch
  // of two rounds a few values apart from one image, cached or not, so
  // the bytes are checked on one image above.)
  cached.set_num_images(2);
  v1::GenerateResponse cached_response;
  ASSERT_TRUE(Generate(cached, &cached_response).ok());
  ASSERT_EQ(cached_response.images_size(), 2);
  int computed = single.images(0).computed_steps(), skipped = single.images(0).cached_steps();
  int request_computed = 0, request_skipped = 0;
  for (const v1::Image& image : cached_response.images()) {
    EXPECT_EQ(image.computed_steps() + image.cached_steps(), 8);
    EXPECT_GE(image.computed_steps(), 2);
    EXPECT_GT(image.cached_steps(), 0);
    request_computed += image.computed_steps();
    request_skipped += image.cached_steps();
  }
  EXPECT_EQ(cached_response.timings().computed_steps(), request_computed);
  EXPECT_EQ(cached_response.timings().cached_steps(), request_skipped);
  computed += request_computed;
  skipped += request_skipped;

  EXPECT_EQ(steps_metric("computed") - computed_before, 8 + 8 + computed);
  EXPECT_EQ(steps_metric("cached") - cached_before, skipped);
}

TEST_F(ServeE2E, DeadlinesInTheQueueAndDuringTheRun) {
  {
    auto hog = StartHog();
    v1::GenerateResponse response;
    const grpc::Status queued = Generate(Request(1, 5), &response, absl::Milliseconds(300));
    EXPECT_EQ(queued.error_code(), grpc::DEADLINE_EXCEEDED);
    EXPECT_EQ(StopHog(*hog).error_code(), grpc::CANCELLED);
  }
  v1::GenerateResponse response;
  const grpc::Status running = Generate(Request(1000, 6, 256), &response, absl::Seconds(2));
  EXPECT_EQ(running.error_code(), grpc::DEADLINE_EXCEEDED);
  // The gang aborted that run and serves the next request.
  EXPECT_TRUE(Generate(Request(1, 7), &response).ok());
  auto text = testing::ScrapeMetrics(server_->metrics_port());
  ASSERT_TRUE(text.ok());
  EXPECT_GE(testing::ParseMetrics(*text).Sum("ditserve_requests_total", {"code=\"DEADLINE_EXCEEDED\""}), 2);
}

// Step-level continuous batching (--join_policy step, the default): a
// request sent while a long one of the same size runs joins its running
// set, finishes first with its own step count, and gives the image it
// gives alone; a member that hits its deadline leaves the set, and the
// long one runs on; the set's metrics count it all.
TEST_F(ServeE2E, ARequestJoinsTheRunningSetAndGivesItsImageAlone) {
  auto hog = StartHog();  // 1000 steps at 256 × 256
  v1::GenerateResponse joined;
  ASSERT_TRUE(Generate(Request(3, 400, 256), &joined).ok());
  EXPECT_EQ(joined.timings().batch_size(), 2);  // it shared the hog's set
  ASSERT_EQ(joined.images_size(), 1);
  v1::GenerateResponse late;
  EXPECT_EQ(Generate(Request(1000, 401, 256), &late, absl::Seconds(2)).error_code(), grpc::DEADLINE_EXCEEDED);
  // The hog is still running: its stream has not ended.
  v1::GenerateResponse during;
  ASSERT_TRUE(Generate(Request(2, 402, 256), &during).ok());
  EXPECT_EQ(during.timings().batch_size(), 2);
  EXPECT_EQ(StopHog(*hog).error_code(), grpc::CANCELLED);
  v1::GenerateResponse alone;
  ASSERT_TRUE(Generate(Request(3, 400, 256), &alone).ok());
  EXPECT_EQ(alone.timings().batch_size(), 1);
  auto a = testing::DecodePng(joined.images(0).data());
  auto b = testing::DecodePng(alone.images(0).data());
  ASSERT_TRUE(a.ok() && b.ok());
  int worst = 0;
  for (size_t k = 0; k < a->rgb.size(); ++k) worst = std::max(worst, std::abs(a->rgb[k] - b->rgb[k]));
  EXPECT_LE(worst, 2);  // batching's float rounding through the VAE
  auto text = testing::ScrapeMetrics(server_->metrics_port());
  ASSERT_TRUE(text.ok());
  const testing::MetricsText m = testing::ParseMetrics(*text);
  EXPECT_EQ(m.types.at("ditserve_running_set_size"), "histogram");
  EXPECT_EQ(m.types.at("ditserve_time_to_first_step_seconds"), "histogram");
  EXPECT_EQ(m.types.at("ditserve_gang_steps_total"), "counter");
  // Steps of a set of two: the joined request's 3, the late one's, the
  // second joiner's 2.
  EXPECT_GE(m.Sum("ditserve_running_set_size_bucket", {"le=\"2\""}) -
                m.Sum("ditserve_running_set_size_bucket", {"le=\"1\""}),
            5);
  EXPECT_GE(m.Sum("ditserve_time_to_first_step_seconds_count"), 5);
  EXPECT_EQ(m.Sum("ditserve_gang_steps_total"), m.Sum("ditserve_running_set_size_count"));
}

// --join_lookahead sends a request to the gang beyond --max_running_requests:
// the gang holds it (its prompt encoded) and admits it only when a member
// leaves. With room for 1, a 3-step request sent during a 20-step one runs
// after it, alone; one held past its deadline is dropped at the gang.
TEST_F(ServeE2E, TheGangHoldsALookaheadJoinUntilAMemberLeaves) {
  auto server = ServerProcess::Start({"--model=" + *model_, "--spawn_workers", "--device=cpu", "--threads=1",
                                      "--max_steps=1000", "--max_running_requests=1", "--join_lookahead=1"});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->WaitHealth("SERVING", absl::Seconds(300)).ok()) << (*server)->Log();
  auto stub = v1::GenerationService::NewStub((*server)->channel());
  grpc::ClientContext long_context;
  auto first = stub->GenerateStream(&long_context, Request(20, 1, 256));
  v1::GenerateStreamResponse m;
  ASSERT_TRUE(first->Read(&m)) << (*server)->Log();  // it runs
  v1::GenerateResponse held;
  grpc::Status held_status;
  absl::Time held_done;
  std::thread waiting([&] {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(300)));
    held_status = stub->Generate(&context, Request(3, 2, 256), &held);
    held_done = absl::Now();
  });
  while (first->Read(&m)) {
  }
  ASSERT_TRUE(first->Finish().ok());
  const absl::Time first_done = absl::Now();
  waiting.join();
  ASSERT_TRUE(held_status.ok()) << held_status.error_message();
  EXPECT_GT(held_done, first_done);
  EXPECT_EQ(held.timings().batch_size(), 1);  // it never shared a step
  // Held past its deadline: DEADLINE_EXCEEDED, and the gang serves on.
  grpc::ClientContext hog_context;
  auto hog = stub->GenerateStream(&hog_context, Request(1000, 3, 256));
  ASSERT_TRUE(hog->Read(&m));
  grpc::ClientContext late_context;
  late_context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  v1::GenerateResponse late;
  EXPECT_EQ(stub->Generate(&late_context, Request(3, 4, 256), &late).error_code(), grpc::DEADLINE_EXCEEDED);
  hog_context.TryCancel();
  while (hog->Read(&m)) {
  }
  EXPECT_EQ(hog->Finish().error_code(), grpc::CANCELLED);
  grpc::ClientContext after_context;
  after_context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(300)));
  v1::GenerateResponse after;
  ASSERT_TRUE(stub->Generate(&after_context, Request(2, 5, 256), &after).ok());
  EXPECT_EQ(after.timings().batch_size(), 1);
}

TEST_F(ServeE2E, GetInfoDescribesTheModelTheGangAndTheLimits) {
  grpc::ClientContext context;
  v1::GetInfoResponse info;
  ASSERT_TRUE(stub_->GetInfo(&context, v1::GetInfoRequest(), &info).ok());
  EXPECT_EQ(info.model(), std::filesystem::path(*model_).filename().string());  // the name, not the path
  EXPECT_EQ(info.model_family(), "flux");
  EXPECT_EQ(info.default_size(), 128);
  EXPECT_EQ(info.limits().size_multiple(), 16);
  EXPECT_EQ(info.limits().max_steps(), 1000);
  EXPECT_EQ(info.limits().max_queue_size(), 2);
  EXPECT_EQ(info.parallel().world_size(), 1);
  EXPECT_EQ(info.device(), "cpu");
  EXPECT_TRUE(info.gang_ready());
  EXPECT_NE(info.transformer_config_json().find("\"num_attention_heads\""), std::string::npos)
      << info.transformer_config_json();
  EXPECT_EQ(info.step_cache().default_step_cache(), v1::STEP_CACHE_NONE);
  EXPECT_DOUBLE_EQ(info.step_cache().default_first_block_threshold(), 0.12);
  EXPECT_DOUBLE_EQ(info.step_cache().max_first_block_threshold(), 1.0);
  EXPECT_DOUBLE_EQ(info.step_cache().default_teacache_threshold(), 0.4);
  EXPECT_DOUBLE_EQ(info.step_cache().max_teacache_threshold(), 1.5);  // the server's flag
}

TEST_F(ServeE2E, ReflectionListsTheServices) {
  auto stub = grpc::reflection::v1alpha::ServerReflection::NewStub(server_->channel());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  auto stream = stub->ServerReflectionInfo(&context);
  grpc::reflection::v1alpha::ServerReflectionRequest request;
  request.set_list_services("");
  ASSERT_TRUE(stream->Write(request));
  stream->WritesDone();
  grpc::reflection::v1alpha::ServerReflectionResponse response;
  ASSERT_TRUE(stream->Read(&response));
  std::set<std::string> names;
  for (const auto& service : response.list_services_response().service()) names.insert(service.name());
  EXPECT_TRUE(names.count("ditserve.v1.GenerationService")) << response.DebugString();
  EXPECT_TRUE(names.count("grpc.health.v1.Health")) << response.DebugString();
  EXPECT_FALSE(names.count("ditserve.control.v1.GangControl"));  // internal: its own port
  while (stream->Read(&response)) {
  }
  EXPECT_TRUE(stream->Finish().ok());
}

}  // namespace
}  // namespace ditserve
