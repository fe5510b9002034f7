// A sharded checkpoint's index (model.safetensors.index.json) on arbitrary
// bytes, next to one valid shard: Open gives OK, or INVALID_ARGUMENT /
// NOT_FOUND (a shard the index names that is not there), never a crash; an
// OK checkpoint finds every name it lists.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

#include "worker/weights/safetensors.h"

namespace {

std::string Dir() {
  static const std::string dir = [] {
    std::string d = "/tmp/ditserve-fuzz-index-" + std::to_string(getpid());
    mkdir(d.c_str(), 0700);
    // A valid shard holding "a": one float32.
    const std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
    std::string file(8, '\0');
    for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    file += header + std::string(4, '\0');
    std::ofstream(d + "/shard.safetensors", std::ios::binary) << file;
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = Dir() + "/model.safetensors.index.json";
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  auto checkpoint = ditserve::worker::weights::SafetensorsCheckpoint::Open(path);
  if (!checkpoint.ok()) {
    const absl::StatusCode c = checkpoint.status().code();
    if (c != absl::StatusCode::kInvalidArgument && c != absl::StatusCode::kNotFound) std::abort();
    return 0;
  }
  for (const std::string& name : checkpoint->names()) {
    if (checkpoint->Find(name) == nullptr) std::abort();
  }
  return 0;
}
