// ditserve-client: the command-line client of ditserve-server.
//   ditserve-client --server HOST:PORT generate --prompt TEXT --output FILE [...]
//   ditserve-client --server HOST:PORT health | info
//   ditserve-client --server HOST:PORT bench --concurrency 8 --requests 100 [--json]
//   ditserve-client --server HOST:PORT bench --rate 2.5 --duration 60 [--json]
// Exit status: 0 success, 1 the server answered with an error (the gRPC
// code is printed), 2 bad command line. Torch-free.

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/bench.h"
#include "client/connection.h"
#include "client/generate_command.h"
#include "ditserve/v1/generation.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "proto/grpc_code_names.h"
#include "proto/step_cache_enum.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "host:port of ditserve-server");
ABSL_FLAG(std::string, prompt, "", "generate/bench: the prompt");
ABSL_FLAG(std::string, negative_prompt, "", "generate/bench: the negative prompt (true CFG)");
ABSL_FLAG(int, height, 0, "generate/bench: image height (0: the model's default)");
ABSL_FLAG(int, width, 0, "generate/bench: image width (0: the model's default)");
ABSL_FLAG(int, num_inference_steps, 0, "generate/bench: denoising steps (0: the server's default)");
ABSL_FLAG(double, guidance_scale, -1, "generate/bench: guidance scale (< 0: the server's default)");
ABSL_FLAG(double, true_cfg_scale, -1, "generate/bench: true CFG scale (< 0: the server's default, 1)");
ABSL_FLAG(int64_t, seed, -1, "generate/bench: seed (< 0: the server picks one and prints it)");
ABSL_FLAG(int, num_images, 1, "generate/bench: images per request");
ABSL_FLAG(int, max_sequence_length, 0,
          "generate/bench: the text encoder's token budget (0: the model's default; info shows the limit)");
ABSL_FLAG(std::string, format, "png", "generate/bench: png, jpeg or webp");
ABSL_FLAG(int, quality, 0, "generate/bench: JPEG/WebP quality 1-100 (WebP 100: lossless; 0: 90)");
ABSL_FLAG(int, priority, 0, "generate/bench: priority in [-100, 100] (higher runs first)");
ABSL_FLAG(std::string, step_cache, "",
          "generate/bench: none, first_block or teacache (empty: the server's default, see info)");
ABSL_FLAG(double, cache_threshold, -1,
          "generate/bench: the step cache's threshold (< 0: the server's default for the method)");
ABSL_FLAG(double, deadline_s, 0, "generate/bench: per-request deadline in seconds (0: none / 600 for bench)");
ABSL_FLAG(std::string, output, "", "generate: output file (FILE, or FILE_i.ext for several images)");
ABSL_FLAG(bool, quiet, false, "generate: no progress bar");
ABSL_FLAG(int, concurrency, 1, "bench: requests in flight (closed loop)");
ABSL_FLAG(double, rate, 0,
          "bench: > 0 runs open loop: Poisson arrivals at this many requests per second, latency from each arrival");
ABSL_FLAG(uint64_t, arrival_seed, 1, "bench --rate: the arrival process's seed");
ABSL_FLAG(int, requests, 0, "bench: requests to send (0: run for --duration)");
ABSL_FLAG(double, duration, 10, "bench: seconds to run when --requests is 0");
ABSL_FLAG(bool, json, false, "bench/info/health: print JSON");
ABSL_FLAG(std::string, service, "", "health: service name to check (\"\": the server)");
ABSL_FLAG(std::string, tls_ca_file, "",
          "PEM CAs to verify the server's certificate with: the channel speaks TLS");
ABSL_FLAG(std::string, tls_cert_file, "", "PEM client certificate for servers that require one (mTLS)");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file");
ABSL_FLAG(std::string, auth_token_file, "",
          "File whose first line is the bearer token sent with every call (authorization: Bearer …)");
ABSL_FLAG(double, wait_ready_s, 0,
          "Before the command, wait up to this many seconds for the server to report SERVING");

namespace {

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "ditserve-client: %s\n", message.c_str());
  return code;
}


// The request the generate and bench commands send, from the flags.
absl::StatusOr<ditserve::v1::GenerateRequest> RequestFromFlags() {
  ditserve::v1::GenerateRequest r;
  r.set_prompt(absl::GetFlag(FLAGS_prompt));
  r.set_negative_prompt(absl::GetFlag(FLAGS_negative_prompt));
  r.set_height(absl::GetFlag(FLAGS_height));
  r.set_width(absl::GetFlag(FLAGS_width));
  r.set_num_inference_steps(absl::GetFlag(FLAGS_num_inference_steps));
  if (absl::GetFlag(FLAGS_guidance_scale) >= 0) r.set_guidance_scale(absl::GetFlag(FLAGS_guidance_scale));
  if (absl::GetFlag(FLAGS_true_cfg_scale) >= 0) r.set_true_cfg_scale(absl::GetFlag(FLAGS_true_cfg_scale));
  if (absl::GetFlag(FLAGS_seed) >= 0) r.set_seed(static_cast<uint64_t>(absl::GetFlag(FLAGS_seed)));
  r.set_num_images(absl::GetFlag(FLAGS_num_images));
  r.set_max_sequence_length(absl::GetFlag(FLAGS_max_sequence_length));
  const std::string format = absl::GetFlag(FLAGS_format);
  if (format == "png") {
    r.set_output_format(ditserve::v1::IMAGE_FORMAT_PNG);
  } else if (format == "jpeg" || format == "jpg") {
    r.set_output_format(ditserve::v1::IMAGE_FORMAT_JPEG);
  } else if (format == "webp") {
    r.set_output_format(ditserve::v1::IMAGE_FORMAT_WEBP);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--format must be png, jpeg or webp, got '", format, "'"));
  }
  r.set_quality(absl::GetFlag(FLAGS_quality));
  r.set_priority(absl::GetFlag(FLAGS_priority));
  if (const std::string cache = absl::GetFlag(FLAGS_step_cache); !cache.empty()) {
    auto method = ditserve::core::ParseStepCacheMethod(cache);
    if (!method.ok()) return absl::InvalidArgumentError(absl::StrCat("--step_cache: ", method.status().message()));
    r.set_step_cache(ditserve::proto::ToProto(*method));
  }
  if (absl::GetFlag(FLAGS_cache_threshold) >= 0) r.set_cache_threshold(absl::GetFlag(FLAGS_cache_threshold));
  return r;
}

// Polls grpc.health.v1 Check("") until SERVING or `timeout` passes.
bool WaitReady(const std::shared_ptr<grpc::Channel>& channel, absl::Duration timeout) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    grpc::health::v1::HealthCheckResponse response;
    if (stub->Check(&context, grpc::health::v1::HealthCheckRequest(), &response).ok() &&
        response.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
      return true;
    }
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(200));
  }
}

int Health(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(absl::GetFlag(FLAGS_service));
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) {
    return Fail(1, absl::StrCat("health: ", ditserve::proto::CodeName(status.error_code()), ": ",
                                status.error_message()));
  }
  const std::string name = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("{\"status\": \"%s\"}\n", name.c_str());
  } else {
    std::printf("%s\n", name.c_str());
  }
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

int Info(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = ditserve::v1::GenerationService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  ditserve::v1::GetInfoResponse info;
  const grpc::Status status = stub->GetInfo(&context, ditserve::v1::GetInfoRequest(), &info);
  if (!status.ok()) {
    return Fail(1, absl::StrCat("info: ", ditserve::proto::CodeName(status.error_code()), ": ",
                                status.error_message()));
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::string json;
    google::protobuf::util::JsonPrintOptions options;
    options.always_print_primitive_fields = true;
    options.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(info, &json, options);
    std::printf("%s\n", json.c_str());
  } else {
    std::printf("%s", info.DebugString().c_str());
  }
  return 0;
}

int Bench(const std::shared_ptr<grpc::Channel>& channel) {
  auto request = RequestFromFlags();
  if (!request.ok()) return Fail(2, std::string(request.status().message()));
  ditserve::client::BenchOptions options;
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  options.rate = absl::GetFlag(FLAGS_rate);
  options.arrival_seed = absl::GetFlag(FLAGS_arrival_seed);
  options.requests = absl::GetFlag(FLAGS_requests);
  options.duration = absl::Seconds(absl::GetFlag(FLAGS_duration));
  if (absl::GetFlag(FLAGS_deadline_s) > 0) options.deadline = absl::Seconds(absl::GetFlag(FLAGS_deadline_s));
  options.request = *request;
  if (options.concurrency < 1 || options.concurrency > 4096) {
    return Fail(2, absl::StrCat("--concurrency must be in [1, 4096], got ", options.concurrency));
  }
  if (options.requests < 0) return Fail(2, "--requests must be >= 0");
  if (!(options.rate >= 0 && options.rate <= 10000)) {
    return Fail(2, absl::StrCat("--rate must be in [0, 10000] requests per second (0: closed loop), got ",
                                options.rate));
  }
  if (options.requests == 0 && absl::GetFlag(FLAGS_duration) <= 0) {
    return Fail(2, "--duration must be > 0 when --requests is 0");
  }
  const ditserve::client::BenchResult result = ditserve::client::RunBench(channel, options);
  std::printf("%s", absl::GetFlag(FLAGS_json) ? ditserve::client::FormatBenchJson(options, result).c_str()
                                              : ditserve::client::FormatBench(options, result).c_str());
  return result.ok == result.sent ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "ditserve-client --server HOST:PORT <generate|health|info|bench> [flags]\n"
      "  generate --prompt TEXT --output FILE [--height --width --num_inference_steps --seed\n"
      "           --num_images --format png|jpeg|webp --quality --deadline_s ...]\n"
      "  health   [--service NAME]\n"
      "  info\n"
      "  bench    (--concurrency N | --rate R [--arrival_seed S]) (--requests N | --duration S) [--json]\n"
      "           + generate's flags");
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() != 2) return Fail(2, "expected one command: generate, health, info or bench");
  const std::string command = rest[1];
  auto channel = ditserve::client::Connect({absl::GetFlag(FLAGS_server), absl::GetFlag(FLAGS_tls_ca_file),
                                            absl::GetFlag(FLAGS_tls_cert_file), absl::GetFlag(FLAGS_tls_key_file),
                                            absl::GetFlag(FLAGS_auth_token_file)});
  if (!channel.ok()) {
    return Fail(channel.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1,
                std::string(channel.status().message()));
  }
  if (const double wait = absl::GetFlag(FLAGS_wait_ready_s); wait > 0 &&
      !WaitReady(*channel, absl::Seconds(wait))) {
    return Fail(1, absl::StrCat(absl::GetFlag(FLAGS_server), " was not SERVING within ",
                                wait, " s (--wait_ready_s)"));
  }
  if (command == "health") return Health(*channel);
  if (command == "info") return Info(*channel);
  if (command == "bench") return Bench(*channel);
  if (command == "generate") {
    auto request = RequestFromFlags();
    if (!request.ok()) return Fail(2, std::string(request.status().message()));
    if (absl::GetFlag(FLAGS_output).empty()) return Fail(2, "generate: --output is required");
    ditserve::client::GenerateOptions options;
    options.output = absl::GetFlag(FLAGS_output);
    options.deadline_s = absl::GetFlag(FLAGS_deadline_s);
    options.progress = !absl::GetFlag(FLAGS_quiet);
    return ditserve::client::RunGenerate(*channel, *request, options);
  }
  return Fail(2, absl::StrCat("unknown command '", command, "': generate, health, info or bench"));
}
