// A model directory's JSON configs on arbitrary bytes: the input, split at
// its first two NUL bytes, becomes model_index.json, transformer/config.json
// and vae/config.json of a directory that ReadModelGeometry reads. OK, or
// INVALID_ARGUMENT / NOT_FOUND naming the file, never a crash; an OK
// geometry is one the engine can plan with. The second part is also read
// as a scheduler_config.json: a config that parses gives, for a few step
// counts, a schedule of that many finite steps or INVALID_ARGUMENT.
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

#include "core/denoising_schedule.h"
#include "core/generation_plan.h"

namespace {

const std::string& Dir() {
  static const std::string dir = [] {
    std::string d = "/tmp/ditserve-fuzz-config-" + std::to_string(getpid());
    mkdir(d.c_str(), 0700);
    mkdir((d + "/transformer").c_str(), 0700);
    mkdir((d + "/vae").c_str(), 0700);
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const size_t a = bytes.find('\0');
  const size_t b = a == std::string::npos ? std::string::npos : bytes.find('\0', a + 1);
  const std::string parts[3] = {
      bytes.substr(0, a), a == std::string::npos ? "" : bytes.substr(a + 1, b == std::string::npos ? b : b - a - 1),
      b == std::string::npos ? "" : bytes.substr(b + 1)};
  const char* files[3] = {"/model_index.json", "/transformer/config.json", "/vae/config.json"};
  for (int i = 0; i < 3; ++i) std::ofstream(Dir() + files[i], std::ios::binary) << parts[i];
  if (auto scheduler = ditserve::core::ParseDiscreteSchedulerConfig(parts[1]); scheduler.ok()) {
    for (int steps : {1, 2, 7, 50, 999}) {
      auto schedule = ditserve::core::MakeDiscreteSchedule(*scheduler, steps);
      if (!schedule.ok()) {
        if (schedule.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
        continue;
      }
      if (schedule->steps() != steps || !std::isfinite(schedule->init_noise_sigma)) std::abort();
      for (const auto& u : schedule->updates) {
        for (double c : {u.sample, u.output, u.history_sample, u.history_output}) {
          if (!std::isfinite(c)) std::abort();
        }
        for (double c : u.history) {
          if (!std::isfinite(c)) std::abort();
        }
      }
    }
  } else if (scheduler.status().code() != absl::StatusCode::kInvalidArgument) {
    std::abort();
  }
  auto geometry = ditserve::core::ReadModelGeometry(Dir());
  if (!geometry.ok()) {
    const absl::StatusCode c = geometry.status().code();
    if (c != absl::StatusCode::kInvalidArgument && c != absl::StatusCode::kNotFound) std::abort();
    return 0;
  }
  if (geometry->num_attention_heads < 1 || geometry->num_blocks < 1 || geometry->size_multiple < 2 ||
      geometry->default_size < 1) {
    std::abort();
  }
  return 0;
}
