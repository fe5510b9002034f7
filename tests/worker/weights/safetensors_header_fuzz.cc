// libFuzzer target for the safetensors header parser:
//   cmake -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DDITSERVE_FUZZ=ON && cmake --build build-fuzz --target safetensors_header_fuzz
//   build-fuzz/tests/safetensors_header_fuzz -max_total_time=60
// Every input must give OK or INVALID_ARGUMENT, and an OK header must keep
// every tensor inside the input.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "worker/weights/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto header = ditserve::worker::weights::ParseSafetensors(bytes);
  if (header.ok()) {
    for (const auto& t : header->tensors) {
      if (header->data_offset + t.end > size) std::abort();
    }
  } else if (header.status().code() != absl::StatusCode::kInvalidArgument) {
    std::abort();
  }
  return 0;
}
